//! Prometheus metrics, all under the `churnwatch_` namespace, built once and registered
//! in one registry. Labels are bounded: partition numbers, reasons, rule kinds, receiver
//! names; never an account or user id.

use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::source::event::RejectReason;

/// Every metric of the process.
pub struct Metrics {
    pub registry: Registry,
    pub events_consumed: IntCounter,
    pub events_rejected: IntCounterVec,
    pub events_replay_skipped: IntCounter,
    pub processing_seconds: Histogram,
    pub watermark_lag_seconds: IntGaugeVec,
    pub consumer_lag: IntGaugeVec,
    pub accounts_tracked: IntGaugeVec,
    pub accounts_limit: IntGauge,
    pub timers_pending: IntGaugeVec,
    pub held_events: IntGaugeVec,
    pub assigned_partitions: IntGauge,
    pub alerts: IntCounterVec,
    pub checkpoints: IntCounter,
    pub checkpoint_seconds: Histogram,
    pub checkpoint_failures: IntCounter,
    pub checkpoint_accounts: Histogram,
    pub restore_seconds: Histogram,
    pub restore_records: IntCounter,
    pub rebalances: IntCounterVec,
    pub input_stalled: IntGaugeVec,
    pub notifications: IntCounterVec,
    pub notification_seconds: HistogramVec,
    pub notification_retries: IntCounterVec,
    pub notification_dead_letters: IntCounterVec,
    pub account_metadata_accounts: IntGauge,
    pub account_metadata_records: IntCounterVec,
    pub build_info: IntGaugeVec,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    r.register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new_custom(Some("churnwatch".into()), None).expect("valid namespace");
        let secs = |name: &str, help: &str, buckets: Vec<f64>| {
            reg(
                &r,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                    .expect("valid histogram"),
            )
        };
        let m = Metrics {
            events_consumed: reg(&r, IntCounter::new("events_consumed_total", "Input messages read").unwrap()),
            events_rejected: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("events_rejected_total", "Input messages rejected, by reason (sent to the dead-letter topic)"),
                    &["reason"],
                )
                .unwrap(),
            ),
            events_replay_skipped: reg(
                &r,
                IntCounter::new(
                    "events_replay_skipped_total",
                    "Messages read again after a restore that were already applied",
                )
                .unwrap(),
            ),
            processing_seconds: secs(
                "event_processing_seconds",
                "Time to parse and apply one input message",
                exponential_buckets(1e-7, 4.0, 10).unwrap(),
            ),
            watermark_lag_seconds: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("watermark_lag_seconds", "Wall clock minus the partition's watermark (event-time lag)"),
                    &["partition"],
                )
                .unwrap(),
            ),
            consumer_lag: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("consumer_lag_messages", "Messages between the consumer position and the partition end"),
                    &["partition"],
                )
                .unwrap(),
            ),
            accounts_tracked: reg(
                &r,
                IntGaugeVec::new(Opts::new("accounts_tracked", "Accounts held in memory"), &["partition"]).unwrap(),
            ),
            accounts_limit: reg(
                &r,
                IntGauge::new(
                    "accounts_limit",
                    "Most accounts one partition tracks (engine.max_accounts_per_partition); events of further new accounts are rejected as account_limit",
                )
                .unwrap(),
            ),
            timers_pending: reg(
                &r,
                IntGaugeVec::new(Opts::new("timers_pending", "Queued rule checks"), &["partition"]).unwrap(),
            ),
            held_events: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("held_events", "Events waiting for the watermark (reorder buffer)"),
                    &["partition"],
                )
                .unwrap(),
            ),
            assigned_partitions: reg(
                &r,
                IntGauge::new("assigned_partitions", "Input partitions owned by this instance").unwrap(),
            ),
            alerts: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("alerts_total", "Alert transitions published"),
                    &["kind", "status", "severity"],
                )
                .unwrap(),
            ),
            checkpoints: reg(&r, IntCounter::new("checkpoints_total", "Committed checkpoint transactions").unwrap()),
            checkpoint_seconds: secs(
                "checkpoint_duration_seconds",
                "Time to commit one checkpoint transaction",
                exponential_buckets(0.001, 2.0, 14).unwrap(),
            ),
            checkpoint_failures: reg(
                &r,
                IntCounter::new("checkpoint_failures_total", "Checkpoint transactions aborted and rolled back").unwrap(),
            ),
            checkpoint_accounts: secs(
                "checkpoint_accounts",
                "Changed accounts written per checkpoint",
                exponential_buckets(1.0, 4.0, 10).unwrap(),
            ),
            restore_seconds: secs(
                "state_restore_duration_seconds",
                "Time to restore one partition's state from the changelog",
                exponential_buckets(0.001, 2.0, 16).unwrap(),
            ),
            restore_records: reg(
                &r,
                IntCounter::new("state_restore_records_total", "Changelog records read while restoring").unwrap(),
            ),
            rebalances: reg(
                &r,
                IntCounterVec::new(Opts::new("rebalances_total", "Partition assignments and revocations"), &["event"])
                    .unwrap(),
            ),
            input_stalled: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "input_stalled",
                        "1 while a caught-up partition has had no events for longer than max_idle_advance",
                    ),
                    &["partition"],
                )
                .unwrap(),
            ),
            notifications: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("notifications_total", "Notifications by receiver and outcome"),
                    &["receiver", "outcome"],
                )
                .unwrap(),
            ),
            notification_seconds: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("notification_delivery_seconds", "Time from alert to delivered notification")
                        .buckets(exponential_buckets(0.01, 3.0, 12).unwrap()),
                    &["receiver"],
                )
                .unwrap(),
            ),
            notification_retries: reg(
                &r,
                IntCounterVec::new(Opts::new("notification_retries_total", "Delivery retries"), &["receiver"]).unwrap(),
            ),
            notification_dead_letters: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("notification_dead_letters_total", "Notifications that failed for good"),
                    &["receiver"],
                )
                .unwrap(),
            ),
            account_metadata_accounts: reg(
                &r,
                IntGauge::new("account_metadata_accounts", "Accounts with metadata (file and topic)").unwrap(),
            ),
            account_metadata_records: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("account_metadata_records_total", "Records read from notify.accounts_topic by outcome"),
                    &["outcome"],
                )
                .unwrap(),
            ),
            build_info: reg(
                &r,
                IntGaugeVec::new(Opts::new("build_info", "Version of the running binary"), &["version"]).unwrap(),
            ),
            registry: r,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for reason in RejectReason::LABELS {
            m.events_rejected.with_label_values(&[reason]);
        }
        m.checkpoint_failures.inc_by(0);
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("text exposition is UTF-8")
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_is_namespaced_and_has_no_id_labels() {
        crate::actions::metrics::count("snooze", "accepted");
        METRICS
            .alerts
            .with_label_values(&["inactive", "firing", "warning"])
            .inc();
        let text = METRICS.render();
        assert!(text.contains("churnwatch_build_info{version=\""));
        assert!(text.contains("churnwatch_events_rejected_total{reason=\"invalid_json\"} 0"));
        assert!(text.contains(
            "churnwatch_alerts_total{kind=\"inactive\",severity=\"warning\",status=\"firing\"}"
        ));
        let allowed = [
            "reason",
            "partition",
            "kind",
            "status",
            "severity",
            "event",
            "receiver",
            "outcome",
            "version",
            "source",
            "route",
            "le",
            // The inbox's (src/inbox/view/metrics.rs): record source, API route.
            "source",
            "route",
            // The actions' (src/actions/metrics.rs): action kind (and `outcome`).
            "action",
        ];
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("churnwatch_"), "{line}");
            if let Some((_, labels)) = line.split_once('{') {
                for pair in labels.split('}').next().unwrap().split(',') {
                    let key = pair.split('=').next().unwrap();
                    assert!(allowed.contains(&key), "unexpected label {key:?} in {line}");
                }
            }
        }
    }
}
