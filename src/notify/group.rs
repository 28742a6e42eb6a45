//! Batching of notifications per receiver and owner, with Alertmanager's timing: the
//! first alert of a group waits `group_wait` for others to join it, later ones go out at
//! most once per `group_interval`, alerts still firing are repeated after
//! `repeat_interval`, and critical alerts go out at once. With a daily digest, alerts of
//! the digest's severities (warnings) are held and go out together at a local hour in
//! the owner's time zone. People's actions on alerts are honoured at the same points
//! (see [`super::honour`]): a held alert is not repeated, and a firing (or a resolution
//! nobody was told the firing of) about to leave is withheld instead. Pure: the caller
//! passes the time and the actions, delivers what `due_with` returns and reports back
//! with `delivered`.

use std::collections::{BTreeMap, HashMap};

use jiff::tz::TimeZone;

use super::honour::{ActionLookup, Hold, NoActions};
use super::render::Notification;
use crate::config::Severity;
use crate::engine::Status;
use crate::record::AlertRecord;
use crate::time::Millis;

const HOUR: Millis = 3_600_000;

/// Alerts in one notification, at most; a larger batch goes as several.
pub const MAX_BATCH_ALERTS: usize = 500;
/// Serialized size of one notification's alerts, at most: its write-ahead record in
/// the notification log must stay under the producer's `message.max.bytes` (1 MB).
pub const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Firing alerts a group remembers for repeats; past it the least recently notified
/// is forgotten (it repeats no more until it fires again).
pub const MAX_FIRING_PER_GROUP: usize = 10_000;

/// Cuts a batch into notifications within [`MAX_BATCH_ALERTS`] and
/// [`MAX_BATCH_BYTES`], in order. A record larger than the byte cap goes alone.
fn split_batch(alerts: Vec<AlertRecord>) -> Vec<Vec<AlertRecord>> {
    let mut out: Vec<Vec<AlertRecord>> = Vec::new();
    let mut size = 0;
    for a in alerts {
        let len = serde_json::to_string(&a).map_or(0, |t| t.len());
        match out.last_mut() {
            Some(cur) if cur.len() < MAX_BATCH_ALERTS && size + len <= MAX_BATCH_BYTES => {
                size += len;
                cur.push(a);
            }
            _ => {
                size = len;
                out.push(vec![a]);
            }
        }
    }
    out
}

/// Timing of the batches.
#[derive(Debug, Clone)]
pub struct Timing {
    pub group_wait: Millis,
    pub group_interval: Millis,
    pub repeat_interval: Millis,
    pub send_resolved: bool,
    /// The daily digest, if any.
    pub digest: Option<Digest>,
}

impl Timing {
    /// The timing of `[notify]`.
    pub fn from_config(n: &crate::config::NotifyConfig) -> Timing {
        Timing {
            group_wait: n.group_wait.0,
            group_interval: n.group_interval.0,
            repeat_interval: n.repeat_interval.0,
            send_resolved: n.send_resolved,
            digest: (n.digest_hour >= 0).then(|| Digest {
                hour: n.digest_hour as i8,
                severities: n.digest_severities.clone(),
                // Validated with the config.
                default_tz: TimeZone::get(&n.default_timezone).unwrap_or(TimeZone::UTC),
            }),
        }
    }
}

/// A daily digest: alerts of `severities` are held and sent once a day, at the first
/// instant the owner's local clock reaches `hour`.
#[derive(Debug, Clone)]
pub struct Digest {
    /// Local hour, 0-23.
    pub hour: i8,
    pub severities: Vec<Severity>,
    /// For owners whose accounts name no (known) time zone.
    pub default_tz: TimeZone,
}

impl Digest {
    /// The first instant at or after `after` at which the local clock in `tz` reaches
    /// `hour:00`. In a gap (the clock jumps over the hour) that is the instant of the
    /// jump; in a fold (the hour happens twice) the first time.
    pub fn next_at(&self, after: Millis, tz: &TimeZone) -> Millis {
        let fallback = after + 24 * HOUR;
        let Ok(ts) = jiff::Timestamp::from_millisecond(after) else {
            return fallback;
        };
        let mut date = ts.to_zoned_datetime(tz.clone()).date();
        for _ in 0..3 {
            let Ok(at) = date
                .at(self.hour, 0, 0, 0)
                .to_zoned_datetime(tz.clone())
                .map(|z| z.timestamp().as_millisecond())
            else {
                return fallback;
            };
            if at >= after {
                return at;
            }
            match date.tomorrow() {
                Ok(d) => date = d,
                Err(_) => return fallback,
            }
        }
        fallback
    }
}

/// A firing alert a group remembers, for its repeats.
#[derive(Debug)]
struct Firing {
    record: AlertRecord,
    /// When it last left in a notification (None: not yet).
    last: Option<Millis>,
    /// Its firing was withheld because of an action, so its owner was never told: it
    /// goes out as soon as no action holds it any more.
    owed: bool,
}

#[derive(Debug, Default)]
struct Group {
    owner_chat: Option<String>,
    /// Records waiting for the next notification of this group, in arrival order.
    pending: Vec<AlertRecord>,
    /// Records held for the next digest of this group, in arrival order.
    held: Vec<AlertRecord>,
    /// When the held records go out.
    digest_at: Option<Millis>,
    /// The owner's time zone (of the latest record that named one).
    tz: Option<TimeZone>,
    /// Firing alerts of the group by id, with when they were last notified.
    firing: BTreeMap<String, Firing>,
    next_flush: Option<Millis>,
    last_flush: Option<Millis>,
}

impl Group {
    /// Sends `alerts` (taken from the batch or the digest) as notifications. The repeat
    /// clock of their firing alerts restarts when they leave, delivered or not, so a
    /// failing receiver is not asked again on every tick.
    fn flush(
        &mut self,
        alerts: Vec<AlertRecord>,
        now: Millis,
        receiver: &str,
        owner: &str,
        digest: bool,
        out: &mut Vec<Notification>,
    ) {
        for a in alerts.iter().filter(|a| a.is_firing()) {
            if let Some(entry) = self.firing.get_mut(&a.id) {
                entry.last = Some(now);
                entry.owed = false;
            }
        }
        for alerts in split_batch(alerts) {
            out.push(Notification {
                receiver: receiver.to_string(),
                owner: owner.to_string(),
                owner_chat: self.owner_chat.clone(),
                alerts,
                digest,
            });
        }
    }
}

/// Groups keyed by (receiver, owner).
#[derive(Debug)]
pub struct Grouper {
    timing: Timing,
    groups: BTreeMap<(String, String), Group>,
    /// The notification log: (receiver, alert id, status) -> when it was delivered.
    /// Per receiver: one alert routed to two receivers is two deliveries, which may
    /// be decided at different times (and by different instances).
    sent: HashMap<(String, String, String), Millis>,
    /// Records dropped from a batch before it left (a firing superseded by its
    /// resolution), per receiver: (receiver, id, status).
    superseded: Vec<(String, String, String)>,
    /// Records withheld from a batch because of an action on the alert (not delivered,
    /// not remembered as sent), per receiver: (receiver, id, status).
    withheld: Vec<(String, String, String)>,
    /// Time zones by name (None: not a known zone).
    zones: HashMap<String, Option<TimeZone>>,
}

impl Grouper {
    pub fn new(timing: Timing) -> Grouper {
        Grouper {
            timing,
            groups: BTreeMap::new(),
            sent: HashMap::new(),
            superseded: Vec::new(),
            withheld: Vec::new(),
            zones: HashMap::new(),
        }
    }

    /// Whether a record goes to the digest rather than a normal batch.
    fn for_digest(&self, record: &AlertRecord) -> bool {
        self.timing
            .digest
            .as_ref()
            .is_some_and(|d| d.severities.contains(&record.severity))
    }

    /// When a firing alert last notified at `last` is due again: after
    /// `repeat_interval`; for digest alerts up to an hour earlier, so that a day made
    /// shorter by a DST change does not skip a digest.
    fn repeat_due(&self, record: &AlertRecord, last: Millis) -> Millis {
        let r = self.timing.repeat_interval;
        if self.for_digest(record) {
            last + (r - HOUR).max(r / 2)
        } else {
            last + r
        }
    }

    /// The time zone named by a record's account metadata, if it is a known one.
    fn zone_of(&mut self, record: &AlertRecord) -> Option<TimeZone> {
        let name = record
            .account
            .as_ref()
            .and_then(|m| m.timezone.as_deref())
            .filter(|n| !n.is_empty())?;
        self.zones
            .entry(name.to_string())
            .or_insert_with(|| match TimeZone::get(name) {
                Ok(tz) => Some(tz),
                Err(e) => {
                    tracing::warn!(timezone = name, error = %e, "unknown time zone in account metadata; using notify.default_timezone");
                    None
                }
            })
            .clone()
    }

    /// Remembers an earlier delivery to `receiver` (restored from the notification
    /// log).
    pub fn remember(&mut self, receiver: &str, id: &str, status: &str, at: Millis) {
        self.sent.insert(
            (receiver.to_string(), id.to_string(), status.to_string()),
            at,
        );
    }

    /// Whether this transition was already delivered to `receiver`.
    pub fn was_sent(&self, receiver: &str, id: &str, status: &str) -> bool {
        self.sent
            .contains_key(&(receiver.to_string(), id.to_string(), status.to_string()))
    }

    /// Adds an alert record routed to `receiver` for `owner`. Returns false when it is
    /// a transition already delivered (or a resolved notice not wanted).
    pub fn add(
        &mut self,
        now: Millis,
        receiver: &str,
        owner: &str,
        owner_chat: Option<String>,
        record: AlertRecord,
    ) -> bool {
        let id = record.id.clone();
        let status = record.status;
        let critical = record.severity == Severity::Critical;
        let digest = self.for_digest(&record);
        let zone = if digest { self.zone_of(&record) } else { None };
        let g = self
            .groups
            .entry((receiver.to_string(), owner.to_string()))
            .or_default();
        if owner_chat.is_some() {
            g.owner_chat = owner_chat;
        }
        if zone.is_some() {
            g.tz = zone;
        }
        match status {
            Status::Firing => {
                g.firing.insert(
                    id.clone(),
                    Firing {
                        record: record.clone(),
                        last: None,
                        owed: false,
                    },
                );
                if g.firing.len() > MAX_FIRING_PER_GROUP {
                    let oldest = g
                        .firing
                        .iter()
                        .filter(|(k, _)| **k != id)
                        .min_by_key(|(_, f)| f.last.unwrap_or(Millis::MAX))
                        .map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        g.firing.remove(&k);
                    }
                }
            }
            Status::Resolved => {
                g.firing.remove(&id);
                // A firing record still waiting (in a batch or for the digest) is
                // superseded by its resolution.
                let before = g.pending.len() + g.held.len();
                g.pending.retain(|r| r.id != id);
                g.held.retain(|r| r.id != id);
                if g.pending.len() + g.held.len() != before {
                    self.superseded
                        .push((receiver.to_string(), id.clone(), "firing".to_string()));
                }
            }
        }
        if self.sent.contains_key(&(
            receiver.to_string(),
            id.clone(),
            status.as_str().to_string(),
        )) || (status == Status::Resolved && !self.timing.send_resolved)
        {
            return false;
        }
        if g.pending
            .iter()
            .chain(&g.held)
            .any(|r| r.id == id && r.status == status)
        {
            return false;
        }
        if let (true, Some(d)) = (digest, &self.timing.digest) {
            g.held.push(record);
            if g.digest_at.is_none() {
                g.digest_at = Some(d.next_at(now, g.tz.as_ref().unwrap_or(&d.default_tz)));
            }
            return true;
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
    /// still firing after `repeat_interval`. No action is honoured.
    pub fn due(&mut self, now: Millis) -> Vec<Notification> {
        self.due_with(now, &NoActions)
    }

    /// [`Grouper::due`], honouring `actions`: an alert an action holds is not repeated
    /// (nor re-listed in a digest); a firing record about to leave while an action holds
    /// its alert is withheld, and goes out once no action holds it; a resolution is
    /// withheld when a snooze or "not a risk" quiets its alert and the receiver was
    /// never told it fired. Withheld records are taken with [`Grouper::take_withheld`].
    pub fn due_with(&mut self, now: Millis, actions: &dyn ActionLookup) -> Vec<Notification> {
        let mut out = Vec::new();
        let mut groups = std::mem::take(&mut self.groups);
        for ((receiver, owner), g) in groups.iter_mut() {
            // Repeats join the group's next batch (digest alerts: its next digest).
            for (id, f) in g.firing.iter() {
                let Some(l) = f.last else { continue };
                if (!f.owed && now < self.repeat_due(&f.record, l))
                    || g.pending.iter().chain(&g.held).any(|r| r.id == *id)
                    || actions.hold(&f.record, now).is_some()
                {
                    continue;
                }
                let rec = &f.record;
                match &self.timing.digest {
                    Some(d) if self.for_digest(rec) => {
                        g.held.push(rec.clone());
                        if g.digest_at.is_none() {
                            g.digest_at =
                                Some(d.next_at(now, g.tz.as_ref().unwrap_or(&d.default_tz)));
                        }
                    }
                    _ => {
                        g.pending.push(rec.clone());
                        g.next_flush = Some(g.next_flush.map_or(now, |n| n.min(now)));
                    }
                }
            }
            if g.digest_at.is_some_and(|at| at <= now) {
                g.digest_at = None;
                let held = std::mem::take(&mut g.held);
                let held = self.withhold(g, held, receiver, now, actions);
                g.flush(held, now, receiver, owner, true, &mut out);
            }
            if g.next_flush.is_some_and(|at| at <= now) && !g.pending.is_empty() {
                let pending = std::mem::take(&mut g.pending);
                let pending = self.withhold(g, pending, receiver, now, actions);
                g.flush(pending, now, receiver, owner, false, &mut out);
                g.last_flush = Some(now);
                g.next_flush = None;
            }
        }
        // A group with nothing waiting, held or firing is forgotten.
        groups.retain(|_, g| !(g.pending.is_empty() && g.held.is_empty() && g.firing.is_empty()));
        self.groups = groups;
        out
    }

    /// Takes out of `alerts` (about to leave to `receiver`) the records an action
    /// withholds: a firing record while any action holds its alert (it is then owed:
    /// its repeat clock starts now, and it goes out once nothing holds it), and a
    /// resolution while a snooze or "not a risk" quiets its alert, unless its firing
    /// was delivered to `receiver` (the notification log says so). An acknowledged
    /// alert's resolution always goes out.
    fn withhold(
        &mut self,
        g: &mut Group,
        alerts: Vec<AlertRecord>,
        receiver: &str,
        now: Millis,
        actions: &dyn ActionLookup,
    ) -> Vec<AlertRecord> {
        let mut kept = Vec::with_capacity(alerts.len());
        for a in alerts {
            let withheld = match (a.status, actions.hold(&a, now)) {
                (_, None) => false,
                (Status::Firing, Some(_)) => {
                    if let Some(f) = g.firing.get_mut(&a.id) {
                        f.last = Some(now);
                        f.owed = true;
                    }
                    true
                }
                (Status::Resolved, Some(Hold::Acknowledged)) => false,
                (Status::Resolved, Some(Hold::Quiet { .. })) => {
                    !self.was_sent(receiver, &a.id, Status::Firing.as_str())
                }
            };
            if withheld {
                self.withheld.push((
                    receiver.to_string(),
                    a.id.clone(),
                    a.status.as_str().to_string(),
                ));
            } else {
                kept.push(a);
            }
        }
        kept
    }

    /// Takes the records withheld because of actions since the last call.
    pub fn take_withheld(&mut self) -> Vec<(String, String, String)> {
        std::mem::take(&mut self.withheld)
    }

    /// Forgets deliveries older than `retention` (their alerts are long past any
    /// re-read of the alerts topic); returns them, so that the caller can take them out
    /// of the notification log.
    pub fn prune(&mut self, now: Millis, retention: Millis) -> Vec<(String, String, String)> {
        let mut gone = Vec::new();
        self.sent.retain(|k, at| {
            let keep = *at >= now - retention;
            if !keep {
                gone.push(k.clone());
            }
            keep
        });
        gone
    }

    /// Deliveries remembered, and groups kept.
    pub fn sizes(&self) -> (usize, usize) {
        (self.sent.len(), self.groups.len())
    }

    /// Records a delivered notification in the notification log.
    pub fn delivered(&mut self, n: &Notification, now: Millis) {
        for a in &n.alerts {
            self.sent.insert(
                (
                    n.receiver.clone(),
                    a.id.clone(),
                    a.status.as_str().to_string(),
                ),
                now,
            );
        }
    }

    /// The earliest time something may become due.
    pub fn next_wakeup(&self) -> Option<Millis> {
        self.groups
            .values()
            .flat_map(|g| {
                g.next_flush
                    .filter(|_| !g.pending.is_empty())
                    .into_iter()
                    .chain(g.digest_at.filter(|_| !g.held.is_empty()))
                    .chain(
                        g.firing
                            .values()
                            .filter_map(|f| f.last.map(|l| self.repeat_due(&f.record, l))),
                    )
            })
            .min()
    }

    /// Takes the records dropped from batches since the last call.
    pub fn take_superseded(&mut self) -> Vec<(String, String, String)> {
        std::mem::take(&mut self.superseded)
    }

    /// Alerts waiting in batches or held for a digest.
    pub fn pending(&self) -> usize {
        self.groups
            .values()
            .map(|g| g.pending.len() + g.held.len())
            .sum()
    }

    /// Alerts held for a digest.
    pub fn held(&self) -> usize {
        self.groups.values().map(|g| g.held.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::DAY;
    use serde_json::json;

    const S: Millis = 1000;

    fn timing() -> Timing {
        Timing {
            group_wait: 30 * S,
            group_interval: 300 * S,
            repeat_interval: 86_400 * S,
            send_resolved: true,
            digest: None,
        }
    }

    fn rec(id: &str, status: &str, severity: &str) -> AlertRecord {
        let status = match status {
            "firing" => Status::Firing,
            _ => Status::Resolved,
        };
        AlertRecord::sample(id, status, serde_json::from_value(json!(severity)).unwrap())
    }

    /// Adds a firing warning for `owner` to the `csm` receiver.
    fn fire(g: &mut Grouper, now: Millis, owner: &str, id: &str) -> bool {
        g.add(now, "csm", owner, None, rec(id, "firing", "warning"))
    }

    /// Adds the resolution of a warning for `owner` to the `csm` receiver.
    fn resolve(g: &mut Grouper, now: Millis, owner: &str, id: &str) -> bool {
        g.add(now, "csm", owner, None, rec(id, "resolved", "warning"))
    }

    fn ids(ns: &[Notification]) -> Vec<Vec<String>> {
        ns.iter()
            .map(|n| {
                n.alerts
                    .iter()
                    .map(|a| format!("{}:{}", a.id, a.status.as_str()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn batches_are_bounded_and_old_deliveries_pruned() {
        let mut g = Grouper::new(timing());
        for i in 0..1_234 {
            assert!(fire(&mut g, 0, "ana", &format!("a{i}")));
        }
        let due = g.due(60 * S);
        assert_eq!(
            due.iter().map(|n| n.alerts.len()).collect::<Vec<_>>(),
            vec![500, 500, 234]
        );
        let ids: Vec<String> = due
            .iter()
            .flat_map(|n| n.alerts.iter().map(|a| a.id.clone()))
            .collect();
        assert_eq!(ids[0], "a0");
        assert_eq!(ids[1_233], "a1233");
        let big: Vec<AlertRecord> = (0..100)
            .map(|i| {
                let mut r = rec(&format!("b{i}"), "firing", "warning");
                r.summary = "x".repeat(20_000);
                r
            })
            .collect();
        let parts = split_batch(big);
        assert!(parts.len() > 3);
        assert!(parts
            .iter()
            .all(|p| serde_json::to_string(p).unwrap().len() <= MAX_BATCH_BYTES + 2));
        for n in &due {
            g.delivered(n, 60 * S);
        }
        assert_eq!(g.sizes().0, 1_234);
        g.remember("csm", "old", "firing", 0);
        let gone = g.prune(40 * DAY, 30 * DAY);
        assert_eq!(gone.len(), 1_235);
        assert_eq!(g.sizes().0, 0);
    }

    #[test]
    fn waits_for_the_group_then_batches_by_interval() {
        let mut g = Grouper::new(timing());
        assert!(fire(&mut g, 0, "ana", "a/inactive/1"));
        assert!(fire(&mut g, 10 * S, "ana", "a/activity_drop/1"));
        assert!(fire(&mut g, 10 * S, "ben", "b/inactive/1"));
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
        assert!(fire(&mut g, 60 * S, "ana", "c/inactive/1"));
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
        fire(&mut g, 0, "ana", "a/inactive/1");
        resolve(&mut g, 5 * S, "ana", "a/inactive/1");
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
        assert!(!resolve(&mut quiet, 0, "ana", "a/inactive/1"));
    }

    #[test]
    fn still_firing_alerts_repeat() {
        let mut g = Grouper::new(timing());
        fire(&mut g, 0, "ana", "a/inactive/1");
        let n = g.due(30 * S);
        g.delivered(&n[0], 30 * S);
        assert_eq!(g.next_wakeup(), Some(30 * S + 86_400 * S));
        assert!(g.due(86_400 * S).is_empty());
        assert_eq!(ids(&g.due(86_430 * S)), [["a/inactive/1:firing"]]);
        // Once resolved, it stops repeating.
        let n = g.due(86_430 * S);
        assert!(n.is_empty());
        resolve(&mut g, 90_000 * S, "ana", "a/inactive/1");
        assert_eq!(g.pending(), 1);
    }

    #[test]
    fn the_notification_log_survives_through_remember() {
        let mut g = Grouper::new(timing());
        g.remember("csm", "a/inactive/1", "firing", 0);
        assert!(g.was_sent("csm", "a/inactive/1", "firing"));
        assert!(
            !g.was_sent("team", "a/inactive/1", "firing"),
            "another receiver's delivery is its own"
        );
        assert!(!fire(&mut g, 10 * S, "ana", "a/inactive/1"));
        assert!(resolve(&mut g, 10 * S, "ana", "a/inactive/1"));
    }

    // --- Daily digest -------------------------------------------------------------

    fn t(rfc3339: &str) -> Millis {
        crate::time::parse_rfc3339(rfc3339).unwrap()
    }

    fn digest_timing(hour: i8) -> Timing {
        Timing {
            digest: Some(Digest {
                hour,
                severities: vec![Severity::Warning],
                default_tz: TimeZone::UTC,
            }),
            ..timing()
        }
    }

    /// An alert record of an account whose metadata names a time zone.
    fn zrec(id: &str, status: &str, severity: &str, tz: Option<&str>) -> AlertRecord {
        let mut r = rec(id, status, severity);
        if let Some(tz) = tz {
            r.account = Some(crate::accounts::AccountMeta {
                account_id: r.account_id.clone(),
                timezone: Some(tz.to_string()),
                ..Default::default()
            });
        }
        r
    }

    fn at(g: &mut Grouper, now: Millis) -> Vec<(String, bool, Vec<String>)> {
        g.due(now)
            .into_iter()
            .map(|n| {
                let alerts = ids(std::slice::from_ref(&n)).remove(0);
                (n.owner, n.digest, alerts)
            })
            .collect()
    }

    #[test]
    fn digest_instant_follows_the_local_clock_through_gaps_and_folds() {
        let ny = TimeZone::get("America/New_York").unwrap();
        let d = |hour| Digest {
            hour,
            severities: vec![],
            default_tz: TimeZone::UTC,
        };
        // 09:00 EST on Saturday, then 09:00 EDT on Sunday: only 23 hours apart.
        assert_eq!(
            d(9).next_at(t("2026-03-07T12:00:00Z"), &ny),
            t("2026-03-07T14:00:00Z")
        );
        assert_eq!(
            d(9).next_at(t("2026-03-07T14:00:00Z"), &ny),
            t("2026-03-07T14:00:00Z"),
            "the instant itself is due"
        );
        assert_eq!(
            d(9).next_at(t("2026-03-07T14:00:00.001Z"), &ny),
            t("2026-03-08T13:00:00Z")
        );
        // 02:00 does not exist on 2026-03-08 (01:59:59 EST -> 03:00 EDT): the clock
        // reaches the hour at the jump.
        assert_eq!(
            d(2).next_at(t("2026-03-08T05:00:00Z"), &ny),
            t("2026-03-08T07:00:00Z")
        );
        // 01:00 happens twice on 2026-11-01: the first one (EDT) counts, and the
        // second does not fire again.
        assert_eq!(
            d(1).next_at(t("2026-11-01T04:00:00Z"), &ny),
            t("2026-11-01T05:00:00Z")
        );
        assert_eq!(
            d(1).next_at(t("2026-11-01T05:00:00.001Z"), &ny),
            t("2026-11-02T06:00:00Z")
        );
    }

    #[test]
    fn digest_for_a_new_york_owner_across_the_dst_change() {
        let mut g = Grouper::new(digest_timing(9));
        let ny = Some("America/New_York");
        // Saturday 05:00 EST: held until 09:00 EST (14:00Z).
        assert!(g.add(
            t("2026-03-07T10:00:00Z"),
            "csm",
            "ana",
            None,
            zrec("a/inactive/1", "firing", "warning", ny)
        ));
        assert!(g.add(
            t("2026-03-07T10:05:00Z"),
            "csm",
            "ana",
            None,
            zrec("b/activity_drop/1", "firing", "warning", ny)
        ));
        assert_eq!(g.held(), 2);
        // group_wait has long passed, but warnings wait for the digest.
        assert!(at(&mut g, t("2026-03-07T13:59:59.999Z")).is_empty());
        assert_eq!(g.next_wakeup(), Some(t("2026-03-07T14:00:00Z")));
        let n = g.due(t("2026-03-07T14:00:00Z"));
        assert_eq!(
            ids(&n),
            [["a/inactive/1:firing", "b/activity_drop/1:firing"]]
        );
        assert!(n[0].digest);
        g.delivered(&n[0], t("2026-03-07T14:00:00Z"));
        // A warning after the digest waits for the next one: Sunday 09:00 EDT, which
        // is 13:00Z, 23 hours later.
        assert!(g.add(
            t("2026-03-07T15:00:00Z"),
            "csm",
            "ana",
            None,
            zrec("c/inactive/1", "firing", "warning", ny)
        ));
        assert!(at(&mut g, t("2026-03-08T12:59:59Z")).is_empty());
        // Still firing after a day: the two alerts repeat in Sunday's digest although
        // only 23 hours passed since Saturday's.
        assert_eq!(
            at(&mut g, t("2026-03-08T13:00:00Z")),
            [(
                "ana".to_string(),
                true,
                vec![
                    "c/inactive/1:firing".to_string(),
                    "a/inactive/1:firing".to_string(),
                    "b/activity_drop/1:firing".to_string()
                ]
            )]
        );
        // And again on Monday, not before.
        assert!(at(&mut g, t("2026-03-09T12:59:59Z")).is_empty());
        assert_eq!(at(&mut g, t("2026-03-09T13:00:00Z")).len(), 1);
    }

    #[test]
    fn owners_in_two_time_zones_get_their_digest_at_their_own_nine() {
        let mut g = Grouper::new(digest_timing(9));
        let now = t("2026-03-07T00:00:00Z");
        g.add(
            now,
            "csm",
            "ana",
            None,
            zrec(
                "a/inactive/1",
                "firing",
                "warning",
                Some("America/New_York"),
            ),
        );
        g.add(
            now,
            "csm",
            "ben",
            None,
            zrec("b/inactive/1", "firing", "warning", Some("Europe/Berlin")),
        );
        // No time zone, or an unknown one: notify.default_timezone (UTC here).
        g.add(
            now,
            "csm",
            "cara",
            None,
            zrec("c/inactive/1", "firing", "warning", None),
        );
        g.add(
            now,
            "csm",
            "dan",
            None,
            zrec(
                "d/inactive/1",
                "firing",
                "warning",
                Some("Mars/Olympus_Mons"),
            ),
        );
        assert!(at(&mut g, t("2026-03-07T07:59:59Z")).is_empty());
        let owners = |v: Vec<(String, bool, Vec<String>)>| -> Vec<String> {
            v.into_iter()
                .map(|(o, d, _)| {
                    assert!(d);
                    o
                })
                .collect()
        };
        assert_eq!(owners(at(&mut g, t("2026-03-07T08:00:00Z"))), ["ben"]);
        assert_eq!(
            owners(at(&mut g, t("2026-03-07T09:00:00Z"))),
            ["cara", "dan"]
        );
        assert!(at(&mut g, t("2026-03-07T13:59:00Z")).is_empty());
        assert_eq!(owners(at(&mut g, t("2026-03-07T14:00:00Z"))), ["ana"]);
    }

    #[test]
    fn critical_alerts_bypass_the_digest() {
        let mut g = Grouper::new(digest_timing(9));
        let now = t("2026-03-07T10:00:00Z");
        let ny = Some("America/New_York");
        g.add(
            now,
            "csm",
            "ana",
            None,
            zrec("a/inactive/1", "firing", "warning", ny),
        );
        g.add(
            now,
            "csm",
            "ana",
            None,
            zrec("b/not_activated/x+90d", "firing", "critical", ny),
        );
        // info is not a digest severity by default: normal batching (group_wait).
        g.add(
            now,
            "csm",
            "ben",
            None,
            zrec("c/inactive/1", "firing", "info", ny),
        );
        assert_eq!(
            at(&mut g, now),
            [(
                "ana".to_string(),
                false,
                vec!["b/not_activated/x+90d:firing".to_string()]
            )]
        );
        assert_eq!(
            at(&mut g, now + 30 * S),
            [(
                "ben".to_string(),
                false,
                vec!["c/inactive/1:firing".to_string()]
            )]
        );
        assert_eq!(
            at(&mut g, t("2026-03-07T14:00:00Z")),
            [(
                "ana".to_string(),
                true,
                vec!["a/inactive/1:firing".to_string()]
            )]
        );
    }

    #[test]
    fn a_warning_resolved_before_its_digest_is_not_sent_as_firing() {
        for send_resolved in [true, false] {
            let mut g = Grouper::new(Timing {
                send_resolved,
                ..digest_timing(9)
            });
            g.add(
                t("2026-03-07T01:00:00Z"),
                "csm",
                "ana",
                None,
                zrec("a/inactive/1", "firing", "warning", None),
            );
            g.add(
                t("2026-03-07T01:00:00Z"),
                "csm",
                "ana",
                None,
                zrec("b/inactive/1", "firing", "warning", None),
            );
            let accepted = g.add(
                t("2026-03-07T05:00:00Z"),
                "csm",
                "ana",
                None,
                zrec("a/inactive/1", "resolved", "warning", None),
            );
            assert_eq!(accepted, send_resolved);
            // The held firing is dropped (its offset may be committed).
            assert_eq!(
                g.take_superseded(),
                [(
                    "csm".to_string(),
                    "a/inactive/1".to_string(),
                    "firing".to_string()
                )]
            );
            let mut want = vec!["b/inactive/1:firing".to_string()];
            if send_resolved {
                want.push("a/inactive/1:resolved".to_string());
            }
            assert_eq!(
                at(&mut g, t("2026-03-07T09:00:00Z")),
                [("ana".to_string(), true, want)]
            );
        }
    }

    #[test]
    fn a_restart_neither_loses_nor_repeats_a_digest() {
        let records = [
            zrec("a/inactive/1", "firing", "warning", Some("Europe/Berlin")),
            zrec("b/inactive/1", "firing", "warning", Some("Europe/Berlin")),
        ];
        let mut first = Grouper::new(digest_timing(9));
        for r in &records {
            assert!(first.add(t("2026-03-07T10:00:00Z"), "csm", "ben", None, r.clone()));
        }
        // Killed before the digest: nothing was delivered or logged, and the held
        // records' offsets were not committed, so the next run reads them again. It
        // holds them for the same local hour.
        drop(first);
        let mut second = Grouper::new(digest_timing(9));
        for r in &records {
            assert!(second.add(t("2026-03-07T11:00:00Z"), "csm", "ben", None, r.clone()));
        }
        assert_eq!(second.next_wakeup(), Some(t("2026-03-08T08:00:00Z")));
        let n = second.due(t("2026-03-08T08:00:00Z"));
        assert_eq!(ids(&n), [["a/inactive/1:firing", "b/inactive/1:firing"]]);
        second.delivered(&n[0], t("2026-03-08T08:00:01Z"));
        // Killed after delivery but before the offsets were committed: the notification
        // log, read back at start, keeps the re-read records from a second digest.
        let mut third = Grouper::new(digest_timing(9));
        for r in &records {
            third.remember("csm", &r.id, "firing", t("2026-03-08T08:00:01Z"));
        }
        for r in &records {
            assert!(!third.add(t("2026-03-08T08:00:05Z"), "csm", "ben", None, r.clone()));
        }
        assert_eq!(third.held(), 0);
        assert!(third.due(t("2026-03-09T08:00:00Z")).is_empty());
    }
}
