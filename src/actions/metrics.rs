//! The actions' metrics, in the process's registry: `churnwatch_actions_total` by
//! action kind and outcome (`accepted`, or the bucket of a refusal), requests by
//! channel (`churnwatch_action_requests_total` by source and outcome), the time from
//! an alert to its first action (a histogram by kind and source), and the alerts with
//! actions held in memory. Labels come from fixed lists; never an account, an alert or
//! a person.

use std::sync::LazyLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};

use super::record::{ActionKind, Source};

use crate::metrics::METRICS;

/// Outcomes of an action request, besides `accepted`: each refusal's bucket.
pub const OUTCOMES: [&str; 14] = [
    "accepted",
    "bad_body",
    "bad_action",
    "bad_alert_id",
    "bad_reason",
    "bad_until",
    "forbidden",
    "unknown_alert",
    "store_full",
    "unavailable",
    "unreadable_record",
    "replayed",
    "merged",
    "rate_limited",
];

/// Outcomes of a request by channel: [`OUTCOMES`] and the refusals of the Slack and
/// email channels before an action is known.
pub const SOURCE_OUTCOMES: [&str; 9] = [
    "bad_signature",
    "stale",
    "replayed",
    "malformed",
    "unknown_user",
    "bad_token",
    "expired",
    "bad_response_url",
    "busy",
];

/// Buckets of the time from an alert to its first action, in seconds: a minute to a
/// month (an alert answered within the hour, the day, the week).
const FIRST_ACTION_BUCKETS: [f64; 12] = [
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0, 172800.0, 604800.0,
    2592000.0,
];

pub struct ActionMetrics {
    /// Requests (and records read) by `action` (a kind, or `unknown`) and `outcome`.
    pub actions: IntCounterVec,
    /// Alerts with at least one action in this process's store.
    pub alerts: IntGauge,
    /// Requests by `source` (api, slack, email) and `outcome`.
    pub requests: IntCounterVec,
    /// Seconds from an alert's emission to its first action, by `action` and `source`.
    pub first_action: HistogramVec,
    /// First actions whose alert's time was not known here (not observed above), by
    /// `source`.
    pub first_action_unknown: IntCounterVec,
}

pub static ACTIONS: LazyLock<ActionMetrics> = LazyLock::new(|| {
    let actions = IntCounterVec::new(
        Opts::new(
            "actions_total",
            "Actions on alerts requested, by action kind and outcome (accepted or why refused)",
        ),
        &["action", "outcome"],
    )
    .expect("valid metric");
    let alerts = IntGauge::new("actions_alerts", "Alerts with actions held in memory")
        .expect("valid metric");
    let requests = IntCounterVec::new(
        Opts::new(
            "action_requests_total",
            "Action requests by channel (api, slack, email) and outcome",
        ),
        &["source", "outcome"],
    )
    .expect("valid metric");
    let first_action = HistogramVec::new(
        HistogramOpts::new(
            "actions_first_action_seconds",
            "Time from an alert's emission to the first action taken on it",
        )
        .buckets(FIRST_ACTION_BUCKETS.to_vec()),
        &["action", "source"],
    )
    .expect("valid metric");
    let first_action_unknown = IntCounterVec::new(
        Opts::new(
            "actions_first_action_unknown_time_total",
            "First actions on alerts whose emission time this process did not know \
             (not in the histogram)",
        ),
        &["source"],
    )
    .expect("valid metric");
    for m in [
        Box::new(actions.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(alerts.clone()),
        Box::new(requests.clone()),
        Box::new(first_action.clone()),
        Box::new(first_action_unknown.clone()),
    ] {
        METRICS
            .registry
            .register(m)
            .expect("action metric names are unique");
    }
    ActionMetrics {
        actions,
        alerts,
        requests,
        first_action,
        first_action_unknown,
    }
});

/// Counts one request through `source` with `outcome` (one of [`OUTCOMES`] or
/// [`SOURCE_OUTCOMES`]).
pub fn count_source(source: Source, outcome: &'static str) {
    debug_assert!(OUTCOMES.contains(&outcome) || SOURCE_OUTCOMES.contains(&outcome));
    ACTIONS
        .requests
        .with_label_values(&[source.as_str(), outcome])
        .inc();
}

/// Records the first action on an alert: the time since the alert's emission when it
/// is known (`fired_ms`), else counts it as unknown.
pub fn first_action(kind: ActionKind, source: Source, fired_ms: Option<i64>, now: i64) {
    match fired_ms {
        Some(f) if f <= now => ACTIONS
            .first_action
            .with_label_values(&[kind.as_str(), source.as_str()])
            .observe((now - f) as f64 / 1000.0),
        _ => ACTIONS
            .first_action_unknown
            .with_label_values(&[source.as_str()])
            .inc(),
    }
}

/// Counts one request of `action` (a kind's name or `unknown`) with `outcome` (one of
/// [`OUTCOMES`]).
pub fn count(action: &str, outcome: &'static str) {
    debug_assert!(OUTCOMES.contains(&outcome));
    let action = if super::record::ActionKind::parse(action).is_some() {
        action
    } else {
        "unknown"
    };
    ACTIONS.actions.with_label_values(&[action, outcome]).inc();
}
