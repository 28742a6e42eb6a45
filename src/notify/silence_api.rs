//! The silences HTTP API (`/api/v1/silences`), behind sign-in (`server::auth`): create
//! (stored in the silences topic and acknowledged by Kafka before `201`), list, expire.
//! Inputs are bounded: a 16 KiB body, field lengths, no control characters, at most
//! `notify.max_silence` ahead. A CSM lists, creates and expires silences of the
//! accounts they own (owner from the account metadata); a lead those of any account; an
//! admin also silences a kind across every account. The author is the signed-in email
//! (the body's `author` only for the shared `server.api_token_env` token).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::Extension;
use axum::{Json, Router};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;
use serde_json::{json, Value};

use super::silence::{Silence, Silences};
use crate::accounts::Accounts;
use crate::inbox::model::{Principal, Role};
use crate::kafka::client::LogContext;
use crate::server::auth::{forbidden, with_auth, Authenticator, LEGACY_TOKEN_EMAIL};
use crate::time::wall_clock_ms;
use crate::time::{parse_rfc3339, Millis};

/// Largest request body of the API.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest account id, kind and author; longest reason.
const MAX_FIELD: usize = 256;
const MAX_REASON: usize = 2000;
/// How long Kafka has to acknowledge a silence before the request fails.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// State of the HTTP API.
pub struct Api {
    pub store: Arc<Silences>,
    pub producer: FutureProducer<LogContext>,
    pub topic: String,
    /// `notify.max_silence`: the furthest `until` may be.
    pub max_silence: Millis,
    /// Account metadata, for the owner of a silenced account; None: owners unknown, so
    /// only leads and admins may silence.
    pub owners: Option<Arc<Accounts>>,
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
    /// Only read for the shared token (whose holder is not known by name).
    #[serde(default)]
    author: String,
    #[serde(default)]
    reason: String,
}

fn bad(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg.into()}))).into_response()
}

impl Api {
    /// Whether `who` may create, expire or see a silence of `account_id` (None: a
    /// kind on every account).
    fn may_act(&self, who: &Principal, account_id: Option<&str>) -> Result<(), String> {
        let Some(id) = account_id else {
            return if who.role == Role::Admin {
                Ok(())
            } else {
                Err("only an admin may silence a kind on every account; name an account_id".into())
            };
        };
        if who.sees_all() {
            return Ok(());
        }
        let Some(owners) = &self.owners else {
            return Err(
                "account owners are unknown here (no notify.accounts_file or \
                        accounts_topic): only a lead or admin may silence"
                    .into(),
            );
        };
        let owner = owners.get(id).and_then(|m| m.owner_email);
        if who.may_see(owner.as_deref()) {
            Ok(())
        } else {
            Err(
                "that account is not yours: only its owner, a lead or an admin may silence it"
                    .into(),
            )
        }
    }

    /// Writes the silence to its topic and waits for the broker's acknowledgement
    /// (so a `201` means it is stored), then applies it here at once.
    async fn store_durably(&self, s: &Silence) -> Result<(), String> {
        let value = serde_json::to_vec(s).expect("silence serializes");
        self.producer
            .send(
                FutureRecord::to(&self.topic).key(&s.id).payload(&value),
                STORE_TIMEOUT,
            )
            .await
            .map_err(|(e, _)| e.to_string())?;
        self.store.apply(s.clone());
        Ok(())
    }
}

/// A text field: at most `max` characters, no control characters (newlines allowed
/// in a reason).
fn check_text(field: &str, v: &str, max: usize, newlines: bool) -> Result<(), String> {
    if v.chars().count() > max {
        return Err(format!("{field} is longer than {max} characters"));
    }
    if v.chars()
        .any(|c| c.is_control() && !(newlines && c == '\n'))
    {
        return Err(format!("{field} contains a control character"));
    }
    Ok(())
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
    Extension(who): Extension<Principal>,
    body: Result<Json<NewSilence>, JsonRejection>,
) -> Response {
    let mut body = match body {
        Ok(Json(b)) => b,
        Err(r) => return rejected(r),
    };
    if who.email != LEGACY_TOKEN_EMAIL {
        body.author = who.email.clone();
    }
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
        Ok(t) if t > now + api.max_silence => {
            return bad(format!(
                "until is more than notify.max_silence ({}) ahead",
                crate::time::format_duration(api.max_silence)
            ))
        }
        Ok(t) if t > now => t,
        Ok(_) => return bad("until is in the past"),
        Err(e) => return bad(format!("until: {e}")),
    };
    if body.author.trim().is_empty() {
        return bad("author is required");
    }
    for (field, v, max, newlines) in [
        (
            "account_id",
            body.account_id.as_deref().unwrap_or(""),
            MAX_FIELD,
            false,
        ),
        ("author", body.author.as_str(), MAX_FIELD, false),
        ("reason", body.reason.as_str(), MAX_REASON, true),
    ] {
        if let Err(e) = check_text(field, v, max, newlines) {
            return bad(e);
        }
    }
    let account = body.account_id.as_deref().filter(|a| !a.is_empty());
    if let Err(why) = api.may_act(&who, account) {
        return forbidden("/api/", &why);
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
    match api.store_durably(&s).await {
        Ok(()) => (StatusCode::CREATED, Json(s.to_api())).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "could not store a silence");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "could not store the silence (Kafka did not acknowledge it); try again"})),
            )
                .into_response()
        }
    }
}

async fn list(State(api): State<Arc<Api>>, Extension(who): Extension<Principal>) -> Response {
    let v: Vec<Value> = api
        .store
        .list(wall_clock_ms(), false)
        .iter()
        .filter(|s| s.account_id.is_none() || api.may_act(&who, s.account_id.as_deref()).is_ok())
        .map(Silence::to_api)
        .collect();
    Json(json!({"silences": v})).into_response()
}

async fn expire(
    State(api): State<Arc<Api>>,
    Extension(who): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    // A malformed id (bad percent-encoding) gets a JSON error like every other refusal.
    let id = match id {
        Ok(Path(id)) => id,
        Err(r) => return bad(format!("silence id: {}", r.body_text())),
    };
    let Some(mut s) = api.store.get(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no silence {:?}", crate::notify::render::escape::cut(&id, 80))})),
        )
            .into_response();
    };
    if let Err(why) = api.may_act(&who, s.account_id.as_deref()) {
        return forbidden("/api/", &why);
    }
    if s.expired_at_ms.is_none() {
        s.expired_at_ms = Some(wall_clock_ms());
        if api.store_durably(&s).await.is_err() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "could not store the change"})),
            )
                .into_response();
        }
    }
    Json(s.to_api()).into_response()
}

/// `/api/v1/silences` routes, behind sign-in, bodies at most [`MAX_BODY_BYTES`].
pub fn router(api: Arc<Api>, auth: Arc<Authenticator>) -> Router {
    let routes = Router::new()
        .route("/api/v1/silences", get(list).post(create))
        .route("/api/v1/silences/{id}", delete(expire))
        .with_state(api)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    with_auth(routes, auth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::format_rfc3339;

    const TOKEN: &str = "test-token-0123456789abcdef";

    /// Every refused request gets a JSON body saying what is wrong; none reaches Kafka
    /// (the producer points nowhere).
    #[tokio::test]
    async fn refusals_are_json_and_say_what_is_missing() {
        let producer: FutureProducer<LogContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("message.timeout.ms", "1000")
            .create_with_context(LogContext)
            .unwrap();
        let api = Arc::new(Api {
            store: Arc::new(Silences::default()),
            producer,
            topic: "t".into(),
            max_silence: 90 * crate::time::DAY,
            owners: None,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let auth = Authenticator::new(
            &crate::config::AuthConfig::default(),
            &[],
            Some(crate::server::auth::sha256(TOKEN.as_bytes())),
        )
        .unwrap();
        tokio::spawn(async move { axum::serve(listener, router(api, Arc::new(auth))).await });
        let url = format!("http://{addr}/api/v1/silences");
        let client = reqwest::Client::new();
        let until = format_rfc3339(wall_clock_ms() + 86_400_000);
        let cases: [(&str, Option<&str>, String, u16, &str); 10] = [
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
                400,
                "author is required",
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
                "a year ahead",
                Some("application/json"),
                json!({"account_id": "a", "until": format_rfc3339(wall_clock_ms() + 365 * crate::time::DAY), "author": "ana"}).to_string(),
                400,
                "notify.max_silence",
            ),
            (
                "a long author",
                Some("application/json"),
                json!({"account_id": "a", "until": until, "author": "x".repeat(300)}).to_string(),
                400,
                "author is longer",
            ),
            (
                "a forged line",
                Some("application/json"),
                json!({"account_id": "a\nINFO forged", "until": until, "author": "ana"}).to_string(),
                400,
                "control character",
            ),
            (
                "2 MiB",
                Some("application/json"),
                json!({"account_id": "a", "until": until, "author": "ana", "reason": "x".repeat(2 << 20)}).to_string(),
                413,
                "",
            ),
            (
                "Kafka unreachable: no 201",
                Some("application/json"),
                json!({"account_id": "a", "until": until, "author": "ana"}).to_string(),
                503,
                "did not acknowledge",
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
            let mut req = client.post(&url).bearer_auth(TOKEN).body(body);
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
        // No token, a wrong token: refused before anything is read.
        for auth in [None, Some("test-token-0123456789abcdeX")] {
            let mut req = client.get(&url);
            if let Some(t) = auth {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 401);
        }
        assert_eq!(
            client
                .get(&url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
}
