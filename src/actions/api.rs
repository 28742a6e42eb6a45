//! The actions HTTP API, behind sign-in (`server::auth`): `POST /api/v1/actions`
//! records an action on an alert (stored in the actions topic and acknowledged by Kafka
//! before `201`), `GET /api/v1/actions?account_id=` lists an account's actions, newest
//! first. JSON bodies only (a form post is refused with 415, so a cross-site form
//! cannot act for someone), at most [`MAX_BODY_BYTES`]. A CSM acts on and lists the
//! accounts they own (owner from the account metadata, else from the inbox view); a
//! lead or admin on every account. A refused request writes nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;
use serde_json::json;

use super::metrics::count;
use super::record::{
    validate, AccountActions, ActionEntry, ActionRecord, AlertActions, NewAction, Refusal,
};
use super::store::Actions;
use crate::accounts::Accounts;
use crate::inbox::model::{InboxView, Principal};
use crate::kafka::client::LogContext;
use crate::server::auth::{with_auth, Authenticator};

/// Largest request body.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Longest `account_id` a list request may name.
const MAX_ACCOUNT_ID: usize = 256;
/// How long Kafka has to acknowledge an action before the request fails.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// State of the API.
pub struct Api {
    pub store: Arc<Actions>,
    pub producer: FutureProducer<LogContext>,
    pub topic: String,
    /// The furthest ahead `until` may be (`notify.max_silence`).
    pub horizon: crate::time::Millis,
    /// Account metadata (owners); None: unknown here.
    pub owners: Option<Arc<Accounts>>,
    /// The inbox's view, to check that an alert exists; None: alert ids are checked
    /// by shape only.
    pub view: Option<Arc<dyn InboxView>>,
    /// One write at a time per process, so two requests on one alert do not each
    /// append to the same history and lose the other's entry.
    pub writing: tokio::sync::Mutex<()>,
}

const SHAPE: &str = "send a JSON object (Content-Type: application/json) with `alert_id`, \
     `action` (acknowledge, snooze, not_a_risk, reopen), and for snooze and not_a_risk a \
     `reason` and `until` (RFC 3339 or YYYY-MM-DD, in the future)";

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

impl Api {
    /// The owner of `account_id` as this process knows it.
    fn owner(&self, account_id: &str) -> Option<String> {
        if let Some(o) = self
            .owners
            .as_ref()
            .and_then(|o| o.get(account_id))
            .and_then(|m| m.owner_email)
        {
            return Some(o);
        }
        self.view.as_ref()?.account(account_id)?.summary.owner_email
    }

    /// Whether `who` may act on (and see the actions of) `account_id`.
    fn may_act(&self, who: &Principal, account_id: &str) -> Result<(), String> {
        if who.sees_all() {
            return Ok(());
        }
        if who.may_see(self.owner(account_id).as_deref()) {
            Ok(())
        } else {
            Err(
                "that account is not yours (or its owner is unknown here): only its owner, \
                 a lead or an admin may act on it"
                    .into(),
            )
        }
    }

    /// Whether the alert exists: in the inbox view's firing alerts or history when a
    /// view is here and caught up; otherwise its id's shape (already checked) is all.
    fn alert_known(&self, rec: &ActionRecord) -> Result<(), String> {
        let Some(view) = &self.view else {
            return Ok(());
        };
        if !view.status().caught_up {
            return Ok(());
        }
        let Some(d) = view.account(&rec.account_id) else {
            return Err("no such account in the inbox".into());
        };
        let id = rec.alert_id.as_str();
        if d.summary.firing.iter().any(|f| f.id == id) || d.history.iter().any(|h| h.id == id) {
            Ok(())
        } else {
            Err("no such alert on that account (neither firing nor in its recent history)".into())
        }
    }

    /// Writes the alert's new value to the topic, waits for the broker's
    /// acknowledgement, then applies it here.
    async fn store_durably(&self, v: AlertActions) -> Result<(), String> {
        let value = serde_json::to_vec(&v).expect("actions serialize");
        self.producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(&v.alert_id)
                    .payload(&value),
                STORE_TIMEOUT,
            )
            .await
            .map_err(|(e, _)| e.to_string())?;
        // Room was checked under the write lock; only a follower racing in new alerts
        // could fill the store meanwhile, and then the topic still has it.
        let _ = self.store.apply(v);
        super::metrics::ACTIONS.alerts.set(self.store.len() as i64);
        Ok(())
    }
}

fn refused(action: &str, r: Refusal) -> Response {
    count(action, r.bucket);
    error(StatusCode::BAD_REQUEST, r.message)
}

async fn create(
    State(api): State<Arc<Api>>,
    Extension(who): Extension<Principal>,
    body: Result<Json<NewAction>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(b)) => b,
        Err(r) => {
            count("unknown", "bad_body");
            let detail = match &r {
                JsonRejection::MissingJsonContentType(_) => {
                    "missing Content-Type: application/json".to_string()
                }
                _ => r.body_text(),
            };
            return error(r.status(), format!("{detail}: {SHAPE}"));
        }
    };
    let now = api.store.now();
    let rec = match validate(&req, &who.email, now, api.horizon) {
        Ok(r) => r,
        Err(e) => return refused(&req.action, e),
    };
    let kind = rec.action.as_str();
    if let Err(why) = api.may_act(&who, &rec.account_id) {
        count(kind, "forbidden");
        return error(StatusCode::FORBIDDEN, why);
    }
    if let Err(why) = api.alert_known(&rec) {
        count(kind, "unknown_alert");
        return error(StatusCode::NOT_FOUND, why);
    }
    let _guard = api.writing.lock().await;
    if !api.store.has_room_for(&rec.alert_id) {
        count(kind, "store_full");
        tracing::warn!("the actions store is full; refusing an action on a new alert");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many alerts with actions are held; try again later or ask an administrator",
        );
    }
    let v = AlertActions::with(api.store.get(&rec.alert_id), rec.clone());
    let state = v.state(now);
    match api.store_durably(v).await {
        Ok(()) => {
            count(kind, "accepted");
            let mut body = rec.to_api();
            body["state"] = serde_json::to_value(state).expect("state serializes");
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Err(e) => {
            count(kind, "unavailable");
            tracing::warn!(error = %e, "could not store an action");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "could not store the action (Kafka did not acknowledge it); try again",
            )
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    account_id: String,
}

async fn list(
    State(api): State<Arc<Api>>,
    Extension(who): Extension<Principal>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "give exactly one parameter, account_id (GET /api/v1/actions?account_id=...)",
        );
    };
    if q.account_id.is_empty()
        || q.account_id.len() > MAX_ACCOUNT_ID
        || q.account_id.chars().any(char::is_control)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "account_id must be 1 to 256 bytes without control characters",
        );
    }
    if let Err(why) = api.may_act(&who, &q.account_id) {
        return error(StatusCode::FORBIDDEN, why);
    }
    Json(account_actions(&api.store, &q.account_id)).into_response()
}

/// An account's actions, newest first, and each alert's state now: the list's answer,
/// and what the account page shows.
pub fn account_actions(store: &Actions, account_id: &str) -> AccountActions {
    let now = store.now();
    let actions: Vec<ActionEntry> = store
        .of_account(account_id)
        .into_iter()
        .map(ActionEntry::from)
        .collect();
    let states = actions
        .iter()
        .map(|a| {
            let id = &a.record.alert_id;
            (id.clone(), store.state_at(id, now))
        })
        .collect();
    AccountActions {
        account_id: account_id.to_string(),
        actions,
        states,
    }
}

/// `/api/v1/actions`, behind sign-in, bodies at most [`MAX_BODY_BYTES`].
pub fn router(api: Arc<Api>, auth: Arc<Authenticator>) -> Router {
    let routes = Router::new()
        .route("/api/v1/actions", get(list).post(create))
        .with_state(api)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    with_auth(routes, auth)
}
