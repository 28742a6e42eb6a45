//! Turning input messages into engine state: parsing and the engine, one batch at a
//! time, on the stream thread that owns the partitions.
//!
//! Processing is pure CPU work on the partitions' own state (`Part`): no Kafka call.
//! Its results ([`Effects`]: alert records, rejected messages, counts) are then sent
//! inside the open transaction by the caller.

use std::collections::BTreeMap;

use super::input::{Batch, In};
use crate::engine::{Alert, IdleWatch, Shard};
use crate::source::event::{EventParser, RejectReason};
use crate::time::Millis;

/// One assigned partition.
pub(super) struct Part {
    pub shard: Shard,
    /// Next input offset to read, once known.
    pub next_offset: Option<i64>,
    /// Offsets below this were read before the last restore (see the daemon's docs).
    pub replay_below: i64,
    /// Watermark of the restored checkpoint.
    pub restored_watermark: Millis,
    /// Something to checkpoint for this partition (offsets or clocks moved).
    pub changed: bool,
    /// The committed offset of the newest checkpoint known to be committed (restored,
    /// or committed by this thread since): what a rollback's restore must reach.
    pub checkpointed: Option<i64>,
    /// Quiet tracking for the live-mode watermark (and whether it is stalled).
    pub idle: IdleWatch,
}

/// Something to send inside the transaction, in the order it arose.
pub(super) enum Out {
    Alert(Alert),
    /// A rejected message, by its index in the batch.
    Reject(usize, RejectReason),
}

/// What processing produced, for the poll thread to send and count.
#[derive(Default)]
pub(super) struct Effects {
    pub out: Vec<Out>,
    /// Messages of assigned partitions read.
    pub consumed: u64,
    /// Events applied to the engine.
    pub events: u64,
    /// Messages read again after a restore and skipped (already applied or rejected).
    pub replay_skipped: u64,
    /// Partitions that had been reported stalled and got a message.
    pub unstalled: Vec<i32>,
}

impl Part {
    pub fn new(
        shard: Shard,
        next_offset: Option<i64>,
        restored_watermark: Millis,
        idle: IdleWatch,
    ) -> Part {
        Part {
            shard,
            next_offset,
            replay_below: next_offset.unwrap_or(0),
            restored_watermark,
            changed: false,
            checkpointed: None,
            idle,
        }
    }

    /// Parses message `m` (index `idx` of its batch), read when the clock said `now`,
    /// and applies it.
    pub fn handle(
        &mut self,
        parser: &EventParser,
        m: &In<'_>,
        idx: usize,
        now: Millis,
        fx: &mut Effects,
    ) {
        let off = m.offset;
        self.next_offset = Some(off + 1);
        self.changed = true;
        fx.consumed += 1;
        if self.idle.on_message() {
            fx.unstalled.push(m.partition);
        }
        let replay = off < self.replay_below;
        match parser.parse_at(m.payload, now) {
            Ok(ev) => {
                if replay && ev.ts < self.restored_watermark {
                    fx.replay_skipped += 1;
                    return;
                }
                match self.shard.push_with_seq(&ev, off as u64) {
                    Ok(()) => {
                        fx.events += 1;
                        fx.out.extend(self.shard.drain_alerts().map(Out::Alert));
                    }
                    // Refused when read again (account limits): it was refused, and
                    // dead-lettered, before the restore too. (Not always: the accounts
                    // restored from the changelog can include some first seen after
                    // this message, so a message let in just under the cap can be
                    // refused now; it is then counted as skipped, not dead-lettered.)
                    Err(_) if replay => fx.replay_skipped += 1,
                    Err(reason) => fx.out.push(Out::Reject(idx, reason)),
                }
            }
            // Rejects read again were dead-lettered before the restore (a message
            // dated too far ahead then was so at every earlier moment too).
            Err(_) if replay => fx.replay_skipped += 1,
            Err(reason) => fx.out.push(Out::Reject(idx, reason)),
        }
    }
}

/// Handles the messages of `batch` (consume errors excluded by the caller through
/// `valid`) in order, read at wall-clock time `now`; a rejected message is known in
/// [`Effects`] by its index in the batch. Messages of partitions not in `parts`
/// (revoked) are dropped.
pub(super) fn process(
    parser: &EventParser,
    parts: &mut BTreeMap<i32, Part>,
    batch: &Batch,
    now: Millis,
    valid: impl Fn(&In<'_>) -> bool,
) -> Effects {
    let mut fx = Effects::default();
    // Consecutive messages mostly come from one partition: look it up once per run.
    let mut current: Option<(i32, &mut Part)> = None;
    for i in 0..batch.len() {
        let m = batch.get(i);
        if !valid(&m) {
            continue;
        }
        if current.as_ref().map(|(p, _)| *p) != Some(m.partition) {
            current = parts.get_mut(&m.partition).map(|part| (m.partition, part));
        }
        if let Some((_, part)) = current.as_mut() {
            part.handle(parser, &m, i, now, &mut fx);
        }
    }
    fx
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::engine::{EngineConfig, IdlePolicy, IdleWatch};
    use crate::source::event::EventParser;
    use crate::time::DAY;

    const T0: Millis = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn msg(offset: i64, payload: &[u8]) -> In<'_> {
        In {
            partition: 3,
            offset,
            payload,
            key: None,
            err: rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
        }
    }

    /// A partition restored from a checkpoint taken at offset 10 with watermark
    /// 2026-01-02.
    fn restored() -> Part {
        let cfg = Config::default();
        let shard = Shard::new(Arc::new(EngineConfig::new(&cfg)));
        let idle = IdleWatch::new(IdlePolicy::new(&cfg), 0);
        Part::new(shard, Some(10), T0 + DAY, idle)
    }

    #[test]
    fn messages_read_again_after_a_restore_skip_what_was_applied() {
        let parser = EventParser::new(&Config::default().input).unwrap();
        let mut p = restored();
        let mut fx = Effects::default();
        let before = br#"{"account_id":"a","event":"x","ts":"2026-01-01T12:00:00Z"}"#;
        let held = br#"{"account_id":"a","event":"x","ts":"2026-01-02T12:00:00Z"}"#;
        // Below the checkpoint's next offset and its watermark: applied before.
        p.handle(&parser, &msg(4, before), 0, T0 + 9 * DAY, &mut fx);
        // Below the next offset, at or past the watermark: was waiting, applies.
        p.handle(&parser, &msg(5, held), 1, T0 + 9 * DAY, &mut fx);
        // A reject read again was dead-lettered before.
        p.handle(&parser, &msg(6, b"not json"), 2, T0 + 9 * DAY, &mut fx);
        assert_eq!((fx.replay_skipped, fx.events, fx.consumed), (2, 1, 3));
        assert!(fx.out.is_empty());
        assert_eq!(p.shard.held_events(), 1);
        // Past the next offset, everything is new: the same line is applied, the
        // reject is dead-lettered with its index in the batch.
        p.handle(&parser, &msg(10, before), 3, T0 + 9 * DAY, &mut fx);
        p.handle(&parser, &msg(11, b"not json"), 4, T0 + 9 * DAY, &mut fx);
        assert_eq!((fx.replay_skipped, fx.events, fx.consumed), (2, 2, 5));
        assert!(matches!(fx.out[..], [Out::Reject(4, _)]));
        assert_eq!(p.next_offset, Some(12));
        assert!(p.changed);
    }

    #[test]
    fn a_message_of_a_stalled_partition_reports_it_unstalled() {
        let parser = EventParser::new(&Config::default().input).unwrap();
        let mut p = restored();
        p.shard
            .push(&crate::source::event::RawEvent {
                account_id: "a".into(),
                event: "x".into(),
                ts: T0,
                user_id: None,
            })
            .unwrap();
        assert!(
            p.idle
                .advance(&mut p.shard, T0 + 9 * DAY, true)
                .unwrap()
                .stalled
        );
        let mut fx = Effects::default();
        let line = br#"{"account_id":"a","event":"x","ts":"2026-01-03T12:00:00Z"}"#;
        p.handle(&parser, &msg(10, line), 0, T0 + 9 * DAY, &mut fx);
        p.handle(&parser, &msg(11, line), 1, T0 + 9 * DAY, &mut fx);
        assert_eq!(fx.unstalled, [3]);
    }
}
