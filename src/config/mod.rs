//! Typed configuration: TOML file, `CHURNWATCH_*` environment overrides, validation.
//!
//! `Config::load` is what `main` calls; `Config::from_toml_str` with an explicit
//! environment is what tests call. Validation names the option and says how to fix it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer};

use crate::time::{format_duration, parse_duration, Millis};

mod actions;
mod auth;
mod inbox;
mod notify;
mod sections;
mod validate;

pub use actions::{EmailLinksConfig, SlackActionsConfig};
pub use auth::*;
pub use inbox::InboxConfig;
pub use notify::*;
pub use sections::*;

/// The default configuration, identical to `config/churnwatch.toml`.
pub const DEFAULT_TOML: &str = include_str!("../../config/churnwatch.toml");

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

pub(crate) fn invalid(option: &'static str, msg: impl Into<String>) -> ConfigError {
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
    /// The CSM inbox in `run`.
    #[serde(default)]
    pub inbox: InboxConfig,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::DAY;

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
