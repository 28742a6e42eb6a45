//! `[inbox]`: the CSM inbox's read model and API inside `run` (`churnwatch serve`
//! runs them alone whatever this says).

use serde::Deserialize;

/// The inbox section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InboxConfig {
    /// Follow the changelog and alerts topics in `run` and serve the inbox API on
    /// `server.listen`.
    pub enabled: bool,
    /// Alert transitions kept per account (1 to 200).
    pub history_len: usize,
}

impl Default for InboxConfig {
    fn default() -> Self {
        InboxConfig {
            enabled: false,
            history_len: 20,
        }
    }
}

impl InboxConfig {
    /// Why the section cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        (!(1..=200).contains(&self.history_len))
            .then(|| format!("history_len {} is not from 1 to 200", self.history_len))
    }
}
