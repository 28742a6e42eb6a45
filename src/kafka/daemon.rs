//! `churnwatch run`: a consumer-group member that turns the input topic into alert
//! records, exactly once.
//!
//! One engine shard per assigned partition. Every checkpoint is one Kafka transaction
//! holding the changelog records of the accounts that changed, each partition's record
//! (clocks and offsets), the alert records and dead letters produced since the last
//! checkpoint, and the consumer offsets. A crash anywhere rolls back to the last
//! checkpoint; the input read again from the committed offsets reproduces the same
//! records.
//!
//! Offsets: the offset committed for a partition is that of the oldest event still
//! waiting for the watermark, so those events are read again after a restore. Events
//! read again that were already applied (offset below the checkpoint's `next_offset`
//! and time below its watermark) and rejects already dead-lettered are skipped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, error, info, info_span, warn};

use super::changelog::{account_key, restore_partition, PartitionMeta, RestoreContext, META_KEY};
use super::client::{base_config, tuned_config};
use super::input::{Batch, In, InputQueue};
use super::process::{process, Effects, Out, Part};
use super::topics::ensure_topics;
use super::KafkaSetupError;
use crate::config::Config;
use crate::engine::{Alert, EngineConfig};
use crate::metrics::METRICS;
use crate::replay::wall_clock_ms;
use crate::server::{Health, Phase};
use crate::source::event::{EventParser, RejectReason};
use crate::time::Millis;

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error("Kafka error: {0}")]
    Kafka(#[from] KafkaError),
    #[error(
        "this instance was fenced: another instance with transactional id {0:?} took over \
         (kafka.instance_id must differ between running instances)"
    )]
    Fenced(String),
    #[error("fatal Kafka error, restart needed: {0}")]
    Fatal(String),
    /// The transactional producer hit a fatal error other than fencing (e.g. the
    /// coordinator aborted a transaction that outlived a broker restart): recovered
    /// in-process by a new producer, as a restart would.
    #[error("the transactional producer failed: {0}")]
    ProducerFailed(String),
    #[error("graceful stop did not finish within {0:?}")]
    ShutdownTimeout(Duration),
}

/// Counters for metrics and logs.
#[derive(Debug, Default, Clone)]
pub struct DaemonStats {
    pub events: u64,
    pub rejected: u64,
    pub alerts: u64,
    pub replay_skipped: u64,
    pub checkpoints: u64,
    pub aborts: u64,
    pub restored_records: u64,
}

impl DaemonStats {
    fn add(&mut self, o: &DaemonStats) {
        self.events += o.events;
        self.rejected += o.rejected;
        self.alerts += o.alerts;
        self.replay_skipped += o.replay_skipped;
        self.checkpoints += o.checkpoints;
        self.aborts += o.aborts;
        self.restored_records += o.restored_records;
    }
}

/// Producer side of the pipeline: one open transaction at a time.
struct Output {
    producer: ThreadedProducer<super::client::LogContext>,
    transactional_id: String,
    in_txn: bool,
    alerts_topic: String,
    dead_letter_topic: String,
    changelog: String,
    txn_timeout: Duration,
    /// Account metadata attached to alert records (`notify.accounts_file`, `_topic`).
    meta: Option<Arc<crate::notify::meta::Accounts>>,
    /// Alerts (kind, status, severity) and dead letters (reason) sent in the open
    /// transaction: counted once it commits, forgotten if it aborts (they are sent
    /// again after the rollback), so that the counters match what was published.
    uncommitted_alerts: Vec<[&'static str; 3]>,
    uncommitted_rejects: Vec<&'static str>,
}

impl Output {
    fn begin(&mut self) -> Result<(), DaemonError> {
        if !self.in_txn {
            self.producer
                .begin_transaction()
                .map_err(|e| self.classify(e))?;
            self.in_txn = true;
        }
        Ok(())
    }

    fn send(&mut self, mut rec: BaseRecord<'_, [u8], [u8]>) -> Result<(), DaemonError> {
        self.begin()?;
        let mut waited = Duration::ZERO;
        loop {
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                // Backpressure: wait for the queue to drain, but not forever: a queue
                // that does not drain (a failed transaction) is an error to recover from.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if waited < self.txn_timeout =>
                {
                    std::thread::sleep(Duration::from_millis(2));
                    waited += Duration::from_millis(2);
                    rec = r;
                }
                Err((e, _)) => return Err(self.classify(e)),
            }
        }
    }

    /// Waits until every produced record is acknowledged. rust-rdkafka's own flush
    /// polls in 100 ms slices (the background thread of a `ThreadedProducer` takes the
    /// events it waits for), which would add 100 ms to every commit.
    fn drain(&self) -> Result<(), DaemonError> {
        let ms = self.txn_timeout.as_millis() as i32;
        // SAFETY: the pointer comes from a live client owned by `self.producer`;
        // rd_kafka_flush is thread-safe and only waits for the producer's queue.
        let code =
            unsafe { rdkafka::bindings::rd_kafka_flush(self.producer.client().native_ptr(), ms) };
        if code == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Ok(())
        } else {
            Err(DaemonError::Kafka(KafkaError::Flush(code.into())))
        }
    }

    fn send_alert(&mut self, a: &Alert) -> Result<(), DaemonError> {
        self.uncommitted_alerts
            .push([a.kind.as_str(), a.status.as_str(), a.severity.as_str()]);
        let line = crate::sink::record::to_json_line_with(a, wall_clock_ms(), self.meta.as_deref());
        self.send(
            BaseRecord::to(&self.alerts_topic.clone())
                .key(a.account_id.as_bytes())
                .payload(line.as_bytes()),
        )
    }

    fn send_dead_letter(
        &mut self,
        topic: &str,
        m: &In<'_>,
        reason: &RejectReason,
    ) -> Result<(), DaemonError> {
        let partition = m.partition.to_string();
        let offset = m.offset.to_string();
        let error = reason.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "churnwatch.reason",
                value: Some(reason.as_str()),
            })
            .insert(Header {
                key: "churnwatch.error",
                value: Some(&error),
            })
            .insert(Header {
                key: "churnwatch.source.topic",
                value: Some(topic),
            })
            .insert(Header {
                key: "churnwatch.source.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "churnwatch.source.offset",
                value: Some(&offset),
            });
        self.uncommitted_rejects.push(reason.as_str());
        let topic = self.dead_letter_topic.clone();
        let mut rec = BaseRecord::to(&topic).payload(m.payload).headers(headers);
        if let Some(k) = m.key {
            rec = rec.key(k);
        }
        self.send(rec)
    }

    /// Maps a transactional error: fencing and fatal errors end the process.
    fn classify(&self, e: KafkaError) -> DaemonError {
        match &e {
            KafkaError::Transaction(t) if t.is_fatal() => match t.code() {
                RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::InvalidProducerEpoch => {
                    DaemonError::Fenced(self.transactional_id.clone())
                }
                _ => DaemonError::ProducerFailed(e.to_string()),
            },
            _ => DaemonError::Kafka(e),
        }
    }
}

/// Everything a stream thread's poll loop and rebalance callbacks share.
struct State {
    cfg: Arc<Config>,
    engine: Arc<EngineConfig>,
    /// Index of the stream thread.
    thread: usize,
    out: Output,
    restore_consumer: BaseConsumer<RestoreContext>,
    parts: BTreeMap<i32, Part>,
    /// A failure inside a callback, reported by the poll loop.
    failed: Option<DaemonError>,
    stats: DaemonStats,
    health: Arc<Health>,
    /// Producers replaced after a fatal error so far (see `ProducerFailed`).
    producer_rebuilds: u32,
}

/// A producer that keeps failing fatally is a problem for a restart to surface.
const MAX_PRODUCER_REBUILDS: u32 = 10;

struct Ctx {
    state: Mutex<Option<State>>,
    /// Where assigned partitions' messages go (set once the consumer exists).
    input: OnceLock<InputQueue>,
    input_topic: String,
    health: Arc<Health>,
}

impl ClientContext for Ctx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::client::log_librdkafka(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        warn!(error = %error, reason, "Kafka consumer error");
        if matches!(error, KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)) {
            self.health
                .detector(|h| h.problem = Some("all brokers are down".into()));
        }
    }

    fn stats(&self, stats: rdkafka::Statistics) {
        let Some(topic) = stats.topics.get(&self.input_topic) else {
            return;
        };
        // librdkafka's own consumer_lag counts from the consumer's committed offset,
        // which stays unknown here (offsets are committed by the producer's
        // transaction): measure from the position the application reached instead.
        for (p, part) in &topic.partitions {
            let end = if part.ls_offset >= 0 {
                part.ls_offset
            } else {
                part.hi_offset
            };
            if *p >= 0 && end >= 0 && part.app_offset >= 0 {
                METRICS
                    .consumer_lag
                    .with_label_values(&[&p.to_string()])
                    .set((end - part.app_offset).max(0));
            }
            // Read to the end: handed everything to the application, or (nothing
            // handed yet) fetched to the end with nothing waiting.
            let at_end = part.app_offset >= end
                || (part.app_offset < 0 && part.next_offset >= end && part.fetchq_cnt == 0);
            if *p >= 0 && part.desired && end >= 0 && at_end {
                self.caught_up(*p, end);
            }
        }
    }
}

impl Ctx {
    /// Logs, once per assignment, that partition `p` (of this stream thread) was read
    /// up to `end`, and when every partition assigned to the process has, so that a
    /// person watching the log knows the backlog is processed.
    fn caught_up(&self, p: i32, end: i64) {
        let owned = lock(&self.state)
            .as_ref()
            .is_some_and(|st| st.parts.contains_key(&p));
        if !owned {
            return;
        }
        let mut first = false;
        let mut all = None;
        self.health.detector(|h| {
            first = h.caught_up.insert(p);
            if first && h.assigned.iter().all(|a| h.caught_up.contains(a)) {
                all = Some(h.assigned.len());
            }
        });
        if first {
            info!(
                partition = p,
                offset = end,
                "partition caught up: its input is processed to the end"
            );
        }
        if let Some(n) = all {
            info!(
                partitions = n,
                "caught up on every assigned partition; following the input live"
            );
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let (Rebalance::Assign(tpl), Some(input)) = (rebalance, self.input.get()) {
            // Before librdkafka starts fetching them.
            for e in tpl.elements() {
                input.attach(e.topic(), e.partition());
            }
        }
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let mut guard = lock(&self.state);
        let Some(st) = guard.as_mut() else { return };
        let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        info!(partitions = ?revoked, "partitions revoked; checkpointing");
        METRICS.rebalances.with_label_values(&["revoke"]).inc();
        // A failed checkpoint here is aborted and the remaining partitions rolled back
        // inside `checkpoint`; the revoked ones restart from the changelog elsewhere.
        if let Err(e) = st.checkpoint(consumer) {
            st.failed.get_or_insert(e);
        }
        for p in revoked {
            st.parts.remove(&p);
            let label = p.to_string();
            for g in [
                &METRICS.accounts_tracked,
                &METRICS.timers_pending,
                &METRICS.held_events,
                &METRICS.watermark_lag_seconds,
                &METRICS.input_stalled,
                &METRICS.consumer_lag,
            ] {
                let _ = g.remove_label_values(&[&label]);
            }
            st.health.detector(|h| {
                h.assigned.remove(&p);
                h.stalled.remove(&p);
                h.caught_up.remove(&p);
            });
        }
        // Of the whole process: every stream thread's partitions.
        st.health
            .detector(|h| METRICS.assigned_partitions.set(h.assigned.len() as i64));
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        let mut guard = lock(&self.state);
        let Some(st) = guard.as_mut() else { return };
        let assigned: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        info!(partitions = ?assigned, "partitions assigned; restoring state");
        METRICS.rebalances.with_label_values(&["assign"]).inc();
        st.health.detector(|h| {
            h.restoring.extend(assigned.iter().copied());
            h.assigned.extend(assigned.iter().copied());
        });
        for p in assigned {
            if let Err(e) = st.restore(consumer, p, false) {
                st.failed.get_or_insert(e);
            }
            st.health.detector(|h| {
                h.restoring.remove(&p);
            });
        }
        st.health.detector(|h| {
            // Of the whole process: every stream thread's partitions.
            METRICS.assigned_partitions.set(h.assigned.len() as i64);
            h.phase = Phase::Running;
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    /// Builds partition `p` from the changelog. With `seek`, also moves the consumer
    /// back to the checkpoint's committed offset (rollback after an aborted
    /// transaction; after an assignment the group's committed offset applies anyway).
    fn restore(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        p: i32,
        seek: bool,
    ) -> Result<(), DaemonError> {
        let (health, thread) = (self.health.clone(), self.thread);
        let span = info_span!("partition", p);
        let _g = span.enter();
        let r = restore_partition(
            &self.restore_consumer,
            &self.out.changelog,
            p,
            self.engine.clone(),
            Duration::from_secs(600),
            &|| health.beat_thread(thread),
        )?;
        self.stats.restored_records += r.records;
        METRICS.restore_seconds.observe(r.elapsed.as_secs_f64());
        METRICS.restore_records.inc_by(r.records);
        info!(
            records = r.records,
            accounts = r.shard.accounts(),
            elapsed_ms = r.elapsed.as_millis() as u64,
            "state restored"
        );
        let (next_offset, watermark) = match &r.meta {
            Some(m) => (Some(m.next_offset), m.shard.watermark),
            None => (None, Millis::MIN),
        };
        if seek {
            let offset = match &r.meta {
                Some(m) => Offset::Offset(m.commit_offset),
                None if self.cfg.kafka.start_from == "latest" => Offset::End,
                None => Offset::Beginning,
            };
            consumer.seek(
                &self.cfg.kafka.input_topic,
                p,
                offset,
                Duration::from_secs(10),
            )?;
        }
        self.parts
            .insert(p, Part::new(r.shard, next_offset, watermark));
        Ok(())
    }

    /// Accounts changed since the last checkpoint, over all partitions.
    fn dirty_accounts(&self) -> usize {
        self.parts.values().map(|p| p.shard.dirty_accounts()).sum()
    }

    /// Sends and counts what processing produced; `msg(i)` is the `i`-th message of
    /// the batch processed.
    fn emit<'m>(&mut self, fx: Effects, msg: impl Fn(usize) -> In<'m>) -> Result<(), DaemonError> {
        METRICS.events_consumed.inc_by(fx.consumed);
        METRICS.events_replay_skipped.inc_by(fx.replay_skipped);
        self.stats.events += fx.events;
        self.stats.replay_skipped += fx.replay_skipped;
        for p in fx.unstalled {
            METRICS
                .input_stalled
                .with_label_values(&[&p.to_string()])
                .set(0);
            self.health.detector(|h| {
                h.stalled.remove(&p);
            });
        }
        for out in fx.out {
            match out {
                Out::Alert(a) => self.out.send_alert(&a)?,
                Out::Reject(i, reason) => {
                    let m = msg(i);
                    debug!(
                        partition = m.partition,
                        offset = m.offset,
                        reason = reason.as_str(),
                        "rejected"
                    );
                    self.out
                        .send_dead_letter(&self.cfg.kafka.input_topic, &m, &reason)?;
                }
            }
        }
        Ok(())
    }

    /// Live mode: lets the watermark of caught-up, quiet partitions follow the clock,
    /// never past `max_idle_advance` after their newest event.
    fn idle_advance(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), DaemonError> {
        let idle_after = Duration::from_millis(self.cfg.kafka.idle_advance_after.0 as u64);
        let lateness = self.cfg.time.allowed_lateness.0;
        let max_idle = self.cfg.time.max_idle_advance.0;
        let topic = self.cfg.kafka.input_topic.clone();
        for part in self.parts.values_mut() {
            if part.messages != part.messages_at_check {
                part.messages_at_check = part.messages;
                part.quiet_since = Instant::now();
            }
        }
        let quiet: Vec<i32> = self
            .parts
            .iter()
            .filter(|(_, part)| {
                part.quiet_since.elapsed() >= idle_after && part.shard.newest() != Millis::MIN
            })
            .map(|(&p, _)| p)
            .collect();
        if quiet.is_empty() {
            return Ok(());
        }
        let positions = consumer.position()?;
        for p in quiet {
            let (_, high) = match consumer.fetch_watermarks(&topic, p, Duration::from_secs(2)) {
                Ok(w) => w,
                Err(e) => {
                    warn!(partition = p, error = %e, "cannot read the partition's end offset");
                    continue;
                }
            };
            let position = positions
                .find_partition(&topic, p)
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(-1);
            let part = self.parts.get_mut(&p).expect("listed above");
            let caught_up = position >= high || part.next_offset.is_some_and(|n| n >= high);
            if !caught_up {
                continue;
            }
            let target = wall_clock_ms() - lateness;
            let cap = part.shard.newest().saturating_add(max_idle);
            let stalled = target > cap;
            if stalled && !part.stalled {
                warn!(
                    partition = p,
                    newest_event_time = %crate::time::format_rfc3339(part.shard.newest()),
                    max_idle_advance = %self.cfg.time.max_idle_advance,
                    "input stalled: the newest event time is older than max_idle_advance, so \
                     absence alerts (inactive, not_activated) are paused until newer events \
                     arrive (expected after loading historical data)"
                );
            }
            part.stalled = stalled;
            METRICS
                .input_stalled
                .with_label_values(&[&p.to_string()])
                .set(stalled as i64);
            self.health.detector(|h| {
                if stalled {
                    h.stalled.insert(p);
                } else {
                    h.stalled.remove(&p);
                }
            });
            let w = target.min(cap);
            if w > part.shard.watermark() {
                part.shard.advance_to(w);
                part.changed = true;
                for a in part.shard.drain_alerts() {
                    self.out.send_alert(&a)?;
                }
            }
        }
        Ok(())
    }

    /// Refreshes the per-partition gauges.
    fn refresh_gauges(&self) {
        let now = wall_clock_ms();
        for (p, part) in &self.parts {
            let label = p.to_string();
            let l = [label.as_str()];
            METRICS
                .accounts_tracked
                .with_label_values(&l)
                .set(part.shard.accounts() as i64);
            METRICS
                .timers_pending
                .with_label_values(&l)
                .set(part.shard.timers_pending() as i64);
            METRICS
                .held_events
                .with_label_values(&l)
                .set(part.shard.held_events() as i64);
            if part.shard.watermark() != Millis::MIN {
                METRICS
                    .watermark_lag_seconds
                    .with_label_values(&l)
                    .set((now - part.shard.watermark()) / 1000);
            }
        }
    }

    /// Commits one transaction with everything since the last one. On an abortable
    /// error, aborts and rolls every partition back to its last checkpoint.
    fn checkpoint(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), DaemonError> {
        if !self.out.in_txn && !self.parts.values().any(|p| p.changed) {
            return Ok(());
        }
        let started = Instant::now();
        match self.try_checkpoint(consumer) {
            Ok(n) => {
                self.stats.checkpoints += 1;
                METRICS.checkpoints.inc();
                METRICS
                    .checkpoint_seconds
                    .observe(started.elapsed().as_secs_f64());
                METRICS.checkpoint_accounts.observe(n as f64);
                debug!(
                    accounts = n,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "checkpoint committed"
                );
                Ok(())
            }
            Err(e) => self.recover(consumer, e),
        }
    }

    /// After a non-fatal Kafka error anywhere in the pipeline: abort the open
    /// transaction and roll every partition back to its last checkpoint. After a fatal
    /// producer error other than fencing: replace the producer, then roll back. Fencing
    /// and other fatal errors are returned.
    fn recover(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        err: DaemonError,
    ) -> Result<(), DaemonError> {
        match err {
            DaemonError::Kafka(e) => {
                warn!(error = %e, "Kafka error; aborting the transaction and rolling back to the last checkpoint");
                self.stats.aborts += 1;
                METRICS.checkpoint_failures.inc();
                if self.out.in_txn {
                    let mut attempts = 0;
                    loop {
                        match self.out.producer.abort_transaction(self.out.txn_timeout) {
                            Ok(()) => break,
                            Err(KafkaError::Transaction(t))
                                if t.is_retriable() && attempts < 60 =>
                            {
                                attempts += 1;
                                warn!(error = %t, attempts, "transaction abort will be retried");
                            }
                            // An abort that fails fatally (e.g. the transaction is in an
                            // invalid state after a broker restart) is a failed producer:
                            // replaced like any other, not the end of the process.
                            Err(e) => {
                                return match self.out.classify(e) {
                                    failed @ DaemonError::ProducerFailed(_) => {
                                        self.recover(consumer, failed)
                                    }
                                    other => Err(other),
                                }
                            }
                        }
                    }
                    self.out.in_txn = false;
                }
                self.roll_back(consumer)
            }
            DaemonError::ProducerFailed(msg) if self.producer_rebuilds < MAX_PRODUCER_REBUILDS => {
                self.producer_rebuilds += 1;
                warn!(error = %msg, rebuilds = self.producer_rebuilds, "transactional producer failed; replacing it and rolling back to the last checkpoint");
                self.stats.aborts += 1;
                METRICS.checkpoint_failures.inc();
                let k = &self.cfg.kafka;
                self.out.producer =
                    transactional_producer(k, &self.out.transactional_id, self.out.txn_timeout)?;
                self.out.in_txn = false;
                self.roll_back(consumer)
            }
            DaemonError::ProducerFailed(msg) => Err(DaemonError::Fatal(msg)),
            other => Err(other),
        }
    }

    /// Rebuilds every partition from its last checkpoint and re-reads its input from
    /// there.
    fn roll_back(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), DaemonError> {
        // The aborted transaction's records are produced again from the checkpoint.
        self.out.uncommitted_alerts.clear();
        self.out.uncommitted_rejects.clear();
        let parts: Vec<i32> = self.parts.keys().copied().collect();
        self.parts.clear();
        for p in parts {
            self.restore(consumer, p, true)?;
        }
        Ok(())
    }

    fn try_checkpoint(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<usize, DaemonError> {
        self.out.begin()?;
        let mut offsets = TopicPartitionList::new();
        let mut accounts = 0;
        let changelog = self.out.changelog.clone();
        for (&p, part) in self.parts.iter_mut() {
            let dirty = part.shard.take_dirty();
            accounts += dirty.len();
            for slot in &dirty {
                let key = account_key(part.shard.account_id(*slot));
                let value = part.shard.encode_account(*slot);
                self.out.send(
                    BaseRecord::to(&changelog)
                        .partition(p)
                        .key(key.as_slice())
                        .payload(value.as_slice()),
                )?;
            }
            if !part.changed && dirty.is_empty() {
                continue;
            }
            part.changed = false;
            let Some(next) = part.next_offset else {
                continue;
            };
            let commit = part
                .shard
                .min_pending_seq()
                .map_or(next, |s| (s as i64).min(next));
            let meta = PartitionMeta {
                shard: part.shard.meta(),
                next_offset: next,
                commit_offset: commit,
            }
            .encode();
            self.out.send(
                BaseRecord::to(&changelog)
                    .partition(p)
                    .key(META_KEY)
                    .payload(meta.as_slice()),
            )?;
            offsets.add_partition_offset(&self.cfg.kafka.input_topic, p, Offset::Offset(commit))?;
        }
        if offsets.count() > 0 {
            let group = consumer
                .group_metadata()
                .ok_or_else(|| DaemonError::Fatal("no consumer group metadata".into()))?;
            self.out
                .producer
                .send_offsets_to_transaction(&offsets, &group, self.out.txn_timeout)
                .map_err(|e| self.out.classify(e))?;
        }
        self.out.drain()?;
        // A retriable failure (e.g. a broker restarting) leaves the transaction open:
        // try the commit again; anything else aborts.
        let mut attempts = 0;
        loop {
            match self.out.producer.commit_transaction(self.out.txn_timeout) {
                Ok(()) => break,
                Err(KafkaError::Transaction(t)) if t.is_retriable() && attempts < 20 => {
                    attempts += 1;
                    warn!(error = %t, attempts, "transaction commit will be retried");
                }
                Err(e) => return Err(self.out.classify(e)),
            }
        }
        self.out.in_txn = false;
        self.count_committed();
        Ok(accounts)
    }

    /// Counts the alerts and dead letters of the transaction just committed.
    fn count_committed(&mut self) {
        self.stats.alerts += self.out.uncommitted_alerts.len() as u64;
        self.stats.rejected += self.out.uncommitted_rejects.len() as u64;
        for labels in self.out.uncommitted_alerts.drain(..) {
            METRICS.alerts.with_label_values(&labels).inc();
        }
        for reason in self.out.uncommitted_rejects.drain(..) {
            METRICS.events_rejected.with_label_values(&[reason]).inc();
        }
    }
}

/// The transactional producer of this instance, initialised: fences any earlier
/// incarnation (or the failed producer it replaces) and aborts its open transaction.
fn transactional_producer(
    k: &crate::config::KafkaConfig,
    transactional_id: &str,
    txn_timeout: Duration,
) -> Result<ThreadedProducer<super::client::LogContext>, DaemonError> {
    let producer: ThreadedProducer<_> = base_config(k, "producer")?
        .set("transactional.id", transactional_id)
        .set(
            "transaction.timeout.ms",
            txn_timeout.as_millis().to_string(),
        )
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(super::client::LogContext)
        .map_err(KafkaSetupError::Client)?;
    producer
        .init_transactions(Duration::from_secs(60))
        .map_err(|e| match &e {
            KafkaError::Transaction(t) if t.is_fatal() => DaemonError::Fatal(e.to_string()),
            _ => DaemonError::Kafka(e),
        })?;
    Ok(producer)
}

/// Closes the input queue before the consumer is dropped.
struct CloseInput<'a>(&'a BaseConsumer<Ctx>);

impl Drop for CloseInput<'_> {
    fn drop(&mut self) {
        if let Some(q) = self.0.context().input.get() {
            q.close();
        }
    }
}

/// What every stream thread shares.
struct Shared {
    cfg: Arc<Config>,
    engine: Arc<EngineConfig>,
    parser: EventParser,
    meta: Option<Arc<crate::notify::meta::Accounts>>,
    health: Arc<Health>,
    /// The process is asked to stop (signal).
    shutdown: Arc<AtomicBool>,
    /// A stream thread failed: the others stop too (gracefully).
    sibling_failed: AtomicBool,
    threads: usize,
    /// Stream threads set up and about to join the group.
    set_up: Mutex<usize>,
    set_up_cv: std::sync::Condvar,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed) || self.sibling_failed.load(Ordering::Relaxed)
    }

    /// Waits until every stream thread is set up (its producer initialised, which can
    /// take seconds), so that they join the group together and the first assignment
    /// already spreads partitions over all of them. Returns false when stopping.
    fn all_set_up(&self) -> bool {
        let mut n = lock(&self.set_up);
        *n += 1;
        self.set_up_cv.notify_all();
        while *n < self.threads {
            if self.stopping() {
                return false;
            }
            n = self
                .set_up_cv
                .wait_timeout(n, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// Runs the daemon until `shutdown` is set (then commits and leaves the group) or a
/// fatal error.
///
/// The process runs `kafka.stream_threads` members of the consumer group, as Kafka
/// Streams runs stream threads: each has its own consumer, transactional producer
/// (`<group>-<instance>-<thread>`), changelog reader and partitions, and commits its
/// own transactions, so partitions are fetched, parsed, applied and checkpointed in
/// parallel with no coordination beyond the group protocol. When one fails, the
/// others checkpoint and leave, and the first error is returned.
pub fn run(
    cfg: Arc<Config>,
    shutdown: Arc<AtomicBool>,
    health: Arc<Health>,
) -> Result<DaemonStats, DaemonError> {
    let k = &cfg.kafka;
    let partitions = ensure_topics(k)?;
    let threads = k.stream_threads(partitions);
    info!(
        input = %k.input_topic, partitions, group = %k.group_id, instance = %k.instance(),
        stream_threads = threads, "starting"
    );
    let meta = crate::notify::accounts::load(&cfg, shutdown.clone(), &health)
        .map_err(|e| DaemonError::Fatal(format!("account metadata: {e:#}")))?;
    let parser = EventParser::new(&cfg.input).map_err(|msg| KafkaSetupError::Topic {
        topic: k.input_topic.clone(),
        msg,
    })?;
    let mut engine = EngineConfig::new(&cfg);
    if cfg.engine.known_accounts_only {
        let known = meta.clone().ok_or_else(|| {
            DaemonError::Fatal(
                "engine.known_accounts_only is set but there is no account metadata: set \
                 notify.accounts_file or notify.accounts_topic"
                    .into(),
            )
        })?;
        engine = engine.with_admit(move |id| known.get(id).is_some());
    }
    METRICS
        .accounts_limit
        .set(cfg.engine.max_accounts_per_partition as i64);
    let shared = Arc::new(Shared {
        engine: Arc::new(engine),
        cfg: cfg.clone(),
        parser,
        meta,
        health,
        shutdown,
        sibling_failed: AtomicBool::new(false),
        threads,
        set_up: Mutex::new(0),
        set_up_cv: std::sync::Condvar::new(),
    });
    let (done_tx, done) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    for t in 0..threads {
        let (sh, tx) = (shared.clone(), done_tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("cw-stream-{t}"))
            .spawn(move || {
                let r = info_span!("stream", thread = t).in_scope(|| stream_thread(&sh, t));
                if r.is_err() {
                    sh.sibling_failed.store(true, Ordering::Relaxed);
                }
                let _ = tx.send(r);
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                shared.sibling_failed.store(true, Ordering::Relaxed);
                let _ = done_tx.send(Err(DaemonError::Fatal(format!(
                    "cannot start a stream thread: {e}"
                ))));
            }
        }
    }
    drop(done_tx);
    let mut stats = DaemonStats::default();
    let mut first_error = None;
    // Every thread sends exactly one result; a panicking one drops its sender.
    let mut results = 0;
    while let Ok(r) = done.recv() {
        results += 1;
        match r {
            Ok(s) => stats.add(&s),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    for h in handles {
        let _ = h.join();
    }
    if results < threads && first_error.is_none() {
        first_error = Some(DaemonError::Fatal("a stream thread panicked".into()));
    }
    match first_error {
        Some(e) => Err(e),
        None => {
            info!(
                events = stats.events,
                rejected = stats.rejected,
                alerts = stats.alerts,
                checkpoints = stats.checkpoints,
                "stopped"
            );
            Ok(stats)
        }
    }
}

/// One stream thread: a consumer-group member with its own partitions, until the
/// process stops or it fails.
fn stream_thread(shared: &Shared, thread: usize) -> Result<DaemonStats, DaemonError> {
    let cfg = &shared.cfg;
    let k = &cfg.kafka;
    let health = &shared.health;
    let txn_timeout = Duration::from_millis(k.transaction_timeout.0 as u64);
    let transactional_id = k.transactional_id(thread);
    let producer = transactional_producer(k, &transactional_id, txn_timeout)?;
    // librdkafka pauses a partition's fetching for fetch.queue.backoff.ms (default 1 s)
    // whenever its prefetch queue is full: a consumer that works on every message then
    // sits idle most of the time. A short backoff keeps the queue flowing.
    let restore_consumer: BaseConsumer<RestoreContext> = tuned_config(
        k,
        &format!("restore-{thread}"),
        &[("fetch.queue.backoff.ms", "5")],
    )?
    .set("group.id", format!("{}-restore", k.group_id))
    .set("enable.partition.eof", "true")
    .set("fetch.wait.max.ms", "10")
    .set("max.partition.fetch.bytes", "16777216")
    .set("fetch.max.bytes", "67108864")
    .set("queued.max.messages.kbytes", "262144")
    .set("enable.auto.commit", "false")
    .set("isolation.level", "read_committed")
    .set("auto.offset.reset", "earliest")
    .create_with_context(RestoreContext::default())
    .map_err(KafkaSetupError::Client)?;
    let state = State {
        cfg: cfg.clone(),
        engine: shared.engine.clone(),
        thread,
        out: Output {
            producer,
            transactional_id,
            in_txn: false,
            alerts_topic: k.alerts_topic.clone(),
            dead_letter_topic: k.dead_letter_topic.clone(),
            changelog: k.changelog(),
            txn_timeout,
            meta: shared.meta.clone(),
            uncommitted_alerts: Vec::new(),
            uncommitted_rejects: Vec::new(),
        },
        restore_consumer,
        parts: BTreeMap::new(),
        failed: None,
        stats: DaemonStats::default(),
        health: health.clone(),
        producer_rebuilds: 0,
    };
    let ctx = Ctx {
        state: Mutex::new(Some(state)),
        input: OnceLock::new(),
        input_topic: k.input_topic.clone(),
        health: health.clone(),
    };
    let consumer: BaseConsumer<Ctx> = tuned_config(
        k,
        &format!("consumer-{thread}"),
        &[
            ("fetch.queue.backoff.ms", "5"),
            // Members learn of a rebalance at their next heartbeat: 1 s instead of
            // librdkafka's 3 s makes joins, scale-outs and the cooperative protocol's
            // second round that much quicker.
            ("heartbeat.interval.ms", "1000"),
        ],
    )?
    .set("group.id", &k.group_id)
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    .set("isolation.level", "read_committed")
    .set("auto.offset.reset", &k.start_from)
    .set("partition.assignment.strategy", "cooperative-sticky")
    .set("max.poll.interval.ms", "600000")
    .set("statistics.interval.ms", "5000")
    .create_with_context(ctx)
    .map_err(KafkaSetupError::Client)?;
    let input = InputQueue::new(&consumer);
    if consumer.context().input.set(input).is_err() {
        unreachable!("input queue set once");
    }
    // librdkafka cannot shut the consumer down while messages of it are held.
    let _close_input = CloseInput(&consumer);
    if !shared.all_set_up() {
        return Ok(DaemonStats::default());
    }
    consumer.subscribe(&[&k.input_topic])?;
    let interval = Duration::from_millis(k.checkpoint_interval.0 as u64);
    let max_dirty = k.checkpoint_max_dirty;
    let mut last_checkpoint = Instant::now();
    let mut last_idle_check = Instant::now();
    let started = Instant::now();
    let mut batch = Batch::default();
    let mut assigned = false;
    let result = loop {
        if shared.stopping() {
            break Ok(());
        }
        // Rebalances, statistics and errors; messages come in batches below (the
        // consumer's queue only sees one if it was fetched before its partition's
        // queue was attached). Until something is assigned, wait here.
        let wait = if assigned {
            Duration::ZERO
        } else {
            Duration::from_millis(50)
        };
        let polled = consumer.poll(wait);
        let mut guard = lock(&consumer.context().state);
        let st = guard.as_mut().expect("state lives until the end");
        if let Some(e) = st.failed.take() {
            break Err(e);
        }
        let batch_started = Instant::now();
        let mut handled = 0usize;
        match polled {
            Some(Ok(m)) => {
                let m = In {
                    partition: m.partition(),
                    offset: m.offset(),
                    payload: m.payload().unwrap_or_default(),
                    key: m.key(),
                    err: rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                };
                let mut fx = Effects::default();
                if let Some(part) = st.parts.get_mut(&m.partition) {
                    part.handle(&shared.parser, &m, 0, wall_clock_ms(), &mut fx);
                }
                if let Err(e) = st.emit(fx, |_| m).or_else(|e| st.recover(&consumer, e)) {
                    break Err(e);
                }
                handled += 1;
            }
            Some(Err(e)) => warn!(error = %e, "consumer error"),
            None => {}
        }
        assigned = !st.parts.is_empty();
        let n = if assigned {
            let input = consumer.context().input.get().expect("set above");
            match input.poll(&mut batch) {
                0 => {
                    input.wait(Duration::from_millis(50));
                    input.poll(&mut batch)
                }
                n => n,
            }
        } else {
            0
        };
        if n > 0 {
            let ok = |m: &In<'_>| {
                if m.err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    return true;
                }
                let code = RDKafkaErrorCode::from(m.err);
                warn!(partition = m.partition, error = %code, "consumer error");
                false
            };
            // One clock reading per batch for the future-timestamp check.
            let fx = process(&shared.parser, &mut st.parts, &batch, wall_clock_ms(), ok);
            handled += fx.consumed as usize;
            // On an error, rolled back: the rest of the batch is stale (cleared below).
            if let Err(e) = st
                .emit(fx, |i| batch.get(i))
                .or_else(|e| st.recover(&consumer, e))
            {
                break Err(e);
            }
        }
        batch.clear();
        if handled > 0 {
            let per_message = batch_started.elapsed().as_secs_f64() / handled as f64;
            METRICS.processing_seconds.observe(per_message);
        }
        if last_idle_check.elapsed() >= Duration::from_secs(1) {
            last_idle_check = Instant::now();
            health.beat_thread(thread);
            health.detector(|h| {
                h.problem = None;
                // Members with nothing assigned are ready too, once settled in.
                if h.phase == Phase::Starting && started.elapsed() > Duration::from_secs(15) {
                    h.phase = Phase::Running;
                }
            });
            st.refresh_gauges();
            if let Err(e) = st
                .idle_advance(&consumer)
                .or_else(|e| st.recover(&consumer, e))
            {
                break Err(e);
            }
        }
        if last_checkpoint.elapsed() >= interval || st.dirty_accounts() >= max_dirty {
            if let Err(e) = st.checkpoint(&consumer) {
                break Err(e);
            }
            last_checkpoint = Instant::now();
        }
    };
    if let Err(e) = &result {
        error!(error = %e, "stopping");
        return result.map(|_| DaemonStats::default());
    }
    // Graceful stop: commit what was done, then leave the group.
    health.detector(|h| h.phase = Phase::Stopping);
    let deadline = Instant::now() + Duration::from_millis(k.shutdown_timeout.0 as u64);
    {
        let mut guard = lock(&consumer.context().state);
        let st = guard.as_mut().expect("state");
        st.checkpoint(&consumer)?;
    }
    consumer.unsubscribe();
    while Instant::now() < deadline {
        if consumer.poll(Duration::from_millis(100)).is_none()
            && consumer
                .assignment()
                .map(|a| a.count() == 0)
                .unwrap_or(true)
        {
            break;
        }
    }
    let mut guard = lock(&consumer.context().state);
    let st = guard.take().expect("state");
    match st.failed {
        Some(e) => Err(e),
        None => Ok(st.stats),
    }
}
