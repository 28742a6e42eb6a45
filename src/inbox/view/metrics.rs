//! The inbox's metrics, registered in the process's registry (`churnwatch_inbox_*`).
//! Labels are the record source and the API route; never an account or an owner.

use std::sync::LazyLock;

use prometheus::{exponential_buckets, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};

use crate::metrics::METRICS;

pub struct InboxMetrics {
    /// Records applied to the view, by source.
    pub records: IntCounterVec,
    /// Records skipped as unreadable, by source.
    pub skipped: IntCounterVec,
    /// Accounts in the view.
    pub accounts: IntGauge,
    /// Accounts with a firing alert.
    pub at_risk: IntGauge,
    /// 1 once the view has read every partition to the end seen at its start.
    pub caught_up: IntGauge,
    /// API answer time, by route.
    pub request_seconds: HistogramVec,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(m: T) -> T {
    // Registered once per process (LazyLock); a second registration would be a bug.
    METRICS
        .registry
        .register(Box::new(m.clone()))
        .expect("inbox metric names are unique");
    m
}

pub static INBOX: LazyLock<InboxMetrics> = LazyLock::new(|| InboxMetrics {
    records: reg(IntCounterVec::new(
        Opts::new(
            "inbox_records_total",
            "Records applied to the inbox view, by source (changelog, alerts, accounts, silences)",
        ),
        &["source"],
    )
    .expect("valid metric")),
    skipped: reg(IntCounterVec::new(
        Opts::new(
            "inbox_records_skipped_total",
            "Records the inbox view could not read and skipped, by source",
        ),
        &["source"],
    )
    .expect("valid metric")),
    accounts: reg(
        IntGauge::new("inbox_accounts", "Accounts in the inbox view").expect("valid metric"),
    ),
    at_risk: reg(IntGauge::new(
        "inbox_accounts_at_risk",
        "Accounts in the inbox view with a firing alert",
    )
    .expect("valid metric")),
    caught_up: reg(IntGauge::new(
        "inbox_caught_up",
        "1 once the inbox view has read every partition of its topics to the end seen at its start",
    )
    .expect("valid metric")),
    request_seconds: reg(HistogramVec::new(
        HistogramOpts::new(
            "inbox_request_seconds",
            "Time to answer an inbox API request, by route",
        )
        .buckets(exponential_buckets(1e-5, 4.0, 10).expect("valid buckets")),
        &["route"],
    )
    .expect("valid metric")),
});
