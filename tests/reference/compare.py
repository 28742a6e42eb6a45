#!/usr/bin/env python3
"""Compare two churnwatch alert-record NDJSON files as multisets.

Usage: python3 compare.py expected.ndjson actual.ndjson

Ignored fields: emitted_at, summary, account. Floats are compared at relative
tolerance 1e-9; evidence.p_value at relative 1e-6 or absolute 1e-12 (the looser).
Integers must be equal; an integer and a float are compared as floats.
Exit 0 with "N records match", or 1 with a diff (first 20 of each category).
"""
import json
import math
import sys

IGNORED = ("emitted_at", "summary", "account")
SHOW = 20


def load(path):
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise SystemExit(f"{path}:{lineno}: invalid JSON: {e}")
            if not isinstance(rec, dict):
                raise SystemExit(f"{path}:{lineno}: not a JSON object")
            records.append({k: v for k, v in rec.items() if k not in IGNORED})
    return records


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def numbers_equal(a, b, key):
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    a, b = float(a), float(b)
    if key == "p_value":
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def differences(a, b, path=""):
    """List of human-readable differences between two JSON values."""
    key = path.rsplit(".", 1)[-1]
    if is_number(a) and is_number(b):
        return [] if numbers_equal(a, b, key) else [f"{path or '.'}: {a!r} != {b!r}"]
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            sub = f"{path}.{k}" if path else k
            if k not in a:
                out.append(f"{sub}: missing in expected (actual {b[k]!r})")
            elif k not in b:
                out.append(f"{sub}: missing in actual (expected {a[k]!r})")
            else:
                out.extend(differences(a[k], b[k], sub))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {a!r} != {b!r}"]
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out.extend(differences(x, y, f"{path}[{i}]"))
        return out
    if type(a) is not type(b) or a != b:
        return [f"{path or '.'}: {a!r} != {b!r}"]
    return []


def key_of(rec):
    return (str(rec.get("id")), str(rec.get("status")))


def compare(expected, actual):
    """Return (matched, different, missing, extra)."""
    remaining = list(actual)
    matched, unmatched = 0, []
    for rec in expected:
        for i, cand in enumerate(remaining):
            if not differences(rec, cand):
                del remaining[i]
                matched += 1
                break
        else:
            unmatched.append(rec)
    different, missing = [], []
    for rec in unmatched:
        for i, cand in enumerate(remaining):
            if key_of(cand) == key_of(rec):
                different.append((rec, remaining.pop(i)))
                break
        else:
            missing.append(rec)
    return matched, different, missing, remaining


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    expected, actual = load(argv[1]), load(argv[2])
    matched, different, missing, extra = compare(expected, actual)
    if not (different or missing or extra):
        print(f"{matched} records match")
        return 0
    print(f"MISMATCH: {matched} match, {len(different)} different, "
          f"{len(missing)} missing from actual, {len(extra)} extra in actual "
          f"(expected {len(expected)}, actual {len(actual)})")
    if different:
        print(f"\n--- different (same id and status), first {SHOW}:")
        for exp, act in different[:SHOW]:
            print(f"  {exp.get('id')} [{exp.get('status')}]")
            for line in differences(exp, act):
                print(f"      {line}")
    for title, recs in (("missing from actual", missing), ("extra in actual", extra)):
        if recs:
            print(f"\n--- {title}, first {SHOW}:")
            for rec in recs[:SHOW]:
                print("  " + json.dumps(rec, sort_keys=True))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
