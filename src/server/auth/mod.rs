//! Who is calling: every route that reveals or changes account data (the JSON API, the
//! inbox pages, the silences API) sits behind [`with_auth`], which resolves the caller
//! to a [`Principal`](crate::inbox::model::Principal) from an API token or from an
//! authenticating proxy's header, and refuses the request otherwise. `/metrics`,
//! `/healthz` and `/readyz` are not wrapped. docs/security.md explains the model.
//!
//! - [`resolve`]: the [`Authenticator`] (hashed tokens, trusted proxies, roles).
//! - [`layer`]: the middleware, the 401/403 answers and the security headers.
//! - this file: the legacy single token of `server.api_token_env` and the
//!   constant-time comparison.

mod layer;
mod resolve;

pub use layer::{forbidden, with_auth, SECURITY_HEADERS};
pub use resolve::{Authenticator, Denied, LEGACY_TOKEN_EMAIL, MAX_TOKEN_BYTES};

use std::sync::Arc;

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

    /// The SHA-256 of the token: all the [`Authenticator`] keeps of it.
    pub fn sha256(&self) -> Option<[u8; 32]> {
        self.0.as_deref().map(sha256)
    }

    /// Whether `given` is the token, compared in time independent of where they differ.
    pub fn accepts(&self, given: &[u8]) -> bool {
        let Some(want) = &self.0 else { return false };
        constant_time_eq(want, given)
    }
}

/// SHA-256 of `b`.
pub fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

/// Equality of two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
