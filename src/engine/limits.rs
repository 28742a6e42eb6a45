//! Which accounts a shard takes on: at most `engine.max_accounts_per_partition`, and
//! with `engine.known_accounts_only` only those an injected predicate knows (the
//! driver's account metadata). Input can invent any number of ids; these bounds keep
//! the state, and the alerts about accounts that do not exist, finite. They apply to
//! new accounts only: state restored from the changelog is taken back whole (a lowered
//! limit or removed metadata does not drop accounts already tracked).

use std::hash::BuildHasher;
use std::sync::Arc;

use super::account::Account;
use super::shard::Shard;
use crate::source::event::RejectReason;

/// A predicate over account ids, injected by the driver (the engine does no lookups of
/// its own): asked once per account, when its first event arrives.
#[derive(Clone)]
pub struct Admit(pub Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for Admit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admit(..)")
    }
}

impl Shard {
    /// The slot of a tracked account, or of a new one if the limits let it in.
    pub(super) fn admit(&mut self, id: &str) -> Result<u32, RejectReason> {
        let h = self.hasher.hash_one(id);
        let accounts = &mut self.accounts;
        let hasher = &self.hasher;
        let cfg = &self.cfg;
        match self.index.entry(
            h,
            |&i| &*accounts[i as usize].id == id,
            |&i| hasher.hash_one(&*accounts[i as usize].id),
        ) {
            hashbrown::hash_table::Entry::Occupied(e) => Ok(*e.get()),
            hashbrown::hash_table::Entry::Vacant(v) => {
                if accounts.len() >= cfg.max_accounts {
                    return Err(RejectReason::AccountLimit(cfg.max_accounts));
                }
                if cfg.admit.as_ref().is_some_and(|a| !(a.0)(id)) {
                    return Err(RejectReason::UnknownAccount);
                }
                accounts.push(Account::new(id));
                let slot = (accounts.len() - 1) as u32;
                v.insert(slot);
                Ok(slot)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::EngineConfig;
    use crate::source::event::RawEvent;
    use crate::time::DAY;

    fn ev(id: &str, ts: i64) -> RawEvent<'_> {
        RawEvent {
            account_id: id.into(),
            event: "page.viewed".into(),
            ts,
            user_id: None,
        }
    }

    fn shard(max: usize, known: Option<fn(&str) -> bool>) -> Shard {
        let mut cfg = Config::default();
        cfg.engine.max_accounts_per_partition = max;
        let mut ec = EngineConfig::new(&cfg);
        if let Some(k) = known {
            ec = ec.with_admit(k);
        }
        Shard::new(Arc::new(ec))
    }

    #[test]
    fn new_accounts_past_the_cap_are_refused_and_change_nothing() {
        let mut s = shard(3, None);
        let t0 = 1_767_225_600_000;
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            s.push(&ev(id, t0 + i as i64)).unwrap();
        }
        let before = (s.watermark(), s.newest(), s.held_events());
        let r = s.push(&ev("d", t0 + 100 * DAY)).unwrap_err();
        assert_eq!(r, RejectReason::AccountLimit(3));
        assert!(r.to_string().contains("limit of 3 accounts"));
        // The refused event did not move the clocks, nor hold anything.
        assert_eq!((s.watermark(), s.newest(), s.held_events()), before);
        assert_eq!(s.accounts(), 3);
        // Accounts already tracked keep flowing.
        s.push(&ev("b", t0 + DAY)).unwrap();
        assert_eq!(s.accounts(), 3);
    }

    #[test]
    fn known_accounts_only_refuses_the_unknown() {
        let mut s = shard(10, Some(|id| id.starts_with("acct-")));
        s.push(&ev("acct-1", 0)).unwrap();
        assert_eq!(s.push(&ev("bogus", 1)), Err(RejectReason::UnknownAccount));
        assert_eq!(s.accounts(), 1);
        // The cap comes first.
        let mut s = shard(1, Some(|id| id.starts_with("acct-")));
        s.push(&ev("acct-1", 0)).unwrap();
        assert_eq!(s.push(&ev("acct-2", 1)), Err(RejectReason::AccountLimit(1)));
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever the ids, the shard tracks at most the cap: the first `cap`
            /// distinct ids in arrival order, exactly the set a simple model keeps.
            #[test]
            fn tracks_the_first_distinct_ids_up_to_the_cap(
                ids in prop::collection::vec("[a-e]{1,2}", 0..60),
                cap in 1usize..8,
            ) {
                let mut s = shard(cap, None);
                let mut kept: Vec<String> = Vec::new();
                for (i, id) in ids.iter().enumerate() {
                    let r = s.push(&ev(id, i as i64 * 1000));
                    let known = kept.contains(id);
                    if known || kept.len() < cap {
                        prop_assert!(r.is_ok());
                        if !known {
                            kept.push(id.clone());
                        }
                    } else {
                        prop_assert_eq!(r, Err(RejectReason::AccountLimit(cap)));
                    }
                }
                prop_assert_eq!(s.accounts(), kept.len());
                prop_assert!(s.accounts() <= cap);
            }
        }
    }
}
