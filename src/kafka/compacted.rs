//! Reading a compacted topic to its end (the accounts topic, the silences topic, a
//! partition of the notification log): a consumer with partitions assigned from the
//! beginning, no group membership and no commits, that reads up to the end offsets of
//! the moment it starts, and can then go on following the topic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::client::{base_config, LogContext};
use crate::config::KafkaConfig;

/// How long reading to the end may take before it is an error.
pub const READ_DEADLINE: Duration = Duration::from_secs(600);

/// A consumer for reading compacted topics: `group_id` only because librdkafka wants
/// one for `position()`; with `assign` and no commits there is no group membership.
pub fn reader(
    k: &KafkaConfig,
    role: &str,
    group_id: String,
    read_committed: bool,
) -> anyhow::Result<BaseConsumer<LogContext>> {
    let mut c = base_config(k, role)?;
    c.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100");
    if read_committed {
        c.set("isolation.level", "read_committed");
    }
    Ok(c.create_with_context(LogContext)?)
}

/// The number of partitions of `topic`, or None when it does not exist.
pub fn partition_count(c: &BaseConsumer<LogContext>, topic: &str) -> anyhow::Result<Option<i32>> {
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(match md.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Some(t.partitions().len() as i32)
        }
        _ => None,
    })
}

/// Assigns `partitions` of `topic` from the beginning (replacing any assignment) and
/// returns their end offsets at this moment.
pub fn assign_from_beginning(
    c: &BaseConsumer<LogContext>,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in partitions {
        let (_, high) = c.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    Ok(ends)
}

/// Reads the assigned partitions of `topic` until each is at its offset in `ends`,
/// passing every record to `apply`; `beat` is called at every turn (liveness).
/// Consumer errors are logged and reading goes on; not reaching the end within
/// [`READ_DEADLINE`] is an error. Returns the number of records read.
pub fn read_to_end(
    c: &BaseConsumer<LogContext>,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    mut beat: impl FnMut(),
    mut apply: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + READ_DEADLINE;
    let mut records = 0u64;
    loop {
        beat();
        let pos = c.position()?;
        let done = ends.iter().all(|(&p, &end)| {
            end <= 0
                || pos
                    .find_partition(topic, p)
                    .and_then(|e| e.offset().to_raw())
                    .unwrap_or(-1)
                    >= end
        });
        if done {
            return Ok(records);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "reading {topic} did not reach its end in {} s",
            READ_DEADLINE.as_secs()
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                records += 1;
                apply(&m);
            }
            Some(Err(e)) => {
                warn!(topic, error = %e, "consumer error while reading a compacted topic")
            }
            None => {}
        }
    }
}
