//! The actions HTTP API, behind sign-in (`server::auth`): `POST /api/v1/actions`
//! records an action on an alert (stored in the actions topic and acknowledged by Kafka
//! before `201`), `GET /api/v1/actions?account_id=` lists an account's actions, newest
//! first. JSON bodies only (a form post is refused with 415, so a cross-site form
//! cannot act for someone), at most [`MAX_BODY_BYTES`]. A CSM acts on and lists the
//! accounts they own (owner from the account metadata, else from the inbox view); a
//! lead or admin on every account. A refused request writes nothing. The checks and
//! the write are [`Applier::apply`], shared with the Slack and email channels.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

pub use super::apply::Applier;
use super::metrics::{count, count_source};
use super::record::{AccountActions, ActionEntry, NewAction, QuietBy, Source};
use super::store::Actions;
use crate::inbox::model::Principal;
use crate::server::auth::{with_auth, Authenticator};

/// Largest request body.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Longest `account_id` a list request may name.
const MAX_ACCOUNT_ID: usize = 256;

/// State of the API: the shared apply path ([`Applier`]).
pub type Api = Applier;

const SHAPE: &str = "send a JSON object (Content-Type: application/json) with `alert_id`, \
     `action` (acknowledge, snooze, not_a_risk, reopen), and for snooze and not_a_risk a \
     `reason` and `until` (RFC 3339 or YYYY-MM-DD, in the future)";

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
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
            count_source(Source::Api, "bad_body");
            let detail = match &r {
                JsonRejection::MissingJsonContentType(_) => {
                    "missing Content-Type: application/json".to_string()
                }
                _ => r.body_text(),
            };
            return error(r.status(), format!("{detail}: {SHAPE}"));
        }
    };
    match api.apply(&who, &req, Source::Api, "", None).await {
        Ok(a) => {
            let mut body = a.record.to_api();
            body["state"] = serde_json::to_value(a.state).expect("state serializes");
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Err(r) => {
            let mut resp = error(r.status, r.message);
            if let Some(s) = r.retry_after_s {
                resp.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, s.into());
            }
            resp
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
    let quiet = store
        .quiet_of_account(account_id, now)
        .into_iter()
        .map(|(kind, (alert_id, state))| (kind, QuietBy { alert_id, state }))
        .collect();
    AccountActions {
        account_id: account_id.to_string(),
        actions,
        states,
        quiet,
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
