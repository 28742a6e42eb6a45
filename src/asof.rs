//! The end of an evaluation: `--until T` (alias `--as-of T`). Owns the one rule that
//! `replay` and `backtest` share: the state of things as of `T` is what the engine
//! computes from the accepted events with `ts <= T`, with the watermark ending at `T`.
//!
//! Events after `T` are not handed to the engine at all (they are counted), so a `T`
//! before the newest event cuts the history there instead of being overtaken by the
//! watermark; a `T` after the newest event lets absence checks run up to `T`.

use crate::engine::Shard;
use crate::time::Millis;

/// Where an evaluation stops, and how many events it left out.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsOf {
    /// `None`: the newest applied event time.
    until: Option<Millis>,
    /// Accepted events newer than `until`, not applied.
    pub not_applied: u64,
}

impl AsOf {
    pub fn new(until: Option<Millis>) -> AsOf {
        AsOf {
            until,
            not_applied: 0,
        }
    }

    /// The `T` given, if any.
    pub fn until(&self) -> Option<Millis> {
        self.until
    }

    /// Whether an accepted event at `ts` is applied; counts the ones that are not.
    #[inline]
    pub fn admits(&mut self, ts: Millis) -> bool {
        match self.until {
            Some(t) if ts > t => {
                self.not_applied += 1;
                false
            }
            _ => true,
        }
    }

    /// Ends the stream: the watermark becomes `T` (default: the newest applied event
    /// time) and everything due by then runs. The events left out are added to the
    /// shard's `beyond_until` count, which the replay summary prints.
    pub fn finish(&self, shard: &mut Shard) {
        shard.finish(self.until);
        shard.stats.beyond_until += self.not_applied;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_and_including_until() {
        let mut a = AsOf::new(Some(100));
        assert!(a.admits(99));
        assert!(a.admits(100));
        assert!(!a.admits(101));
        assert!(!a.admits(i64::MAX));
        assert_eq!(a.not_applied, 2);
        let mut open = AsOf::new(None);
        assert!(open.admits(i64::MAX));
        assert_eq!(open.not_applied, 0);
    }
}
