//! The notification log `<notify.group_id>-log`: a compacted topic co-partitioned
//! with the repartition topic, so that partition `p` of the log holds what the owner
//! of repartition partition `p` decided, like a Kafka Streams task's changelog. It
//! holds one record per delivered (receiver, alert id, status), and the write-ahead
//! record of every batch about to be sent, tombstoned once settled. This module reads
//! a partition back on assignment and writes ahead of and after each delivery.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;

use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, ThreadedProducer};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::warn;

use super::super::deliver::{DeliveryError, Sender};
use super::super::render::Notification;
use super::Clock;
use crate::kafka::client::LogContext;
use crate::kafka::compacted;
use crate::metrics::METRICS;
use crate::server::{Health, Loop};

/// Separates receiver, id and status in notification-log keys.
const SEP: char = '\u{1f}';
/// Prefix of the keys of batches about to be sent (write-ahead): a batch still in the
/// log when its partition is assigned was perhaps sent, perhaps not, and is sent again
/// exactly as it was, so that a repeat carries the same idempotency key.
const BATCH_PREFIX: &str = "\u{1e}batch:";

/// The value of a delivery's record in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub sent_at_ms: i64,
    pub receiver: String,
    /// Recorded, not sent: a silence muted it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub silenced: bool,
}

/// The log key of a delivery.
pub fn delivery_key(receiver: &str, id: &str, status: &str) -> String {
    format!("{receiver}{SEP}{id}{SEP}{status}")
}

/// The log key of a batch's write-ahead record.
pub fn batch_key(note: &Notification) -> String {
    format!("{BATCH_PREFIX}{}", note.idempotency_key())
}

/// What one partition of the log holds.
#[derive(Debug, Default)]
pub struct Restored {
    /// Deliveries: (receiver, id, status, when).
    pub sent: Vec<(String, String, String, i64)>,
    /// Write-ahead batches not settled, in key order.
    pub unsettled: Vec<Notification>,
    /// Deliveries under keys of an older format (`id\x1fstatus`, the receiver in the
    /// value), to rewrite: (old key, receiver, id, status, when).
    pub legacy: Vec<(String, String, String, String, i64)>,
}

/// Reads partition `p` of the log from its start to its end.
pub fn restore_partition(
    c: &BaseConsumer<LogContext>,
    topic: &str,
    p: i32,
    health: &Health,
) -> anyhow::Result<Restored> {
    let mut out = Restored::default();
    let ends = compacted::assign_from_beginning(c, topic, [p])?;
    let mut batches: BTreeMap<String, Notification> = BTreeMap::new();
    let mut sent: BTreeMap<String, (String, String, String, i64)> = BTreeMap::new();
    let beat = || health.beat(Loop::Notifier);
    compacted::read_to_end(c, topic, &ends, beat, |m| {
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
            return;
        }
        let Some(payload) = m.payload() else {
            sent.remove(&key);
            return;
        };
        let Ok(d) = serde_json::from_slice::<Delivery>(payload) else {
            warn!(
                partition = p,
                "unreadable delivery record in the notification log"
            );
            return;
        };
        let parts: Vec<&str> = key.split(SEP).collect();
        let entry = match parts[..] {
            [r, id, status] => (r.to_string(), id.to_string(), status.to_string()),
            [id, status] => (d.receiver.clone(), id.to_string(), status.to_string()),
            _ => return,
        };
        sent.insert(key.clone(), (entry.0, entry.1, entry.2, d.sent_at_ms));
    })
    .with_context(|| format!("partition {p} of the notification log"))?;
    for (key, entry) in sent {
        if key.split(SEP).count() == 2 {
            let (r, id, status, at) = entry.clone();
            out.legacy.push((key, r, id, status, at));
        }
        out.sent.push(entry);
    }
    out.unsettled = batches.into_values().collect();
    Ok(out)
}

/// What became of one notification of a wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    DeadLettered,
    /// Not delivered within `notify.delivery_deadline`: its alerts wait for the
    /// group's next batch (or, for a batch sent again, its write-ahead record stays).
    Deferred,
}

/// One notification of a wave: its repartition (and log) partition, and whether it is
/// a write-ahead batch found in the log, sent again as it was.
#[derive(Debug)]
pub struct Planned {
    pub partition: i32,
    pub note: Notification,
    pub resend: bool,
}

/// The producer side of the notifier: deliveries logged ahead and after.
pub struct Io<'a> {
    pub clock: &'a Clock,
    pub producer: &'a ThreadedProducer<LogContext>,
    pub sender: &'a Sender,
    pub rt: &'a tokio::runtime::Runtime,
    pub log_topic: &'a str,
    pub dlq_topic: &'a str,
    pub health: &'a Health,
}

impl Io<'_> {
    /// Logs the batches ahead, delivers them (concurrently, up to
    /// `notify.max_concurrent_deliveries`; one receiver and owner's in order), records
    /// each outcome.
    pub fn deliver(&self, wave: &[Planned]) -> anyhow::Result<Vec<Outcome>> {
        if wave.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = wave.iter().map(|w| batch_key(&w.note)).collect();
        for (w, key) in wave.iter().zip(&keys) {
            let body = serde_json::to_vec(&w.note)?;
            send(
                self.producer,
                BaseRecord::to(self.log_topic)
                    .partition(w.partition)
                    .key(key.as_bytes())
                    .payload(&body),
            )?;
        }
        crate::kafka::client::drain(self.producer, Duration::from_secs(30))?;
        let notes: Vec<Notification> = wave.iter().map(|w| w.note.clone()).collect();
        // Deliveries can take a while (retries, rate limits): the loop is alive as long
        // as they go on.
        let results = self.rt.block_on(async {
            let all = self.sender.deliver_all(&notes);
            tokio::pin!(all);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    r = &mut all => break r,
                    _ = tick.tick() => self.health.beat(Loop::Notifier),
                }
            }
        });
        let mut out = Vec::with_capacity(wave.len());
        for ((w, key), result) in wave.iter().zip(&keys).zip(results) {
            let note = &w.note;
            let outcome = match result {
                Err(DeliveryError::Deferred) => {
                    warn!(receiver = %note.receiver, alerts = note.alerts.len(), "notification not delivered within notify.delivery_deadline; trying again later");
                    Outcome::Deferred
                }
                Ok(_) => {
                    let now = (self.clock)();
                    for a in &note.alerts {
                        let (id, status) = (a.id.as_str(), a.status.as_str());
                        self.log_delivery(w.partition, &note.receiver, id, status, now, false)?;
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
            // more): a tombstone takes it out of the log. A batch sent again stays
            // until it is settled: its alerts are in no group and their offsets may
            // be committed, so its record is what keeps them.
            if !(w.resend && outcome == Outcome::Deferred) {
                send(
                    self.producer,
                    BaseRecord::<[u8], [u8]>::to(self.log_topic)
                        .partition(w.partition)
                        .key(key.as_bytes()),
                )?;
            }
            out.push(outcome);
        }
        Ok(out)
    }

    /// Records the delivery (or the silencing) of one alert to `receiver`.
    pub fn log_delivery(
        &self,
        partition: i32,
        receiver: &str,
        id: &str,
        status: &str,
        at: i64,
        silenced: bool,
    ) -> anyhow::Result<()> {
        let key = delivery_key(receiver, id, status);
        let value = serde_json::to_vec(&Delivery {
            sent_at_ms: at,
            receiver: receiver.to_string(),
            silenced,
        })?;
        send(
            self.producer,
            BaseRecord::to(self.log_topic)
                .partition(partition)
                .key(key.as_bytes())
                .payload(&value),
        )
    }

    /// Takes a key out of partition `partition` of the log.
    pub fn tombstone(&self, partition: i32, key: &str) -> anyhow::Result<()> {
        send(
            self.producer,
            BaseRecord::<[u8], [u8]>::to(self.log_topic)
                .partition(partition)
                .key(key.as_bytes()),
        )
    }
}

/// Longest a record waits for room in the producer's queue before that is an error.
const SEND_QUEUE_WAIT: Duration = Duration::from_secs(30);

/// Queues a record; waits while the producer's queue is full (backpressure), fails on
/// any other error (a record too large, an unknown topic...) instead of retrying it
/// forever. Delivery failures surface in `drain`.
pub fn send(
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
    fn keys_and_values_round_trip() {
        assert_eq!(
            delivery_key("hook", "a/inactive/1", "firing"),
            "hook\u{1f}a/inactive/1\u{1f}firing"
        );
        let d = Delivery {
            sent_at_ms: 5,
            receiver: "hook".into(),
            silenced: false,
        };
        let text = serde_json::to_string(&d).unwrap();
        assert_eq!(text, r#"{"sent_at_ms":5,"receiver":"hook"}"#);
        assert_eq!(serde_json::from_str::<Delivery>(&text).unwrap(), d);
        let muted: Delivery =
            serde_json::from_str(r#"{"sent_at_ms":5,"receiver":"hook","silenced":true}"#).unwrap();
        assert!(muted.silenced);
    }
}
