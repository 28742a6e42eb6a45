//! API authentication: a bearer token from the environment (`server.api_token_env`),
//! compared in constant time. Every route that reveals or changes account data sits
//! behind [`require_token`]; without a configured token those routes refuse every
//! request (they are off, not open).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Shortest token accepted.
pub const MIN_TOKEN_BYTES: usize = 24;

/// The configured API token, if any.
#[derive(Clone, Default)]
pub struct ApiToken(Option<Arc<[u8]>>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ApiToken(set)"
        } else {
            "ApiToken(none)"
        })
    }
}

impl ApiToken {
    /// The token in environment variable `var` (surrounding whitespace trimmed, as a
    /// secret mounted from a file carries a newline). An unset variable means no
    /// token; one that is set but too short is an error.
    pub fn from_env(var: &str) -> Result<ApiToken, String> {
        match std::env::var(var).map(|v| v.trim().to_string()) {
            Err(_) => Ok(ApiToken(None)),
            Ok(t) if t.is_empty() => Ok(ApiToken(None)),
            Ok(t) if t.len() < MIN_TOKEN_BYTES => Err(format!(
                "the API token in {var} is {} bytes; use at least {MIN_TOKEN_BYTES} random bytes (e.g. `openssl rand -hex 32`)",
                t.len()
            )),
            Ok(t) => Ok(ApiToken(Some(t.into_bytes().into()))),
        }
    }

    /// A fixed token (tests).
    pub fn new(token: &str) -> ApiToken {
        ApiToken(Some(token.as_bytes().into()))
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Whether `given` is the token, compared in time independent of where they differ.
    pub fn accepts(&self, given: &[u8]) -> bool {
        let Some(want) = &self.0 else { return false };
        constant_time_eq(want, given)
    }
}

/// Equality of two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: lets a request through only with `Authorization: Bearer <token>`.
pub async fn require_token(State(token): State<ApiToken>, req: Request, next: Next) -> Response {
    if !token.is_set() {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": "this API is off: set the environment variable named by server.api_token_env to a token"})),
        )
            .into_response();
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if token.accepts(t.as_bytes()) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "send Authorization: Bearer <API token>"})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_short_ones_are_refused() {
        let t = ApiToken::new("0123456789abcdef0123456789abcdef");
        assert!(t.accepts(b"0123456789abcdef0123456789abcdef"));
        assert!(!t.accepts(b"0123456789abcdef0123456789abcdeF"));
        assert!(!t.accepts(b"0123456789abcdef"));
        assert!(!ApiToken::default().accepts(b""));
        std::env::set_var("CW_AUTH_TEST_SHORT", "short\n");
        assert!(ApiToken::from_env("CW_AUTH_TEST_SHORT").is_err());
        std::env::set_var("CW_AUTH_TEST_OK", "0123456789abcdef0123456789abcdef\n");
        assert!(ApiToken::from_env("CW_AUTH_TEST_OK")
            .unwrap()
            .accepts(b"0123456789abcdef0123456789abcdef"));
        assert!(!ApiToken::from_env("CW_AUTH_TEST_UNSET_X").unwrap().is_set());
    }
}
