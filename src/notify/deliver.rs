//! Delivery to receivers: HTTP (Slack incoming webhooks, generic webhooks) and SMTP,
//! with a rate limit per receiver and retries (exponential backoff with jitter) on
//! timeouts, connection errors, 5xx and 429 (honouring `Retry-After`). Other 4xx and
//! permanent SMTP errors fail at once. Secrets come from the environment and are never
//! logged.

use std::collections::HashMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use lettre::message::MultiPart;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rand::Rng;
use sha2::Sha256;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use super::render::{self, Notification};
use crate::config::{NotifyConfig, ReceiverConfig};
use crate::metrics::METRICS;

/// Why a notification was not delivered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeliveryError {
    #[error("rejected by the receiver: {0}")]
    Permanent(String),
    #[error("gave up after {attempts} attempts; last error: {last}")]
    Exhausted { attempts: u32, last: String },
    #[error("receiver is not usable: {0}")]
    Config(String),
}

/// One attempt's failure.
enum Attempt {
    Retry {
        msg: String,
        after: Option<Duration>,
    },
    Fatal(String),
}

struct Receiver {
    cfg: ReceiverConfig,
    url: Option<String>,
    hmac_key: Option<Vec<u8>>,
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
    /// Earliest time of the next send (rate limit), and the turn to wait for it: one
    /// delivery of a receiver waits for its slot at a time, holding no permit.
    next_slot: Mutex<Instant>,
    turn: Mutex<()>,
    interval: Duration,
}

/// Sends notifications to the configured receivers.
pub struct Sender {
    http: reqwest::Client,
    receivers: HashMap<String, Receiver>,
    crm_template: String,
    max_attempts: u32,
    retry_initial: Duration,
    retry_max: Duration,
    /// Requests in flight, at most `notify.max_concurrent_deliveries`.
    in_flight: Semaphore,
}

fn env_secret(var: &str, what: &str) -> Result<Option<String>, DeliveryError> {
    if var.is_empty() {
        return Ok(None);
    }
    std::env::var(var).map(Some).map_err(|_| {
        DeliveryError::Config(format!("environment variable {var} ({what}) is not set"))
    })
}

fn ms(d: crate::config::Duration) -> Duration {
    Duration::from_millis(d.0.max(0) as u64)
}

impl Sender {
    /// Builds the receivers of `cfg`, reading their secrets from the environment.
    pub fn new(cfg: &NotifyConfig) -> Result<Sender, DeliveryError> {
        let timeout = ms(cfg.timeout);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("churnwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DeliveryError::Config(e.to_string()))?;
        let mut receivers = HashMap::new();
        for r in &cfg.receivers {
            let url = match env_secret(&r.url_env, &format!("URL of receiver {}", r.name))? {
                Some(u) => Some(u),
                None => (!r.url.is_empty()).then(|| r.url.clone()),
            };
            let hmac_key =
                env_secret(&r.hmac_key_env, &format!("HMAC key of receiver {}", r.name))?
                    .map(String::into_bytes);
            let smtp = if r.kind == "email" {
                let builder = match r.smtp_tls.as_str() {
                    "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&r.smtp_host),
                    "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&r.smtp_host)
                        .map_err(|e| DeliveryError::Config(e.to_string()))?,
                    _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&r.smtp_host)
                        .map_err(|e| DeliveryError::Config(e.to_string()))?,
                };
                let mut builder = builder.port(r.smtp_port).timeout(Some(timeout));
                if let Some(pass) = env_secret(
                    &r.smtp_password_env,
                    &format!("SMTP password of receiver {}", r.name),
                )? {
                    builder = builder.credentials(Credentials::new(r.smtp_username.clone(), pass));
                }
                Some(builder.build())
            } else {
                None
            };
            let rate = r
                .rate_limit_per_sec
                .unwrap_or(if r.kind == "slack" { 1.0 } else { 0.0 });
            let interval = if rate > 0.0 {
                Duration::from_secs_f64(1.0 / rate)
            } else {
                Duration::ZERO
            };
            receivers.insert(
                r.name.clone(),
                Receiver {
                    cfg: r.clone(),
                    url,
                    hmac_key,
                    smtp,
                    next_slot: Mutex::new(Instant::now()),
                    turn: Mutex::new(()),
                    interval,
                },
            );
        }
        Ok(Sender {
            http,
            receivers,
            crm_template: cfg.crm_url_template.clone(),
            max_attempts: cfg.max_attempts,
            retry_initial: ms(cfg.retry_initial),
            retry_max: ms(cfg.retry_max),
            in_flight: Semaphore::new(cfg.max_concurrent_deliveries.max(1) as usize),
        })
    }

    /// Delivers notifications concurrently, at most `notify.max_concurrent_deliveries`
    /// requests at a time; the notifications of one (receiver, owner) go one after
    /// another, in their order. Results are in the order of `notes`.
    pub async fn deliver_all(&self, notes: &[Notification]) -> Vec<Result<u32, DeliveryError>> {
        let mut groups: Vec<((&str, &str), Vec<usize>)> = Vec::new();
        for (i, n) in notes.iter().enumerate() {
            let key = (n.receiver.as_str(), n.owner.as_str());
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(i),
                None => groups.push((key, vec![i])),
            }
        }
        let per_group =
            futures_util::future::join_all(groups.into_iter().map(|(_, idx)| async move {
                let mut out = Vec::with_capacity(idx.len());
                for i in idx {
                    out.push((i, self.deliver(&notes[i]).await));
                }
                out
            }))
            .await;
        let mut results: Vec<Option<Result<u32, DeliveryError>>> = vec![None; notes.len()];
        for (i, r) in per_group.into_iter().flatten() {
            results[i] = Some(r);
        }
        results
            .into_iter()
            .map(|r| r.expect("every notification has a result"))
            .collect()
    }

    /// Delivers one notification, retrying as configured.
    pub async fn deliver(&self, n: &Notification) -> Result<u32, DeliveryError> {
        let r = self
            .receivers
            .get(&n.receiver)
            .ok_or_else(|| DeliveryError::Config(format!("no receiver named {:?}", n.receiver)))?;
        let started = std::time::Instant::now();
        let mut backoff = self.retry_initial;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Rate limit: wait for the receiver's next free slot (one waiter at a time),
            // then for a permit; the next slot counts from the send.
            let permit = if r.interval.is_zero() {
                self.in_flight.acquire().await
            } else {
                let _turn = r.turn.lock().await;
                let at = *r.next_slot.lock().await;
                tokio::time::sleep_until(at).await;
                let permit = self.in_flight.acquire().await;
                *r.next_slot.lock().await = Instant::now() + r.interval;
                permit
            }
            .expect("the semaphore is never closed");
            let result = match r.cfg.kind.as_str() {
                "email" => self.send_email(r, n).await,
                _ => self.send_http(r, n).await,
            };
            drop(permit);
            let label = [n.receiver.as_str()];
            match result {
                Ok(()) => {
                    METRICS
                        .notifications
                        .with_label_values(&[&n.receiver, "delivered"])
                        .inc();
                    METRICS
                        .notification_seconds
                        .with_label_values(&label)
                        .observe(started.elapsed().as_secs_f64());
                    return Ok(attempt);
                }
                Err(Attempt::Fatal(msg)) => {
                    METRICS
                        .notifications
                        .with_label_values(&[&n.receiver, "failed"])
                        .inc();
                    return Err(DeliveryError::Permanent(msg));
                }
                Err(Attempt::Retry { msg, after }) => {
                    if attempt >= self.max_attempts {
                        METRICS
                            .notifications
                            .with_label_values(&[&n.receiver, "failed"])
                            .inc();
                        return Err(DeliveryError::Exhausted {
                            attempts: attempt,
                            last: msg,
                        });
                    }
                    METRICS.notification_retries.with_label_values(&label).inc();
                    // Full jitter, unless the receiver said when to come back.
                    let wait = match after {
                        Some(a) => a.min(Duration::from_secs(600)),
                        None => {
                            let cap = backoff.min(self.retry_max);
                            Duration::from_secs_f64(
                                rand::rng().random_range(0.0..=cap.as_secs_f64()),
                            )
                        }
                    };
                    tracing::warn!(receiver = %n.receiver, attempt, wait_ms = wait.as_millis() as u64, error = %msg, "delivery failed; retrying");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(self.retry_max);
                }
            }
        }
    }

    async fn send_http(&self, r: &Receiver, n: &Notification) -> Result<(), Attempt> {
        let url = r
            .url
            .as_deref()
            .ok_or_else(|| Attempt::Fatal("no URL".into()))?;
        let body = match r.cfg.kind.as_str() {
            "slack" => render::slack(n, &self.crm_template, r.cfg.mention_owner),
            _ => render::webhook(n),
        };
        let body = serde_json::to_vec(&body).expect("JSON serializes");
        let mut req = self
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", n.idempotency_key());
        if let Some(key) = &r.hmac_key {
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            req = req
                .header("X-Churnwatch-Timestamp", ts.to_string())
                .header("X-Churnwatch-Signature", sign(key, ts, &body));
        }
        let resp = req.body(body).send().await.map_err(|e| Attempt::Retry {
            msg: format!("request failed: {}", redact(&causes(e), url)),
            after: None,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let after = resp
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        let msg = format!("HTTP {status}: {text}");
        if status.as_u16() == 429 || status.as_u16() == 408 || status.is_server_error() {
            Err(Attempt::Retry { msg, after })
        } else {
            Err(Attempt::Fatal(msg))
        }
    }

    async fn send_email(&self, r: &Receiver, n: &Notification) -> Result<(), Attempt> {
        let to = r.cfg.to.replace("{owner_email}", &n.owner);
        if to.is_empty() || to.contains('{') {
            return Err(Attempt::Fatal(format!(
                "no recipient address (to = {:?}, owner unknown)",
                r.cfg.to
            )));
        }
        let (subject, text, html) = render::email(n, &self.crm_template);
        let msg = Message::builder()
            .from(
                r.cfg
                    .from
                    .parse()
                    .map_err(|e| Attempt::Fatal(format!("from address: {e}")))?,
            )
            .to(to
                .parse()
                .map_err(|e| Attempt::Fatal(format!("recipient {to:?}: {e}")))?)
            .subject(subject)
            .raw_header(lettre::message::header::HeaderValue::new(
                lettre::message::header::HeaderName::new_from_ascii_str(
                    "X-Churnwatch-Idempotency-Key",
                ),
                n.idempotency_key(),
            ))
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| Attempt::Fatal(e.to_string()))?;
        let smtp = r
            .smtp
            .as_ref()
            .ok_or_else(|| Attempt::Fatal("no SMTP transport".into()))?;
        match smtp.send(msg).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(Attempt::Fatal(format!("SMTP: {e}"))),
            Err(e) => Err(Attempt::Retry {
                msg: format!("SMTP: {e}"),
                after: None,
            }),
        }
    }
}

/// `X-Churnwatch-Signature`: `v1=` + hex HMAC-SHA256 over `"{timestamp}.{body}"`.
pub fn sign(key: &[u8], ts: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let out = mac.finalize().into_bytes();
    format!(
        "v1={}",
        out.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate_to_unix(v.trim())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(when.saturating_sub(now)))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate_to_unix(v: &str) -> Option<u64> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: u32 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as u32
        + 1;
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<u64> = parts[4].split(':').filter_map(|x| x.parse().ok()).collect();
    if hms.len() != 3 {
        return None;
    }
    let days = crate::time::days_from_civil(year, month, day);
    u64::try_from(days * 86_400 + (hms[0] * 3600 + hms[1] * 60 + hms[2]) as i64).ok()
}

/// Removes a secret URL from an error message.
/// A request error with its causes (connection refused, TLS, timeout, ...), which
/// reqwest's own message leaves out, and without the URL (a secret for Slack).
fn causes(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = cause.source();
    }
    msg
}

fn redact(msg: &str, url: &str) -> String {
    msg.replace(url, "<receiver url>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // python3 -c "import hmac,hashlib; print(hmac.new(b'key', b'1700000000.{}', hashlib.sha256).hexdigest())"
        assert_eq!(
            sign(b"key", 1_700_000_000, b"{}"),
            "v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            httpdate_to_unix("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
