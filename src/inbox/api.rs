//! The inbox's JSON API, version 1: `GET /api/v1/accounts` (filters, priority order,
//! paging), `GET /api/v1/accounts/{id}` (one account in full), `GET /api/v1/team`
//! (leads and admins). Answers come from an [`InboxView`]; who asks comes from the
//! request's `Extension<Principal>`, which the authentication layer in front of this
//! router inserts. Without one every request is refused (401): the API is never open.
//!
//! Bad parameters get a 400 with a JSON `{"error": ...}` naming the parameter;
//! another owner's accounts 403; an unknown account 404.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::json;

use super::model::{InboxView, ListQuery, Principal, DEFAULT_PAGE, MAX_PAGE};
use super::view::records::{KINDS, SEVERITIES};
use super::view::METRICS;

/// Longest query string accepted.
pub const MAX_QUERY_BYTES: usize = 2048;
/// Longest account id, owner or segment accepted in a request.
pub const MAX_PARAM_CHARS: usize = 256;
/// Deepest offset accepted.
pub const MAX_OFFSET: usize = 10_000_000;

/// An answer other than 200.
#[derive(Debug, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CACHE_CONTROL, "no-store")],
            Json(json!({"error": self.message, "status": self.status.as_u16()})),
        )
            .into_response()
    }
}

/// A parameter value quoted for an error message: cut, control characters dropped.
fn quoted(v: &str) -> String {
    let cut: String = v.chars().filter(|c| !c.is_control()).take(64).collect();
    format!("{cut:?}")
}

/// Reads the list parameters (`owner`, `kind`, `severity`, `segment`, `at_risk`,
/// `offset`, `limit`); anything else, a repeated parameter or a bad value is a 400.
pub fn parse_list_query(raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let raw = raw.unwrap_or("");
    if raw.len() > MAX_QUERY_BYTES {
        return Err(ApiError::bad(format!(
            "query string longer than {MAX_QUERY_BYTES} bytes"
        )));
    }
    let mut q = ListQuery::default();
    let mut seen: Vec<String> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        if seen.iter().any(|s| *s == k) {
            return Err(ApiError::bad(format!(
                "parameter {} given twice",
                quoted(&k)
            )));
        }
        seen.push(k.to_string());
        let text = |name: &str| -> Result<Option<String>, ApiError> {
            if v.is_empty()
                || v.chars().count() > MAX_PARAM_CHARS
                || v.chars().any(char::is_control)
            {
                return Err(ApiError::bad(format!(
                    "{name} must be 1 to {MAX_PARAM_CHARS} printable characters"
                )));
            }
            Ok(Some(v.to_string()))
        };
        let number = |name: &str, max: usize| -> Result<usize, ApiError> {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "{name} {} is not a whole number from 0 to {max}",
                        quoted(&v)
                    ))
                })
        };
        match &*k {
            "owner" => q.owner = text("owner")?,
            "segment" => q.segment = text("segment")?,
            "kind" => {
                if !KINDS.contains(&&*v) {
                    return Err(ApiError::bad(format!(
                        "kind {} is not one of {}",
                        quoted(&v),
                        KINDS.join(", ")
                    )));
                }
                q.kind = Some(v.to_string());
            }
            "severity" => {
                if !SEVERITIES[1..].contains(&&*v) {
                    return Err(ApiError::bad(format!(
                        "severity {} is not one of {}",
                        quoted(&v),
                        SEVERITIES[1..].join(", ")
                    )));
                }
                q.severity = Some(v.to_string());
            }
            "at_risk" => {
                q.at_risk = match &*v {
                    "true" => true,
                    "false" => false,
                    _ => return Err(ApiError::bad(format!("at_risk {} is not true or false", quoted(&v)))),
                }
            }
            "offset" => q.offset = number("offset", MAX_OFFSET)?,
            "limit" => {
                q.limit = number("limit", usize::MAX)
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad(format!("limit {} is not a whole number from 1 to {MAX_PAGE}", quoted(&v)))
                    })?
            }
            other => {
                return Err(ApiError::bad(format!(
                    "unknown parameter {}; known: owner, kind, severity, segment, at_risk, offset, limit",
                    quoted(other)
                )))
            }
        }
    }
    if q.limit == 0 {
        q.limit = DEFAULT_PAGE;
    }
    Ok(q)
}

type Who = Option<Extension<Principal>>;

fn principal(who: Who) -> Result<Principal, ApiError> {
    who.map(|Extension(p)| p)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "sign-in required"))
}

fn ok<T: serde::Serialize>(v: T) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(v)).into_response()
}

fn timed(route: &str, started: Instant, r: Result<Response, ApiError>) -> Response {
    METRICS
        .request_seconds
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn list(
    State(view): State<Arc<dyn InboxView>>,
    who: Who,
    RawQuery(raw): RawQuery,
) -> Response {
    let started = Instant::now();
    let r = (|| {
        let who = principal(who)?;
        let q = parse_list_query(raw.as_deref())?;
        if let Some(o) = &q.owner {
            if !who.sees_all() && !o.eq_ignore_ascii_case(&who.email) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "a CSM lists only their own accounts (owner must be you)",
                ));
            }
        }
        Ok(ok(view.list(&who, &q)))
    })();
    timed("accounts", started, r)
}

async fn account(
    State(view): State<Arc<dyn InboxView>>,
    who: Who,
    Path(id): Path<String>,
) -> Response {
    let started = Instant::now();
    let r = (|| {
        let who = principal(who)?;
        if id.is_empty() || id.chars().count() > MAX_PARAM_CHARS {
            return Err(ApiError::bad(format!(
                "account id must be 1 to {MAX_PARAM_CHARS} characters"
            )));
        }
        let d = view.account(&id).ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("no account {}", quoted(&id)))
        })?;
        if !who.may_see(d.summary.owner_email.as_deref()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this account belongs to another owner",
            ));
        }
        Ok(ok(d))
    })();
    timed("account", started, r)
}

async fn team(
    State(view): State<Arc<dyn InboxView>>,
    who: Who,
    RawQuery(raw): RawQuery,
) -> Response {
    let started = Instant::now();
    let r = (|| {
        let who = principal(who)?;
        if !who.sees_all() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the team view is for leads and admins",
            ));
        }
        if raw.is_some_and(|q| !q.is_empty()) {
            return Err(ApiError::bad("the team view takes no parameters"));
        }
        Ok(ok(json!({"owners": view.team()})))
    })();
    timed("team", started, r)
}

/// The API's routes over `view`. Put the authentication layer (which inserts the
/// `Principal`) around it; without one every request gets 401.
pub fn router(view: Arc<dyn InboxView>) -> Router {
    Router::new()
        .route("/api/v1/accounts", get(list))
        .route("/api/v1/accounts/{id}", get(account))
        .route("/api/v1/team", get(team))
        .layer(DefaultBodyLimit::max(1024))
        .with_state(view)
}

#[cfg(test)]
mod tests;
