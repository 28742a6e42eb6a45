//! Silences (snoozes): "don't notify about this account (and/or kind) until T". Created,
//! listed and expired over HTTP (`/api/v1/silences`), stored in a compacted Kafka topic
//! that every instance reads, so all of them apply the same silences. A silenced alert
//! is recorded (notification log, metrics) but not delivered.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::kafka::client::LogContext;
use crate::replay::wall_clock_ms;
use crate::time::{format_rfc3339, parse_rfc3339, Millis};

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
    pub fn matches(&self, record: &Value, now: Millis) -> bool {
        let field = |k: &str| record.get(k).and_then(Value::as_str);
        self.active(now)
            && self
                .account_id
                .as_deref()
                .is_none_or(|a| field("account_id") == Some(a))
            && self
                .kind
                .as_deref()
                .is_none_or(|k| field("kind") == Some(k))
    }

    fn to_api(&self) -> Value {
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

    pub fn get(&self, id: &str) -> Option<Silence> {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// The silence that mutes this record now, if any.
    pub fn muting(&self, record: &Value, now: Millis) -> Option<String> {
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
pub fn follow(
    consumer: BaseConsumer<LogContext>,
    topic: &str,
    store: Arc<Silences>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    beat: impl Fn(),
) -> anyhow::Result<()> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let parts = md.topics().first().map_or(0, |t| t.partitions().len()) as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        beat();
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            match m.payload().map(serde_json::from_slice::<Silence>) {
                Some(Ok(s)) => store.apply(s),
                Some(Err(e)) => tracing::warn!(error = %e, "unreadable silence record skipped"),
                None => {}
            }
        }
    }
    Ok(())
}

/// State of the HTTP API.
pub struct Api {
    pub store: Arc<Silences>,
    pub producer: ThreadedProducer<LogContext>,
    pub topic: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilence {
    #[serde(default)]
    account_id: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    /// RFC 3339.
    until: String,
    author: String,
    #[serde(default)]
    reason: String,
}

fn bad(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg.into()}))).into_response()
}

impl Api {
    fn store_durably(&self, s: &Silence) -> Result<(), String> {
        let value = serde_json::to_vec(s).expect("silence serializes");
        self.producer
            .send(
                BaseRecord::to(&self.topic)
                    .key(s.id.as_bytes())
                    .payload(&value),
            )
            .map_err(|(e, _)| e.to_string())?;
        self.producer
            .flush(Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        self.store.apply(s.clone());
        Ok(())
    }
}

/// What a create request must look like, for error messages.
const NEW_SILENCE_SHAPE: &str = "send a JSON object (Content-Type: application/json) with \
     `until` (RFC 3339, in the future) and `author` (required), `account_id` and/or `kind`, \
     and optionally `reason`";

/// A body that cannot be read as a silence gets a JSON error, like every other error of
/// the API, with the status axum chose (415 without the JSON content type, 400 for bad
/// JSON, 422 for a missing or mistyped field).
fn rejected(r: JsonRejection) -> Response {
    let detail = match &r {
        JsonRejection::MissingJsonContentType(_) => {
            "missing Content-Type: application/json".to_string()
        }
        _ => r.body_text(),
    };
    (
        r.status(),
        Json(json!({"error": format!("{detail}: {NEW_SILENCE_SHAPE}")})),
    )
        .into_response()
}

async fn create(
    State(api): State<Arc<Api>>,
    body: Result<Json<NewSilence>, JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(b)) => b,
        Err(r) => return rejected(r),
    };
    let now = wall_clock_ms();
    if body.account_id.as_deref().unwrap_or("").is_empty()
        && body.kind.as_deref().unwrap_or("").is_empty()
    {
        return bad("give account_id, kind, or both: a silence must not mute everything");
    }
    if let Some(k) = &body.kind {
        if !["not_activated", "inactive", "activity_drop"].contains(&k.as_str()) {
            return bad(format!(
                "kind {k:?} is not one of not_activated, inactive, activity_drop"
            ));
        }
    }
    let until = match parse_rfc3339(&body.until) {
        Ok(t) if t > now => t,
        Ok(_) => return bad("until is in the past"),
        Err(e) => return bad(format!("until: {e}")),
    };
    if body.author.trim().is_empty() {
        return bad("author is required");
    }
    let s = Silence {
        id: format!("sil-{now:x}-{:04x}", rand::random::<u16>()),
        account_id: body.account_id.filter(|a| !a.is_empty()),
        kind: body.kind.filter(|k| !k.is_empty()),
        until_ms: until,
        author: body.author,
        reason: body.reason,
        created_at_ms: now,
        expired_at_ms: None,
    };
    let api2 = api.clone();
    let s2 = s.clone();
    match tokio::task::spawn_blocking(move || api2.store_durably(&s2)).await {
        Ok(Ok(())) => (StatusCode::CREATED, Json(s.to_api())).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not store a silence");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "could not store the silence"})),
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "internal error"})),
        )
            .into_response(),
    }
}

async fn list(State(api): State<Arc<Api>>) -> Response {
    let v: Vec<Value> = api
        .store
        .list(wall_clock_ms(), false)
        .iter()
        .map(Silence::to_api)
        .collect();
    Json(json!({"silences": v})).into_response()
}

async fn expire(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let Some(mut s) = api.store.get(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no silence {id}")})),
        )
            .into_response();
    };
    if s.expired_at_ms.is_none() {
        s.expired_at_ms = Some(wall_clock_ms());
        let api2 = api.clone();
        let s2 = s.clone();
        let stored = tokio::task::spawn_blocking(move || api2.store_durably(&s2)).await;
        if !matches!(stored, Ok(Ok(()))) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "could not store the change"})),
            )
                .into_response();
        }
    }
    Json(s.to_api()).into_response()
}

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
    let consumer: BaseConsumer<LogContext> = base_config(&cfg.kafka, "silences")?
        .set(
            "group.id",
            format!("{}-silences-reader", cfg.notify.group_id),
        )
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create_with_context(LogContext)?;
    let producer: ThreadedProducer<LogContext> = base_config(&cfg.kafka, "silences-producer")?
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .create_with_context(LogContext)?;
    let (s2, t2) = (store.clone(), topic.clone());
    health.beat(crate::server::Loop::Silences);
    std::thread::spawn(move || {
        let beat = || health.beat(crate::server::Loop::Silences);
        // A follower that fails stops turning: liveness reports it.
        if let Err(e) = follow(consumer, &t2, s2, stop, beat) {
            tracing::error!(error = %e, "following the silences topic failed");
        }
    });
    let api = Arc::new(Api {
        store: store.clone(),
        producer,
        topic,
    });
    Ok((store, router(api)))
}

/// `/api/v1/silences` routes.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/api/v1/silences", get(list).post(create))
        .route("/api/v1/silences/{id}", delete(expire))
        .with_state(api)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every refused request gets a JSON body saying what is wrong; none reaches Kafka
    /// (the producer points nowhere).
    #[tokio::test]
    async fn refusals_are_json_and_say_what_is_missing() {
        let producer: ThreadedProducer<LogContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .create_with_context(LogContext)
            .unwrap();
        let api = Arc::new(Api {
            store: Arc::new(Silences::default()),
            producer,
            topic: "t".into(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(api)).await });
        let url = format!("http://{addr}/api/v1/silences");
        let client = reqwest::Client::new();
        let until = format_rfc3339(wall_clock_ms() + 86_400_000);
        let cases: [(&str, Option<&str>, String, u16, &str); 5] = [
            (
                "no content type",
                None,
                json!({"account_id": "a", "until": until, "author": "ana"}).to_string(),
                415,
                "Content-Type: application/json",
            ),
            (
                "no author",
                Some("application/json"),
                json!({"account_id": "a", "until": until}).to_string(),
                422,
                "author",
            ),
            (
                "not JSON",
                Some("application/json"),
                "{until:".to_string(),
                400,
                "Failed to parse",
            ),
            (
                "past",
                Some("application/json"),
                json!({"account_id": "a", "until": "2020-01-01T00:00:00Z", "author": "ana"})
                    .to_string(),
                400,
                "in the past",
            ),
            (
                "neither account nor kind",
                Some("application/json"),
                json!({"until": until, "author": "ana"}).to_string(),
                400,
                "account_id, kind, or both",
            ),
        ];
        for (what, ctype, body, status, needle) in cases {
            let mut req = client.post(&url).body(body);
            if let Some(c) = ctype {
                req = req.header("Content-Type", c);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), status, "{what}");
            let v: Value = resp
                .json()
                .await
                .unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
            let msg = v["error"].as_str().unwrap_or_default();
            assert!(msg.contains(needle), "{what}: {msg}");
        }
    }

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
        let acme = json!({"account_id": "acme", "kind": "inactive"});
        let other = json!({"account_id": "globex", "kind": "inactive"});
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
            ..s
        };
        assert!(!expired.matches(&acme, 0));
    }
}
