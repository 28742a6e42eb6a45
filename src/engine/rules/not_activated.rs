//! Rule `not_activated`: an account that has not activated by an onboarding deadline
//! (`after_days` after its lifecycle start) fires one alert per deadline missed; all
//! of them resolve when it activates (or its lifecycle ends). Activation itself is
//! counted here: every required event seen, and enough active days, users and events.

use crate::engine::account::{insert_sorted, Phase, Progress, NEVER};
use crate::engine::alert::{Alert, AlertKind, Evidence, ResolveReason, Status};
use crate::engine::config::EngineConfig;
use crate::engine::shard::{Shard, Timer, TimerKind};
use crate::time::{day_of, format_day, Millis, DAY};

impl Shard {
    /// Counts an activity event (at `t`, on `day`, required event `req`, user hash
    /// `user`) toward activation; on activation, resolves the firing alerts.
    pub(in crate::engine) fn progress_onboarding(
        &mut self,
        idx: u32,
        t: Millis,
        day: i64,
        req: Option<u8>,
        user: u64,
    ) {
        let cfg = &*self.cfg;
        let life = &mut self.lives[self.accounts[idx as usize].life as usize];
        let Phase::Onboarding(p) = &mut life.phase else {
            return;
        };
        p.events += 1;
        p.add_day(day as i32);
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

    /// Deadline `k` of the account came due: fires unless the account activated, or
    /// the timer is moot; queues the next deadline.
    pub(in crate::engine) fn deadline_due(&mut self, tm: Timer, k: u8) {
        let cfg = &*self.cfg;
        let acc = &self.accounts[tm.account as usize];
        let life = &mut self.lives[acc.life as usize];
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
        let alert = Alert {
            account_id: acc.id.to_string(),
            kind: AlertKind::NotActivated,
            status: Status::Firing,
            severity: d.severity,
            episode: episode(life.start, d.after_days),
            event_time: tm.at,
            evidence,
        };
        let next = cfg
            .deadlines
            .get(k as usize + 1)
            .map(|n| life.start + n.after_days as i64 * DAY);
        self.emit(tm.account, alert);
        if let Some(at) = next {
            self.schedule(at, tm.account, TimerKind::Deadline(k + 1));
        }
    }

    /// Resolves the account's firing `not_activated` alerts, one per deadline missed.
    pub(in crate::engine) fn resolve_not_activated(
        &mut self,
        idx: u32,
        t: Millis,
        reason: ResolveReason,
    ) {
        let life = self.life_mut(idx);
        let firing = std::mem::take(&mut life.not_activated_firing);
        let start = life.start;
        for k in 0..self.cfg.deadlines.len() {
            if firing & (1 << k) == 0 {
                continue;
            }
            let d = &self.cfg.deadlines[k];
            let alert = Alert {
                account_id: self.accounts[idx as usize].id.to_string(),
                kind: AlertKind::NotActivated,
                status: Status::Resolved,
                severity: d.severity,
                episode: episode(start, d.after_days),
                event_time: t,
                evidence: Evidence::resolved(reason, Some(start)),
            };
            self.emit(idx, alert);
        }
    }
}

/// The episode of a deadline's alert: `{start day}+{after_days}d`.
fn episode(start: Millis, after_days: u32) -> String {
    format!("{}+{}d", format_day(day_of(start)), after_days)
}

fn activation_holds(p: &Progress, cfg: &EngineConfig) -> bool {
    p.required_seen & cfg.required_mask == cfg.required_mask
        && p.active_days as usize >= cfg.min_active_days
        && p.users.len() >= cfg.min_active_users
        && p.events >= cfg.min_events
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::engine::{Evidence, ResolveReason};

    #[test]
    fn fires_at_each_deadline_with_progress_then_resolves_on_activation() {
        let mut s = shard("");
        assert!(push(&mut s, "a", "account.created", noon(0), "").is_empty());
        assert!(daily(&mut s, "a", [1, 2]).is_empty());
        dirty(&mut s);
        // Day 100: the 30- and 90-day deadlines ran before it; the third active day
        // activates the account.
        let out = daily(&mut s, "a", [100]);
        assert_eq!(
            brief(&out),
            [
                "firing a/not_activated/2026-01-01+30d @2026-01-31T12:00:00.000Z",
                "firing a/not_activated/2026-01-01+90d @2026-04-01T12:00:00.000Z",
            ]
        );
        assert_eq!(
            out[0].evidence,
            Evidence::NotActivated {
                after_days: 30,
                start: noon(0),
                active_days: 2,
                active_users: 1,
                events: 2,
                missing_events: vec![],
            }
        );
        assert_eq!(dirty(&mut s), ["a"]);
        let out = finish(&mut s, noon(100));
        assert_eq!(
            brief(&out),
            [
                "resolved a/not_activated/2026-01-01+30d @2026-04-11T12:00:00.000Z",
                "resolved a/not_activated/2026-01-01+90d @2026-04-11T12:00:00.000Z",
            ]
        );
        assert_eq!(
            out[1].evidence,
            Evidence::resolved(ResolveReason::Activated, Some(noon(0)))
        );
        assert_eq!(dirty(&mut s), ["a"]);
    }

    #[test]
    fn activation_before_the_deadline_cancels_it() {
        let mut s = shard("");
        push(&mut s, "a", "account.created", noon(0), "");
        daily(&mut s, "a", [1, 2, 3]);
        let out = finish(&mut s, noon(200));
        // Activated on day 3: no deadline fires; the account went quiet afterwards,
        // which the inactive rule reports (14 days after the last activity).
        assert_eq!(
            brief(&out),
            ["firing a/inactive/2026-01-04 @2026-01-18T12:00:00.000Z"]
        );
        assert_eq!(s.life_of("a").unwrap().activated_at(), Some(noon(3)));
    }

    #[test]
    fn missing_required_events_are_named_and_block_activation() {
        let mut s = shard(
            "[activation]\nrequired_events = [\"report.created\", \"invite.sent\"]\n\
             [rules.inactive]\nenabled = false\n",
        );
        push(&mut s, "a", "account.created", noon(0), "");
        daily(&mut s, "a", 1..10);
        push(&mut s, "a", "invite.sent", noon(10), "u1");
        let out = finish(&mut s, noon(40));
        assert_eq!(
            brief(&out),
            ["firing a/not_activated/2026-01-01+30d @2026-01-31T12:00:00.000Z"]
        );
        let Evidence::NotActivated { missing_events, .. } = &out[0].evidence else {
            panic!("{out:?}");
        };
        assert_eq!(missing_events, &["report.created"]);
    }

    #[test]
    fn churn_resolves_the_firing_deadlines() {
        let mut s = shard("");
        push(&mut s, "a", "account.created", noon(0), "");
        let mut out = push(&mut s, "a", "subscription.cancelled", noon(45), "");
        out.extend(finish(&mut s, noon(45)));
        assert_eq!(
            brief(&out),
            [
                "firing a/not_activated/2026-01-01+30d @2026-01-31T12:00:00.000Z",
                "resolved a/not_activated/2026-01-01+30d @2026-02-15T12:00:00.000Z",
            ]
        );
        assert_eq!(
            out[1].evidence,
            Evidence::resolved(ResolveReason::Churned, Some(noon(0)))
        );
        // The 90-day deadline of the ended lifecycle is moot.
        assert!(finish(&mut s, noon(200)).is_empty());
        assert!(s.life_of("a").is_none());
    }
}
