#!/usr/bin/env python3
"""Naive reference implementation of the churnwatch detection contract (oracle).

Written independently from the Rust code, from the detection contract
(docs/detection.md) plus the decisions listed in tests/reference/README.md.
Clarity over speed.

Usage:
  python3 churnwatch_ref.py --config F --input F [--until T] [--now T] [--output F]

Input: NDJSON events (plain or gzip). Output: NDJSON alert records sorted by
(event_time, id, status). Rejected lines are counted by reason on stderr.
"""
import argparse
import copy
import datetime as dt
import gzip
import heapq
import itertools
import json
import re
import sys
import time
import tomllib
from collections import Counter, namedtuple

import mpmath

DAY = 86_400_000
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
# Python datetime can only format years 1..9999; the oracle rejects anything outside.
MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

DEFAULT_CONFIG = {
    "input": {"account_id": "/account_id", "event": "/event", "ts": "/ts",
              "user_id": "/user_id", "max_event_bytes": 65536, "max_future": "1d"},
    "engine": {"max_accounts_per_partition": 1_000_000, "known_accounts_only": False},
    "time": {"allowed_lateness": "10m", "max_idle_advance": "6h"},
    "lifecycle": {"start_events": ["account.created", "subscription.started"],
                  "end_events": ["subscription.cancelled", "account.deleted"],
                  "start_on_first_event": True},
    "activation": {"required_events": [], "min_active_days": 3,
                   "min_active_users": 1, "min_events": 0},
    "rules": {
        "not_activated": {"enabled": True, "deadlines": [
            {"after_days": 30, "severity": "warning"},
            {"after_days": 90, "severity": "critical"}]},
        "inactive": {"enabled": True, "after_days": 14, "severity": "warning"},
        "activity_drop": {"enabled": True, "metric": "events", "recent_days": 7,
                          "baseline_days": 28, "min_expected": 20.0, "min_drop": 0.5,
                          "alpha": 0.001, "recovery": 0.75, "severity": "warning"},
    },
}

# ----------------------------------------------------------------------------- time

DURATION_RE = re.compile(r"^(\d+)(ms|s|m|h|d)$")
DURATION_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": DAY}


def parse_duration(text):
    m = DURATION_RE.match(text.strip())
    if not m:
        raise ValueError(f"bad duration {text!r}")
    return int(m.group(1)) * DURATION_UNIT_MS[m.group(2)]


RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_rfc3339(text):
    """RFC 3339 -> epoch ms, sub-millisecond digits truncated (floor). None if invalid."""
    m = RFC3339_RE.match(text)
    if not m:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac, offset = m.group(7), m.group(8)
    if hour > 23 or minute > 59 or second > 59:  # leap second 60 rejected (see README)
        return None
    try:
        naive = dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    millis = int((frac[1:] + "000")[:3]) if frac else 0  # truncation == floor here
    if offset in ("Z", "z"):
        offset_min = 0
    else:
        oh, om = int(offset[1:3]), int(offset[4:6])
        if oh > 23 or om > 59:
            return None
        offset_min = (oh * 60 + om) * (1 if offset[0] == "+" else -1)
    local_ms = (naive - dt.datetime(1970, 1, 1)) // dt.timedelta(milliseconds=1)
    ms = local_ms + millis - offset_min * 60_000
    return ms if MIN_MS <= ms <= MAX_MS else None


def day_of(ms):
    return ms // DAY


def fmt_ts(ms):
    t = EPOCH + dt.timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def fmt_date(day):
    return (EPOCH + dt.timedelta(days=day)).strftime("%Y-%m-%d")


def parse_until(text):
    if re.fullmatch(r"-?\d+", text.strip()):
        return int(text)
    ms = parse_rfc3339(text.strip())
    if ms is None:
        raise ValueError(f"--until: not RFC 3339 nor epoch ms: {text!r}")
    return ms

# ----------------------------------------------------------------------------- config


def merge(base, override):
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path):
    with open(path, "rb") as f:
        cfg = merge(DEFAULT_CONFIG, tomllib.load(f))
    parse_duration(cfg["time"]["allowed_lateness"])  # validated, unused (see README)
    parse_duration(cfg["time"]["max_idle_advance"])
    if cfg["rules"]["activity_drop"]["metric"] not in ("events", "active_users"):
        raise ValueError("rules.activity_drop.metric must be events or active_users")
    return cfg

# ----------------------------------------------------------------------------- input

Event = namedtuple("Event", "account name ts user seq")
MISSING = object()


def json_pointer(doc, pointer):
    """RFC 6901 lookup; MISSING when the path does not exist."""
    if pointer == "":
        return doc
    if not pointer.startswith("/"):
        raise ValueError(f"bad JSON pointer {pointer!r}")
    node = doc
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            if token not in node:
                return MISSING
            node = node[token]
        elif isinstance(node, list):
            if not re.fullmatch(r"0|[1-9]\d*", token) or int(token) >= len(node):
                return MISSING
            node = node[int(token)]
        else:
            return MISSING
    return node


def _no_constants(name):
    raise ValueError(f"non-standard JSON constant {name}")


def _finite_float(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number out of range {text}")
    return value


def bounded_string(value):
    if not isinstance(value, str):
        return False
    try:
        n = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogate escape
        return False
    return 1 <= n <= 256


def has_control(text):
    """True if text holds a C0 control character or DEL (U+0000-U+001F, U+007F)."""
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def parse_line(raw, cfg, seq, now=None):
    """Return (Event, None) or (None, reason). raw: one line, without newline.
    now: the clock (epoch ms) for the future-timestamp check; None skips it."""
    inp = cfg["input"]
    if len(raw) > inp["max_event_bytes"]:
        return None, "oversized"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "invalid_utf8"
    try:
        doc = json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
        json.dumps(doc, ensure_ascii=False).encode("utf-8")  # rejects lone surrogates
    except (ValueError, UnicodeEncodeError):
        return None, "invalid_json"
    if not isinstance(doc, dict):
        return None, "not_object"
    fields = {}
    for name in ("account_id", "event", "ts", "user_id"):
        fields[name] = json_pointer(doc, inp[name])
    for name in ("account_id", "event", "ts"):
        if fields[name] is MISSING:
            return None, f"missing_{name}"
    for name in ("account_id", "event"):
        if not bounded_string(fields[name]):
            return None, f"invalid_{name}"
    ts = fields["ts"]
    if isinstance(ts, str):
        ts = parse_rfc3339(ts)
    elif isinstance(ts, int) and not isinstance(ts, bool):
        ts = ts if MIN_MS <= ts <= MAX_MS else None
    else:
        ts = None
    if ts is None:
        return None, "invalid_ts"
    user = fields["user_id"]
    if user is MISSING or user is None or user == "":
        user = None
    elif not isinstance(user, str):
        return None, "invalid_user_id"
    if has_control(fields["account_id"]) or (user is not None and has_control(user)):
        return None, "invalid_id"
    if now is not None and ts > now + parse_duration(inp["max_future"]):
        return None, "future_timestamp"
    return Event(fields["account_id"], fields["event"], ts, user, seq), None


def read_events(path, cfg, now=None):
    """Parse every line; `now` as in parse_line. New accounts past
    engine.max_accounts_per_partition (in file order) are rejected as account_limit."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    events, rejects = [], Counter()
    accounts, cap = set(), cfg["engine"]["max_accounts_per_partition"]
    for seq, raw in enumerate(data.split(b"\n")):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if raw.strip() == b"":
            continue
        event, reason = parse_line(raw, cfg, seq, now)
        if event is not None and event.account not in accounts:
            if len(accounts) >= cap:
                event, reason = None, "account_limit"
            else:
                accounts.add(event.account)
        if event is None:
            rejects[reason] += 1
        else:
            events.append(event)
    return events, rejects

# ----------------------------------------------------------------------------- p-values


def negative_binomial_cdf(x, r, p):
    with mpmath.workdps(30):
        return float(mpmath.betainc(r, x + 1, 0, p, regularized=True))


def poisson_cdf(x, lam):
    with mpmath.workdps(30):
        return float(mpmath.gammainc(x + 1, lam, mpmath.inf, regularized=True))

# ----------------------------------------------------------------------------- engine


class Account:
    """State of one account. Events and checks are fed strictly in time order."""

    def __init__(self, account_id, cfg, out):
        self.id, self.cfg, self.out = account_id, cfg, out
        self.seen = False      # any event ever seen for this account
        self.active = False    # lifecycle active
        self.gen = 0           # lifecycle number, invalidates old timers
        self.timers = []       # heap of (T, order, tie, kind, gen, payload)
        self.tie = itertools.count()
        self.start = None

    # -- lifecycle state
    def begin(self, ts):
        self.gen += 1
        self.active = True
        self.start = ts
        self.activated_at = None
        self.n_events = 0
        self.days = set()
        self.users = set()
        self.names = set()
        self.daily_events = Counter()
        self.daily_users = {}
        self.last_activity = None
        self.firing_not_activated = []  # [(after_days, id, severity)]
        self.firing_inactive = None     # (id, severity, T)
        self.firing_drop = None         # (id, severity, frozen_expected)
        rule = self.cfg["rules"]["not_activated"]
        if rule["enabled"]:
            for k, deadline in enumerate(rule["deadlines"]):
                t = ts + deadline["after_days"] * DAY
                self.add_timer(t, k, "not_activated", deadline)

    def add_timer(self, t, order, kind, payload):
        heapq.heappush(self.timers, (t, order, next(self.tie), kind, self.gen, payload))

    def emit(self, kind, status, severity, episode, event_time, evidence, summary):
        self.out.append({
            "id": f"{self.id}/{kind}/{episode}", "account_id": self.id, "kind": kind,
            "status": status, "severity": severity, "event_time": fmt_ts(event_time),
            "emitted_at": fmt_ts(int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)),
            "summary": summary, "evidence": evidence, "_t": event_time})

    def resolve(self, alert_id, kind, severity, t, reason):
        episode = alert_id[len(f"{self.id}/{kind}/"):]
        self.emit(kind, "resolved", severity, episode, t, {"reason": reason},
                  f"{kind} resolved: {reason}")

    def activation_reached(self):
        act = self.cfg["activation"]
        return (all(name in self.names for name in act["required_events"])
                and len(self.days) >= act["min_active_days"]
                and len(self.users) >= act["min_active_users"]
                and self.n_events >= act["min_events"])

    # -- events
    def on_event(self, ev):
        lc = self.cfg["lifecycle"]
        first = not self.seen
        self.seen = True
        if ev.name in lc["start_events"]:
            if not self.active:
                self.begin(ev.ts)
        elif ev.name in lc["end_events"]:
            if self.active:
                self.end(ev.ts)
        else:
            if not self.active:
                if first and lc["start_on_first_event"]:
                    self.begin(ev.ts)
                else:
                    return
            self.on_activity(ev)

    def end(self, ts):
        for _after, alert_id, severity in sorted(self.firing_not_activated):
            self.resolve(alert_id, "not_activated", severity, ts, "churned")
        if self.firing_inactive:
            self.resolve(self.firing_inactive[0], "inactive", self.firing_inactive[1],
                         ts, "churned")
        if self.firing_drop:
            self.resolve(self.firing_drop[0], "activity_drop", self.firing_drop[1],
                         ts, "churned")
        self.firing_not_activated, self.firing_inactive, self.firing_drop = [], None, None
        self.active = False

    def on_activity(self, ev):
        d = day_of(ev.ts)
        self.n_events += 1
        self.days.add(d)
        self.names.add(ev.name)
        self.daily_events[d] += 1
        self.daily_users.setdefault(d, set())
        if ev.user is not None:
            self.users.add(ev.user)
            self.daily_users[d].add(ev.user)
        if self.firing_inactive:
            alert_id, severity, t = self.firing_inactive
            assert ev.ts > t, "activity at or before an inactive firing time"
            self.resolve(alert_id, "inactive", severity, ev.ts, "activity_resumed")
            self.firing_inactive = None
        self.last_activity = ev.ts
        rule = self.cfg["rules"]["inactive"]
        self.add_timer(ev.ts + rule["after_days"] * DAY, 1_000_000, "inactive", ev.ts)
        if self.activated_at is None and self.activation_reached():
            self.activated_at = ev.ts
            for _after, alert_id, severity in sorted(self.firing_not_activated):
                self.resolve(alert_id, "not_activated", severity, ev.ts, "activated")
            self.firing_not_activated = []

    # -- timers
    def on_timer(self, t, kind, gen, payload):
        if gen != self.gen or not self.active:
            return
        if kind == "not_activated":
            self.check_not_activated(t, payload)
        else:
            self.check_inactive(t, payload)

    def check_not_activated(self, t, deadline):
        if self.activated_at is not None:  # activated at a time <= t
            return
        after, severity = deadline["after_days"], deadline["severity"]
        episode = f"{fmt_date(day_of(self.start))}+{after}d"
        missing = [name for name in self.cfg["activation"]["required_events"]
                   if name not in self.names]
        evidence = {"after_days": after, "start": fmt_ts(self.start),
                    "active_days": len(self.days), "active_users": len(self.users),
                    "events": self.n_events, "missing_events": missing}
        self.emit("not_activated", "firing", severity, episode, t, evidence,
                  f"Not activated {after} days after start")
        self.firing_not_activated.append((after, f"{self.id}/not_activated/{episode}",
                                          severity))

    def check_inactive(self, t, last):
        rule = self.cfg["rules"]["inactive"]
        if not rule["enabled"] or self.activated_at is None:
            return
        if self.last_activity != last or self.firing_inactive:
            return  # activity in (last, t], or duplicate timer for the same ts
        episode = fmt_date(day_of(last))
        evidence = {"last_activity": fmt_ts(last), "idle_days": rule["after_days"]}
        self.emit("inactive", "firing", rule["severity"], episode, t, evidence,
                  f"No activity for {rule['after_days']} days")
        self.firing_inactive = (f"{self.id}/inactive/{episode}", rule["severity"], t)

    # -- day close
    def daily_metric(self, d):
        if self.cfg["rules"]["activity_drop"]["metric"] == "events":
            return self.daily_events.get(d, 0)
        return len(self.daily_users.get(d, ()))

    def close_day(self, d):
        rule = self.cfg["rules"]["activity_drop"]
        t = (d + 1) * DAY
        if not rule["enabled"] or not self.active:
            return
        if self.activated_at is None or self.activated_at >= t:
            return
        rd, bd = rule["recent_days"], rule["baseline_days"]
        if not d - rd - bd + 1 > day_of(self.start):
            return
        recent = [self.daily_metric(day) for day in range(d - rd + 1, d + 1)]
        base = [self.daily_metric(day) for day in range(d - rd - bd + 1, d - rd + 1)]
        x = sum(recent)
        if self.firing_drop:
            alert_id, severity, frozen = self.firing_drop
            if x >= rule["recovery"] * frozen:
                self.resolve(alert_id, "activity_drop", severity, t, "recovered")
                self.firing_drop = None
            return  # one transition per day close (see README)
        m = sum(base) / len(base)
        v = sum((b - m) ** 2 for b in base) / (len(base) - 1) if len(base) > 1 else 0.0
        expected = m * rd
        if not (expected >= rule["min_expected"] and x <= (1 - rule["min_drop"]) * expected):
            return
        if v > m > 0:
            r_day = m * m / (v - m)
            p_value = negative_binomial_cdf(x, r_day * rd, r_day / (r_day + m))
            model = "negative_binomial"
        else:
            p_value = poisson_cdf(x, expected)
            model = "poisson"
        if not p_value <= rule["alpha"]:
            return
        drop = 1 - x / expected
        evidence = {"observed": x, "expected": expected, "drop_pct": drop,
                    "p_value": p_value, "model": model, "recent_days": rd,
                    "baseline_days": bd}
        self.emit("activity_drop", "firing", rule["severity"], fmt_date(d), t, evidence,
                  f"Activity dropped {drop:.0%} over the last {rd} days "
                  f"({x} vs {expected:.1f} expected, p={p_value:.2g})")
        self.firing_drop = (f"{self.id}/activity_drop/{fmt_date(d)}", rule["severity"],
                            expected)


def run_account(account_id, events, cfg, until, out):
    """events: this account's events, sorted by (ts, seq), all with ts <= until."""
    acc = Account(account_id, cfg, out)
    i = 0
    next_close = (day_of(events[0].ts) + 1) * DAY
    while True:
        t_check = min(next_close, acc.timers[0][0]) if acc.timers else next_close
        if i < len(events) and events[i].ts <= t_check:  # events before checks
            acc.on_event(events[i])
            i += 1
            continue
        if t_check > until:
            break
        while acc.timers and acc.timers[0][0] == t_check:
            t, _order, _tie, kind, gen, payload = heapq.heappop(acc.timers)
            acc.on_timer(t, kind, gen, payload)
        if next_close == t_check:
            acc.close_day(day_of(t_check) - 1)
            next_close += DAY


def run(cfg, events, until=None):
    """Return the alert records (sorted) for a list of parsed events."""
    if until is None:
        if not events:
            return []
        until = max(ev.ts for ev in events)
    by_account = {}
    for ev in sorted(events, key=lambda e: (e.ts, e.seq)):
        if ev.ts <= until:
            by_account.setdefault(ev.account, []).append(ev)
    out = []
    for account_id, account_events in by_account.items():
        run_account(account_id, account_events, cfg, until, out)
    out.sort(key=lambda r: (r["_t"], r["id"], r["status"]))
    for rec in out:
        del rec["_t"]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--until", help="RFC 3339 or epoch ms; default: newest event ts")
    ap.add_argument("--now", help="RFC 3339 or epoch ms: the clock for the future-timestamp "
                                  "check (input.max_future); default: the wall clock")
    ap.add_argument("--output", help="default: stdout")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    until = parse_until(args.until) if args.until is not None else None
    now = parse_until(args.now) if args.now is not None else int(time.time() * 1000)
    events, rejects = read_events(args.input, cfg, now)
    records = run(cfg, events, until)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    detail = " ".join(f"{k}={v}" for k, v in sorted(rejects.items()))
    print(f"churnwatch_ref: {len(events)} events accepted, {sum(rejects.values())} "
          f"rejected{': ' + detail if detail else ''}; {len(records)} alert records",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
