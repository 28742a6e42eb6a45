//! The changelog topic: record keys and values, and restoring a partition's shard.
//!
//! Partition `p` of the changelog holds the state of input partition `p`:
//! key `a:<account_id>` -> the account's record (see `engine::snapshot`),
//! key `m` -> the partition's record (shard clocks and offsets).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::KafkaSetupError;
use crate::engine::snapshot::{decode, encode, ShardMeta};
use crate::engine::{EngineConfig, Shard};

/// Key of the partition record.
pub const META_KEY: &[u8] = b"m";
/// Prefix of account keys.
pub const ACCOUNT_PREFIX: &[u8] = b"a:";

/// What a partition's checkpoint records besides its accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    pub shard: ShardMeta,
    /// The next input offset to read at the checkpoint: everything before it was seen.
    pub next_offset: i64,
    /// The offset committed with the checkpoint: the oldest event still waiting for the
    /// watermark (re-read after a restore), or `next_offset`.
    pub commit_offset: i64,
}

impl PartitionMeta {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

/// The account key for the changelog.
pub fn account_key(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ACCOUNT_PREFIX.len() + id.len());
    k.extend_from_slice(ACCOUNT_PREFIX);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Context of the restore consumer. librdkafka reports the end of a partition through
/// the error callback too; that is how a restore ends, not an error worth logging. The
/// partition is remembered: a late end-of-partition of the partition restored before
/// (the consumer restores one after another) must not end the next one's restore early.
pub struct RestoreContext {
    eof: AtomicI32,
}

impl Default for RestoreContext {
    fn default() -> RestoreContext {
        RestoreContext {
            eof: AtomicI32::new(NO_EOF),
        }
    }
}

/// No end of partition seen.
const NO_EOF: i32 = -1;

impl ClientContext for RestoreContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::client::log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::PartitionEOF(p) => self.eof.store(p, Ordering::Release),
            // Which partition is not said: the poll loop's own event decides.
            KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {}
            _ => tracing::warn!(error = %error, reason, "changelog reader error"),
        }
    }
}

impl ConsumerContext for RestoreContext {}

/// Builds a partition's shard from its changelog records, read in log order.
pub struct Rebuild {
    shard: Shard,
    meta: Option<PartitionMeta>,
}

impl Rebuild {
    pub fn new(engine: Arc<EngineConfig>) -> Rebuild {
        Rebuild {
            shard: Shard::new(engine),
            meta: None,
        }
    }

    /// One record. Later records of an account replace earlier ones (compaction may
    /// not have run yet); an empty value forgets the account.
    pub fn apply(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        if key == META_KEY {
            let meta: PartitionMeta =
                decode(value).map_err(|e| format!("partition record: {e}"))?;
            meta.shard
                .check()
                .map_err(|e| format!("partition record: {e}"))?;
            self.meta = Some(meta);
        } else if let Some(id) = key.strip_prefix(ACCOUNT_PREFIX) {
            let id = std::str::from_utf8(id).map_err(|_| "account key is not UTF-8".to_string())?;
            if value.is_empty() {
                self.shard.forget_account(id);
            } else {
                self.shard
                    .restore_account_state(id, value)
                    .map_err(|e| format!("account {id:?}: {e}"))?;
            }
        }
        Ok(())
    }

    /// The shard as of the last partition record (timers built once, here), and that
    /// record.
    pub fn finish(mut self) -> (Shard, Option<PartitionMeta>) {
        self.shard.rebuild_timers();
        if let Some(m) = &self.meta {
            self.shard.set_meta(&m.shard);
        }
        self.shard.take_dirty();
        (self.shard, self.meta)
    }
}

/// A record's restore error, with the offset of the record (the topic and partition
/// are named by [`KafkaSetupError::Restore`]), so an operator can find it.
pub fn at_offset(offset: i64, msg: &str) -> String {
    format!("record at offset {offset}: {msg}")
}

/// A restored partition.
pub struct Restored {
    pub shard: Shard,
    pub meta: Option<PartitionMeta>,
    pub records: u64,
    pub elapsed: Duration,
}

/// Reads changelog partition `partition` from the start to its end (read_committed)
/// with `consumer` (which must have `enable.partition.eof=true`), and builds its shard.
pub fn restore_partition(
    consumer: &BaseConsumer<RestoreContext>,
    topic: &str,
    partition: i32,
    engine: Arc<EngineConfig>,
    timeout: Duration,
    progress: &dyn Fn(),
) -> Result<Restored, KafkaSetupError> {
    let started = Instant::now();
    let err = |msg: String| KafkaSetupError::Restore {
        topic: topic.to_string(),
        partition,
        msg,
    };
    let mut rebuild = Rebuild::new(engine);
    let mut records = 0u64;
    // Read up to the high watermark, or to the end of what is committed (an open
    // transaction of a crashed instance may hold the last stable offset lower).
    let (low, high) = loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
            Ok(w) => break w,
            // Brokers restarting or a leader moving: wait for them, up to `timeout`.
            Err(e) if started.elapsed() < timeout => {
                tracing::warn!(error = %e, partition, "changelog offsets not available yet; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(err(e.to_string())),
        }
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .map_err(|e| err(e.to_string()))?;
    consumer.context().eof.store(NO_EOF, Ordering::Release);
    consumer.assign(&tpl).map_err(|e| err(e.to_string()))?;
    let mut done = low >= high;
    while !done {
        if consumer.context().eof.load(Ordering::Acquire) == partition {
            break;
        }
        if started.elapsed() > timeout {
            let _ = consumer.unassign();
            return Err(err(format!("not finished after {timeout:?}")));
        }
        match consumer.poll(Duration::from_millis(50)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(p))) if p == partition => break,
            Some(Err(KafkaError::PartitionEOF(_))) => continue,
            // Transient (brokers restarting): librdkafka retries by itself.
            Some(Err(e)) => tracing::warn!(error = %e, partition, "changelog read error; retrying"),
            Some(Ok(m)) => {
                records += 1;
                if records % 65_536 == 0 {
                    // Long restores must not look like a stuck process to liveness probes.
                    progress();
                }
                done = m.offset() + 1 >= high;
                rebuild
                    .apply(m.key().unwrap_or_default(), m.payload().unwrap_or_default())
                    .map_err(|e| err(at_offset(m.offset(), &e)))?;
            }
        }
    }
    consumer.unassign().map_err(|e| err(e.to_string()))?;
    let (shard, meta) = rebuild.finish();
    Ok(Restored {
        shard,
        meta,
        records,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn rebuild() -> Rebuild {
        Rebuild::new(Arc::new(EngineConfig::new(&Config::default())))
    }

    /// A corrupt or truncated record is an error that names the record, its topic,
    /// partition and offset: never a panic, never a record silently skipped.
    #[test]
    fn a_corrupt_record_names_topic_partition_and_offset() {
        let meta = PartitionMeta {
            shard: ShardMeta {
                watermark: 1,
                newest: 2,
                now: 3,
                next_close_day: Some(4),
            },
            next_offset: 10,
            commit_offset: 9,
        }
        .encode();
        let truncated = &meta[..meta.len() - 1];
        let e = rebuild().apply(META_KEY, truncated).unwrap_err();
        assert!(
            e.starts_with("partition record: state record is corrupt"),
            "{e}"
        );
        let e = rebuild().apply(b"a:acct-1", &[1, 0xff, 0xff]).unwrap_err();
        assert!(
            e.starts_with("account \"acct-1\": state record is corrupt"),
            "{e}"
        );
        let e = rebuild().apply(b"a:acct-1", &[7, 0]).unwrap_err();
        assert!(e.contains("version 7"), "{e}");
        let full = KafkaSetupError::Restore {
            topic: "cw-changelog".into(),
            partition: 3,
            msg: at_offset(41, &e),
        }
        .to_string();
        assert!(
            full.contains("\"cw-changelog\"")
                && full.contains("partition 3")
                && full.contains("offset 41")
                && full.contains("acct-1"),
            "{full}"
        );
        // The intact record still restores.
        let mut ok = rebuild();
        ok.apply(META_KEY, &meta).unwrap();
        assert_eq!(ok.finish().1.unwrap().next_offset, 10);
    }
}
