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

use super::render::{self, Notification, SlackOptions, WebhookPart};
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
    /// Not (fully) delivered before `notify.delivery_deadline`; to be tried again.
    #[error("not delivered within notify.delivery_deadline; will be tried again")]
    Deferred,
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
    inbox_url: String,
    /// `notify.owner_email_domains`: the only domains mail may go to (empty: any).
    owner_domains: Vec<String>,
    /// `[priority]`: the order of alerts within a message.
    priority: crate::priority::PriorityConfig,
    max_attempts: u32,
    retry_initial: Duration,
    retry_max: Duration,
    /// Requests in flight, at most `notify.max_concurrent_deliveries`.
    in_flight: Semaphore,
    /// `notify.delivery_deadline`: the longest a call of `deliver_all` takes.
    deadline: Duration,
    /// `notify.slack.interactions`: Slack messages carry buttons.
    slack_buttons: bool,
    /// `notify.email_links`: emails carry one-click action links.
    email_links: Option<crate::actions::email_link::LinkMaker>,
}

/// Shortest HMAC key accepted: 32 bytes, the output size of SHA-256 (RFC 2104 advises
/// keys no shorter than the hash output).
pub const MIN_HMAC_KEY_BYTES: usize = 32;
/// Bytes of a receiver's error answer kept for the log and the dead letter.
const MAX_ERROR_BODY: usize = 2048;

/// A secret from the environment, trimmed of the surrounding whitespace a secret
/// mounted from a file usually carries.
fn env_secret(var: &str, what: &str) -> Result<Option<String>, DeliveryError> {
    if var.is_empty() {
        return Ok(None);
    }
    let v = std::env::var(var).map_err(|_| {
        DeliveryError::Config(format!("environment variable {var} ({what}) is not set"))
    })?;
    let v = v.trim().to_string();
    if v.is_empty() {
        return Err(DeliveryError::Config(format!(
            "environment variable {var} ({what}) is empty"
        )));
    }
    Ok(Some(v))
}

/// Checks that every receiver's secrets are present and usable, without sending
/// anything and without printing them (for `notify --dry-run` and start-up).
pub fn check_secrets(cfg: &NotifyConfig) -> Result<(), DeliveryError> {
    Sender::new(cfg).map(|_| ())
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
            // A receiver answering with a redirect could send the payload (and the
            // signature) anywhere; redirects are answers, not followed.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("churnwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DeliveryError::Config(e.to_string()))?;
        let mut receivers = HashMap::new();
        for r in &cfg.receivers {
            let url = match env_secret(&r.url_env, &format!("URL of receiver {}", r.name))? {
                Some(u) => Some(u),
                None => (!r.url.is_empty()).then(|| r.url.clone()),
            };
            if let Some(u) = &url {
                match url::Url::parse(u) {
                    Ok(p) if matches!(p.scheme(), "http" | "https") && p.host_str().is_some() => {}
                    _ => {
                        return Err(DeliveryError::Config(format!(
                            "receiver {}: its URL is not an http(s) URL",
                            r.name
                        )))
                    }
                }
            }
            let hmac_key =
                env_secret(&r.hmac_key_env, &format!("HMAC key of receiver {}", r.name))?
                    .map(String::into_bytes);
            if let Some(k) = &hmac_key {
                if k.len() < MIN_HMAC_KEY_BYTES {
                    return Err(DeliveryError::Config(format!(
                        "receiver {}: the HMAC key in {} is {} bytes; use at least {MIN_HMAC_KEY_BYTES} random bytes (e.g. `openssl rand -hex 32`)",
                        r.name, r.hmac_key_env, k.len()
                    )));
                }
            }
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
                    if r.smtp_tls == "none" {
                        return Err(DeliveryError::Config(format!(
                            "receiver {}: SMTP credentials over smtp_tls = \"none\" would go in clear; use starttls or tls",
                            r.name
                        )));
                    }
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
        let email_links = if cfg.email_links.enabled {
            let key = crate::actions::email_link::LinkKey::from_env(&cfg.email_links.secret_env)
                .map_err(DeliveryError::Config)?;
            Some(crate::actions::email_link::LinkMaker {
                key,
                inbox_url: cfg.inbox_url.clone(),
                ttl: cfg.email_links.ttl.0,
            })
        } else {
            None
        };
        Ok(Sender {
            http,
            receivers,
            crm_template: cfg.crm_url_template.clone(),
            inbox_url: cfg.inbox_url.clone(),
            owner_domains: cfg.owner_email_domains.clone(),
            priority: Default::default(),
            max_attempts: cfg.max_attempts,
            retry_initial: ms(cfg.retry_initial),
            retry_max: ms(cfg.retry_max),
            in_flight: Semaphore::new(cfg.max_concurrent_deliveries.max(1) as usize),
            deadline: ms(cfg.delivery_deadline),
            slack_buttons: cfg.slack.interactions,
            email_links,
        })
    }

    /// Orders alerts within messages by these weights (default: `[priority]`'s
    /// defaults).
    pub fn with_priority(mut self, p: crate::priority::PriorityConfig) -> Sender {
        self.priority = p;
        self
    }

    /// Delivers notifications concurrently, at most `notify.max_concurrent_deliveries`
    /// requests at a time; the notifications of one (receiver, owner) go one after
    /// another, in their order. Results are in the order of `notes`. Returns within
    /// `notify.delivery_deadline`: a notification not delivered by then is
    /// [`DeliveryError::Deferred`], so one slow receiver holds up nobody for longer.
    pub async fn deliver_all(&self, notes: &[Notification]) -> Vec<Result<u32, DeliveryError>> {
        let end = Instant::now() + self.deadline;
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
                    let r = match tokio::time::timeout_at(end, self.deliver(&notes[i])).await {
                        Ok(r) => r,
                        Err(_) => {
                            METRICS
                                .notifications
                                .with_label_values(&[&notes[i].receiver, "deferred"])
                                .inc();
                            Err(DeliveryError::Deferred)
                        }
                    };
                    out.push((i, r));
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

    /// The HTTP requests of a delivery (several when a webhook body is split), or
    /// `None` for email.
    fn requests(&self, r: &Receiver, n: &Notification) -> Result<Option<Vec<WebhookPart>>, String> {
        Ok(match r.cfg.kind.as_str() {
            "email" => None,
            "slack" => {
                let opts = SlackOptions {
                    crm_template: &self.crm_template,
                    inbox_url: &self.inbox_url,
                    mention_owner: r.cfg.mention_owner,
                    priority: self.priority.clone(),
                    buttons: self.slack_buttons,
                };
                Some(vec![WebhookPart {
                    key: n.idempotency_key(),
                    body: serde_json::to_vec(&render::slack(n, &opts)).expect("JSON serializes"),
                }])
            }
            _ => Some(render::webhook_parts(n, r.cfg.max_body_bytes)?),
        })
    }

    /// Delivers one notification, retrying as configured. A split webhook delivery
    /// sends its parts in order; a retry resumes at the part that failed. Returns the
    /// number of requests made.
    pub async fn deliver(&self, n: &Notification) -> Result<u32, DeliveryError> {
        let r = self
            .receivers
            .get(&n.receiver)
            .ok_or_else(|| DeliveryError::Config(format!("no receiver named {:?}", n.receiver)))?;
        let label = [n.receiver.as_str()];
        let fail = |e: DeliveryError| {
            METRICS
                .notifications
                .with_label_values(&[&n.receiver, "failed"])
                .inc();
            Err(e)
        };
        let requests = match self.requests(r, n) {
            Ok(reqs) => reqs,
            Err(msg) => return fail(DeliveryError::Permanent(msg)),
        };
        let total = requests.as_ref().map_or(1, Vec::len);
        let started = std::time::Instant::now();
        let mut backoff = self.retry_initial;
        let (mut done, mut attempt, mut made) = (0, 0, 0);
        loop {
            attempt += 1;
            made += 1;
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
            let result = match &requests {
                None => self.send_email(r, n).await,
                Some(parts) => self.send_http(r, &parts[done]).await,
            };
            drop(permit);
            match result {
                Ok(()) => {
                    done += 1;
                    if done < total {
                        attempt = 0;
                        backoff = self.retry_initial;
                        continue;
                    }
                    METRICS
                        .notifications
                        .with_label_values(&[&n.receiver, "delivered"])
                        .inc();
                    METRICS
                        .notification_seconds
                        .with_label_values(&label)
                        .observe(started.elapsed().as_secs_f64());
                    return Ok(made);
                }
                Err(Attempt::Fatal(msg)) => return fail(DeliveryError::Permanent(msg)),
                Err(Attempt::Retry { msg, after }) => {
                    if attempt >= self.max_attempts {
                        return fail(DeliveryError::Exhausted {
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

    async fn send_http(&self, r: &Receiver, part: &WebhookPart) -> Result<(), Attempt> {
        let url = r
            .url
            .as_deref()
            .ok_or_else(|| Attempt::Fatal("no URL".into()))?;
        let body = part.body.clone();
        let mut req = self
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", &part.key);
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
            msg: format!("request failed: {}", error_kind(&e)),
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
        let text = bounded_text(resp, MAX_ERROR_BODY).await;
        let msg = format!("HTTP {status}: {text:?}");
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
        if !crate::accounts::is_bare_address(&to) {
            return Err(Attempt::Fatal(
                "the recipient is not one bare address".into(),
            ));
        }
        let to: lettre::Address = to
            .parse()
            .map_err(|e| Attempt::Fatal(format!("recipient: {e}")))?;
        if !self.owner_domains.is_empty()
            && !self
                .owner_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(to.domain()))
        {
            return Err(Attempt::Fatal(format!(
                "recipient domain {:?} is not in notify.owner_email_domains",
                render::escape::cut(to.domain(), 80)
            )));
        }
        // Links act as the owner, so only a mail to the owner themselves carries them:
        // not one for unowned accounts, nor one a fixed `to` sends to someone else.
        let now = crate::time::wall_clock_ms();
        let to_owner = !n.owner.is_empty() && to.to_string().eq_ignore_ascii_case(n.owner.trim());
        let maker = self.email_links.as_ref().filter(|_| to_owner);
        let link = |id: &str, k| maker?.link(id, k, &n.owner, now);
        let (subject, text, html) = render::email_with_links(
            n,
            &self.crm_template,
            &self.inbox_url,
            &self.priority,
            maker.map(|_| &link as render::ActionLink),
        );
        let msg = Message::builder()
            .from(
                r.cfg
                    .from
                    .parse()
                    .map_err(|e| Attempt::Fatal(format!("from address: {e}")))?,
            )
            .to(lettre::message::Mailbox::new(None, to))
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

/// What went wrong with a request, in words that never hold its URL: the kind
/// (timeout, connect, ...) and the underlying causes (connection refused, TLS, DNS).
pub fn error_kind(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "redirect refused"
    } else if e.is_body() || e.is_decode() {
        "bad response body"
    } else if e.is_request() {
        "request error"
    } else {
        "error"
    };
    let mut causes = Vec::new();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        let t = c.to_string();
        // Causes below reqwest are hyper's and the OS's; none of them carries the URL,
        // but the check stays cheap insurance.
        if !t.contains("://") && !causes.contains(&t) {
            causes.push(t);
        }
        src = c.source();
    }
    if causes.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {}", causes.join(": "))
    }
}

/// At most `max` bytes of a response body, read no further, as text with control
/// characters escaped (a receiver cannot forge log lines or fill memory).
async fn bounded_text(mut resp: reqwest::Response, max: usize) -> String {
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < max {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c[..c.len().min(max - buf.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
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
