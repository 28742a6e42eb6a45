//! The actions' metrics, in the process's registry: `churnwatch_actions_total` by
//! action kind and outcome (`accepted`, or the bucket of a refusal), and the alerts
//! with actions held in memory. Labels come from fixed lists; never an account, an
//! alert or a person.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGauge, Opts};

use crate::metrics::METRICS;

/// Outcomes of an action request, besides `accepted`: each refusal's bucket.
pub const OUTCOMES: [&str; 11] = [
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
];

pub struct ActionMetrics {
    /// Requests (and records read) by `action` (a kind, or `unknown`) and `outcome`.
    pub actions: IntCounterVec,
    /// Alerts with at least one action in this process's store.
    pub alerts: IntGauge,
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
    for m in [
        Box::new(actions.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(alerts.clone()),
    ] {
        METRICS
            .registry
            .register(m)
            .expect("action metric names are unique");
    }
    ActionMetrics { actions, alerts }
});

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
