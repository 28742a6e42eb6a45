//! The producer side of a stream thread: one transactional producer, one open
//! transaction at a time, and the records it sends (alert records, dead letters,
//! changelog records), with backpressure and error classification.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::TopicPartitionList;
use tracing::warn;

use super::{DaemonError, DaemonStats};
use crate::engine::Alert;
use crate::kafka::client::{base_config, LogContext};
use crate::kafka::input::In;
use crate::kafka::KafkaSetupError;
use crate::metrics::METRICS;
use crate::source::event::RejectReason;
use crate::time::wall_clock_ms;

/// Producer side of the pipeline: one open transaction at a time.
pub(super) struct Output {
    /// Shared with a helper thread while `send_offsets` waits for it.
    pub(super) producer: Arc<ThreadedProducer<LogContext>>,
    pub(super) transactional_id: String,
    pub(super) in_txn: bool,
    /// When the open transaction began (meaningful while `in_txn`).
    pub(super) txn_began: Instant,
    pub(super) alerts_topic: String,
    pub(super) dead_letter_topic: String,
    pub(super) changelog: String,
    pub(super) txn_timeout: Duration,
    /// Account metadata attached to alert records (`notify.accounts_file`, `_topic`).
    pub(super) meta: Option<Arc<crate::accounts::Accounts>>,
    /// What the open transaction holds, to count once it commits.
    pub(super) uncommitted: Uncommitted,
}

/// Alerts (kind, status, severity) and dead letters (reason) sent in the open
/// transaction: counted once it commits, forgotten if it aborts (they are sent again
/// after the rollback), so that the counters match what was published.
#[derive(Debug, Default)]
pub(super) struct Uncommitted {
    alerts: Vec<[&'static str; 3]>,
    rejects: Vec<&'static str>,
}

impl Uncommitted {
    /// The transaction committed: counts what it held.
    pub(super) fn count_committed(&mut self, stats: &mut DaemonStats) {
        stats.alerts += self.alerts.len() as u64;
        stats.rejected += self.rejects.len() as u64;
        for labels in self.alerts.drain(..) {
            METRICS.alerts.with_label_values(&labels).inc();
        }
        for reason in self.rejects.drain(..) {
            METRICS.events_rejected.with_label_values(&[reason]).inc();
        }
    }

    /// The transaction aborted: what it held is sent again after the rollback.
    pub(super) fn forget(&mut self) {
        self.alerts.clear();
        self.rejects.clear();
    }
}

impl Output {
    pub(super) fn begin(&mut self) -> Result<(), DaemonError> {
        if !self.in_txn {
            self.producer
                .begin_transaction()
                .map_err(|e| self.classify(e))?;
            self.in_txn = true;
            self.txn_began = Instant::now();
        }
        Ok(())
    }

    pub(super) fn send(&mut self, mut rec: BaseRecord<'_, [u8], [u8]>) -> Result<(), DaemonError> {
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

    pub(super) fn send_alert(&mut self, a: &Alert) -> Result<(), DaemonError> {
        self.uncommitted
            .alerts
            .push([a.kind.as_str(), a.status.as_str(), a.severity.as_str()]);
        let line = crate::sink::record::to_json_line_with(a, wall_clock_ms(), self.meta.as_deref());
        self.send(
            BaseRecord::to(&self.alerts_topic.clone())
                .key(a.account_id.as_bytes())
                .payload(line.as_bytes()),
        )
    }

    pub(super) fn send_dead_letter(
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
        self.uncommitted.rejects.push(reason.as_str());
        let topic = self.dead_letter_topic.clone();
        let mut rec = BaseRecord::to(&topic).payload(m.payload).headers(headers);
        if let Some(k) = m.key {
            rec = rec.key(k);
        }
        self.send(rec)
    }

    /// Commits the open transaction once every record is acknowledged. A retriable
    /// failure (e.g. a broker restarting) leaves the transaction open: the commit is
    /// tried again; anything else is returned (and aborts).
    pub(super) fn commit(&mut self) -> Result<(), DaemonError> {
        self.drain()?;
        self.retrying("commit", 20, |p, t| p.commit_transaction(t))?;
        self.in_txn = false;
        Ok(())
    }

    /// Whether the coordinator may have aborted the open transaction for outliving the
    /// transaction timeout (fencing this producer for it): only if it is that old. The
    /// coordinator's clock for it starts later than this one (at the first partition
    /// added), so a younger transaction cannot have timed out: another producer took
    /// this transactional id.
    pub(super) fn txn_may_have_timed_out(&self) -> bool {
        self.in_txn && self.txn_began.elapsed() >= self.txn_timeout
    }

    /// Aborts the open transaction, retrying while the error is retriable.
    pub(super) fn abort(&mut self) -> Result<(), DaemonError> {
        self.retrying("abort", 60, |p, t| p.abort_transaction(t))?;
        self.in_txn = false;
        Ok(())
    }

    /// Runs a transaction step, again (up to `max` times) while it fails with a
    /// retriable error.
    fn retrying(
        &self,
        step: &str,
        max: u32,
        op: impl Fn(&ThreadedProducer<LogContext>, Duration) -> KafkaResult<()>,
    ) -> Result<(), DaemonError> {
        let mut attempts = 0;
        loop {
            match op(&self.producer, self.txn_timeout) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(t)) if t.is_retriable() && attempts < max => {
                    attempts += 1;
                    warn!(error = %t, attempts, "transaction {step} will be retried");
                }
                Err(e) => return Err(self.classify(e)),
            }
        }
    }

    /// Adds the consumer offsets to the open transaction. librdkafka's own timeout does
    /// not bound this call when the group coordinator goes away mid-call (it waited
    /// for minutes after a broker restart; confluentinc/librdkafka#5456), so it runs
    /// on a helper thread and is waited for at most twice the transaction timeout.
    /// Past that the producer counts as failed (replaced, rolled back); the helper
    /// keeps the old producer until the call returns, if it ever does.
    pub(super) fn send_offsets(
        &self,
        offsets: TopicPartitionList,
        group: ConsumerGroupMetadata,
    ) -> Result<(), DaemonError> {
        let producer = Arc::clone(&self.producer);
        let timeout = self.txn_timeout;
        let limit = 2 * timeout;
        match within(limit, move || {
            producer.send_offsets_to_transaction(&offsets, &group, timeout)
        }) {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(self.classify(e)),
            None => Err(DaemonError::ProducerFailed(format!(
                "adding the consumer offsets to the transaction did not return within \
                 {limit:?} (the group coordinator went away mid-call)"
            ))),
        }
    }

    /// Maps a transactional error: fencing and fatal errors end the process.
    pub(super) fn classify(&self, e: KafkaError) -> DaemonError {
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

/// Runs `op` on a thread of its own and waits for it at most `limit`; None if it did
/// not return by then (it is left to finish on its own) or no thread could be started.
fn within<T: Send + 'static>(
    limit: Duration,
    op: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("txn-offsets".into())
        .spawn(move || {
            let _ = tx.send(op());
        })
        .ok()?;
    rx.recv_timeout(limit).ok()
}

/// The transactional producer of this instance, initialised: fences any earlier
/// incarnation (or the failed producer it replaces) and aborts its open transaction.
pub(super) fn transactional_producer(
    k: &crate::config::KafkaConfig,
    transactional_id: &str,
    txn_timeout: Duration,
) -> Result<Arc<ThreadedProducer<LogContext>>, DaemonError> {
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
        .create_with_context(LogContext)
        .map_err(KafkaSetupError::Client)?;
    producer
        .init_transactions(Duration::from_secs(60))
        .map_err(|e| match &e {
            KafkaError::Transaction(t) if t.is_fatal() => DaemonError::Fatal(e.to_string()),
            _ => DaemonError::Kafka(e),
        })?;
    Ok(Arc::new(producer))
}

#[cfg(test)]
mod tests {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::mocking::MockCluster;
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    use super::*;
    use crate::config::{Config, Severity};
    use crate::engine::{AlertKind, Evidence, Status};

    fn alert(account: &str) -> Alert {
        Alert {
            account_id: account.into(),
            kind: AlertKind::Inactive,
            status: Status::Firing,
            severity: Severity::Warning,
            episode: "2026-01-01".into(),
            event_time: 0,
            evidence: Evidence::Inactive {
                last_activity: 0,
                idle_days: 14,
            },
        }
    }

    /// The output of a thread with transactional id `id`, writing alerts to `alerts`.
    fn output(cfg: &Config, id: &str, timeout: Duration) -> Output {
        Output {
            producer: transactional_producer(&cfg.kafka, id, timeout).unwrap(),
            transactional_id: id.into(),
            in_txn: false,
            txn_began: Instant::now(),
            alerts_topic: "alerts".into(),
            dead_letter_topic: "dead-letters".into(),
            changelog: "changelog".into(),
            txn_timeout: timeout,
            meta: None,
            uncommitted: Uncommitted::default(),
        }
    }

    /// Keys of the records a `read_committed` consumer reads from `topic`.
    fn committed_keys(brokers: &str, topic: &str) -> Vec<String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "reader")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut keys = Vec::new();
        loop {
            match consumer.poll(Duration::from_secs(30)) {
                Some(Ok(m)) => keys.push(String::from_utf8_lossy(m.key().unwrap()).into_owned()),
                Some(Err(KafkaError::PartitionEOF(_))) => return keys,
                Some(Err(e)) => panic!("{e}"),
                None => panic!("no end of partition within 30 s"),
            }
        }
    }

    /// librdkafka's mock cluster: what a committed transaction sent is published and
    /// counted; what an aborted one sent is neither.
    #[test]
    fn a_committed_transaction_is_published_and_counted_an_aborted_one_is_not() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("alerts", 1, 1).unwrap();
        let mut cfg = Config::default();
        cfg.kafka.brokers = mock.bootstrap_servers();
        let timeout = Duration::from_secs(10);
        let mut out = output(&cfg, "cw-test", timeout);
        let mut stats = DaemonStats::default();
        out.send_alert(&alert("a")).unwrap();
        out.send_alert(&alert("b")).unwrap();
        assert!(out.in_txn);
        // Too young for the coordinator to have timed it out; as old as the timeout,
        // it may have.
        assert!(!out.txn_may_have_timed_out());
        let began = out.txn_began;
        out.txn_began = Instant::now().checked_sub(timeout).unwrap();
        assert!(out.txn_may_have_timed_out());
        out.txn_began = began;
        out.commit().unwrap();
        assert!(!out.in_txn);
        assert!(!out.txn_may_have_timed_out());
        out.uncommitted.count_committed(&mut stats);
        out.send_alert(&alert("c")).unwrap();
        out.abort().unwrap();
        assert!(!out.in_txn);
        out.uncommitted.forget();
        // The next transaction starts afresh.
        out.send_alert(&alert("d")).unwrap();
        out.commit().unwrap();
        out.uncommitted.count_committed(&mut stats);
        assert_eq!(stats.alerts, 3);
        assert_eq!(
            committed_keys(&cfg.kafka.brokers, "alerts"),
            ["a", "b", "d"]
        );
    }

    #[test]
    fn a_call_that_does_not_return_in_time_is_given_up_on() {
        assert_eq!(within(Duration::from_secs(5), || 7), Some(7));
        let (hold, wait) = std::sync::mpsc::channel::<()>();
        let stuck = within(Duration::from_millis(50), move || wait.recv().is_ok());
        assert_eq!(stuck, None);
        // Ends the helper thread.
        drop(hold);
    }

    /// librdkafka's mock cluster with the group coordinator down: its
    /// send_offsets_to_transaction does not return within its own timeout (it waited
    /// for minutes), `send_offsets` returns a failed producer within twice the
    /// transaction timeout (the test would hang otherwise), and a replacement producer
    /// commits the next transaction.
    #[test]
    fn adding_offsets_with_the_group_coordinator_down_fails_in_bounded_time() {
        use rdkafka::mocking::MockCoordinator;
        let mock = MockCluster::new(3).unwrap();
        mock.create_topic("alerts", 1, 1).unwrap();
        mock.create_topic("in", 1, 1).unwrap();
        mock.partition_leader("alerts", 0, Some(1)).unwrap();
        mock.coordinator(MockCoordinator::Transaction("cw-offsets".into()), 1)
            .unwrap();
        mock.coordinator(MockCoordinator::Group("g".into()), 2)
            .unwrap();
        let mut cfg = Config::default();
        cfg.kafka.brokers = mock.bootstrap_servers();
        let timeout = Duration::from_secs(2);
        let mut out = output(&cfg, "cw-offsets", timeout);
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("group.id", "g")
            .create()
            .unwrap();
        let offsets = |o: i64| {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset("in", 0, Offset::Offset(o))
                .unwrap();
            tpl
        };
        let group = || consumer.group_metadata().unwrap();
        out.send_alert(&alert("a")).unwrap();
        out.send_offsets(offsets(1), group()).unwrap();
        out.commit().unwrap();

        out.send_alert(&alert("b")).unwrap();
        mock.broker_down(2).unwrap();
        let err = out.send_offsets(offsets(2), group()).unwrap_err();
        assert!(
            matches!(err, DaemonError::ProducerFailed(_) | DaemonError::Kafka(_)),
            "{err}"
        );
        mock.broker_up(2).unwrap();
        // What the daemon's recovery does: a new producer fences the old one and
        // aborts its transaction.
        out.producer = transactional_producer(&cfg.kafka, "cw-offsets", timeout).unwrap();
        out.in_txn = false;
        out.send_alert(&alert("c")).unwrap();
        out.send_offsets(offsets(3), group()).unwrap();
        out.commit().unwrap();
        // (A real broker aborts the fenced producer's open transaction, "b"; the mock
        // cluster leaves it readable: tests/kafka.rs holds the exactly-once part.)
        let keys = committed_keys(&cfg.kafka.brokers, "alerts");
        assert!(
            keys.first().is_some_and(|k| k == "a") && keys.last().is_some_and(|k| k == "c"),
            "{keys:?}"
        );
    }

    #[test]
    fn what_a_transaction_held_counts_once_it_commits_and_never_if_it_aborts() {
        // (`not_object`: the metrics test expects no `invalid_json` rejects counted.)
        let mut u = Uncommitted::default();
        let mut stats = DaemonStats::default();
        u.alerts.push(["inactive", "firing", "warning"]);
        u.rejects.push("not_object");
        u.forget();
        u.count_committed(&mut stats);
        assert_eq!((stats.alerts, stats.rejected), (0, 0));
        u.alerts.push(["inactive", "firing", "warning"]);
        u.alerts.push(["inactive", "resolved", "warning"]);
        u.rejects.push("not_object");
        u.count_committed(&mut stats);
        assert_eq!((stats.alerts, stats.rejected), (2, 1));
        // Counted once.
        u.count_committed(&mut stats);
        assert_eq!((stats.alerts, stats.rejected), (2, 1));
    }
}
