//! The notifier as a Kafka consumer of the alerts topic (read_committed, its own
//! group): alert records are routed and batched (`group.rs`), delivered (`deliver.rs`),
//! and recorded in a notification log, a compacted topic keyed by alert id and status,
//! that is read back at start so that a restart sends nothing twice. A record's offset
//! is committed only once every notification it is part of was delivered or
//! dead-lettered, so a restart loses nothing either.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use tracing::{info, warn};

use super::deliver::Sender;
use super::group::{Grouper, Timing};
use super::render::Notification;
use super::{attach_account, route};
use crate::config::Config;
use crate::kafka::client::{base_config, LogContext};
use crate::metrics::METRICS;
use crate::replay::wall_clock_ms;
use crate::server::{Health, Loop, Phase};

/// Separates id and status in notification-log keys.
const KEY_SEP: char = '\u{1f}';
/// Prefix of the keys of batches about to be sent (write-ahead): a batch still in the
/// log at start was perhaps sent, perhaps not, and is sent again exactly as it was, so
/// that a repeat carries the same idempotency key.
const BATCH_PREFIX: &str = "\u{1e}batch:";

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

/// Reads the whole notification log into the grouper.
fn restore_log(
    cfg: &Config,
    topic: &str,
    grouper: &mut Grouper,
    health: &Health,
) -> anyhow::Result<(usize, Vec<Notification>)> {
    let mut batches: BTreeMap<String, Notification> = BTreeMap::new();
    let c: BaseConsumer<LogContext> = base_config(&cfg.kafka, "notify-log")?
        .set("group.id", format!("{}-log-reader", cfg.notify.group_id))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create_with_context(LogContext)?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let parts = md.topics().first().map_or(0, |t| t.partitions().len()) as i32;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..parts {
        let (_, high) = c.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        health.beat(Loop::Notifier);
        let pos = c.position()?;
        let done = (0..parts).all(|p| {
            pos.find_partition(topic, p)
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(-1)
                >= ends[&p]
                || ends[&p] == 0
        });
        if done {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "reading the notification log {topic} did not finish"
        );
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
            if let Some(bk) = key.strip_prefix(BATCH_PREFIX) {
                match m.payload().map(serde_json::from_slice::<Notification>) {
                    Some(Ok(n)) => {
                        batches.insert(bk.to_string(), n);
                    }
                    Some(Err(e)) => {
                        warn!(error = %e, "unreadable batch record in the notification log")
                    }
                    None => {
                        batches.remove(bk);
                    }
                }
            } else if let Some((id, status)) = key.split_once(KEY_SEP) {
                let at = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                    .and_then(|v| v["sent_at_ms"].as_i64())
                    .unwrap_or(0);
                grouper.remember(id, status, at);
                n += 1;
            }
        }
    }
    Ok((n, batches.into_values().collect()))
}

/// What became of one notification of a wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    DeadLettered,
    /// Not delivered within `notify.delivery_deadline`: its alerts wait for the
    /// group's next batch.
    Deferred,
}

/// Where the notifier reads the time (the wall clock, or a test's).
pub type Clock = Arc<dyn Fn() -> crate::time::Millis + Send + Sync>;

/// The producer side of the notifier: deliveries logged ahead and after.
struct Io<'a> {
    clock: &'a Clock,
    producer: &'a ThreadedProducer<LogContext>,
    sender: &'a Sender,
    rt: &'a tokio::runtime::Runtime,
    log_topic: &'a str,
    dlq_topic: &'a str,
    health: &'a Health,
}

impl Io<'_> {
    /// Logs the batches ahead, delivers them (concurrently, up to
    /// `notify.max_concurrent_deliveries`; one receiver and owner's in order), records
    /// each outcome.
    fn deliver(&self, notes: &[Notification]) -> anyhow::Result<Vec<Outcome>> {
        if notes.is_empty() {
            return Ok(Vec::new());
        }
        let batch_keys: Vec<String> = notes
            .iter()
            .map(|n| format!("{BATCH_PREFIX}{}", n.idempotency_key()))
            .collect();
        for (note, batch_key) in notes.iter().zip(&batch_keys) {
            let body = serde_json::to_vec(note)?;
            send(
                self.producer,
                BaseRecord::to(self.log_topic)
                    .key(batch_key.as_bytes())
                    .payload(&body),
            )?;
        }
        crate::kafka::client::drain(self.producer, Duration::from_secs(30))?;
        // Deliveries can take a while (retries, rate limits): the loop is alive as long
        // as they go on.
        let results = self.rt.block_on(async {
            let all = self.sender.deliver_all(notes);
            tokio::pin!(all);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    r = &mut all => break r,
                    _ = tick.tick() => self.health.beat(Loop::Notifier),
                }
            }
        });
        let mut out = Vec::with_capacity(notes.len());
        for ((note, batch_key), result) in notes.iter().zip(&batch_keys).zip(results) {
            let outcome = match result {
                Err(super::deliver::DeliveryError::Deferred) => {
                    warn!(receiver = %note.receiver, alerts = note.alerts.len(), "notification not delivered within notify.delivery_deadline; trying again later");
                    Outcome::Deferred
                }
                Ok(_) => {
                    let now = (self.clock)();
                    for a in &note.alerts {
                        let key = format!(
                            "{}{KEY_SEP}{}",
                            a["id"].as_str().unwrap_or_default(),
                            a["status"].as_str().unwrap_or_default()
                        );
                        let value =
                            json!({"sent_at_ms": now, "receiver": note.receiver}).to_string();
                        send(
                            self.producer,
                            BaseRecord::to(self.log_topic)
                                .key(key.as_bytes())
                                .payload(value.as_bytes()),
                        )?;
                    }
                    Outcome::Delivered
                }
                Err(e) => {
                    warn!(receiver = %note.receiver, error = %e, "notification failed for good; dead-lettered");
                    METRICS
                        .notification_dead_letters
                        .with_label_values(&[&note.receiver])
                        .inc();
                    let value = json!({"receiver": note.receiver, "owner": note.owner, "reason": e.to_string(),
                        "idempotency_key": note.idempotency_key(), "alerts": note.alerts})
                    .to_string();
                    send(
                        self.producer,
                        BaseRecord::to(self.dlq_topic)
                            .key(note.receiver.as_bytes())
                            .payload(value.as_bytes()),
                    )?;
                    Outcome::DeadLettered
                }
            };
            // The batch is settled (a deferred one is batched again, perhaps with
            // more): a tombstone takes it out of the log.
            send(
                self.producer,
                BaseRecord::<[u8], [u8]>::to(self.log_topic).key(batch_key.as_bytes()),
            )?;
            out.push(outcome);
        }
        Ok(out)
    }
}

/// Runs the notifier until `shutdown` is set, reporting its state and loop turns to
/// `health`.
pub fn run(
    cfg: Arc<Config>,
    shutdown: Arc<AtomicBool>,
    silences: Arc<super::silence::Silences>,
    health: Arc<Health>,
) -> anyhow::Result<()> {
    run_with(cfg, shutdown, silences, Arc::new(wall_clock_ms), health)
}

/// `run` with the time taken from `clock` (batch windows, digests, repeats and the
/// notification log's times), so that a test can make a digest hour come.
pub fn run_with_clock(
    cfg: Arc<Config>,
    shutdown: Arc<AtomicBool>,
    silences: Arc<super::silence::Silences>,
    clock: Clock,
) -> anyhow::Result<()> {
    run_with(cfg, shutdown, silences, clock, Arc::new(Health::default()))
}

/// `run` with the time taken from `clock`.
pub fn run_with(
    cfg: Arc<Config>,
    shutdown: Arc<AtomicBool>,
    silences: Arc<super::silence::Silences>,
    clock: Clock,
    health: Arc<Health>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    health.notifier(|h| h.phase = Phase::Starting);
    health.beat(Loop::Notifier);
    let k = &cfg.kafka;
    let n = &cfg.notify;
    let log_topic = format!("{}-log", n.group_id);
    let dlq_topic = format!("{}-dead-letters", n.group_id);
    // Inside `run`, the detector creates the alerts topic: give it a moment.
    let mut tries = 0;
    loop {
        match crate::kafka::topics::ensure_notify_topics(k, &k.alerts_topic, &log_topic, &dlq_topic)
        {
            Ok(()) => break,
            Err(e) if tries < 60 && e.to_string().contains("does not exist yet") => {
                tries += 1;
                health.beat(Loop::Notifier);
                if shutdown.load(Ordering::Relaxed) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let meta = super::accounts::load(&cfg, shutdown.clone(), &health)
        .context("account metadata")?
        .unwrap_or_default();
    let sender = Sender::new(n)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_priority(cfg.priority.clone());
    let mut grouper = Grouper::new(Timing::from_config(n));
    let (restored, unsettled) = restore_log(&cfg, &log_topic, &mut grouper, &health)
        .context("restoring the notification log")?;
    info!(entries = restored, unsettled = unsettled.len(), topic = %log_topic, "notification log restored");
    let producer: ThreadedProducer<LogContext> = base_config(k, "notify-producer")?
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create_with_context(LogContext)?;
    let consumer: BaseConsumer<LogContext> = base_config(k, "notify-consumer")?
        .set("group.id", &n.group_id)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        // A wave of deliveries lasts at most notify.delivery_deadline (<= 4 min).
        .set(
            "max.poll.interval.ms",
            (n.delivery_deadline.0 + 60_000).max(300_000).to_string(),
        )
        .create_with_context(LogContext)?;
    consumer.subscribe(&[&k.alerts_topic])?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let io = Io {
        clock: &clock,
        producer: &producer,
        sender: &sender,
        rt: &rt,
        log_topic: &log_topic,
        dlq_topic: &dlq_topic,
        health: &health,
    };
    // Batches that were about to go out when the last run stopped go again, as they
    // were (same alerts, same idempotency key), before anything new.
    let now = clock();
    for note in &unsettled {
        for a in &note.alerts {
            grouper.remember(
                a["id"].as_str().unwrap_or_default(),
                a["status"].as_str().unwrap_or_default(),
                now,
            );
        }
    }
    for (note, outcome) in unsettled.iter().zip(io.deliver(&unsettled)?) {
        match outcome {
            Outcome::Delivered => grouper.delivered(note, now),
            Outcome::DeadLettered => {}
            Outcome::Deferred => requeue(&mut grouper, note, now),
        }
    }
    let mut outstanding = Outstanding::default();
    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    let mut last_commit = Instant::now();
    let mut last_due = Instant::now();
    let mut last_prune = Instant::now();
    // Commits past every record fully dealt with (delivered, silenced, dead-lettered
    // or skipped); the log must hold what was delivered before the offsets move past it.
    let commit =
        |positions: &BTreeMap<i32, i64>, outstanding: &Outstanding| -> anyhow::Result<()> {
            if positions.is_empty() {
                return Ok(());
            }
            crate::kafka::client::drain(&producer, Duration::from_secs(30))?;
            let mut tpl = TopicPartitionList::new();
            for (&p, &pos) in positions {
                tpl.add_partition_offset(
                    &k.alerts_topic,
                    p,
                    Offset::Offset(outstanding.commit_point(p, pos)),
                )?;
            }
            if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                warn!(error = %e, "offset commit failed; will retry");
            }
            Ok(())
        };
    health.notifier(|h| h.phase = Phase::Running);
    while !shutdown.load(Ordering::Relaxed) {
        if let Some(res) = consumer.poll(Duration::from_millis(50)) {
            let m = match res {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "alerts consumer error");
                    continue;
                }
            };
            positions.insert(m.partition(), m.offset() + 1);
            let Ok(mut rec) = serde_json::from_slice::<Value>(m.payload().unwrap_or_default())
            else {
                warn!(
                    partition = m.partition(),
                    offset = m.offset(),
                    "not an alert record; skipped"
                );
                continue;
            };
            attach_account(&mut rec, &*meta);
            let id = rec["id"].as_str().unwrap_or_default().to_string();
            let status = rec["status"].as_str().unwrap_or_default().to_string();
            let owner = route::Labels::label(&rec, "owner").unwrap_or_default();
            let chat = route::Labels::label(&rec, "owner_chat");
            let now = clock();
            for receiver in route::receivers(&n.route, &rec) {
                if grouper.add(now, &receiver, &owner, chat.clone(), rec.clone()) {
                    outstanding.open(&receiver, &id, &status, m.partition(), m.offset());
                } else {
                    METRICS
                        .notifications
                        .with_label_values(&[&receiver, "skipped"])
                        .inc();
                }
            }
            for (receiver, id, status) in grouper.take_superseded() {
                outstanding.close(&receiver, &id, &status);
            }
        }
        if last_due.elapsed() >= Duration::from_millis(100) {
            last_due = Instant::now();
            health.beat(Loop::Notifier);
            let mut wave = Vec::new();
            for mut note in grouper.due(clock()) {
                // Silenced alerts are recorded (log, metrics) but not delivered.
                let now = clock();
                let (muted, kept): (Vec<Value>, Vec<Value>) = note
                    .alerts
                    .drain(..)
                    .partition(|a| silences.muting(a, now).is_some());
                note.alerts = kept;
                for a in &muted {
                    let (id, status) = (
                        a["id"].as_str().unwrap_or_default(),
                        a["status"].as_str().unwrap_or_default(),
                    );
                    METRICS
                        .notifications
                        .with_label_values(&[&note.receiver, "silenced"])
                        .inc();
                    grouper.remember(id, status, now);
                    let key = format!("{id}{KEY_SEP}{status}");
                    let value =
                        json!({"sent_at_ms": now, "receiver": note.receiver, "silenced": true})
                            .to_string();
                    send(
                        &producer,
                        BaseRecord::to(&log_topic)
                            .key(key.as_bytes())
                            .payload(value.as_bytes()),
                    )?;
                    outstanding.close(&note.receiver, id, status);
                }
                if !note.alerts.is_empty() {
                    wave.push(note);
                }
            }
            for (note, outcome) in wave.iter().zip(io.deliver(&wave)?) {
                match outcome {
                    Outcome::Delivered => grouper.delivered(note, clock()),
                    Outcome::DeadLettered => {}
                    Outcome::Deferred => {
                        // Still outstanding: the offsets stay behind these records.
                        requeue(&mut grouper, note, clock());
                        continue;
                    }
                }
                for a in &note.alerts {
                    outstanding.close(
                        &note.receiver,
                        a["id"].as_str().unwrap_or_default(),
                        a["status"].as_str().unwrap_or_default(),
                    );
                }
            }
        }
        if last_prune.elapsed() >= Duration::from_secs(3600) {
            last_prune = Instant::now();
            let gone = grouper.prune(clock(), n.log_retention.0);
            for (id, status) in &gone {
                let key = format!("{id}{KEY_SEP}{status}");
                send(
                    &producer,
                    BaseRecord::<[u8], [u8]>::to(&log_topic).key(key.as_bytes()),
                )?;
            }
            let (sent, groups) = grouper.sizes();
            info!(
                pruned = gone.len(),
                remembered = sent,
                groups,
                "notification log pruned"
            );
        }
        if last_commit.elapsed() >= Duration::from_secs(1) {
            last_commit = Instant::now();
            commit(&positions, &outstanding)?;
        }
    }
    // A graceful stop leaves the group's offsets where the work stopped.
    health.notifier(|h| h.phase = Phase::Stopping);
    commit(&positions, &outstanding)?;
    producer.flush(Duration::from_secs(30))?;
    info!("notifier stopped");
    Ok(())
}

/// Puts a deferred notification's alerts back into their group's next batch.
fn requeue(grouper: &mut Grouper, note: &Notification, now: crate::time::Millis) {
    for a in &note.alerts {
        grouper.add(
            now,
            &note.receiver,
            &note.owner,
            note.owner_chat.clone(),
            a.clone(),
        );
    }
}

/// Longest a record waits for room in the producer's queue before that is an error.
const SEND_QUEUE_WAIT: Duration = Duration::from_secs(30);

/// Queues a record; waits while the producer's queue is full (backpressure), fails on
/// any other error (a record too large, an unknown topic...) instead of retrying it
/// forever. Delivery failures surface in `drain`.
fn send(
    producer: &ThreadedProducer<LogContext>,
    mut rec: BaseRecord<'_, [u8], [u8]>,
) -> anyhow::Result<()> {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    let started = Instant::now();
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                if started.elapsed() < SEND_QUEUE_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(5));
                rec = r;
            }
            Err((e, r)) => {
                anyhow::bail!(
                    "cannot write to {} ({} bytes): {e}",
                    r.topic,
                    r.payload.map_or(0, <[u8]>::len)
                )
            }
        }
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
}
