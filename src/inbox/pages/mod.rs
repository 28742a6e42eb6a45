//! The inbox pages, server-rendered from the read model ([`InboxView`]): `GET /inbox`
//! (accounts in priority order, filters, paging), `GET /inbox/accounts/{id}` (one
//! account in full), `GET /inbox/team` (leads and admins: load per CSM), and the CSS
//! and JS they use, embedded in the binary (`/inbox/assets/...`). Handlers take the
//! caller from `Extension<Principal>`: wrap [`router`] with
//! `server::auth::with_auth`. A CSM sees their own accounts only (403 otherwise).
//!
//! - `html`: the frame, the list and team pages, formatting.
//! - `account`: the account page.
//! - `actions`: the alert states, action buttons and action history on it.
//! - `svg`: sparklines and the activity chart.
//! - `fixture`: an in-memory view for tests.

mod account;
mod actions;
pub mod fixture;
mod html;
mod svg;

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use crate::config::normalize_email;
use crate::inbox::model::{InboxView, ListQuery, Principal, MAX_PAGE};
use crate::time::wall_clock_ms;

const CSS: &str = include_str!("assets/inbox.css");
const JS: &str = include_str!("assets/inbox.js");
const ICON: &str = include_str!("assets/favicon.svg");

/// Longest account id in a path; longest query string value.
const MAX_ID: usize = 256;
const MAX_VALUE: usize = 254;
/// Deepest offset a list page may ask for.
const MAX_OFFSET: usize = 10_000_000;

/// The pages and their assets; every handler expects `Extension<Principal>`.
pub fn router(view: Arc<dyn InboxView>) -> Router {
    Router::new()
        .route("/inbox", get(list))
        .route("/inbox/accounts/{id}", get(account))
        .route("/inbox/team", get(team))
        .route("/inbox/assets/inbox.css", get(css))
        .route("/inbox/assets/inbox.js", get(js))
        .route("/inbox/assets/favicon.svg", get(icon))
        .with_state(view)
}

/// The path of an account's page (`/inbox/accounts/{id}`, the id percent-encoded), for
/// links in Slack and email messages: prefix it with the inbox's public URL.
pub fn account_path(account_id: &str) -> String {
    html::account_href(account_id)
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(ctype: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// An HTML answer with `status`.
fn page(status: StatusCode, body: String) -> Response {
    (status, Html(body)).into_response()
}

fn problem(
    view: &dyn InboxView,
    who: &Principal,
    status: StatusCode,
    title: &str,
    why: &str,
) -> Response {
    page(status, html::problem(who, &view.status(), title, why))
}

/// Reads the list page's query string. Unknown, repeated or oversized parameters are
/// refused (400) rather than ignored, so a typo does not silently show everything.
/// A CSM may name only themselves as owner (403).
fn parse_list(raw: Option<&str>, who: &Principal) -> Result<ListQuery, (StatusCode, String)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let mut q = ListQuery::default();
    let mut seen: Vec<String> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        // Named in errors, so at most 40 characters of it.
        let k: String = crate::notify::render::escape::cut(&k, 40);
        if seen.contains(&k) {
            return Err(bad(format!("parameter {k:?} is given twice")));
        }
        if seen.len() >= 8 {
            return Err(bad("too many parameters".into()));
        }
        seen.push(k.clone());
        if v.chars().count() > MAX_VALUE || v.chars().any(char::is_control) {
            return Err(bad(format!(
                "parameter {k:?} is longer than {MAX_VALUE} characters or has control characters"
            )));
        }
        let v = v.trim();
        let opt = || (!v.is_empty()).then(|| v.to_string());
        let number = |max: usize| -> Result<usize, (StatusCode, String)> {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| bad(format!("{k} must be a whole number from 0 to {max}")))
        };
        match k.as_str() {
            "kind" => {
                q.kind = opt();
                if let Some(k) = &q.kind {
                    if !["not_activated", "inactive", "activity_drop"].contains(&k.as_str()) {
                        return Err(bad(
                            "kind must be not_activated, inactive or activity_drop".into()
                        ));
                    }
                }
            }
            "severity" => {
                q.severity = opt();
                if q.severity
                    .as_deref()
                    .is_some_and(|s| s != "warning" && s != "critical")
                {
                    return Err(bad("severity must be warning or critical".into()));
                }
            }
            "segment" => q.segment = opt(),
            "owner" => {
                q.owner = match opt() {
                    None => None,
                    Some(o) => Some(normalize_email(&o).map_err(|m| bad(format!("owner: {m}")))?),
                }
            }
            "all" => match v {
                "1" | "true" | "on" => q.at_risk = false,
                "" | "0" | "false" => q.at_risk = true,
                _ => return Err(bad("all must be 1 or 0".into())),
            },
            "offset" => q.offset = number(MAX_OFFSET)?,
            "limit" => {
                q.limit = number(MAX_PAGE)?;
                if q.limit == 0 {
                    return Err(bad(format!("limit must be from 1 to {MAX_PAGE}")));
                }
            }
            other => {
                return Err(bad(format!(
                "unknown parameter {:?}: use kind, severity, segment, owner, all, offset, limit",
                crate::notify::render::escape::cut(other, 40)
            )))
            }
        }
    }
    if !who.sees_all() {
        if let Some(o) = &q.owner {
            if !o.eq_ignore_ascii_case(&who.email) {
                return Err((
                    StatusCode::FORBIDDEN,
                    "you see your own accounts only; leads and admins may filter by owner".into(),
                ));
            }
        }
    }
    Ok(q)
}

async fn list(
    State(view): State<Arc<dyn InboxView>>,
    Extension(who): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = match parse_list(raw.as_deref(), &who) {
        Ok(q) => q,
        Err((code, why)) => {
            let title = if code == StatusCode::FORBIDDEN {
                "Not allowed"
            } else {
                "Bad request"
            };
            return problem(view.as_ref(), &who, code, title, &why);
        }
    };
    let p = view.list(&who, &q);
    let states: Vec<_> = p
        .items
        .iter()
        .map(|a| a.firing.first().and_then(|f| view.alert_state(&f.id)))
        .collect();
    page(
        StatusCode::OK,
        html::list_page(&who, &view.status(), &q, &p, &states, wall_clock_ms()),
    )
}

async fn account(
    State(view): State<Arc<dyn InboxView>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    if id.is_empty() || id.len() > MAX_ID || id.chars().any(char::is_control) {
        return problem(
            view.as_ref(),
            &who,
            StatusCode::BAD_REQUEST,
            "Bad request",
            "not an account id",
        );
    }
    let Some(a) = view.account(&id) else {
        return problem(
            view.as_ref(),
            &who,
            StatusCode::NOT_FOUND,
            "No such account",
            "churnwatch knows no account with this id.",
        );
    };
    if !who.may_see(a.summary.owner_email.as_deref()) {
        return problem(
            view.as_ref(),
            &who,
            StatusCode::FORBIDDEN,
            "Not allowed",
            "This account is owned by someone else: a CSM sees their own accounts; ask a team lead.",
        );
    }
    page(
        StatusCode::OK,
        account::account_page(&who, &view.status(), &a, wall_clock_ms()),
    )
}

async fn team(
    State(view): State<Arc<dyn InboxView>>,
    Extension(who): Extension<Principal>,
) -> Response {
    if !who.sees_all() {
        return problem(
            view.as_ref(),
            &who,
            StatusCode::FORBIDDEN,
            "Not allowed",
            "The team page is for team leads and admins.",
        );
    }
    page(
        StatusCode::OK,
        html::team_page(&who, &view.status(), &view.team()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::model::Role;

    fn csm(e: &str) -> Principal {
        Principal {
            email: e.into(),
            role: Role::Csm,
        }
    }

    #[test]
    fn account_paths_keep_ids_in_their_segment() {
        assert_eq!(account_path("acme"), "/inbox/accounts/acme");
        assert_eq!(
            account_path("a/../b?c#d"),
            "/inbox/accounts/a%2F..%2Fb%3Fc%23d"
        );
    }

    #[test]
    fn list_parameters_are_checked() {
        let ana = csm("ana@x.io");
        let q = parse_list(
            Some("kind=inactive&severity=critical&limit=10&offset=20&all=1"),
            &ana,
        )
        .unwrap();
        assert_eq!(q.kind.as_deref(), Some("inactive"));
        assert_eq!((q.limit, q.offset, q.at_risk), (10, 20, false));
        assert_eq!(parse_list(Some("kind="), &ana).unwrap().kind, None);
        for (raw, code, needle) in [
            ("limit=0", 400, "limit"),
            ("limit=100000", 400, "limit"),
            ("offset=-1", 400, "offset"),
            ("offset=abc", 400, "offset"),
            ("kind=gone", 400, "kind"),
            ("severity=loud", 400, "severity"),
            ("sort=name", 400, "unknown parameter"),
            ("kind=inactive&kind=inactive", 400, "twice"),
            ("owner=not-an-email", 400, "owner"),
            ("owner=ben%40x.io", 403, "own accounts"),
            ("segment=a%0Ab", 400, "control"),
        ] {
            let (c, m) = parse_list(Some(raw), &ana).unwrap_err();
            assert_eq!(c.as_u16(), code, "{raw}");
            assert!(m.contains(needle), "{raw}: {m}");
        }
        assert!(parse_list(Some(&format!("segment={}", "x".repeat(300))), &ana).is_err());
        // Naming themselves is fine; a lead names anyone.
        assert!(parse_list(Some("owner=Ana%40x.io"), &ana).is_ok());
        let lead = Principal {
            email: "lee@x.io".into(),
            role: Role::Lead,
        };
        assert_eq!(
            parse_list(Some("owner=ben%40x.io"), &lead)
                .unwrap()
                .owner
                .as_deref(),
            Some("ben@x.io")
        );
    }
}
