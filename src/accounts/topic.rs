//! Account metadata for the detector and the notifier: the file (`notify.accounts_file`)
//! and the compacted accounts topic (`notify.accounts_topic`). The topic is read from
//! the beginning (all partitions assigned, no group membership, read_committed) up to its
//! end before `load` returns, then followed in the background until `stop` is set.
//! Records that cannot be used are skipped with a warning that names their topic,
//! partition and offset. Reading and following the topic are a loop that liveness
//! watches (`Loop::Accounts`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::{parse_topic_record, Accounts, MetaStore};
use crate::config::Config;
use crate::kafka::client::{base_config, LogContext};
use crate::metrics::METRICS;
use crate::server::{Health, Loop};

/// One store per (brokers, file, topic) in a process: `run` with the notifier inside
/// reads the topic once for both.
type Key = (String, String, String);
static SHARED: Mutex<Option<HashMap<Key, Weak<Accounts>>>> = Mutex::new(None);

/// The account metadata of `cfg`, or None when neither a file nor a topic is set. The
/// topic's reader and follower report their turns to `health`.
pub fn load(
    cfg: &Config,
    stop: Arc<AtomicBool>,
    health: &Arc<Health>,
) -> anyhow::Result<Option<Arc<Accounts>>> {
    use anyhow::Context;
    let n = &cfg.notify;
    if n.accounts_file.is_empty() && n.accounts_topic.is_empty() {
        return Ok(None);
    }
    let key = (
        cfg.kafka.brokers.clone(),
        n.accounts_file.clone(),
        n.accounts_topic.clone(),
    );
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(a) = shared
        .get_or_insert_with(HashMap::new)
        .get(&key)
        .and_then(Weak::upgrade)
    {
        return Ok(Some(a));
    }
    let file = if n.accounts_file.is_empty() {
        MetaStore::default()
    } else {
        let s = MetaStore::load(std::path::Path::new(&n.accounts_file))?;
        info!(accounts = s.len(), "account metadata loaded from the file");
        s
    };
    let accounts = Arc::new(Accounts::new(file));
    if !n.accounts_topic.is_empty() {
        let topic = n.accounts_topic.clone();
        let consumer = read_topic(cfg, &topic, &accounts, health)
            .with_context(|| format!("reading the accounts topic {topic}"))?;
        let a2 = accounts.clone();
        let key2 = key.clone();
        let health = health.clone();
        std::thread::Builder::new()
            .name("accounts-topic".into())
            .spawn(move || {
                follow(&consumer, &topic, &a2, &stop, &health);
                let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(m) = shared.as_mut() {
                    m.remove(&key2);
                }
            })?;
    }
    METRICS.account_metadata_accounts.set(accounts.len() as i64);
    shared
        .get_or_insert_with(HashMap::new)
        .insert(key, Arc::downgrade(&accounts));
    Ok(Some(accounts))
}

/// Applies one record; a bad one is skipped with a warning.
fn apply(m: &BorrowedMessage<'_>, accounts: &Accounts) {
    match parse_topic_record(m.key(), m.payload()) {
        Ok((id, meta)) => {
            let outcome = if meta.is_some() { "applied" } else { "deleted" };
            accounts.apply(&id, meta);
            METRICS
                .account_metadata_records
                .with_label_values(&[outcome])
                .inc();
        }
        Err(e) => {
            warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), error = %e,
                "account metadata record skipped");
            METRICS
                .account_metadata_records
                .with_label_values(&["skipped"])
                .inc();
        }
    }
}

/// Assigns every partition of `topic` from the beginning and reads up to the end
/// offsets of the moment; returns the consumer, positioned to follow.
fn read_topic(
    cfg: &Config,
    topic: &str,
    accounts: &Accounts,
    health: &Health,
) -> anyhow::Result<BaseConsumer<LogContext>> {
    // librdkafka wants a group id for position(), but with assign() and no commits
    // there is no group membership.
    let c: BaseConsumer<LogContext> = base_config(&cfg.kafka, "accounts")?
        .set(
            "group.id",
            format!("{}-accounts-reader", cfg.kafka.group_id),
        )
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "100")
        .create_with_context(LogContext)?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let parts = match md.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => t.partitions().len() as i32,
        _ => anyhow::bail!(
            "topic {topic:?} (notify.accounts_topic) does not exist; create it with \
             cleanup.policy=compact and load it with `churnwatch produce --key-field account_id`"
        ),
    };
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..parts {
        let (_, high) = c.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let mut records = 0u64;
    loop {
        health.beat(Loop::Accounts);
        let pos = c.position()?;
        let done = ends.iter().all(|(&p, &end)| {
            end == 0
                || pos
                    .find_partition(topic, p)
                    .and_then(|e| e.offset().to_raw())
                    .unwrap_or(-1)
                    >= end
        });
        if done {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "did not reach the end in 10 minutes"
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                records += 1;
                apply(&m, accounts);
            }
            Some(Err(e)) => warn!(topic, error = %e, "accounts topic consumer error"),
            None => {}
        }
    }
    info!(
        topic,
        records,
        accounts = accounts.len(),
        ms = started.elapsed().as_millis() as u64,
        "account metadata loaded from the topic"
    );
    Ok(c)
}

/// Applies the topic's new records until `stop` is set.
fn follow(
    c: &BaseConsumer<LogContext>,
    topic: &str,
    accounts: &Accounts,
    stop: &AtomicBool,
    health: &Health,
) {
    while !stop.load(Ordering::Relaxed) {
        health.beat(Loop::Accounts);
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                apply(&m, accounts);
                METRICS.account_metadata_accounts.set(accounts.len() as i64);
            }
            Some(Err(e)) => warn!(topic, error = %e, "accounts topic consumer error"),
            None => {}
        }
    }
}
