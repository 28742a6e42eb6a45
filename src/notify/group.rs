//! Batching of notifications per receiver and owner, with Alertmanager's timing: the
//! first alert of a group waits `group_wait` for others to join it, later ones go out at
//! most once per `group_interval`, alerts still firing are repeated after
//! `repeat_interval`, and critical alerts go out at once. Pure: the caller passes the
//! time, delivers what `due` returns and reports back with `delivered`.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::render::Notification;
use crate::time::Millis;

/// Timing of the batches.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub group_wait: Millis,
    pub group_interval: Millis,
    pub repeat_interval: Millis,
    pub send_resolved: bool,
}

#[derive(Debug, Default)]
struct Group {
    owner_chat: Option<String>,
    /// Records waiting for the next notification of this group, in arrival order.
    pending: Vec<Value>,
    /// Firing alerts of the group by id, with when they were last notified.
    firing: BTreeMap<String, (Value, Option<Millis>)>,
    next_flush: Option<Millis>,
    last_flush: Option<Millis>,
}

/// Groups keyed by (receiver, owner).
#[derive(Debug)]
pub struct Grouper {
    timing: Timing,
    groups: BTreeMap<(String, String), Group>,
    /// The notification log: (alert id, status) -> when it was delivered.
    sent: HashMap<(String, String), Millis>,
    /// Records dropped from a batch before it left (a firing superseded by its
    /// resolution), per receiver: (receiver, id, status).
    superseded: Vec<(String, String, String)>,
}

fn field<'a>(r: &'a Value, k: &str) -> &'a str {
    r.get(k).and_then(Value::as_str).unwrap_or("")
}

impl Grouper {
    pub fn new(timing: Timing) -> Grouper {
        Grouper {
            timing,
            groups: BTreeMap::new(),
            sent: HashMap::new(),
            superseded: Vec::new(),
        }
    }

    /// Remembers an earlier delivery (restored from the notification log).
    pub fn remember(&mut self, id: &str, status: &str, at: Millis) {
        self.sent.insert((id.to_string(), status.to_string()), at);
    }

    /// Whether this transition was already delivered.
    pub fn was_sent(&self, id: &str, status: &str) -> bool {
        self.sent
            .contains_key(&(id.to_string(), status.to_string()))
    }

    /// Adds an alert record routed to `receiver` for `owner`. Returns false when it is
    /// a transition already delivered (or a resolved notice not wanted).
    pub fn add(
        &mut self,
        now: Millis,
        receiver: &str,
        owner: &str,
        owner_chat: Option<String>,
        record: Value,
    ) -> bool {
        let id = field(&record, "id").to_string();
        let status = field(&record, "status").to_string();
        let critical = field(&record, "severity") == "critical";
        let g = self
            .groups
            .entry((receiver.to_string(), owner.to_string()))
            .or_default();
        if owner_chat.is_some() {
            g.owner_chat = owner_chat;
        }
        match status.as_str() {
            "firing" => {
                g.firing.insert(id.clone(), (record.clone(), None));
            }
            _ => {
                g.firing.remove(&id);
                // A firing record still waiting is superseded by its resolution.
                let before = g.pending.len();
                g.pending.retain(|r| field(r, "id") != id);
                if g.pending.len() != before {
                    self.superseded
                        .push((receiver.to_string(), id.clone(), "firing".to_string()));
                }
            }
        }
        if self.sent.contains_key(&(id.clone(), status.clone()))
            || (status == "resolved" && !self.timing.send_resolved)
        {
            return false;
        }
        if g.pending
            .iter()
            .any(|r| field(r, "id") == id && field(r, "status") == status)
        {
            return false;
        }
        g.pending.push(record);
        let at = match g.last_flush {
            _ if critical => now,
            None => now + self.timing.group_wait,
            Some(last) => (last + self.timing.group_interval).max(now),
        };
        g.next_flush = Some(g.next_flush.map_or(at, |n| n.min(at)));
        true
    }

    /// Notifications due at `now`: groups whose batch is ready, and repeats of alerts
    /// still firing after `repeat_interval`.
    pub fn due(&mut self, now: Millis) -> Vec<Notification> {
        let mut out = Vec::new();
        let repeat = self.timing.repeat_interval;
        for ((receiver, owner), g) in self.groups.iter_mut() {
            // Repeats join the group's next batch.
            for (id, (rec, last)) in g.firing.iter() {
                if let Some(l) = last {
                    if now >= l + repeat && !g.pending.iter().any(|r| field(r, "id") == id) {
                        g.pending.push(rec.clone());
                        g.next_flush = Some(g.next_flush.map_or(now, |n| n.min(now)));
                    }
                }
            }
            match g.next_flush {
                Some(at) if at <= now && !g.pending.is_empty() => {
                    // The repeat clock restarts when a batch leaves, delivered or not, so
                    // a failing receiver is not asked again on every tick.
                    for a in &g.pending {
                        if let Some(entry) = g.firing.get_mut(field(a, "id")) {
                            if field(a, "status") == "firing" {
                                entry.1 = Some(now);
                            }
                        }
                    }
                    out.push(Notification {
                        receiver: receiver.clone(),
                        owner: owner.clone(),
                        owner_chat: g.owner_chat.clone(),
                        alerts: std::mem::take(&mut g.pending),
                    });
                    g.last_flush = Some(now);
                    g.next_flush = None;
                }
                _ => {}
            }
        }
        out
    }

    /// Records a delivered notification in the notification log.
    pub fn delivered(&mut self, n: &Notification, now: Millis) {
        for a in &n.alerts {
            self.sent.insert(
                (field(a, "id").to_string(), field(a, "status").to_string()),
                now,
            );
        }
    }

    /// The earliest time something may become due.
    pub fn next_wakeup(&self) -> Option<Millis> {
        let repeat = self.timing.repeat_interval;
        self.groups
            .values()
            .flat_map(|g| {
                g.next_flush
                    .filter(|_| !g.pending.is_empty())
                    .into_iter()
                    .chain(
                        g.firing
                            .values()
                            .filter_map(move |(_, last)| last.map(|l| l + repeat)),
                    )
            })
            .min()
    }

    /// Takes the records dropped from batches since the last call.
    pub fn take_superseded(&mut self) -> Vec<(String, String, String)> {
        std::mem::take(&mut self.superseded)
    }

    /// Alerts waiting in batches.
    pub fn pending(&self) -> usize {
        self.groups.values().map(|g| g.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const S: Millis = 1000;

    fn timing() -> Timing {
        Timing {
            group_wait: 30 * S,
            group_interval: 300 * S,
            repeat_interval: 86_400 * S,
            send_resolved: true,
        }
    }

    fn rec(id: &str, status: &str, severity: &str) -> Value {
        json!({"id": id, "status": status, "severity": severity})
    }

    fn ids(ns: &[Notification]) -> Vec<Vec<String>> {
        ns.iter()
            .map(|n| {
                n.alerts
                    .iter()
                    .map(|a| format!("{}:{}", field(a, "id"), field(a, "status")))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn waits_for_the_group_then_batches_by_interval() {
        let mut g = Grouper::new(timing());
        assert!(g.add(
            0,
            "csm",
            "ana",
            None,
            rec("a/inactive/1", "firing", "warning")
        ));
        assert!(g.add(
            10 * S,
            "csm",
            "ana",
            None,
            rec("a/activity_drop/1", "firing", "warning")
        ));
        assert!(g.add(
            10 * S,
            "csm",
            "ben",
            None,
            rec("b/inactive/1", "firing", "warning")
        ));
        assert!(g.due(29 * S).is_empty());
        assert_eq!(g.next_wakeup(), Some(30 * S));
        let first = g.due(30 * S);
        // The same account's two alerts travel together; ben waits for his own group_wait.
        assert_eq!(
            ids(&first),
            [["a/inactive/1:firing", "a/activity_drop/1:firing"]]
        );
        g.delivered(&first[0], 30 * S);
        assert_eq!(ids(&g.due(40 * S)), [["b/inactive/1:firing"]]);
        // A later alert for ana waits for group_interval after her last batch.
        assert!(g.add(
            60 * S,
            "csm",
            "ana",
            None,
            rec("c/inactive/1", "firing", "warning")
        ));
        assert!(g.due(329 * S).is_empty());
        assert_eq!(ids(&g.due(330 * S)), [["c/inactive/1:firing"]]);
    }

    #[test]
    fn critical_goes_at_once_and_duplicates_are_dropped() {
        let mut g = Grouper::new(timing());
        assert!(g.add(
            0,
            "csm",
            "ana",
            None,
            rec("a/not_activated/x+90d", "firing", "critical")
        ));
        let n = g.due(0);
        assert_eq!(ids(&n), [["a/not_activated/x+90d:firing"]]);
        g.delivered(&n[0], 0);
        assert!(!g.add(
            5 * S,
            "csm",
            "ana",
            None,
            rec("a/not_activated/x+90d", "firing", "critical")
        ));
        assert!(g.due(1000 * S).is_empty());
    }

    #[test]
    fn resolution_supersedes_a_pending_firing_and_is_sent_once() {
        let mut g = Grouper::new(timing());
        g.add(
            0,
            "csm",
            "ana",
            None,
            rec("a/inactive/1", "firing", "warning"),
        );
        g.add(
            5 * S,
            "csm",
            "ana",
            None,
            rec("a/inactive/1", "resolved", "warning"),
        );
        let n = g.due(30 * S);
        assert_eq!(ids(&n), [["a/inactive/1:resolved"]]);
        assert_eq!(
            g.take_superseded(),
            [(
                "csm".to_string(),
                "a/inactive/1".to_string(),
                "firing".to_string()
            )]
        );
        let mut quiet = Grouper::new(Timing {
            send_resolved: false,
            ..timing()
        });
        assert!(!quiet.add(
            0,
            "csm",
            "ana",
            None,
            rec("a/inactive/1", "resolved", "warning")
        ));
    }

    #[test]
    fn still_firing_alerts_repeat() {
        let mut g = Grouper::new(timing());
        g.add(
            0,
            "csm",
            "ana",
            None,
            rec("a/inactive/1", "firing", "warning"),
        );
        let n = g.due(30 * S);
        g.delivered(&n[0], 30 * S);
        assert_eq!(g.next_wakeup(), Some(30 * S + 86_400 * S));
        assert!(g.due(86_400 * S).is_empty());
        assert_eq!(ids(&g.due(86_430 * S)), [["a/inactive/1:firing"]]);
        // Once resolved, it stops repeating.
        let n = g.due(86_430 * S);
        assert!(n.is_empty());
        g.add(
            90_000 * S,
            "csm",
            "ana",
            None,
            rec("a/inactive/1", "resolved", "warning"),
        );
        assert_eq!(g.pending(), 1);
    }

    #[test]
    fn the_notification_log_survives_through_remember() {
        let mut g = Grouper::new(timing());
        g.remember("a/inactive/1", "firing", 0);
        assert!(g.was_sent("a/inactive/1", "firing"));
        assert!(!g.add(
            10 * S,
            "csm",
            "ana",
            None,
            rec("a/inactive/1", "firing", "warning")
        ));
        assert!(g.add(
            10 * S,
            "csm",
            "ana",
            None,
            rec("a/inactive/1", "resolved", "warning")
        ));
    }
}
