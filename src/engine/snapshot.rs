//! Serialized state for the changelog: one record per account (keyed by account id)
//! and one per shard (watermark and clocks). Encoded with postcard (varints: a typical
//! account with a full window is ~100 bytes), behind a version byte. Timers and the
//! window list are not stored: they follow from the account state on restore.

use serde::{Deserialize, Serialize};

use super::account::{Account, Life, Phase, NEVER, NO_DAY, NO_LIFE, USERS_CAP};
use super::ring::{ring_add, Ring, NO_RING};
use super::shard::{Held, PackedClass, Shard, TimerKind};
use crate::time::{Millis, DAY, MAX_TS, MIN_TS};

/// Format version of account and shard records.
pub const SNAPSHOT_VERSION: u8 = 1;

/// Why a stored record could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("empty state record")]
    Empty,
    #[error("state record has version {0}, this build reads version {SNAPSHOT_VERSION}")]
    Version(u8),
    #[error("state record is corrupt: {0}")]
    Decode(#[from] postcard::Error),
    /// Decoded, but holds a value the engine never writes (a bit flipped in storage):
    /// refused rather than restored into wrong state or an overflow later.
    #[error("state record is corrupt: {0}")]
    Invalid(String),
}

/// Times the engine can hold: event times, plus timers up to a century past the last.
const MIN_TIME: Millis = MIN_TS;
const MAX_TIME: Millis = MAX_TS + 36_525 * DAY;

fn check_time(field: &str, t: Millis, never_ok: bool) -> Result<(), SnapshotError> {
    if (never_ok && t == NEVER) || (MIN_TIME..=MAX_TIME).contains(&t) {
        Ok(())
    } else {
        Err(SnapshotError::Invalid(format!(
            "{field} {t} is out of range"
        )))
    }
}

fn check_day(field: &str, d: i32, none_ok: bool) -> Result<(), SnapshotError> {
    let range = MIN_TIME.div_euclid(DAY)..=MAX_TIME.div_euclid(DAY);
    if (none_ok && d == NO_DAY) || range.contains(&(d as i64)) {
        Ok(())
    } else {
        Err(SnapshotError::Invalid(format!(
            "{field} {d} is out of range"
        )))
    }
}

/// Checks a decoded lifecycle against what the engine can have written: times and
/// days within the supported years, counters that cannot overflow, sets within their
/// caps. A record passing it may still differ from what was written (the format has
/// no checksum), but it cannot make the engine panic or misbehave arithmetically.
fn check_life(life: &Life, window: &Option<(i32, Vec<u32>)>) -> Result<(), SnapshotError> {
    check_time("start", life.start, false)?;
    check_time("last_activity", life.last_activity, true)?;
    check_day("drop_day", life.drop_day, true)?;
    check_day("ring_head", life.ring_head, true)?;
    if !life.drop_expected.is_finite() || life.drop_expected < 0.0 {
        return Err(SnapshotError::Invalid(format!(
            "drop_expected {} is not a finite number >= 0",
            life.drop_expected
        )));
    }
    if let Some(du) = &life.day_users {
        check_day("day_users.day", du.day, false)?;
        if du.users.len() > USERS_CAP {
            return Err(SnapshotError::Invalid("day_users above its cap".into()));
        }
    }
    match &life.phase {
        Phase::Onboarding(p) => {
            check_day("last_day", p.last_day, false).or_else(|e| match p.last_day {
                0 => Ok(()),
                _ => Err(e),
            })?;
            let max_days = (MAX_TIME - MIN_TIME) / DAY + 1;
            if p.active_days as i64 > max_days || p.events >= 1 << 62 {
                return Err(SnapshotError::Invalid(format!(
                    "onboarding counters out of range ({} days, {} events)",
                    p.active_days, p.events
                )));
            }
            if p.users.len() > USERS_CAP {
                return Err(SnapshotError::Invalid("users above its cap".into()));
            }
        }
        Phase::Activated { at, inactive_timer } => {
            check_time("activated at", *at, false)?;
            check_time("inactive_timer", *inactive_timer, true)?;
        }
    }
    if let Some((head, _)) = window {
        check_day("window head", *head, false)?;
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct AccountRecord {
    seen: bool,
    life: Option<LifeRecord>,
}

#[derive(Serialize, Deserialize)]
struct LifeRecord {
    life: Life,
    /// Daily window as (newest day, counters from the oldest day to the newest).
    window: Option<(i32, Vec<u32>)>,
}

/// An event waiting for the watermark, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEvent {
    pub ts: Millis,
    pub account_id: String,
    class: u8,
    user: u64,
}

/// A shard's own state besides its accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    pub watermark: Millis,
    pub newest: Millis,
    pub now: Millis,
    pub next_close_day: Option<i64>,
}

impl ShardMeta {
    /// Refuses clocks the engine cannot have written (see `check_life`): each is unset
    /// (`Millis::MIN`) or within the supported years.
    pub fn check(&self) -> Result<(), SnapshotError> {
        for (field, t) in [
            ("watermark", self.watermark),
            ("newest", self.newest),
            ("now", self.now),
        ] {
            if t != Millis::MIN && !(MIN_TIME - 36_525 * DAY..=MAX_TIME).contains(&t) {
                return Err(SnapshotError::Invalid(format!(
                    "{field} {t} is out of range"
                )));
            }
        }
        if let Some(d) = self.next_close_day {
            if !(MIN_TIME.div_euclid(DAY)..=MAX_TIME.div_euclid(DAY)).contains(&d) {
                return Err(SnapshotError::Invalid(format!(
                    "next_close_day {d} is out of range"
                )));
            }
        }
        Ok(())
    }
}

/// Encodes a record with the version byte.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![SNAPSHOT_VERSION];
    out.extend(postcard::to_stdvec(v).expect("state serializes"));
    out
}

/// Decodes a record written by `encode`.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, SnapshotError> {
    match bytes.split_first() {
        None => Err(SnapshotError::Empty),
        Some((&SNAPSHOT_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&v, _)) => Err(SnapshotError::Version(v)),
    }
}

impl Shard {
    /// Takes the ids of accounts changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<u32> {
        let dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            self.accounts[i as usize].dirty = false;
        }
        dirty
    }

    /// The id of an account slot.
    pub fn account_id(&self, slot: u32) -> &str {
        &self.accounts[slot as usize].id
    }

    /// Serializes one account (by slot).
    pub fn encode_account(&self, slot: u32) -> Vec<u8> {
        let acc = &self.accounts[slot as usize];
        let life = (acc.life != NO_LIFE).then(|| {
            let life = &self.lives[acc.life as usize];
            let window = (life.ring != NO_RING).then(|| {
                let ring = Ring {
                    head: life.ring_head as i64,
                    slots: self.rings.slots(life.ring),
                };
                let len = ring.slots.len() as i64;
                let days = (ring.head - len + 1..=ring.head)
                    .map(|d| ring.get(d))
                    .collect();
                (life.ring_head, days)
            });
            LifeRecord {
                life: life.clone(),
                window,
            }
        });
        encode(&AccountRecord {
            seen: acc.seen,
            life,
        })
    }

    /// Restores one account from its record, replacing whatever the shard had for it,
    /// and re-creates its timers. Call before feeding events for the account.
    pub fn restore_account(&mut self, id: &str, bytes: &[u8]) -> Result<(), SnapshotError> {
        let idx = self.restore_state(id, bytes)?;
        self.schedule_from_state(idx);
        Ok(())
    }

    /// Like `restore_account` without timers, for restoring many records in a row (an
    /// account may appear several times); call `rebuild_timers` once at the end.
    pub fn restore_account_state(&mut self, id: &str, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.restore_state(id, bytes).map(|_| ())
    }

    /// Drops an account's lifecycle (a tombstone in the changelog).
    pub fn forget_account(&mut self, id: &str) {
        let idx = self.intern(id);
        self.release_life(idx);
        self.accounts[idx as usize].seen = false;
    }

    /// Queues the timers of every account (after `restore_account_state` calls).
    pub fn rebuild_timers(&mut self) {
        self.timers.clear();
        for idx in 0..self.accounts.len() as u32 {
            self.schedule_from_state(idx);
        }
    }

    fn release_life(&mut self, idx: u32) {
        if self.accounts[idx as usize].life != NO_LIFE {
            let slot = std::mem::replace(&mut self.accounts[idx as usize].life, NO_LIFE);
            if self.lives[slot as usize].ring != NO_RING {
                self.rings.release(self.lives[slot as usize].ring);
                self.lives[slot as usize].ring = NO_RING;
            }
            self.free_lives.push(slot);
        }
    }

    /// Queues the pending checks of one account, as its state implies.
    fn schedule_from_state(&mut self, idx: u32) {
        let slot = self.accounts[idx as usize].life;
        if slot == NO_LIFE {
            return;
        }
        let life = &self.lives[slot as usize];
        let deadline = match &life.phase {
            Phase::Onboarding(_) => self
                .cfg
                .deadlines
                .get(life.next_deadline as usize)
                .map(|d| (life.start + d.after_days as i64 * DAY, life.next_deadline)),
            Phase::Activated { .. } => None,
        };
        let inactive = match life.phase {
            Phase::Activated { inactive_timer, .. }
                if inactive_timer != NEVER && self.cfg.inactive.is_some() =>
            {
                Some(inactive_timer)
            }
            _ => None,
        };
        if let Some((at, k)) = deadline {
            self.schedule(at, idx, TimerKind::Deadline(k));
        }
        if let Some(at) = inactive {
            self.schedule(at, idx, TimerKind::Inactive);
        }
    }

    /// Restores the state of one account; returns its slot.
    fn restore_state(&mut self, id: &str, bytes: &[u8]) -> Result<u32, SnapshotError> {
        let rec: AccountRecord = decode(bytes)?;
        if let Some(l) = &rec.life {
            check_life(&l.life, &l.window)?;
        }
        let idx = self.intern(id);
        self.release_life(idx);
        self.accounts[idx as usize].seen = rec.seen;
        let Some(LifeRecord { mut life, window }) = rec.life else {
            return Ok(idx);
        };
        life.ring = NO_RING;
        if let (Some((head, days)), Some(_)) = (window, self.cfg.drop.as_ref()) {
            let ring = self.rings.alloc();
            let mut h = head as i64 - days.len() as i64 + 1;
            let first = h;
            let slots = self.rings.slots_mut(ring);
            for (i, n) in days.into_iter().enumerate() {
                ring_add(slots, &mut h, first + i as i64, n);
            }
            let _ = ring_add(slots, &mut h, head as i64, 0);
            life.ring = ring;
            life.ring_head = h as i32;
        }
        let has_ring = life.ring != NO_RING;
        let slot = self.alloc_life(life);
        let acc: &mut Account = &mut self.accounts[idx as usize];
        acc.life = slot;
        if has_ring && !acc.in_window_list {
            acc.in_window_list = true;
            self.window_list.push(idx);
        }
        Ok(idx)
    }

    /// The shard's own state.
    pub fn meta(&self) -> ShardMeta {
        ShardMeta {
            watermark: self.watermark,
            newest: self.newest,
            now: self.now,
            next_close_day: self.next_close_day,
        }
    }

    pub fn encode_meta(&self) -> Vec<u8> {
        encode(&self.meta())
    }

    /// Restores the shard's clocks (before any event is fed).
    pub fn restore_meta(&mut self, bytes: &[u8]) -> Result<ShardMeta, SnapshotError> {
        let m: ShardMeta = decode(bytes)?;
        m.check()?;
        self.set_meta(&m);
        Ok(m)
    }

    /// Sets the shard's clocks from a decoded record.
    pub fn set_meta(&mut self, m: &ShardMeta) {
        self.watermark = m.watermark;
        self.newest = m.newest;
        self.now = m.now;
        self.next_close_day = m.next_close_day;
    }

    /// Events waiting for the watermark, oldest arrival first.
    pub fn pending_events(&self) -> Vec<PendingEvent> {
        let mut held: Vec<&Held> = self.pending.iter().collect();
        held.sort_by_key(|h| h.seq);
        held.into_iter()
            .map(|h| PendingEvent {
                ts: h.ts,
                account_id: self.accounts[h.account as usize].id.to_string(),
                class: h.class.0,
                user: h.user,
            })
            .collect()
    }

    /// Puts stored pending events back (after `restore_meta`), in their arrival order.
    pub fn restore_pending(&mut self, events: &[PendingEvent]) {
        for e in events {
            let account = self.intern(&e.account_id);
            let held = Held {
                ts: e.ts,
                seq: self.seq,
                account,
                class: PackedClass(e.class),
                user: e.user,
            };
            self.seq += 1;
            self.pending.push(held);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::engine::account::Progress;
    use crate::engine::EngineConfig;

    fn shard() -> Shard {
        Shard::new(Arc::new(EngineConfig::new(&Config::default())))
    }

    fn record(life: Life) -> Vec<u8> {
        encode(&AccountRecord {
            seen: true,
            life: Some(LifeRecord { life, window: None }),
        })
    }

    /// Found by tests/fuzz.rs: records that decode but hold values the engine never
    /// writes (a day count at u32::MAX, a close day near i64::MAX) used to overflow
    /// later; they are refused at restore, and the shard keeps what it had.
    #[test]
    fn out_of_range_state_is_refused() {
        let start = 1_767_225_600_000;
        let mut s = shard();
        s.restore_account("a", &record(Life::new(start))).unwrap();
        let before = s.life_of("a").cloned();
        let mut bad = Life::new(start);
        bad.phase = Phase::Onboarding(Progress {
            active_days: u32::MAX,
            ..Progress::default()
        });
        let e = s.restore_account("a", &record(bad)).unwrap_err();
        assert!(e.to_string().contains("onboarding counters"), "{e}");
        assert_eq!(s.life_of("a").cloned(), before);
        let mut bad = Life::new(start);
        bad.phase = Phase::Activated {
            at: start,
            inactive_timer: i64::MAX - 1,
        };
        let e = s.restore_account("a", &record(bad)).unwrap_err();
        assert!(e.to_string().contains("inactive_timer"), "{e}");
        let mut bad = Life::new(start);
        bad.drop_expected = f64::NAN;
        assert!(s.restore_account("a", &record(bad)).is_err());
        let meta = ShardMeta {
            watermark: start,
            newest: start,
            now: start,
            next_close_day: Some(i64::MAX / 2),
        };
        let e = s.restore_meta(&encode(&meta)).unwrap_err();
        assert!(e.to_string().contains("next_close_day"), "{e}");
        let unset = shard().meta();
        shard().restore_meta(&encode(&unset)).unwrap();
    }
}
