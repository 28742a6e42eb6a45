#!/usr/bin/env python3
"""Prints a realistic /metrics exposition of churnwatch, built from src/metrics.rs.

    python3 deploy/prometheus/sample-exposition.py [--repo DIR] > metrics.txt

Every metric registered in src/metrics.rs appears, in the text format the daemon's
encoder (prometheus crate, TextEncoder) writes: families sorted by name, # HELP and
# TYPE lines, histograms with the registered exponential buckets, label sets with
plausible values (partitions 0-2, every reject reason of src/source/event.rs, ...).
scripts/check-metrics.sh --self-test serves it to test itself without Kafka.
Standard library only.
"""
import argparse
import re
import sys
from decimal import Decimal
from pathlib import Path

KINDS = {
    "IntCounter": ("counter", False),
    "IntGauge": ("gauge", False),
    "IntCounterVec": ("counter", True),
    "IntGaugeVec": ("gauge", True),
    "HistogramVec": ("histogram", True),
    "secs": ("histogram", False),
}
CALL = re.compile(r"\b(?:(IntCounterVec|IntGaugeVec|HistogramVec|IntCounter|IntGauge)::new|(secs))\(")
STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def balanced(text, start):
    """Text from start (just after an opening paren) to its matching close paren."""
    depth = 1
    i = start
    while i < len(text) and depth:
        c = text[i]
        if c == '"':
            i += 1
            while text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        i += 1
    return text[start:i - 1]


def parse_metrics(src):
    namespace = re.search(r'new_custom\(Some\("([a-z_]+)"', src)
    namespace = namespace.group(1) if namespace else "churnwatch"
    metrics = []
    for m in CALL.finditer(src):
        name_kind = m.group(1) or m.group(2)
        args = balanced(src, m.end())
        strings = STRING.findall(args)
        if len(strings) < 2 or not re.fullmatch(r"[a-z_:][a-z0-9_:]*", strings[0]):
            continue
        mtype, vec = KINDS[name_kind]
        labels = []
        if vec:
            lm = re.search(r"&\[([^\]]*)\]\s*,?\s*$", args.strip()) or re.search(r"&\[([^\]]*)\]", args)
            labels = STRING.findall(lm.group(1)) if lm else []
        buckets = None
        if mtype == "histogram":
            bm = re.search(r"exponential_buckets\(\s*([0-9.e+-]+)\s*,\s*([0-9.e+-]+)\s*,\s*(\d+)\s*\)", args)
            if bm:
                start, factor, count = float(bm.group(1)), float(bm.group(2)), int(bm.group(3))
                buckets = [start * factor ** k for k in range(count)]
            else:
                buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
        help_text = strings[1].replace("\\\\", "\\").replace('\\"', '"')
        metrics.append({"name": f"{namespace}_{strings[0]}", "type": mtype, "help": help_text,
                        "labels": labels, "buckets": buckets})
    return metrics


def fmt(x):
    """Number formatting like Rust's f64 Display: no exponent, no trailing .0."""
    if x == float("inf"):
        return "+Inf"
    if float(x).is_integer():
        return str(int(x))
    return format(Decimal(repr(float(x))), "f")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[2]))
    a = ap.parse_args()
    repo = Path(a.repo)
    src = (repo / "src" / "metrics.rs").read_text()
    metrics = parse_metrics(src)
    if len(metrics) < 10 or not any(m["name"].endswith("_build_info") for m in metrics):
        sys.exit(f"sample-exposition: found only {len(metrics)} metrics in src/metrics.rs; "
                 "has its registration style changed?")
    reasons = ["invalid_json", "missing_field"]
    event_rs = repo / "src" / "source" / "event.rs"
    if event_rs.exists():
        lm = re.search(r"const LABELS[^=]*=\s*\[([^\]]*)\]", event_rs.read_text())
        if lm:
            reasons = STRING.findall(lm.group(1)) or reasons
    version = "0.1.0"
    vm = re.search(r'^version\s*=\s*"([^"]+)"', (repo / "Cargo.toml").read_text(), re.M)
    if vm:
        version = vm.group(1)
    values = {
        "partition": ["0", "1", "2"],
        "reason": reasons,
        "kind": ["activity_drop", "inactive", "not_activated"],
        "status": ["firing", "resolved"],
        "severity": ["warning"],
        "event": ["assign", "revoke"],
        "receiver": ["email", "slack"],
        "outcome": ["delivered", "failed"],
        "version": [version],
    }

    def combos(labels):
        out = [[]]
        for l in labels:
            out = [c + [(l, v)] for c in out for v in values.get(l, ["x"])]
        return out

    lines = []
    seed = 7
    for m in sorted(metrics, key=lambda m: m["name"]):
        name, mtype = m["name"], m["type"]
        lines.append(f"# HELP {name} {m['help']}")
        lines.append(f"# TYPE {name} {mtype}")
        for i, combo in enumerate(combos(m["labels"])):
            seed = (seed * 1103515245 + 12345) % 2**31
            lab = ",".join(f'{k}="{v}"' for k, v in sorted(combo))
            if mtype == "histogram":
                count = 50 + seed % 5000
                cum = 0
                for j, b in enumerate(m["buckets"]):
                    cum = min(count, cum + count * (j + 1) // (len(m["buckets"]) * 2))
                    lb = f'{lab},le="{fmt(b)}"' if lab else f'le="{fmt(b)}"'
                    lines.append(f"{name}_bucket{{{lb}}} {cum}")
                lb = f'{lab},le="+Inf"' if lab else 'le="+Inf"'
                lines.append(f"{name}_bucket{{{lb}}} {count}")
                total = count * m["buckets"][len(m["buckets"]) // 2]
                suffix = f"{{{lab}}}" if lab else ""
                lines.append(f"{name}_sum{suffix} {fmt(round(total, 6))}")
                lines.append(f"{name}_count{suffix} {count}")
            else:
                if name.endswith("_build_info"):
                    v = 1
                elif name.endswith("_input_stalled"):
                    v = 1 if combo == [("partition", "2")] else 0
                elif name.endswith("_checkpoint_failures_total"):
                    v = 0
                elif name.endswith("_assigned_partitions"):
                    v = 3
                else:
                    v = seed % 100000
                suffix = f"{{{lab}}}" if lab else ""
                lines.append(f"{name}{suffix} {v}")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
