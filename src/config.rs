//! Typed configuration: TOML file, `CHURNWATCH_*` environment overrides, validation.
//!
//! `Config::load` is what `main` calls; `Config::from_toml_str` with an explicit
//! environment is what tests call. Validation names the option and says how to fix it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer};

use crate::time::{format_duration, parse_duration, Millis, DAY};

/// The default configuration, identical to `config/churnwatch.toml`.
pub const DEFAULT_TOML: &str = include_str!("../config/churnwatch.toml");

/// Prefix of environment overrides; path segments are joined with `__`.
pub const ENV_PREFIX: &str = "CHURNWATCH_";

/// A configuration problem, with the option it concerns and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config is not valid: {0}")]
    Parse(String),
    #[error("environment override {var}: {msg}")]
    Env { var: String, msg: String },
    #[error("option `{option}`: {msg}")]
    Invalid { option: &'static str, msg: String },
}

fn invalid(option: &'static str, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option,
        msg: msg.into(),
    }
}

/// A duration written as `"10m"`, `"6h"`, ...; held in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub Millis);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Duration)
            .map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// Alert severity, ordered from least to most urgent.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the fields of an input event are and how large an event may be.
    pub input: InputConfig,
    /// Watermark settings.
    pub time: TimeConfig,
    /// Bounds on tracked accounts.
    pub engine: EngineLimits,
    /// Which events start and end an account's lifecycle.
    pub lifecycle: LifecycleConfig,
    /// When an account counts as activated.
    pub activation: ActivationConfig,
    /// The churn-risk rules.
    pub rules: RulesConfig,
    /// Kafka topics and clients for `run` and `produce`.
    pub kafka: KafkaConfig,
    /// Logging.
    pub log: LogConfig,
    /// HTTP endpoints.
    pub server: ServerConfig,
    /// CSM notifications.
    pub notify: NotifyConfig,
    /// What is at stake: the weights of the priority score.
    pub priority: crate::priority::PriorityConfig,
}

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
fn is_secret_setting(key: &str) -> bool {
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

/// HTTP endpoints of `run` and `notify`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; empty disables the server.
    pub listen: String,
    /// `/healthz` fails once a loop of the process has not turned for this long.
    pub liveness_timeout: Duration,
    /// Environment variable holding the API token (`Authorization: Bearer`); the API
    /// refuses every request while it is unset.
    pub api_token_env: String,
}

/// Log format and level.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// Default filter when RUST_LOG is not set (e.g. `info`, `churnwatch=debug`).
    pub level: String,
}

/// Kafka settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// bootstrap.servers
    pub brokers: String,
    /// Consumer group of all instances; prefix of the transactional id.
    pub group_id: String,
    /// Stable per-instance name (default: $HOSTNAME or the host name).
    pub instance_id: String,
    pub input_topic: String,
    pub alerts_topic: String,
    pub dead_letter_topic: String,
    /// Compacted state topic (default `<group_id>-changelog`).
    pub changelog_topic: String,
    /// Create missing output and changelog topics.
    pub create_topics: bool,
    /// Replication factor of created topics (-1: broker default).
    pub replication_factor: i32,
    /// `earliest` or `latest`, for a group with no committed offsets.
    pub start_from: String,
    /// Interval between checkpoints (transactions).
    pub checkpoint_interval: Duration,
    /// Checkpoint early once this many accounts changed.
    pub checkpoint_max_dirty: usize,
    /// Consumer-group members run by this process, each on its own thread with its
    /// own consumer, transactional producer and partitions, as Kafka Streams' stream
    /// threads (0: one per CPU, at most 8; never more than the input's partitions).
    pub stream_threads: usize,
    /// transaction.timeout.ms of the producer.
    pub transaction_timeout: Duration,
    /// Quiet time after which a caught-up partition's watermark follows the clock.
    pub idle_advance_after: Duration,
    /// Deadline for a graceful stop.
    pub shutdown_timeout: Duration,
    /// librdkafka settings passed to every client.
    pub client: BTreeMap<String, String>,
    /// librdkafka settings read from the named environment variables.
    pub client_env: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// The changelog topic name.
    pub fn changelog(&self) -> String {
        if self.changelog_topic.is_empty() {
            format!("{}-changelog", self.group_id)
        } else {
            self.changelog_topic.clone()
        }
    }

    /// The instance id (config, else $HOSTNAME, else the host name).
    pub fn instance(&self) -> String {
        if !self.instance_id.is_empty() {
            return self.instance_id.clone();
        }
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "churnwatch".into())
    }

    /// The transactional id of this instance's stream thread `thread`.
    pub fn transactional_id(&self, thread: usize) -> String {
        format!("{}-{}-{thread}", self.group_id, self.instance())
    }

    /// Stream threads to run for an input of `partitions` partitions.
    pub fn stream_threads(&self, partitions: usize) -> usize {
        let n = match self.stream_threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(8),
            n => n,
        };
        n.min(partitions).max(1)
    }
}

/// Field locations (JSON pointers) and size limit of input events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Pointer to the account id (required string).
    pub account_id: String,
    /// Pointer to the event name (required string).
    pub event: String,
    /// Pointer to the event time (required RFC 3339 string or epoch ms integer).
    pub ts: String,
    /// Pointer to the acting user (optional string).
    pub user_id: String,
    /// Larger messages are rejected as `oversized`; file lines past it are not buffered.
    pub max_event_bytes: usize,
    /// Events dated more than this after the wall clock (or `replay --now`) when read
    /// are rejected as `future_timestamp`, so one wrong date cannot drag the watermark.
    pub max_future: Duration,
}

/// Bounds on the engine's state, against input that invents accounts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineLimits {
    /// Accounts one shard (a Kafka partition, or a whole replay) tracks at most; events
    /// of further new accounts are rejected as `account_limit`.
    pub max_accounts_per_partition: usize,
    /// Track only accounts that have account metadata (`notify.accounts_file` or
    /// `_topic`, `replay --accounts`); events of others are rejected as `unknown_account`.
    pub known_accounts_only: bool,
}

/// Watermark settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {
    /// How far behind the newest event an event may arrive and still be exact.
    pub allowed_lateness: Duration,
    /// Live mode: how far the watermark may follow the wall clock past the newest event.
    pub max_idle_advance: Duration,
}

/// Lifecycle event names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Events that start a lifecycle.
    pub start_events: Vec<String>,
    /// Events that end a lifecycle.
    pub end_events: Vec<String>,
    /// Start a lifecycle at the first event ever seen when it is not a start event.
    pub start_on_first_event: bool,
}

/// Activation conditions; all must hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationConfig {
    /// Event names that must each be seen once in the lifecycle.
    pub required_events: Vec<String>,
    /// Distinct UTC days with activity.
    pub min_active_days: u32,
    /// Distinct non-empty user ids.
    pub min_active_users: u32,
    /// Activity events.
    pub min_events: u64,
}

/// The three rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    pub not_activated: NotActivatedConfig,
    pub inactive: InactiveConfig,
    pub activity_drop: ActivityDropConfig,
}

/// Onboarding deadlines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotActivatedConfig {
    pub enabled: bool,
    /// Deadlines after the lifecycle start, in increasing order.
    pub deadlines: Vec<Deadline>,
}

/// One onboarding deadline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deadline {
    pub after_days: u32,
    pub severity: Severity,
}

/// Gone-dark rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InactiveConfig {
    pub enabled: bool,
    pub after_days: u32,
    pub severity: Severity,
}

/// Daily metric compared by the drop test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropMetric {
    /// Activity events per day.
    Events,
    /// Distinct users per day.
    ActiveUsers,
}

/// Sharp-drop rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityDropConfig {
    pub enabled: bool,
    pub metric: DropMetric,
    pub recent_days: u32,
    pub baseline_days: u32,
    pub min_expected: f64,
    pub min_drop: f64,
    pub alpha: f64,
    pub recovery: f64,
    pub severity: Severity,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_toml_str(DEFAULT_TOML, std::iter::empty())
            .expect("the embedded default config is valid")
    }
}

/// Merges `overlay` into `base` key by key (tables recursively, anything else replaced).
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (k, v) in overlay {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Reads an override value as TOML (number, bool, array, inline table), else a string.
fn env_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").expect("key v was just written"),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

impl Config {
    /// Loads a config: the embedded defaults, overlaid by `path` (if any), overlaid by
    /// `CHURNWATCH_SECTION__KEY` variables from the process environment; then validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.display().to_string(),
                source,
            })?,
            None => String::new(),
        };
        Config::from_toml_str(&text, std::env::vars())
    }

    /// Builds a config from TOML text (a partial file is fine: missing options keep
    /// their defaults) and an environment, then validates it.
    pub fn from_toml_str(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = DEFAULT_TOML
            .parse()
            .map_err(|e| ConfigError::Parse(format!("embedded default: {e}")))?;
        let defaults = toml::Value::Table(table.clone());
        let user: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError::Parse(e.to_string().trim_end().to_string())
        })?;
        merge(&mut table, user);
        let overrides: BTreeMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
            .collect();
        for (var, raw) in &overrides {
            let path: Vec<String> = var[ENV_PREFIX.len()..]
                .split("__")
                .map(|s| s.to_ascii_lowercase())
                .collect();
            if path.iter().any(String::is_empty) {
                return Err(ConfigError::Env {
                    var: var.clone(),
                    msg: "empty path segment; write CHURNWATCH_SECTION__KEY".into(),
                });
            }
            let mut overlay = toml::Table::new();
            let mut cursor = &mut overlay;
            for seg in &path[..path.len() - 1] {
                cursor = cursor
                    .entry(seg.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .expect("just inserted a table");
            }
            // An option whose default is a string stays a string ("1234" is a valid
            // topic name); anything else is read as TOML.
            let default_is_string = path
                .iter()
                .try_fold(&defaults, |v, seg| v.get(seg.as_str()))
                .is_some_and(toml::Value::is_str);
            let value = if default_is_string {
                toml::Value::String(raw.clone())
            } else {
                env_value(raw)
            };
            cursor.insert(path[path.len() - 1].clone(), value);
            merge(&mut table, overlay);
        }
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                let mut msg = e.to_string().trim_end().to_string();
                if !overrides.is_empty() {
                    let vars: Vec<&str> = overrides.keys().map(String::as_str).collect();
                    msg.push_str(&format!(
                        " (environment overrides in effect: {})",
                        vars.join(", ")
                    ));
                }
                ConfigError::Parse(msg)
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every option's range and the relations between options.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let i = &self.input;
        for (option, p) in [
            ("input.account_id", &i.account_id),
            ("input.event", &i.event),
            ("input.ts", &i.ts),
            ("input.user_id", &i.user_id),
        ] {
            if !p.starts_with('/') {
                return Err(invalid(
                    option,
                    format!(
                        "{p:?} is not a JSON pointer; write it as \"/field\" or \"/outer/inner\""
                    ),
                ));
            }
        }
        if i.max_event_bytes < 64 {
            return Err(invalid("input.max_event_bytes", "must be at least 64"));
        }
        if i.max_event_bytes > 16 << 20 {
            return Err(invalid(
                "input.max_event_bytes",
                "must be at most 16777216 (16 MiB): a line is held in memory whole",
            ));
        }
        if i.max_future.0 < 0 {
            return Err(invalid("input.max_future", "must not be negative"));
        }
        if self.engine.max_accounts_per_partition == 0 {
            return Err(invalid(
                "engine.max_accounts_per_partition",
                "must be at least 1",
            ));
        }
        if self.engine.max_accounts_per_partition > u32::MAX as usize {
            return Err(invalid(
                "engine.max_accounts_per_partition",
                "must be at most 4294967295",
            ));
        }
        let t = &self.time;
        if t.allowed_lateness.0 < 0 || t.allowed_lateness.0 > 7 * DAY {
            return Err(invalid(
                "time.allowed_lateness",
                "must be between 0s and 7d",
            ));
        }
        if t.max_idle_advance.0 < 0 {
            return Err(invalid("time.max_idle_advance", "must not be negative"));
        }
        let l = &self.lifecycle;
        if l.start_events
            .iter()
            .chain(&l.end_events)
            .any(|e| e.is_empty())
        {
            return Err(invalid(
                "lifecycle.start_events",
                "event names must not be empty",
            ));
        }
        if let Some(e) = l.start_events.iter().find(|e| l.end_events.contains(e)) {
            return Err(invalid(
                "lifecycle.end_events",
                format!("{e:?} is also a start event; an event can only start or end"),
            ));
        }
        let a = &self.activation;
        if a.required_events.len() > 64 {
            return Err(invalid("activation.required_events", "at most 64 names"));
        }
        for (n, e) in a.required_events.iter().enumerate() {
            if a.required_events[..n].contains(e) {
                return Err(invalid(
                    "activation.required_events",
                    format!("{e:?} is listed twice"),
                ));
            }
            if l.start_events.contains(e) || l.end_events.contains(e) {
                return Err(invalid(
                    "activation.required_events",
                    format!("{e:?} is a lifecycle event, which never counts as activity"),
                ));
            }
        }
        let na = &self.rules.not_activated;
        if na.deadlines.len() > 16 {
            return Err(invalid(
                "rules.not_activated.deadlines",
                "at most 16 deadlines",
            ));
        }
        for (n, d) in na.deadlines.iter().enumerate() {
            if d.after_days == 0 {
                return Err(invalid(
                    "rules.not_activated.deadlines",
                    "after_days must be at least 1",
                ));
            }
            if n > 0 && d.after_days <= na.deadlines[n - 1].after_days {
                return Err(invalid(
                    "rules.not_activated.deadlines",
                    "list deadlines in strictly increasing after_days order",
                ));
            }
        }
        if self.rules.inactive.after_days == 0 {
            return Err(invalid("rules.inactive.after_days", "must be at least 1"));
        }
        let d = &self.rules.activity_drop;
        if d.recent_days == 0 {
            return Err(invalid(
                "rules.activity_drop.recent_days",
                "must be at least 1",
            ));
        }
        if d.baseline_days < 2 {
            return Err(invalid(
                "rules.activity_drop.baseline_days",
                "must be at least 2 (a sample variance needs two days)",
            ));
        }
        if d.recent_days + d.baseline_days > 400 {
            return Err(invalid(
                "rules.activity_drop.baseline_days",
                "recent_days + baseline_days must be at most 400",
            ));
        }
        if !(d.min_expected >= 0.0 && d.min_expected.is_finite()) {
            return Err(invalid(
                "rules.activity_drop.min_expected",
                "must be a number >= 0",
            ));
        }
        if !(d.min_drop > 0.0 && d.min_drop <= 1.0) {
            return Err(invalid(
                "rules.activity_drop.min_drop",
                "must be in (0, 1], e.g. 0.5",
            ));
        }
        if !(d.alpha > 0.0 && d.alpha < 1.0) {
            return Err(invalid(
                "rules.activity_drop.alpha",
                "must be in (0, 1), e.g. 0.001",
            ));
        }
        if !(d.recovery > 0.0 && d.recovery.is_finite()) {
            return Err(invalid(
                "rules.activity_drop.recovery",
                "must be > 0, e.g. 0.75",
            ));
        }
        let k = &self.kafka;
        for (option, v) in [
            ("kafka.brokers", &k.brokers),
            ("kafka.group_id", &k.group_id),
            ("kafka.input_topic", &k.input_topic),
            ("kafka.alerts_topic", &k.alerts_topic),
            ("kafka.dead_letter_topic", &k.dead_letter_topic),
        ] {
            if v.trim().is_empty() {
                return Err(invalid(option, "must not be empty"));
            }
        }
        if !self.server.listen.is_empty()
            && self.server.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "server.listen",
                "must be host:port, e.g. \"0.0.0.0:9464\", or empty",
            ));
        }
        if self.notify.max_silence.0 < crate::time::DAY {
            return Err(invalid("notify.max_silence", "must be at least 1d"));
        }
        if self.server.liveness_timeout.0 < 1000 {
            return Err(invalid("server.liveness_timeout", "must be at least 1s"));
        }
        self.validate_notify()?;
        if let Some(p) = self.priority.problem() {
            return Err(invalid("priority", p));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", "must be \"text\" or \"json\""));
        }
        if !matches!(k.start_from.as_str(), "earliest" | "latest") {
            return Err(invalid(
                "kafka.start_from",
                "must be \"earliest\" or \"latest\"",
            ));
        }
        if k.checkpoint_interval.0 < 10 {
            return Err(invalid(
                "kafka.checkpoint_interval",
                "must be at least 10ms",
            ));
        }
        if k.stream_threads > 64 {
            return Err(invalid(
                "kafka.stream_threads",
                "must be at most 64 (0: one per CPU)",
            ));
        }
        if k.transaction_timeout.0 < 1000 {
            return Err(invalid("kafka.transaction_timeout", "must be at least 1s"));
        }
        for key in k.client.keys().chain(k.client_env.keys()) {
            if matches!(
                key.as_str(),
                "group.id"
                    | "transactional.id"
                    | "bootstrap.servers"
                    | "enable.auto.commit"
                    | "isolation.level"
            ) {
                return Err(invalid(
                    "kafka.client",
                    format!("{key:?} is set by churnwatch itself; use the kafka.* options instead"),
                ));
            }
        }
        if let Some(key) = k.client.keys().find(|key| is_secret_setting(key)) {
            return Err(invalid(
                "kafka.client",
                format!(
                    "{key:?} is a secret: put the name of an environment variable holding it in [kafka.client_env] instead (e.g. \"{key}\" = \"KAFKA_SECRET\")"
                ),
            ));
        }
        if d.recovery <= 1.0 - d.min_drop {
            return Err(invalid(
                "rules.activity_drop.recovery",
                format!(
                    "must be above 1 - min_drop = {}, or an alert could resolve on the day it fires",
                    1.0 - d.min_drop
                ),
            ));
        }
        Ok(())
    }
}

impl Config {
    fn validate_notify(&self) -> Result<(), ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn default_matches_documented_values() {
        let c = Config::default();
        assert_eq!(c.time.allowed_lateness.0, 600_000);
        assert_eq!(c.time.max_idle_advance.0, 6 * 3_600_000);
        assert_eq!(c.activation.min_active_days, 3);
        assert_eq!(c.rules.not_activated.deadlines.len(), 2);
        assert_eq!(
            c.rules.not_activated.deadlines[1].severity,
            Severity::Critical
        );
        assert_eq!(c.rules.inactive.after_days, 14);
        assert_eq!(c.rules.activity_drop.metric, DropMetric::Events);
        assert_eq!(c.rules.activity_drop.alpha, 0.001);
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = Config::from_toml_str("[rules.inactive]\nafter_days = 21\n", []).unwrap();
        assert_eq!(c.rules.inactive.after_days, 21);
        assert_eq!(c.rules.inactive.severity, Severity::Warning);
    }

    #[test]
    fn env_overrides_apply_and_parse_as_toml() {
        let c = Config::from_toml_str(
            "",
            env(&[
                ("CHURNWATCH_RULES__INACTIVE__AFTER_DAYS", "21"),
                ("CHURNWATCH_TIME__ALLOWED_LATENESS", "30m"),
                (
                    "CHURNWATCH_ACTIVATION__REQUIRED_EVENTS",
                    "[\"report.created\"]",
                ),
                ("CHURNWATCH_KAFKA__INPUT_TOPIC", "1234"),
                ("CHURNWATCH_CONFIG", "ignored: no double underscore"),
                ("OTHER__VAR", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.rules.inactive.after_days, 21);
        assert_eq!(c.time.allowed_lateness.0, 1_800_000);
        assert_eq!(c.activation.required_events, vec!["report.created"]);
        assert_eq!(c.kafka.input_topic, "1234");
    }

    #[test]
    fn input_and_engine_bounds_have_sane_defaults() {
        let c = Config::default();
        assert_eq!(c.input.max_future.0, DAY);
        assert_eq!(c.engine.max_accounts_per_partition, 1_000_000);
        assert!(!c.engine.known_accounts_only);
        let c = Config::from_toml_str(
            "",
            env(&[
                ("CHURNWATCH_INPUT__MAX_FUTURE", "2h"),
                ("CHURNWATCH_ENGINE__KNOWN_ACCOUNTS_ONLY", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(c.input.max_future.0, 2 * 3_600_000);
        assert!(c.engine.known_accounts_only);
    }

    #[test]
    fn unknown_options_are_named() {
        let e = Config::from_toml_str("[rules.inactive]\nafter_dayz = 3\n", []).unwrap_err();
        assert!(e.to_string().contains("after_dayz"), "{e}");
        let e = Config::from_toml_str("", env(&[("CHURNWATCH_TIME__LATENESS", "1m")])).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("lateness") && s.contains("CHURNWATCH_TIME__LATENESS"),
            "{s}"
        );
    }

    #[test]
    fn validation_names_option_and_fix() {
        let cases = [
            ("[input]\nts = \"timestamp\"\n", "input.ts"),
            ("[input]\nmax_event_bytes = 100000000\n", "16 MiB"),
            ("[input]\nmax_future = \"soon\"\n", "max_future"),
            (
                "[engine]\nmax_accounts_per_partition = 0\n",
                "engine.max_accounts_per_partition",
            ),
            ("[engine]\nknown_accounts = true\n", "known_accounts"),
            ("[time]\nallowed_lateness = \"10\"\n", "no unit"),
            (
                "[rules.activity_drop]\nbaseline_days = 1\n",
                "baseline_days",
            ),
            ("[rules.activity_drop]\nalpha = 1.5\n", "alpha"),
            ("[rules.activity_drop]\nrecovery = 0.4\n", "recovery"),
            (
                "[rules.inactive]\nafter_days = 0\n",
                "rules.inactive.after_days",
            ),
            (
                "[[rules.not_activated.deadlines]]\nafter_days = 9\nseverity = \"info\"\n\
                 [[rules.not_activated.deadlines]]\nafter_days = 9\nseverity = \"info\"\n",
                "increasing",
            ),
            (
                "[activation]\nrequired_events = [\"account.created\"]\n",
                "lifecycle event",
            ),
            (
                "[lifecycle]\nend_events = [\"account.created\"]\n",
                "also a start event",
            ),
            ("[rules.inactive]\nseverity = \"loud\"\n", "loud"),
            ("[notify]\ndigest_hour = 24\n", "notify.digest_hour"),
            (
                "[notify]\ndigest_severities = [\"critical\"]\n",
                "always go out at once",
            ),
            (
                "[notify]\ndefault_timezone = \"Europe/Atlantis\"\n",
                "notify.default_timezone",
            ),
            (
                "[notify]\nmax_concurrent_deliveries = 0\n",
                "notify.max_concurrent_deliveries",
            ),
        ];
        for (text, needle) in cases {
            let e = Config::from_toml_str(text, []).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?} gave {e:?}, wanted {needle:?}");
        }
    }
}
