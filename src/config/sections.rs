//! The other sections of the config: input, engine limits, time, lifecycle,
//! activation, rules, Kafka, log and server.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Duration, Severity};

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
    /// Who may call the API and the inbox (`config/auth.rs`).
    #[serde(default)]
    pub auth: super::AuthConfig,
    /// HTTPS without a proxy (`config/auth.rs`).
    #[serde(default)]
    pub tls: super::TlsConfig,
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
    /// Static group membership (KIP-345): each stream thread joins as
    /// `<instance>-<thread>`, so a restarted instance takes its partitions back at once.
    pub static_membership: bool,
    /// Group protocol: the classic one, or KIP-848's `consumer` (brokers 4.0+).
    pub group_protocol: GroupProtocol,
    /// A graceful stop leaves the group (its partitions move at once: scale-in); off,
    /// a static member keeps them until it is back or its session times out.
    pub leave_group_on_stop: bool,
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

    /// The `group.instance.id` of this instance's stream thread `thread` (static
    /// membership): unique in the group, and the same after a restart.
    pub fn group_instance_id(&self, thread: usize) -> String {
        format!("{}-{thread}", self.instance())
    }

    /// The notifier's `group.instance.id` (static membership, in the notifier's own
    /// group `notify.group_id`, used when `instance_id` is set): `<instance>-notify`,
    /// the same after a restart.
    pub fn notifier_instance_id(&self) -> String {
        format!("{}-notify", self.instance())
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

/// The consumer group protocol (librdkafka's `group.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupProtocol {
    /// JoinGroup/SyncGroup; the assignment is computed by a member (cooperative-sticky).
    Classic,
    /// KIP-848: the broker assigns partitions; session and heartbeat are broker settings.
    Consumer,
}

impl GroupProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
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
