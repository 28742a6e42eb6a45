//! One shard of the engine: the accounts of one partition, their reorder buffer,
//! timers and daily windows. Pure: time comes only from events and `advance_to`.
//!
//! Processing model (see the README): an event is held until the watermark
//! `W = newest ts - allowed_lateness` passes it; then held events, due timers and day
//! closes run strictly in time order, events before checks at equal times. While the
//! stream is live, only items with time `< W` run (an event with `ts == W` may still
//! arrive); at the end of a replay, `finish` runs everything up to `until` inclusive.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

use super::account::{
    insert_sorted, user_hash, Account, DayUsers, Life, Phase, Progress, NEVER, NO_DAY, NO_LIFE,
};
use super::alert::{Alert, AlertKind, Evidence, ResolveReason, Status};
use super::pending::Pending;
use super::ring::{ring_add, Ring, RingArena, NO_RING};
use super::stats;
use crate::config::{ActivityDropConfig, Config, Deadline, DropMetric, InactiveConfig};
use crate::source::event::{RawEvent, RejectReason};
use crate::time::{day_of, format_day, Millis, DAY};

/// What an event name means to the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Start,
    End,
    /// An activity event; `Some(i)` if it is the i-th required event.
    Activity(Option<u8>),
}

/// The engine's view of the config, prepared for fast lookups.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub allowed_lateness: Millis,
    pub start_on_first_event: bool,
    names: hashbrown::HashMap<Box<str>, Class>,
    pub required_events: Vec<String>,
    required_mask: u64,
    pub min_active_days: usize,
    pub min_active_users: usize,
    pub min_events: u64,
    /// Empty when the rule is disabled.
    pub deadlines: Vec<Deadline>,
    pub inactive: Option<InactiveConfig>,
    pub drop: Option<ActivityDropConfig>,
    /// Most accounts a shard tracks (`engine.max_accounts_per_partition`).
    pub max_accounts: usize,
    /// Which new accounts may be tracked (`engine.known_accounts_only`); None: all.
    pub admit: Option<super::limits::Admit>,
}

impl EngineConfig {
    pub fn new(cfg: &Config) -> EngineConfig {
        let mut names = hashbrown::HashMap::new();
        for n in &cfg.lifecycle.start_events {
            names.insert(n.as_str().into(), Class::Start);
        }
        for n in &cfg.lifecycle.end_events {
            names.insert(n.as_str().into(), Class::End);
        }
        let req = &cfg.activation.required_events;
        for (i, n) in req.iter().enumerate() {
            names.insert(n.as_str().into(), Class::Activity(Some(i as u8)));
        }
        let rules = &cfg.rules;
        EngineConfig {
            allowed_lateness: cfg.time.allowed_lateness.0,
            start_on_first_event: cfg.lifecycle.start_on_first_event,
            names,
            required_events: req.clone(),
            required_mask: if req.len() >= 64 {
                u64::MAX
            } else {
                (1u64 << req.len()) - 1
            },
            min_active_days: cfg.activation.min_active_days as usize,
            min_active_users: cfg.activation.min_active_users as usize,
            min_events: cfg.activation.min_events,
            deadlines: if rules.not_activated.enabled {
                rules.not_activated.deadlines.clone()
            } else {
                Vec::new()
            },
            inactive: rules.inactive.enabled.then(|| rules.inactive.clone()),
            drop: rules
                .activity_drop
                .enabled
                .then(|| rules.activity_drop.clone()),
            max_accounts: cfg.engine.max_accounts_per_partition,
            admit: None,
        }
    }

    /// Tracks only the accounts for which `known` holds.
    pub fn with_admit(mut self, known: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.admit = Some(super::limits::Admit(Arc::new(known)));
        self
    }

    fn classify(&self, name: &str) -> Class {
        self.names
            .get(name)
            .copied()
            .unwrap_or(Class::Activity(None))
    }

    fn users_metric(&self) -> bool {
        matches!(&self.drop, Some(d) if d.metric == DropMetric::ActiveUsers)
    }
}

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

/// `Class` packed into one byte: 0 start, 1 end, 2 activity, 3+i required event i.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct PackedClass(pub(super) u8);

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
        self.seq = self.seq.max(seq + 1);
        if ev.ts < self.watermark {
            // Late: everything before W has run, so it applies at W (its own day still
            // gets its counts, if the window holds that day).
            self.stats.late_events += 1;
            self.apply(held, self.watermark);
        } else {
            self.pending.push(held);
        }
        if ev.ts > self.newest {
            self.newest = ev.ts;
            let w = ev.ts.saturating_sub(self.cfg.allowed_lateness);
            if w > self.watermark {
                self.watermark = w;
                self.run(w);
            }
        }
        Ok(())
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

    fn activity(&mut self, idx: u32, t: Millis, day: i64, req: Option<u8>, user: u64) {
        let cfg = &*self.cfg;
        let acc = &mut self.accounts[idx as usize];
        let life = &mut self.lives[acc.life as usize];
        // Resume from a firing `inactive` alert.
        if life.inactive_firing {
            life.inactive_firing = false;
            let last = life.last_activity;
            let inactive = cfg
                .inactive
                .as_ref()
                .expect("inactive fired, so it is enabled");
            self.out.push(Alert {
                account_id: acc.id.to_string(),
                kind: AlertKind::Inactive,
                status: Status::Resolved,
                severity: inactive.severity,
                episode: format_day(day_of(last)),
                event_time: t,
                evidence: Evidence::Resolved {
                    reason: ResolveReason::ActivityResumed,
                    observed: None,
                    expected: None,
                    since: Some(last),
                    users_metric: false,
                },
            });
        }
        life.last_activity = life.last_activity.max(t);
        let day32 = day as i32;
        // Daily window for the drop test.
        if cfg.drop.is_some() {
            let inc = if cfg.users_metric() {
                if user == 0 {
                    0
                } else {
                    match &mut life.day_users {
                        Some(du) if du.day == day32 => insert_sorted(&mut du.users, user) as u32,
                        Some(du) if du.day > day32 => 0, // late: that day's users are gone
                        du => {
                            let mut users = smallvec::SmallVec::new();
                            users.push(user);
                            *du = Some(Box::new(DayUsers { day: day32, users }));
                            1
                        }
                    }
                }
            } else {
                1
            };
            if life.ring == NO_RING {
                life.ring = self.rings.alloc();
                life.ring_head = day32;
            }
            let mut head = life.ring_head as i64;
            ring_add(self.rings.slots_mut(life.ring), &mut head, day, inc);
            life.ring_head = head as i32;
            if !acc.in_window_list {
                acc.in_window_list = true;
                self.window_list.push(idx);
            }
        }
        // Activation.
        if let Phase::Onboarding(p) = &mut life.phase {
            p.events += 1;
            p.add_day(day32);
            if user != 0 {
                insert_sorted(&mut p.users, user);
            }
            if let Some(i) = req {
                p.required_seen |= 1 << i;
            }
            if activation_holds(p, cfg) {
                life.phase = Phase::Activated {
                    at: t,
                    inactive_timer: NEVER,
                };
                self.resolve_not_activated(idx, t, ResolveReason::Activated);
            }
        }
        let life = &mut self.lives[self.accounts[idx as usize].life as usize];
        if let (Phase::Activated { inactive_timer, .. }, Some(inactive)) =
            (&mut life.phase, &self.cfg.inactive)
        {
            if *inactive_timer == NEVER {
                let at = life.last_activity + inactive.after_days as i64 * DAY;
                *inactive_timer = at;
                self.schedule(at, idx, TimerKind::Inactive);
            }
        }
    }

    /// Notes that an account's state changed (for the changelog).
    pub(super) fn mark_dirty(&mut self, idx: u32) {
        let acc = &mut self.accounts[idx as usize];
        if !acc.dirty {
            acc.dirty = true;
            self.dirty.push(idx);
        }
    }

    fn fire_timer(&mut self, tm: Timer) {
        let alerts_before = self.out.len();
        let timers_before = self.timers.len();
        self.fire_timer_inner(tm);
        if self.out.len() != alerts_before || self.timers.len() != timers_before {
            self.mark_dirty(tm.account);
        }
    }

    fn fire_timer_inner(&mut self, tm: Timer) {
        let cfg = &*self.cfg;
        let acc = &self.accounts[tm.account as usize];
        if acc.life == NO_LIFE {
            return;
        }
        let life = &mut self.lives[acc.life as usize];
        match tm.kind {
            TimerKind::Deadline(k) => {
                let Phase::Onboarding(p) = &life.phase else {
                    return;
                };
                let d = &cfg.deadlines[k as usize];
                if life.next_deadline != k || life.start + d.after_days as i64 * DAY != tm.at {
                    return;
                }
                let missing = cfg
                    .required_events
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| p.required_seen & (1 << i) == 0)
                    .map(|(_, n)| n.clone())
                    .collect();
                let evidence = Evidence::NotActivated {
                    after_days: d.after_days,
                    start: life.start,
                    active_days: p.active_days as u64,
                    active_users: p.users.len() as u64,
                    events: p.events,
                    missing_events: missing,
                };
                life.not_activated_firing |= 1 << k;
                life.next_deadline = k + 1;
                self.out.push(Alert {
                    account_id: acc.id.to_string(),
                    kind: AlertKind::NotActivated,
                    status: Status::Firing,
                    severity: d.severity,
                    episode: format!("{}+{}d", format_day(day_of(life.start)), d.after_days),
                    event_time: tm.at,
                    evidence,
                });
                if let Some(next) = cfg.deadlines.get(k as usize + 1) {
                    let at = life.start + next.after_days as i64 * DAY;
                    self.timers.push(Reverse(Timer {
                        at,
                        account: tm.account,
                        kind: TimerKind::Deadline(k + 1),
                    }));
                }
            }
            TimerKind::Inactive => {
                let Phase::Activated { inactive_timer, .. } = &mut life.phase else {
                    return;
                };
                if *inactive_timer != tm.at {
                    return;
                }
                let inactive = cfg.inactive.as_ref().expect("timer implies enabled");
                let last = life.last_activity;
                let due = last + inactive.after_days as i64 * DAY;
                if due > tm.at {
                    *inactive_timer = due;
                    self.timers.push(Reverse(Timer {
                        at: due,
                        account: tm.account,
                        kind: TimerKind::Inactive,
                    }));
                    return;
                }
                *inactive_timer = NEVER;
                life.inactive_firing = true;
                self.out.push(Alert {
                    account_id: acc.id.to_string(),
                    kind: AlertKind::Inactive,
                    status: Status::Firing,
                    severity: inactive.severity,
                    episode: format_day(day_of(last)),
                    event_time: tm.at,
                    evidence: Evidence::Inactive {
                        last_activity: last,
                        idle_days: inactive.after_days,
                    },
                });
            }
        }
    }

    /// Day `d` closes at `(d+1) * DAY`: evaluates `activity_drop` for every account
    /// holding a window, and releases the windows of accounts silent for a whole window.
    fn close_day(&mut self, d: i64) {
        let Some(drop) = self.cfg.drop.as_ref() else {
            return;
        };
        let close_at = (d + 1) * DAY;
        let span = (drop.recent_days + drop.baseline_days) as i64;
        let users_metric = drop.metric == DropMetric::ActiveUsers;
        let mut i = 0;
        while i < self.window_list.len() {
            let idx = self.window_list[i];
            let acc = &mut self.accounts[idx as usize];
            let keep = acc.life != NO_LIFE && {
                let life = &mut self.lives[acc.life as usize];
                // Silent for the whole window: nothing can change until new activity.
                let live = life.ring != NO_RING && life.ring_head as i64 > d - span;
                if !live && life.ring != NO_RING {
                    self.rings.release(life.ring);
                    life.ring = NO_RING;
                    life.day_users = None;
                }
                live
            };
            if !keep {
                if !acc.dirty {
                    acc.dirty = true;
                    self.dirty.push(idx);
                }
                acc.in_window_list = false;
                self.window_list.swap_remove(i);
                continue;
            }
            i += 1;
            let life = &mut self.lives[acc.life as usize];
            let activated = life.activated_at().is_some_and(|a| a < close_at);
            // The spec's `d - recent - baseline + 1 > day(S)`, negated.
            if !activated || d - span < day_of(life.start) {
                continue;
            }
            let ring = Ring {
                head: life.ring_head as i64,
                slots: self.rings.slots(life.ring),
            };
            let w = stats::window(&ring, d, drop.recent_days, drop.baseline_days);
            if life.drop_day != NO_DAY {
                if w.observed as f64 >= drop.recovery * life.drop_expected {
                    let episode = format_day(life.drop_day as i64);
                    life.drop_day = NO_DAY;
                    if !acc.dirty {
                        acc.dirty = true;
                        self.dirty.push(idx);
                    }
                    self.out.push(Alert {
                        account_id: acc.id.to_string(),
                        kind: AlertKind::ActivityDrop,
                        status: Status::Resolved,
                        severity: drop.severity,
                        episode,
                        event_time: close_at,
                        evidence: Evidence::Resolved {
                            reason: ResolveReason::Recovered,
                            observed: Some(w.observed),
                            expected: Some(life.drop_expected),
                            since: None,
                            users_metric,
                        },
                    });
                }
                continue;
            }
            if w.expected < drop.min_expected
                || w.observed as f64 > (1.0 - drop.min_drop) * w.expected
            {
                continue;
            }
            let v =
                stats::baseline_variance(&ring, d, drop.recent_days, drop.baseline_days, w.mean);
            let (model, p) = stats::p_value(w.observed, w.mean, v, drop.recent_days);
            if p > drop.alpha {
                continue;
            }
            life.drop_day = d as i32;
            life.drop_expected = w.expected;
            if !acc.dirty {
                acc.dirty = true;
                self.dirty.push(idx);
            }
            self.out.push(Alert {
                account_id: acc.id.to_string(),
                kind: AlertKind::ActivityDrop,
                status: Status::Firing,
                severity: drop.severity,
                episode: format_day(d),
                event_time: close_at,
                evidence: Evidence::ActivityDrop {
                    observed: w.observed,
                    expected: w.expected,
                    drop_pct: 1.0 - w.observed as f64 / w.expected,
                    p_value: p,
                    model,
                    recent_days: drop.recent_days,
                    baseline_days: drop.baseline_days,
                    users_metric,
                },
            });
        }
    }

    fn resolve_not_activated(&mut self, idx: u32, t: Millis, reason: ResolveReason) {
        let acc = &self.accounts[idx as usize];
        let life = &mut self.lives[acc.life as usize];
        let firing = std::mem::take(&mut life.not_activated_firing);
        for (k, d) in self.cfg.deadlines.iter().enumerate() {
            if firing & (1 << k) != 0 {
                self.out.push(Alert {
                    account_id: acc.id.to_string(),
                    kind: AlertKind::NotActivated,
                    status: Status::Resolved,
                    severity: d.severity,
                    episode: format!("{}+{}d", format_day(day_of(life.start)), d.after_days),
                    event_time: t,
                    evidence: Evidence::Resolved {
                        reason,
                        observed: None,
                        expected: None,
                        since: Some(life.start),
                        users_metric: false,
                    },
                });
            }
        }
    }

    /// Resolves every firing alert of the account (end of lifecycle).
    fn resolve_all(&mut self, idx: u32, t: Millis, reason: ResolveReason) {
        self.resolve_not_activated(idx, t, reason);
        let cfg = &*self.cfg;
        let acc = &self.accounts[idx as usize];
        let life = &mut self.lives[acc.life as usize];
        let resolved = |kind, severity, episode| Alert {
            account_id: acc.id.to_string(),
            kind,
            status: Status::Resolved,
            severity,
            episode,
            event_time: t,
            evidence: Evidence::Resolved {
                reason,
                observed: None,
                expected: None,
                since: None,
                users_metric: false,
            },
        };
        if std::mem::take(&mut life.inactive_firing) {
            let sev = cfg.inactive.as_ref().expect("enabled").severity;
            self.out.push(resolved(
                AlertKind::Inactive,
                sev,
                format_day(day_of(life.last_activity)),
            ));
        }
        if life.drop_day != NO_DAY {
            let sev = cfg.drop.as_ref().expect("enabled").severity;
            self.out.push(resolved(
                AlertKind::ActivityDrop,
                sev,
                format_day(life.drop_day as i64),
            ));
            life.drop_day = NO_DAY;
        }
    }
}

fn activation_holds(p: &Progress, cfg: &EngineConfig) -> bool {
    p.required_seen & cfg.required_mask == cfg.required_mask
        && p.active_days as usize >= cfg.min_active_days
        && p.users.len() >= cfg.min_active_users
        && p.events >= cfg.min_events
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
