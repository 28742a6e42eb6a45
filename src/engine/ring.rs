//! A fixed window of daily counters ending at the newest day written.

use serde::{Deserialize, Serialize};

/// Daily counters for the last `len` days up to `head` (inclusive). Days newer than
/// `head` or older than the window read as zero. One `u32` per day: 35 days (the
/// default recent + baseline) take 140 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyRing {
    head: i64,
    slots: Box<[u32]>,
}

impl DailyRing {
    /// An empty ring of `len` days whose newest day is `day`.
    pub fn new(len: usize, day: i64) -> DailyRing {
        assert!(len > 0, "a ring needs at least one day");
        DailyRing {
            head: day,
            slots: vec![0; len].into_boxed_slice(),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Newest day held.
    pub fn head(&self) -> i64 {
        self.head
    }

    #[inline]
    fn slot(&self, day: i64) -> usize {
        day.rem_euclid(self.slots.len() as i64) as usize
    }

    /// Adds `n` to `day`. A newer day moves the window (clearing the days it passes);
    /// a day older than the window is not kept and `false` is returned.
    #[inline]
    pub fn add(&mut self, day: i64, n: u32) -> bool {
        let len = self.slots.len() as i64;
        if day > self.head {
            if day - self.head >= len {
                self.slots.iter_mut().for_each(|s| *s = 0);
            } else {
                for d in self.head + 1..=day {
                    let i = self.slot(d);
                    self.slots[i] = 0;
                }
            }
            self.head = day;
        } else if day <= self.head - len {
            return false;
        }
        let i = self.slot(day);
        self.slots[i] = self.slots[i].saturating_add(n);
        true
    }

    /// The counter of `day` (zero outside the window).
    #[inline]
    pub fn get(&self, day: i64) -> u32 {
        if day > self.head || day <= self.head - self.slots.len() as i64 {
            0
        } else {
            self.slots[self.slot(day)]
        }
    }

    /// Sum over the days `from..=to`.
    pub fn sum(&self, from: i64, to: i64) -> u64 {
        (from..=to).map(|d| self.get(d) as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn window_moves_and_forgets() {
        let mut r = DailyRing::new(3, 10);
        assert!(r.add(10, 2));
        assert!(r.add(11, 1));
        assert!(r.add(9, 5));
        assert_eq!((r.get(9), r.get(10), r.get(11), r.get(12)), (5, 2, 1, 0));
        assert!(r.add(12, 4)); // day 9 falls out
        assert_eq!((r.get(9), r.get(10)), (0, 2));
        assert!(!r.add(9, 1));
        assert!(r.add(20, 7)); // jump clears everything
        assert_eq!((r.sum(10, 19), r.get(20)), (0, 7));
        let mut n = DailyRing::new(2, -3);
        assert!(n.add(-2, 1));
        assert_eq!((n.get(-3), n.get(-2)), (0, 1));
    }

    proptest! {
        /// The ring agrees with a map of all days, restricted to the window.
        #[test]
        fn matches_model(len in 1usize..40, ops in proptest::collection::vec((0i64..120, 1u32..5), 1..200)) {
            let mut ring = DailyRing::new(len, 0);
            let mut model: BTreeMap<i64, u32> = BTreeMap::new();
            let mut head = 0i64;
            for (day, n) in ops {
                let kept = ring.add(day, n);
                let new_head = head.max(day);
                prop_assert_eq!(kept, day > new_head - len as i64);
                if kept {
                    *model.entry(day).or_default() += n;
                }
                head = new_head;
                for d in head - len as i64 - 2..=head + 2 {
                    let want = if d > head - len as i64 && d <= head { model.get(&d).copied().unwrap_or(0) } else { 0 };
                    prop_assert_eq!(ring.get(d), want, "day {}", d);
                }
            }
        }
    }
}
