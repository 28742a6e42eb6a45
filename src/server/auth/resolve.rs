//! The [`Authenticator`]: turns a request's credentials and the TCP peer address into a
//! [`Principal`], or says why it cannot.
//!
//! - `Authorization: Bearer <token>`: the token's SHA-256 is compared, in constant
//!   time, with every configured hash (`[[server.auth.tokens]]`, `tokens_file`,
//!   `tokens_env`, and the legacy `server.api_token_env` token, an admin). A request
//!   that sends a token is judged by the token alone.
//! - Otherwise the proxy header (`server.auth.proxy_header`), believed only when the
//!   connection's peer is in `server.auth.trusted_proxies`; the role comes from
//!   `server.auth.leads` / `admins`, else CSM.

use std::collections::HashSet;
use std::net::IpAddr;

use axum::http::{header, HeaderMap, HeaderName};

use super::{constant_time_eq, sha256, ApiToken};
use crate::config::{normalize_email, AuthConfig, IpNet, ServerConfig, TokenEntry, TokenFile};
use crate::inbox::model::{Principal, Role};

/// The email the legacy `server.api_token_env` token acts as (an admin).
pub const LEGACY_TOKEN_EMAIL: &str = "api-token@churnwatch.invalid";
/// Longest bearer token read (anything longer is refused unhashed).
pub const MAX_TOKEN_BYTES: usize = 1024;

/// Why a request has no principal. Each is a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Neither a token nor a believed proxy header.
    NoCredentials,
    /// A token that matches no configured hash (or is malformed).
    BadToken,
    /// The proxy header from a peer that is not a trusted proxy.
    UntrustedProxy,
    /// The proxy header from a trusted proxy, but not an email.
    BadProxyHeader,
}

impl Denied {
    /// What the caller is told.
    pub fn message(self) -> &'static str {
        match self {
            Denied::NoCredentials => {
                "sign in: send Authorization: Bearer <API token>, or come through the sign-in proxy"
            }
            Denied::BadToken => "the API token is not valid",
            Denied::UntrustedProxy => {
                "the sign-in header is only accepted from the configured proxies \
                 (server.auth.trusted_proxies)"
            }
            Denied::BadProxyHeader => {
                "the sign-in proxy's header is not one email (or comes more than once)"
            }
        }
    }

    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Denied::NoCredentials => "no_credentials",
            Denied::BadToken => "bad_token",
            Denied::UntrustedProxy => "untrusted_proxy",
            Denied::BadProxyHeader => "bad_proxy_header",
        }
    }
}

/// Everything needed to authenticate a request; built once at start.
pub struct Authenticator {
    /// SHA-256 of each token and whom it stands for.
    tokens: Vec<([u8; 32], Principal)>,
    proxy_header: HeaderName,
    proxies: Vec<IpNet>,
    leads: HashSet<String>,
    admins: HashSet<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens", &self.tokens.len())
            .field("proxy_header", &self.proxy_header)
            .field("proxies", &self.proxies)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// From the `[server]` section: the inline tokens, `tokens_file`, `tokens_env`, and
    /// the legacy token of `api_token_env` (read from the process environment).
    pub fn from_config(server: &ServerConfig) -> Result<Authenticator, String> {
        let a = &server.auth;
        let mut entries: Vec<TokenEntry> = a.tokens.clone();
        if !a.tokens_file.is_empty() {
            let text = std::fs::read_to_string(&a.tokens_file).map_err(|e| {
                format!(
                    "server.auth.tokens_file: cannot read {}: {e}",
                    a.tokens_file
                )
            })?;
            entries.extend(
                parse_token_file(&text)
                    .map_err(|e| format!("server.auth.tokens_file {}: {e}", a.tokens_file))?,
            );
        }
        if !a.tokens_env.is_empty() {
            if let Ok(text) = std::env::var(&a.tokens_env) {
                entries.extend(
                    parse_token_file(&text)
                        .map_err(|e| format!("server.auth.tokens_env {}: {e}", a.tokens_env))?,
                );
            }
        }
        let legacy = ApiToken::from_env(&server.api_token_env)
            .map_err(|e| format!("server.api_token_env: {e}"))?;
        Authenticator::new(a, &entries, legacy.sha256())
    }

    /// From an auth section, token entries, and the legacy token's hash (tests).
    pub fn new(
        a: &AuthConfig,
        entries: &[TokenEntry],
        legacy: Option<[u8; 32]>,
    ) -> Result<Authenticator, String> {
        let mut tokens = Vec::with_capacity(entries.len() + 1);
        for (i, t) in entries.iter().enumerate() {
            let (h, email) = t.checked().map_err(|e| format!("token {}: {e}", i + 1))?;
            if tokens.iter().any(|(o, _)| *o == h) {
                return Err(format!(
                    "token {}: the same hash is configured twice",
                    i + 1
                ));
            }
            tokens.push((
                h,
                Principal {
                    email,
                    role: t.role,
                },
            ));
        }
        if let Some(h) = legacy {
            tokens.push((
                h,
                Principal {
                    email: LEGACY_TOKEN_EMAIL.into(),
                    role: Role::Admin,
                },
            ));
        }
        let emails = |l: &[String]| -> Result<HashSet<String>, String> {
            l.iter().map(|e| normalize_email(e)).collect()
        };
        Ok(Authenticator {
            tokens,
            proxy_header: HeaderName::from_bytes(a.proxy_header.as_bytes())
                .map_err(|_| format!("server.auth.proxy_header {:?}", a.proxy_header))?,
            proxies: a.proxies()?,
            leads: emails(&a.leads)?,
            admins: emails(&a.admins)?,
        })
    }

    /// Whether anyone at all can sign in (a token, or a trusted proxy).
    pub fn can_sign_in(&self) -> bool {
        !self.tokens.is_empty() || !self.proxies.is_empty()
    }

    /// The role of a proxy-authenticated user.
    pub fn role_of(&self, email: &str) -> Role {
        if self.admins.contains(email) {
            Role::Admin
        } else if self.leads.contains(email) {
            Role::Lead
        } else {
            Role::Csm
        }
    }

    /// The principal of a request from `peer` (the TCP peer; None when the server did
    /// not record it, in which case the proxy header is never believed).
    pub fn resolve(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Result<Principal, Denied> {
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            return self.by_token(auth.as_bytes());
        }
        let Some(v) = headers.get(&self.proxy_header) else {
            return Err(Denied::NoCredentials);
        };
        let trusted = peer.is_some_and(|ip| self.proxies.iter().any(|n| n.contains(ip)));
        if !trusted {
            return Err(Denied::UntrustedProxy);
        }
        // Two copies: a client's own and the proxy's, appended. Which one is the
        // proxy's cannot be told, so neither is believed.
        if headers.get_all(&self.proxy_header).iter().nth(1).is_some() {
            return Err(Denied::BadProxyHeader);
        }
        let email = v
            .to_str()
            .ok()
            .and_then(|s| normalize_email(s).ok())
            .ok_or(Denied::BadProxyHeader)?;
        let role = self.role_of(&email);
        Ok(Principal { email, role })
    }

    /// `Authorization` header value `Bearer <token>`.
    fn by_token(&self, value: &[u8]) -> Result<Principal, Denied> {
        if value.len() > MAX_TOKEN_BYTES + 7 || value.len() < 7 {
            return Err(Denied::BadToken);
        }
        let (scheme, token) = value.split_at(7);
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return Err(Denied::BadToken);
        }
        let token = token.trim_ascii();
        if token.is_empty() {
            return Err(Denied::BadToken);
        }
        let given = sha256(token);
        // Every hash is compared, so the time does not say which entry matched.
        let mut found: Option<&Principal> = None;
        for (h, p) in &self.tokens {
            if constant_time_eq(h, &given) {
                found = Some(p);
            }
        }
        found.cloned().ok_or(Denied::BadToken)
    }
}

/// The `[[tokens]]` of a token file.
fn parse_token_file(text: &str) -> Result<Vec<TokenEntry>, String> {
    let f: TokenFile = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
    for (i, t) in f.tokens.iter().enumerate() {
        t.checked().map_err(|e| format!("token {}: {e}", i + 1))?;
    }
    Ok(f.tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const ANA_TOKEN: &str = "ana-token-0123456789abcdef0123456789";

    fn hex(b: [u8; 32]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn auth() -> Authenticator {
        let a = AuthConfig {
            trusted_proxies: vec!["10.0.0.0/24".into()],
            leads: vec!["Lee@X.io".into()],
            admins: vec!["root@x.io".into()],
            ..AuthConfig::default()
        };
        let t = TokenEntry {
            sha256: hex(sha256(ANA_TOKEN.as_bytes())),
            email: "ana@x.io".into(),
            role: Role::Csm,
        };
        Authenticator::new(&a, &[t], Some(sha256(b"legacy-token-0123456789abcdef"))).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn tokens_resolve_by_their_hash() {
        let a = auth();
        let p = a
            .resolve(
                None,
                &headers(&[("authorization", &format!("Bearer {ANA_TOKEN}"))]),
            )
            .unwrap();
        assert_eq!((p.email.as_str(), p.role), ("ana@x.io", Role::Csm));
        let p = a
            .resolve(
                None,
                &headers(&[("authorization", "bearer legacy-token-0123456789abcdef")]),
            )
            .unwrap();
        assert_eq!(
            (p.email.as_str(), p.role),
            (LEGACY_TOKEN_EMAIL, Role::Admin)
        );
        for bad in [
            "Bearer nope",
            "Basic YW5hOng=",
            "Bearer ",
            "Bearer",
            &format!("Bearer {ANA_TOKEN}x"),
        ] {
            assert_eq!(
                a.resolve(None, &headers(&[("authorization", bad)])),
                Err(Denied::BadToken),
                "{bad}"
            );
        }
        // A wrong token is refused even with a believable proxy header beside it.
        let peer = Some("10.0.0.5".parse().unwrap());
        assert_eq!(
            a.resolve(
                peer,
                &headers(&[
                    ("authorization", "Bearer nope"),
                    ("x-forwarded-email", "ana@x.io")
                ])
            ),
            Err(Denied::BadToken)
        );
    }

    #[test]
    fn the_proxy_header_counts_only_from_a_trusted_peer() {
        let a = auth();
        let h = headers(&[("X-Forwarded-Email", "Lee@X.io")]);
        let p = a.resolve(Some("10.0.0.5".parse().unwrap()), &h).unwrap();
        assert_eq!((p.email.as_str(), p.role), ("lee@x.io", Role::Lead));
        assert_eq!(
            a.resolve(Some("10.0.1.5".parse().unwrap()), &h),
            Err(Denied::UntrustedProxy)
        );
        assert_eq!(a.resolve(None, &h), Err(Denied::UntrustedProxy));
        let csm = headers(&[("x-forwarded-email", "ben@x.io")]);
        let p = a.resolve(Some("10.0.0.1".parse().unwrap()), &csm).unwrap();
        assert_eq!(p.role, Role::Csm);
        let root = headers(&[("x-forwarded-email", "root@x.io")]);
        assert_eq!(
            a.resolve(Some("10.0.0.1".parse().unwrap()), &root)
                .unwrap()
                .role,
            Role::Admin
        );
        let mut twice = headers(&[("x-forwarded-email", "ben@x.io")]);
        twice.append("x-forwarded-email", HeaderValue::from_static("root@x.io"));
        assert_eq!(
            a.resolve(Some("10.0.0.1".parse().unwrap()), &twice),
            Err(Denied::BadProxyHeader)
        );
        let junk = headers(&[("x-forwarded-email", "not an email")]);
        assert_eq!(
            a.resolve(Some("10.0.0.1".parse().unwrap()), &junk),
            Err(Denied::BadProxyHeader)
        );
        assert_eq!(
            a.resolve(Some("10.0.0.1".parse().unwrap()), &HeaderMap::new()),
            Err(Denied::NoCredentials)
        );
    }

    #[test]
    fn token_files_are_checked() {
        let ok = format!(
            "[[tokens]]\nsha256 = \"{}\"\nemail = \"bot@x.io\"\nrole = \"lead\"\n",
            "ab".repeat(32)
        );
        assert_eq!(parse_token_file(&ok).unwrap().len(), 1);
        let short = "[[tokens]]\nsha256 = \"abcd\"\nemail = \"bot@x.io\"\nrole = \"lead\"\n";
        assert!(parse_token_file(short)
            .unwrap_err()
            .contains("64 hex digits"));
        let role = ok.replace("lead", "boss");
        assert!(parse_token_file(&role).unwrap_err().contains("boss"));
        let twice = AuthConfig::default();
        let e = TokenEntry {
            sha256: "ab".repeat(32),
            email: "a@x.io".into(),
            role: Role::Csm,
        };
        assert!(Authenticator::new(&twice, &[e.clone(), e], None)
            .unwrap_err()
            .contains("twice"));
    }
}
