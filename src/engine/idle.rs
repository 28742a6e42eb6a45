//! The watermark of a quiet partition in live mode. Events move a shard's watermark
//! (`newest - allowed_lateness`); when a partition's input is read to its end and no
//! message arrived for `idle_advance_after`, the watermark follows the wall clock
//! instead (`now - allowed_lateness`), so that absence alerts (`inactive`,
//! `not_activated`) still come due. Never further than `max_idle_advance` past the
//! newest event time: a partition whose clock would need more is *stalled* (its
//! producers stopped, or the data is historical), and waits for newer events.
//!
//! Pure: the driver reads the clock and tells whether the input is caught up.

use crate::config::Config;
use crate::engine::Shard;
use crate::time::Millis;

/// The settings of the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdlePolicy {
    /// Quiet this long (wall clock) before the clock takes over (`kafka.idle_advance_after`).
    pub idle_after: Millis,
    /// The watermark's distance behind the clock (`time.allowed_lateness`).
    pub allowed_lateness: Millis,
    /// Furthest the watermark goes past the newest event time (`time.max_idle_advance`).
    pub max_idle_advance: Millis,
}

impl IdlePolicy {
    pub fn new(cfg: &Config) -> IdlePolicy {
        IdlePolicy {
            idle_after: cfg.kafka.idle_advance_after.0,
            allowed_lateness: cfg.time.allowed_lateness.0,
            max_idle_advance: cfg.time.max_idle_advance.0,
        }
    }
}

/// One partition's quiet tracking. Messages are only flagged (no clock reading per
/// message); the periodic checks read the clock.
#[derive(Debug, Clone)]
pub struct IdleWatch {
    policy: IdlePolicy,
    /// A message arrived since the last check.
    heard: bool,
    /// Wall-clock time since which no message arrived, as seen by the checks.
    quiet_since: Millis,
    /// Reported stalled, until the next message.
    stalled: bool,
}

/// What a check of a quiet, caught-up partition decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleAdvance {
    /// The clock is more than `max_idle_advance` past the newest event time.
    pub stalled: bool,
    /// Stalled, and was not at the previous check (report it once).
    pub newly_stalled: bool,
    /// The watermark moved: due alerts may be ready, and the partition's clocks
    /// changed.
    pub advanced: bool,
}

impl IdleWatch {
    /// A partition assigned (or restored) at wall-clock time `now`.
    pub fn new(policy: IdlePolicy, now: Millis) -> IdleWatch {
        IdleWatch {
            policy,
            heard: false,
            quiet_since: now,
            stalled: false,
        }
    }

    /// A message of the partition was read. True if the partition had been reported
    /// stalled (it no longer is).
    pub fn on_message(&mut self) -> bool {
        self.heard = true;
        std::mem::take(&mut self.stalled)
    }

    /// Reported stalled (since the last message).
    pub fn stalled(&self) -> bool {
        self.stalled
    }

    /// A periodic check at wall-clock time `now`: the partition has had no message
    /// for `idle_after` and has events to advance from. Only then does the driver
    /// need to learn whether it is caught up (a broker round trip).
    pub fn quiet(&mut self, shard: &Shard, now: Millis) -> bool {
        if std::mem::take(&mut self.heard) {
            self.quiet_since = now;
        }
        now.saturating_sub(self.quiet_since) >= self.policy.idle_after
            && shard.newest() != Millis::MIN
    }

    /// For a quiet partition: if its input is read to the end (`caught_up`), moves
    /// the watermark to `now - allowed_lateness`, capped at `newest +
    /// max_idle_advance`, never back. None when not caught up (nothing decided: the
    /// backlog's own events move the watermark).
    pub fn advance(
        &mut self,
        shard: &mut Shard,
        now: Millis,
        caught_up: bool,
    ) -> Option<IdleAdvance> {
        if !caught_up {
            return None;
        }
        let target = now.saturating_sub(self.policy.allowed_lateness);
        let cap = shard.newest().saturating_add(self.policy.max_idle_advance);
        let stalled = target > cap;
        let newly_stalled = stalled && !self.stalled;
        self.stalled = stalled;
        let w = target.min(cap);
        let advanced = w > shard.watermark();
        if advanced {
            shard.advance_to(w);
        }
        Some(IdleAdvance {
            stalled,
            newly_stalled,
            advanced,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::{AlertKind, EngineConfig, Status};
    use crate::source::event::RawEvent;
    use crate::time::DAY;

    const T0: Millis = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    const SEC: Millis = 1000;
    const MINUTE: Millis = 60 * SEC;
    const HOUR: Millis = 60 * MINUTE;

    fn policy() -> IdlePolicy {
        IdlePolicy {
            idle_after: 30 * SEC,
            allowed_lateness: 10 * MINUTE,
            max_idle_advance: 6 * HOUR,
        }
    }

    fn shard() -> Shard {
        Shard::new(Arc::new(EngineConfig::new(&Config::default())))
    }

    fn push(s: &mut Shard, ts: Millis) {
        s.push(&RawEvent {
            account_id: "a".into(),
            event: "page.viewed".into(),
            ts,
            user_id: Some("u1".into()),
        })
        .unwrap();
    }

    #[test]
    fn the_policy_comes_from_the_config() {
        let p = IdlePolicy::new(&Config::default());
        assert_eq!(p.idle_after, 30 * SEC);
        assert_eq!(p.max_idle_advance, 6 * HOUR);
        assert_eq!(
            p.allowed_lateness,
            Config::default().time.allowed_lateness.0
        );
    }

    #[test]
    fn quiet_after_idle_after_without_messages() {
        let mut s = shard();
        let mut w = IdleWatch::new(policy(), T0);
        // No event yet: nothing to advance from, however long the silence.
        assert!(!w.quiet(&s, T0 + DAY));
        push(&mut s, T0);
        assert!(!w.quiet(&s, T0 + 29 * SEC));
        assert!(w.quiet(&s, T0 + 30 * SEC));
        // A message restarts the silence at the next check.
        w.on_message();
        assert!(!w.quiet(&s, T0 + 40 * SEC));
        assert!(!w.quiet(&s, T0 + 69 * SEC));
        assert!(w.quiet(&s, T0 + 70 * SEC));
    }

    #[test]
    fn a_caught_up_partition_follows_the_clock_minus_lateness() {
        let mut s = shard();
        push(&mut s, T0);
        let w0 = s.watermark();
        let mut w = IdleWatch::new(policy(), T0);
        let now = T0 + HOUR;
        assert_eq!(w.advance(&mut s, now, false), None);
        assert_eq!(s.watermark(), w0, "not caught up: events decide");
        assert_eq!(
            w.advance(&mut s, now, true),
            Some(IdleAdvance {
                stalled: false,
                newly_stalled: false,
                advanced: true
            })
        );
        assert_eq!(s.watermark(), now - 10 * MINUTE);
        // Never back: a clock behind the watermark changes nothing.
        let r = w.advance(&mut s, T0, true).unwrap();
        assert!(!r.advanced);
        assert_eq!(s.watermark(), now - 10 * MINUTE);
    }

    #[test]
    fn capped_at_max_idle_advance_past_the_newest_event_then_stalled_once() {
        let mut s = shard();
        push(&mut s, T0);
        let mut w = IdleWatch::new(policy(), T0);
        let r = w.advance(&mut s, T0 + DAY, true).unwrap();
        assert_eq!(
            r,
            IdleAdvance {
                stalled: true,
                newly_stalled: true,
                advanced: true
            }
        );
        assert_eq!(s.watermark(), T0 + 6 * HOUR);
        assert!(w.stalled());
        // Reported once; the watermark stays at the cap.
        let r = w.advance(&mut s, T0 + 2 * DAY, true).unwrap();
        assert_eq!(
            (r.stalled, r.newly_stalled, r.advanced),
            (true, false, false)
        );
        assert_eq!(s.watermark(), T0 + 6 * HOUR);
        // A message ends the stall (and says it was one).
        assert!(w.on_message());
        assert!(!w.stalled());
        assert!(!w.on_message());
    }

    #[test]
    fn the_advance_brings_absence_alerts_due() {
        // Activated on day 2; live input stops; 14 days of quiet later (the clock
        // within max_idle_advance of the newest event), `inactive` fires.
        let mut s = shard();
        for d in 0..3 {
            push(&mut s, T0 + d * DAY);
        }
        let newest = T0 + 2 * DAY;
        let policy = IdlePolicy {
            max_idle_advance: 30 * DAY,
            ..policy()
        };
        let mut w = IdleWatch::new(policy, newest);
        let now = newest + 14 * DAY + 10 * MINUTE + 1;
        assert!(w.quiet(&s, now));
        assert!(s.drain_alerts().next().is_none());
        assert!(w.advance(&mut s, now, true).unwrap().advanced);
        let out: Vec<_> = s.drain_alerts().collect();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].kind, out[0].status),
            (AlertKind::Inactive, Status::Firing)
        );
        assert_eq!(out[0].event_time, newest + 14 * DAY);
    }
}
