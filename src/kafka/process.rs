//! Turning input messages into engine state: parsing and the engine, one batch at a
//! time, on the stream thread that owns the partitions.
//!
//! Processing is pure CPU work on the partitions' own state (`Part`): no Kafka call.
//! Its results ([`Effects`]: alert records, rejected messages, counts) are then sent
//! inside the open transaction by the caller.

use std::collections::BTreeMap;
use std::time::Instant;

use super::input::{Batch, In};
use crate::engine::{Alert, Shard};
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
    /// Messages read; compared across idle checks to find quiet partitions without
    /// reading the clock for every message.
    pub messages: u64,
    pub messages_at_check: u64,
    /// Since when the partition has had no messages (as seen by the idle checks).
    pub quiet_since: Instant,
    /// The input is stalled: quiet past `max_idle_advance`.
    pub stalled: bool,
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
    pub fn new(shard: Shard, next_offset: Option<i64>, restored_watermark: Millis) -> Part {
        Part {
            shard,
            next_offset,
            replay_below: next_offset.unwrap_or(0),
            restored_watermark,
            changed: false,
            messages: 0,
            messages_at_check: 0,
            quiet_since: Instant::now(),
            stalled: false,
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
        self.messages += 1;
        fx.consumed += 1;
        if self.stalled {
            self.stalled = false;
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
