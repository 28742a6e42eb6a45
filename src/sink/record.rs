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
    AlertRecord {
        id: alert.id(),
        account_id: alert.account_id.clone(),
        kind: alert.kind,
        status: alert.status,
        severity: alert.severity,
        event_time: alert.event_time,
        emitted_at,
        summary: summary(alert),
        evidence: evidence(&alert.evidence),
        account: None,
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
    match (&a.evidence, a.status) {
        (
            Evidence::NotActivated {
                after_days,
                start,
                active_days,
                active_users,
                events,
                missing_events,
            },
            _,
        ) => {
            let mut s = format!(
                "Not activated {after_days} days after start on {}: {} active, {}, {}",
                format_day(day_of(*start)),
                plural(*active_days, "day", "days"),
                plural(*active_users, "user", "users"),
                plural(*events, "event", "events"),
            );
            if !missing_events.is_empty() {
                s.push_str(&format!("; never used: {}", missing_events.join(", ")));
            }
            s
        }
        (Evidence::Inactive { last_activity, idle_days }, _) => format!(
            "No activity for {idle_days} days (last activity {})",
            format_day(day_of(*last_activity))
        ),
        (
            Evidence::ActivityDrop {
                observed,
                expected,
                drop_pct,
                p_value,
                recent_days,
                users_metric,
                ..
            },
            _,
        ) => format!(
            "Activity dropped {:.0}% over the last {recent_days} days ({observed} {} vs {} expected, p={p_value:.1e})",
            drop_pct * 100.0,
            unit(*users_metric, *observed),
            round1(*expected),
        ),
        (
            Evidence::Resolved {
                reason,
                observed,
                expected,
                since,
                users_metric,
            },
            Status::Resolved,
        ) => match (reason, a.kind) {
            (ResolveReason::Activated, _) => match since {
                Some(s) => format!(
                    "Activated {} days after start",
                    (a.event_time - s).div_euclid(DAY)
                ),
                None => "Activated".into(),
            },
            (ResolveReason::ActivityResumed, _) => match since {
                Some(s) => format!(
                    "Activity resumed after {} idle days",
                    (a.event_time - s).div_euclid(DAY)
                ),
                None => "Activity resumed".into(),
            },
            (ResolveReason::Recovered, _) => match (observed, expected) {
                (Some(o), Some(e)) => format!(
                    "Activity recovered: {o} {} over the recent window vs {} expected before the drop",
                    unit(*users_metric, *o),
                    round1(*e)
                ),
                _ => "Activity recovered".into(),
            },
            (ResolveReason::Churned, AlertKind::NotActivated | AlertKind::Inactive | AlertKind::ActivityDrop) => {
                "Account churned; alert closed".into()
            }
        },
        (Evidence::Resolved { .. }, Status::Firing) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Severity;
    use crate::engine::stats::Model;
    use crate::time::parse_rfc3339;

    #[test]
    fn spec_example_shape() {
        let a = Alert {
            account_id: "acme-42".into(),
            kind: AlertKind::ActivityDrop,
            status: Status::Firing,
            severity: Severity::Warning,
            episode: "2026-03-04".into(),
            event_time: parse_rfc3339("2026-03-05T00:00:00Z").unwrap(),
            evidence: Evidence::ActivityDrop {
                observed: 12,
                expected: 71.5,
                drop_pct: 1.0 - 12.0 / 71.5,
                p_value: 2.1e-9,
                model: Model::NegativeBinomial,
                recent_days: 7,
                baseline_days: 28,
                users_metric: false,
            },
        };
        let r = to_record(&a, parse_rfc3339("2026-03-05T00:10:02.311Z").unwrap());
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
