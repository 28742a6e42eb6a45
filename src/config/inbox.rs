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

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_inbox_section_is_read_and_checked() {
        let cfg = Config::from_toml_str("[inbox]\nenabled = true\nhistory_len = 5", []).unwrap();
        assert!(cfg.inbox.enabled);
        assert_eq!(cfg.inbox.history_len, 5);
        assert!(!Config::default().inbox.enabled);
        let env = [("CHURNWATCH_INBOX__ENABLED".to_string(), "true".to_string())];
        assert!(Config::from_toml_str("", env).unwrap().inbox.enabled);
        let e = Config::from_toml_str("[inbox]\nhistory_len = 0", [])
            .unwrap_err()
            .to_string();
        assert!(e.contains("inbox.history_len"), "{e}");
        assert!(Config::from_toml_str("[inbox]\nlimit = 3", []).is_err());
    }
}
