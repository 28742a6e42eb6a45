//! `[notify.slack]` and `[notify.email_links]`: acting on an alert from a Slack
//! message's buttons and from an email's one-click links (`actions::slack`,
//! `actions::email_link`). Both are off by default; their secrets come from the
//! environment, named here, never written in the file.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{normalize_email, Duration};
use crate::time::DAY;

/// Slack interactivity.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SlackActionsConfig {
    /// Slack messages carry Acknowledge / Snooze 7 days / Not a risk buttons, and
    /// `POST /api/v1/slack/interactions` is served (the app's Request URL points
    /// there). Off: no buttons, no endpoint.
    pub interactions: bool,
    /// Environment variable holding the Slack app's signing secret.
    pub signing_secret_env: String,
    /// Slack member id (`U024BE7LH`) -> the person's email, for people whose id is not
    /// the `owner_chat` of the account they act on (leads, admins, colleagues).
    pub users: BTreeMap<String, String>,
    /// Tests only: also accept a `response_url` on a loopback address over plain
    /// HTTP. In production a `response_url` must be `https://hooks.slack.com/...`.
    pub allow_loopback_response_url: bool,
}

impl Default for SlackActionsConfig {
    fn default() -> Self {
        SlackActionsConfig {
            interactions: false,
            signing_secret_env: "CHURNWATCH_SLACK_SIGNING_SECRET".into(),
            users: BTreeMap::new(),
            allow_loopback_response_url: false,
        }
    }
}

/// One-click links in emails.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EmailLinksConfig {
    /// Emails carry Acknowledge and Snooze 7 days links (under `notify.inbox_url`,
    /// which must then be set) and `/inbox/actions/email` is served.
    pub enabled: bool,
    /// Environment variable holding the links' HMAC key (at least 32 bytes).
    pub secret_env: String,
    /// How long a link stays valid.
    pub ttl: Duration,
}

impl Default for EmailLinksConfig {
    fn default() -> Self {
        EmailLinksConfig {
            enabled: false,
            secret_env: "CHURNWATCH_EMAIL_LINK_SECRET".into(),
            ttl: Duration(7 * DAY),
        }
    }
}

/// Why `[notify.slack]` or `[notify.email_links]` cannot be used: (option, message).
pub fn problem(
    slack: &SlackActionsConfig,
    links: &EmailLinksConfig,
    inbox_url: &str,
    max_silence: crate::time::Millis,
) -> Option<(&'static str, String)> {
    // Their Snooze is labelled "7 days"; a shorter horizon would cut it silently.
    if (slack.interactions || links.enabled) && max_silence < 7 * DAY {
        return Some((
            "notify.max_silence",
            "Slack's and the email links' Snooze lasts 7 days: make it at least 7d \
             while notify.slack.interactions or notify.email_links is on"
                .into(),
        ));
    }
    for (id, email) in &slack.users {
        let handle_ok = !id.is_empty()
            && id.len() <= 32
            && id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !handle_ok {
            return Some((
                "notify.slack.users",
                format!("{id:?} is not a Slack member id like U024BE7LH"),
            ));
        }
        if let Err(m) = normalize_email(email) {
            return Some(("notify.slack.users", format!("{id}: {m}")));
        }
    }
    if slack.interactions && slack.signing_secret_env.trim().is_empty() {
        return Some((
            "notify.slack.signing_secret_env",
            "name the environment variable that holds the Slack signing secret".into(),
        ));
    }
    if links.enabled {
        if links.secret_env.trim().is_empty() {
            return Some((
                "notify.email_links.secret_env",
                "name the environment variable that holds the links' key".into(),
            ));
        }
        if links.ttl.0 < 60_000 || links.ttl.0 > 30 * DAY {
            return Some((
                "notify.email_links.ttl",
                format!("{} is not from 1m to 30d", links.ttl),
            ));
        }
        if inbox_url.trim().is_empty() {
            return Some((
                "notify.email_links.enabled",
                "email links point under notify.inbox_url; set it".into(),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_sections_are_read_and_checked() {
        let d = Config::default();
        assert!(!d.notify.slack.interactions && !d.notify.email_links.enabled);
        let cfg = Config::from_toml_str(
            "[notify]\ninbox_url = \"https://cw.example/inbox\"\n\
             [notify.slack]\ninteractions = true\n[notify.slack.users]\nU024BE7LH = \"lee@example.com\"\n\
             [notify.email_links]\nenabled = true\nttl = \"3d\"",
            [],
        )
        .unwrap();
        assert_eq!(cfg.notify.slack.users["U024BE7LH"], "lee@example.com");
        assert_eq!(cfg.notify.email_links.ttl.0, 3 * crate::time::DAY);
        let env = [(
            "CHURNWATCH_NOTIFY__SLACK__INTERACTIONS".to_string(),
            "true".to_string(),
        )];
        assert!(
            Config::from_toml_str("", env)
                .unwrap()
                .notify
                .slack
                .interactions
        );
        for (toml, option) in [
            ("[notify.slack.users]\n\"<!channel>\" = \"a@b.c\"", "notify.slack.users"),
            ("[notify.slack.users]\nU1 = \"not an email\"", "notify.slack.users"),
            ("[notify.email_links]\nenabled = true", "notify.email_links.enabled"),
            (
                "[notify]\ninbox_url = \"https://x.example\"\n[notify.email_links]\nenabled = true\nttl = \"90d\"",
                "notify.email_links.ttl",
            ),
            (
                "[notify.slack]\ninteractions = true\nsigning_secret_env = \"\"",
                "notify.slack.signing_secret_env",
            ),
            (
                "[notify]\nmax_silence = \"3d\"\n[notify.slack]\ninteractions = true",
                "notify.max_silence",
            ),
        ] {
            let e = Config::from_toml_str(toml, []).unwrap_err().to_string();
            assert!(e.contains(option), "{toml}: {e}");
        }
        assert!(Config::from_toml_str("[notify.slack]\nbuttons = true", []).is_err());
    }
}
