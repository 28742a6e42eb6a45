//! Validation of every option's range and of the relations between options (the
//! notifier's own checks are in `notify.rs`). Each error names the option and the fix.

use super::notify::is_secret_setting;
use super::*;
use crate::time::DAY;

impl Config {
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
        for (option, names) in [
            ("lifecycle.start_events", &l.start_events),
            ("lifecycle.end_events", &l.end_events),
        ] {
            if names.iter().any(|e| e.is_empty()) {
                return Err(invalid(option, "event names must not be empty"));
            }
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
        self.server.auth.validate()?;
        self.server.tls.validate()?;
        self.validate_notify()?;
        if let Some(p) = self.priority.problem() {
            return Err(invalid("priority", p));
        }
        if let Some(p) = self.inbox.problem() {
            return Err(invalid("inbox.history_len", p));
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
                    | "group.instance.id"
                    | "group.protocol"
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
        if k.group_protocol == super::GroupProtocol::Consumer {
            // librdkafka refuses these with group.protocol=consumer (KIP-848 makes them
            // broker settings): say so before any client is created.
            if let Some(key) = k.client.keys().chain(k.client_env.keys()).find(|key| {
                matches!(
                    key.as_str(),
                    "session.timeout.ms"
                        | "heartbeat.interval.ms"
                        | "partition.assignment.strategy"
                        | "group.protocol.type"
                )
            }) {
                return Err(invalid(
                    "kafka.client",
                    format!(
                        "{key:?} does not apply with kafka.group_protocol = \"consumer\" (KIP-848): \
                         the broker's group.consumer.* settings replace it"
                    ),
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
