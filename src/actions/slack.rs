//! Slack's interactive buttons: `POST /api/v1/slack/interactions`, Slack's Request URL
//! for the app whose messages carry the Acknowledge / Snooze 7 days / Not a risk
//! buttons (`notify::render::slack`). Not behind the inbox's sign-in: Slack signs each
//! request instead, and nothing is looked at before the signature is checked.
//!
//! In order, each refusal answered at once with a JSON error and nothing recorded:
//! the body is at most [`MAX_BODY_BYTES`]; `X-Slack-Signature` is `v0=` and the hex
//! HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{body}` under the signing secret
//! (compared in constant time by `Mac::verify_slice`), the timestamp within
//! [`WINDOW_SECS`] of now (401); a signature seen in that window is a replay (401);
//! the `payload` form field is one `block_actions` click on one of our buttons, its
//! value an alert id, its `response_url` Slack's own (400); the Slack user is known
//! (the account's `owner_chat`, or `[notify.slack.users]`) and may act on the account
//! (403). Then the action goes through [`Applier::apply`] with the click's user and
//! `action_ts` as its origin, so the same click replayed at another instance (after the window
//! here is gone) is refused by the history it left in the topic. The answer comes
//! within Slack's 3 seconds; the updated message is POSTed to `response_url` after
//! (or, when a known click was refused, a note to the person who clicked saying why).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use super::apply::{Applied, Applier, Refused};
use super::metrics::count_source;
use super::record::{account_of, ActionKind, NewAction, Source};
use crate::inbox::model::{Principal, Role};
use crate::time::{format_rfc3339, Millis, DAY};

/// Largest request body: a click carries the whole message it was on (up to 50 blocks
/// of 3,000 characters, form-encoded).
pub const MAX_BODY_BYTES: usize = 512 * 1024;
/// How far a request's timestamp may be from now, and how long its signature is
/// remembered against replays (Slack's advice: five minutes).
pub const WINDOW_SECS: i64 = 300;
/// Signatures remembered at most (a request beyond that within the window is refused,
/// never a remembered one forgotten early).
pub const MAX_REMEMBERED: usize = 20_000;
/// The `action_id` of each button, and what it does.
pub const BUTTONS: [(&str, ActionKind, &str); 3] = [
    (
        "churnwatch_acknowledge",
        ActionKind::Acknowledge,
        "Acknowledge",
    ),
    ("churnwatch_snooze_7d", ActionKind::Snooze, "Snooze 7 days"),
    ("churnwatch_not_a_risk", ActionKind::NotARisk, "Not a risk"),
];
/// The reason recorded for a snooze from Slack (a button carries none).
pub const SNOOZE_REASON: &str = "snoozed for 7 days from Slack";
/// The reason recorded for "not a risk" from Slack; the account page and the API
/// show it, and a CSM who wants to say more does it from the inbox.
pub const NOT_A_RISK_REASON: &str = "marked not a risk from Slack";
/// How long a snooze or a "not a risk" from Slack lasts (at most `notify.max_silence`).
pub const QUIET_FOR: Millis = 7 * DAY;
/// How long the handler waits for the action to be stored before answering Slack
/// (which gives up after 3 s); the action and the message update go on after.
const ANSWER_WITHIN: Duration = Duration::from_millis(2500);
/// The answer to a signed click that was refused and whose clicker is told why through
/// `response_url`: 200, as Slack asks of every request it sent (the body says
/// `"ok": false`). Unsigned, stale, replayed and malformed requests get a 4xx.
const TOLD: StatusCode = StatusCode::OK;

/// Why a request's signature is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigError {
    /// No signature or timestamp header, or not in the `v0=<hex>` shape.
    Missing,
    /// The timestamp is more than [`WINDOW_SECS`] from now.
    Stale,
    /// The signature does not match.
    Bad,
}

impl SigError {
    fn bucket(self) -> &'static str {
        match self {
            SigError::Missing | SigError::Bad => "bad_signature",
            SigError::Stale => "stale",
        }
    }

    fn message(self) -> &'static str {
        match self {
            SigError::Missing => {
                "unsigned: X-Slack-Signature and X-Slack-Request-Timestamp are required"
            }
            SigError::Stale => "the request's timestamp is more than 5 minutes from now",
            SigError::Bad => "the request's signature is not valid",
        }
    }
}

fn mac(secret: &[u8], ts: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(b"v0:");
    m.update(ts.as_bytes());
    m.update(b":");
    m.update(body);
    m
}

/// The `X-Slack-Signature` of `body` sent at `ts` (seconds): `v0=` and lower-case hex.
pub fn sign(secret: &[u8], ts: &str, body: &[u8]) -> String {
    let out = mac(secret, ts, body).finalize().into_bytes();
    let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Checks a request's signature headers against `body` at `now_secs`; returns the
/// timestamp.
pub fn verify(
    secret: &[u8],
    ts: Option<&str>,
    sig: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<i64, SigError> {
    let (Some(ts), Some(sig)) = (ts, sig) else {
        return Err(SigError::Missing);
    };
    let t: i64 = ts
        .parse()
        .ok()
        .filter(|_| ts.len() <= 12 && ts.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(SigError::Missing)?;
    if (now_secs - t).abs() > WINDOW_SECS {
        return Err(SigError::Stale);
    }
    let given = sig
        .strip_prefix("v0=")
        .and_then(unhex)
        .ok_or(SigError::Missing)?;
    mac(secret, ts, body)
        .verify_slice(&given)
        .map_err(|_| SigError::Bad)?;
    Ok(t)
}

/// The signatures seen in the last [`WINDOW_SECS`], at most [`MAX_REMEMBERED`].
#[derive(Default)]
pub struct Seen {
    by_sig: Mutex<HashMap<String, i64>>,
}

impl Seen {
    /// Remembers `sig` (sent at `ts`); false when it was already seen (a replay), or
    /// when the window is full (then nothing is forgotten to make room).
    pub fn first_time(&self, sig: &str, ts: i64, now_secs: i64) -> Result<(), &'static str> {
        let mut m = self.by_sig.lock().unwrap_or_else(|p| p.into_inner());
        if m.contains_key(sig) {
            return Err("replayed");
        }
        if m.len() >= MAX_REMEMBERED {
            m.retain(|_, t| *t >= now_secs - WINDOW_SECS);
            if m.len() >= MAX_REMEMBERED {
                return Err("full");
            }
        }
        m.insert(sig.to_string(), ts);
        Ok(())
    }
}

/// Whether the server may POST to `raw`: Slack's own `https://hooks.slack.com/...`
/// (no other host, port or credentials: the URL comes from the request, and an
/// attacker-chosen one must not make this server call anything else), or, when
/// `loopback` (tests), plain HTTP to a loopback address.
pub fn response_url_ok(raw: &str, loopback: bool) -> bool {
    use url::Host;
    let Ok(u) = url::Url::parse(raw) else {
        return false;
    };
    if !u.username().is_empty() || u.password().is_some() || raw.len() > 2000 {
        return false;
    }
    match (u.scheme(), u.host()) {
        ("https", Some(Host::Domain("hooks.slack.com"))) => u.port().is_none(),
        ("http", Some(Host::Ipv4(ip))) => loopback && ip.is_loopback(),
        ("http", Some(Host::Ipv6(ip))) => loopback && ip.is_loopback(),
        _ => false,
    }
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    user: SlackUser,
    #[serde(default)]
    actions: Vec<SlackAction>,
    #[serde(default)]
    response_url: String,
    #[serde(default)]
    message: Option<Value>,
}

#[derive(Deserialize)]
struct SlackUser {
    id: String,
}

#[derive(Deserialize)]
struct SlackAction {
    action_id: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    block_id: String,
    action_ts: String,
}

/// A click, checked: who, which button, on which alert, and where to answer.
struct Click {
    user: String,
    kind: ActionKind,
    alert_id: String,
    action_ts: String,
    block_id: String,
    response_url: String,
    message: Option<Value>,
}

/// When a Slack message was posted: its `ts` (`"1700000000.000100"`, Unix seconds),
/// in milliseconds; None when absent or not of that shape.
fn posted_at(message: &Value) -> Option<Millis> {
    let ts = message.get("ts")?.as_str()?;
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, ""));
    if secs.is_empty() || secs.len() > 12 || frac.len() > 9 {
        return None;
    }
    if !(secs.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    Some(secs.parse::<i64>().ok()? * 1000 + ms)
}

fn is_member_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// The click in a form body `payload=<JSON>`, or what is wrong with it.
fn parse_click(body: &[u8], loopback: bool) -> Result<Click, (&'static str, String)> {
    let malformed = |m: &str| ("malformed", m.to_string());
    let payload = url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| malformed("no payload field in the form body"))?;
    let p: Payload = serde_json::from_str(&payload)
        .map_err(|_| malformed("the payload is not a Slack interaction"))?;
    if p.kind != "block_actions" {
        return Err(malformed("only block_actions (button clicks) are handled"));
    }
    let [a] = <[SlackAction; 1]>::try_from(p.actions)
        .map_err(|_| malformed("expected exactly one action"))?;
    let Some(&(_, kind, _)) = BUTTONS.iter().find(|(id, _, _)| *id == a.action_id) else {
        return Err(malformed("not one of churnwatch's buttons"));
    };
    if account_of(&a.value).is_none() {
        return Err(malformed("the button's value is not an alert id"));
    }
    let ts_ok = !a.action_ts.is_empty()
        && a.action_ts.len() <= 32
        && a.action_ts.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !ts_ok || !is_member_id(&p.user.id) || a.block_id.len() > 255 {
        return Err(malformed(
            "the action's timestamp, user or block id is malformed",
        ));
    }
    if !response_url_ok(&p.response_url, loopback) {
        return Err((
            "bad_response_url",
            "the response_url is not Slack's (https://hooks.slack.com/...)".into(),
        ));
    }
    Ok(Click {
        user: p.user.id,
        kind,
        alert_id: a.value,
        action_ts: a.action_ts,
        block_id: a.block_id,
        response_url: p.response_url,
        message: p.message,
    })
}

/// The endpoint's state.
pub struct SlackInteractions {
    pub applier: Arc<Applier>,
    /// The app's signing secret (from the environment; never logged).
    pub secret: Vec<u8>,
    /// `[notify.slack.users]`: member id -> email.
    pub users: BTreeMap<String, String>,
    /// The role of an email (`server.auth.leads` / `admins`).
    pub role_of: Arc<dyn Fn(&str) -> Role + Send + Sync>,
    pub seen: Seen,
    /// For `response_url` (no redirects followed).
    pub http: reqwest::Client,
    /// `notify.slack.allow_loopback_response_url`.
    pub loopback: bool,
}

impl SlackInteractions {
    /// The person behind Slack member `user` acting on `account_id`: the email of
    /// `[notify.slack.users]`, else the account's owner when `user` is its
    /// `owner_chat`.
    fn person(&self, user: &str, account_id: &str) -> Option<Principal> {
        let email = match self.users.get(user) {
            Some(e) => crate::config::normalize_email(e).ok()?,
            None if self.applier.owner_chat(account_id).as_deref() == Some(user) => {
                self.applier.owner(account_id)?.to_ascii_lowercase()
            }
            None => return None,
        };
        Some(Principal {
            role: (self.role_of)(&email),
            email,
        })
    }
}

fn refuse(source_bucket: &'static str, status: StatusCode, msg: &str) -> Response {
    count_source(Source::Slack, source_bucket);
    (status, Json(json!({"ok": false, "error": msg}))).into_response()
}

/// The request an action of `kind` from Slack makes at `now`.
fn request(kind: ActionKind, alert_id: &str, now: Millis, horizon: Millis) -> NewAction {
    let until = (kind.needs_until()).then(|| format_rfc3339(now + QUIET_FOR.min(horizon)));
    let reason = match kind {
        ActionKind::Snooze => SNOOZE_REASON,
        ActionKind::NotARisk => NOT_A_RISK_REASON,
        _ => "",
    };
    NewAction {
        alert_id: alert_id.to_string(),
        action: kind.as_str().to_string(),
        reason: reason.to_string(),
        until,
    }
}

/// What the message says in place of the buttons once someone acted.
fn done_line(a: &Applied, user: &str) -> String {
    let until = a
        .record
        .until_ms
        .map(|u| format_rfc3339(u)[..10].to_string())
        .unwrap_or_default();
    match a.record.action {
        ActionKind::Acknowledge => format!(":eyes: Acknowledged by <@{user}>"),
        ActionKind::Snooze => format!(":zzz: Snoozed until {until} by <@{user}>"),
        ActionKind::NotARisk => {
            format!(":white_check_mark: Not a risk (quiet until {until}), said <@{user}>")
        }
        ActionKind::Reopen => format!("Reopened by <@{user}>"),
    }
}

/// The message to POST to `response_url`: the original with the clicked row of
/// buttons replaced by who did what, or, when the original is not at hand, a note
/// to the person who clicked.
pub fn updated_message(message: Option<&Value>, block_id: &str, line: &str) -> Value {
    let done = json!({"type": "context", "elements": [{"type": "mrkdwn", "text": line}]});
    if let Some(blocks) = message
        .and_then(|m| m.get("blocks"))
        .and_then(Value::as_array)
        .filter(|b| b.len() <= crate::notify::render::limits::SLACK_MAX_BLOCKS)
    {
        if let Some(i) = blocks.iter().position(|b| b["block_id"] == block_id) {
            let mut blocks = blocks.clone();
            blocks[i] = done;
            let text = message
                .and_then(|m| m.get("text"))
                .cloned()
                .unwrap_or(json!(""));
            return json!({"replace_original": true, "text": text, "blocks": blocks});
        }
    }
    aside(line)
}

/// A note to the person who clicked only, leaving the message as it is.
fn aside(text: &str) -> Value {
    json!({"replace_original": false, "response_type": "ephemeral", "text": text})
}

/// Tells the person who clicked why nothing happened (in the background: the refusal
/// is answered at once).
fn tell(s: &Arc<SlackInteractions>, url: &str, why: &str) {
    let (http, url, body) = (
        s.http.clone(),
        url.to_string(),
        aside(&format!("churnwatch did not record that: {why}")),
    );
    tokio::spawn(async move { post_update(&http, &url, &body).await });
}

async fn post_update(http: &reqwest::Client, url: &str, body: &Value) {
    match http.post(url).json(body).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(
            status = r.status().as_u16(),
            "Slack refused the message update"
        ),
        Err(e) => tracing::warn!(error = %e.without_url(), "could not update the Slack message"),
    }
}

async fn interactions(
    State(s): State<Arc<SlackInteractions>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let sig = header("x-slack-signature");
    let now_secs = s.applier.store.now().div_euclid(1000);
    let ts = match verify(
        &s.secret,
        header("x-slack-request-timestamp"),
        sig,
        &body,
        now_secs,
    ) {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(reason = e.bucket(), "Slack request refused");
            return refuse(e.bucket(), StatusCode::UNAUTHORIZED, e.message());
        }
    };
    // Hex is case-insensitive: the same signature in upper case is the same request.
    let sig_key = sig.unwrap_or_default().to_ascii_lowercase();
    if let Err(why) = s.seen.first_time(&sig_key, ts, now_secs) {
        return if why == "full" {
            refuse(
                "busy",
                StatusCode::SERVICE_UNAVAILABLE,
                "too many Slack requests; try again",
            )
        } else {
            refuse(
                "replayed",
                StatusCode::UNAUTHORIZED,
                "this request was already received (a replay)",
            )
        };
    }
    let click = match parse_click(&body, s.loopback) {
        Ok(c) => c,
        Err((bucket, msg)) => return refuse(bucket, StatusCode::BAD_REQUEST, &msg),
    };
    let account = account_of(&click.alert_id).expect("checked").to_string();
    let Some(who) = s.person(&click.user, &account) else {
        let msg = "this Slack user is not known to churnwatch (not the account's owner_chat, \
                   not in notify.slack.users)";
        tell(&s, &click.response_url, msg);
        return refuse("unknown_user", TOLD, msg);
    };
    let req = request(
        click.kind,
        &click.alert_id,
        s.applier.store.now(),
        s.applier.horizon,
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    let s2 = s.clone();
    tokio::spawn(async move {
        let origin = format!("slack:{}:{}", click.user, click.action_ts);
        let shown = click.message.as_ref().and_then(posted_at);
        let r = s2
            .applier
            .apply(&who, &req, Source::Slack, &origin, shown)
            .await;
        let update = match &r {
            Ok(a) => updated_message(
                click.message.as_ref(),
                &click.block_id,
                &done_line(a, &click.user),
            ),
            Err(e) => aside(&format!("churnwatch did not record that: {}", e.message)),
        };
        let _ = tx.send(r);
        post_update(&s2.http, &click.response_url, &update).await;
    });
    match tokio::time::timeout(ANSWER_WITHIN, rx).await {
        Ok(Ok(Ok(a))) => (
            StatusCode::OK,
            Json(json!({"ok": true, "action": a.record.action.as_str()})),
        )
            .into_response(),
        // Told aside through response_url: Slack gets 200 (any other answer makes
        // Slack show the clicker an error of its own next to the note).
        Ok(Ok(Err(Refused {
            status, message, ..
        }))) => (
            TOLD,
            Json(json!({"ok": false, "status": status.as_u16(), "error": message})),
        )
            .into_response(),
        Ok(Err(_)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "the action was dropped"})),
        )
            .into_response(),
        // Slack stops waiting at 3 s; the action is still being stored and the
        // message will be updated when it is.
        Err(_) => (StatusCode::OK, Json(json!({"ok": true, "pending": true}))).into_response(),
    }
}

/// `POST /api/v1/slack/interactions`.
pub fn router(state: Arc<SlackInteractions>) -> Router {
    Router::new()
        .route("/api/v1/slack/interactions", post(interactions))
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";

    /// The example of Slack's "Verifying requests" page, computed independently of
    /// [`sign`] with the `hmac` crate's one-shot API.
    #[test]
    fn signatures_are_verified_with_the_real_algorithm() {
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&command=%2Fweather";
        let ts = "1531420618";
        let mut m = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
        m.update(format!("v0:{ts}:").as_bytes());
        m.update(body);
        let want: String = m
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let sig = sign(SECRET, ts, body);
        assert_eq!(sig, format!("v0={want}"));
        let now = 1531420618 + 10;
        assert_eq!(
            verify(SECRET, Some(ts), Some(&sig), body, now),
            Ok(1531420618)
        );
        // Within the window either way; outside it refused even when signed.
        assert!(verify(SECRET, Some(ts), Some(&sig), body, 1531420618 - 299).is_ok());
        assert_eq!(
            verify(SECRET, Some(ts), Some(&sig), body, 1531420618 + 301),
            Err(SigError::Stale)
        );
        // Any change: body, timestamp, secret, signature.
        assert_eq!(
            verify(SECRET, Some(ts), Some(&sig), b"token=other", now),
            Err(SigError::Bad)
        );
        let other_ts = sign(SECRET, "1531420619", body);
        assert_eq!(
            verify(SECRET, Some(ts), Some(&other_ts), body, now),
            Err(SigError::Bad)
        );
        assert_eq!(
            verify(b"another secret", Some(ts), Some(&sig), body, now),
            Err(SigError::Bad)
        );
        let mut flipped = sig.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            verify(SECRET, Some(ts), Some(&flipped), body, now),
            Err(SigError::Bad)
        );
        // Truncated, unprefixed, missing, non-numeric timestamps.
        for bad in [&sig[..20], &sig[3..], "v1=00", "v0=zz"] {
            assert!(
                verify(SECRET, Some(ts), Some(bad), body, now).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            verify(SECRET, None, Some(&sig), body, now),
            Err(SigError::Missing)
        );
        assert_eq!(
            verify(SECRET, Some(ts), None, body, now),
            Err(SigError::Missing)
        );
        assert_eq!(
            verify(SECRET, Some("-1531420618"), Some(&sig), body, now),
            Err(SigError::Missing)
        );
    }

    #[test]
    fn a_signature_is_accepted_once_and_the_memory_is_bounded() {
        let seen = Seen::default();
        assert_eq!(seen.first_time("v0=aa", 100, 100), Ok(()));
        assert_eq!(seen.first_time("v0=aa", 100, 101), Err("replayed"));
        for i in 1..MAX_REMEMBERED {
            seen.first_time(&format!("v0={i}"), 100, 100).unwrap();
        }
        assert_eq!(seen.first_time("v0=new", 100, 100), Err("full"));
        // Once the window has passed, old signatures make room (a replay of them is
        // refused by its timestamp anyway).
        assert_eq!(seen.first_time("v0=new", 500, 500), Ok(()));
    }

    #[test]
    fn only_slacks_response_urls_are_called() {
        assert!(response_url_ok(
            "https://hooks.slack.com/actions/T1/1/abc",
            false
        ));
        for bad in [
            "http://hooks.slack.com/actions/x",
            "https://hooks.slack.com:8443/actions/x",
            "https://hooks.slack.com.evil.example/x",
            "https://evil.example/hooks.slack.com",
            "https://user:pw@hooks.slack.com/x",
            "https://169.254.169.254/latest/meta-data",
            "http://127.0.0.1:8080/x",
            "file:///etc/passwd",
            "",
        ] {
            assert!(!response_url_ok(bad, false), "{bad}");
        }
        assert!(response_url_ok("http://127.0.0.1:8080/x", true));
        assert!(response_url_ok("http://[::1]:8080/x", true));
        assert!(!response_url_ok("http://10.0.0.1/x", true));
        assert!(!response_url_ok("http://localhost.evil.example/x", true));
    }

    fn form(payload: &Value) -> Vec<u8> {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish()
            .into_bytes()
    }

    #[test]
    fn clicks_are_parsed_and_anything_else_is_malformed() {
        let good = json!({"type": "block_actions", "user": {"id": "U024BE7LH"},
            "response_url": "https://hooks.slack.com/actions/T/1/x",
            "actions": [{"action_id": "churnwatch_snooze_7d", "value": "acme/inactive/2026-03-01",
                         "block_id": "cw-actions-0", "action_ts": "1700000000.123456"}]});
        let c = parse_click(&form(&good), false).ok().unwrap();
        assert_eq!(
            (c.kind, c.alert_id.as_str()),
            (ActionKind::Snooze, "acme/inactive/2026-03-01")
        );
        let mut cases = Vec::new();
        let mut v = good.clone();
        v["type"] = json!("view_submission");
        cases.push((v, "malformed"));
        let mut v = good.clone();
        v["actions"][0]["action_id"] = json!("delete_everything");
        cases.push((v, "malformed"));
        let mut v = good.clone();
        v["actions"][0]["value"] = json!("not an alert");
        cases.push((v, "malformed"));
        let mut v = good.clone();
        v["user"]["id"] = json!("<!channel>");
        cases.push((v, "malformed"));
        let mut v = good.clone();
        v["actions"] = json!([]);
        cases.push((v, "malformed"));
        let mut v = good.clone();
        v["response_url"] = json!("https://evil.example/x");
        cases.push((v, "bad_response_url"));
        for (v, bucket) in cases {
            assert_eq!(
                parse_click(&form(&v), false).err().map(|e| e.0),
                Some(bucket),
                "{v}"
            );
        }
        assert!(parse_click(b"payload=%7Bnot json", false).is_err());
        assert!(parse_click(b"nothing=here", false).is_err());
    }

    #[test]
    fn the_message_is_updated_in_place_or_answered_aside() {
        let msg = json!({"text": "t", "blocks": [{"type": "section"}, {"type": "actions", "block_id": "cw-actions-0"}]});
        let u = updated_message(Some(&msg), "cw-actions-0", "done by <@U1>");
        assert_eq!(u["replace_original"], true);
        assert_eq!(u["blocks"][1]["type"], "context");
        assert_eq!(u["blocks"][1]["elements"][0]["text"], "done by <@U1>");
        let aside = updated_message(None, "cw-actions-0", "done");
        assert_eq!(aside["replace_original"], false);
        assert_eq!(aside["response_type"], "ephemeral");
    }

    /// Through the router: a body over the bound is refused (413), an unsigned one is
    /// refused (401), before anything else happens.
    #[tokio::test]
    async fn bodies_are_bounded_and_unsigned_ones_refused() {
        use tower::ServiceExt;
        let producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .create_with_context(crate::kafka::client::LogContext)
            .unwrap();
        let store = Arc::new(super::super::Actions::new(10, Arc::new(|| 0)));
        let applier = Arc::new(Applier {
            store: store.clone(),
            producer,
            topic: "t".into(),
            horizon: 90 * DAY,
            owners: None,
            view: None,
            writing: tokio::sync::Mutex::new(()),
            rate: Default::default(),
        });
        let app = router(Arc::new(SlackInteractions {
            applier,
            secret: SECRET.to_vec(),
            users: BTreeMap::new(),
            role_of: Arc::new(|_: &str| Role::Csm),
            seen: Seen::default(),
            http: reqwest::Client::new(),
            loopback: false,
        }));
        let req = |body: Vec<u8>| {
            axum::http::Request::post("/api/v1/slack/interactions")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-slack-request-timestamp", "0")
                .header("x-slack-signature", sign(SECRET, "0", &body))
                .body(axum::body::Body::from(body))
                .unwrap()
        };
        let huge = app
            .clone()
            .oneshot(req(vec![b'x'; MAX_BODY_BYTES + 1]))
            .await
            .unwrap();
        assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let mut unsigned = req(b"payload=%7B%7D".to_vec());
        unsigned.headers_mut().remove("x-slack-signature");
        let r = app.oneshot(unsigned).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(store.is_empty());
    }

    #[test]
    fn slack_requests_carry_a_fixed_reason_and_a_bounded_until() {
        let now = 1_780_000_000_000;
        let r = request(ActionKind::NotARisk, "a/inactive/1", now, 90 * DAY);
        assert_eq!(r.reason, NOT_A_RISK_REASON);
        assert_eq!(r.until, Some(format_rfc3339(now + 7 * DAY)));
        let short = request(ActionKind::Snooze, "a/inactive/1", now, DAY);
        assert_eq!(short.until, Some(format_rfc3339(now + DAY)));
        let ack = request(ActionKind::Acknowledge, "a/inactive/1", now, DAY);
        assert_eq!((ack.reason.as_str(), ack.until), ("", None));
    }

    #[test]
    fn a_message_post_time_is_read_from_its_ts() {
        let at = |ts: Value| posted_at(&json!({ "ts": ts }));
        assert_eq!(at(json!("1700000000.000100")), Some(1_700_000_000_000));
        assert_eq!(at(json!("1700000000.5")), Some(1_700_000_000_500));
        assert_eq!(at(json!("1700000000")), Some(1_700_000_000_000));
        for bad in [
            json!("-1.0"),
            json!("1e9"),
            json!(""),
            json!(1700000000),
            json!("1.2.3"),
        ] {
            assert_eq!(at(bad.clone()), None, "{bad}");
        }
        assert_eq!(posted_at(&json!({})), None);
    }
}
