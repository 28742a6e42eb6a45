//! The order in which the engine applies a history's events, worked out once for all
//! the runs of a sweep that share it. It depends only on the events (in arrival order),
//! `time.allowed_lateness` (when the watermark releases a held event, and which events
//! arrive late and apply at the watermark) and `engine.max_accounts_per_partition`
//! (which accounts are refused, and the order their slots are taken in), never on the
//! rules. Each run then hands the events to the engine in this order
//! (`Shard::apply_in_order`) instead of passing every event through the reorder buffer
//! again; the rules' work is all done per run. The simulation here follows the
//! engine's `push` and `finish` step by step; tests compare the alerts with `replay`'s.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::history::{Ev, History};
use crate::config::Config;
use crate::time::Millis;

/// What the order depends on, besides the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderKey {
    pub allowed_lateness: Millis,
    pub max_accounts: usize,
}

impl OrderKey {
    pub fn of(cfg: &Config) -> OrderKey {
        OrderKey {
            allowed_lateness: cfg.time.allowed_lateness.0,
            max_accounts: cfg.engine.max_accounts_per_partition,
        }
    }
}

/// The events of a history in the order the engine applies them, copied out of the
/// history (24 bytes an event, plus the late ones' times) so that every run reads them
/// front to back: read through indices into the history in file order, the memory
/// accesses jump around by the reordering and a run spent a fifth of its time waiting
/// for them.
#[derive(Debug)]
pub struct Order {
    pub key: OrderKey,
    /// The events, in the order they apply.
    pub events: Vec<Ev>,
    /// Late events: position in `events` and the watermark they apply at, by position.
    pub late: Vec<(u32, Millis)>,
    /// Accounts the engine takes on, in the order it takes them (slot order).
    pub admitted: Vec<u32>,
    /// Events never applied (held past the end: none when the history stops at its
    /// end time, as it does).
    pub beyond_until: u64,
}

impl Order {
    /// Works out the order for `key`, as the engine's `push` and `finish` would.
    pub fn new(h: &History, key: OrderKey) -> Order {
        let mut out = Order {
            key,
            events: Vec::with_capacity(h.events.len()),
            late: Vec::new(),
            admitted: Vec::new(),
            beyond_until: 0,
        };
        let mut taken = vec![false; h.known_accounts()];
        // Held events by (time, arrival): the engine's order, its sequence numbers
        // growing with arrival as these indices do.
        let mut held: BinaryHeap<Reverse<(Millis, u32)>> = BinaryHeap::new();
        let all = &h.events;
        let (mut watermark, mut newest) = (Millis::MIN, Millis::MIN);
        let release =
            |held: &mut BinaryHeap<Reverse<(Millis, u32)>>, events: &mut Vec<Ev>, limit: Millis| {
                while let Some(&Reverse((ts, i))) = held.peek() {
                    if ts >= limit {
                        break;
                    }
                    held.pop();
                    events.push(all[i as usize]);
                }
            };
        for (i, e) in h.events.iter().enumerate() {
            let a = e.account as usize;
            if !taken[a] {
                if out.admitted.len() >= key.max_accounts {
                    continue; // refused, as the engine refuses it: nothing applied
                }
                taken[a] = true;
                out.admitted.push(e.account);
            }
            if e.ts < watermark {
                out.late.push((out.events.len() as u32, watermark));
                out.events.push(*e);
            } else {
                held.push(Reverse((e.ts, i as u32)));
            }
            if e.ts > newest {
                newest = e.ts;
                let w = e.ts.saturating_sub(key.allowed_lateness);
                if w > watermark {
                    watermark = w;
                    release(&mut held, &mut out.events, w);
                }
            }
        }
        let until = h.as_of.until().unwrap_or(newest);
        if until != Millis::MIN {
            let w = watermark.max(until);
            release(&mut held, &mut out.events, w.saturating_add(1));
        }
        out.beyond_until = held.len() as u64;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Alert;
    use crate::gen::{generate, GenOptions};
    use crate::source::file::LineReader;
    use crate::time::DAY;

    fn brief(a: &Alert) -> String {
        format!(
            "{} {} {} {:?}",
            a.id(),
            a.status.as_str(),
            a.event_time,
            a.evidence
        )
    }

    /// Ordered runs give exactly the alerts and counters of the engine's own reorder
    /// buffer: with many late events, refused accounts, and a history cut early.
    #[test]
    fn ordered_runs_match_the_reorder_buffer() {
        let opts = GenOptions {
            accounts: 90,
            days: 100,
            seed: 11,
            jitter: 20 * 60_000,
            ..GenOptions::default()
        };
        let mut text = Vec::new();
        generate(&opts, &mut text).unwrap();
        for (toml, until) in [
            ("", None),
            ("[time]\nallowed_lateness = \"1s\"\n", None),
            (
                "[time]\nallowed_lateness = \"7m\"\n[rules.inactive]\nafter_days = 3\n",
                None,
            ),
            ("[engine]\nmax_accounts_per_partition = 45\n", None),
            ("", Some(opts.start + 50 * DAY + 7)),
        ] {
            let cfg = Config::from_toml_str(toml, []).unwrap();
            let mut r = LineReader::from_reader(Box::new(std::io::Cursor::new(text.clone())));
            let h = History::read(&cfg, &mut r, until, |_| {}).unwrap();
            let (mut want, mut got) = (Vec::new(), Vec::new());
            let want_stats = h.run_buffered(&cfg, |a| want.push(brief(&a)));
            let order = Order::new(&h, OrderKey::of(&cfg));
            let got_stats = h.run_ordered(&order, &cfg, |a| got.push(brief(&a)));
            assert!(want.len() > 5, "{toml}: {} alerts", want.len());
            assert!(want == got, "{toml} {until:?}");
            assert_eq!(want_stats, got_stats, "{toml} {until:?}");
            if toml.contains("1s") {
                assert!(order.late.len() > 1000, "{} late", order.late.len());
            }
            if toml.contains("max_accounts") {
                assert_eq!(order.admitted.len(), 45);
                assert!(order.events.len() < h.events.len());
            } else {
                assert_eq!(order.events.len(), h.events.len());
            }
        }
    }
}
