//! Rule `inactive`: an activated account with no activity for `after_days` fires once
//! per silence (its episode is the day of the last activity); the next activity
//! resolves it (`activity_resumed`), as does the end of the lifecycle.
//!
//! One timer per account, armed at activation and lazy: activity does not move it;
//! when it comes due before the silence is long enough, it re-arms itself.

use crate::engine::account::{Phase, NEVER};
use crate::engine::alert::{Alert, AlertKind, Evidence, ResolveReason, Status};
use crate::engine::shard::{Shard, Timer, TimerKind};
use crate::time::{day_of, format_day, Millis, DAY};

impl Shard {
    /// Activity of account `idx` at `t`: resolves its firing `inactive` alert.
    pub(in crate::engine) fn resume_from_inactive(&mut self, idx: u32, t: Millis) {
        let life = self.life_mut(idx);
        if !std::mem::take(&mut life.inactive_firing) {
            return;
        }
        let last = life.last_activity;
        self.resolve_inactive_episode(idx, last, t, ResolveReason::ActivityResumed, Some(last));
    }

    /// Queues the account's check once it is activated, if none is queued.
    pub(in crate::engine) fn arm_inactive(&mut self, idx: u32) {
        let Some(after_days) = self.cfg.inactive.as_ref().map(|c| c.after_days) else {
            return;
        };
        let life = self.life_mut(idx);
        let Phase::Activated { inactive_timer, .. } = &mut life.phase else {
            return;
        };
        if *inactive_timer == NEVER {
            let at = life.last_activity + after_days as i64 * DAY;
            *inactive_timer = at;
            self.schedule(at, idx, TimerKind::Inactive);
        }
    }

    /// The account's check came due: fires if the silence is long enough, else
    /// re-arms for the end of the silence counted from the last activity.
    pub(in crate::engine) fn inactive_due(&mut self, tm: Timer) {
        let cfg = &*self.cfg;
        let acc = &self.accounts[tm.account as usize];
        let life = &mut self.lives[acc.life as usize];
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
            self.schedule(due, tm.account, TimerKind::Inactive);
            self.mark_dirty(tm.account);
            return;
        }
        *inactive_timer = NEVER;
        life.inactive_firing = true;
        let alert = Alert {
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
        };
        self.emit(tm.account, alert);
    }

    /// End of the lifecycle: resolves the firing `inactive` alert.
    pub(in crate::engine) fn resolve_inactive(
        &mut self,
        idx: u32,
        t: Millis,
        reason: ResolveReason,
    ) {
        let life = self.life_mut(idx);
        if std::mem::take(&mut life.inactive_firing) {
            let last = life.last_activity;
            self.resolve_inactive_episode(idx, last, t, reason, None);
        }
    }

    /// Emits the resolution of the episode of the silence after `last`.
    fn resolve_inactive_episode(
        &mut self,
        idx: u32,
        last: Millis,
        t: Millis,
        reason: ResolveReason,
        since: Option<Millis>,
    ) {
        let inactive = self.cfg.inactive.as_ref().expect("fired, so enabled");
        let alert = Alert {
            account_id: self.accounts[idx as usize].id.to_string(),
            kind: AlertKind::Inactive,
            status: Status::Resolved,
            severity: inactive.severity,
            episode: format_day(day_of(last)),
            event_time: t,
            evidence: Evidence::resolved(reason, since),
        };
        self.emit(idx, alert);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::engine::{Evidence, ResolveReason};

    const NO_DEADLINES: &str = "[rules.not_activated]\nenabled = false\n";

    #[test]
    fn fires_after_the_silence_and_resolves_on_activity() {
        let mut s = shard(NO_DEADLINES);
        daily(&mut s, "a", [0, 1, 2]);
        dirty(&mut s);
        // Activated on day 2; the timer armed then comes due on day 16.
        let out = daily(&mut s, "a", [20]);
        assert_eq!(
            brief(&out),
            ["firing a/inactive/2026-01-03 @2026-01-17T12:00:00.000Z"]
        );
        assert_eq!(
            out[0].evidence,
            Evidence::Inactive {
                last_activity: noon(2),
                idle_days: 14
            }
        );
        assert_eq!(dirty(&mut s), ["a"]);
        let out = finish(&mut s, noon(20));
        assert_eq!(
            brief(&out),
            ["resolved a/inactive/2026-01-03 @2026-01-21T12:00:00.000Z"]
        );
        assert_eq!(
            out[0].evidence,
            Evidence::resolved(ResolveReason::ActivityResumed, Some(noon(2)))
        );
    }

    #[test]
    fn activity_before_the_check_moves_it() {
        let mut s = shard(NO_DEADLINES);
        daily(&mut s, "a", [0, 1, 2, 10]);
        // Another account's events move the watermark: past a's day 10, then past
        // day 16, when the check armed at activation (day 2) comes due, finds the
        // activity of day 10 and re-arms itself for day 24.
        daily(&mut s, "b", [11]);
        dirty(&mut s);
        assert!(daily(&mut s, "b", [17]).is_empty());
        assert_eq!(s.timers_pending(), 1);
        assert_eq!(dirty(&mut s), ["b", "a"]);
        let out = finish(&mut s, noon(40));
        assert_eq!(
            brief(&out),
            ["firing a/inactive/2026-01-11 @2026-01-25T12:00:00.000Z"]
        );
    }

    #[test]
    fn needs_activation() {
        // Two active days: short of the three that activate; the rule never arms.
        let mut s = shard(NO_DEADLINES);
        daily(&mut s, "a", [0, 1]);
        assert!(finish(&mut s, noon(60)).is_empty());
        assert_eq!(s.life_of("a").unwrap().activated_at(), None);
        assert_eq!(s.timers_pending(), 0);
        // A third day activates it, and the same silence then fires.
        let mut s = shard(NO_DEADLINES);
        daily(&mut s, "a", [0, 1, 2]);
        assert_eq!(
            brief(&finish(&mut s, noon(60))),
            ["firing a/inactive/2026-01-03 @2026-01-17T12:00:00.000Z"]
        );
    }

    #[test]
    fn churn_resolves_it() {
        let mut s = shard(NO_DEADLINES);
        daily(&mut s, "a", [0, 1, 2]);
        let mut out = push(&mut s, "a", "account.deleted", noon(30), "");
        out.extend(finish(&mut s, noon(30)));
        assert_eq!(
            brief(&out),
            [
                "firing a/inactive/2026-01-03 @2026-01-17T12:00:00.000Z",
                "resolved a/inactive/2026-01-03 @2026-01-31T12:00:00.000Z",
            ]
        );
        assert_eq!(
            out[1].evidence,
            Evidence::resolved(ResolveReason::Churned, None)
        );
    }
}
