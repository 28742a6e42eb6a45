//! One-click links in emails: `{inbox}/inbox/actions/email?t=TOKEN`, for Acknowledge
//! and Snooze 7 days. The token is the credential: `v1.` + base64url(claims JSON) +
//! `.` + base64url(HMAC-SHA256 of `churnwatch-email-link:v1.` + the claims part),
//! under a key from the environment (`notify.email_links.secret_env`). The claims
//! name the alert, the action, the owner the mail went to, the expiry and a random
//! nonce.
//!
//! `GET` changes nothing (mail scanners fetch links): it shows what the link does and
//! a button that POSTs the token back (a form post: the token, not a cookie, is the
//! credential, so a cross-site form gains nothing it did not already hold). `POST`
//! checks the signature and the expiry, then applies the action as the owner through
//! [`Applier::apply`] with the nonce as its origin: the nonce lands in the alert's
//! history, in the topic every instance follows, so a link works once. A tampered,
//! expired, reused or unreadable token is refused and records nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::apply::Applier;
use super::metrics::count_source;
use super::record::{account_of, ActionKind, NewAction, Source};
use crate::inbox::model::{Principal, Role};
use crate::notify::render::escape;
use crate::time::{format_rfc3339, Millis, DAY};

/// Longest token read.
pub const MAX_TOKEN: usize = 2048;
/// Shortest key accepted (the output size of SHA-256).
pub const MIN_KEY_BYTES: usize = 32;
/// The reason recorded for a snooze from an email link.
pub const SNOOZE_REASON: &str = "snoozed for 7 days from an email link";
/// How long a snooze from an email lasts (at most `notify.max_silence`).
pub const SNOOZE_FOR: Millis = 7 * DAY;
/// The path of the links, under the inbox.
pub const PATH: &str = "/inbox/actions/email";
const DOMAIN: &[u8] = b"churnwatch-email-link:";

/// What a link does, for whom, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The alert id.
    pub a: String,
    /// `acknowledge` or `snooze`.
    pub k: ActionKind,
    /// The owner the email went to; the action is theirs.
    pub o: String,
    /// Expiry, Unix milliseconds.
    pub e: Millis,
    /// 16 random bytes, hex: the link's identity, used once.
    pub n: String,
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    Malformed,
    BadSignature,
    Expired,
}

impl LinkError {
    fn bucket(self) -> &'static str {
        match self {
            LinkError::Malformed => "malformed",
            LinkError::BadSignature => "bad_token",
            LinkError::Expired => "expired",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            LinkError::Malformed => StatusCode::BAD_REQUEST,
            LinkError::BadSignature => StatusCode::FORBIDDEN,
            LinkError::Expired => StatusCode::GONE,
        }
    }

    fn message(self) -> &'static str {
        match self {
            LinkError::Malformed => "This link is incomplete or damaged.",
            LinkError::BadSignature => "This link was not issued by churnwatch (or was altered).",
            LinkError::Expired => "This link has expired; act from the inbox instead.",
        }
    }
}

/// The links' key.
#[derive(Clone)]
pub struct LinkKey(Arc<[u8]>);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(set)")
    }
}

impl LinkKey {
    pub fn new(key: &[u8]) -> Result<LinkKey, String> {
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the email links' key is {} bytes; use at least {MIN_KEY_BYTES} random bytes \
                 (e.g. `openssl rand -hex 32`)",
                key.len()
            ));
        }
        Ok(LinkKey(key.into()))
    }

    /// The key in environment variable `var` (trimmed); an error when unset or short.
    pub fn from_env(var: &str) -> Result<LinkKey, String> {
        let v = std::env::var(var)
            .map_err(|_| format!("notify.email_links is enabled but {var} (its key) is not set"))?;
        LinkKey::new(v.trim().as_bytes())
    }

    fn mac(&self, claims_part: &str) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        m.update(DOMAIN);
        m.update(b"v1.");
        m.update(claims_part.as_bytes());
        m
    }

    /// The token of `c`.
    pub fn sign(&self, c: &Claims) -> String {
        let part = B64.encode(serde_json::to_vec(c).expect("claims serialize"));
        let tag = B64.encode(self.mac(&part).finalize().into_bytes());
        format!("v1.{part}.{tag}")
    }

    /// The claims of `token` if it is ours, unaltered, and not expired at `now`.
    pub fn verify(&self, token: &str, now: Millis) -> Result<Claims, LinkError> {
        if token.len() > MAX_TOKEN {
            return Err(LinkError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some("v1"), Some(part), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(LinkError::Malformed);
        };
        let tag = B64.decode(tag).map_err(|_| LinkError::Malformed)?;
        self.mac(part)
            .verify_slice(&tag)
            .map_err(|_| LinkError::BadSignature)?;
        let bytes = B64.decode(part).map_err(|_| LinkError::Malformed)?;
        let c: Claims = serde_json::from_slice(&bytes).map_err(|_| LinkError::Malformed)?;
        let well_formed = account_of(&c.a).is_some()
            && matches!(c.k, ActionKind::Acknowledge | ActionKind::Snooze)
            && c.n.len() == 32
            && c.n.bytes().all(|b| b.is_ascii_hexdigit());
        if !well_formed {
            return Err(LinkError::Malformed);
        }
        if now >= c.e {
            return Err(LinkError::Expired);
        }
        Ok(c)
    }
}

/// Makes the links of an email: the key, where the inbox is, and how long a link lasts.
#[derive(Debug, Clone)]
pub struct LinkMaker {
    pub key: LinkKey,
    /// `notify.inbox_url`.
    pub inbox_url: String,
    pub ttl: Millis,
}

impl LinkMaker {
    /// The link for `owner` to take `kind` on `alert_id`, issued at `now`; None when
    /// the inbox URL is not usable.
    pub fn link(
        &self,
        alert_id: &str,
        kind: ActionKind,
        owner: &str,
        now: Millis,
    ) -> Option<String> {
        let base = crate::notify::render::inbox_base(&self.inbox_url)?;
        let nonce: [u8; 16] = rand::random();
        let c = Claims {
            a: alert_id.to_string(),
            k: kind,
            o: owner.to_ascii_lowercase(),
            e: now + self.ttl,
            n: nonce.iter().map(|b| format!("{b:02x}")).collect(),
        };
        Some(format!("{base}{PATH}?t={}", self.key.sign(&c)))
    }
}

/// The links' endpoint state.
pub struct EmailLinks {
    pub applier: Arc<Applier>,
    pub key: LinkKey,
    /// The role of an email (`server.auth.leads` / `admins`).
    pub role_of: Arc<dyn Fn(&str) -> Role + Send + Sync>,
    /// How long a link lasts (`notify.email_links.ttl`): a link was issued, and its
    /// email sent, its expiry minus this (the start of the time to a first action when
    /// no inbox view here knows the alert).
    pub ttl: Millis,
}

fn what(c: &Claims) -> String {
    let verb = match c.k {
        ActionKind::Snooze => "Snooze for 7 days",
        _ => "Acknowledge",
    };
    format!("{verb} the alert {}", c.a)
}

fn page(status: StatusCode, title: &str, body_html: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{t} - churnwatch</title></head><body><h1>{t}</h1>{body_html}</body></html>",
        t = escape::html(title)
    );
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    for (k, v) in crate::server::auth::SECURITY_HEADERS {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn refused(bucket: &'static str, status: StatusCode, msg: &str) -> Response {
    count_source(Source::Email, bucket);
    page(status, "Not done", &format!("<p>{}</p>", escape::html(msg)))
}

#[derive(Deserialize)]
struct TokenQuery {
    t: String,
}

/// `GET`: what the link does, and the button that does it. Changes nothing.
async fn confirm(
    State(s): State<Arc<EmailLinks>>,
    q: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        let e = LinkError::Malformed;
        return page(e.status(), "Not done", &format!("<p>{}</p>", e.message()));
    };
    let c = match s.key.verify(&q.t, s.applier.store.now()) {
        Ok(c) => c,
        Err(e) => return page(e.status(), "Not done", &format!("<p>{}</p>", e.message())),
    };
    if s.applier
        .store
        .get(&c.a)
        .is_some_and(|v| v.has_origin(&origin(&c)))
    {
        return page(
            StatusCode::CONFLICT,
            "Already done",
            "<p>This link was already used; its action is recorded.</p>",
        );
    }
    page(
        StatusCode::OK,
        &what(&c),
        &format!(
            "<p>As {} (the link expires {}).</p>\
             <form method=\"post\" action=\"email\"><input type=\"hidden\" name=\"t\" value=\"{}\">\
             <button type=\"submit\">{}</button></form>",
            escape::html(&c.o),
            escape::html(&format_rfc3339(c.e)),
            escape::html(&q.t),
            escape::html(&what(&c)),
        ),
    )
}

fn origin(c: &Claims) -> String {
    format!("email:{}", c.n)
}

/// `POST` (form `t=TOKEN`): checks the token and applies its action as the owner.
async fn act(State(s): State<Arc<EmailLinks>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let token = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "t")
        .map(|(_, v)| v.into_owned());
    let (true, Some(token)) = (form, token) else {
        return refused(
            "malformed",
            StatusCode::BAD_REQUEST,
            LinkError::Malformed.message(),
        );
    };
    let now = s.applier.store.now();
    let c = match s.key.verify(&token, now) {
        Ok(c) => c,
        Err(e) => return refused(e.bucket(), e.status(), e.message()),
    };
    let who = Principal {
        role: (s.role_of)(&c.o),
        email: c.o.clone(),
    };
    let req = NewAction {
        alert_id: c.a.clone(),
        action: c.k.as_str().to_string(),
        reason: if c.k == ActionKind::Snooze {
            SNOOZE_REASON.into()
        } else {
            String::new()
        },
        until: (c.k == ActionKind::Snooze)
            .then(|| format_rfc3339(now + SNOOZE_FOR.min(s.applier.horizon))),
    };
    match s
        .applier
        .apply(&who, &req, Source::Email, &origin(&c), Some(c.e - s.ttl))
        .await
    {
        Ok(a) => page(
            StatusCode::OK,
            "Done",
            &format!(
                "<p>{} ({}{}).</p>",
                escape::html(&what(&c)),
                escape::html(&a.record.by),
                a.record
                    .until_ms
                    .map(|u| format!(", until {}", escape::html(&format_rfc3339(u))))
                    .unwrap_or_default()
            ),
        ),
        Err(r) => page(
            r.status,
            "Not done",
            &format!("<p>{}</p>", escape::html(&r.message)),
        ),
    }
}

/// `GET`/`POST` [`PATH`].
pub fn router(state: Arc<EmailLinks>) -> Router {
    Router::new()
        .route(PATH, get(confirm).post(act))
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_TOKEN + 64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_780_000_000_000;

    fn key() -> LinkKey {
        LinkKey::new(b"0123456789abcdef0123456789abcdef-test").unwrap()
    }

    fn claims() -> Claims {
        Claims {
            a: "acme/inactive/2026-03-01".into(),
            k: ActionKind::Snooze,
            o: "ana@example.com".into(),
            e: NOW + DAY,
            n: "00112233445566778899aabbccddeeff".into(),
        }
    }

    #[test]
    fn tokens_round_trip_and_expire() {
        let t = key().sign(&claims());
        assert!(t.starts_with("v1.") && t.len() < 400, "{t}");
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "URL-safe"
        );
        assert_eq!(key().verify(&t, NOW), Ok(claims()));
        assert_eq!(key().verify(&t, NOW + DAY - 1), Ok(claims()));
        assert_eq!(key().verify(&t, NOW + DAY), Err(LinkError::Expired));
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let t = key().sign(&claims());
        let other = LinkKey::new(b"another key, 32 bytes or more......").unwrap();
        assert_eq!(other.verify(&t, NOW), Err(LinkError::BadSignature));
        // Claims changed (a later expiry, another owner) under the old tag.
        let (_, tag) = t.rsplit_once('.').unwrap();
        for changed in [
            Claims {
                e: NOW + 100 * DAY,
                ..claims()
            },
            Claims {
                o: "eve@example.com".into(),
                ..claims()
            },
            Claims {
                k: ActionKind::Acknowledge,
                ..claims()
            },
        ] {
            let part = B64.encode(serde_json::to_vec(&changed).unwrap());
            assert_eq!(
                key().verify(&format!("v1.{part}.{tag}"), NOW),
                Err(LinkError::BadSignature)
            );
        }
        // Every single-character change of the token is refused.
        let bytes = t.as_bytes();
        for i in 0..bytes.len() {
            let mut b = bytes.to_vec();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let s = String::from_utf8(b).unwrap();
            if s != t {
                assert!(key().verify(&s, NOW).is_err(), "position {i}");
            }
        }
        for bad in [
            "",
            "v1",
            "v1..",
            "v2.a.b",
            &format!("{t}.x"),
            &"a".repeat(MAX_TOKEN + 1),
        ] {
            assert!(key().verify(bad, NOW).is_err(), "{bad}");
        }
        // Signed but not a link we would issue: not_a_risk, a bad alert id.
        for odd in [
            Claims {
                k: ActionKind::NotARisk,
                ..claims()
            },
            Claims {
                a: "nope".into(),
                ..claims()
            },
        ] {
            assert_eq!(
                key().verify(&key().sign(&odd), NOW),
                Err(LinkError::Malformed)
            );
        }
    }

    #[test]
    fn links_point_under_the_inbox_and_short_keys_are_refused() {
        assert!(LinkKey::new(b"short").is_err());
        let m = LinkMaker {
            key: key(),
            inbox_url: "https://cw.example/inbox/".into(),
            ttl: 7 * DAY,
        };
        let l = m
            .link(
                "acme/inactive/1",
                ActionKind::Acknowledge,
                "Ana@Example.com",
                NOW,
            )
            .unwrap();
        let t = l
            .strip_prefix("https://cw.example/inbox/actions/email?t=")
            .unwrap();
        let c = key().verify(t, NOW).unwrap();
        assert_eq!((c.o.as_str(), c.e), ("ana@example.com", NOW + 7 * DAY));
        let again = m
            .link(
                "acme/inactive/1",
                ActionKind::Acknowledge,
                "ana@example.com",
                NOW,
            )
            .unwrap();
        assert_ne!(l, again, "each link has its own nonce");
        assert!(LinkMaker {
            inbox_url: String::new(),
            ..m
        }
        .link("acme/inactive/1", ActionKind::Acknowledge, "a@b.c", NOW)
        .is_none());
    }
}
