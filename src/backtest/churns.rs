//! Churns: when each account churned, by default read from the history's lifecycle end
//! events (an end event that ends an active lifecycle), or given by an outcomes file.

use crate::config::Config;
use crate::time::Millis;

use super::history::History;

/// Churn times per account index, each list sorted ascending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Churns {
    by_account: Vec<Vec<Millis>>,
}

impl Churns {
    /// No churns, for `accounts` accounts.
    pub fn new(accounts: usize) -> Churns {
        Churns {
            by_account: vec![Vec::new(); accounts],
        }
    }

    /// Adds a churn of `account` at `at`.
    pub fn add(&mut self, account: u32, at: Millis) {
        let v = &mut self.by_account[account as usize];
        let i = v.partition_point(|&c| c <= at);
        v.insert(i, at);
    }

    /// The churn times of `account`, ascending.
    pub fn of(&self, account: u32) -> &[Millis] {
        self.by_account
            .get(account as usize)
            .map_or(&[][..], Vec::as_slice)
    }

    /// Every churn as (account, time).
    pub fn iter(&self) -> impl Iterator<Item = (u32, Millis)> + '_ {
        self.by_account
            .iter()
            .enumerate()
            .flat_map(|(a, v)| v.iter().map(move |&c| (a as u32, c)))
    }

    pub fn len(&self) -> usize {
        self.by_account.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The churns the history's end events mark: each account's lifecycle is followed
    /// in event-time order (equal times in arrival order), as the engine follows it:
    /// a start event starts one when none is active, the first event ever seen starts
    /// one when it is an activity event and `start_on_first_event` is set, and an end
    /// event while one is active ends it, which is a churn at the end event's `ts`.
    pub fn from_end_events(h: &History, cfg: &Config) -> Churns {
        #[derive(Clone, Copy, PartialEq)]
        enum State {
            Unseen,
            Active,
            Inactive,
        }
        let lc = &cfg.lifecycle;
        let class = |name: u32| -> u8 {
            let n = h.name(name);
            if lc.start_events.iter().any(|s| s == n) {
                0
            } else if lc.end_events.iter().any(|s| s == n) {
                1
            } else {
                2
            }
        };
        let mut order: Vec<u32> = (0..h.events.len() as u32).collect();
        order.sort_by_key(|&i| (h.events[i as usize].ts, i));
        let mut state = vec![State::Unseen; h.known_accounts()];
        let mut churns = Churns::new(h.known_accounts());
        for i in order {
            let e = h.events[i as usize];
            let s = &mut state[e.account as usize];
            *s = match (*s, class(e.name)) {
                (State::Active, 1) => {
                    churns.add(e.account, e.ts);
                    State::Inactive
                }
                (State::Active, _) => State::Active,
                (_, 0) => State::Active,
                (State::Unseen, 2) if lc.start_on_first_event => State::Active,
                _ => State::Inactive,
            };
        }
        churns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::file::LineReader;

    fn history(lines: &[(&str, &str, i64)]) -> History {
        let text: String = lines
            .iter()
            .map(|(a, e, ts)| format!("{{\"account_id\":\"{a}\",\"event\":\"{e}\",\"ts\":{ts}}}\n"))
            .collect();
        let mut r = LineReader::from_reader(Box::new(std::io::Cursor::new(text.into_bytes())));
        History::read(&Config::default(), &mut r, None, |_| {}).unwrap()
    }

    #[test]
    fn only_end_events_of_active_lifecycles_are_churns() {
        let h = history(&[
            ("a", "login", 10),
            ("a", "subscription.cancelled", 20),
            ("a", "subscription.cancelled", 30), // none active: no churn
            ("a", "login", 40),                  // outside a lifecycle
            ("a", "subscription.started", 50),
            ("a", "account.deleted", 60),
            ("b", "account.deleted", 5), // first event is an end event: nothing
            ("b", "login", 6),           // not started by a later activity
            ("b", "subscription.cancelled", 7),
            ("c", "subscription.cancelled", 100), // arrives first, but later in time
            ("c", "account.created", 90),
        ]);
        let c = Churns::from_end_events(&h, &Config::default());
        let a = h.account_index("a").unwrap();
        let b = h.account_index("b").unwrap();
        let cc = h.account_index("c").unwrap();
        assert_eq!(c.of(a), &[20, 60]);
        assert!(c.of(b).is_empty());
        assert_eq!(c.of(cc), &[100]);
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn start_on_first_event_off_needs_a_start_event() {
        let h = history(&[("a", "login", 10), ("a", "subscription.cancelled", 20)]);
        let mut cfg = Config::default();
        cfg.lifecycle.start_on_first_event = false;
        assert!(Churns::from_end_events(&h, &cfg).is_empty());
    }
}
