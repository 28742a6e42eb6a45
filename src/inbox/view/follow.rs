//! Keeping the view in step with Kafka: one consumer, assigned (no consumer group, no
//! commits) every partition of the changelog and alerts topics, and of the accounts
//! and silences topics when they exist, from the beginning, `read_committed`, so the
//! view shows committed checkpoints only and is at most one checkpoint behind the
//! detector. Records are applied in batches under the view's write lock. The view is
//! *caught up* once every partition was read to the end offset seen at the start.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::{Source, View};
use crate::config::Config;
use crate::kafka::client::{tuned_config, LogContext};
use crate::server::{Health, Loop, Phase};

/// Most records applied under one hold of the write lock (a few ms).
const BATCH: usize = 2048;

/// The topics the view reads, with what each holds; `required` ones are waited for.
pub fn topics(cfg: &Config) -> Vec<(String, Source, bool)> {
    let mut t = vec![
        (cfg.kafka.changelog(), Source::Changelog, true),
        (cfg.kafka.alerts_topic.clone(), Source::Alerts, true),
        (
            format!("{}-silences", cfg.notify.group_id),
            Source::Silences,
            false,
        ),
    ];
    if !cfg.notify.accounts_topic.is_empty() {
        t.push((cfg.notify.accounts_topic.clone(), Source::Accounts, true));
    }
    t
}

/// Starts following on a thread of its own; returns once the thread runs. Loads the
/// metadata file (`notify.accounts_file`) first.
pub fn start(
    cfg: &Config,
    view: Arc<View>,
    stop: Arc<AtomicBool>,
    health: Arc<Health>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    use anyhow::Context;
    if !cfg.notify.accounts_file.is_empty() {
        let file =
            crate::accounts::MetaStore::load(std::path::Path::new(&cfg.notify.accounts_file))?;
        view.write().store().load_file(file);
    }
    let consumer: BaseConsumer<LogContext> = tuned_config(
        &cfg.kafka,
        "inbox",
        &[
            ("fetch.wait.max.ms", "100"),
            ("queued.max.messages.kbytes", "65536"),
        ],
    )?
    // librdkafka wants a group id for position(); with assign() and no commits there
    // is no group membership.
    .set("group.id", format!("{}-inbox-reader", cfg.kafka.group_id))
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    .set("isolation.level", "read_committed")
    .create_with_context(LogContext)
    .context("inbox view consumer")?;
    let topics = topics(cfg);
    health.update(|h| h.inbox = Some(Phase::Starting));
    health.beat(Loop::Inbox);
    std::thread::Builder::new()
        .name("inbox-view".into())
        .spawn(move || {
            if let Err(e) = run(&consumer, &topics, &view, &stop, &health) {
                // A follower that stops turning is reported by liveness.
                tracing::error!(error = %e, "inbox view: following the topics failed");
            }
        })
        .context("starting the inbox view thread")
}

/// Partition counts of the topics, waiting for required ones to exist.
fn partitions(
    c: &BaseConsumer<LogContext>,
    topics: &[(String, Source, bool)],
    stop: &AtomicBool,
    health: &Health,
) -> anyhow::Result<Vec<(String, Source, i32)>> {
    let mut out = Vec::new();
    for (topic, source, required) in topics {
        let mut warned = false;
        loop {
            health.beat(Loop::Inbox);
            let n = c
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .ok()
                .and_then(|md| {
                    md.topics()
                        .first()
                        .filter(|t| t.error().is_none())
                        .map(|t| t.partitions().len() as i32)
                })
                .unwrap_or(0);
            if n > 0 {
                out.push((topic.clone(), *source, n));
                break;
            }
            if !required || stop.load(Ordering::Relaxed) {
                info!(
                    topic,
                    source = source.as_str(),
                    "inbox view: topic not found; not followed"
                );
                break;
            }
            if !warned {
                warn!(
                    topic,
                    source = source.as_str(),
                    "inbox view: waiting for the topic to exist"
                );
                warned = true;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    Ok(out)
}

fn run(
    c: &BaseConsumer<LogContext>,
    topics: &[(String, Source, bool)],
    view: &View,
    stop: &AtomicBool,
    health: &Health,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let parts = partitions(c, topics, stop, health)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends: Vec<(String, i32, i64)> = Vec::new();
    let mut source_of: HashMap<String, Source> = HashMap::new();
    for (topic, source, n) in &parts {
        source_of.insert(topic.clone(), *source);
        for p in 0..*n {
            let (_, high) = c.fetch_watermarks(topic, p, Duration::from_secs(10))?;
            ends.push((topic.clone(), p, high));
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    c.assign(&tpl)?;
    let mut records = 0u64;
    let mut last_check = Instant::now();
    let mut last_write = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        health.beat(Loop::Inbox);
        if let Some(first) = c.poll(Duration::from_millis(100)) {
            let mut w = view.write();
            let t0 = Instant::now();
            let mut next = Some(first);
            let mut n = 0;
            while let Some(m) = next.take() {
                match m {
                    Ok(m) => {
                        let src = source_of.get(m.topic()).copied().unwrap_or(Source::Alerts);
                        w.apply(src, m.partition(), m.offset(), m.key(), m.payload());
                        records += 1;
                    }
                    Err(e) => warn!(error = %e, "inbox view: consumer error"),
                }
                n += 1;
                if n < BATCH && t0.elapsed() < Duration::from_millis(20) {
                    next = c.poll(Duration::ZERO);
                }
            }
            last_write = Instant::now();
        } else if last_write.elapsed() > Duration::from_secs(60) {
            // Quiet: renewals still come closer (priorities are counted by the day).
            drop(view.write());
            last_write = Instant::now();
        }
        if !view.caught_up() && last_check.elapsed() > Duration::from_millis(200) {
            last_check = Instant::now();
            let pos = c.position()?;
            let done = ends.iter().all(|(t, p, end)| {
                *end == 0
                    || pos
                        .find_partition(t, *p)
                        .and_then(|e| e.offset().to_raw())
                        .unwrap_or(-1)
                        >= *end
            });
            if done {
                view.set_caught_up(true);
                health.update(|h| h.inbox = Some(Phase::Running));
                info!(
                    records,
                    accounts = crate::inbox::model::InboxView::status(view).accounts,
                    ms = started.elapsed().as_millis() as u64,
                    "inbox view caught up"
                );
            }
        }
    }
    Ok(())
}
