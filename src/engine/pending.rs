//! Events waiting for the watermark, taken in `(ts, seq)` order.
//!
//! Input is mostly in time order within a partition: an event no older than the last
//! one queued goes to a FIFO (constant time), only the others to a heap. Taking the
//! smaller of the two fronts gives exactly the order one heap would.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::shard::Held;

#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Sorted: each event pushed here is >= the one before it.
    fifo: VecDeque<Held>,
    heap: BinaryHeap<Reverse<Held>>,
}

impl Pending {
    pub(super) fn push(&mut self, h: Held) {
        match self.fifo.back() {
            Some(last) if h < *last => self.heap.push(Reverse(h)),
            _ => self.fifo.push_back(h),
        }
    }

    /// Whether the next event is the heap's (else the FIFO's, if any).
    fn heap_next(&self) -> bool {
        match (self.fifo.front(), self.heap.peek()) {
            (Some(a), Some(Reverse(b))) => b < a,
            (front, top) => front.is_none() && top.is_some(),
        }
    }

    /// The next event.
    pub(super) fn peek(&self) -> Option<&Held> {
        if self.heap_next() {
            self.heap.peek().map(|r| &r.0)
        } else {
            self.fifo.front()
        }
    }

    pub(super) fn pop(&mut self) -> Option<Held> {
        if self.heap_next() {
            self.heap.pop().map(|r| r.0)
        } else {
            self.fifo.pop_front()
        }
    }

    pub(super) fn len(&self) -> usize {
        self.fifo.len() + self.heap.len()
    }

    /// Every event, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Held> {
        self.fifo.iter().chain(self.heap.iter().map(|r| &r.0))
    }

    pub(super) fn clear(&mut self) {
        self.fifo.clear();
        self.heap.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::shard::PackedClass;
    use proptest::prelude::*;

    fn held(ts: i64, seq: u64) -> Held {
        Held {
            ts,
            seq,
            account: (seq % 7) as u32,
            class: PackedClass((seq % 3) as u8),
            user: seq.wrapping_mul(31),
        }
    }

    proptest! {
        /// Same order as a single heap, whatever the mix of pushes and pops.
        #[test]
        fn takes_events_in_the_order_of_one_heap(
            ops in proptest::collection::vec((0i64..50, any::<bool>()), 0..300)
        ) {
            let mut p = Pending::default();
            let mut reference = BinaryHeap::new();
            for (seq, (ts, pop)) in ops.into_iter().enumerate() {
                if pop {
                    prop_assert_eq!(p.peek().copied(), reference.peek().map(|r: &Reverse<Held>| r.0));
                    prop_assert_eq!(p.pop(), reference.pop().map(|r| r.0));
                } else {
                    let h = held(ts, seq as u64);
                    p.push(h);
                    reference.push(Reverse(h));
                }
                prop_assert_eq!(p.len(), reference.len());
            }
            let mut rest = Vec::new();
            while let Some(h) = p.pop() {
                rest.push(h);
            }
            let expected: Vec<Held> = reference.into_sorted_vec().into_iter().rev().map(|r| r.0).collect();
            prop_assert_eq!(rest, expected);
        }
    }

    #[test]
    fn in_order_input_stays_out_of_the_heap() {
        let mut p = Pending::default();
        for i in 0..100 {
            p.push(held(i, i as u64));
        }
        p.push(held(5, 100));
        assert_eq!(p.heap.len(), 1);
        let order: Vec<i64> = std::iter::from_fn(|| p.pop()).map(|h| h.ts).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
        assert_eq!(order.len(), 101);
        assert_eq!(p.iter().count(), 0);
    }
}
