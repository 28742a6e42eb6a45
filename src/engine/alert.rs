//! Alert transitions produced by the engine.

use crate::config::Severity;
use crate::time::Millis;

use super::stats::Model;

/// The three rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertKind {
    NotActivated,
    Inactive,
    ActivityDrop,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::NotActivated => "not_activated",
            AlertKind::Inactive => "inactive",
            AlertKind::ActivityDrop => "activity_drop",
        }
    }
    pub const ALL: [AlertKind; 3] = [
        AlertKind::NotActivated,
        AlertKind::Inactive,
        AlertKind::ActivityDrop,
    ];
}

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// Why a firing alert was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveReason {
    Activated,
    ActivityResumed,
    Recovered,
    Churned,
}

impl ResolveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResolveReason::Activated => "activated",
            ResolveReason::ActivityResumed => "activity_resumed",
            ResolveReason::Recovered => "recovered",
            ResolveReason::Churned => "churned",
        }
    }
}

/// What the alert is based on. Firing variants carry the spec's evidence fields;
/// `Resolved` carries the reason plus figures used only for the human summary.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    NotActivated {
        after_days: u32,
        start: Millis,
        active_days: u64,
        active_users: u64,
        events: u64,
        missing_events: Vec<String>,
    },
    Inactive {
        last_activity: Millis,
        idle_days: u32,
    },
    ActivityDrop {
        observed: u64,
        expected: f64,
        drop_pct: f64,
        p_value: f64,
        model: Model,
        recent_days: u32,
        baseline_days: u32,
        /// `true` when the metric is distinct users per day (for the summary's wording).
        users_metric: bool,
    },
    Resolved {
        reason: ResolveReason,
        /// Context for the summary: recent sum and frozen expectation on recovery, the
        /// lifecycle start on activation, the last activity on resumption.
        observed: Option<u64>,
        expected: Option<f64>,
        since: Option<Millis>,
        users_metric: bool,
    },
}

impl Evidence {
    /// The evidence of a resolution with no figures; `since` (the lifecycle start, or
    /// the last activity) is context for the summary.
    pub fn resolved(reason: ResolveReason, since: Option<Millis>) -> Evidence {
        Evidence::Resolved {
            reason,
            observed: None,
            expected: None,
            since,
            users_metric: false,
        }
    }
}

/// One alert transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub account_id: String,
    pub kind: AlertKind,
    pub status: Status,
    pub severity: Severity,
    /// The episode part of the id (`2026-01-05+30d`, `2026-03-04`).
    pub episode: String,
    /// Event time of the transition.
    pub event_time: Millis,
    pub evidence: Evidence,
}

impl Alert {
    /// `{account_id}/{kind}/{episode}`.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.account_id,
            self.kind.as_str(),
            self.episode
        )
    }
}
