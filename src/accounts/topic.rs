//! Account metadata for the detector and the notifier: the file (`notify.accounts_file`)
//! and the compacted accounts topic (`notify.accounts_topic`). The topic is read from
//! the beginning (all partitions assigned, no group membership, read_committed) up to its
//! end before `load` returns, then followed in the background until `stop` is set.
//! Records that cannot be used are skipped with a warning that names their topic,
//! partition and offset. Reading and following the topic are a loop that liveness
//! watches (`Loop::Accounts`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{BorrowedMessage, Message};
use tracing::{info, warn};

use super::{parse_topic_record, Accounts, MetaStore};
use crate::config::Config;
use crate::kafka::client::LogContext;
use crate::kafka::compacted;
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
    let c = compacted::reader(
        &cfg.kafka,
        "accounts",
        format!("{}-accounts-reader", cfg.kafka.group_id),
        true,
    )?;
    let Some(parts) = compacted::partition_count(&c, topic)? else {
        anyhow::bail!(
            "topic {topic:?} (notify.accounts_topic) does not exist; create it with \
             cleanup.policy=compact and load it with `churnwatch produce --key-field account_id`"
        )
    };
    let ends = compacted::assign_from_beginning(&c, topic, 0..parts)?;
    let started = Instant::now();
    let records = compacted::read_to_end(
        &c,
        topic,
        &ends,
        || health.beat(Loop::Accounts),
        |m| apply(m, accounts),
    )?;
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
