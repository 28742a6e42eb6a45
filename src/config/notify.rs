//! `[notify]`: receivers, the routing tree and notification timing, and their
//! validation.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{invalid, Config, ConfigError, Duration, Severity};
use crate::time::DAY;

/// Notifications.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    pub enabled: bool,
    pub group_id: String,
    pub accounts_file: String,
    pub crm_url_template: String,
    /// Where a CSM sees all their accounts (the inbox); messages that summarise what
    /// did not fit link there. Empty: the summary names the accounts instead.
    pub inbox_url: String,
    /// Domains an owner's address may have for mail to go to it (empty: any).
    pub owner_email_domains: Vec<String>,
    pub send_resolved: bool,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Local hour (0-23) of the daily digest in the owner's time zone; -1: no digest.
    pub digest_hour: i64,
    /// Severities held for the digest (critical alerts always go at once).
    pub digest_severities: Vec<Severity>,
    /// Time zone of owners whose accounts name none (IANA name).
    pub default_timezone: String,
    /// Compacted topic of account metadata (key: account id); empty: none.
    pub accounts_topic: String,
    /// Notifications delivered at the same time, at most (to different owners).
    pub max_concurrent_deliveries: u32,
    /// Longest a wave of deliveries may take, retries and rate limits included; what
    /// did not go out by then is tried again later (the alerts consumer keeps polling).
    pub delivery_deadline: Duration,
    /// How long a delivery is remembered (notification log) to keep a re-read alert
    /// from going out twice; older entries are removed from the log.
    pub log_retention: Duration,
    /// Furthest ahead a silence may end.
    pub max_silence: Duration,
    pub receivers: Vec<ReceiverConfig>,
    pub route: RouteConfig,
    /// Buttons in Slack messages and the interactions endpoint.
    #[serde(default)]
    pub slack: super::SlackActionsConfig,
    /// One-click links in emails.
    #[serde(default)]
    pub email_links: super::EmailLinksConfig,
}

/// One destination of notifications.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub name: String,
    /// `slack`, `webhook` or `email`.
    #[serde(rename = "type")]
    pub kind: String,
    /// URL (webhook), when it is not a secret.
    #[serde(default)]
    pub url: String,
    /// Environment variable holding the URL (Slack incoming webhooks are secrets).
    #[serde(default)]
    pub url_env: String,
    /// Environment variable holding the webhook's HMAC key.
    #[serde(default)]
    pub hmac_key_env: String,
    /// Slack: mention the owning CSM.
    #[serde(default = "yes")]
    pub mention_owner: bool,
    /// Webhook: largest request body; larger batches are split into parts.
    #[serde(default = "max_body_bytes")]
    pub max_body_bytes: usize,
    #[serde(default)]
    pub smtp_host: String,
    #[serde(default = "smtp_port")]
    pub smtp_port: u16,
    /// `starttls`, `tls` or `none`.
    #[serde(default = "starttls")]
    pub smtp_tls: String,
    #[serde(default)]
    pub smtp_username: String,
    #[serde(default)]
    pub smtp_password_env: String,
    #[serde(default)]
    pub from: String,
    /// Recipient; `{owner_email}` is replaced by the account owner's address.
    #[serde(default = "owner_email")]
    pub to: String,
    /// Messages per second at most (0: no limit; Slack defaults to 1).
    #[serde(default)]
    pub rate_limit_per_sec: Option<f64>,
}

/// librdkafka settings that hold secrets: accepted only through `[kafka.client_env]`,
/// so that a config file (or a ConfigMap) never carries them.
pub(crate) fn is_secret_setting(key: &str) -> bool {
    key.contains("password")
        || key.contains("secret")
        || matches!(
            key,
            "ssl.key.pem" | "ssl_key" | "sasl.oauthbearer.config" | "sasl.kerberos.keytab"
        )
}

fn yes() -> bool {
    true
}
fn max_body_bytes() -> usize {
    crate::notify::render::limits::WEBHOOK_DEFAULT_MAX_BODY
}
fn smtp_port() -> u16 {
    587
}
fn starttls() -> String {
    "starttls".into()
}
fn owner_email() -> String {
    "{owner_email}".into()
}

/// A matcher value: one string, any of several, or `*` for "present".
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum MatchValue {
    One(String),
    Any(Vec<String>),
}

/// A node of the routing tree.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Receiver of this node (inherited from the parent when empty).
    #[serde(default)]
    pub receiver: String,
    #[serde(default, rename = "match")]
    pub matchers: BTreeMap<String, MatchValue>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Keep looking at later siblings after this route matched.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
}

impl Config {
    pub(super) fn validate_notify(&self) -> Result<(), ConfigError> {
        let n = &self.notify;
        let mut names = std::collections::BTreeSet::new();
        for r in &n.receivers {
            if r.name.is_empty() || !names.insert(r.name.as_str()) {
                return Err(invalid(
                    "notify.receivers",
                    format!("receiver names must be unique and non-empty ({:?})", r.name),
                ));
            }
            match r.kind.as_str() {
                "slack" if !r.url.is_empty() => {
                    return Err(invalid(
                        "notify.receivers",
                        format!(
                            "slack receiver {:?}: an incoming-webhook URL is a secret; put it in an environment variable and name it in url_env",
                            r.name
                        ),
                    ))
                }
                "slack" if r.url_env.is_empty() => {
                    return Err(invalid(
                        "notify.receivers",
                        format!(
                        "slack receiver {:?} needs url_env (the env var holding its webhook URL)",
                        r.name
                    ),
                    ))
                }
                "webhook" if r.url_env.is_empty() && r.url.is_empty() => {
                    return Err(invalid(
                        "notify.receivers",
                        format!("webhook receiver {:?} needs url or url_env", r.name),
                    ))
                }
                "email" if r.smtp_host.is_empty() || r.from.is_empty() => {
                    return Err(invalid(
                        "notify.receivers",
                        format!("email receiver {:?} needs smtp_host and from", r.name),
                    ))
                }
                "email" if !matches!(r.smtp_tls.as_str(), "starttls" | "tls" | "none") => {
                    return Err(invalid(
                        "notify.receivers",
                        format!(
                            "email receiver {:?}: smtp_tls must be starttls, tls or none",
                            r.name
                        ),
                    ))
                }
                "slack" | "webhook" | "email" => {}
                other => {
                    return Err(invalid(
                        "notify.receivers",
                        format!(
                            "receiver {:?} has type {other:?}; use slack, webhook or email",
                            r.name
                        ),
                    ))
                }
            }
        }
        fn check(
            route: &RouteConfig,
            names: &std::collections::BTreeSet<&str>,
            root: bool,
        ) -> Result<(), ConfigError> {
            if !route.receiver.is_empty() && !names.contains(route.receiver.as_str()) {
                return Err(invalid(
                    "notify.route",
                    format!(
                        "route receiver {:?} is not among notify.receivers",
                        route.receiver
                    ),
                ));
            }
            if root && !route.matchers.is_empty() {
                return Err(invalid(
                    "notify.route",
                    "the root route matches everything; put match on child routes",
                ));
            }
            for key in route.matchers.keys() {
                if !matches!(
                    key.as_str(),
                    "kind"
                        | "severity"
                        | "status"
                        | "account_id"
                        | "owner"
                        | "plan"
                        | "name"
                        | "timezone"
                        | "segment"
                ) {
                    return Err(invalid(
                        "notify.route",
                        format!("cannot match on {key:?}; use kind, severity, status, account_id, owner, plan, name, timezone or segment"),
                    ));
                }
            }
            route.routes.iter().try_for_each(|r| check(r, names, false))
        }
        check(&n.route, &names, true)?;
        if !n.receivers.is_empty() && n.route.receiver.is_empty() {
            return Err(invalid(
                "notify.route.receiver",
                "set the default receiver (e.g. the CS team channel) for alerts no route claims",
            ));
        }
        if n.max_attempts == 0 {
            return Err(invalid("notify.max_attempts", "must be at least 1"));
        }
        if !(-1..=23).contains(&n.digest_hour) {
            return Err(invalid(
                "notify.digest_hour",
                format!(
                    "{} is not an hour; use 0-23 (local time of the owner), or -1 for no digest",
                    n.digest_hour
                ),
            ));
        }
        if n.digest_severities.contains(&Severity::Critical) {
            return Err(invalid(
                "notify.digest_severities",
                "critical alerts always go out at once; use \"info\" and/or \"warning\"",
            ));
        }
        if let Err(e) = jiff::tz::TimeZone::get(&n.default_timezone) {
            return Err(invalid(
                "notify.default_timezone",
                format!(
                    "{:?} is not a known time zone ({e}); use an IANA name such as \"UTC\" or \"America/New_York\"",
                    n.default_timezone
                ),
            ));
        }
        if n.max_concurrent_deliveries == 0 {
            return Err(invalid(
                "notify.max_concurrent_deliveries",
                "must be at least 1",
            ));
        }
        if n.log_retention.0 < DAY {
            return Err(invalid(
                "notify.log_retention",
                "must be at least 1d (and longer than the alerts topic is ever re-read)",
            ));
        }
        if n.delivery_deadline.0 < 1000 || n.delivery_deadline.0 > 4 * 60_000 {
            return Err(invalid(
                "notify.delivery_deadline",
                format!(
                    "{} is out of range; use 1s to 4m (the alerts consumer must poll within 5 minutes)",
                    n.delivery_deadline
                ),
            ));
        }
        if !n.crm_url_template.is_empty()
            && crate::notify::render::escape::link_from_template(&n.crm_url_template, "x").is_none()
        {
            return Err(invalid(
                "notify.crm_url_template",
                format!(
                    "{:?} is not an https: URL; use e.g. \"https://crm.example.com/accounts/{{account_id}}\"",
                    n.crm_url_template
                ),
            ));
        }
        if !n.inbox_url.is_empty()
            && !url::Url::parse(&n.inbox_url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        {
            return Err(invalid(
                "notify.inbox_url",
                format!("{:?} is not an http(s) URL", n.inbox_url),
            ));
        }
        if let Some((option, msg)) =
            super::actions::problem(&n.slack, &n.email_links, &n.inbox_url, n.max_silence.0)
        {
            return Err(invalid(option, msg));
        }
        if let Some(r) = n.receivers.iter().find(|r| r.max_body_bytes < 4096) {
            return Err(invalid(
                "notify.receivers",
                format!(
                    "receiver {:?}: max_body_bytes {} is too small; use at least 4096",
                    r.name, r.max_body_bytes
                ),
            ));
        }
        Ok(())
    }
}
