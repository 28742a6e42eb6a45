//! Following the actions topic: [`start`] creates `<notify.group_id>-actions` if
//! missing (compacted), reads it to its end before the API is served (so a new action
//! extends the full history), then follows it on a thread until the process stops.
//! Alerts whose actions ended more than [`KEEP`] ago are deleted from the topic.
//! Reading and following are a loop that liveness watches (`Loop::Actions`): a
//! follower that stopped makes `/healthz` and `/readyz` say so.
//! A record that cannot be read, or whose actions are not about its own alert, is
//! skipped, counted and logged by its place, never by its bytes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::metrics::{count, ACTIONS};
use super::record::AlertActions;
use super::store::{Actions, Clock, MAX_ALERTS};
use crate::inbox::model::InboxView;
use crate::kafka::client::{base_config, LogContext};
use crate::kafka::compacted;

/// The actions topic of `group_id` (`notify.group_id`).
pub fn topic_name(group_id: &str) -> String {
    format!("{group_id}-actions")
}

/// Applies one record of the topic to `store`. Returns the alert id when the store
/// now holds more than the record (it is the alert's latest value in the topic, and
/// lacks an action another instance wrote at the same time): the union must be
/// written back, or a restart after compaction would lose that action.
pub fn apply_record(store: &Actions, m: &BorrowedMessage<'_>) -> Option<String> {
    let key = m.key().and_then(|k| std::str::from_utf8(k).ok());
    let mut repair = None;
    match m.payload() {
        None => {
            if let Some(id) = key {
                store.remove(id);
            }
        }
        Some(p) => match serde_json::from_slice::<AlertActions>(p) {
            Ok(v) if v.is_consistent() && key == Some(v.alert_id.as_str()) => {
                let id = v.alert_id.clone();
                match store.apply(v) {
                    Ok(more) => repair = more.then_some(id),
                    Err(_) => {
                        count("unknown", "store_full");
                        tracing::warn!(
                            partition = m.partition(),
                            offset = m.offset(),
                            "the actions store is full; an action record was not applied"
                        );
                    }
                }
            }
            _ => {
                count("unknown", "unreadable_record");
                tracing::warn!(
                    partition = m.partition(),
                    offset = m.offset(),
                    "unreadable action record skipped"
                );
            }
        },
    }
    ACTIONS.alerts.set(store.len() as i64);
    repair
}

/// Writes back what `store` holds of `alert_id` (see [`apply_record`]); a failure is
/// logged, and the next value of that alert or restart of an instance that holds the
/// union tries again.
fn write_back(store: &Actions, producer: &FutureProducer<LogContext>, topic: &str, alert_id: &str) {
    let Some(v) = store.get(alert_id) else {
        return;
    };
    let value = serde_json::to_vec(&v).expect("actions serialize");
    count("unknown", "merged");
    if let Err((e, _)) = producer.send_result(FutureRecord::to(topic).key(alert_id).payload(&value))
    {
        tracing::warn!(error = %e, "could not write back an alert's merged actions");
    }
}

/// How long after its latest action (or the end of its snooze) an alert's actions are
/// kept before they are deleted (tombstoned) from the topic, so the topic and the store
/// do not grow forever. Longer than any `until` may be ahead.
pub const KEEP: crate::time::Millis = 180 * crate::time::DAY;

/// Reads `topic` to its end into `store`, then follows it until `stop` is set; once
/// an hour, when idle, deletes the alerts that ended more than [`KEEP`] ago (every
/// instance may; deleting twice is harmless).
fn read_then_follow(
    consumer: BaseConsumer<LogContext>,
    producer: FutureProducer<LogContext>,
    topic: String,
    store: Arc<Actions>,
    stop: Arc<AtomicBool>,
    health: Arc<crate::server::Health>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let beat = move || health.beat(crate::server::Loop::Actions);
    beat();
    let parts = compacted::partition_count(&consumer, &topic)?.unwrap_or(0);
    let ends = compacted::assign_from_beginning(&consumer, &topic, 0..parts)?;
    // Only an alert's last value in the topic decides whether it needs writing back.
    let mut repairs = std::collections::BTreeSet::new();
    let n = compacted::read_to_end(&consumer, &topic, &ends, &beat, |m| {
        let key = m.key().and_then(|k| std::str::from_utf8(k).ok());
        match (apply_record(&store, m), key) {
            (Some(id), _) => {
                repairs.insert(id);
            }
            (None, Some(k)) => {
                repairs.remove(k);
            }
            (None, None) => {}
        }
    })?;
    for id in &repairs {
        write_back(&store, &producer, &topic, id);
    }
    tracing::info!(
        records = n,
        alerts = store.len(),
        merged = repairs.len(),
        "actions topic read"
    );
    Ok(std::thread::Builder::new()
        .name("actions-topic".into())
        .spawn(move || {
            let mut last_cleanup: Option<std::time::Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                beat();
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => {
                        if let Some(id) = apply_record(&store, &m) {
                            write_back(&store, &producer, &topic, &id);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "consumer error on the actions topic")
                    }
                    // Idle: the topic is read to its end, the store is complete.
                    None if last_cleanup
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) =>
                    {
                        last_cleanup = Some(std::time::Instant::now());
                        for id in store.ended_before(store.now() - KEEP) {
                            let _ = producer
                                .send_result(FutureRecord::<str, [u8]>::to(&topic).key(&id));
                        }
                    }
                    None => {}
                }
            }
        })?)
}

/// Creates the actions topic if missing, reads it, starts following it, and returns
/// the store and the routes: `/api/v1/actions`, and when configured Slack's
/// interactions and the email links. `view`: the inbox's view when this
/// process serves it (alerts are then checked against it).
pub fn start(
    cfg: &crate::config::Config,
    stop: Arc<AtomicBool>,
    health: Arc<crate::server::Health>,
    view: Option<Arc<dyn InboxView>>,
) -> anyhow::Result<(Arc<Actions>, Router)> {
    let topic = topic_name(&cfg.notify.group_id);
    crate::kafka::topics::ensure_compacted(&cfg.kafka, &topic, 1)?;
    let clock: Clock = Arc::new(crate::time::wall_clock_ms);
    let store = Arc::new(Actions::new(MAX_ALERTS, clock));
    let consumer = compacted::reader(
        &cfg.kafka,
        "actions",
        format!("{}-actions-reader", cfg.notify.group_id),
        false,
    )?;
    let producer: FutureProducer<LogContext> = base_config(&cfg.kafka, "actions-producer")?
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .create_with_context(LogContext)?;
    read_then_follow(
        consumer,
        producer.clone(),
        topic.clone(),
        store.clone(),
        stop.clone(),
        health.clone(),
    )?;
    let auth = crate::server::auth::Authenticator::from_config(&cfg.server)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let owners = match crate::accounts::load(cfg, stop, &health) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "account metadata unavailable to the actions API: only leads and admins may act");
            None
        }
    };
    let applier = Arc::new(super::apply::Applier {
        store: store.clone(),
        producer,
        topic,
        horizon: cfg.notify.max_silence.0,
        owners,
        view,
        writing: tokio::sync::Mutex::new(()),
        rate: Default::default(),
    });
    let auth = Arc::new(auth);
    let role_of: Arc<dyn Fn(&str) -> crate::inbox::model::Role + Send + Sync> = {
        let auth = auth.clone();
        Arc::new(move |email: &str| auth.role_of(email))
    };
    let mut routes = super::api::router(applier.clone(), auth);
    let slack = &cfg.notify.slack;
    if slack.interactions {
        let secret = std::env::var(&slack.signing_secret_env)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| s.len() >= 16)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "notify.slack.interactions is on but {} does not hold the Slack app's \
                     signing secret",
                    slack.signing_secret_env
                )
            })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        routes = routes.merge(super::slack::router(Arc::new(
            super::slack::SlackInteractions {
                applier: applier.clone(),
                secret: secret.into_bytes(),
                users: slack.users.clone(),
                role_of: role_of.clone(),
                seen: Default::default(),
                http,
                loopback: slack.allow_loopback_response_url,
            },
        )));
    }
    let links = &cfg.notify.email_links;
    if links.enabled {
        let key =
            super::email_link::LinkKey::from_env(&links.secret_env).map_err(anyhow::Error::msg)?;
        routes = routes.merge(super::email_link::router(Arc::new(
            super::email_link::EmailLinks {
                applier,
                key,
                role_of,
                ttl: links.ttl.0,
            },
        )));
    }
    Ok((store, routes))
}
