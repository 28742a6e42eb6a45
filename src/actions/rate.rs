//! How fast one person may act: a token bucket per person (a burst of [`BURST`]
//! actions, then one every [`EVERY`]), so a runaway script with one person's token, or
//! a held-down button, cannot fill the actions topic and the bounded store that every
//! colleague shares. Human triage never reaches it: thirty answers at once, then one
//! every two seconds. The map of people is bounded too ([`MAX_PEOPLE`]); a person whose
//! bucket has refilled is the same as one never seen, so such entries are dropped
//! first when it fills.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::time::Millis;

/// Actions one person may take at once.
pub const BURST: u32 = 30;
/// One more action per this many milliseconds after the burst.
pub const EVERY: Millis = 2_000;
/// People tracked at once.
pub const MAX_PEOPLE: usize = 4_096;

/// Why an action was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// This person acted too fast: the next action is allowed in this many ms.
    Person { retry_after_ms: Millis },
    /// More people than [`MAX_PEOPLE`] are acting within one burst's refill time.
    Busy,
}

/// The per-person limiter. The time is passed in (the store's clock), so an injected
/// clock drives it in tests.
#[derive(Debug, Default)]
pub struct PerPerson {
    /// Person -> the time their bucket is full again (GCRA's theoretical arrival
    /// time): each action moves it `EVERY` later; the bucket allows an action while
    /// it is at most `(BURST - 1) * EVERY` ahead of now.
    full_at: Mutex<HashMap<String, Millis>>,
}

impl PerPerson {
    /// Takes one action's token for `who` at `now`, or says why not.
    pub fn take(&self, who: &str, now: Millis) -> Result<(), Limited> {
        let slack = Millis::from(BURST - 1) * EVERY;
        let mut map = self.full_at.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(who) && map.len() >= MAX_PEOPLE {
            map.retain(|_, full| *full > now);
            if map.len() >= MAX_PEOPLE {
                return Err(Limited::Busy);
            }
        }
        let full = map.get(who).copied().unwrap_or(now).max(now);
        if full - now > slack {
            return Err(Limited::Person {
                retry_after_ms: full - now - slack,
            });
        }
        map.insert(who.to_string(), full + EVERY);
        Ok(())
    }

    /// People tracked now (tests, and a bound check).
    pub fn len(&self) -> usize {
        self.full_at.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_every_interval() {
        let r = PerPerson::default();
        let t0 = 1_000_000;
        for i in 0..BURST {
            assert_eq!(r.take("ann@x.com", t0), Ok(()), "action {i} of the burst");
        }
        assert_eq!(
            r.take("ann@x.com", t0),
            Err(Limited::Person {
                retry_after_ms: EVERY
            })
        );
        // Someone else is not held back by Ann.
        assert_eq!(r.take("ben@x.com", t0), Ok(()));
        // Half an interval later: still not; a whole one: one more, then not again.
        assert!(r.take("ann@x.com", t0 + EVERY / 2).is_err());
        assert_eq!(r.take("ann@x.com", t0 + EVERY), Ok(()));
        assert!(r.take("ann@x.com", t0 + EVERY).is_err());
        // After the whole burst's refill time the burst is back.
        let later = t0 + EVERY * Millis::from(BURST + 1);
        for _ in 0..BURST {
            assert_eq!(r.take("ann@x.com", later), Ok(()));
        }
        assert!(r.take("ann@x.com", later).is_err());
    }

    #[test]
    fn refused_attempts_do_not_push_the_next_allowed_time_further() {
        let r = PerPerson::default();
        for _ in 0..BURST {
            r.take("a", 0).unwrap();
        }
        for _ in 0..1_000 {
            assert!(r.take("a", 0).is_err());
        }
        assert_eq!(r.take("a", EVERY), Ok(()));
    }

    #[test]
    fn the_map_of_people_stays_bounded() {
        let r = PerPerson::default();
        for i in 0..MAX_PEOPLE {
            r.take(&format!("p{i}"), 0).unwrap();
        }
        assert_eq!(r.len(), MAX_PEOPLE);
        // Everyone is still within their refill time: a newcomer waits.
        assert_eq!(r.take("newcomer", 0), Err(Limited::Busy));
        // Someone already tracked is served as before.
        assert_eq!(r.take("p7", 0), Ok(()));
        // Once the earlier buckets refilled, their entries make room.
        assert_eq!(r.take("newcomer", EVERY), Ok(()));
        assert!(r.len() <= MAX_PEOPLE);
        assert!(r.len() < 10, "refilled entries were dropped: {}", r.len());
    }
}
