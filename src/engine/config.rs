//! The engine's view of the configuration, prepared for fast lookups: which event
//! names start or end a lifecycle, which count toward activation, and each rule's
//! settings (absent when the rule is disabled).

use std::sync::Arc;

use crate::config::{ActivityDropConfig, Config, Deadline, DropMetric, InactiveConfig};
use crate::time::Millis;

/// What an event name means to the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    Start,
    End,
    /// An activity event; `Some(i)` if it is the i-th required event.
    Activity(Option<u8>),
}

/// The engine's view of the config, prepared for fast lookups.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub allowed_lateness: Millis,
    pub start_on_first_event: bool,
    names: hashbrown::HashMap<Box<str>, Class>,
    pub required_events: Vec<String>,
    pub(super) required_mask: u64,
    pub min_active_days: usize,
    pub min_active_users: usize,
    pub min_events: u64,
    /// Empty when the rule is disabled.
    pub deadlines: Vec<Deadline>,
    pub inactive: Option<InactiveConfig>,
    pub drop: Option<ActivityDropConfig>,
    /// Most accounts a shard tracks (`engine.max_accounts_per_partition`).
    pub max_accounts: usize,
    /// Which new accounts may be tracked (`engine.known_accounts_only`); None: all.
    pub admit: Option<super::limits::Admit>,
}

impl EngineConfig {
    pub fn new(cfg: &Config) -> EngineConfig {
        let mut names = hashbrown::HashMap::new();
        for n in &cfg.lifecycle.start_events {
            names.insert(n.as_str().into(), Class::Start);
        }
        for n in &cfg.lifecycle.end_events {
            names.insert(n.as_str().into(), Class::End);
        }
        let req = &cfg.activation.required_events;
        for (i, n) in req.iter().enumerate() {
            names.insert(n.as_str().into(), Class::Activity(Some(i as u8)));
        }
        let rules = &cfg.rules;
        EngineConfig {
            allowed_lateness: cfg.time.allowed_lateness.0,
            start_on_first_event: cfg.lifecycle.start_on_first_event,
            names,
            required_events: req.clone(),
            required_mask: if req.len() >= 64 {
                u64::MAX
            } else {
                (1u64 << req.len()) - 1
            },
            min_active_days: cfg.activation.min_active_days as usize,
            min_active_users: cfg.activation.min_active_users as usize,
            min_events: cfg.activation.min_events,
            deadlines: if rules.not_activated.enabled {
                rules.not_activated.deadlines.clone()
            } else {
                Vec::new()
            },
            inactive: rules.inactive.enabled.then(|| rules.inactive.clone()),
            drop: rules
                .activity_drop
                .enabled
                .then(|| rules.activity_drop.clone()),
            max_accounts: cfg.engine.max_accounts_per_partition,
            admit: None,
        }
    }

    /// Tracks only the accounts for which `known` holds.
    pub fn with_admit(mut self, known: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.admit = Some(super::limits::Admit(Arc::new(known)));
        self
    }

    pub(super) fn classify(&self, name: &str) -> Class {
        self.names
            .get(name)
            .copied()
            .unwrap_or(Class::Activity(None))
    }

    pub(super) fn users_metric(&self) -> bool {
        matches!(&self.drop, Some(d) if d.metric == DropMetric::ActiveUsers)
    }
}
