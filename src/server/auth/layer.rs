//! The authentication middleware ([`with_auth`]): resolves the caller, inserts the
//! [`Principal`](crate::inbox::model::Principal) into the request's extensions (handlers
//! take `Extension<Principal>`), or answers 401: JSON under `/api/`, a short page that
//! says how to sign in elsewhere. Every answer of a wrapped router carries the
//! security headers ([`SECURITY_HEADERS`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

use super::{Authenticator, Denied};
use crate::notify::render::escape;

/// Headers on every answer of a wrapped router: no script or style but our own files,
/// no framing (clickjacking), no MIME sniffing, no referrer to other sites (account
/// ids in our URLs stay here), and pages with account data are not cached.
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
];

/// `router` behind authentication: each request gets its `Principal` or a 401. Wrap
/// only the routes that need it (the API, the pages, the silences API) and merge the
/// open ones (`/metrics`, `/healthz`, `/readyz`) beside the result.
pub fn with_auth(router: Router, auth: Arc<Authenticator>) -> Router {
    router
        .layer(middleware::from_fn_with_state(auth, authenticate))
        .layer(middleware::from_fn(security_headers))
}

async fn authenticate(
    State(auth): State<Arc<Authenticator>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match auth.resolve(peer, req.headers()) {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(d) => {
            tracing::debug!(peer = ?peer, reason = d.label(), "request refused: not signed in");
            unauthorized(req.uri().path(), d)
        }
    }
}

fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

/// 401 for `path`.
fn unauthorized(path: &str, d: Denied) -> Response {
    if is_api(path) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": d.message()})),
        )
            .into_response();
    }
    let body = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Sign in - churnwatch</title></head><body><h1>Sign in required</h1>\
         <p>{}.</p><p>The inbox is served behind your organisation's sign-in proxy: open it \
         through the address your team uses, not this server's own port. Scripts and tools \
         use an API token (<code>Authorization: Bearer</code>).</p></body></html>",
        escape::html(d.message())
    );
    (StatusCode::UNAUTHORIZED, Html(body)).into_response()
}

/// 403 for `path` with `why`: JSON under `/api/`, else a short page.
pub fn forbidden(path: &str, why: &str) -> Response {
    if is_api(path) {
        return (StatusCode::FORBIDDEN, Json(json!({"error": why}))).into_response();
    }
    let body = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Not allowed - churnwatch</title></head><body><h1>Not allowed</h1><p>{}</p>\
         </body></html>",
        escape::html(why)
    );
    (StatusCode::FORBIDDEN, Html(body)).into_response()
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (k, v) in SECURITY_HEADERS {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthConfig;
    use crate::inbox::model::Principal;
    use axum::routing::get;
    use axum::Extension;

    async fn whoami(Extension(p): Extension<Principal>) -> String {
        format!("{} {:?}", p.email, p.role)
    }

    /// Over real HTTP: the legacy token works, nothing else does, and 401s come with
    /// the right body for the path and the security headers.
    #[tokio::test]
    async fn unauthenticated_requests_get_401_in_the_paths_language() {
        let auth = Authenticator::new(
            &AuthConfig::default(),
            &[],
            Some(super::super::sha256(b"tok-0123456789abcdef0123456789")),
        )
        .unwrap();
        let app = with_auth(
            Router::new()
                .route("/api/v1/me", get(whoami))
                .route("/inbox", get(whoami)),
            Arc::new(auth),
        );
        let addr = crate::server::serve("127.0.0.1:0", app).await.unwrap();
        let c = reqwest::Client::new();
        let r = c
            .get(format!("http://{addr}/api/v1/me"))
            .bearer_auth("tok-0123456789abcdef0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-frame-options"], "DENY");
        assert!(r.text().await.unwrap().ends_with("Admin"));
        let r = c
            .get(format!("http://{addr}/api/v1/me"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains("sign in"));
        let r = c.get(format!("http://{addr}/inbox")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
        assert!(r.text().await.unwrap().contains("Sign in required"));
    }
}
