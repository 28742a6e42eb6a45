//! The grouping stage's tasks, one per assigned partition of the repartition topic
//! (as Kafka Streams has one task per partition): each has its own grouper (batches,
//! digests, repeats, deliveries remembered) restored from its partition of the
//! notification log, the offsets of its records still outstanding, and the
//! write-ahead batches it found in the log and sends again. Assignment restores a task;
//! revocation commits and drops it, so that exactly one instance decides each
//! (receiver, owner)'s notifications at a time. The consumer's rebalance callbacks
//! live here too: they need the tasks and the router's positions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::ThreadedProducer;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, warn};

use super::super::group::{Grouper, Timing};
use super::super::render::Notification;
use super::log::{restore_partition, Restored};
use super::{Clock, Probe, Topics};
use crate::kafka::client::LogContext;
use crate::server::Health;

/// Offsets of records whose notifications are still outstanding.
#[derive(Debug, Default)]
pub struct Outstanding {
    by_partition: BTreeMap<i32, BTreeMap<i64, u32>>,
    by_alert: HashMap<(String, String, String), Vec<(i32, i64)>>,
}

impl Outstanding {
    /// A record at (partition, offset) now waits for a notification of `receiver`.
    pub fn open(&mut self, receiver: &str, id: &str, status: &str, partition: i32, offset: i64) {
        *self
            .by_partition
            .entry(partition)
            .or_default()
            .entry(offset)
            .or_default() += 1;
        self.by_alert
            .entry((receiver.to_string(), id.to_string(), status.to_string()))
            .or_default()
            .push((partition, offset));
    }

    /// A notification of `receiver` holding this alert left (delivered, dead-lettered or
    /// superseded).
    pub fn close(&mut self, receiver: &str, id: &str, status: &str) {
        let key = (receiver.to_string(), id.to_string(), status.to_string());
        if let Some(list) = self.by_alert.remove(&key) {
            for (p, off) in list {
                if let Some(m) = self.by_partition.get_mut(&p) {
                    if let Some(c) = m.get_mut(&off) {
                        *c -= 1;
                        if *c == 0 {
                            m.remove(&off);
                        }
                    }
                }
            }
        }
    }

    /// The offset to commit for a partition whose next offset to read is `position`.
    pub fn commit_point(&self, partition: i32, position: i64) -> i64 {
        self.by_partition
            .get(&partition)
            .and_then(|m| m.keys().next().copied())
            .map_or(position, |o| o.min(position))
    }
}

/// The state of one assigned partition of the repartition topic.
#[derive(Debug)]
pub struct Task {
    pub grouper: Grouper,
    pub outstanding: Outstanding,
    /// Next offset to read (none read yet: nothing to commit).
    pub position: Option<i64>,
    /// Write-ahead batches found in the log, sent again as they were until settled.
    pub resend: Vec<Notification>,
    /// Deliveries logged under keys of an older format, rewritten at the next wave.
    pub legacy: Vec<(String, String, String, String, i64)>,
}

impl Task {
    /// A task from what its partition of the log holds: deliveries remembered, and the
    /// alerts of unsettled batches too (they are sent again from the log, so records
    /// read again must not batch them a second time).
    pub fn restored(timing: Timing, r: Restored, now: crate::time::Millis) -> Task {
        let mut grouper = Grouper::new(timing);
        for (receiver, id, status, at) in &r.sent {
            grouper.remember(receiver, id, status, *at);
        }
        for note in &r.unsettled {
            for a in &note.alerts {
                grouper.remember(&note.receiver, &a.id, a.status.as_str(), now);
            }
        }
        Task {
            grouper,
            outstanding: Outstanding::default(),
            position: None,
            resend: r.unsettled,
            legacy: r.legacy,
        }
    }
}

/// What the poll loop and the rebalance callbacks share.
pub struct State {
    pub topics: Topics,
    pub timing: Timing,
    /// Partitions of the repartition topic (and of the log).
    pub partitions: i32,
    pub tasks: BTreeMap<i32, Task>,
    /// The router's next offset to read per alerts partition (its records are queued
    /// in the producer; committed once the producer drained).
    pub routed: BTreeMap<i32, i64>,
    pub producer: Arc<ThreadedProducer<LogContext>>,
    pub restore: BaseConsumer<LogContext>,
    pub clock: Clock,
    pub health: Arc<Health>,
    pub probe: Arc<Probe>,
    /// A failure inside a callback, reported by the poll loop.
    pub failed: Option<anyhow::Error>,
}

impl State {
    /// Commits past everything fully dealt with: the router's records once the producer
    /// acknowledged them, and each task's records up to its oldest one still outstanding
    /// (the log must hold what was delivered before the offsets move past it).
    pub fn commit(&mut self, consumer: &BaseConsumer<Ctx>) -> anyhow::Result<()> {
        crate::kafka::client::drain(&self.producer, Duration::from_secs(30))?;
        let mut tpl = TopicPartitionList::new();
        for (&p, task) in &self.tasks {
            if let Some(pos) = task.position {
                tpl.add_partition_offset(
                    &self.topics.by_owner,
                    p,
                    Offset::Offset(task.outstanding.commit_point(p, pos)),
                )?;
            }
        }
        for (&p, &pos) in &self.routed {
            tpl.add_partition_offset(&self.topics.alerts, p, Offset::Offset(pos))?;
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            warn!(error = %e, "offset commit failed; will retry");
        }
        Ok(())
    }

    /// Sums what the tasks hold, for the probe.
    pub fn report(&self) {
        let (waiting, held) = self.tasks.values().fold((0, 0), |(w, h), t| {
            (
                w + t.grouper.pending() + t.resend.iter().map(|n| n.alerts.len()).sum::<usize>(),
                h + t.grouper.held(),
            )
        });
        self.probe
            .set(self.tasks.keys().copied().collect(), waiting, held);
    }
}

/// The notifier consumer's context: logs, and rebalance callbacks over [`State`].
pub struct Ctx {
    pub state: Mutex<State>,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientContext for Ctx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::kafka::client::log_librdkafka(level, fac, log_message);
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        warn!(error = %error, reason, "notifier consumer error");
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        // Commit while the partitions are still ours: the next owner starts where this
        // one stopped, and finds in the log everything this one delivered.
        if let Err(e) = st.commit(consumer) {
            st.failed.get_or_insert(e);
        }
        let mut gone = BTreeSet::new();
        for e in tpl.elements() {
            if e.topic() == st.topics.by_owner {
                if st.tasks.remove(&e.partition()).is_some() {
                    gone.insert(e.partition());
                }
            } else {
                st.routed.remove(&e.partition());
            }
        }
        crate::metrics::METRICS
            .rebalances
            .with_label_values(&["revoke"])
            .inc();
        info!(partitions = ?gone, topic = %st.topics.by_owner, "notifier partitions revoked; their groups dropped");
        st.report();
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        crate::metrics::METRICS
            .rebalances
            .with_label_values(&["assign"])
            .inc();
        for e in tpl.elements() {
            if e.topic() != st.topics.by_owner || st.tasks.contains_key(&e.partition()) {
                continue;
            }
            let p = e.partition();
            match restore_partition(&st.restore, &st.topics.log, p, &st.health) {
                Ok(r) => {
                    info!(
                        partition = p,
                        deliveries = r.sent.len(),
                        unsettled = r.unsettled.len(),
                        "notifier partition assigned; its notification log restored"
                    );
                    let task = Task::restored(st.timing.clone(), r, (st.clock)());
                    st.tasks.insert(p, task);
                }
                Err(e) => {
                    st.failed.get_or_insert(
                        e.context(format!("restoring partition {p} of the notification log")),
                    );
                }
            }
        }
        st.report();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_stop_at_the_oldest_outstanding_record() {
        let mut o = Outstanding::default();
        o.open("csm", "a", "firing", 0, 10);
        o.open("team", "a", "firing", 0, 10);
        o.open("csm", "b", "firing", 0, 12);
        assert_eq!(o.commit_point(0, 20), 10);
        o.close("csm", "a", "firing");
        assert_eq!(
            o.commit_point(0, 20),
            10,
            "the team's notification is still out"
        );
        o.close("team", "a", "firing");
        assert_eq!(o.commit_point(0, 20), 12);
        o.close("csm", "b", "firing");
        assert_eq!(o.commit_point(0, 20), 20);
        assert_eq!(o.commit_point(1, 7), 7);
    }

    #[test]
    fn a_restored_task_sends_unsettled_batches_again_and_skips_their_records() {
        let note = Notification {
            receiver: "hook".into(),
            owner: "ana".into(),
            owner_chat: None,
            alerts: vec![crate::record::AlertRecord::sample(
                "a/inactive/1",
                crate::engine::Status::Firing,
                crate::config::Severity::Warning,
            )],
            digest: true,
        };
        let r = Restored {
            sent: vec![("hook".into(), "b/inactive/1".into(), "firing".into(), 5)],
            unsettled: vec![note.clone()],
            legacy: vec![],
        };
        let timing = Timing {
            group_wait: 0,
            group_interval: 0,
            repeat_interval: 1,
            send_resolved: true,
            digest: None,
        };
        let t = Task::restored(timing, r, 10);
        assert_eq!(t.resend, [note]);
        assert!(t.grouper.was_sent("hook", "a/inactive/1", "firing"));
        assert!(t.grouper.was_sent("hook", "b/inactive/1", "firing"));
        assert!(!t.grouper.was_sent("team", "b/inactive/1", "firing"));
    }
}
