//! Builds the alert record ([`crate::record::AlertRecord`]) of an engine alert: its
//! id, the evidence as published and a one-line human summary.

use crate::accounts::AccountLookup;
use crate::engine::{Alert, AlertKind, Evidence, ResolveReason, Status};
use crate::record::{
    ActivityDropEvidence, AlertRecord, InactiveEvidence, NotActivatedEvidence, RecordEvidence,
    ResolvedEvidence,
};
use crate::time::{day_of, format_day, Millis, DAY};

/// Builds the record of `alert`, stamped with `emitted_at` (wall clock).
pub fn to_record(alert: &Alert, emitted_at: Millis) -> AlertRecord {
    let evidence = evidence(&alert.evidence);
    AlertRecord {
        id: alert.id(),
        account_id: alert.account_id.clone(),
        kind: alert.kind,
        status: alert.status,
        severity: alert.severity,
        event_time: alert.event_time,
        emitted_at,
        summary: describe(alert, &evidence),
        evidence,
        account: None,
    }
}

impl AlertRecord {
    /// A record for tests and examples, built as the detector builds it: `id` is
    /// `account/kind/episode` (an unknown kind reads as `inactive`), with the evidence
    /// of its kind (firing) or a resolution, event time 2026-03-05, no account
    /// metadata. The activity drop is the one of the published example.
    #[doc(hidden)]
    pub fn sample(id: &str, status: Status, severity: crate::config::Severity) -> AlertRecord {
        let mut parts = id.splitn(3, '/');
        let account_id = parts.next().unwrap_or_default().to_string();
        let kind = match parts.next() {
            Some("not_activated") => AlertKind::NotActivated,
            Some("activity_drop") => AlertKind::ActivityDrop,
            _ => AlertKind::Inactive,
        };
        let episode = parts.next().unwrap_or_default().to_string();
        let at = crate::time::days_from_civil(2026, 3, 5) * DAY;
        let evidence = match (status, kind) {
            (Status::Resolved, AlertKind::NotActivated) => {
                Evidence::resolved(ResolveReason::Activated, None)
            }
            (Status::Resolved, AlertKind::Inactive) => {
                Evidence::resolved(ResolveReason::ActivityResumed, None)
            }
            (Status::Resolved, AlertKind::ActivityDrop) => {
                Evidence::resolved(ResolveReason::Recovered, None)
            }
            (Status::Firing, AlertKind::NotActivated) => Evidence::NotActivated {
                after_days: 30,
                start: at - 30 * DAY,
                active_days: 1,
                active_users: 1,
                events: 3,
                missing_events: vec![],
            },
            (Status::Firing, AlertKind::Inactive) => Evidence::Inactive {
                last_activity: at - 14 * DAY,
                idle_days: 14,
            },
            (Status::Firing, AlertKind::ActivityDrop) => Evidence::ActivityDrop {
                observed: 12,
                expected: 71.5,
                drop_pct: 1.0 - 12.0 / 71.5,
                p_value: 2.1e-9,
                model: crate::engine::stats::Model::NegativeBinomial,
                recent_days: 7,
                baseline_days: 28,
                users_metric: false,
            },
        };
        let alert = Alert {
            account_id,
            kind,
            status,
            severity,
            episode,
            event_time: at,
            evidence,
        };
        let mut r = to_record(&alert, at);
        r.id = id.to_string();
        r
    }
}

/// Serializes the record as one JSON line (no trailing newline).
pub fn to_json_line(alert: &Alert, emitted_at: Millis) -> String {
    serde_json::to_string(&to_record(alert, emitted_at)).expect("a record serializes")
}

/// The record with the account's metadata under `account`, when known.
pub fn to_json_line_with<M: AccountLookup + ?Sized>(
    alert: &Alert,
    emitted_at: Millis,
    meta: Option<&M>,
) -> String {
    let mut r = to_record(alert, emitted_at);
    r.account = meta.and_then(|m| m.account(&alert.account_id));
    serde_json::to_string(&r).expect("a record serializes")
}

fn evidence(e: &Evidence) -> RecordEvidence {
    match e {
        Evidence::NotActivated {
            after_days,
            start,
            active_days,
            active_users,
            events,
            missing_events,
        } => RecordEvidence::NotActivated(NotActivatedEvidence {
            after_days: *after_days,
            start: *start,
            active_days: *active_days,
            active_users: *active_users,
            events: *events,
            missing_events: missing_events.clone(),
        }),
        Evidence::Inactive {
            last_activity,
            idle_days,
        } => RecordEvidence::Inactive(InactiveEvidence {
            last_activity: *last_activity,
            idle_days: *idle_days,
        }),
        Evidence::ActivityDrop {
            observed,
            expected,
            drop_pct,
            p_value,
            model,
            recent_days,
            baseline_days,
            ..
        } => RecordEvidence::ActivityDrop(ActivityDropEvidence {
            observed: *observed,
            expected: *expected,
            drop_pct: *drop_pct,
            p_value: *p_value,
            model: *model,
            recent_days: *recent_days,
            baseline_days: *baseline_days,
        }),
        Evidence::Resolved { reason, .. } => {
            RecordEvidence::Resolved(ResolvedEvidence { reason: *reason })
        }
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn unit(users_metric: bool, n: u64) -> &'static str {
    match (users_metric, n == 1) {
        (true, true) => "active user-day",
        (true, false) => "active user-days",
        (false, true) => "event",
        (false, false) => "events",
    }
}

fn round1(x: f64) -> String {
    let r = (x * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// A one-line explanation a CSM can read without the evidence.
pub fn summary(a: &Alert) -> String {
    describe(a, &evidence(&a.evidence))
}

/// The summary of `a`, whose evidence as published is `e`.
fn describe(a: &Alert, e: &RecordEvidence) -> String {
    match (&a.evidence, e) {
        (_, RecordEvidence::NotActivated(e)) => {
            let mut s = format!(
                "Not activated {} days after start on {}: {} active, {}, {}",
                e.after_days,
                format_day(day_of(e.start)),
                plural(e.active_days, "day", "days"),
                plural(e.active_users, "user", "users"),
                plural(e.events, "event", "events"),
            );
            if !e.missing_events.is_empty() {
                s.push_str(&format!("; never used: {}", e.missing_events.join(", ")));
            }
            s
        }
        (_, RecordEvidence::Inactive(e)) => format!(
            "No activity for {} days (last activity {})",
            e.idle_days,
            format_day(day_of(e.last_activity))
        ),
        (Evidence::ActivityDrop { users_metric, .. }, RecordEvidence::ActivityDrop(e)) => format!(
            "Activity dropped {:.0}% over the last {} days ({} {} vs {} expected, p={:.1e})",
            e.drop_pct * 100.0,
            e.recent_days,
            e.observed,
            unit(*users_metric, e.observed),
            round1(e.expected),
            e.p_value,
        ),
        (
            Evidence::Resolved {
                reason,
                observed,
                expected,
                since,
                users_metric,
            },
            _,
        ) if a.status == Status::Resolved => match reason {
            ResolveReason::Activated => match since {
                Some(s) => format!(
                    "Activated {} days after start",
                    (a.event_time - s).div_euclid(DAY)
                ),
                None => "Activated".into(),
            },
            ResolveReason::ActivityResumed => match since {
                Some(s) => format!(
                    "Activity resumed after {} idle days",
                    (a.event_time - s).div_euclid(DAY)
                ),
                None => "Activity resumed".into(),
            },
            ResolveReason::Recovered => match (observed, expected) {
                (Some(o), Some(e)) => format!(
                    "Activity recovered: {o} {} over the recent window vs {} expected before the drop",
                    unit(*users_metric, *o),
                    round1(*e)
                ),
                _ => "Activity recovered".into(),
            },
            ResolveReason::Churned => "Account churned; alert closed".into(),
        },
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Severity;
    use crate::time::parse_rfc3339;

    #[test]
    fn spec_example_shape() {
        let mut r = AlertRecord::sample(
            "acme-42/activity_drop/2026-03-04",
            Status::Firing,
            Severity::Warning,
        );
        r.emitted_at = parse_rfc3339("2026-03-05T00:10:02.311Z").unwrap();
        let r = serde_json::to_value(r).unwrap();
        assert_eq!(r["id"], "acme-42/activity_drop/2026-03-04");
        assert_eq!(r["event_time"], "2026-03-05T00:00:00.000Z");
        assert_eq!(r["emitted_at"], "2026-03-05T00:10:02.311Z");
        assert_eq!(
            r["summary"],
            "Activity dropped 83% over the last 7 days (12 events vs 71.5 expected, p=2.1e-9)"
        );
        assert_eq!(r["evidence"]["observed"], 12);
        assert_eq!(r["evidence"]["model"], "negative_binomial");
        assert_eq!(r["evidence"]["baseline_days"], 28);
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "id",
                "account_id",
                "kind",
                "status",
                "severity",
                "event_time",
                "emitted_at",
                "summary",
                "evidence"
            ]
        );
    }
}
