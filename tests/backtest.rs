//! The backtest: exact scores on hand-made histories at every boundary of
//! docs/backtest.md, `any` as the union of the kinds (property test against a naive
//! scorer), the backtest's alerts against `replay`'s, `--until`/`--as-of`, and bad input.

mod common;

use std::io::Cursor;
use std::process::Command;

use churnwatch::backtest::churns::Churns;
use churnwatch::backtest::history::History;
use churnwatch::backtest::score::{score, Firing, Owners, Window};
use churnwatch::config::Config;
use churnwatch::engine::AlertKind;
use churnwatch::gen::{generate, GenOptions};
use churnwatch::replay::replay;
use churnwatch::sink::record::to_json_line;
use churnwatch::source::file::LineReader;
use churnwatch::time::{Millis, DAY};
use common::{bin, churnwatch, ts};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Every account created 2026-01-01 00:00 gets its 30-day `not_activated` alert at
/// 2026-01-31 00:00 (it never activates). Horizon 10 days below.
const HISTORY: &[(&str, &str, &str)] = &[
    ("hit_edge", "account.created", "2026-01-01T00:00:00Z"),
    ("false_edge", "account.created", "2026-01-01T00:00:00Z"),
    ("multi", "account.created", "2026-01-01T00:00:00Z"),
    ("early", "account.created", "2026-01-01T00:00:00Z"),
    ("earlier", "account.created", "2026-01-01T00:00:00Z"),
    // C - H = start: eligible; one millisecond earlier: not.
    ("early", "subscription.cancelled", "2026-01-11T00:00:00Z"),
    (
        "earlier",
        "subscription.cancelled",
        "2026-01-10T23:59:59.999Z",
    ),
    // Two churns of one account, each after an alert (leads 5 and 2 days).
    ("multi", "subscription.cancelled", "2026-02-05T00:00:00Z"),
    ("multi", "subscription.started", "2026-02-06T00:00:00Z"),
    // Churn exactly at t + H: a hit, caught by the alert at C - H (lead 10 days).
    ("hit_edge", "subscription.cancelled", "2026-02-10T00:00:00Z"),
    // One millisecond later: a false alarm, and a churn nothing caught.
    (
        "false_edge",
        "subscription.cancelled",
        "2026-02-10T00:00:00.001Z",
    ),
    // An end event while no lifecycle is active: no churn.
    ("hit_edge", "subscription.cancelled", "2026-02-20T00:00:00Z"),
    ("fe", "account.created", "2026-03-06T00:00:00Z"),
    ("p", "account.created", "2026-03-07T00:00:00Z"),
    ("multi", "subscription.cancelled", "2026-03-10T00:00:00Z"),
    // The newest event sets the end: `fe`'s alert (04-05) has t + H = end exactly
    // (a false alarm); `p`'s (04-06) is pending.
    ("z", "login", "2026-04-15T00:00:00Z"),
];

const ACCOUNTS_CSV: &str = "account_id,owner_email\nhit_edge,ana@example.com\nfalse_edge,ana@example.com\nmulti,ana@example.com\nfe,bob@example.com\n";

fn history_text() -> String {
    HISTORY
        .iter()
        .map(|(a, e, t)| format!("{{\"account_id\":\"{a}\",\"event\":\"{e}\",\"ts\":\"{t}\"}}\n"))
        .collect()
}

/// The hand-made history as a file `h.ndjson` in `dir`.
fn history_file(dir: &std::path::Path) -> std::path::PathBuf {
    let input = dir.join("h.ndjson");
    std::fs::write(&input, history_text()).unwrap();
    input
}

/// `churnwatch backtest --input <input> --horizon 10d <args>`, which must succeed.
fn backtest_of(input: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut all = vec![
        "backtest",
        "--input",
        input.to_str().unwrap(),
        "--horizon",
        "10d",
    ];
    all.extend_from_slice(args);
    churnwatch(&all)
}

/// Runs `churnwatch backtest` over the hand-made history; returns the JSON output.
fn backtest(extra: &[&str], outcomes: Option<&str>) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let input = history_file(dir.path());
    let accounts = dir.path().join("accounts.csv");
    std::fs::write(&accounts, ACCOUNTS_CSV).unwrap();
    let out = dir.path().join("m.json");
    let outcomes_file = dir.path().join("outcomes.csv");
    let mut args = vec![
        "--accounts",
        accounts.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    if let Some(o) = outcomes {
        std::fs::write(&outcomes_file, o).unwrap();
        args.extend(["--outcomes", outcomes_file.to_str().unwrap()]);
    }
    args.extend_from_slice(extra);
    backtest_of(&input, &args);
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

fn nothing() -> Value {
    json!({"firing": 0, "hits": 0, "false_alarms": 0, "pending": 0, "precision": null,
           "caught": 0, "recall": 0.0, "lead_days": {"p25": null, "p50": null, "p75": null}})
}

#[test]
fn end_events_score_every_boundary_exactly() {
    let m = backtest(&[], None);
    assert_eq!(
        m["history"],
        json!({"start": "2026-01-01T00:00:00.000Z", "end": "2026-04-15T00:00:00.000Z",
               "accounts": 8, "churns": 6, "eligible_churns": 5})
    );
    assert_eq!(m["horizon_days"], json!(10));
    let run = &m["runs"][0];
    assert_eq!(run["settings"], json!({}));
    let na = json!({"firing": 6, "hits": 3, "false_alarms": 2, "pending": 1,
                    "precision": 0.6, "caught": 3, "recall": 0.6,
                    "lead_days": {"p25": 3.5, "p50": 5.0, "p75": 7.5}});
    assert_eq!(
        run["kinds"],
        json!({"not_activated": na, "inactive": nothing(), "activity_drop": nothing(), "any": na})
    );
    // Weeks from Mon 2025-12-29 to Mon 2026-04-13: 16. Alerts: ana's three on
    // Sat 01-31 and one on Sun 03-08; bob's on Sun 04-05; unassigned `p` on Mon 04-06.
    assert_eq!(
        run["load"],
        json!({"per_100_accounts_per_week": 100.0 * 6.0 / 16.0 / 8.0, "owners": [
            {"owner": "ana@example.com", "accounts": 3, "mean_per_week": 0.25, "max_per_week": 3},
            {"owner": "bob@example.com", "accounts": 1, "mean_per_week": 0.0625, "max_per_week": 1},
            {"owner": "unassigned", "accounts": 4, "mean_per_week": 0.0625, "max_per_week": 1}]})
    );
}

#[test]
fn outcomes_replace_end_events() {
    // `p` churns 4 days after its alert (was pending), `hit_edge` 3 days after; the end
    // events no longer count, so `multi`'s two alerts become false alarms.
    let m = backtest(
        &[],
        Some("account_id,churned_at\nhit_edge,2026-02-03T00:00:00Z\np,1775779200000\n"),
    );
    assert_eq!(m["history"]["churns"], json!(2));
    assert_eq!(m["history"]["eligible_churns"], json!(2));
    assert_eq!(
        m["runs"][0]["kinds"]["any"],
        json!({"firing": 6, "hits": 2, "false_alarms": 4, "pending": 0,
               "precision": 2.0 / 6.0, "caught": 2, "recall": 1.0,
               "lead_days": {"p25": 3.25, "p50": 3.5, "p75": 3.75}})
    );
}

#[test]
fn until_ends_the_history_as_of_that_time() {
    // As of 02-07: the churns on 02-10 have not happened, so the 01-31 alerts of
    // hit_edge and false_edge are pending (t + H = 02-10 > end); multi's is a hit.
    for flag in ["--until", "--as-of"] {
        let m = backtest(&[flag, "2026-02-07"], None);
        assert_eq!(
            m["history"],
            json!({"start": "2026-01-01T00:00:00.000Z", "end": "2026-02-07T00:00:00.000Z",
                   "accounts": 5, "churns": 3, "eligible_churns": 2})
        );
        assert_eq!(
            m["runs"][0]["kinds"]["any"],
            json!({"firing": 3, "hits": 1, "false_alarms": 0, "pending": 2,
                   "precision": 1.0, "caught": 1, "recall": 0.5,
                   "lead_days": {"p25": 5.0, "p50": 5.0, "p75": 5.0}})
        );
    }
}

#[test]
fn sweep_runs_every_combination_in_order() {
    let m = backtest(
        &[
            "--set",
            "rules.not_activated.enabled=true,false",
            "--set",
            "rules.inactive.after_days=7,21",
        ],
        None,
    );
    let runs = m["runs"].as_array().unwrap();
    let settings: Vec<&Value> = runs.iter().map(|r| &r["settings"]).collect();
    assert_eq!(
        settings,
        [
            &json!({"rules.not_activated.enabled": true, "rules.inactive.after_days": 7}),
            &json!({"rules.not_activated.enabled": true, "rules.inactive.after_days": 21}),
            &json!({"rules.not_activated.enabled": false, "rules.inactive.after_days": 7}),
            &json!({"rules.not_activated.enabled": false, "rules.inactive.after_days": 21}),
        ]
    );
    assert_eq!(runs[1]["kinds"]["not_activated"]["firing"], json!(6));
    // A disabled rule's kind is left out; `any` is then empty.
    let kinds: Vec<&String> = runs[2]["kinds"].as_object().unwrap().keys().collect();
    assert_eq!(kinds, ["inactive", "activity_drop", "any"]);
    assert_eq!(runs[2]["kinds"]["any"], nothing());
}

#[test]
fn terminal_table_has_a_row_per_run_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    let input = history_file(dir.path());
    let out = backtest_of(&input, &["--set", "rules.inactive.after_days=7,14"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("not_activated") || l.contains(" any "))
        .collect();
    assert_eq!(rows.len(), 4, "{text}");
    assert!(text.contains("* inactive.after_days=14"), "{text}");
    assert!(
        rows[1].contains(" 6 ") && rows[1].contains("0.60"),
        "{text}"
    );
}

fn gen_history(accounts: u32, days: u32, seed: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    let opts = GenOptions {
        accounts,
        days,
        seed,
        ..GenOptions::default()
    };
    generate(&opts, &mut buf).unwrap();
    buf
}

/// A line reader over a copy of `input`.
fn reader(input: &[u8]) -> LineReader {
    LineReader::from_reader(Box::new(Cursor::new(input.to_vec())))
}

fn replay_records(cfg: &Config, input: &[u8], until: Option<Millis>) -> Vec<String> {
    let mut r = reader(input);
    let mut out = Vec::new();
    replay(
        cfg,
        &mut r,
        &churnwatch::replay::ReplayOptions {
            until,
            ..Default::default()
        },
        |a| {
            out.push(to_json_line(&a, 0));
            Ok(())
        },
        |_, _, _, _| Ok(()),
        |_| {},
    )
    .unwrap();
    out
}

fn backtest_records(cfg: &Config, input: &[u8], until: Option<Millis>) -> Vec<String> {
    let mut r = reader(input);
    let h = History::read(cfg, &mut r, until, |_| {}).unwrap();
    let mut out = Vec::new();
    h.run(cfg, |a| out.push(to_json_line(&a, 0)));
    out
}

/// Under the config `cfg_text`, the backtest writes the records replay writes (more
/// than ten of them) for `input` up to `until`.
fn assert_backtest_records_are_replays(cfg_text: &str, input: &[u8], until: Option<Millis>) {
    let cfg = Config::from_toml_str(cfg_text, []).unwrap();
    let a = replay_records(&cfg, input, until);
    let b = backtest_records(&cfg, input, until);
    assert!(a.len() > 10, "{cfg_text} {until:?}: {} records", a.len());
    assert_eq!(a, b, "{cfg_text} {until:?}");
}

#[test]
fn backtest_alerts_are_exactly_replays() {
    let input = gen_history(120, 150, 9);
    let start = ts("2026-01-01T00:00:00Z");
    for (cfg_text, until) in [
        ("", None),
        ("", Some(start + 61 * DAY + 3_600_000)),
        (
            "[rules.inactive]\nafter_days = 7\n[rules.activity_drop]\nalpha = 0.01\n",
            None,
        ),
        ("", Some(start + 200 * DAY)),
    ] {
        assert_backtest_records_are_replays(cfg_text, &input, until);
    }
}

/// The backtest hands the engine pre-resolved events (account slots, event classes
/// under each config, user hashes): the same records as replay under configs where each
/// of those matters (required events and distinct users, the active-users metric, the
/// account cap refusing accounts, events arriving late, no implicit start).
#[test]
fn resolved_events_give_replays_records_under_every_input_that_matters() {
    let input = gen_history(120, 120, 23);
    for cfg_text in [
        "[activation]\nrequired_events = [\"report.created\", \"user.invited\"]\n\
         min_active_users = 2\n[rules.activity_drop]\nmetric = \"active_users\"\n\
         min_expected = 3.0\n",
        "[engine]\nmax_accounts_per_partition = 40\n",
        "[time]\nallowed_lateness = \"1s\"\n[rules.inactive]\nafter_days = 5\n",
        "[lifecycle]\nstart_on_first_event = false\n",
    ] {
        assert_backtest_records_are_replays(cfg_text, &input, None);
    }
}

#[test]
fn replay_as_of_equals_replay_of_the_events_until_then() {
    // The defect this fixes: an --until before the newest event used to be overtaken by
    // the watermark, so records after it were written.
    let input = gen_history(80, 120, 3);
    let cfg = Config::default();
    let until = ts("2026-02-01T00:00:00Z");
    let cut: Vec<u8> = String::from_utf8(input.clone())
        .unwrap()
        .lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| {
                    v["ts"]
                        .as_str()
                        .and_then(|s| churnwatch::time::parse_rfc3339(s).ok())
                })
                .is_none_or(|t| t <= until)
        })
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    let full = replay_records(&cfg, &input, Some(until));
    assert!(!full.is_empty());
    assert_eq!(full, replay_records(&cfg, &cut, Some(until)));
    for r in &full {
        let v: Value = serde_json::from_str(r).unwrap();
        assert!(ts(v["event_time"].as_str().unwrap()) <= until, "{r}");
    }
    // The summary counts the accepted events left out.
    let summary = |bytes: &[u8]| {
        let mut r = reader(bytes);
        replay(
            &cfg,
            &mut r,
            &churnwatch::replay::ReplayOptions {
                until: Some(until),
                ..Default::default()
            },
            |_| Ok(()),
            |_, _, _, _| Ok(()),
            |_| {},
        )
        .unwrap()
    };
    let (all, kept) = (summary(&input), summary(&cut));
    assert!(all.engine.beyond_until > 1000);
    assert_eq!(all.engine.beyond_until, all.events - kept.events);
    assert_eq!(kept.engine.beyond_until, 0);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("e.ndjson");
    std::fs::write(&p, &input).unwrap();
    let out = churnwatch(&[
        "replay",
        "--input",
        p.to_str().unwrap(),
        "--as-of",
        "2026-02-01",
        "--output",
        "/dev/null",
        "--rejects",
        "/dev/null",
    ]);
    let text = String::from_utf8(out.stderr).unwrap();
    let want = format!(", {} after --until (not applied)", all.engine.beyond_until);
    assert!(text.contains(&want), "{text}");
}

fn fails(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn bad_outcomes_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = history_file(dir.path());
    let outcomes = dir.path().join("o.csv");
    for (text, needle) in [
        (
            "account_id,churned_at\nmulti,2026-02-01\nghost,2026-02-01T00:00:00Z\n",
            "o.csv line 2: churned_at \"2026-02-01\"",
        ),
        (
            "account_id,churned_at\nmulti,2026-02-01T00:00:00Z\nghost,2026-02-01T00:00:00Z\n",
            "o.csv line 3: account \"ghost\" has no accepted event",
        ),
        (
            "account,churned_at\nmulti,1\n",
            "o.csv line 1: header has no account_id column",
        ),
    ] {
        std::fs::write(&outcomes, text).unwrap();
        let err = fails(&[
            "backtest",
            "--input",
            input.to_str().unwrap(),
            "--outcomes",
            outcomes.to_str().unwrap(),
        ]);
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn bad_set_is_refused_before_anything_runs() {
    // The input does not exist: the --set error comes first.
    for (flag, needle) in [
        ("rules.inactive.after_dayz=7", "unknown field `after_dayz`"),
        (
            "rules.inactive.after_days=7,soon",
            "rules.inactive.after_days=soon",
        ),
        ("rules.nope=1", "unknown field `nope`"),
        ("nonsense", "write KEY=V1,V2"),
    ] {
        let err = fails(&["backtest", "--input", "/nonexistent", "--set", flag]);
        assert!(err.contains(needle), "{flag}: {err}");
        assert!(!err.contains("/nonexistent"), "{flag}: {err}");
    }
}

/// A naive scorer, straight from the definitions, for the property test.
fn naive(
    firings: &[Firing],
    churns: &[(u32, Millis)],
    w: &Window,
    kinds: &[AlertKind],
) -> Vec<(u64, u64, u64, u64, Vec<f64>)> {
    let mut out = Vec::new();
    for sel in kinds.iter().map(|&k| Some(k)).chain([None]) {
        let of = |f: &&Firing| sel.is_none_or(|k| f.kind == k);
        let (mut hits, mut fa, mut pending) = (0, 0, 0);
        for f in firings.iter().filter(of) {
            if churns
                .iter()
                .any(|&(a, c)| a == f.account && f.t < c && c <= f.t + w.horizon)
            {
                hits += 1;
            } else if f.t + w.horizon <= w.end {
                fa += 1;
            } else {
                pending += 1;
            }
        }
        let mut leads = Vec::new();
        for &(a, c) in churns.iter().filter(|&&(_, c)| c - w.horizon >= w.start) {
            let first = firings
                .iter()
                .filter(of)
                .filter(|f| f.account == a && c - w.horizon <= f.t && f.t < c)
                .map(|f| f.t)
                .min();
            if let Some(t) = first {
                leads.push((c - t) as f64 / DAY as f64);
            }
        }
        leads.sort_by(f64::total_cmp);
        out.push((hits, fa, pending, leads.len() as u64, leads));
    }
    out
}

proptest! {
    #[test]
    fn any_is_the_union_of_the_kinds(
        raw_firings in prop::collection::vec((0u32..4, 0usize..3, 0i64..60), 0..40),
        raw_churns in prop::collection::vec((0u32..4, 0i64..70), 0..10),
        horizon in 1i64..20,
        end in 30i64..70,
    ) {
        // Times in days, on a coarse grid so that boundaries are hit often.
        let firings: Vec<Firing> = raw_firings
            .iter()
            .map(|&(a, k, t)| Firing { account: a, kind: AlertKind::ALL[k], t: t * DAY })
            .collect();
        let mut churns = Churns::new(4);
        for &(a, c) in &raw_churns {
            churns.add(a, c * DAY);
        }
        let w = Window { start: 0, end: end * DAY, horizon: horizon * DAY };
        let owners = Owners::build(4, |a| (a % 2 == 0).then(|| "o".to_string()), |_| true);
        let s = score(&firings, &churns, &w, &AlertKind::ALL, &owners);
        let all_churns: Vec<(u32, Millis)> = churns.iter().collect();
        let want = naive(&firings, &all_churns, &w, &AlertKind::ALL);
        for ((name, got), (hits, fa, pending, caught, leads)) in s.kinds.iter().zip(&want) {
            prop_assert_eq!((got.hits, got.false_alarms, got.pending, got.caught),
                            (*hits, *fa, *pending, *caught), "{}", name);
            prop_assert_eq!(&got.leads, leads, "{}", name);
        }
        let any = s.kind("any").unwrap();
        let kinds = &s.kinds[..3];
        prop_assert_eq!(any.firing, kinds.iter().map(|k| k.1.firing).sum::<u64>());
        prop_assert_eq!(any.hits, kinds.iter().map(|k| k.1.hits).sum::<u64>());
        prop_assert_eq!(any.false_alarms, kinds.iter().map(|k| k.1.false_alarms).sum::<u64>());
        prop_assert_eq!(any.pending, kinds.iter().map(|k| k.1.pending).sum::<u64>());
        prop_assert!(kinds.iter().all(|k| k.1.caught <= any.caught));
        prop_assert!(any.caught <= kinds.iter().map(|k| k.1.caught).sum::<u64>());
        let weeks = churnwatch::backtest::score::weeks(&w) as f64;
        let from_means: f64 = s.load.owners.iter().map(|o| o.mean_per_week * weeks).sum();
        prop_assert!((from_means - any.firing as f64).abs() < 1e-9);
        let weekly: u64 = s.load.weekly.iter().flatten().sum();
        prop_assert_eq!(weekly, any.firing);
    }
}

/// `backtest --actions` on the hand-made history (horizon 10 days), with actions on
/// its alerts by the ids `replay` gives them: "not a risk" on `hit_edge` (churned
/// anyway: a hit), `false_edge` (no churn: a false alarm) and `p` (pending); an
/// acknowledgement on `multi`'s first alert (a hit) and on `fe` (a false alarm); a
/// snooze on `multi`'s second alert; and an alert the backtest does not have. By hand:
/// acted 6, acknowledged 2 (precision 1/2), not a risk 3, of which 1 churned and 1
/// did not (churn rate 1/2); 6 alerts matched, 1 not. The outcome scores are
/// unchanged, and the text table shows the same figures.
#[test]
fn actions_on_alerts_are_scored_beside_precision() {
    let ids = [
        "hit_edge/not_activated/2026-01-01+30d",
        "false_edge/not_activated/2026-01-01+30d",
        "p/not_activated/2026-03-07+30d",
        "multi/not_activated/2026-01-01+30d",
        "fe/not_activated/2026-03-06+30d",
        "multi/not_activated/2026-02-06+30d",
    ];
    // The ids are the ones replay (and so the daemon) writes for this history.
    let dir = tempfile::tempdir().unwrap();
    let input = history_file(dir.path());
    let replayed =
        String::from_utf8(churnwatch(&["replay", "-q", "--input", input.to_str().unwrap()]).stdout)
            .unwrap();
    for id in ids {
        assert!(replayed.contains(&format!("\"id\":\"{id}\"")), "{id}");
    }
    let action = |id: &str, action: &str, at: &str| {
        let account = id.split('/').next().unwrap();
        let mut a = json!({"alert_id": id, "account_id": account, "action": action,
                           "by": "ana@example.com", "at_ms": ts(at)});
        if action == "not_a_risk" || action == "snooze" {
            a["reason"] = json!("seasonal: they always go quiet in January");
            a["until_ms"] = json!(ts(at) + 7 * DAY);
        }
        a
    };
    // As the topic stores them (an alert's value) and as single actions, mixed.
    let value = |id: &str, history: Vec<Value>| json!({"alert_id": id, "account_id": id.split('/').next().unwrap(), "history": history});
    let lines = [
        value(
            ids[0],
            vec![action(ids[0], "not_a_risk", "2026-02-01T09:00:00Z")],
        ),
        action(ids[1], "not_a_risk", "2026-02-01T09:00:00Z"),
        // Not a risk after a withdrawn acknowledgement: not a risk only.
        value(
            ids[2],
            vec![
                action(ids[2], "acknowledge", "2026-04-06T09:00:00Z"),
                action(ids[2], "reopen", "2026-04-06T10:00:00Z"),
                action(ids[2], "not_a_risk", "2026-04-06T11:00:00Z"),
            ],
        ),
        action(ids[3], "acknowledge", "2026-02-01T09:00:00Z"),
        action(ids[4], "acknowledge", "2026-04-05T09:00:00Z"),
        action(ids[5], "snooze", "2026-03-08T09:00:00Z"),
        action(
            "gone/inactive/2025-12-01",
            "acknowledge",
            "2026-01-02T09:00:00Z",
        ),
    ];
    let actions = dir.path().join("actions.ndjson");
    std::fs::write(
        &actions,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let plain = backtest(&[], None);
    let m = backtest(&["--actions", actions.to_str().unwrap()], None);
    let fb = json!({"acted": 6, "acknowledged": 2, "not_a_risk": 3,
                    "not_a_risk_churned": 1, "not_a_risk_no_churn": 1,
                    "not_a_risk_churn_rate": 0.5, "acknowledged_hits": 1,
                    "acknowledged_false_alarms": 1, "acknowledged_precision": 0.5});
    let run = &m["runs"][0];
    for k in ["not_activated", "any"] {
        assert_eq!(run["kinds"][k]["feedback"], fb, "{k}");
        let mut without = run["kinds"][k].clone();
        without.as_object_mut().unwrap().remove("feedback");
        assert_eq!(
            without, plain["runs"][0]["kinds"][k],
            "outcome scores moved"
        );
    }
    assert_eq!(run["kinds"]["inactive"]["feedback"]["acted"], 0);
    assert_eq!(
        run["feedback"],
        json!({"matched_alerts": 6, "unmatched_alerts": 1})
    );
    assert!(plain["runs"][0].get("feedback").is_none());
    // The same actions in two exports (two periods, one line in both): the same scores.
    let (early, late) = (
        dir.path().join("early.ndjson"),
        dir.path().join("late.ndjson"),
    );
    let half = lines.len() / 2;
    let write = |p: &std::path::Path, ls: &[Value]| {
        std::fs::write(p, ls.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap()
    };
    write(&early, &lines[..=half]);
    write(&late, &lines[half..]);
    let two = backtest(
        &[
            "--actions",
            early.to_str().unwrap(),
            "--actions",
            late.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(two["runs"], m["runs"], "two exports score as one");

    // The text table: a feedback row per rule.
    let out = backtest_of(&input, &["--actions", actions.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    let row = text
        .lines()
        .skip_while(|l| !l.starts_with("feedback from the actions"))
        .find(|l| l.contains("not_activated"))
        .unwrap_or_else(|| panic!("no feedback row: {text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "config",
            "not_activated",
            "6",
            "6",
            "2",
            "3",
            "1",
            "0.60",
            "0.50",
            "0.50"
        ],
        "{text}"
    );
    assert!(text.contains("config: 6 alerts with actions matched, 1 not"));
    // The HTML report has the same row.
    let report = dir.path().join("report.html");
    backtest_of(
        &input,
        &[
            "-q",
            "--actions",
            actions.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains("6 alerts with actions matched this run's alerts, 1 did not"));
    assert!(html.contains(
        "<tr><td>not_activated</td><td>6</td><td>6</td><td>2</td><td>3</td><td>1</td><td>0.60</td><td>0.50</td><td>0.50</td></tr>"
    ));

    // A bad line refuses the file, naming it; nothing is scored.
    std::fs::write(&actions, format!("{}\n{{\"alert_id\": 3}}\n", lines[0])).unwrap();
    let err = fails(&[
        "backtest",
        "-q",
        "--input",
        input.to_str().unwrap(),
        "--actions",
        actions.to_str().unwrap(),
    ]);
    assert!(err.contains("actions.ndjson line 2"), "{err}");
}

/// `--actions-topic` and `churnwatch actions export` against a real broker: the
/// topic holds two values of one alert (merged, as the stores do), an alert deleted by a
/// tombstone, and another alert; the export is the live values, one a line in id
/// order, and the backtest scores the same feedback from the topic as from the export.
#[test]
fn the_actions_topic_and_its_export_give_the_same_feedback() {
    let broker = common::broker::Broker::shared();
    let topic = format!("bt-actions-{}", std::process::id());
    broker.create_topic(&topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let input = history_file(dir.path());
    let act = |id: &str, action: &str, at: &str| {
        let mut a = json!({"alert_id": id, "account_id": id.split('/').next().unwrap(),
                           "action": action, "by": "ana@example.com", "at_ms": ts(at)});
        if action == "not_a_risk" {
            a["reason"] = json!("a pilot, not a customer");
            a["until_ms"] = json!(ts(at) + 7 * DAY);
        }
        a
    };
    let value = |id: &str, history: Vec<Value>| json!({"alert_id": id, "account_id": id.split('/').next().unwrap(), "history": history});
    let hit = "hit_edge/not_activated/2026-01-01+30d";
    let multi = "multi/not_activated/2026-01-01+30d";
    let gone = "gone/inactive/2025-12-01";
    let older = value(hit, vec![act(hit, "acknowledge", "2026-02-01T09:00:00Z")]);
    let newer = value(
        hit,
        vec![
            act(hit, "acknowledge", "2026-02-01T09:00:00Z"),
            act(hit, "reopen", "2026-02-01T10:00:00Z"),
            act(hit, "not_a_risk", "2026-02-01T11:00:00Z"),
        ],
    );
    let m = value(
        multi,
        vec![act(multi, "acknowledge", "2026-02-02T09:00:00Z")],
    );
    let g = value(gone, vec![act(gone, "acknowledge", "2026-01-02T09:00:00Z")]);
    let file = dir.path().join("values.ndjson");
    std::fs::write(&file, format!("{older}\n{g}\n{newer}\n{m}\n")).unwrap();
    broker.produce_ok(&file, &["--topic", &topic, "--key-field", "alert_id"]);
    std::fs::write(&file, format!("{g}\n")).unwrap();
    broker.produce_ok(
        &file,
        &["--topic", &topic, "--key-field", "alert_id", "--tombstones"],
    );

    let export = dir.path().join("export.ndjson");
    common::churnwatch_env(
        &[
            "actions",
            "export",
            "--topic",
            &topic,
            "--output",
            export.to_str().unwrap(),
        ],
        [("CHURNWATCH_KAFKA__BROKERS", &broker.bootstrap)],
    );
    let lines: Vec<Value> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, vec![newer, m], "the live values, in alert id order");

    let run = |source: &[&str]| {
        let out = dir.path().join("m.json");
        let status = Command::new(bin())
            .args(["backtest", "-q", "--horizon", "10d", "--input"])
            .arg(&input)
            .args(source)
            .arg("--output")
            .arg(&out)
            .env("CHURNWATCH_KAFKA__BROKERS", &broker.bootstrap)
            .status()
            .unwrap();
        assert!(status.success(), "{source:?}");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        v["runs"][0].clone()
    };
    let from_topic = run(&["--actions-topic", &topic]);
    let from_file = run(&["--actions", export.to_str().unwrap()]);
    assert_eq!(from_topic, from_file);
    assert_eq!(
        from_topic["kinds"]["not_activated"]["feedback"],
        json!({"acted": 2, "acknowledged": 1, "not_a_risk": 1,
               "not_a_risk_churned": 1, "not_a_risk_no_churn": 0,
               "not_a_risk_churn_rate": 1.0, "acknowledged_hits": 1,
               "acknowledged_false_alarms": 0, "acknowledged_precision": 1.0})
    );
    assert_eq!(
        from_topic["feedback"],
        json!({"matched_alerts": 2, "unmatched_alerts": 0})
    );
}
