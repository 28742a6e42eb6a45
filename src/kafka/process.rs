//! Turning input messages into engine state: parsing and the engine, for one batch at
//! a time, on the poll thread alone or spread over processing threads by partition.
//!
//! Processing is pure CPU work on the partitions' own state (`Part`): no Kafka call,
//! no lock. Its results ([`Effects`]: alert records, rejected messages, counts) go
//! back to the poll thread, which sends them inside the open transaction. A partition
//! is handled by one thread per batch, in offset order, so the engine sees exactly the
//! sequence it would see on one thread; the threads only split the partitions.
//!
//! Nothing outlives a batch: every job is back before the poll thread sends, serves a
//! rebalance or rolls back, so rollback and revocation work as with a single thread.

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::input::{Batch, In, MsgRef, BATCH};
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

    /// Parses message `m` (index `idx` of its batch) and applies it.
    pub fn handle(&mut self, parser: &EventParser, m: &In<'_>, idx: usize, fx: &mut Effects) {
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
        match parser.parse(m.payload) {
            Ok(ev) => {
                if replay && ev.ts < self.restored_watermark {
                    fx.replay_skipped += 1;
                    return;
                }
                fx.events += 1;
                self.shard.push_with_seq(&ev, off as u64);
                fx.out.extend(self.shard.drain_alerts().map(Out::Alert));
            }
            // Rejects read again were dead-lettered before the restore.
            Err(_) if replay => fx.replay_skipped += 1,
            Err(reason) => fx.out.push(Out::Reject(idx, reason)),
        }
    }
}

/// Where message `i` of lane `lane`'s batch is reported in [`Effects`].
fn msg_index(lane: usize, i: usize) -> usize {
    lane * BATCH + i
}

/// The message reported as `idx` in [`Effects`].
pub(super) fn msg_at(batches: &[Batch], idx: usize) -> In<'_> {
    batches[idx / BATCH].get(idx % BATCH)
}

/// The messages of one partition in a batch, in offset order.
type Run = (i32, Vec<usize>);

/// Work for a processing thread: its partitions' state (moved in and back out) and
/// their messages.
struct Job {
    parts: Vec<(i32, Part)>,
    msgs: Vec<(i32, Vec<(usize, MsgRef)>)>,
}

struct Done {
    helper: usize,
    parts: Vec<(i32, Part)>,
    fx: Effects,
}

struct Worker {
    jobs: SyncSender<Job>,
    thread: JoinHandle<()>,
}

/// The processing threads: `threads - 1` helpers, the poll thread being one more.
pub(super) struct Pool {
    parser: EventParser,
    helpers: Vec<Worker>,
    done: Receiver<Done>,
}

/// A processing thread died: its partitions' state is gone with it.
#[derive(Debug, thiserror::Error)]
#[error("a processing thread stopped unexpectedly (panicked); the process must restart")]
pub(super) struct PoolBroken;

impl Pool {
    pub fn new(parser: EventParser, threads: usize) -> Pool {
        let (done_tx, done) = channel();
        let helpers = (1..threads.max(1))
            .map(|i| {
                let (jobs, rx) = sync_channel::<Job>(1);
                let parser = parser.clone();
                let done_tx = done_tx.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("cw-process-{i}"))
                    .spawn(move || helper(i - 1, parser, rx, done_tx))
                    .expect("spawning a processing thread");
                Worker { jobs, thread }
            })
            .collect();
        Pool {
            parser,
            helpers,
            done,
        }
    }

    /// Handles a message that did not come in a batch (index 0).
    pub fn handle_one(&self, parts: &mut BTreeMap<i32, Part>, m: &In<'_>) -> Effects {
        let mut fx = Effects::default();
        if let Some(part) = parts.get_mut(&m.partition) {
            part.handle(&self.parser, m, 0, &mut fx);
        }
        fx
    }

    /// Processes the messages of `batches` (consume errors excluded by the caller
    /// through `valid`) and returns what they produced, one [`Effects`] per thread
    /// used; a message is known there by its [`msg_index`]. Messages of partitions not
    /// in `parts` (revoked) are dropped.
    pub fn process(
        &self,
        parts: &mut BTreeMap<i32, Part>,
        batches: &[Batch],
        valid: impl Fn(&In<'_>) -> bool,
    ) -> Result<Vec<Effects>, PoolBroken> {
        let mut runs: Vec<Run> = Vec::new();
        for (b, batch) in batches.iter().enumerate() {
            for i in 0..batch.len() {
                let m = batch.get(i);
                if !valid(&m) || !parts.contains_key(&m.partition) {
                    continue;
                }
                let idx = msg_index(b, i);
                match runs.iter_mut().find(|(p, _)| *p == m.partition) {
                    Some((_, run)) => run.push(idx),
                    None => runs.push((m.partition, vec![idx])),
                }
            }
        }
        let msg = |idx: usize| msg_at(batches, idx);
        let msg_ref = |idx: usize| batches[idx / BATCH].msg_ref(idx % BATCH);
        // With one lane (one thread or one partition) everything stays on this thread.
        let lanes = (self.helpers.len() + 1).min(runs.len()).max(1);
        // Largest runs first, each to the least loaded lane; lane 0 is this thread.
        runs.sort_by_key(|(_, idx)| std::cmp::Reverse(idx.len()));
        let mut load = vec![0usize; lanes];
        let mut lane_runs: Vec<Vec<Run>> = (0..lanes).map(|_| Vec::new()).collect();
        for run in runs {
            let l = (0..lanes).min_by_key(|&l| load[l]).expect("lanes >= 1");
            load[l] += run.1.len();
            lane_runs[l].push(run);
        }
        let mut own = Vec::new();
        let mut pending = vec![false; self.helpers.len()];
        let mut broken = false;
        for (l, runs) in lane_runs.into_iter().enumerate() {
            if l == 0 {
                own = runs;
                continue;
            }
            let job = Job {
                parts: runs
                    .iter()
                    .map(|(p, _)| (*p, parts.remove(p).expect("checked above")))
                    .collect(),
                msgs: runs
                    .into_iter()
                    .map(|(p, idx)| (p, idx.into_iter().map(|i| (i, msg_ref(i))).collect()))
                    .collect(),
            };
            match self.helpers[l - 1].jobs.send(job) {
                Ok(()) => pending[l - 1] = true,
                Err(_) => broken = true,
            }
        }
        let mut fx = Effects::default();
        for (p, idx) in &own {
            let part = parts.get_mut(p).expect("checked above");
            for &i in idx {
                part.handle(&self.parser, &msg(i), i, &mut fx);
            }
        }
        let mut all = vec![fx];
        // Every job must be answered (or its helper gone) before the batch may be
        // cleared: helpers read the messages in place.
        while pending.iter().any(|&p| p) {
            match self.done.recv_timeout(Duration::from_millis(200)) {
                Ok(done) => {
                    pending[done.helper] = false;
                    parts.extend(done.parts);
                    all.push(done.fx);
                }
                Err(_) => {
                    for (h, w) in self.helpers.iter().enumerate() {
                        if pending[h] && w.thread.is_finished() {
                            pending[h] = false;
                            broken = true;
                        }
                    }
                }
            }
        }
        if broken {
            return Err(PoolBroken);
        }
        Ok(all)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for w in self.helpers.drain(..) {
            drop(w.jobs);
            let _ = w.thread.join();
        }
    }
}

fn helper(helper: usize, parser: EventParser, jobs: Receiver<Job>, done: Sender<Done>) {
    while let Ok(mut job) = jobs.recv() {
        let mut fx = Effects::default();
        for ((p, part), (mp, msgs)) in job.parts.iter_mut().zip(&job.msgs) {
            debug_assert_eq!(p, mp);
            for &(i, m) in msgs {
                // SAFETY: the poll thread holds the batch, uncleared, until this job's
                // answer arrives (`Pool::process` waits for every job it sent).
                let m = unsafe { m.get() };
                part.handle(&parser, &m, i, &mut fx);
            }
        }
        if done
            .send(Done {
                helper,
                parts: job.parts,
                fx,
            })
            .is_err()
        {
            return;
        }
    }
}
