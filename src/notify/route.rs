//! The routing tree: which receivers an alert goes to, from its kind, severity, status
//! and the account's metadata.

use crate::config::{MatchValue, RouteConfig};

/// Labels of one alert for routing.
pub trait Labels {
    fn label(&self, key: &str) -> Option<String>;
}

fn matches(route: &RouteConfig, labels: &dyn Labels) -> bool {
    route.matchers.iter().all(|(key, want)| {
        let have = labels.label(key);
        match want {
            MatchValue::One(v) if v == "*" => have.is_some_and(|h| !h.is_empty()),
            MatchValue::One(v) => have.as_deref() == Some(v.as_str()),
            MatchValue::Any(vs) => have.is_some_and(|h| vs.contains(&h)),
        }
    })
}

/// The receivers of an alert: the deepest matching routes, first match wins among
/// siblings unless a route says `continue`.
pub fn receivers(root: &RouteConfig, labels: &dyn Labels) -> Vec<String> {
    let mut out = Vec::new();
    walk(root, &root.receiver, labels, &mut out);
    out.dedup();
    out
}

fn walk(node: &RouteConfig, inherited: &str, labels: &dyn Labels, out: &mut Vec<String>) {
    let receiver = if node.receiver.is_empty() {
        inherited
    } else {
        &node.receiver
    };
    let mut matched = false;
    for child in &node.routes {
        if matches(child, labels) {
            matched = true;
            walk(child, receiver, labels, out);
            if !child.continue_matching {
                break;
            }
        }
    }
    if !matched && !receiver.is_empty() {
        out.push(receiver.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct L(BTreeMap<&'static str, &'static str>);
    impl Labels for L {
        fn label(&self, key: &str) -> Option<String> {
            self.0.get(key).map(|v| v.to_string())
        }
    }

    fn tree() -> RouteConfig {
        let cfg = crate::config::Config::from_toml_str(
            r#"
[[notify.receivers]]
name = "team"
type = "webhook"
url = "http://127.0.0.1:1/team"
[[notify.receivers]]
name = "csm"
type = "email"
smtp_host = "127.0.0.1"
from = "churnwatch@example.com"
[[notify.receivers]]
name = "leads"
type = "webhook"
url = "http://127.0.0.1:1/leads"
[notify.route]
receiver = "team"
[[notify.route.routes]]
match = { severity = "critical", plan = ["growth", "enterprise"] }
receiver = "leads"
continue = true
[[notify.route.routes]]
match = { owner = "*" }
receiver = "csm"
"#,
            [],
        )
        .unwrap();
        cfg.notify.route
    }

    #[test]
    fn routes_like_alertmanager() {
        let t = tree();
        let owned = L(BTreeMap::from([
            ("owner", "ana@example.com"),
            ("severity", "warning"),
            ("plan", "growth"),
        ]));
        assert_eq!(receivers(&t, &owned), ["csm"]);
        let unowned = L(BTreeMap::from([("severity", "warning")]));
        assert_eq!(receivers(&t, &unowned), ["team"]);
        let critical = L(BTreeMap::from([
            ("owner", "ana@example.com"),
            ("severity", "critical"),
            ("plan", "enterprise"),
        ]));
        assert_eq!(receivers(&t, &critical), ["leads", "csm"]);
        let critical_starter = L(BTreeMap::from([
            ("severity", "critical"),
            ("plan", "starter"),
        ]));
        assert_eq!(receivers(&t, &critical_starter), ["team"]);
    }

    #[test]
    fn config_errors_name_the_problem() {
        let bad = [
            ("[notify.route]\nreceiver = \"nobody\"\n", "not among notify.receivers"),
            (
                "[[notify.receivers]]\nname = \"x\"\ntype = \"pager\"\n[notify.route]\nreceiver = \"x\"\n",
                "use slack, webhook or email",
            ),
            (
                "[[notify.receivers]]\nname = \"s\"\ntype = \"slack\"\n[notify.route]\nreceiver = \"s\"\n",
                "url_env",
            ),
            (
                "[[notify.receivers]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"http://x\"\n",
                "default receiver",
            ),
            (
                "[[notify.receivers]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"http://x\"\n[notify.route]\nreceiver = \"w\"\n[[notify.route.routes]]\nmatch = { colour = \"red\" }\n",
                "cannot match on \"colour\"",
            ),
        ];
        for (text, needle) in bad {
            let e = crate::config::Config::from_toml_str(text, [])
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
