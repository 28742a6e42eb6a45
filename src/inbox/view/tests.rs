//! The view fed by hand: priority order, filters, paging, bounds, skipped records.

use std::sync::atomic::AtomicI64;

use serde_json::json;

use super::*;
use crate::accounts::AccountMeta;
use crate::inbox::model::{Lifecycle, Role};
use crate::time::{parse_rfc3339, DAY};

const NOW: &str = "2026-03-01T12:00:00Z";

fn now() -> Millis {
    parse_rfc3339(NOW).unwrap()
}

fn view_at(clock: Arc<AtomicI64>, history: usize) -> Arc<View> {
    View::new(
        ViewSettings::new(&Config::default(), history),
        Arc::new(move || clock.load(Ordering::Relaxed)),
    )
}

fn view() -> Arc<View> {
    view_at(Arc::new(AtomicI64::new(now())), HISTORY_LEN)
}

/// Evidence of the kind, as the detector writes it.
fn evidence(kind: &str, status: &str) -> serde_json::Value {
    match (status, kind) {
        ("resolved", _) => json!({"reason": "activity_resumed"}),
        (_, "not_activated") => json!({"after_days": 30, "start": "2026-01-20T00:00:00.000Z",
            "active_days": 1, "active_users": 1, "events": 3, "missing_events": []}),
        (_, "activity_drop") => json!({"observed": 3, "expected": 40.5, "drop_pct": 0.93,
            "p_value": 1e-6, "model": "poisson", "recent_days": 7, "baseline_days": 28}),
        _ => json!({"last_activity": "2026-02-06T00:00:00.000Z", "idle_days": 14}),
    }
}

fn alert(account: &str, kind: &str, episode: &str, status: &str, severity: &str) -> Vec<u8> {
    json!({
        "id": format!("{account}/{kind}/{episode}"),
        "account_id": account,
        "kind": kind,
        "status": status,
        "severity": severity,
        "event_time": "2026-02-20T00:00:00.000Z",
        "emitted_at": "2026-02-27T00:00:00.000Z",
        "summary": format!("{kind} {episode} {status}"),
        "evidence": evidence(kind, status),
    })
    .to_string()
    .into_bytes()
}

fn meta(
    id: &str,
    owner: &str,
    arr: Option<f64>,
    renewal: Option<&str>,
    segment: &str,
) -> AccountMeta {
    AccountMeta {
        account_id: id.into(),
        name: Some(format!("{id} Inc")),
        owner_email: Some(owner.into()),
        arr,
        renewal_date: renewal.map(str::to_string),
        segment: Some(segment.into()),
        ..AccountMeta::default()
    }
}

fn apply_alert(v: &View, rec: &[u8]) -> bool {
    v.write().apply(Source::Alerts, 0, 0, None, Some(rec))
}

fn set_meta(v: &View, m: &AccountMeta) {
    let body = serde_json::to_vec(m).unwrap();
    assert!(v.write().apply(
        Source::Accounts,
        0,
        0,
        Some(m.account_id.as_bytes()),
        Some(&body)
    ));
}

fn lead() -> Principal {
    Principal {
        email: "lee@x.io".into(),
        role: Role::Lead,
    }
}

fn csm(email: &str) -> Principal {
    Principal {
        email: email.into(),
        role: Role::Csm,
    }
}

fn ids(p: &Page<AccountSummary>) -> Vec<&str> {
    p.items.iter().map(|a| a.account_id.as_str()).collect()
}

/// Five accounts: big renewing soon (critical), big renewing late (critical), small
/// (warning), unknown (warning, no metadata), quiet (nothing firing).
fn population() -> Arc<View> {
    let v = view();
    set_meta(
        &v,
        &meta(
            "big-soon",
            "ana@x.io",
            Some(500_000.0),
            Some("2026-03-31"),
            "enterprise",
        ),
    );
    set_meta(
        &v,
        &meta(
            "big-late",
            "ben@x.io",
            Some(500_000.0),
            Some("2027-03-01"),
            "enterprise",
        ),
    );
    set_meta(&v, &meta("small", "Ana@X.io", Some(1_200.0), None, "smb"));
    set_meta(&v, &meta("quiet", "ana@x.io", Some(9e6), None, "smb"));
    assert!(apply_alert(
        &v,
        &alert(
            "big-late",
            "not_activated",
            "2026-01-01+90d",
            "firing",
            "critical"
        )
    ));
    assert!(apply_alert(
        &v,
        &alert(
            "big-soon",
            "not_activated",
            "2026-01-01+90d",
            "firing",
            "critical"
        )
    ));
    assert!(apply_alert(
        &v,
        &alert("small", "inactive", "2026-02-01", "firing", "warning")
    ));
    assert!(apply_alert(
        &v,
        &alert("unknown", "inactive", "2026-02-02", "firing", "warning")
    ));
    assert!(apply_alert(
        &v,
        &alert("unknown-2", "inactive", "2026-02-02", "firing", "warning")
    ));
    v
}

#[test]
fn accounts_come_in_priority_order_ties_by_id() {
    let v = population();
    let p = v.list(&lead(), &ListQuery::default());
    assert_eq!(
        ids(&p),
        ["big-soon", "big-late", "small", "unknown", "unknown-2"]
    );
    assert_eq!(p.total, 5);
    let prio: Vec<f64> = p.items.iter().map(|a| a.priority).collect();
    // The documented example: 3 x (1 + ln 51) x (1 + 2 x 30/90) at 2026-03-01T12:00.
    let days = (parse_rfc3339("2026-03-31T00:00:00Z").unwrap() - now()) as f64 / DAY as f64;
    let want = 3.0 * (1.0 + 51f64.ln()) * (1.0 + 2.0 * (1.0 - days / 90.0));
    assert!((prio[0] - want).abs() < 1e-9, "{prio:?} vs {want}");
    assert!(prio.windows(2).all(|w| w[0] >= w[1]), "{prio:?}");
    assert_eq!(prio[3], prio[4], "same score: ordered by id");
    // All accounts: the quiet one (score 0) after every account at risk.
    let all = v.list(
        &lead(),
        &ListQuery {
            at_risk: false,
            ..ListQuery::default()
        },
    );
    assert_eq!(all.total, 6);
    assert_eq!(ids(&all).last(), Some(&"quiet"));
    // Resolving the first one's alert moves it to the end of "all".
    assert!(apply_alert(
        &v,
        &alert(
            "big-soon",
            "not_activated",
            "2026-01-01+90d",
            "resolved",
            "critical"
        )
    ));
    let p = v.list(&lead(), &ListQuery::default());
    assert_eq!(ids(&p)[0], "big-late");
    let all = v.list(
        &lead(),
        &ListQuery {
            at_risk: false,
            ..ListQuery::default()
        },
    );
    assert_eq!(&ids(&all)[4..], ["big-soon", "quiet"]);
}

#[test]
fn filters_and_who_may_see_what() {
    let v = population();
    let q = |f: fn(&mut ListQuery)| {
        let mut q = ListQuery::default();
        f(&mut q);
        q
    };
    // A CSM sees their own accounts (owner addresses compared without case), whatever
    // owner they name.
    let ana = csm("ana@x.io");
    assert_eq!(
        ids(&v.list(&ana, &ListQuery::default())),
        ["big-soon", "small"]
    );
    assert_eq!(
        ids(&v.list(&ana, &q(|q| q.owner = Some("ben@x.io".into())))),
        ["big-soon", "small"]
    );
    assert_eq!(
        ids(&v.list(&ana, &q(|q| q.at_risk = false))),
        ["big-soon", "small", "quiet"]
    );
    assert_eq!(v.list(&csm("zoe@x.io"), &ListQuery::default()).total, 0);
    // A lead filters by owner, kind, severity, segment.
    let l = lead();
    assert_eq!(
        ids(&v.list(&l, &q(|q| q.owner = Some("BEN@x.io".into())))),
        ["big-late"]
    );
    assert_eq!(
        ids(&v.list(&l, &q(|q| q.kind = Some("inactive".into())))),
        ["small", "unknown", "unknown-2"]
    );
    assert_eq!(
        ids(&v.list(&l, &q(|q| q.severity = Some("critical".into())))),
        ["big-soon", "big-late"]
    );
    assert_eq!(
        ids(&v.list(&l, &q(|q| q.segment = Some("smb".into())))),
        ["small"]
    );
    let smb_all = v.list(
        &l,
        &q(|q| {
            q.segment = Some("smb".into());
            q.at_risk = false;
        }),
    );
    assert_eq!(ids(&smb_all), ["small", "quiet"]);
    assert_eq!(
        v.list(&l, &q(|q| q.segment = Some("nobody".into()))).total,
        0
    );
    assert_eq!(
        v.list(&l, &q(|q| q.kind = Some("activity_drop".into())))
            .total,
        0
    );
    // An owner change moves the account between books.
    set_meta(&v, &meta("small", "ben@x.io", Some(1_200.0), None, "smb"));
    assert_eq!(ids(&v.list(&ana, &ListQuery::default())), ["big-soon"]);
    assert_eq!(
        ids(&v.list(&l, &q(|q| q.owner = Some("ben@x.io".into())))),
        ["big-late", "small"]
    );
    // A tombstone removes the metadata (no file to fall back to).
    assert!(v
        .write()
        .apply(Source::Accounts, 0, 1, Some(b"small"), None));
    assert_eq!(
        ids(&v.list(&l, &q(|q| q.owner = Some("ben@x.io".into())))),
        ["big-late"]
    );
    assert!(v.account("small").unwrap().meta.is_none());
}

#[test]
fn pages_cover_the_list_once_in_order() {
    let v = view();
    for i in 0..57 {
        let id = format!("acct-{i:03}");
        set_meta(
            &v,
            &meta(
                &id,
                if i % 2 == 0 { "ana@x.io" } else { "ben@x.io" },
                Some(i as f64 * 1000.0),
                None,
                "smb",
            ),
        );
        assert!(apply_alert(
            &v,
            &alert(&id, "inactive", "2026-02-01", "firing", "warning")
        ));
    }
    for (who, owner, n) in [
        (lead(), None, 57),
        (lead(), Some("ana@x.io"), 29),
        (csm("ben@x.io"), None, 28),
    ] {
        let mut got = Vec::new();
        let mut offset = Some(0);
        while let Some(o) = offset {
            let p = v.list(
                &who,
                &ListQuery {
                    owner: owner.map(str::to_string),
                    offset: o,
                    limit: 10,
                    ..ListQuery::default()
                },
            );
            assert_eq!(p.total, n);
            assert!(p.items.len() <= 10);
            got.extend(p.items.into_iter().map(|a| (a.priority, a.account_id)));
            offset = p.next_offset;
        }
        assert_eq!(got.len(), n);
        assert!(
            got.windows(2).all(|w| w[0].0 > w[1].0),
            "strictly by priority here"
        );
    }
    let past = v.list(
        &lead(),
        &ListQuery {
            offset: 500,
            ..ListQuery::default()
        },
    );
    assert_eq!(
        (past.items.len(), past.total, past.next_offset),
        (0, 57, None)
    );
    // The limit is capped whatever the caller passes.
    let big = v.list(
        &lead(),
        &ListQuery {
            limit: 10_000,
            at_risk: false,
            ..ListQuery::default()
        },
    );
    assert_eq!(
        (big.items.len(), big.limit),
        (57, crate::inbox::model::MAX_PAGE)
    );
}

#[test]
fn history_is_bounded_and_firing_follows_transitions() {
    let v = view_at(Arc::new(AtomicI64::new(now())), 3);
    for ep in ["2026-01-01", "2026-01-20", "2026-02-10"] {
        assert!(apply_alert(
            &v,
            &alert("a", "inactive", ep, "firing", "warning")
        ));
        assert!(apply_alert(
            &v,
            &alert("a", "inactive", ep, "resolved", "warning")
        ));
    }
    assert!(apply_alert(
        &v,
        &alert("a", "activity_drop", "2026-02-20", "firing", "warning")
    ));
    // The same transition again (a record read twice) changes nothing.
    assert!(apply_alert(
        &v,
        &alert("a", "activity_drop", "2026-02-20", "firing", "warning")
    ));
    let d = v.account("a").unwrap();
    assert_eq!(d.history.len(), 3);
    assert_eq!(d.history[0].id, "a/activity_drop/2026-02-20");
    assert_eq!(d.history[1].status, "resolved");
    assert_eq!(d.summary.firing.len(), 1);
    assert_eq!(
        d.summary.firing[0].evidence.value(),
        evidence("activity_drop", "firing")
    );
    assert_eq!(d.summary.lifecycle, Lifecycle::Unknown);
    assert!(apply_alert(
        &v,
        &alert("a", "activity_drop", "2026-02-20", "resolved", "warning")
    ));
    assert!(v.account("a").unwrap().summary.firing.is_empty());
    assert_eq!(v.list(&lead(), &ListQuery::default()).total, 0);
}

#[test]
fn priorities_follow_the_calendar() {
    let clock = Arc::new(AtomicI64::new(now()));
    let v = view_at(clock.clone(), 20);
    set_meta(&v, &meta("a", "ana@x.io", None, Some("2026-06-01"), "smb"));
    set_meta(&v, &meta("b", "ana@x.io", Some(20_000.0), None, "smb"));
    assert!(apply_alert(
        &v,
        &alert("a", "inactive", "e", "firing", "warning")
    ));
    assert!(apply_alert(
        &v,
        &alert("b", "inactive", "e", "firing", "warning")
    ));
    assert_eq!(ids(&v.list(&lead(), &ListQuery::default())), ["b", "a"]);
    // 80 days later the renewal of `a` is near: it comes first once the day changes.
    clock.store(now() + 80 * DAY, Ordering::Relaxed);
    drop(v.write());
    assert_eq!(ids(&v.list(&lead(), &ListQuery::default())), ["a", "b"]);
}

/// A subscriber writing into a buffer, for what a skipped record logs.
#[derive(Clone, Default)]
struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn unreadable_records_are_skipped_counted_and_logged_without_their_bytes() {
    let v = population();
    let before = v.list(
        &lead(),
        &ListQuery {
            at_risk: false,
            ..ListQuery::default()
        },
    );
    let skipped = |s: Source| METRICS.skipped.with_label_values(&[s.as_str()]).get();
    let counts0: Vec<u64> = [
        Source::Changelog,
        Source::Alerts,
        Source::Accounts,
        Source::Silences,
    ]
    .into_iter()
    .map(skipped)
    .collect();
    let buf = Buf::default();
    let b2 = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || b2.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(sub, || {
        let mut w = v.write();
        let secret = b"SECRET-PAYLOAD {\"x\": 1}";
        assert!(!w.apply(Source::Alerts, 3, 17, Some(b"k"), Some(secret)));
        assert!(!w.apply(Source::Alerts, 3, 18, None, None));
        assert!(!w.apply(
            Source::Changelog,
            1,
            5,
            Some(b"a:big-soon"),
            Some(b"\x01SECRET-PAYLOAD")
        ));
        assert!(!w.apply(Source::Changelog, 1, 6, Some(b"a:x"), Some(b"\x07SECRET")));
        assert!(!w.apply(Source::Accounts, 0, 9, Some(b"small"), Some(secret)));
        assert!(!w.apply(Source::Silences, 0, 2, Some(b"s1"), Some(secret)));
        // A record whose kind this build does not know.
        let odd = String::from_utf8(alert("big-soon", "not_activated", "e", "firing", "warning"))
            .unwrap()
            .replace("\"kind\":\"not_activated\"", "\"kind\":\"SECRET-kind\"");
        assert!(!w.apply(Source::Alerts, 0, 19, None, Some(odd.as_bytes())));
    });
    let counts1: Vec<u64> = [
        Source::Changelog,
        Source::Alerts,
        Source::Accounts,
        Source::Silences,
    ]
    .into_iter()
    .map(skipped)
    .collect();
    let diff: Vec<u64> = counts1.iter().zip(&counts0).map(|(a, b)| a - b).collect();
    assert_eq!(diff, [2, 3, 1, 1]);
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        log.matches("inbox view: record skipped").count(),
        7,
        "{log}"
    );
    assert!(
        log.contains("partition=3") && log.contains("offset=17"),
        "{log}"
    );
    assert!(!log.contains("SECRET"), "{log}");
    assert_eq!(
        before,
        v.list(
            &lead(),
            &ListQuery {
                at_risk: false,
                ..ListQuery::default()
            }
        )
    );
}

#[test]
fn state_metadata_and_silences_make_the_account_page() {
    use crate::engine::{EngineConfig, Shard};
    use crate::source::event::RawEvent;
    let cfg = Config::default();
    let mut shard = Shard::new(Arc::new(EngineConfig::new(&cfg)));
    let t0 = parse_rfc3339("2026-01-05T09:00:00Z").unwrap();
    let push = |s: &mut Shard, id: &str, ts: Millis, user: &str| {
        s.push(&RawEvent {
            account_id: id.into(),
            event: "page.viewed".into(),
            ts,
            user_id: Some(user.into()),
        })
        .unwrap();
    };
    // `on`: 40 days of 10 events (activated); `new`: two events on one day.
    for d in 0..40 {
        for i in 0..10 {
            push(&mut shard, "on", t0 + d * DAY + i * 1000, "u1");
        }
    }
    push(&mut shard, "new", t0 + 39 * DAY, "u1");
    push(&mut shard, "new", t0 + 39 * DAY + 5, "u2");
    // `gone`: active, then its subscription was cancelled (a default end event).
    push(&mut shard, "gone", t0 + 30 * DAY, "u1");
    shard
        .push(&RawEvent {
            account_id: "gone".into(),
            event: "subscription.cancelled".into(),
            ts: t0 + 31 * DAY,
            user_id: None,
        })
        .unwrap();
    shard.finish(Some(t0 + 41 * DAY));
    let v = view();
    feed::feed_shard(&v, &shard, 0);
    set_meta(
        &v,
        &meta("on", "ana@x.io", Some(50_000.0), Some("2026-04-01"), "smb"),
    );
    let silence = json!({"id": "s1", "account_id": "on", "until_ms": now() + DAY, "author": "ana@x.io",
        "reason": "renewal call", "created_at_ms": now() - DAY});
    let other = json!({"id": "s2", "account_id": "new", "until_ms": now() + DAY, "author": "x",
        "reason": "", "created_at_ms": 0});
    let ended = json!({"id": "s3", "account_id": "on", "until_ms": now() - 1, "author": "x",
        "reason": "", "created_at_ms": 0});
    for s in [&silence, &other, &ended] {
        let id = s["id"].as_str().unwrap();
        assert!(v.write().apply(
            Source::Silences,
            0,
            0,
            Some(id.as_bytes()),
            Some(s.to_string().as_bytes())
        ));
    }
    let on = v.account("on").unwrap();
    assert_eq!(on.summary.lifecycle, Lifecycle::Activated);
    assert_eq!(
        on.summary.last_activity.as_deref(),
        Some("2026-02-13T09:00:09.000Z")
    );
    assert_eq!(on.series.len(), 35);
    assert_eq!(on.series_metric, "events");
    // The series ends at the shard's current day (its watermark, 2026-02-15): the
    // days after the last activity are empty.
    assert_eq!(on.series.last().unwrap().day, "2026-02-15");
    assert_eq!(
        (
            on.series[32].events,
            on.series[33].events,
            on.series[34].events
        ),
        (10, 0, 0)
    );
    assert_eq!(on.series[0].day, "2026-01-12");
    assert_eq!(
        on.summary.sparkline,
        on.series.iter().map(|d| d.events).collect::<Vec<_>>()
    );
    assert!((on.baseline.as_ref().unwrap().expected_per_day - 10.0).abs() < 1e-9);
    let act = on.activation.as_ref().unwrap();
    assert!(act.activated_at.is_some() && act.criteria.iter().all(|c| c.met));
    assert_eq!(act.deadlines_days, [30, 90]);
    assert_eq!(
        on.meta.as_ref().unwrap().renewal_date.as_deref(),
        Some("2026-04-01")
    );
    assert_eq!(on.meta.as_ref().unwrap().arr, Some(50_000.0));
    assert_eq!(on.silences.len(), 1);
    assert_eq!(on.silences[0].comment.as_deref(), Some("renewal call"));
    let new = v.account("new").unwrap();
    assert_eq!(new.summary.lifecycle, Lifecycle::Onboarding);
    let c = &new.activation.as_ref().unwrap().criteria;
    assert_eq!(
        (c[0].name.as_str(), c[0].progress, c[0].target, c[0].met),
        ("active_days", 1, 3, false)
    );
    assert_eq!(
        (c[1].name.as_str(), c[1].progress, c[1].met),
        ("active_users", 1, true)
    );
    let gone = v.account("gone").unwrap();
    assert_eq!(gone.summary.lifecycle, Lifecycle::Ended);
    assert!(gone.activation.is_none());
    // A tombstone in the changelog forgets the state.
    assert!(v
        .write()
        .apply(Source::Changelog, 0, 0, Some(b"a:new"), None));
    assert_eq!(
        v.account("new").unwrap().summary.lifecycle,
        Lifecycle::Unknown
    );
    assert!(v.account("nobody").is_none());
}

#[test]
fn the_team_view_sums_each_owner() {
    let v = population();
    let t = v.team();
    let row = |o: Option<&str>| t.iter().find(|r| r.owner_email.as_deref() == o).unwrap();
    let ana = row(Some("ana@x.io"));
    assert_eq!(
        (
            ana.accounts,
            ana.at_risk,
            ana.critical,
            ana.alerts_this_week
        ),
        (3, 2, 1, 2)
    );
    let none = row(None);
    assert_eq!((none.accounts, none.at_risk), (2, 2));
    assert!(t.windows(2).all(|w| w[0].priority >= w[1].priority));
    assert_eq!(t[0].owner_email.as_deref(), Some("ana@x.io"));
    assert_eq!(v.status().accounts, 6);
}
