//! `churnwatch produce`: loads an NDJSON file into a topic, keyed by account id (Java's
//! murmur2 partitioner, so every producer puts an account on the same partition).
//! Lines that do not parse are produced as they are, without a key, so the daemon
//! dead-letters them with their reason: the topic holds exactly the file.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::client::base_config;
use super::KafkaSetupError;
use crate::config::Config;
use crate::source::event::EventParser;
use crate::source::file::{is_blank, Line, LineReader};

/// Counts deliveries.
#[derive(Default)]
struct Delivery {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

struct Ctx(Arc<Delivery>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.0.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Sends one record, waiting while the producer's queue is full.
fn send(
    producer: &ThreadedProducer<Ctx>,
    mut rec: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                std::thread::sleep(Duration::from_millis(1));
                rec = r;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Waits until every record is delivered or given up on; an error says how many were
/// not delivered, and the first reason.
fn flush(producer: &ThreadedProducer<Ctx>, delivery: &Delivery, topic: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    producer
        .flush(Duration::from_secs(120))
        .with_context(|| format!("flushing to {topic}"))?;
    let failed = delivery.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = delivery
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        anyhow::bail!(
            "{failed} messages were not delivered to {topic}; first error: {}",
            first.unwrap_or_default()
        );
    }
    Ok(())
}

/// What `produce` did.
#[derive(Debug, Clone, Default)]
pub struct ProduceSummary {
    pub lines: u64,
    pub keyed: u64,
    pub unkeyed: u64,
    /// Lines longer than `input.max_event_bytes`, not produced (the daemon would only
    /// reject them; the broker would refuse most).
    pub too_long: u64,
    pub elapsed_secs: f64,
}

/// Produces every non-blank line of `input` to `topic`.
pub fn produce(
    cfg: &Config,
    input: &Path,
    topic: &str,
    mut on_progress: impl FnMut(u64),
) -> anyhow::Result<ProduceSummary> {
    use anyhow::Context;
    let started = Instant::now();
    let parser = EventParser::new(&cfg.input).map_err(anyhow::Error::msg)?;
    let delivery = Arc::new(Delivery::default());
    let producer: ThreadedProducer<Ctx> = base_config(&cfg.kafka, "produce")?
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Ctx(delivery.clone()))
        .map_err(KafkaSetupError::Client)?;
    let mut reader = LineReader::open(input)
        .with_context(|| format!("cannot open {}", input.display()))?
        .with_max_line(cfg.input.max_event_bytes);
    let mut buf = Vec::new();
    let mut s = ProduceSummary::default();
    while let Some(line) = reader.next_line(&mut buf)? {
        if let Line::TooLong { len } = line {
            tracing::warn!(
                line = reader.line_no,
                bytes = len,
                limit = cfg.input.max_event_bytes,
                "line longer than input.max_event_bytes: not produced"
            );
            s.too_long += 1;
            continue;
        }
        if is_blank(&buf) {
            continue;
        }
        s.lines += 1;
        if s.lines % 65536 == 0 {
            on_progress(reader.progress().get());
        }
        let key = parser.parse(&buf).ok().map(|e| e.account_id.into_owned());
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(buf.as_slice());
        match &key {
            Some(k) => {
                s.keyed += 1;
                rec = rec.key(k.as_bytes());
            }
            None => s.unkeyed += 1,
        }
        if let Err(e) = send(&producer, rec) {
            anyhow::bail!("cannot produce line {} to {topic}: {e}", reader.line_no)
        }
    }
    flush(&producer, &delivery, topic)?;
    s.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(s)
}

/// Longest line of a keyed file (account metadata) when `input.max_event_bytes` is less.
const KEYED_MAX_LINE: usize = 1 << 20;

/// Produces every non-blank line of `input`, a JSON object, to `topic` keyed by its
/// string field `key_field` (for a compacted topic such as `notify.accounts_topic`),
/// or with `tombstones`, a tombstone (null value) for each line's key. The whole file
/// is checked first: a line that is not a JSON object with that field stops the
/// command with its line number before anything is produced.
pub fn produce_keyed(
    cfg: &Config,
    input: &Path,
    topic: &str,
    key_field: &str,
    tombstones: bool,
) -> anyhow::Result<ProduceSummary> {
    use anyhow::Context;
    let started = Instant::now();
    let limit = cfg.input.max_event_bytes.max(KEYED_MAX_LINE);
    let mut reader = LineReader::open(input)
        .with_context(|| format!("cannot open {}", input.display()))?
        .with_max_line(limit);
    let mut buf = Vec::new();
    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    while let Some(line) = reader.next_line(&mut buf)? {
        if let Line::TooLong { len } = line {
            anyhow::bail!(
                "{} line {}: {len} bytes, above the limit of {limit}; nothing was produced",
                input.display(),
                reader.line_no
            );
        }
        if is_blank(&buf) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&buf).with_context(|| {
            format!(
                "{} line {}: not JSON; nothing was produced",
                input.display(),
                reader.line_no
            )
        })?;
        let key = v
            .get(key_field)
            .and_then(serde_json::Value::as_str)
            .filter(|k| !k.is_empty())
            .with_context(|| {
                format!(
                    "{} line {}: no non-empty string field {key_field:?} for the key; nothing was produced",
                    input.display(),
                    reader.line_no
                )
            })?;
        records.push((key.to_string(), buf.clone()));
    }
    let delivery = Arc::new(Delivery::default());
    let producer: ThreadedProducer<Ctx> = base_config(&cfg.kafka, "produce")?
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("partitioner", "murmur2_random")
        .create_with_context(Ctx(delivery.clone()))
        .map_err(KafkaSetupError::Client)?;
    let mut s = ProduceSummary::default();
    for (key, value) in &records {
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(key.as_bytes());
        if !tombstones {
            rec = rec.payload(value.as_slice());
        }
        if let Err(e) = send(&producer, rec) {
            anyhow::bail!("cannot produce to {topic}: {e}")
        }
        s.lines += 1;
        s.keyed += 1;
    }
    flush(&producer, &delivery, topic)?;
    s.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(s)
}
