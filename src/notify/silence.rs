//! Silences (snoozes): "don't notify about this account (and/or kind) until T". Created,
//! listed and expired over HTTP (`/api/v1/silences`), stored in a compacted Kafka topic
//! that every instance reads, so all of them apply the same silences. A silenced alert
//! is recorded (notification log, metrics) but not delivered.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kafka::client::LogContext;
use crate::kafka::compacted;
use crate::record::AlertRecord;
use crate::time::{format_rfc3339, wall_clock_ms, Millis};

/// One silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub until_ms: Millis,
    pub author: String,
    pub reason: String,
    pub created_at_ms: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at_ms: Option<Millis>,
}

impl Silence {
    pub fn active(&self, now: Millis) -> bool {
        self.expired_at_ms.is_none() && now < self.until_ms
    }

    /// Whether it silences this alert record now.
    pub fn matches(&self, record: &AlertRecord, now: Millis) -> bool {
        self.active(now)
            && self
                .account_id
                .as_deref()
                .is_none_or(|a| record.account_id == a)
            && self
                .kind
                .as_deref()
                .is_none_or(|k| record.kind.as_str() == k)
    }

    pub fn to_api(&self) -> Value {
        let mut v = serde_json::to_value(self).expect("silence serializes");
        v["until"] = format_rfc3339(self.until_ms).into();
        v["created_at"] = format_rfc3339(self.created_at_ms).into();
        if let Some(e) = self.expired_at_ms {
            v["expired_at"] = format_rfc3339(e).into();
        }
        v
    }
}

/// The silences known to this process.
#[derive(Debug, Default)]
pub struct Silences {
    by_id: RwLock<HashMap<String, Silence>>,
}

impl Silences {
    pub fn apply(&self, s: Silence) {
        self.by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(s.id.clone(), s);
    }

    pub fn remove(&self, id: &str) {
        self.by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Ids of the silences that ended (expired or ran out) before `t`.
    pub fn ended_before(&self, t: Millis) -> Vec<String> {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| s.expired_at_ms.unwrap_or(s.until_ms).min(s.until_ms) < t)
            .map(|s| s.id.clone())
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<Silence> {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// The silence that mutes this record now, if any.
    pub fn muting(&self, record: &AlertRecord, now: Millis) -> Option<String> {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|s| s.matches(record, now))
            .map(|s| s.id.clone())
    }

    pub fn list(&self, now: Millis, include_expired: bool) -> Vec<Silence> {
        let mut v: Vec<Silence> = self
            .by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| include_expired || s.active(now))
            .cloned()
            .collect();
        v.sort_by_key(|s| s.created_at_ms);
        v
    }
}

/// Keeps `store` in step with the silences topic until `stop` is set; `beat` is called
/// at every turn (liveness).
///
/// Once an hour it also deletes (tombstones) the silences that ended more than
/// [`KEEP_ENDED`] ago, so the compacted topic does not grow forever; every instance may
/// do so, deleting twice is harmless.
pub fn follow(
    consumer: BaseConsumer<LogContext>,
    producer: FutureProducer<LogContext>,
    topic: &str,
    store: Arc<Silences>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    beat: impl Fn(),
) -> anyhow::Result<()> {
    let parts = compacted::partition_count(&consumer, topic)?.unwrap_or(0);
    compacted::assign_from_beginning(&consumer, topic, 0..parts)?;
    let mut last_cleanup: Option<std::time::Instant> = None;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        beat();
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            match m.payload().map(serde_json::from_slice::<Silence>) {
                Some(Ok(s)) => store.apply(s),
                Some(Err(e)) => tracing::warn!(error = %e, "unreadable silence record skipped"),
                None => {
                    if let Some(id) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                        store.remove(id);
                    }
                }
            }
        } else if last_cleanup.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            // Idle: the topic is read to its end, the store is complete.
            last_cleanup = Some(std::time::Instant::now());
            for id in store.ended_before(wall_clock_ms() - KEEP_ENDED) {
                let _ = producer.send_result(FutureRecord::<str, [u8]>::to(topic).key(&id));
            }
        }
    }
    Ok(())
}

/// How long an ended silence stays listed (with `include_expired`) before it is
/// deleted from the topic.
pub const KEEP_ENDED: Millis = 7 * crate::time::DAY;

/// Creates the silences topic if missing, starts following it, and returns the store
/// and the HTTP routes.
pub fn start(
    cfg: &crate::config::Config,
    stop: Arc<std::sync::atomic::AtomicBool>,
    health: Arc<crate::server::Health>,
) -> anyhow::Result<(Arc<Silences>, Router)> {
    use crate::kafka::client::base_config;
    let topic = format!("{}-silences", cfg.notify.group_id);
    crate::kafka::topics::ensure_compacted(&cfg.kafka, &topic, 1)?;
    let store = Arc::new(Silences::default());
    let consumer = compacted::reader(
        &cfg.kafka,
        "silences",
        format!("{}-silences-reader", cfg.notify.group_id),
        false,
    )?;
    let producer: rdkafka::producer::FutureProducer<LogContext> =
        base_config(&cfg.kafka, "silences-producer")?
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .create_with_context(LogContext)?;
    let (stop_owners, health_owners) = (stop.clone(), health.clone());
    let (s2, t2, p2) = (store.clone(), topic.clone(), producer.clone());
    health.beat(crate::server::Loop::Silences);
    std::thread::spawn(move || {
        let beat = || health.beat(crate::server::Loop::Silences);
        // A follower that fails stops turning: liveness reports it.
        if let Err(e) = follow(consumer, p2, &t2, s2, stop, beat) {
            tracing::error!(error = %e, "following the silences topic failed");
        }
    });
    let auth = crate::server::auth::Authenticator::from_config(&cfg.server)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !auth.can_sign_in() {
        tracing::warn!(var = %cfg.server.api_token_env, "no API token and no trusted proxy: the silences API refuses every request");
    }
    // The owners of accounts, so a CSM may silence their own; the same store the
    // notifier reads (loaded once per process).
    let owners = match crate::accounts::load(cfg, stop_owners, &health_owners) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "account metadata unavailable to the silences API: only leads and admins may silence");
            None
        }
    };
    let api = Arc::new(super::silence_api::Api {
        store: store.clone(),
        producer,
        topic,
        max_silence: cfg.notify.max_silence.0,
        owners,
    });
    Ok((store, super::silence_api::router(api, Arc::new(auth))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let s = Silence {
            id: "s".into(),
            account_id: Some("acme".into()),
            kind: None,
            until_ms: 1000,
            author: "ana".into(),
            reason: "renewal call".into(),
            created_at_ms: 0,
            expired_at_ms: None,
        };
        let firing = |id: &str| {
            crate::record::AlertRecord::sample(
                id,
                crate::engine::Status::Firing,
                crate::config::Severity::Warning,
            )
        };
        let acme = firing("acme/inactive/1");
        let other = firing("globex/inactive/1");
        assert!(s.matches(&acme, 999));
        assert!(!s.matches(&acme, 1000));
        assert!(!s.matches(&other, 0));
        let kind_only = Silence {
            account_id: None,
            kind: Some("activity_drop".into()),
            ..s.clone()
        };
        assert!(!kind_only.matches(&acme, 0));
        let expired = Silence {
            expired_at_ms: Some(5),
            ..s.clone()
        };
        assert!(!expired.matches(&acme, 0));
        let store = Silences::default();
        store.apply(expired);
        store.apply(Silence {
            id: "later".into(),
            until_ms: 10_000,
            ..s.clone()
        });
        assert_eq!(store.ended_before(6), vec!["s".to_string()]);
        store.remove("s");
        assert!(store.get("s").is_none() && store.get("later").is_some());
    }
}
