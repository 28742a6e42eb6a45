#!/usr/bin/env python3
"""Reference oracle for the backtest scoring contract (docs/backtest.md).

Written from the contract, not from the Rust code, and naive on purpose: the alerts come
from the detection oracle (churnwatch_ref.run), every churn and alert is compared with
every other one, and the JSON document of `churnwatch backtest --output` is printed.

    python3 tests/reference/backtest_ref.py --config C.toml --input events.ndjson[.gz] \
        [--accounts accounts.csv] [--outcomes outcomes.csv] [--horizon 90d] \
        [--until T] [--set KEY=V1,V2 ...] [--output metrics.json]
"""

import argparse
import copy
import csv
import itertools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import churnwatch_ref as ref  # noqa: E402

DAY = ref.DAY
KINDS = ("not_activated", "inactive", "activity_drop")


def percentile(values, q):
    """numpy.percentile(values, 100*q) with the default 'linear' method."""
    if not values:
        return None
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = int(pos // 1)
    hi = min(lo + 1, len(v) - 1)
    t = pos - lo
    a, b = v[lo], v[hi]
    # numpy's _lerp: from the nearer end
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def week_of(ms):
    return (ms // DAY + 3) // 7  # 1970-01-01 was a Thursday; weeks start on Monday


def churns_from_end_events(events, cfg):
    """The end events that end an active lifecycle, per account."""
    lc = cfg["lifecycle"]
    active, seen, churns = set(), set(), {}
    for ev in sorted(events, key=lambda e: (e.ts, e.seq)):
        first = ev.account not in seen
        seen.add(ev.account)
        if ev.name in lc["end_events"]:
            if ev.account in active:
                active.discard(ev.account)
                churns.setdefault(ev.account, []).append(ev.ts)
        elif ev.name in lc["start_events"]:
            active.add(ev.account)
        elif first and lc["start_on_first_event"]:
            active.add(ev.account)
    return churns


def read_outcomes(path, known):
    churns = {}
    with open(path, encoding="utf-8") as f:
        lines = [(i + 1, l.strip()) for i, l in enumerate(f) if l.strip()]
    if not lines:
        return churns
    if lines[0][1].startswith("{"):
        rows = [(n, json.loads(l)) for n, l in lines]
    else:
        header = [h.strip() for h in lines[0][1].split(",")]
        rows = [(n, dict(zip(header, (c.strip() for c in l.split(","))))) for n, l in lines[1:]]
    for n, row in rows:
        account, at = row["account_id"], row["churned_at"]
        if isinstance(at, str):
            at = int(at) if at.lstrip("-").isdigit() else ref.parse_rfc3339(at)
        if account not in known or at is None:
            raise SystemExit(f"{path} line {n}: unusable outcome {row}")
        churns.setdefault(account, []).append(at)
    return churns


def read_owners(path):
    owners = {}
    if path is None:
        return owners
    with open(path, encoding="utf-8") as f:
        if path.endswith(".csv"):
            for row in csv.DictReader(f):
                owners[row["account_id"].strip()] = (row.get("owner_email") or "").strip()
        else:
            text = f.read().strip()
            rows = json.loads(text) if text.startswith("[") else [
                json.loads(l) for l in text.splitlines() if l.strip()]
            for row in rows:
                owners[row["account_id"]] = row.get("owner_email") or ""
    return owners


def typed(raw):
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(raw, raw)


def with_settings(cfg, settings):
    cfg = copy.deepcopy(cfg)
    for key, value in settings.items():
        node = cfg
        *path, last = key.split(".")
        for seg in path:
            node = node[seg]
        if last not in node:
            raise SystemExit(f"--set {key}: no such option")
        node[last] = value
    return cfg


def score_run(cfg, events, until, window, churns, owner_of, accounts, horizon):
    start, end = window
    kinds = [k for k in KINDS if cfg["rules"][k]["enabled"]
             and (k != "not_activated" or cfg["rules"][k]["deadlines"])]
    records = ref.run(cfg, events, until)
    firing = [(r["account_id"], r["kind"], ref.parse_rfc3339(r["event_time"]))
              for r in records if r["status"] == "firing"]
    all_churns = [(a, c) for a, cs in churns.items() for c in cs]
    eligible = [(a, c) for a, c in all_churns if c - horizon >= start]
    out = {}
    for kind in kinds + ["any"]:
        mine = [f for f in firing if kind == "any" or f[1] == kind]
        hits = fa = pending = 0
        for a, _, t in mine:
            if any(a == b and t < c <= t + horizon for b, c in all_churns):
                hits += 1
            elif t + horizon <= end:
                fa += 1
            else:
                pending += 1
        leads = []
        for a, c in eligible:
            ts = [t for b, _, t in mine if b == a and c - horizon <= t < c]
            if ts:
                leads.append((c - min(ts)) / DAY)
        out[kind] = {
            "firing": len(mine), "hits": hits, "false_alarms": fa, "pending": pending,
            "precision": hits / (hits + fa) if hits + fa else None,
            "caught": len(leads),
            "recall": len(leads) / len(eligible) if eligible else None,
            "lead_days": {"p25": percentile(leads, 0.25), "p50": percentile(leads, 0.5),
                          "p75": percentile(leads, 0.75)},
        }
    first_week, nweeks = week_of(start), week_of(end) - week_of(start) + 1
    names = sorted({owner_of(a) for a in accounts})
    owners = []
    for name in names:
        weekly = [0] * nweeks
        for a, _, t in firing:
            if owner_of(a) == name:
                weekly[week_of(t) - first_week] += 1
        owners.append({"owner": name, "accounts": sum(1 for a in accounts if owner_of(a) == name),
                       "mean_per_week": sum(weekly) / nweeks, "max_per_week": max(weekly)})
    load = {"per_100_accounts_per_week": 100 * len(firing) / nweeks / len(accounts),
            "owners": owners}
    return {"kinds": out, "load": load}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--accounts")
    ap.add_argument("--outcomes")
    ap.add_argument("--horizon", default="90d")
    ap.add_argument("--until")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--output")
    args = ap.parse_args(argv)
    cfg = ref.load_config(args.config)
    horizon = ref.parse_duration(args.horizon)
    until = ref.parse_until(args.until) if args.until else None
    all_events, _rejects = ref.read_events(args.input, cfg)
    events = [e for e in all_events if until is None or e.ts <= until]
    start = min(e.ts for e in events)
    end = until if until is not None else max(e.ts for e in events)
    accounts = sorted({e.account for e in events})
    if args.outcomes:
        churns = read_outcomes(args.outcomes, {e.account for e in all_events})
    else:
        churns = churns_from_end_events(events, cfg)
    meta = read_owners(args.accounts)

    def owner_of(a):
        return meta.get(a) or "unassigned"

    sets = []
    for flag in args.set:
        key, values = flag.split("=", 1)
        sets.append([(key, typed(v.strip())) for v in values.split(",")])
    runs = []
    for combo in itertools.product(*sets):
        settings = dict(combo)
        run = score_run(with_settings(cfg, settings), events, until, (start, end), churns,
                        owner_of, accounts, horizon)
        runs.append({"settings": settings, **run})
    doc = {
        "history": {"start": ref.fmt_ts(start), "end": ref.fmt_ts(end),
                    "accounts": len(accounts),
                    "churns": sum(len(c) for c in churns.values()),
                    "eligible_churns": sum(1 for cs in churns.values() for c in cs
                                           if c - horizon >= start)},
        "horizon_days": horizon // DAY if horizon % DAY == 0 else horizon / DAY,
        "runs": runs,
    }
    text = json.dumps(doc, indent=2) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
