//! The soak's seeded fault schedule: which fault, on what, when.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::procs::Role;

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then the same instance started again.
    Kill(Role),
    /// scripts/kafka.sh restart-broker: same data dir and ports.
    BrokerRestart,
    /// SIGSTOP past the session timeout, then SIGCONT: a zombie the group and the
    /// transaction coordinator must have fenced.
    Pause(Role),
    /// The webhook receiver answers 503 to everything for a while.
    WebhookBurst,
}

impl Fault {
    pub fn kind(self) -> &'static str {
        match self {
            Fault::Kill(_) => "sigkill+restart",
            Fault::BrokerRestart => "broker restart",
            Fault::Pause(_) => "sigstop past session timeout+sigcont",
            Fault::WebhookBurst => "webhook 5xx burst",
        }
    }
}

/// The faults of a soak of `secs` seconds, with seed `seed`: one of each kind (the
/// kill on instance `a`, the pause on instance `b`, in a seeded order), then one more
/// seeded fault per 40 s past the first 160 s (kills of `a` or the notifier, pauses
/// of `b` or the notifier). They fall between 10 % and 80 % of the run, one per slot
/// of equal length, at a seeded point of the slot's first 60 %, so that each is over
/// before the next (a pause lasts the session timeout + 4 s, a broker restart ~15 s).
pub fn schedule(seed: u64, secs: u64) -> Vec<(Duration, Fault)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults = vec![
        Fault::Kill(Role::A),
        Fault::BrokerRestart,
        Fault::Pause(Role::B),
        Fault::WebhookBurst,
    ];
    faults.shuffle(&mut rng);
    let extra = secs.saturating_sub(160) / 40;
    for _ in 0..extra {
        let other = if rng.random_bool(0.3) {
            Role::Notifier
        } else {
            Role::A
        };
        faults.push(match rng.random_range(0..4) {
            0 => Fault::Kill(other),
            1 => Fault::BrokerRestart,
            2 => Fault::Pause(if other == Role::A { Role::B } else { other }),
            _ => Fault::WebhookBurst,
        });
    }
    let (from, to) = (secs as f64 * 0.1, secs as f64 * 0.8);
    let slot = (to - from) / faults.len() as f64;
    faults
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let at = from + slot * (i as f64 + rng.random_range(0.0..0.6));
            (Duration::from_secs_f64(at), f)
        })
        .collect()
}

#[test]
fn every_kind_is_scheduled_once_at_least_and_in_order() {
    for (seed, secs) in [(1, 180), (7, 1200)] {
        let s = schedule(seed, secs);
        for kind in [
            Fault::Kill(Role::A),
            Fault::BrokerRestart,
            Fault::Pause(Role::B),
            Fault::WebhookBurst,
        ] {
            assert!(s.iter().any(|(_, f)| *f == kind), "{kind:?} in {s:?}");
        }
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0), "{s:?}");
        assert!(s.last().unwrap().0.as_secs() <= secs * 8 / 10);
        assert_eq!(s, schedule(seed, secs), "seeded");
    }
}
