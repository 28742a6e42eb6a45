//! How the notifier honours people's actions on alerts (`crate::actions`): what an
//! action means for one alert record at one instant, as a [`Hold`]. The grouper
//! (`group.rs`) asks [`ActionLookup::hold`] before it repeats an alert and before a
//! batch leaves; the Kafka notifier passes the actions store it follows.
//!
//! - **acknowledge** holds that alert (no repeat, no digest re-listing) until it
//!   resolves or someone reopens it; its resolution still goes out.
//! - **snooze** and **not a risk** quiet, until their `until`, every alert of the same
//!   account *and kind* (a snooze is a silence for that account and rule): firing
//!   notifications and repeats are withheld; a resolution is withheld too unless the
//!   receiver was told the alert fired. Other kinds of the same account are not
//!   quieted.
//! - **reopen**, or the `until` passing, ends the hold: an alert still firing repeats
//!   as usual, and one whose firing was withheld goes out at once.
//!
//! The time is the notifier's (its injected clock), not the store's.

use crate::actions::{ActionState, Actions};
use crate::record::AlertRecord;
use crate::time::Millis;

/// What holds an alert back now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Someone acknowledged this alert: no repeats; its resolution goes out.
    Acknowledged,
    /// A snooze or "not a risk" on an alert of this account and kind, until `until`.
    Quiet { until: Millis },
}

/// The actions the notifier honours (the followed store; a test's own).
pub trait ActionLookup: Send + Sync {
    /// What holds `alert` back at `now`, if anything.
    fn hold(&self, alert: &AlertRecord, now: Millis) -> Option<Hold>;
}

/// No actions: nothing is ever held (the notifier without an actions store).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoActions;

impl ActionLookup for NoActions {
    fn hold(&self, _: &AlertRecord, _: Millis) -> Option<Hold> {
        None
    }
}

impl ActionLookup for Actions {
    fn hold(&self, alert: &AlertRecord, now: Millis) -> Option<Hold> {
        match self.state_at(&alert.id, now) {
            Some(ActionState::Acknowledged { .. }) => Some(Hold::Acknowledged),
            Some(
                ActionState::Snoozed { until_ms, .. } | ActionState::NotARisk { until_ms, .. },
            ) => Some(Hold::Quiet { until: until_ms }),
            None => self
                .quiet_until(&alert.account_id, alert.kind.as_str(), now)
                .map(|until| Hold::Quiet { until }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::actions::{ActionKind, ActionRecord, AlertActions};
    use crate::config::Severity;
    use crate::engine::Status;
    use crate::notify::group::{Grouper, Timing};
    use crate::notify::render::Notification;

    const S: Millis = 1000;
    const REPEAT: Millis = 3600 * S;

    fn timing() -> Timing {
        Timing {
            group_wait: 30 * S,
            group_interval: 300 * S,
            repeat_interval: REPEAT,
            send_resolved: true,
            digest: None,
        }
    }

    fn rec(id: &str, status: Status) -> AlertRecord {
        AlertRecord::sample(id, status, Severity::Warning)
    }

    /// A store holding the given actions, taken in order.
    fn store(actions: &[(&str, ActionKind, Millis, Option<Millis>)]) -> Actions {
        let s = Actions::new(100, Arc::new(|| 0));
        for &(id, kind, at, until) in actions {
            put(&s, id, kind, at, until);
        }
        s
    }

    fn put(s: &Actions, id: &str, kind: ActionKind, at: Millis, until: Option<Millis>) {
        let a = ActionRecord::sample(id, kind, at, until);
        s.apply(AlertActions::with(s.get(id), a)).unwrap();
    }

    fn ids(ns: &[Notification]) -> Vec<String> {
        ns.iter()
            .flat_map(|n| n.alerts.iter())
            .map(|a| format!("{}:{}", a.id, a.status.as_str()))
            .collect()
    }

    /// Runs the grouper to `now`, delivering everything due; returns what went out.
    fn tick(g: &mut Grouper, now: Millis, actions: &dyn ActionLookup) -> Vec<String> {
        let n = g.due_with(now, actions);
        for note in &n {
            g.delivered(note, now);
        }
        ids(&n)
    }

    fn fire(g: &mut Grouper, now: Millis, id: &str) {
        assert!(g.add(now, "csm", "ana", None, rec(id, Status::Firing)));
    }

    fn resolve(g: &mut Grouper, now: Millis, id: &str) {
        assert!(g.add(now, "csm", "ana", None, rec(id, Status::Resolved)));
    }

    #[test]
    fn holds_follow_the_alert_for_an_ack_and_the_account_and_kind_for_a_snooze() {
        let s = store(&[
            ("acme/inactive/1", ActionKind::Acknowledge, 0, None),
            ("globex/inactive/1", ActionKind::Snooze, 0, Some(100)),
            (
                "initech/activity_drop/1",
                ActionKind::NotARisk,
                0,
                Some(200),
            ),
        ]);
        let hold = |id: &str, now| s.hold(&rec(id, Status::Firing), now);
        assert_eq!(hold("acme/inactive/1", 50), Some(Hold::Acknowledged));
        // An acknowledgement is about its own alert only.
        assert_eq!(hold("acme/inactive/2", 50), None);
        assert_eq!(
            hold("globex/inactive/1", 50),
            Some(Hold::Quiet { until: 100 })
        );
        // Another episode of the same account and kind: quiet too.
        assert_eq!(
            hold("globex/inactive/9", 50),
            Some(Hold::Quiet { until: 100 })
        );
        assert_eq!(hold("globex/activity_drop/1", 50), None);
        assert_eq!(hold("globex/inactive/9", 100), None, "the snooze ran out");
        assert_eq!(
            hold("initech/activity_drop/2", 199),
            Some(Hold::Quiet { until: 200 })
        );
        assert_eq!(
            NoActions.hold(&rec("acme/inactive/1", Status::Firing), 0),
            None
        );
    }

    #[test]
    fn an_acknowledged_alert_is_not_repeated_but_its_resolution_goes_out() {
        let a = "acme/inactive/1";
        let s = store(&[]);
        let mut g = Grouper::new(timing());
        fire(&mut g, 0, a);
        assert_eq!(tick(&mut g, 30 * S, &s), [format!("{a}:firing")]);
        put(&s, a, ActionKind::Acknowledge, 40 * S, None);
        // Several repeat intervals pass: nothing.
        for k in 1..5 {
            assert!(tick(&mut g, 30 * S + k * REPEAT, &s).is_empty());
        }
        assert!(g.take_withheld().is_empty(), "nothing was even batched");
        resolve(&mut g, 5 * REPEAT, a);
        assert_eq!(
            tick(&mut g, 5 * REPEAT + 30 * S, &s),
            [format!("{a}:resolved")]
        );
        // Without the actions, the same alert would have repeated.
        let mut plain = Grouper::new(timing());
        fire(&mut plain, 0, a);
        tick(&mut plain, 30 * S, &NoActions);
        assert_eq!(
            tick(&mut plain, 30 * S + REPEAT, &NoActions),
            [format!("{a}:firing")]
        );
    }

    #[test]
    fn a_reopen_restores_the_repeats() {
        let a = "acme/inactive/1";
        let s = store(&[]);
        let mut g = Grouper::new(timing());
        fire(&mut g, 0, a);
        tick(&mut g, 30 * S, &s);
        put(&s, a, ActionKind::Acknowledge, 40 * S, None);
        assert!(tick(&mut g, 30 * S + REPEAT, &s).is_empty());
        put(&s, a, ActionKind::Reopen, 2 * REPEAT, None);
        // The repeat was due long ago: it goes at the next wave.
        assert_eq!(tick(&mut g, 2 * REPEAT + S, &s), [format!("{a}:firing")]);
        assert!(tick(&mut g, 3 * REPEAT, &s).is_empty());
        assert_eq!(
            tick(&mut g, 3 * REPEAT + 2 * S, &s),
            [format!("{a}:firing")],
            "then every repeat_interval"
        );
    }

    #[test]
    fn a_snooze_quiets_its_account_and_kind_but_not_another_kind() {
        let until = 10 * REPEAT;
        let s = store(&[("acme/inactive/1", ActionKind::Snooze, 0, Some(until))]);
        let mut g = Grouper::new(timing());
        // The snoozed alert, a new episode of the same kind, another kind of the same
        // account, and another account.
        for id in [
            "acme/inactive/1",
            "acme/inactive/2",
            "acme/activity_drop/1",
            "globex/inactive/1",
        ] {
            fire(&mut g, 0, id);
        }
        assert_eq!(
            tick(&mut g, 30 * S, &s),
            ["acme/activity_drop/1:firing", "globex/inactive/1:firing"]
        );
        let mut withheld = g.take_withheld();
        withheld.sort();
        assert_eq!(
            withheld,
            [
                ("csm".into(), "acme/inactive/1".into(), "firing".into()),
                ("csm".into(), "acme/inactive/2".into(), "firing".into()),
            ]
        );
        assert!(!g.was_sent("csm", "acme/inactive/1", "firing"));
        // Repeats: only the unquieted ones.
        assert_eq!(
            tick(&mut g, 30 * S + REPEAT, &s),
            ["acme/activity_drop/1:firing", "globex/inactive/1:firing"]
        );
        // One quieted alert resolves during the snooze: its firing was never told,
        // so neither is its resolution. Its resolution closes its record all the same.
        resolve(&mut g, 3 * REPEAT / 2, "acme/inactive/2");
        assert!(tick(&mut g, 3 * REPEAT / 2 + 30 * S, &s).is_empty());
        assert_eq!(
            g.take_withheld(),
            [("csm".into(), "acme/inactive/2".into(), "resolved".into())]
        );
    }

    #[test]
    fn the_snooze_ends_on_the_injected_clock_and_the_owed_firing_goes_out() {
        let until = 10 * REPEAT;
        let s = store(&[("acme/inactive/1", ActionKind::Snooze, 0, Some(until))]);
        let mut g = Grouper::new(timing());
        fire(&mut g, 0, "acme/inactive/1");
        assert!(tick(&mut g, 30 * S, &s).is_empty());
        let mut t = 30 * S;
        while t + REPEAT < until {
            t += REPEAT;
            assert!(tick(&mut g, t, &s).is_empty(), "quiet at {t}");
        }
        assert!(tick(&mut g, until - 1, &s).is_empty());
        // The snooze ended: the alert, never told, goes out at once, then repeats.
        assert_eq!(tick(&mut g, until, &s), ["acme/inactive/1:firing"]);
        assert!(tick(&mut g, until + REPEAT - 1, &s).is_empty());
        assert_eq!(tick(&mut g, until + REPEAT, &s), ["acme/inactive/1:firing"]);
    }

    #[test]
    fn a_snoozed_alerts_resolution_goes_out_if_its_firing_was_told() {
        let a = "acme/inactive/1";
        let s = store(&[]);
        let mut g = Grouper::new(timing());
        fire(&mut g, 0, a);
        assert_eq!(tick(&mut g, 30 * S, &s), [format!("{a}:firing")]);
        put(&s, a, ActionKind::NotARisk, 60 * S, Some(100 * REPEAT));
        assert!(tick(&mut g, 30 * S + REPEAT, &s).is_empty(), "no repeat");
        resolve(&mut g, 2 * REPEAT, a);
        assert_eq!(
            tick(&mut g, 2 * REPEAT + 30 * S, &s),
            [format!("{a}:resolved")]
        );
        assert!(g.take_withheld().is_empty());
    }

    #[test]
    fn an_acknowledged_digest_alert_is_not_listed_again() {
        let tz = jiff::tz::TimeZone::UTC;
        let mut g = Grouper::new(Timing {
            repeat_interval: 24 * REPEAT,
            digest: Some(crate::notify::group::Digest {
                hour: 9,
                severities: vec![Severity::Warning],
                default_tz: tz,
            }),
            ..timing()
        });
        let s = store(&[]);
        let day0 = crate::time::parse_rfc3339("2026-03-07T08:00:00Z").unwrap();
        let nine = day0 + REPEAT;
        fire(&mut g, day0, "acme/inactive/1");
        fire(&mut g, day0, "globex/inactive/1");
        assert_eq!(
            tick(&mut g, nine, &s),
            ["acme/inactive/1:firing", "globex/inactive/1:firing"]
        );
        put(
            &s,
            "acme/inactive/1",
            ActionKind::Acknowledge,
            nine + S,
            None,
        );
        // The next day's digest lists only the alert nobody acknowledged.
        for h in 1..24 {
            assert!(tick(&mut g, nine + h * REPEAT, &s).is_empty());
        }
        assert_eq!(
            tick(&mut g, nine + 24 * REPEAT, &s),
            ["globex/inactive/1:firing"]
        );
    }
}
