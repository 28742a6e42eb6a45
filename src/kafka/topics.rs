//! Topic checks at start-up: the input must exist; the changelog, alerts and dead-letter
//! topics are created if missing (with the input's partition count) and checked if
//! present (the changelog must be compacted and have exactly the input's partitions,
//! since partition `p` of the changelog holds the state of input partition `p`).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::client::base_config;
use super::KafkaSetupError;
use crate::config::KafkaConfig;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
        .block_on(f)
}

/// Partition count of a topic, or `None` if it does not exist.
pub fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<Option<usize>, String> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|&n| n > 0))
}

/// Creates `topic` (compacted or not) with `partitions`; an existing topic is fine.
fn create_topic(
    k: &KafkaConfig,
    topic: &str,
    partitions: i32,
    compacted: bool,
) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> = base_config(k, "admin")?
        .create()
        .map_err(KafkaSetupError::Client)?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let mut nt = NewTopic::new(
        topic,
        partitions,
        TopicReplication::Fixed(k.replication_factor),
    );
    if compacted {
        nt = nt
            .set("cleanup.policy", "compact")
            .set("min.compaction.lag.ms", "60000");
    }
    let res = block_on(admin.create_topics(&[nt], &opts)).map_err(|e| KafkaSetupError::Topic {
        topic: topic.to_string(),
        msg: e.to_string(),
    })?;
    for r in res {
        if let Err((t, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(KafkaSetupError::Topic {
                    topic: t,
                    msg: format!("cannot create: {code}"),
                });
            }
        }
    }
    tracing::info!(topic, partitions, compacted, "created topic");
    Ok(())
}

/// Checks and creates topics; returns the input's partition count.
pub fn ensure_topics(k: &KafkaConfig) -> Result<usize, KafkaSetupError> {
    let consumer: BaseConsumer = base_config(k, "admin")?
        .create()
        .map_err(KafkaSetupError::Client)?;
    let input = partitions(&consumer, &k.input_topic)
        .map_err(|detail| KafkaSetupError::NoInputTopic {
            topic: k.input_topic.clone(),
            brokers: k.brokers.clone(),
            detail,
        })?
        .ok_or_else(|| KafkaSetupError::NoInputTopic {
            topic: k.input_topic.clone(),
            brokers: k.brokers.clone(),
            detail: "not found".into(),
        })?;
    let admin: AdminClient<DefaultClientContext> = base_config(k, "admin")?
        .create()
        .map_err(KafkaSetupError::Client)?;
    let changelog = k.changelog();
    let wanted = [
        (changelog.clone(), true),
        (k.alerts_topic.clone(), false),
        (k.dead_letter_topic.clone(), false),
    ];
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for (topic, compacted) in &wanted {
        let existing = partitions(&consumer, topic).map_err(|msg| KafkaSetupError::Topic {
            topic: topic.clone(),
            msg,
        })?;
        match existing {
            Some(n) if *compacted && n != input => {
                return Err(KafkaSetupError::Topic {
                    topic: topic.clone(),
                    msg: format!(
                    "has {n} partitions but the input {:?} has {input}; the changelog must match \
                         the input (recreate it, or point kafka.changelog_topic at a new topic)",
                    k.input_topic
                ),
                })
            }
            Some(_) => {}
            None if !k.create_topics => {
                return Err(KafkaSetupError::Topic {
                    topic: topic.clone(),
                    msg: "does not exist and kafka.create_topics = false".into(),
                })
            }
            None => create_topic(k, topic, input as i32, *compacted)?,
        }
    }
    // The changelog must be compacted, or old state would be lost to retention.
    let res = block_on(admin.describe_configs(&[ResourceSpecifier::Topic(&changelog)], &opts))
        .map_err(|e| KafkaSetupError::Topic {
            topic: changelog.clone(),
            msg: e.to_string(),
        })?;
    for r in res {
        let resource = r.map_err(|code| KafkaSetupError::Topic {
            topic: changelog.clone(),
            msg: format!("cannot describe: {code}"),
        })?;
        let policy = resource
            .get("cleanup.policy")
            .and_then(|e| e.value.clone())
            .unwrap_or_default();
        if !policy.contains("compact") {
            return Err(KafkaSetupError::Topic {
                topic: changelog.clone(),
                msg: format!("cleanup.policy is {policy:?}; the changelog must be compacted"),
            });
        }
    }
    Ok(input)
}

/// Creates a compacted topic with `partitions` if it does not exist.
pub fn ensure_compacted(
    k: &KafkaConfig,
    topic: &str,
    partitions_wanted: i32,
) -> Result<(), KafkaSetupError> {
    let consumer: BaseConsumer = base_config(k, "admin")?
        .create()
        .map_err(KafkaSetupError::Client)?;
    if partitions(&consumer, topic)
        .map_err(|msg| KafkaSetupError::Topic {
            topic: topic.to_string(),
            msg,
        })?
        .is_some()
    {
        return Ok(());
    }
    create_topic(k, topic, partitions_wanted, true)
}

/// Topics of the notifier: the alerts topic must exist; the repartition topic, the
/// notification log (compacted) and the dead-letter topic are created if missing.
/// The repartition topic and the log are co-partitioned (partition `p` of the log
/// records what the owner of partition `p` decided): both get the log's partition count
/// if it exists, else the alerts topic's, and must match. Returns that count.
pub fn ensure_notify_topics(
    k: &KafkaConfig,
    alerts: &str,
    by_owner: &str,
    log: &str,
    dlq: &str,
) -> Result<i32, KafkaSetupError> {
    let consumer: BaseConsumer = base_config(k, "admin")?
        .create()
        .map_err(KafkaSetupError::Client)?;
    let count = |topic: &str| {
        partitions(&consumer, topic).map_err(|msg| KafkaSetupError::Topic {
            topic: topic.to_string(),
            msg,
        })
    };
    let n = count(alerts)?.ok_or_else(|| KafkaSetupError::Topic {
        topic: alerts.to_string(),
        msg: "the alerts topic does not exist yet (start `churnwatch run` first, or create it)"
            .into(),
    })?;
    let (existing_log, existing_by_owner) = (count(log)?, count(by_owner)?);
    let wanted = existing_log.or(existing_by_owner).unwrap_or(n);
    for (topic, compacted, parts, exists) in [
        (by_owner, false, wanted, existing_by_owner.is_some()),
        (log, true, wanted, existing_log.is_some()),
        (dlq, false, n, count(dlq)?.is_some()),
    ] {
        if exists {
            continue;
        }
        if !k.create_topics {
            return Err(KafkaSetupError::Topic {
                topic: topic.to_string(),
                msg: "does not exist and kafka.create_topics = false".into(),
            });
        }
        create_topic(k, topic, parts as i32, compacted)?;
    }
    if let (Some(a), Some(b)) = (existing_log, existing_by_owner) {
        if a != b {
            return Err(KafkaSetupError::Topic {
                topic: by_owner.to_string(),
                msg: format!(
                    "has {b} partitions but the notification log {log:?} has {a}; they must \
                     match (partition p of the log belongs to partition p of {by_owner:?})"
                ),
            });
        }
    }
    Ok(wanted as i32)
}
