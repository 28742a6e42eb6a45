//! Per-account state: plain data, serializable for the changelog. The rules that change
//! it live in `shard.rs`. Sizes matter here (a shard may hold millions of accounts):
//! times use sentinels instead of `Option`, lifecycles live in a slab and windows in an
//! arena, so an account costs a few hundred bytes with a full window and ~24 bytes
//! when ended.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::ring::{RingId, NO_RING};
use crate::time::Millis;

/// Most distinct users tracked per account before activation (and per day for the
/// `active_users` metric). Beyond it the counts stop growing.
pub const USERS_CAP: usize = 4096;

/// "No time" for the millisecond fields below.
pub const NEVER: Millis = Millis::MIN;
/// "No day" for day fields.
pub const NO_DAY: i32 = i32::MIN;
/// "No lifecycle" for `Account::life`.
pub const NO_LIFE: u32 = u32::MAX;

/// One account. The index of the shard holds only slot numbers into a vector of these.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: Box<str>,
    /// Slot of the active lifecycle in the shard's slab, or `NO_LIFE`.
    pub life: u32,
    /// Any event was ever processed for this account (decides `start_on_first_event`).
    pub seen: bool,
    /// Bookkeeping of the shard: this account is in its list of windows to evaluate.
    pub(crate) in_window_list: bool,
    /// Bookkeeping of the shard: changed since the last checkpoint.
    pub(crate) dirty: bool,
}

impl Account {
    pub fn new(id: &str) -> Account {
        Account {
            id: id.into(),
            life: NO_LIFE,
            seen: false,
            in_window_list: false,
            dirty: false,
        }
    }
}

/// An active lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Life {
    /// Start time `S`.
    pub start: Millis,
    /// Time of the newest activity event, or `NEVER`.
    pub last_activity: Millis,
    /// Frozen expectation of the firing `activity_drop` alert (valid if `drop_day` is set).
    pub drop_expected: f64,
    /// Day `d` whose close fired the `activity_drop` alert (its episode), or `NO_DAY`.
    pub drop_day: i32,
    /// Newest day of the daily window.
    pub ring_head: i32,
    /// The daily window in the shard's arena, or `NO_RING` (none yet, or dropped after a
    /// silence longer than the window).
    #[serde(skip, default = "no_ring")]
    pub ring: RingId,
    /// Bit `k` set: the `not_activated` alert of deadline `k` is firing.
    pub not_activated_firing: u16,
    /// Index of the next onboarding deadline to check.
    pub next_deadline: u8,
    /// The `inactive` alert for `last_activity` is firing.
    pub inactive_firing: bool,
    /// Distinct users of the newest activity day (only for the `active_users` metric).
    pub day_users: Option<Box<DayUsers>>,
    pub phase: Phase,
}

fn no_ring() -> RingId {
    NO_RING
}

/// Before activation the account tracks its progress; afterwards only when it
/// activated and its pending `inactive` check. Sharing the space keeps activation from
/// leaving freed memory behind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Phase {
    Onboarding(Progress),
    Activated {
        at: Millis,
        /// Time of the queued `inactive` timer, or `NEVER`. Timers are lazy: a queued
        /// timer older than `last_activity + after` is moved when it comes due.
        inactive_timer: Millis,
    },
}

impl Life {
    pub fn new(start: Millis) -> Life {
        Life {
            start,
            last_activity: NEVER,
            drop_expected: 0.0,
            drop_day: NO_DAY,
            ring_head: NO_DAY,
            ring: NO_RING,
            not_activated_firing: 0,
            next_deadline: 0,
            inactive_firing: false,
            day_users: None,
            phase: Phase::Onboarding(Progress::default()),
        }
    }

    /// Activation time, once activated.
    pub fn activated_at(&self) -> Option<Millis> {
        match self.phase {
            Phase::Activated { at, .. } => Some(at),
            Phase::Onboarding(_) => None,
        }
    }
}

/// Counters toward activation. Days are counted as the activity day changes, which is
/// exact for events in time order (a late event on an earlier day adds no day).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub events: u64,
    /// Bit `i` set: required event `i` was seen.
    pub required_seen: u64,
    pub active_days: u32,
    /// The newest activity day counted, or 0 before any (see `active_days`).
    pub last_day: i32,
    /// Distinct user-id hashes, sorted.
    pub users: SmallVec<[u64; 2]>,
}

impl Progress {
    /// Counts activity on `day`.
    pub fn add_day(&mut self, day: i32) {
        if self.active_days == 0 || day > self.last_day {
            self.active_days += 1;
            self.last_day = day;
        }
    }
}

/// Inserts into a sorted set if absent and below the cap; returns whether it grew.
pub fn insert_sorted<A: smallvec::Array<Item = u64>>(v: &mut SmallVec<A>, x: u64) -> bool {
    match v.binary_search(&x) {
        Ok(_) => false,
        Err(_) if v.len() >= USERS_CAP => false,
        Err(i) => {
            v.insert(i, x);
            true
        }
    }
}

/// The distinct users seen on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayUsers {
    pub day: i32,
    pub users: SmallVec<[u64; 4]>,
}

/// Stable 64-bit hash of a user id (FNV-1a): stored in state, so it must not change
/// between versions or processes. Never returns 0 (0 means "no user").
pub fn user_hash(user: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_count_changes_of_day() {
        let mut p = Progress::default();
        for d in [-5, -5, -4, 10, 10, 3] {
            p.add_day(d);
        }
        assert_eq!(p.active_days, 3);
    }

    #[test]
    fn user_hash_is_stable() {
        // Values are persisted: these must never change.
        assert_eq!(user_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(user_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
