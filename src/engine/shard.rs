//! One shard of the engine: the accounts of one partition, their reorder buffer,
//! timers and daily windows. Pure: time comes only from events and `advance_to`.
//!
//! Processing model (see docs/detection.md): an event is held until the watermark
//! `W = newest ts - allowed_lateness` passes it; then held events, due timers and day
//! closes run strictly in time order, events before checks at equal times. While the
//! stream is live, only items with time `< W` run (an event with `ts == W` may still
//! arrive); at the end of a replay, `finish` runs everything up to `until` inclusive.
//!
//! This file owns the time loop and the lifecycle (start, end, which rule hears of an
//! activity event, which timer is due); each rule's counting, checks, firing and
//! resolution are in `rules/`, and every alert leaves through `emit`, which also marks
//! the account changed for the changelog.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

use super::account::{user_hash, Account, Life, NEVER, NO_LIFE};
use super::alert::{Alert, ResolveReason};
use super::config::{Class, EngineConfig};
use super::pending::Pending;
use super::ring::{RingArena, NO_RING};
use crate::source::event::{RawEvent, RejectReason};
use crate::time::{day_of, Millis, DAY};

/// An event waiting for the watermark. 32 bytes, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Held {
    pub(super) ts: Millis,
    pub(super) seq: u64,
    pub(super) account: u32,
    pub(super) class: PackedClass,
    /// Hash of the user id; 0 for none.
    pub(super) user: u64,
}

/// What an event name means to a shard's config (`Class` packed into one byte: 0
/// start, 1 end, 2 activity, 3+i required event i). Drivers that see the same names
/// many times resolve each name once with [`Shard::class_of`] and hand events over with
/// [`Shard::push_resolved`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PackedClass(pub(super) u8);

impl From<Class> for PackedClass {
    fn from(c: Class) -> Self {
        PackedClass(match c {
            Class::Start => 0,
            Class::End => 1,
            Class::Activity(None) => 2,
            Class::Activity(Some(i)) => 3 + i,
        })
    }
}

impl From<PackedClass> for Class {
    fn from(p: PackedClass) -> Self {
        match p.0 {
            0 => Class::Start,
            1 => Class::End,
            2 => Class::Activity(None),
            i => Class::Activity(Some(i - 3)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKind {
    /// Onboarding deadline with this index.
    Deadline(u8),
    Inactive,
}

/// A due check for one account (16 bytes). Ordered by time, then account slot, for a
/// stable order. Timers are not removed when they become moot; a timer that no longer
/// matches the account's state when it comes due is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Timer {
    pub(super) at: Millis,
    pub(super) account: u32,
    pub(super) kind: TimerKind,
}

/// Counters a driver can read (and turn into metrics or a summary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Events applied to account state (including late and ignored ones).
    pub events_applied: u64,
    /// Events that arrived with `ts < W`.
    pub late_events: u64,
    /// Activity events for an account with no active lifecycle (after an end event,
    /// or before any start when `start_on_first_event = false`).
    pub outside_lifecycle: u64,
    /// Events newer than `until` at the end of a replay, not applied.
    pub beyond_until: u64,
}

/// The accounts of one partition and everything needed to evaluate them.
pub struct Shard {
    pub(super) cfg: Arc<EngineConfig>,
    pub(super) accounts: Vec<Account>,
    pub(super) index: HashTable<u32>,
    pub(super) hasher: DefaultHashBuilder,
    /// Active lifecycles, by slot; `free_lives` lists reusable slots.
    pub(super) lives: Vec<Life>,
    pub(super) free_lives: Vec<u32>,
    pub(super) rings: RingArena,
    pub(super) pending: Pending,
    pub(super) seq: u64,
    pub(super) timers: BinaryHeap<Reverse<Timer>>,
    /// Accounts holding a daily window, evaluated at every day close.
    pub(super) window_list: Vec<u32>,
    pub(super) watermark: Millis,
    pub(super) newest: Millis,
    /// Time of the last item processed; never decreases.
    pub(super) now: Millis,
    /// The next day to close, once any event was processed.
    pub(super) next_close_day: Option<i64>,
    pub(super) out: Vec<Alert>,
    pub stats: ShardStats,
    /// Accounts changed since the last `take_dirty`.
    pub(super) dirty: Vec<u32>,
}

impl Shard {
    pub fn new(cfg: Arc<EngineConfig>) -> Shard {
        let ring_len = cfg
            .drop
            .as_ref()
            .map_or(1, |d| (d.recent_days + d.baseline_days) as usize);
        Shard {
            cfg,
            accounts: Vec::new(),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            lives: Vec::new(),
            free_lives: Vec::new(),
            rings: RingArena::new(ring_len),
            pending: Pending::default(),
            seq: 0,
            timers: BinaryHeap::new(),
            window_list: Vec::new(),
            watermark: Millis::MIN,
            newest: Millis::MIN,
            now: Millis::MIN,
            next_close_day: None,
            out: Vec::new(),
            stats: ShardStats::default(),
            dirty: Vec::new(),
        }
    }

    /// The watermark `W` (`i64::MIN` before the first event).
    pub fn watermark(&self) -> Millis {
        self.watermark
    }

    /// The newest event time seen (`i64::MIN` before the first event).
    pub fn newest(&self) -> Millis {
        self.newest
    }

    /// Number of accounts known to this shard.
    pub fn accounts(&self) -> usize {
        self.accounts.len()
    }

    /// Accounts changed since their state was last taken for the changelog.
    pub fn dirty_accounts(&self) -> usize {
        self.dirty.len()
    }

    /// Number of accounts in an active lifecycle.
    pub fn active_lifecycles(&self) -> usize {
        self.lives.len() - self.free_lives.len()
    }

    /// Number of daily windows held.
    pub fn windows(&self) -> usize {
        self.rings.in_use()
    }

    /// Number of queued timers (including moot ones not yet popped).
    pub fn timers_pending(&self) -> usize {
        self.timers.len()
    }

    /// Number of events waiting for the watermark.
    pub fn held_events(&self) -> usize {
        self.pending.len()
    }

    /// The smallest sequence number among events waiting for the watermark.
    pub fn min_pending_seq(&self) -> Option<u64> {
        self.pending.iter().map(|h| h.seq).min()
    }

    /// The active lifecycle of an account, if any.
    pub fn life_of(&self, id: &str) -> Option<&Life> {
        let h = self.hasher.hash_one(id);
        let i = *self
            .index
            .find(h, |&i| &*self.accounts[i as usize].id == id)?;
        let l = self.accounts[i as usize].life;
        (l != NO_LIFE).then(|| &self.lives[l as usize])
    }

    pub(super) fn intern(&mut self, id: &str) -> u32 {
        let h = self.hasher.hash_one(id);
        let accounts = &mut self.accounts;
        let hasher = &self.hasher;
        *self
            .index
            .entry(
                h,
                |&i| &*accounts[i as usize].id == id,
                |&i| hasher.hash_one(&*accounts[i as usize].id),
            )
            .or_insert_with(|| {
                accounts.push(Account::new(id));
                (accounts.len() - 1) as u32
            })
            .get()
    }

    /// Hands one event to the shard; applies whatever the watermark now allows. An
    /// event of a new account past the limits is refused (and changes nothing).
    pub fn push(&mut self, ev: &RawEvent<'_>) -> Result<(), RejectReason> {
        let seq = self.seq;
        self.push_with_seq(ev, seq)
    }

    /// Like `push`, with the arrival sequence number given by the caller (the Kafka
    /// offset): events with equal times apply in sequence order, and
    /// `min_pending_seq` tells the oldest event not yet applied.
    pub fn push_with_seq(&mut self, ev: &RawEvent<'_>, seq: u64) -> Result<(), RejectReason> {
        let account = self.admit(&ev.account_id)?;
        let held = Held {
            ts: ev.ts,
            seq,
            account,
            class: self.cfg.classify(&ev.event).into(),
            user: ev.user_id.as_deref().map_or(0, user_hash),
        };
        self.push_held(held);
        Ok(())
    }

    /// The slot of account `id`, tracking it from now on if it is new; refused (and
    /// nothing changes) for a new account past the limits, as `push` would refuse its
    /// event. A slot stays valid for the life of the shard.
    pub fn account_slot(&mut self, id: &str) -> Result<u32, RejectReason> {
        self.admit(id)
    }

    /// What the event name `name` means under this shard's config.
    pub fn class_of(&self, name: &str) -> PackedClass {
        self.cfg.classify(name).into()
    }

    /// `push` of an event whose strings are already resolved: the account's slot (from
    /// [`Self::account_slot`]), the class of its name (from [`Self::class_of`]) and the
    /// [`user_hash`] of its user id (0 for none). Same effect as `push` of the event
    /// itself; a driver replaying one history under many configs resolves the strings
    /// once per history instead of once per event and run.
    pub fn push_resolved(&mut self, ts: Millis, slot: u32, class: PackedClass, user: u64) {
        let held = self.resolved(ts, slot, class, user);
        self.push_held(held);
    }

    /// An event given with its strings resolved, numbered next in arrival order.
    fn resolved(&self, ts: Millis, slot: u32, class: PackedClass, user: u64) -> Held {
        assert!(
            (slot as usize) < self.accounts.len(),
            "slot from account_slot"
        );
        Held {
            ts,
            seq: self.seq,
            account: slot,
            class,
            user,
        }
    }

    /// Applies one event whose place in time order is already known: the place the
    /// reorder buffer would release it at, `t` being its own time `ts`, or the
    /// watermark then if it arrived `late`. The checks due before `t` run first, as
    /// they would. For a driver replaying one history under many configs: that order
    /// depends only on the events, `allowed_lateness` and the account limits (which
    /// accounts are refused, and the order slots are taken in), so it can be worked out
    /// once for all the runs that share them; the rules' work is all done here.
    /// Events given this way never wait in the shard: do not mix with `push`.
    pub fn apply_in_order(
        &mut self,
        t: Millis,
        ts: Millis,
        slot: u32,
        class: PackedClass,
        user: u64,
        late: bool,
    ) {
        assert!(
            self.pending.len() == 0,
            "apply_in_order is not mixed with push"
        );
        assert!(t >= self.now && t >= ts, "events in the order they apply");
        self.newest = self.newest.max(ts);
        self.watermark = self.watermark.max(t);
        if late {
            self.stats.late_events += 1;
        }
        self.run(t);
        let held = self.resolved(ts, slot, class, user);
        self.seq += 1;
        self.apply(held, t);
    }

    /// Queues (or, late, applies) one event and runs whatever the watermark allows.
    fn push_held(&mut self, held: Held) {
        self.seq = self.seq.max(held.seq + 1);
        if held.ts < self.watermark {
            // Late: everything before W has run, so it applies at W (its own day still
            // gets its counts, if the window holds that day).
            self.stats.late_events += 1;
            self.apply(held, self.watermark);
        } else {
            self.pending.push(held);
        }
        if held.ts > self.newest {
            self.newest = held.ts;
            let w = held.ts.saturating_sub(self.cfg.allowed_lateness);
            if w > self.watermark {
                self.watermark = w;
                self.run(w);
            }
        }
    }

    /// Moves the watermark forward (live mode: wall-clock advance of a quiet
    /// partition). Never moves it back.
    pub fn advance_to(&mut self, w: Millis) {
        if w > self.watermark {
            self.watermark = w;
            self.run(w);
        }
    }

    /// End of input: sets `W` to `until` (default: the newest event time) and runs
    /// everything due by then, inclusive. Events newer than that are counted in
    /// `stats.beyond_until` and not applied.
    pub fn finish(&mut self, until: Option<Millis>) {
        let until = until.unwrap_or(self.newest);
        if until == Millis::MIN {
            return;
        }
        self.watermark = self.watermark.max(until);
        self.run(self.watermark.saturating_add(1));
        self.stats.beyond_until += self.pending.len() as u64;
        self.pending.clear();
    }

    /// Takes the alerts produced so far.
    pub fn drain_alerts(&mut self) -> std::vec::Drain<'_, Alert> {
        self.out.drain(..)
    }

    /// Number of alerts waiting to be drained.
    pub fn alerts_ready(&self) -> usize {
        self.out.len()
    }

    /// Runs held events, timers and day closes with time `< limit`, in time order.
    fn run(&mut self, limit: Millis) {
        loop {
            let ev = self.pending.peek().map(|h| h.ts).filter(|&t| t < limit);
            let timer = self.timers.peek().map(|r| r.0.at).filter(|&t| t < limit);
            let close = self
                .next_close_day
                .map(|d| (d + 1) * DAY)
                .filter(|&t| t < limit);
            let check = match (timer, close) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match (ev, check) {
                (Some(e), c) if c.is_none_or(|c| e <= c) => {
                    let held = self.pending.pop().expect("peeked");
                    self.apply(held, held.ts);
                }
                (_, Some(c)) => {
                    self.now = self.now.max(c);
                    if timer == Some(c) {
                        let Reverse(t) = self.timers.pop().expect("peeked");
                        self.fire_timer(t);
                    } else {
                        let d = self.next_close_day.expect("close time implies a day");
                        self.next_close_day = Some(d + 1);
                        self.close_day(d);
                    }
                }
                _ => return,
            }
        }
    }

    pub(super) fn schedule(&mut self, at: Millis, account: u32, kind: TimerKind) {
        self.timers.push(Reverse(Timer { at, account, kind }));
    }

    /// Applies one event at time `t`: its own time, or the watermark for a late event.
    fn apply(&mut self, h: Held, t: Millis) {
        self.stats.events_applied += 1;
        debug_assert!(t >= self.now, "time order");
        let t = t.max(self.now);
        self.now = t;
        if self.next_close_day.is_none() {
            self.next_close_day = Some(day_of(h.ts));
        }
        let idx = h.account;
        self.mark_dirty(idx);
        let acc = &mut self.accounts[idx as usize];
        let first = !acc.seen;
        acc.seen = true;
        let active = acc.life != NO_LIFE;
        match Class::from(h.class) {
            Class::Start => {
                if !active {
                    self.start_life(idx, t);
                }
            }
            Class::End => {
                if active {
                    self.resolve_all(idx, t, ResolveReason::Churned);
                    self.end_life(idx);
                }
            }
            Class::Activity(req) => {
                if !active && first && self.cfg.start_on_first_event {
                    self.start_life(idx, t);
                } else if !active {
                    self.stats.outside_lifecycle += 1;
                    return;
                }
                self.activity(idx, t, day_of(h.ts), req, h.user);
            }
        }
    }

    /// Puts a lifecycle into a free slot of the slab; returns the slot.
    pub(super) fn alloc_life(&mut self, life: Life) -> u32 {
        match self.free_lives.pop() {
            Some(s) => {
                self.lives[s as usize] = life;
                s
            }
            None => {
                self.lives.push(life);
                (self.lives.len() - 1) as u32
            }
        }
    }

    fn start_life(&mut self, idx: u32, start: Millis) {
        let slot = self.alloc_life(Life::new(start));
        self.accounts[idx as usize].life = slot;
        if let Some(d) = self.cfg.deadlines.first() {
            self.schedule(
                start + d.after_days as i64 * DAY,
                idx,
                TimerKind::Deadline(0),
            );
        }
    }

    fn end_life(&mut self, idx: u32) {
        let acc = &mut self.accounts[idx as usize];
        let slot = std::mem::replace(&mut acc.life, NO_LIFE);
        let life = &mut self.lives[slot as usize];
        if life.ring != NO_RING {
            self.rings.release(life.ring);
        }
        // Leave a small tombstone in the slot until it is reused.
        *life = Life::new(NEVER);
        self.free_lives.push(slot);
    }

    /// An activity event of an account in a lifecycle, at time `t` (day `day` is the
    /// event's own day), in the order the rules need: a firing `inactive` alert
    /// resolves against the previous last activity, then the window and activation
    /// counters take the event, then an activated account's `inactive` check is armed.
    fn activity(&mut self, idx: u32, t: Millis, day: i64, req: Option<u8>, user: u64) {
        self.resume_from_inactive(idx, t);
        let life = self.life_mut(idx);
        life.last_activity = life.last_activity.max(t);
        if self.cfg.drop.is_some() {
            self.count_in_window(idx, day, user);
        }
        self.progress_onboarding(idx, t, day, req, user);
        self.arm_inactive(idx);
    }

    /// The lifecycle of account `idx`, which must be in one.
    pub(super) fn life_mut(&mut self, idx: u32) -> &mut Life {
        let slot = self.accounts[idx as usize].life;
        &mut self.lives[slot as usize]
    }

    /// Notes that an account's state changed (for the changelog).
    pub(super) fn mark_dirty(&mut self, idx: u32) {
        let acc = &mut self.accounts[idx as usize];
        if !acc.dirty {
            acc.dirty = true;
            self.dirty.push(idx);
        }
    }

    /// Emits an alert transition of account `idx` and marks the account changed: its
    /// firing state is part of what the changelog keeps.
    pub(super) fn emit(&mut self, idx: u32, alert: Alert) {
        self.out.push(alert);
        self.mark_dirty(idx);
    }

    /// A due timer; moot timers (the account's state moved on) do nothing.
    fn fire_timer(&mut self, tm: Timer) {
        if self.accounts[tm.account as usize].life == NO_LIFE {
            return;
        }
        match tm.kind {
            TimerKind::Deadline(k) => self.deadline_due(tm, k),
            TimerKind::Inactive => self.inactive_due(tm),
        }
    }

    /// Resolves every firing alert of the account (end of lifecycle).
    fn resolve_all(&mut self, idx: u32, t: Millis, reason: ResolveReason) {
        self.resolve_not_activated(idx, t, reason);
        self.resolve_inactive(idx, t, reason);
        self.resolve_drop(idx, t, reason);
    }
}

#[cfg(test)]
mod size_probe {
    #[test]
    fn state_stays_small() {
        use super::*;
        assert!(std::mem::size_of::<Account>() <= 24);
        assert!(
            std::mem::size_of::<Life>() <= 112,
            "{}",
            std::mem::size_of::<Life>()
        );
        assert_eq!(std::mem::size_of::<Timer>(), 16);
        assert_eq!(std::mem::size_of::<Held>(), 32);
    }
}
