//! Exact scenarios for every rule and resolution path, through the library API.

mod common;

use common::{brief, run_engine};

const DEFAULT: &str = "";

/// Activity on `n` distinct days starting at `day` (YYYY-MM-DD), one event per day.
fn daily(
    account: &'static str,
    dates: &[&'static str],
) -> Vec<(&'static str, &'static str, String, Option<&'static str>)> {
    dates
        .iter()
        .map(|d| (account, "page.viewed", format!("{d}T12:00:00Z"), Some("u1")))
        .collect()
}

fn as_ev<'a>(
    v: &'a [(&'static str, &'static str, String, Option<&'static str>)],
) -> Vec<common::Ev<'a>> {
    v.iter()
        .map(|(a, e, t, u)| (*a, *e, t.as_str(), *u))
        .collect()
}

#[test]
fn not_activated_fires_at_each_deadline_and_resolves_on_activation() {
    let mut evs = vec![(
        "a1",
        "account.created",
        "2026-01-05T08:00:00Z".to_string(),
        None,
    )];
    evs.extend(daily("a1", &["2026-01-06", "2026-01-07"]));
    // Third active day, 100 days later: activation.
    evs.extend(daily("a1", &["2026-04-16"]));
    let out = run_engine(DEFAULT, &as_ev(&evs), None);
    assert_eq!(
        brief(&out),
        [
            "firing a1/not_activated/2026-01-05+30d @2026-02-04T08:00:00.000Z",
            "firing a1/not_activated/2026-01-05+90d @2026-04-05T08:00:00.000Z",
            "resolved a1/not_activated/2026-01-05+30d @2026-04-16T12:00:00.000Z",
            "resolved a1/not_activated/2026-01-05+90d @2026-04-16T12:00:00.000Z",
        ]
    );
    assert_eq!(out[1]["severity"], "critical");
    assert_eq!(out[0]["severity"], "warning");
    let ev = &out[0]["evidence"];
    assert_eq!(ev["after_days"], 30);
    assert_eq!(ev["start"], "2026-01-05T08:00:00.000Z");
    assert_eq!(
        (
            ev["active_days"].as_u64(),
            ev["active_users"].as_u64(),
            ev["events"].as_u64()
        ),
        (Some(2), Some(1), Some(2))
    );
    assert_eq!(ev["missing_events"], serde_json::json!([]));
    assert_eq!(
        out[2]["evidence"],
        serde_json::json!({"reason": "activated"})
    );
    assert_eq!(out[3]["severity"], "critical");
}

#[test]
fn activation_at_the_deadline_instant_counts_as_activated() {
    let evs = vec![
        (
            "a",
            "account.created",
            "2026-01-01T00:00:00Z".to_string(),
            None,
        ),
        (
            "b",
            "account.created",
            "2026-01-01T00:00:00Z".to_string(),
            None,
        ),
        ("a", "x", "2026-01-02T00:00:00Z".to_string(), Some("u")),
        ("b", "x", "2026-01-02T00:00:00Z".to_string(), Some("u")),
        ("a", "x", "2026-01-03T00:00:00Z".to_string(), Some("u")),
        ("b", "x", "2026-01-03T00:00:00Z".to_string(), Some("u")),
        ("a", "x", "2026-01-31T00:00:00Z".to_string(), Some("u")), // exactly S + 30d
        ("b", "x", "2026-01-31T00:00:00.001Z".to_string(), Some("u")), // 1 ms late
    ];
    let out = run_engine(DEFAULT, &as_ev(&evs), None);
    assert_eq!(
        brief(&out),
        [
            "firing b/not_activated/2026-01-01+30d @2026-01-31T00:00:00.000Z",
            "resolved b/not_activated/2026-01-01+30d @2026-01-31T00:00:00.001Z",
        ]
    );
}

#[test]
fn required_events_are_reported_missing_in_config_order() {
    let cfg = "[activation]\nrequired_events = [\"integration.connected\", \"report.created\", \"user.invited\"]\nmin_active_days = 1\n";
    let evs = vec![
        (
            "a",
            "account.created",
            "2026-01-01T00:00:00Z".to_string(),
            None,
        ),
        (
            "a",
            "report.created",
            "2026-01-02T00:00:00Z".to_string(),
            Some("u1"),
        ),
        (
            "a",
            "page.viewed",
            "2026-01-03T00:00:00Z".to_string(),
            Some("u2"),
        ),
        ("a", "page.viewed", "2026-01-03T01:00:00Z".to_string(), None),
    ];
    let out = run_engine(cfg, &as_ev(&evs), Some("2026-02-01T00:00:00Z"));
    assert_eq!(out.len(), 1);
    let ev = &out[0]["evidence"];
    assert_eq!(
        ev["missing_events"],
        serde_json::json!(["integration.connected", "user.invited"])
    );
    assert_eq!(
        (
            ev["active_days"].as_u64(),
            ev["active_users"].as_u64(),
            ev["events"].as_u64()
        ),
        (Some(2), Some(2), Some(3))
    );
}

#[test]
fn inactive_fires_resolves_and_starts_a_new_episode() {
    let mut evs = daily("a", &["2026-01-01", "2026-01-02", "2026-01-03"]);
    // Last activity 2026-01-03T12:00Z; dark 14 days -> fires 2026-01-17T12:00Z.
    evs.extend(daily("a", &["2026-01-20"])); // resumes
                                             // Quiet again; an event exactly at T = last + 14d keeps it alive.
    evs.push(("a", "x", "2026-02-03T12:00:00Z".to_string(), None));
    let out = run_engine(DEFAULT, &as_ev(&evs), Some("2026-02-20T00:00:00Z"));
    assert_eq!(
        brief(&out),
        [
            "firing a/inactive/2026-01-03 @2026-01-17T12:00:00.000Z",
            "resolved a/inactive/2026-01-03 @2026-01-20T12:00:00.000Z",
            "firing a/inactive/2026-02-03 @2026-02-17T12:00:00.000Z",
        ]
    );
    assert_eq!(
        out[0]["evidence"],
        serde_json::json!({"last_activity": "2026-01-03T12:00:00.000Z", "idle_days": 14})
    );
    assert_eq!(out[1]["evidence"]["reason"], "activity_resumed");
}

#[test]
fn inactive_needs_activation() {
    let config = "[rules.not_activated]\nenabled = false\n";
    // Two active days: one short of activation, so 58 silent days raise nothing.
    let evs = daily("a", &["2026-01-01", "2026-01-02"]);
    let out = run_engine(config, &as_ev(&evs), Some("2026-03-01T00:00:00Z"));
    assert_eq!(brief(&out), Vec::<String>::new());
    // The third day activates the account: the same silence then fires, 14 days
    // after the last activity, so the rule was live all along.
    let evs = daily("a", &["2026-01-01", "2026-01-02", "2026-01-03"]);
    let out = run_engine(config, &as_ev(&evs), Some("2026-03-01T00:00:00Z"));
    assert_eq!(
        brief(&out),
        ["firing a/inactive/2026-01-03 @2026-01-17T12:00:00.000Z"]
    );
}

/// `n` events per day for every day in `[from, to)` (days since 2026-01-01).
fn volume(
    account: &'static str,
    per_day: impl Fn(u32) -> u32,
    days: std::ops::Range<u32>,
) -> Vec<(&'static str, &'static str, String, Option<&'static str>)> {
    let base = common::ts("2026-01-01T00:00:00Z");
    let mut v = Vec::new();
    for d in days {
        for i in 0..per_day(d) {
            let t = base + d as i64 * 86_400_000 + 3_600_000 + i as i64 * 60_000;
            v.push((
                account,
                "page.viewed",
                churnwatch::time::format_rfc3339(t),
                Some("u1"),
            ));
        }
    }
    v
}

#[test]
fn activity_drop_fires_with_evidence_and_recovers() {
    // Baseline alternating 2/18 a day (mean 10, variance 66 > mean: negative
    // binomial), then 1 a day from day 50, back to 10 a day from day 60.
    let evs = volume(
        "a",
        |d| {
            if d < 50 {
                if d % 2 == 0 {
                    2
                } else {
                    18
                }
            } else if d < 60 {
                1
            } else {
                10
            }
        },
        0..75,
    );
    let out = run_engine(
        "[rules.inactive]\nenabled = false\n",
        &as_ev(&evs),
        Some("2026-03-17T00:00:00Z"),
    );
    let firing: Vec<_> = out
        .iter()
        .filter(|r| r["kind"] == "activity_drop")
        .collect();
    assert_eq!(firing.len(), 2, "{:?}", brief(&out));
    let f = firing[0];
    assert_eq!(f["status"], "firing");
    let ev = &f["evidence"];
    let observed = ev["observed"].as_u64().unwrap();
    let expected = ev["expected"].as_f64().unwrap();
    // Fires on the first close where the drop is both large and significant.
    let day = f["id"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    assert!(observed as f64 <= 0.5 * expected, "{ev}");
    assert!(ev["p_value"].as_f64().unwrap() <= 0.001);
    assert_eq!(ev["model"], "negative_binomial");
    assert_eq!(
        (ev["recent_days"].as_u64(), ev["baseline_days"].as_u64()),
        (Some(7), Some(28))
    );
    assert!((ev["drop_pct"].as_f64().unwrap() - (1.0 - observed as f64 / expected)).abs() < 1e-12);
    assert_eq!(
        f["event_time"].as_str().unwrap(),
        format!("{}T00:00:00.000Z", next_day(&day))
    );
    let r = firing[1];
    assert_eq!(
        (r["status"].as_str(), r["id"].as_str()),
        (Some("resolved"), f["id"].as_str())
    );
    assert_eq!(r["evidence"], serde_json::json!({"reason": "recovered"}));
    assert!(r["summary"].as_str().unwrap().contains("recovered"));
}

fn next_day(d: &str) -> String {
    let t = common::ts(&format!("{d}T00:00:00Z")) + 86_400_000;
    churnwatch::time::format_rfc3339(t)[..10].to_string()
}

#[test]
fn activity_drop_waits_for_a_baseline_after_the_start_day() {
    // Starts on day 0 with steady volume, drops to zero on day 30: the first close whose
    // baseline lies wholly after the start day is day 35 (35 - 7 - 28 + 1 = 1 > 0).
    let evs = volume("a", |d| if d < 30 { 20 } else { 0 }, 0..40);
    let out = run_engine(
        "[rules.inactive]\nenabled = false\n",
        &as_ev(&evs),
        Some("2026-02-10T00:00:00Z"),
    );
    assert_eq!(
        brief(&out),
        ["firing a/activity_drop/2026-02-05 @2026-02-06T00:00:00.000Z"]
    );
    assert_eq!(out[0]["evidence"]["model"], "poisson");
}

#[test]
fn churn_resolves_everything_and_resubscription_starts_fresh() {
    let mut evs = volume("a", |d| if d < 45 { 20 } else { 0 }, 0..45);
    evs.insert(
        0,
        ("a", "account.created", "2026-01-01T00:00:00Z".into(), None),
    );
    evs.push((
        "a",
        "subscription.cancelled",
        "2026-03-10T09:00:00Z".into(),
        None,
    ));
    evs.push((
        "a",
        "page.viewed",
        "2026-03-11T09:00:00Z".into(),
        Some("u1"),
    )); // ignored
    evs.push((
        "a",
        "subscription.started",
        "2026-03-20T00:00:00Z".into(),
        None,
    ));
    let out = run_engine(DEFAULT, &as_ev(&evs), Some("2026-04-25T00:00:00Z"));
    assert_eq!(
        brief(&out),
        [
            // Close of Feb 18: recent Feb 12-18 holds 3 active days (60 events)
            // against 140 expected; Feb 17 still had 80 > 70.
            "firing a/activity_drop/2026-02-18 @2026-02-19T00:00:00.000Z",
            "firing a/inactive/2026-02-14 @2026-02-28T01:19:00.000Z",
            "resolved a/inactive/2026-02-14 @2026-03-10T09:00:00.000Z",
            "resolved a/activity_drop/2026-02-18 @2026-03-10T09:00:00.000Z",
            "firing a/not_activated/2026-03-20+30d @2026-04-19T00:00:00.000Z",
        ]
    );
    assert!(out[2..4]
        .iter()
        .all(|r| r["evidence"]["reason"] == "churned"));
    assert_eq!(out[4]["evidence"]["events"], 0);
}

#[test]
fn start_on_first_event_false_waits_for_a_start_event() {
    let cfg = "[lifecycle]\nstart_on_first_event = false\n";
    let evs = vec![
        ("a", "x", "2026-01-01T00:00:00Z".to_string(), Some("u")),
        (
            "a",
            "subscription.started",
            "2026-01-10T00:00:00Z".to_string(),
            None,
        ),
        ("a", "x", "2026-01-11T00:00:00Z".to_string(), Some("u")),
    ];
    let out = run_engine(cfg, &as_ev(&evs), Some("2026-02-10T00:00:00Z"));
    assert_eq!(
        brief(&out),
        ["firing a/not_activated/2026-01-10+30d @2026-02-09T00:00:00.000Z"]
    );
    assert_eq!(
        (
            out[0]["evidence"]["active_days"].as_u64(),
            out[0]["evidence"]["events"].as_u64()
        ),
        (Some(1), Some(1))
    );
}

#[test]
fn first_activity_starts_the_lifecycle_and_later_starts_are_ignored() {
    let evs = vec![
        ("a", "x", "2026-01-01T10:00:00Z".to_string(), Some("u")),
        (
            "a",
            "account.created",
            "2026-01-05T00:00:00Z".to_string(),
            None,
        ),
    ];
    let out = run_engine(DEFAULT, &as_ev(&evs), Some("2026-02-10T00:00:00Z"));
    assert_eq!(
        brief(&out),
        ["firing a/not_activated/2026-01-01+30d @2026-01-31T10:00:00.000Z"]
    );
}

#[test]
fn an_event_exactly_allowed_lateness_behind_still_counts() {
    // Newest event at T+10m makes W = T; an event at exactly T arriving afterwards is not
    // late and must still prevent the inactive alert due at T.
    let mut evs = daily("a", &["2026-01-01", "2026-01-02", "2026-01-03"]);
    evs.push(("b", "x", "2026-01-17T12:10:00Z".to_string(), None));
    evs.push(("a", "x", "2026-01-17T12:00:00Z".to_string(), None));
    let out = run_engine(
        "[rules.not_activated]\nenabled = false\n",
        &as_ev(&evs),
        Some("2026-01-20T00:00:00Z"),
    );
    assert!(
        brief(&out).iter().all(|r| !r.contains("a/inactive")),
        "{:?}",
        brief(&out)
    );
}

#[test]
fn late_events_count_but_never_retract() {
    // Inactive fires at 2026-01-17T12:00Z; a late event from before that (way beyond the
    // allowed lateness) arrives afterwards: the alert stays, and the late activity
    // resolves it at the watermark it was processed at (2026-01-20 - 10m).
    let mut evs = daily("a", &["2026-01-01", "2026-01-02", "2026-01-03"]);
    evs.push(("b", "x", "2026-01-20T00:00:00Z".to_string(), None));
    evs.push(("a", "x", "2026-01-10T00:00:00Z".to_string(), None));
    let out = run_engine(
        "[rules.not_activated]\nenabled = false\n",
        &as_ev(&evs),
        None,
    );
    let a: Vec<String> = brief(&out)
        .into_iter()
        .filter(|r| r.contains(" a/"))
        .collect();
    assert_eq!(
        a,
        [
            "firing a/inactive/2026-01-03 @2026-01-17T12:00:00.000Z",
            "resolved a/inactive/2026-01-03 @2026-01-19T23:50:00.000Z",
        ]
    );
}
