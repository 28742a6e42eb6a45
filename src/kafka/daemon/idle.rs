//! The broker side of the live-mode watermark: which quiet partitions are read to the
//! end of their input (a round trip to the broker, only for partitions the engine's
//! `IdleWatch` found quiet), and what to tell the operator (log, gauge, health) when
//! one stalls. The rule itself (when, how far, stalled or not) is the engine's.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use tracing::warn;

use super::rebalance::Ctx;
use super::state::State;
use super::DaemonError;
use crate::metrics::METRICS;
use crate::time::wall_clock_ms;

impl State {
    /// Live mode: lets the watermark of caught-up, quiet partitions follow the clock,
    /// never past `max_idle_advance` after their newest event.
    pub(super) fn idle_advance(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), DaemonError> {
        let now = wall_clock_ms();
        let quiet: Vec<i32> = self
            .parts
            .iter_mut()
            .filter_map(|(&p, part)| part.idle.quiet(&part.shard, now).then_some(p))
            .collect();
        if quiet.is_empty() {
            return Ok(());
        }
        let topic = self.cfg.kafka.input_topic.clone();
        let positions = consumer.position()?;
        for p in quiet {
            let (_, high) = match consumer.fetch_watermarks(&topic, p, Duration::from_secs(2)) {
                Ok(w) => w,
                Err(e) => {
                    warn!(partition = p, error = %e, "cannot read the partition's end offset");
                    continue;
                }
            };
            let position = positions
                .find_partition(&topic, p)
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(-1);
            let part = self.parts.get_mut(&p).expect("listed above");
            let caught_up = position >= high || part.next_offset.is_some_and(|n| n >= high);
            let Some(r) = part
                .idle
                .advance(&mut part.shard, wall_clock_ms(), caught_up)
            else {
                continue;
            };
            if r.newly_stalled {
                warn!(
                    partition = p,
                    newest_event_time = %crate::time::format_rfc3339(part.shard.newest()),
                    max_idle_advance = %self.cfg.time.max_idle_advance,
                    "input stalled: the newest event time is older than max_idle_advance, so \
                     absence alerts (inactive, not_activated) are paused until newer events \
                     arrive (expected after loading historical data)"
                );
            }
            METRICS
                .input_stalled
                .with_label_values(&[&p.to_string()])
                .set(r.stalled as i64);
            self.health.detector(|h| {
                if r.stalled {
                    h.stalled.insert(p);
                } else {
                    h.stalled.remove(&p);
                }
            });
            if r.advanced {
                part.changed = true;
                for a in part.shard.drain_alerts() {
                    self.out.send_alert(&a)?;
                }
            }
        }
        Ok(())
    }
}
