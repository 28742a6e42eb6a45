//! The three rules, one file each, as methods of the shard that owns the accounts:
//! what each rule counts when an event applies, what it checks when a timer comes due
//! or a day closes, and how its alerts fire and resolve. The time loop that decides
//! when each of these runs is in `shard.rs`.

mod activity_drop;
mod inactive;
mod not_activated;

#[cfg(test)]
pub(super) mod testing {
    //! A shard driven the way replay drives it, for the rules' unit tests.

    use std::sync::Arc;

    use crate::config::Config;
    use crate::engine::{Alert, EngineConfig, Shard};
    use crate::source::event::RawEvent;
    use crate::time::{Millis, DAY};

    /// 2026-01-01T00:00:00Z.
    pub const T0: Millis = 1_767_225_600_000;

    /// Noon of day `d` after `T0`.
    pub fn noon(d: i64) -> Millis {
        T0 + d * DAY + DAY / 2
    }

    /// A shard with the defaults overlaid by `toml`.
    pub fn shard(toml: &str) -> Shard {
        let cfg = Config::from_toml_str(toml, []).expect("test config");
        Shard::new(Arc::new(EngineConfig::new(&cfg)))
    }

    /// Pushes one event and returns the alerts it released.
    pub fn push(s: &mut Shard, account: &str, event: &str, ts: Millis, user: &str) -> Vec<Alert> {
        s.push(&RawEvent {
            account_id: account.into(),
            event: event.into(),
            ts,
            user_id: (!user.is_empty()).then(|| user.into()),
        })
        .expect("within the account limits");
        s.drain_alerts().collect()
    }

    /// One `page.viewed` of user `u1` at noon of each day in `days`.
    pub fn daily(s: &mut Shard, account: &str, days: impl IntoIterator<Item = i64>) -> Vec<Alert> {
        let mut out = Vec::new();
        for d in days {
            out.extend(push(s, account, "page.viewed", noon(d), "u1"));
        }
        out
    }

    /// Ends the input at `until` and returns the alerts released.
    pub fn finish(s: &mut Shard, until: Millis) -> Vec<Alert> {
        s.finish(Some(until));
        s.drain_alerts().collect()
    }

    /// `status account/kind/episode @event_time` of each alert.
    pub fn brief(alerts: &[Alert]) -> Vec<String> {
        alerts
            .iter()
            .map(|a| {
                format!(
                    "{} {} @{}",
                    a.status.as_str(),
                    a.id(),
                    crate::time::format_rfc3339(a.event_time)
                )
            })
            .collect()
    }

    /// Ids of the accounts changed since the last call.
    pub fn dirty(s: &mut Shard) -> Vec<String> {
        let slots = s.take_dirty();
        slots.iter().map(|&i| s.account_id(i).to_string()).collect()
    }
}
