//! What one stream thread owns (its partitions, output, changelog reader, counters),
//! and sending what processing produced.

use std::collections::BTreeMap;
use std::sync::Arc;

use rdkafka::consumer::BaseConsumer;
use tracing::debug;

use super::output::Output;
use super::{DaemonError, DaemonStats};
use crate::config::Config;
use crate::engine::EngineConfig;
use crate::kafka::changelog::RestoreContext;
use crate::kafka::input::In;
use crate::kafka::process::{Effects, Out, Part};
use crate::metrics::METRICS;
use crate::server::Health;
use crate::time::wall_clock_ms;
use crate::time::Millis;

/// Everything a stream thread's poll loop and rebalance callbacks share.
pub(super) struct State {
    pub(super) cfg: Arc<Config>,
    pub(super) engine: Arc<EngineConfig>,
    /// Index of the stream thread.
    pub(super) thread: usize,
    pub(super) out: Output,
    pub(super) restore_consumer: BaseConsumer<RestoreContext>,
    pub(super) parts: BTreeMap<i32, Part>,
    /// A failure inside a callback, reported by the poll loop.
    pub(super) failed: Option<DaemonError>,
    pub(super) stats: DaemonStats,
    pub(super) health: Arc<Health>,
    /// Producers replaced after a fatal error so far (see `ProducerFailed`).
    pub(super) producer_rebuilds: u32,
    /// When a producer was last replaced for being fenced.
    pub(super) fenced_at: Option<std::time::Instant>,
}

/// A producer that keeps failing fatally is a problem for a restart to surface.
pub(super) const MAX_PRODUCER_REBUILDS: u32 = 10;

impl State {
    /// Accounts changed since the last checkpoint, over all partitions.
    pub(super) fn dirty_accounts(&self) -> usize {
        self.parts.values().map(|p| p.shard.dirty_accounts()).sum()
    }

    /// Sends and counts what processing produced; `msg(i)` is the `i`-th message of
    /// the batch processed.
    pub(super) fn emit<'m>(
        &mut self,
        fx: Effects,
        msg: impl Fn(usize) -> In<'m>,
    ) -> Result<(), DaemonError> {
        METRICS.events_consumed.inc_by(fx.consumed);
        METRICS.events_replay_skipped.inc_by(fx.replay_skipped);
        self.stats.events += fx.events;
        self.stats.replay_skipped += fx.replay_skipped;
        for p in fx.unstalled {
            METRICS
                .input_stalled
                .with_label_values(&[&p.to_string()])
                .set(0);
            self.health.detector(|h| {
                h.stalled.remove(&p);
            });
        }
        for out in fx.out {
            match out {
                Out::Alert(a) => self.out.send_alert(&a)?,
                Out::Reject(i, reason) => {
                    let m = msg(i);
                    debug!(
                        partition = m.partition,
                        offset = m.offset,
                        reason = reason.as_str(),
                        "rejected"
                    );
                    self.out
                        .send_dead_letter(&self.cfg.kafka.input_topic, &m, &reason)?;
                }
            }
        }
        Ok(())
    }

    /// Drops partition `p` (revoked, or lost with the group member) with its gauges
    /// and health entries.
    pub(super) fn forget_partition(&mut self, p: i32) {
        self.parts.remove(&p);
        let label = p.to_string();
        for g in [
            &METRICS.accounts_tracked,
            &METRICS.timers_pending,
            &METRICS.held_events,
            &METRICS.watermark_lag_seconds,
            &METRICS.input_stalled,
            &METRICS.consumer_lag,
        ] {
            let _ = g.remove_label_values(&[&label]);
        }
        self.health.detector(|h| {
            h.assigned.remove(&p);
            h.stalled.remove(&p);
            h.caught_up.remove(&p);
            h.restoring.remove(&p);
            // Of the whole process: every stream thread's partitions.
            METRICS.assigned_partitions.set(h.assigned.len() as i64);
        });
    }

    /// After this thread's group member was replaced: aborts the open transaction
    /// (replacing a producer that fails fatally doing so) and forgets every partition,
    /// which the next member restores from its last checkpoint when assigned.
    pub(super) fn forget_partitions(&mut self) -> Result<(), DaemonError> {
        if self.out.in_txn {
            match self.out.abort() {
                Ok(()) => {}
                Err(DaemonError::ProducerFailed(msg))
                    if self.producer_rebuilds < MAX_PRODUCER_REBUILDS =>
                {
                    self.producer_rebuilds += 1;
                    tracing::warn!(error = %msg, rebuilds = self.producer_rebuilds, "transactional producer failed; replacing it");
                    let k = &self.cfg.kafka;
                    self.out.producer = super::output::transactional_producer(
                        k,
                        &self.out.transactional_id,
                        self.out.txn_timeout,
                    )?;
                    self.out.in_txn = false;
                }
                Err(e) => return Err(e),
            }
        }
        self.stats.aborts += 1;
        self.out.uncommitted.forget();
        let parts: Vec<i32> = self.parts.keys().copied().collect();
        for p in parts {
            self.forget_partition(p);
        }
        Ok(())
    }

    /// Refreshes the per-partition gauges.
    pub(super) fn refresh_gauges(&self) {
        let now = wall_clock_ms();
        for (p, part) in &self.parts {
            let label = p.to_string();
            let l = [label.as_str()];
            METRICS
                .accounts_tracked
                .with_label_values(&l)
                .set(part.shard.accounts() as i64);
            METRICS
                .timers_pending
                .with_label_values(&l)
                .set(part.shard.timers_pending() as i64);
            METRICS
                .held_events
                .with_label_values(&l)
                .set(part.shard.held_events() as i64);
            if part.shard.watermark() != Millis::MIN {
                METRICS
                    .watermark_lag_seconds
                    .with_label_values(&l)
                    .set((now - part.shard.watermark()) / 1000);
            }
        }
    }
}
