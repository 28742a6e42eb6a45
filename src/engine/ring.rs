//! Daily counters: for each account holding a window, the last `len` days up to its
//! newest day. All windows of a shard live in one flat arena (`len` `u32`s each, no
//! per-account allocation), recycled through a free list.

/// Index of a window in a `RingArena`.
pub type RingId = u32;
/// No window.
pub const NO_RING: RingId = u32::MAX;

/// One window: its newest day and its slots (slot of day `d` is `d mod len`).
#[derive(Debug, Clone, Copy)]
pub struct Ring<'a> {
    pub head: i64,
    pub slots: &'a [u32],
}

impl Ring<'_> {
    /// The counter of `day` (zero outside the window).
    #[inline]
    pub fn get(&self, day: i64) -> u32 {
        let len = self.slots.len() as i64;
        if day > self.head || day <= self.head - len {
            0
        } else {
            self.slots[day.rem_euclid(len) as usize]
        }
    }

    /// Sum over the days `from..=to`.
    pub fn sum(&self, from: i64, to: i64) -> u64 {
        (from..=to).map(|d| self.get(d) as u64).sum()
    }
}

/// Adds `n` to `day` of the window `slots` whose newest day is `*head`. A newer day moves
/// the window (clearing the days it passes); a day older than the window is not kept
/// and `false` is returned.
#[inline]
pub fn ring_add(slots: &mut [u32], head: &mut i64, day: i64, n: u32) -> bool {
    let len = slots.len() as i64;
    if day > *head {
        if day - *head >= len {
            slots.iter_mut().for_each(|s| *s = 0);
        } else {
            for d in *head + 1..=day {
                slots[d.rem_euclid(len) as usize] = 0;
            }
        }
        *head = day;
    } else if day <= *head - len {
        return false;
    }
    let i = day.rem_euclid(len) as usize;
    slots[i] = slots[i].saturating_add(n);
    true
}

/// The windows of one shard.
#[derive(Debug, Clone, Default)]
pub struct RingArena {
    len: usize,
    data: Vec<u32>,
    free: Vec<RingId>,
}

impl RingArena {
    /// An arena of windows of `len` days.
    pub fn new(len: usize) -> RingArena {
        RingArena {
            len,
            data: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Days per window.
    pub fn window_len(&self) -> usize {
        self.len
    }

    /// A zeroed window.
    pub fn alloc(&mut self) -> RingId {
        match self.free.pop() {
            Some(id) => {
                self.slots_mut(id).iter_mut().for_each(|s| *s = 0);
                id
            }
            None => {
                let id = (self.data.len() / self.len.max(1)) as RingId;
                self.data.resize(self.data.len() + self.len, 0);
                id
            }
        }
    }

    /// Returns a window to the free list.
    pub fn release(&mut self, id: RingId) {
        debug_assert!(id != NO_RING);
        self.free.push(id);
    }

    pub fn slots(&self, id: RingId) -> &[u32] {
        let at = id as usize * self.len;
        &self.data[at..at + self.len]
    }

    pub fn slots_mut(&mut self, id: RingId) -> &mut [u32] {
        let at = id as usize * self.len;
        &mut self.data[at..at + self.len]
    }

    /// Windows in use.
    pub fn in_use(&self) -> usize {
        self.data.len() / self.len.max(1) - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn window_moves_and_forgets() {
        let mut slots = [0u32; 3];
        let mut head = 10;
        assert!(ring_add(&mut slots, &mut head, 10, 2));
        assert!(ring_add(&mut slots, &mut head, 11, 1));
        assert!(ring_add(&mut slots, &mut head, 9, 5));
        let r = Ring {
            head,
            slots: &slots,
        };
        assert_eq!((r.get(9), r.get(10), r.get(11), r.get(12)), (5, 2, 1, 0));
        assert!(ring_add(&mut slots, &mut head, 12, 4)); // day 9 falls out
        let r = Ring {
            head,
            slots: &slots,
        };
        assert_eq!((r.get(9), r.get(10)), (0, 2));
        assert!(!ring_add(&mut slots, &mut head, 9, 1));
        assert!(ring_add(&mut slots, &mut head, 20, 7)); // a jump clears everything
        let r = Ring {
            head,
            slots: &slots,
        };
        assert_eq!((r.sum(10, 19), r.get(20)), (0, 7));
        let mut neg = [0u32; 2];
        let mut h = -3;
        assert!(ring_add(&mut neg, &mut h, -2, 1));
        let r = Ring {
            head: h,
            slots: &neg,
        };
        assert_eq!((r.get(-3), r.get(-2)), (0, 1));
    }

    #[test]
    fn arena_recycles_zeroed_windows() {
        let mut a = RingArena::new(4);
        let x = a.alloc();
        let y = a.alloc();
        a.slots_mut(x)[1] = 9;
        a.release(x);
        assert_eq!(a.in_use(), 1);
        let z = a.alloc();
        assert_eq!(z, x);
        assert_eq!(a.slots(z), &[0, 0, 0, 0]);
        assert_ne!(y, z);
    }

    proptest! {
        /// The window agrees with a map of all days, restricted to the window.
        #[test]
        fn matches_model(len in 1usize..40, ops in proptest::collection::vec((0i64..120, 1u32..5), 1..200)) {
            let mut slots = vec![0u32; len];
            let mut head = 0i64;
            let mut model: BTreeMap<i64, u32> = BTreeMap::new();
            for (day, n) in ops {
                let new_head = head.max(day);
                let kept = ring_add(&mut slots, &mut head, day, n);
                prop_assert_eq!(kept, day > new_head - len as i64);
                if kept {
                    *model.entry(day).or_default() += n;
                }
                let r = Ring { head, slots: &slots };
                for d in head - len as i64 - 2..=head + 2 {
                    let want = if d > head - len as i64 && d <= head { model.get(&d).copied().unwrap_or(0) } else { 0 };
                    prop_assert_eq!(r.get(d), want, "day {}", d);
                }
            }
        }
    }
}
