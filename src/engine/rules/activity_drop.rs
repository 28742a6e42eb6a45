//! Rule `activity_drop`: at each day close, an activated account whose last
//! `recent_days` fall far below the `baseline_days` before them (by `min_drop`, with
//! an expectation of at least `min_expected`, and a p-value under `alpha` from the
//! negative binomial or Poisson test) fires; its episode is the day that closed. It
//! resolves when the recent sum is back to `recovery` times the expectation frozen
//! when it fired, or the lifecycle ends.
//!
//! The daily window (events or distinct users per day) is a ring in the shard's arena,
//! released after a silence as long as the whole window.

use crate::config::DropMetric;
use crate::engine::account::{insert_sorted, DayUsers, NO_DAY, NO_LIFE};
use crate::engine::alert::{Alert, AlertKind, Evidence, ResolveReason, Status};
use crate::engine::ring::{ring_add, Ring, NO_RING};
use crate::engine::shard::Shard;
use crate::engine::stats;
use crate::time::{day_of, format_day, Millis, DAY};

impl Shard {
    /// Counts an activity event of `day` (user hash `user`, 0 for none) in the
    /// account's daily window.
    pub(in crate::engine) fn count_in_window(&mut self, idx: u32, day: i64, user: u64) {
        let users_metric = self.cfg.users_metric();
        let acc = &mut self.accounts[idx as usize];
        let life = &mut self.lives[acc.life as usize];
        let day32 = day as i32;
        let inc = if users_metric {
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

    /// Day `d` closes at `(d+1) * DAY`: evaluates the rule for every account holding a
    /// window, and releases the windows of accounts silent for a whole window.
    pub(in crate::engine) fn close_day(&mut self, d: i64) {
        let Some(span) = self
            .cfg
            .drop
            .as_ref()
            .map(|c| (c.recent_days + c.baseline_days) as i64)
        else {
            return;
        };
        let mut i = 0;
        while i < self.window_list.len() {
            let idx = self.window_list[i];
            if !self.keep_window(idx, d - span) {
                self.mark_dirty(idx);
                self.accounts[idx as usize].in_window_list = false;
                self.window_list.swap_remove(i);
                continue;
            }
            i += 1;
            if let Some(alert) = self.evaluate_drop(idx, d) {
                self.emit(idx, alert);
            }
        }
    }

    /// Whether the account still needs its window: it is in a lifecycle and had
    /// activity after day `oldest`. A window silent that long is released (nothing
    /// can change until new activity).
    fn keep_window(&mut self, idx: u32, oldest: i64) -> bool {
        let acc = &self.accounts[idx as usize];
        if acc.life == NO_LIFE {
            return false;
        }
        let life = &mut self.lives[acc.life as usize];
        let live = life.ring != NO_RING && life.ring_head as i64 > oldest;
        if !live && life.ring != NO_RING {
            self.rings.release(life.ring);
            life.ring = NO_RING;
            life.day_users = None;
        }
        live
    }

    /// The rule for one account at the close of day `d`: the transition, if any.
    fn evaluate_drop(&mut self, idx: u32, d: i64) -> Option<Alert> {
        let drop = self.cfg.drop.as_ref()?;
        let close_at = (d + 1) * DAY;
        let span = (drop.recent_days + drop.baseline_days) as i64;
        let users_metric = drop.metric == DropMetric::ActiveUsers;
        let acc = &self.accounts[idx as usize];
        let life = &mut self.lives[acc.life as usize];
        let activated = life.activated_at().is_some_and(|a| a < close_at);
        // The contract's `d - recent - baseline + 1 > day(S)`, negated.
        if !activated || d - span < day_of(life.start) {
            return None;
        }
        let ring = Ring {
            head: life.ring_head as i64,
            slots: self.rings.slots(life.ring),
        };
        let w = stats::window(&ring, d, drop.recent_days, drop.baseline_days);
        let alert = |status, episode, evidence| Alert {
            account_id: acc.id.to_string(),
            kind: AlertKind::ActivityDrop,
            status,
            severity: drop.severity,
            episode,
            event_time: close_at,
            evidence,
        };
        if life.drop_day != NO_DAY {
            if w.observed as f64 >= drop.recovery * life.drop_expected {
                let episode = format_day(life.drop_day as i64);
                life.drop_day = NO_DAY;
                let evidence = Evidence::Resolved {
                    reason: ResolveReason::Recovered,
                    observed: Some(w.observed),
                    expected: Some(life.drop_expected),
                    since: None,
                    users_metric,
                };
                return Some(alert(Status::Resolved, episode, evidence));
            }
            return None;
        }
        if w.expected < drop.min_expected || w.observed as f64 > (1.0 - drop.min_drop) * w.expected
        {
            return None;
        }
        let v = stats::baseline_variance(&ring, d, drop.recent_days, drop.baseline_days, w.mean);
        let (model, p) = stats::p_value(w.observed, w.mean, v, drop.recent_days);
        if p > drop.alpha {
            return None;
        }
        life.drop_day = d as i32;
        life.drop_expected = w.expected;
        let evidence = Evidence::ActivityDrop {
            observed: w.observed,
            expected: w.expected,
            drop_pct: 1.0 - w.observed as f64 / w.expected,
            p_value: p,
            model,
            recent_days: drop.recent_days,
            baseline_days: drop.baseline_days,
            users_metric,
        };
        Some(alert(Status::Firing, format_day(d), evidence))
    }

    /// End of the lifecycle: resolves the firing `activity_drop` alert.
    pub(in crate::engine) fn resolve_drop(&mut self, idx: u32, t: Millis, reason: ResolveReason) {
        let life = self.life_mut(idx);
        if life.drop_day == NO_DAY {
            return;
        }
        let episode = format_day(std::mem::replace(&mut life.drop_day, NO_DAY) as i64);
        let alert = Alert {
            account_id: self.accounts[idx as usize].id.to_string(),
            kind: AlertKind::ActivityDrop,
            status: Status::Resolved,
            severity: self.cfg.drop.as_ref().expect("fired, so enabled").severity,
            episode,
            event_time: t,
            evidence: Evidence::resolved(reason, None),
        };
        self.emit(idx, alert);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::engine::{Alert, Evidence, ResolveReason, Shard};
    use crate::time::DAY;

    const DROP_ONLY: &str = "[rules.not_activated]\nenabled = false\n\
                             [rules.inactive]\nenabled = false\n";

    /// `n` events of `account` on each day of `days`, from noon a minute apart;
    /// returns the alerts released meanwhile.
    fn volume(s: &mut Shard, account: &str, n: i64, days: std::ops::Range<i64>) -> Vec<Alert> {
        let mut out = Vec::new();
        for d in days {
            for i in 0..n {
                out.extend(push(s, account, "page.viewed", noon(d) + i * 60_000, "u1"));
            }
        }
        out
    }

    #[test]
    fn fires_on_a_sharp_drop_with_evidence_and_recovers() {
        let mut s = shard(DROP_ONLY);
        volume(&mut s, "a", 10, 0..40);
        let mut out = finish_to(&mut s, 50);
        assert_eq!(
            brief(&out),
            ["firing a/activity_drop/2026-02-13 @2026-02-14T00:00:00.000Z"]
        );
        let Evidence::ActivityDrop {
            observed,
            expected,
            p_value,
            recent_days: 7,
            baseline_days: 28,
            ..
        } = out.remove(0).evidence
        else {
            panic!("evidence");
        };
        assert_eq!((observed, expected), (30, 70.0));
        assert!(p_value < 0.001, "{p_value}");
        assert_eq!(dirty(&mut s), ["a"]);
        let mut out = volume(&mut s, "a", 10, 50..60);
        out.extend(finish_to(&mut s, 60));
        assert_eq!(
            brief(&out),
            ["resolved a/activity_drop/2026-02-13 @2026-02-26T00:00:00.000Z"]
        );
        assert_eq!(
            out[0].evidence,
            Evidence::Resolved {
                reason: ResolveReason::Recovered,
                observed: Some(60),
                expected: Some(70.0),
                since: None,
                users_metric: false,
            }
        );
    }

    #[test]
    fn a_mild_dip_does_not_fire() {
        let mut s = shard(DROP_ONLY);
        assert!(volume(&mut s, "a", 10, 0..40).is_empty());
        let mut out = volume(&mut s, "a", 6, 40..60);
        out.extend(finish_to(&mut s, 60));
        assert!(out.is_empty(), "{out:?}");
        // The same account with the dip made sharp does fire.
        let mut s = shard(DROP_ONLY);
        volume(&mut s, "a", 10, 0..40);
        let mut out = volume(&mut s, "a", 1, 40..60);
        out.extend(finish_to(&mut s, 60));
        assert_eq!(
            brief(&out),
            ["firing a/activity_drop/2026-02-13 @2026-02-14T00:00:00.000Z"]
        );
    }

    #[test]
    fn churn_resolves_it() {
        let mut s = shard(DROP_ONLY);
        volume(&mut s, "a", 10, 0..40);
        assert_eq!(finish_to(&mut s, 50).len(), 1);
        push(&mut s, "a", "subscription.cancelled", noon(51), "");
        let out = finish_to(&mut s, 52);
        assert_eq!(
            brief(&out),
            ["resolved a/activity_drop/2026-02-13 @2026-02-21T12:00:00.000Z"]
        );
        assert_eq!(
            out[0].evidence,
            Evidence::resolved(ResolveReason::Churned, None)
        );
    }

    #[test]
    fn a_window_silent_for_its_whole_length_is_released() {
        let mut s = shard(DROP_ONLY);
        daily(&mut s, "a", [0, 1, 2]);
        daily(&mut s, "b", [30, 31]);
        assert_eq!(s.windows(), 2);
        dirty(&mut s);
        // Day 37 closes with a's newest day (2) out of the 35-day window.
        daily(&mut s, "b", [38]);
        assert_eq!(s.windows(), 1);
        assert_eq!(dirty(&mut s), ["b", "a"]);
    }

    /// Moves the watermark to the start of day `d` (as another account's events
    /// would) and returns the alerts released.
    fn finish_to(s: &mut Shard, d: i64) -> Vec<Alert> {
        s.advance_to(T0 + d * DAY);
        s.drain_alerts().collect()
    }
}
