//! Per-account state. Everything here is plain data (serializable for the changelog);
//! the rules that change it live in `shard.rs`.

use serde::{Deserialize, Serialize};

use super::ring::DailyRing;
use crate::time::Millis;

/// Largest number of distinct days or users tracked before activation, per account.
/// Beyond it the evidence counts stop growing (the activation thresholds are far lower).
pub const PROGRESS_CAP: usize = 4096;

/// One account. The id lives here; the index only holds slot numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: Box<str>,
    /// Any event was ever processed for this account (decides `start_on_first_event`).
    pub seen: bool,
    /// Lifecycle generation: bumped on every start and end, so that timers of a past
    /// lifecycle are recognised as stale.
    pub generation: u32,
    /// The active lifecycle, if any. Boxed so that ended or never-started accounts
    /// stay a small record.
    pub life: Option<Box<Life>>,
    /// Bookkeeping of the shard: this account is in its list of windows to evaluate.
    #[serde(skip)]
    pub(crate) in_window_list: bool,
}

impl Account {
    pub fn new(id: &str) -> Account {
        Account {
            id: id.into(),
            seen: false,
            generation: 0,
            life: None,
            in_window_list: false,
        }
    }
}

/// An active lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Life {
    /// Start time `S`.
    pub start: Millis,
    /// Activation time, once activated (permanent for the lifecycle).
    pub activated_at: Option<Millis>,
    /// Time of the newest activity event.
    pub last_activity: Option<Millis>,
    /// Daily metric for `activity_drop`; dropped while the account is silent.
    pub ring: Option<DailyRing>,
    /// Progress toward activation; dropped on activation.
    pub progress: Option<Box<Progress>>,
    /// Distinct users of the newest activity day (only for the `active_users` metric).
    pub day_users: Option<Box<DayUsers>>,
    /// Index of the next onboarding deadline to check.
    pub next_deadline: u8,
    /// Bit `k` set: the `not_activated` alert of deadline `k` is firing.
    pub not_activated_firing: u32,
    /// The `inactive` alert for `last_activity` is firing.
    pub inactive_firing: bool,
    /// Time of the pending `inactive` timer, if one is queued (timers are lazy: a queued
    /// timer older than `last_activity + after` is moved when it comes due).
    pub inactive_timer: Option<Millis>,
    /// The firing `activity_drop` alert.
    pub drop_firing: Option<DropFiring>,
}

impl Life {
    pub fn new(start: Millis, track_progress: bool) -> Life {
        Life {
            start,
            activated_at: None,
            last_activity: None,
            ring: None,
            progress: track_progress.then(Box::default),
            day_users: None,
            next_deadline: 0,
            not_activated_firing: 0,
            inactive_firing: false,
            inactive_timer: None,
            drop_firing: None,
        }
    }
}

/// Counters toward activation, exact up to `PROGRESS_CAP` distinct days and users.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub events: u64,
    /// Bit `i` set: required event `i` was seen.
    pub required_seen: u64,
    /// Distinct activity days, sorted.
    pub days: Vec<i64>,
    /// Distinct user-id hashes, sorted.
    pub users: Vec<u64>,
}

/// Inserts into a sorted vector if absent and below the cap; returns whether it grew.
pub fn insert_sorted<T: Ord + Copy>(v: &mut Vec<T>, x: T) -> bool {
    match v.binary_search(&x) {
        Ok(_) => false,
        Err(_) if v.len() >= PROGRESS_CAP => false,
        Err(i) => {
            v.insert(i, x);
            true
        }
    }
}

/// The distinct users seen on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayUsers {
    pub day: i64,
    pub users: Vec<u64>,
}

/// A firing `activity_drop` alert.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DropFiring {
    /// Day `d` whose close fired it (the episode).
    pub day: i64,
    /// Expected recent sum, frozen when it fired.
    pub expected: f64,
}

/// Stable 64-bit hash of a user id (FNV-1a): stored in state, so it must not change
/// between versions or processes. Never returns 0.
pub fn user_hash(user: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}
