"""Tests of the reference oracle itself, on the hand-made scenarios.

Every expected record below was derived by hand from the contract in
docs/detection.md and the decisions in README.md (comments show the arithmetic);
p-values are recomputed with closed-form stdlib sums, independently of mpmath.
"""
import gzip
import json
import math
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCEN = os.path.join(HERE, "scenarios")
REF = os.path.join(HERE, "churnwatch_ref.py")
COMPARE = os.path.join(HERE, "compare.py")
sys.path.insert(0, HERE)
import churnwatch_ref as ref  # noqa: E402
import compare  # noqa: E402

# scenario -> --until (None: default, the newest event ts). Also listed in README.md.
SCENARIOS = {
    "s01_not_activated_progress": "2026-04-06T00:00:00Z",
    "s02_late_activation": None,
    "s03_activation_at_deadline": "2026-02-10T00:00:00Z",
    "s04_inactive_episodes": "2026-02-12T00:00:00Z",
    "s05_drop_negbin_recovery": "2026-02-09T00:00:00Z",
    "s06_drop_poisson": "2026-04-06T00:00:00Z",
    "s07_drop_not_fired": "2026-04-06T00:00:00Z",
    "s08_baseline_boundary": "2026-04-06T00:00:00Z",
    "s09_churn_resubscribe": "2026-05-26T00:00:00Z",
    "s10_start_on_first_false": "2026-03-01T00:00:00Z",
    "s11_start_on_first_true": "2026-03-01T00:00:00Z",
    "s12_segment_pointers": "2026-02-10T00:00:00Z",
    "s13_active_users_metric": "2026-04-06T00:00:00Z",
    "s14_out_of_order": None,
}


def config_for(name):
    own = os.path.join(SCEN, name + ".toml")
    return own if os.path.exists(own) else os.path.join(SCEN, "default.toml")


def run(name, until="default", config=None, input_path=None):
    until = SCENARIOS[name] if until == "default" else until
    cmd = [sys.executable, REF, "--config", config or config_for(name),
           "--input", input_path or os.path.join(SCEN, name + ".ndjson")]
    if until is not None:
        cmd += ["--until", str(until)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def na_evidence(after, start, days, users, events, missing=()):
    return {"after_days": after, "start": start, "active_days": days,
            "active_users": users, "events": events, "missing_events": list(missing)}


def check(records, expected):
    """expected: list of (id, status, event_time, severity, evidence or None), in order."""
    got = [(r["id"], r["status"], r["event_time"], r["severity"]) for r in records]
    assert got == [e[:4] for e in expected]
    for rec, (alert_id, status, _t, _s, evidence) in zip(records, expected):
        account, kind = alert_id.split("/")[:2]
        assert rec["account_id"] == account and rec["kind"] == kind
        assert set(rec) == {"id", "account_id", "kind", "status", "severity",
                            "event_time", "emitted_at", "summary", "evidence"}
        if status == "resolved":
            assert len(rec["evidence"]) == 1
        if evidence is not None:
            for key, value in evidence.items():
                if isinstance(value, float):
                    assert rec["evidence"][key] == pytest.approx(value, rel=1e-9), key
                else:
                    assert rec["evidence"][key] == value, key


def poisson_cdf(x, lam):  # e^-lam * sum lam^k / k!
    return sum(math.exp(-lam + k * math.log(lam) - math.lgamma(k + 1)) for k in range(x + 1))


def nb_cdf(x, r, p):  # pmf(k) = Gamma(k+r) / (k! Gamma(r)) p^r (1-p)^k
    return sum(math.exp(math.lgamma(k + r) - math.lgamma(k + 1) - math.lgamma(r)
                        + r * math.log(p) + k * math.log1p(-p)) for k in range(x + 1))


def drop_evidence(observed, expected, p_value, model):
    return {"observed": observed, "expected": expected, "drop_pct": 1 - observed / expected,
            "p_value": p_value, "model": model, "recent_days": 7, "baseline_days": 28}


def test_s01_not_activated_progress_and_missing_events():
    # S = Jan 5 09:00; 30d -> Feb 4 09:00 (the activity exactly at T counts: days Jan 5,
    # Jan 6, Feb 4; events 4; users u1). 90d -> Apr 5 09:00 (+ u2 on Feb 10).
    # acme-2 activates on Jan 12 (both required events, 3 days, 2 users): nothing;
    # its inactive alert is suppressed because the rule is disabled in s01.toml.
    start = "2026-01-05T09:00:00.000Z"
    records, _ = run("s01_not_activated_progress")
    check(records, [
        ("acme-1/not_activated/2026-01-05+30d", "firing", "2026-02-04T09:00:00.000Z", "warning",
         na_evidence(30, start, 3, 1, 4, ["report.created"])),
        ("acme-1/not_activated/2026-01-05+90d", "firing", "2026-04-05T09:00:00.000Z", "critical",
         na_evidence(90, start, 4, 2, 5, ["report.created"])),
    ])


def test_s02_late_activation_resolves_both_deadlines():
    start = "2026-01-05T09:00:00.000Z"
    records, _ = run("s02_late_activation")
    check(records, [
        ("beta/not_activated/2026-01-05+30d", "firing", "2026-02-04T09:00:00.000Z", "warning",
         na_evidence(30, start, 2, 1, 2)),
        ("beta/not_activated/2026-01-05+90d", "firing", "2026-04-05T09:00:00.000Z", "critical",
         na_evidence(90, start, 2, 1, 2)),
        ("beta/not_activated/2026-01-05+30d", "resolved", "2026-04-10T12:00:00.000Z", "warning",
         {"reason": "activated"}),
        ("beta/not_activated/2026-01-05+90d", "resolved", "2026-04-10T12:00:00.000Z", "critical",
         {"reason": "activated"}),
    ])


def test_s03_activation_exactly_at_deadline():
    # gamma activates at T itself (activated by T): no alert. delta at T + 1 ms.
    records, _ = run("s03_activation_at_deadline")
    check(records, [
        ("delta/not_activated/2026-01-05+30d", "firing", "2026-02-04T09:00:00.000Z", "warning",
         na_evidence(30, "2026-01-05T09:00:00.000Z", 2, 1, 2)),
        ("delta/not_activated/2026-01-05+30d", "resolved", "2026-02-04T09:00:00.001Z", "warning",
         {"reason": "activated"}),
    ])


S04_EXPECTED = [
    ("idle/inactive/2026-01-07", "firing", "2026-01-21T10:00:00.000Z", "warning",
     {"last_activity": "2026-01-07T10:00:00.000Z", "idle_days": 14}),
    ("idle/inactive/2026-01-07", "resolved", "2026-01-25T08:00:00.000Z", "warning",
     {"reason": "activity_resumed"}),
    # busy: activity exactly at Jan 21 10:00 = T prevents the first episode.
    ("busy/inactive/2026-01-21", "firing", "2026-02-04T10:00:00.000Z", "warning",
     {"last_activity": "2026-01-21T10:00:00.000Z", "idle_days": 14}),
    # preact never activates (2 days): no inactive alert, but its 30d deadline fires.
    ("preact/not_activated/2026-01-05+30d", "firing", "2026-02-04T10:00:00.000Z", "warning",
     na_evidence(30, "2026-01-05T10:00:00.000Z", 2, 1, 2)),
    ("idle/inactive/2026-01-26", "firing", "2026-02-09T12:00:00.000Z", "warning",
     {"last_activity": "2026-01-26T12:00:00.000Z", "idle_days": 14}),
    ("busy/inactive/2026-01-21", "resolved", "2026-02-11T00:00:00.000Z", "warning",
     {"reason": "activity_resumed"}),
    # idle's activity on Feb 20 is after --until: ignored, episode 2 stays firing.
]


def test_s04_inactive_two_episodes():
    records, _ = run("s04_inactive_episodes")
    check(records, S04_EXPECTED)


def test_s04_without_until_the_late_event_resolves():
    records, _ = run("s04_inactive_episodes", until=None)
    check(records, S04_EXPECTED + [
        ("idle/inactive/2026-01-26", "resolved", "2026-02-20T00:00:00.000Z", "warning",
         {"reason": "activity_resumed"})])


def test_disabled_rule_never_fires(tmp_path):
    text = open(config_for("s04_inactive_episodes")).read()
    text = text.replace("[rules.inactive]\nenabled = true", "[rules.inactive]\nenabled = false")
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    records, _ = run("s04_inactive_episodes", config=str(cfg))
    check(records, [e for e in S04_EXPECTED if "/inactive/" not in e[0]])


def test_s05_negative_binomial_fire_and_recovery():
    # Baseline Jan 2..Jan 29 alternates 2, 8: m = 5, v = 28*9/27 = 28/3 > m.
    # r_day = 25 / (13/3) = 75/13, r = 7 * 75/13, p = r_day/(r_day+m) = 15/28.
    # Day Feb 5 (first day with d-34 > day(S)=Jan 1): R = Jan 30..Feb 5, x = 2.
    # Feb 6: x = 11, Feb 7: x = 20, Feb 8: x = 30 >= 0.75*35 = 26.25 -> recovered.
    r, p = 7 * 75 / 13, 15 / 28
    records, _ = run("s05_drop_negbin_recovery")
    check(records, [
        ("nb/activity_drop/2026-02-05", "firing", "2026-02-06T00:00:00.000Z", "warning",
         drop_evidence(2, 35.0, nb_cdf(2, r, p), "negative_binomial")),
        ("nb/activity_drop/2026-02-05", "resolved", "2026-02-09T00:00:00.000Z", "warning",
         {"reason": "recovered"}),
    ])
    assert records[0]["evidence"]["p_value"] == pytest.approx(nb_cdf(2, r, p), rel=1e-9)
    assert records[0]["evidence"]["p_value"] < 0.001


def test_s06_poisson_drop():
    # Baseline Mar 2..Mar 29 = 10/day: v = 0 <= m -> Poisson(70); x = 3 + 2 = 5.
    records, _ = run("s06_drop_poisson")
    check(records, [("po/activity_drop/2026-04-05", "firing", "2026-04-06T00:00:00.000Z",
                     "warning", drop_evidence(5, 70.0, poisson_cdf(5, 70.0), "poisson"))])


def test_s07_drops_too_small_do_not_fire():
    # small: x = 40 > 0.5 * 70 (p would pass); noisy: x = 10 <= 10.5 but p > alpha;
    # tiny: x = 0, p = e^-14 < alpha but expected = 14 < min_expected.
    assert poisson_cdf(40, 70.0) < 0.001 and poisson_cdf(10, 21.0) > 0.001
    assert math.exp(-14) < 0.001
    records, _ = run("s07_drop_not_fired")
    assert records == []


def test_s08_baseline_must_lie_after_start_day():
    # S = Mar 1 12:00 (day s); 10/day on days s..s+27 then nothing. Day s+34 = Apr 4
    # would fire (B = s..s+27, x = 0) but s+34-35+1 = s is not > s. Day Apr 5: B = Mar 2..
    # Mar 29 = 27 x 10 + one 0: m = 270/28, v < m -> Poisson(67.5), p = e^-67.5.
    records, _ = run("s08_baseline_boundary")
    check(records, [("bound/activity_drop/2026-04-05", "firing", "2026-04-06T00:00:00.000Z",
                     "warning", drop_evidence(0, 67.5, math.exp(-67.5), "poisson"))])
    records, _ = run("s08_baseline_boundary", until="2026-04-05T23:59:59.999Z")
    assert records == []


def test_s09_churn_resolves_everything_then_new_lifecycle():
    records, _ = run("s09_churn_resubscribe")
    a_start, a_new = "2026-01-05T09:00:00.000Z", "2026-04-15T08:00:00.000Z"
    check(records, [
        ("ch-a/not_activated/2026-01-05+30d", "firing", "2026-02-04T09:00:00.000Z", "warning",
         na_evidence(30, a_start, 1, 1, 1)),
        ("ch-a/not_activated/2026-01-05+90d", "firing", "2026-04-05T09:00:00.000Z", "critical",
         na_evidence(90, a_start, 1, 1, 1)),
        # ch-b: 10/day Mar 1..Mar 31 (S = Mar 1 10:00); Apr 5: x = 20 (Mar 30, 31).
        ("ch-b/activity_drop/2026-04-05", "firing", "2026-04-06T00:00:00.000Z", "warning",
         drop_evidence(20, 70.0, poisson_cdf(20, 70.0), "poisson")),
        ("ch-a/not_activated/2026-01-05+30d", "resolved", "2026-04-10T12:00:00.000Z", "warning",
         {"reason": "churned"}),
        ("ch-a/not_activated/2026-01-05+90d", "resolved", "2026-04-10T12:00:00.000Z", "critical",
         {"reason": "churned"}),
        ("ch-b/inactive/2026-03-31", "firing", "2026-04-14T10:09:00.000Z", "warning",
         {"last_activity": "2026-03-31T10:09:00.000Z", "idle_days": 14}),
        ("ch-b/activity_drop/2026-04-05", "resolved", "2026-04-20T00:00:00.000Z", "warning",
         {"reason": "churned"}),
        ("ch-b/inactive/2026-03-31", "resolved", "2026-04-20T00:00:00.000Z", "warning",
         {"reason": "churned"}),
        # Activity on Apr 12/13 (after the end) is ignored, else ch-a would activate.
        ("ch-a/not_activated/2026-04-15+30d", "firing", "2026-05-15T08:00:00.000Z", "warning",
         na_evidence(30, a_new, 1, 1, 1)),
        ("ch-b/not_activated/2026-04-25+30d", "firing", "2026-05-25T06:00:00.000Z", "warning",
         na_evidence(30, "2026-04-25T06:00:00.000Z", 0, 0, 0)),
    ])


def test_s10_start_on_first_event_false():
    # sf-a: only activity, never a start event -> nothing. sf-b: Jan 5/6 activity is
    # ignored (it would make 3 days and activate), S = account.created Jan 10.
    records, _ = run("s10_start_on_first_false")
    check(records, [("sf-b/not_activated/2026-01-10+30d", "firing", "2026-02-09T00:00:00.000Z",
                     "warning", na_evidence(30, "2026-01-10T00:00:00.000Z", 1, 1, 1))])


def test_s11_start_on_first_event_true():
    records, _ = run("s11_start_on_first_true")
    check(records, [
        # st-a: S = first activity; the account.created on Jan 10 is ignored.
        ("st-a/not_activated/2026-01-05+30d", "firing", "2026-02-04T10:00:00.000Z", "warning",
         na_evidence(30, "2026-01-05T10:00:00.000Z", 2, 1, 2)),
        # st-c: second account.created while active is ignored.
        ("st-c/not_activated/2026-01-05+30d", "firing", "2026-02-04T12:00:00.000Z", "warning",
         na_evidence(30, "2026-01-05T12:00:00.000Z", 1, 1, 1)),
        # st-b: first event is an end event -> seen, no lifecycle; Jan 6-8 ignored.
        ("st-b/not_activated/2026-01-20+30d", "firing", "2026-02-19T00:00:00.000Z", "warning",
         na_evidence(30, "2026-01-20T00:00:00.000Z", 1, 1, 1)),
    ])


def test_s12_segment_pointers_offsets_and_rejects():
    # S = 2026-01-05T01:30+02:00 = 2026-01-04T23:30Z (episode date is the UTC date).
    # Accepted activity: Jan 6 00:00 (epoch ms, u1), Jan 8 04:30:00.999 (null user),
    # Jan 9 06:00:00.500 ("" user), Jan 10 (no user): 4 days, 1 user -> not activated
    # (min_active_users = 2; every rejected line carries u9).
    records, stderr = run("s12_segment_pointers")
    check(records, [("seg-1/not_activated/2026-01-04+30d", "firing", "2026-02-03T23:30:00.000Z",
                     "warning", na_evidence(30, "2026-01-04T23:30:00.000Z", 4, 1, 4))])
    assert "5 events accepted, 10 rejected" in stderr
    for reason in ("invalid_event=1", "invalid_json=1", "invalid_ts=3", "invalid_user_id=1",
                   "invalid_utf8=1", "missing_account_id=1", "not_object=1", "oversized=1"):
        assert reason in stderr


def test_s13_active_users_metric():
    # Baseline 6 distinct users/day (12 events); recent 1 user/day (13 events).
    records, _ = run("s13_active_users_metric")
    check(records, [("au/activity_drop/2026-04-05", "firing", "2026-04-06T00:00:00.000Z",
                     "warning", drop_evidence(7, 42.0, poisson_cdf(7, 42.0), "poisson"))])
    records, _ = run("s13_active_users_metric", config=config_for("default"))
    assert records == []  # metric = events: no drop at all


def test_s14_out_of_order_within_lateness():
    # W: 3rd day is Jan 7 23:58 (listed after Jan 8 00:03): last activity Jan 8 00:03.
    # X: 11:59 (listed after 12:05) is in (L, T]; Y: activity exactly at T;
    # Z: resolved by the earliest activity after T, 12:00:00.001, not 12:03.
    records, _ = run("s14_out_of_order")
    check(records, [
        ("W/inactive/2026-01-08", "firing", "2026-01-22T00:03:00.000Z", "warning",
         {"last_activity": "2026-01-08T00:03:00.000Z", "idle_days": 14}),
        ("Z/inactive/2026-01-10", "firing", "2026-01-24T12:00:00.000Z", "warning",
         {"last_activity": "2026-01-10T12:00:00.000Z", "idle_days": 14}),
        ("Z/inactive/2026-01-10", "resolved", "2026-01-24T12:00:00.001Z", "warning",
         {"reason": "activity_resumed"}),
    ])


def test_gzip_input_and_epoch_ms_until(tmp_path):
    name = "s09_churn_resubscribe"
    gz = tmp_path / "in.ndjson.gz"
    gz.write_bytes(gzip.compress(open(os.path.join(SCEN, name + ".ndjson"), "rb").read()))
    plain, _ = run(name)
    zipped, _ = run(name, until=ref.parse_rfc3339(SCENARIOS[name]), input_path=str(gz))
    strip = lambda recs: [{k: v for k, v in r.items() if k != "emitted_at"} for r in recs]
    assert strip(plain) == strip(zipped)


def test_rfc3339_parsing():
    p = ref.parse_rfc3339
    assert p("2026-01-01T00:00:00Z") == 1767225600000
    assert p("2026-01-01T02:00:00+02:00") == 1767225600000
    assert p("2025-12-31T19:00:00.1239-05:00") == 1767225600123
    assert p("1969-12-31T23:59:59.9999Z") == -1  # floor, not toward zero
    for bad in ("2026-02-30T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T00:00:00",
                "2026-01-01", "2026-01-01T00:00:00+0200", "2026-01-01T00:00:00.Z"):
        assert p(bad) is None, bad
    assert ref.fmt_ts(-1) == "1969-12-31T23:59:59.999Z"
    assert ref.parse_duration("500ms") == 500 and ref.parse_duration("14d") == 14 * ref.DAY


def test_json_pointer():
    doc = {"a/b": {"m~n": [10, {"x": 1}]}, "": 5}
    assert ref.json_pointer(doc, "/a~1b/m~0n/1/x") == 1
    assert ref.json_pointer(doc, "/") == 5
    assert ref.json_pointer(doc, "/a~1b/m~0n/2") is ref.MISSING
    assert ref.json_pointer(doc, "/a~1b/m~0n/01") is ref.MISSING
    assert ref.json_pointer(doc, "/nope") is ref.MISSING


@pytest.mark.parametrize("doc,reason", [
    ({"account_id": "a" * 257, "event": "e", "ts": 0}, "invalid_account_id"),
    ({"account_id": "", "event": "e", "ts": 0}, "invalid_account_id"),
    ({"account_id": "a", "event": 5, "ts": 0}, "invalid_event"),
    ({"account_id": "a", "event": "e"}, "missing_ts"),
    ({"account_id": "a", "event": "e", "ts": 1.0}, "invalid_ts"),
    ({"account_id": "a", "event": "e", "ts": False}, "invalid_ts"),
    ({"account_id": "a", "event": "e", "ts": 0, "user_id": ["u"]}, "invalid_user_id"),
])
def test_rejects(doc, reason):
    event, why = ref.parse_line(json.dumps(doc).encode(), ref.DEFAULT_CONFIG, 0)
    assert event is None and why == reason


def test_accepts_edge_values():
    cfg = ref.DEFAULT_CONFIG
    ok = {"account_id": "é" * 128, "event": "e", "ts": 5, "user_id": None}  # 256 bytes
    event, _ = ref.parse_line(json.dumps(ok, ensure_ascii=False).encode(), cfg, 0)
    assert event.account == "é" * 128 and event.user is None and event.ts == 5
    event, why = ref.parse_line(b'{"account_id":"a","event":"e","ts":NaN}', cfg, 0)
    assert why == "invalid_json"
    event, why = ref.parse_line(b'{"account_id":"\\ud800","event":"e","ts":0}', cfg, 0)
    assert why == "invalid_json"


def test_compare_tool(tmp_path):
    records, _ = run("s05_drop_negbin_recovery")
    exp, act = tmp_path / "e.ndjson", tmp_path / "a.ndjson"
    exp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tweaked = [dict(r, emitted_at="x", summary="y", account={"csm": "z"}) for r in records]
    tweaked[0]["evidence"] = dict(tweaked[0]["evidence"])
    tweaked[0]["evidence"]["p_value"] *= 1 + 1e-7
    tweaked[0]["evidence"]["expected"] *= 1 + 1e-12
    act.write_text("".join(json.dumps(r) + "\n" for r in reversed(tweaked)))
    out = subprocess.run([sys.executable, COMPARE, str(exp), str(act)], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "2 records match" in out.stdout
    tweaked[0]["evidence"]["expected"] = 35.001
    act.write_text("".join(json.dumps(r) + "\n" for r in tweaked[:1]))
    out = subprocess.run([sys.executable, COMPARE, str(exp), str(act)], capture_output=True,
                         text=True)
    assert out.returncode == 1
    assert "evidence.expected" in out.stdout and "missing from actual" in out.stdout
    assert compare.differences({"observed": 2}, {"observed": 2.0}) == []
    assert compare.differences({"p_value": 1e-13}, {"p_value": 5e-13}) == []


# ---------------------------------------------------------- contract version 2 rejections

@pytest.mark.parametrize("doc", [
    {"account_id": "a\u0000b", "event": "e", "ts": 0},
    {"account_id": "a\u001f", "event": "e", "ts": 0},
    {"account_id": "\u007facme", "event": "e", "ts": 0},
    {"account_id": "a", "event": "e", "ts": 0, "user_id": "u\n1"},
    {"account_id": "a", "event": "e", "ts": 0, "user_id": "\u001b[31mred"},
])
def test_control_characters_in_ids_are_invalid_id(doc):
    event, why = ref.parse_line(json.dumps(doc).encode(), ref.DEFAULT_CONFIG, 0)
    assert event is None and why == "invalid_id"


def test_other_characters_and_event_names_are_not_invalid_id():
    cfg = ref.DEFAULT_CONFIG
    for doc in ({"account_id": "a\u0080b\u00a0 é\u2028", "event": "e", "ts": 0},
                {"account_id": "a", "event": "tab\there", "ts": 0, "user_id": "u~"}):
        event, why = ref.parse_line(json.dumps(doc).encode(), cfg, 0)
        assert why is None and event.account == doc["account_id"]


def test_future_timestamp_bound_is_inclusive():
    cfg = ref.DEFAULT_CONFIG
    now = 1_790_000_000_000
    line = lambda ts: json.dumps({"account_id": "a", "event": "e", "ts": ts}).encode()
    assert ref.parse_line(line(now + ref.DAY), cfg, 0, now)[1] is None
    assert ref.parse_line(line(now + ref.DAY + 1), cfg, 0, now) == (None, "future_timestamp")
    assert ref.parse_line(line("9999-12-31T00:00:00Z"), cfg, 0, now)[1] == "future_timestamp"
    # No clock (unit use): no check.
    assert ref.parse_line(line("9999-12-31T00:00:00Z"), cfg, 0)[1] is None


def twenty_events_and_one_from_9999(tmp_path):
    """The issue's repro: twenty normal events over five activated accounts, plus one."""
    lines = []
    for a in range(5):
        for d in range(4):
            lines.append({"account_id": f"acct-{a}", "event": "report.created",
                          "ts": f"2026-03-0{d + 1}T10:00:00Z", "user_id": "u1"})
    clean = tmp_path / "clean.ndjson"
    clean.write_text("".join(json.dumps(x) + "\n" for x in lines))
    lines.insert(10, {"account_id": "zz", "event": "x", "ts": "9999-12-31T00:00:00Z"})
    poisoned = tmp_path / "poisoned.ndjson"
    poisoned.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return clean, poisoned


def cli(config, input_path, *extra):
    proc = subprocess.run([sys.executable, REF, "--config", config, "--input", str(input_path),
                           *extra], capture_output=True, text=True, check=True)
    return [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def test_one_event_dated_9999_is_rejected_and_changes_nothing(tmp_path):
    clean, poisoned = twenty_events_and_one_from_9999(tmp_path)
    cfg = os.path.join(SCEN, "default.toml")
    expected, _ = cli(cfg, clean, "--now", "2026-03-05T00:00:00Z")
    got, stderr = cli(cfg, poisoned, "--now", "2026-03-05T00:00:00Z")
    assert got == expected
    assert "future_timestamp=1" in stderr
    # The wall clock (2026 or later) rejects it just the same.
    assert cli(cfg, poisoned)[0] == expected
    # What the check prevents: with a clock past 9999 the event is accepted, the horizon
    # jumps to 9999 and every activated account goes "inactive" for ~2.9 million days.
    got, _ = cli(cfg, poisoned, "--now", "9999-12-31T00:00:00Z")
    inactive = [r for r in got if r["kind"] == "inactive" and r["status"] == "firing"]
    assert len(inactive) == 5
    assert inactive[0]["evidence"]["idle_days"] == 14


def test_account_limit_rejects_new_accounts_in_file_order(tmp_path):
    clean, _ = twenty_events_and_one_from_9999(tmp_path)
    cfg = tmp_path / "cap.toml"
    cfg.write_text("[engine]\nmax_accounts_per_partition = 2\n")
    events, rejects = ref.read_events(str(clean), ref.load_config(str(cfg)))
    # acct-0..4 each have four events, in account order: the first two stay.
    assert {e.account for e in events} == {"acct-0", "acct-1"}
    assert rejects == {"account_limit": 12}


def test_s15_hostile_input_on_a_fixed_clock():
    # --now 2026-02-10: 2026-02-11T00:00:00Z is exactly now + 1d (accepted, acct-b's
    # activity), 1 ms later is not; the 9999 event and two ids with control characters
    # are rejected. acct-a: active 01-05, 01-06, 01-07 (activated; its line with user
    # "u\x7f" is rejected, the day still counts through another event), goes dark at
    # 01-07T10:00 + 14 d. acct-b: one active day then the 02-11 event: not activated
    # at 01-05T11:00 + 30 d.
    cfg = os.path.join(SCEN, "default.toml")
    path = os.path.join(SCEN, "s15_hostile_input.ndjson")
    records, stderr = cli(cfg, path, "--now", "2026-02-10T00:00:00Z")
    assert "5 events accepted, 4 rejected: future_timestamp=2 invalid_id=2" in stderr
    assert [(r["id"], r["status"], r["event_time"]) for r in records] == [
        ("acct-a/inactive/2026-01-07", "firing", "2026-01-21T10:00:00.000Z"),
        ("acct-b/not_activated/2026-01-05+30d", "firing", "2026-02-04T11:00:00.000Z"),
    ]
