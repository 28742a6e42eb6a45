//! The actions this process knows, as read from the actions topic (and written by its
//! own API): per alert the union of the values read (a late or concurrent value loses
//! nothing), and an index by account for the API's list.
//! Bounded: at most `max_alerts` alerts and `max_bytes` of actions; an action beyond
//! that is refused (the API answers 503, the follower counts and logs it), never a
//! silent eviction of an action someone took.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use super::record::{ActionRecord, ActionState, AlertActions};
use crate::time::Millis;

/// The store's clock (wall clock in production, injected in tests).
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

/// Default bound on the alerts with actions held in memory.
pub const MAX_ALERTS: usize = 200_000;
/// Default bound on the bytes the held actions take (their strings and a fixed cost per
/// action): 200,000 alerts of a few short actions fit many times over, while 200,000
/// alerts of 20 actions with 1,000-character reasons (4 GB and more) do not.
pub const MAX_BYTES: usize = 256 << 20;

#[derive(Default)]
struct Inner {
    by_alert: HashMap<String, AlertActions>,
    by_account: HashMap<String, BTreeSet<String>>,
    /// [`size`] of every held value.
    bytes: usize,
}

/// Actions by alert id, shared by the follower, the API and the notifier.
pub struct Actions {
    inner: RwLock<Inner>,
    max_alerts: usize,
    max_bytes: usize,
    clock: Clock,
}

/// An alert of an account whose snooze or "not a risk" runs at some time.
struct Quieting<'a> {
    alert_id: &'a String,
    kind: &'a str,
    until_ms: Millis,
    state: ActionState,
}

/// The alerts of `account_id` whose latest action quiets their kind at `now`: what
/// both the notifier's question and the inbox's are answered from.
fn quieting<'a>(g: &'a Inner, account_id: &str, now: Millis) -> impl Iterator<Item = Quieting<'a>> {
    g.by_account
        .get(account_id)
        .into_iter()
        .flatten()
        .filter_map(move |id| {
            let kind = id.rsplit('/').nth(1)?;
            let state = g.by_alert.get(id)?.state(now)?;
            let until_ms = match &state {
                ActionState::Snoozed { until_ms, .. } | ActionState::NotARisk { until_ms, .. } => {
                    *until_ms
                }
                ActionState::Acknowledged { .. } => return None,
            };
            Some(Quieting {
                alert_id: id,
                kind,
                until_ms,
                state,
            })
        })
}

/// What a value costs in memory, roughly: its strings and a fixed cost per action.
fn size(v: &AlertActions) -> usize {
    v.alert_id.len()
        + v.account_id.len()
        + v.history
            .iter()
            .map(|a| {
                std::mem::size_of::<ActionRecord>()
                    + a.alert_id.len()
                    + a.account_id.len()
                    + a.by.len()
                    + a.reason.len()
                    + a.origin.len()
            })
            .sum::<usize>()
}

/// The store is full and `alert_id` is new to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Full;

impl Actions {
    pub fn new(max_alerts: usize, clock: Clock) -> Actions {
        Actions {
            inner: RwLock::default(),
            max_alerts,
            max_bytes: MAX_BYTES,
            clock,
        }
    }

    /// The same store bounded to `max_bytes` (see [`MAX_BYTES`]).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Actions {
        self.max_bytes = max_bytes;
        self
    }

    pub fn now(&self) -> Millis {
        (self.clock)()
    }

    /// Merges `v` (a value read from the topic, or one this process just wrote) into
    /// what is known of its alert ([`AlertActions::merge`]): a value delivered late
    /// rolls nothing back, and actions two instances wrote at once are both kept.
    /// Returns whether the result holds more than `v`: the topic's latest value then
    /// lacks an action, and the follower writes the union back.
    /// Refused ([`Full`]) when the alert is new and `max_alerts` are held, or when it
    /// would grow the held bytes past `max_bytes`.
    pub fn apply(&self, v: AlertActions) -> Result<bool, Full> {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let (merged, old_size, new_size) = self.admit(&g, &v)?;
        g.bytes = g.bytes - old_size + new_size;
        let more = merged != v;
        g.by_account
            .entry(v.account_id.clone())
            .or_default()
            .insert(v.alert_id.clone());
        g.by_alert.insert(v.alert_id.clone(), merged);
        Ok(more)
    }

    /// What `v` merged into the store would be, with the held value's size and the
    /// new one; [`Full`] past a bound.
    fn admit(&self, g: &Inner, v: &AlertActions) -> Result<(AlertActions, usize, usize), Full> {
        let held = g.by_alert.get(&v.alert_id);
        let old_size = held.map_or(0, size);
        let merged = match held {
            Some(held) => held.clone().merge(v),
            None if g.by_alert.len() >= self.max_alerts => return Err(Full),
            None => {
                let mut v = v.clone();
                v.normalize();
                v
            }
        };
        let new_size = size(&merged);
        if new_size > old_size && g.bytes - old_size + new_size > self.max_bytes {
            return Err(Full);
        }
        Ok((merged, old_size, new_size))
    }

    /// Forgets `alert_id` (a tombstone in the topic).
    pub fn remove(&self, alert_id: &str) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = g.by_alert.remove(alert_id) {
            g.bytes -= size(&v);
            if let Some(set) = g.by_account.get_mut(&v.account_id) {
                set.remove(alert_id);
                if set.is_empty() {
                    g.by_account.remove(&v.account_id);
                }
            }
        }
    }

    /// Whether `v` could be applied now (within both bounds).
    pub fn has_room_for(&self, v: &AlertActions) -> bool {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        self.admit(&g, v).is_ok()
    }

    pub fn get(&self, alert_id: &str) -> Option<AlertActions> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_alert
            .get(alert_id)
            .cloned()
    }

    /// What the latest action says about `alert_id` now (None: open).
    pub fn state(&self, alert_id: &str) -> Option<ActionState> {
        self.state_at(alert_id, self.now())
    }

    pub fn state_at(&self, alert_id: &str, now: Millis) -> Option<ActionState> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_alert
            .get(alert_id)?
            .state(now)
    }

    /// The latest end of a snooze or "not a risk" running at `now` on any alert of
    /// `account_id` of `kind` (None: there is none). Such an action quiets every alert
    /// of that account and kind, not only its own (the notifier asks).
    pub fn quiet_until(&self, account_id: &str, kind: &str, now: Millis) -> Option<Millis> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        quieting(&g, account_id, now)
            .filter(|q| q.kind == kind)
            .map(|q| q.until_ms)
            .max()
    }

    /// For each kind of `account_id`'s alerts quieted at `now` by a snooze or "not a
    /// risk": the alert whose action quiets it (the one running longest) and that
    /// action's state. What [`quiet_until`](Self::quiet_until) tells the notifier, so
    /// the inbox can show an alert quiet because another of its kind was snoozed.
    pub fn quiet_of_account(
        &self,
        account_id: &str,
        now: Millis,
    ) -> std::collections::BTreeMap<String, (String, ActionState)> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut longest = std::collections::BTreeMap::<&str, Quieting<'_>>::new();
        for q in quieting(&g, account_id, now) {
            if longest.get(q.kind).is_none_or(|l| q.until_ms > l.until_ms) {
                longest.insert(q.kind, q);
            }
        }
        longest
            .into_iter()
            .map(|(kind, q)| (kind.to_string(), (q.alert_id.clone(), q.state)))
            .collect()
    }

    /// Every action on the alerts of `account_id`, newest first.
    pub fn of_account(&self, account_id: &str) -> Vec<ActionRecord> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<ActionRecord> = g
            .by_account
            .get(account_id)
            .into_iter()
            .flatten()
            .filter_map(|id| g.by_alert.get(id))
            .flat_map(|a| a.history.iter().cloned())
            .collect();
        v.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then(a.alert_id.cmp(&b.alert_id)));
        v
    }

    /// Alerts whose latest action was taken, and whose `until` ran out, before
    /// `before`: what the follower deletes from the topic (see
    /// [`KEEP`](super::follow::KEEP)).
    pub fn ended_before(&self, before: Millis) -> Vec<String> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_alert
            .values()
            .filter(|v| {
                v.latest()
                    .is_some_and(|a| a.at_ms.max(a.until_ms.unwrap_or(Millis::MIN)) < before)
            })
            .map(|v| v.alert_id.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_alert
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::record::ActionKind;

    fn act(alert: &str, kind: ActionKind, at: Millis, until: Option<Millis>) -> ActionRecord {
        ActionRecord::sample(alert, kind, at, until)
    }

    #[test]
    fn state_follows_the_latest_value_and_the_clock() {
        let now = Arc::new(std::sync::atomic::AtomicI64::new(100));
        let n2 = now.clone();
        let store = Actions::new(
            2,
            Arc::new(move || n2.load(std::sync::atomic::Ordering::Relaxed)),
        );
        let a = "acme/inactive/1";
        store
            .apply(AlertActions::with(
                None,
                act(a, ActionKind::Snooze, 50, Some(200)),
            ))
            .unwrap();
        assert!(matches!(
            store.state(a),
            Some(ActionState::Snoozed { until_ms: 200, .. })
        ));
        now.store(200, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(store.state(a), None, "the snooze ran out");
        assert_eq!(store.state("acme/inactive/2"), None);
        // A later value replaces the earlier one.
        let v = AlertActions::with(store.get(a), act(a, ActionKind::Acknowledge, 210, None));
        store.apply(v).unwrap();
        assert!(matches!(
            store.state(a),
            Some(ActionState::Acknowledged { at_ms: 210, .. })
        ));
        assert_eq!(store.of_account("acme").len(), 2);
        assert_eq!(store.of_account("acme")[0].at_ms, 210, "newest first");
        assert!(store.of_account("globex").is_empty());
    }

    #[test]
    fn a_snooze_quiets_its_account_and_kind_until_it_ends() {
        let store = Actions::new(10, Arc::new(|| 0));
        let put = |a: ActionRecord| {
            store
                .apply(AlertActions::with(store.get(&a.alert_id), a))
                .unwrap()
        };
        put(act("acme/inactive/1", ActionKind::Snooze, 10, Some(100)));
        put(act("acme/inactive/2", ActionKind::NotARisk, 10, Some(300)));
        put(act(
            "acme/activity_drop/1",
            ActionKind::Acknowledge,
            10,
            None,
        ));
        assert_eq!(store.quiet_until("acme", "inactive", 50), Some(300));
        assert_eq!(store.quiet_until("acme", "activity_drop", 50), None);
        assert_eq!(store.quiet_until("acme", "not_activated", 50), None);
        assert_eq!(store.quiet_until("globex", "inactive", 50), None);
        let q = store.quiet_of_account("acme", 50);
        assert_eq!(q.len(), 1, "only a snooze or not a risk quiets: {q:?}");
        assert_eq!(
            q["inactive"].0, "acme/inactive/2",
            "the one running longest"
        );
        // Reopened: that one no longer counts; the other runs out at 300.
        put(act("acme/inactive/2", ActionKind::Reopen, 60, None));
        assert_eq!(
            store.quiet_of_account("acme", 60)["inactive"].0,
            "acme/inactive/1"
        );
        assert_eq!(store.quiet_until("acme", "inactive", 60), Some(100));
        assert_eq!(store.quiet_until("acme", "inactive", 100), None);
    }

    #[test]
    fn the_store_is_bounded_and_tombstones_forget() {
        let store = Actions::new(2, Arc::new(|| 0));
        for (i, id) in ["acme/inactive/1", "globex/inactive/1"].iter().enumerate() {
            store
                .apply(AlertActions::with(
                    None,
                    act(id, ActionKind::Acknowledge, i as i64, None),
                ))
                .unwrap();
        }
        let third = AlertActions::with(
            None,
            act("initech/inactive/1", ActionKind::Acknowledge, 5, None),
        );
        assert!(!store.has_room_for(&third));
        assert_eq!(store.apply(third.clone()), Err(Full));
        assert_eq!(store.len(), 2);
        // An alert already held may still change.
        let reopen = AlertActions::with(
            store.get("acme/inactive/1"),
            act("acme/inactive/1", ActionKind::Reopen, 9, None),
        );
        assert!(store.has_room_for(&reopen));
        store.apply(reopen).unwrap();
        store.remove("acme/inactive/1");
        assert!(store.get("acme/inactive/1").is_none());
        assert!(store.of_account("acme").is_empty());
        store.apply(third).unwrap();
        assert_eq!(store.len(), 2);
        // Old actions end; a snooze ends when it runs out, not when it was taken.
        store
            .apply(AlertActions::with(
                None,
                act("acme/inactive/2", ActionKind::Snooze, 1, Some(100)),
            ))
            .unwrap_err();
        store.remove("initech/inactive/1");
        store
            .apply(AlertActions::with(
                None,
                act("acme/inactive/2", ActionKind::Snooze, 1, Some(100)),
            ))
            .unwrap();
        assert_eq!(
            store.ended_before(50),
            vec!["globex/inactive/1".to_string()]
        );
        let mut ended = store.ended_before(101);
        ended.sort();
        assert_eq!(ended, ["acme/inactive/2", "globex/inactive/1"]);
    }

    #[test]
    fn the_bytes_held_are_bounded_and_freed_by_tombstones() {
        let long = |id: &str, at: Millis| {
            let mut a = act(id, ActionKind::Snooze, at, Some(at + 10));
            a.reason = "x".repeat(900);
            a
        };
        let one = size(&AlertActions::with(None, long("acme/inactive/1", 1)));
        let store = Actions::new(100, Arc::new(|| 0)).with_max_bytes(3 * one);
        for i in 1..=3 {
            let id = format!("acme/inactive/{i}");
            store.apply(AlertActions::with(None, long(&id, 1))).unwrap();
        }
        // A fourth alert, or one more action on a held one: over the budget.
        let fourth = AlertActions::with(None, long("acme/inactive/4", 1));
        assert!(!store.has_room_for(&fourth));
        assert_eq!(store.apply(fourth.clone()), Err(Full));
        let grown = AlertActions::with(store.get("acme/inactive/1"), long("acme/inactive/1", 2));
        assert_eq!(store.apply(grown), Err(Full));
        assert_eq!(store.of_account("acme").len(), 3, "nothing was evicted");
        // A value that adds nothing is still taken (a late copy of what is held).
        assert_eq!(
            store.apply(store.get("acme/inactive/2").unwrap()),
            Ok(false)
        );
        store.remove("acme/inactive/3");
        store.apply(fourth).unwrap();
    }
}
