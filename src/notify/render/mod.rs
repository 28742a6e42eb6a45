//! What a CSM receives, built from alert records (with their `account` metadata): the
//! words shared by every channel live here (headlines, evidence in plain English,
//! ordering by importance, the summary of what did not fit); each channel has its own
//! file (`slack`, `email`, `webhook`), `escape` makes strings safe for where they go
//! and `limits` holds the services' documented limits.

mod email;
pub mod escape;
pub mod limits;
mod slack;
mod webhook;

pub use email::email;
pub use slack::{slack, SlackOptions};
pub use webhook::{webhook, webhook_parts, WebhookPart};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::priority::PriorityConfig;

/// One notification: a batch of alert records for one receiver and one owner.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Notification {
    pub receiver: String,
    /// The owner's email, or empty for accounts with no owner.
    pub owner: String,
    /// The owner's chat handle, if known.
    pub owner_chat: Option<String>,
    /// Alert records, in the order they arrived.
    pub alerts: Vec<Value>,
    /// A daily digest (the warnings held since the last one) rather than a batch.
    #[serde(default)]
    pub digest: bool,
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// `1 account`, `2 accounts`.
pub fn count(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

fn is_firing(a: &Value) -> bool {
    s(a, "status") == "firing"
}

impl Notification {
    /// Deterministic key of this batch: the same alerts and statuses give the same key,
    /// so a receiver can drop a repeated delivery.
    pub fn idempotency_key(&self) -> String {
        let mut parts: Vec<String> = self
            .alerts
            .iter()
            .map(|a| format!("{}:{}", s(a, "id"), s(a, "status")))
            .collect();
        parts.sort();
        let digest = Sha256::digest(format!("{}\n{}", self.receiver, parts.join("\n")).as_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// Distinct accounts with a firing alert, and resolved alerts.
    fn tally(&self) -> (usize, usize) {
        let mut at_risk: Vec<&str> = self
            .alerts
            .iter()
            .filter(|a| is_firing(a))
            .map(|a| s(a, "account_id"))
            .collect();
        at_risk.sort_unstable();
        at_risk.dedup();
        let resolved = self.alerts.iter().filter(|a| !is_firing(a)).count();
        (at_risk.len(), resolved)
    }

    /// The heading of a digest: "Daily digest: 3 accounts at risk, 1 resolved".
    pub fn digest_heading(&self) -> String {
        let (at_risk, resolved) = self.tally();
        let mut h = format!(
            "Daily digest: {} at risk",
            count(at_risk, "account", "accounts")
        );
        if resolved > 0 {
            h.push_str(&format!(", {resolved} resolved"));
        }
        h
    }

    /// The opening line, fitted to the batch: "Acme needs a look", "3 of your accounts
    /// need a look, 1 risk is over".
    pub fn opening(&self) -> String {
        let (at_risk, resolved) = self.tally();
        let mut parts = Vec::new();
        match (at_risk, self.owner.is_empty()) {
            (0, _) => {}
            (1, false) => parts.push("1 of your accounts needs a look".to_string()),
            (n, false) => parts.push(format!("{n} of your accounts need a look")),
            (1, true) => parts.push("1 account needs a look".to_string()),
            (n, true) => parts.push(format!("{n} accounts need a look")),
        }
        match resolved {
            0 => {}
            1 => parts.push("1 risk is over".to_string()),
            n => parts.push(format!("{n} risks are over")),
        }
        parts.join(", ")
    }

    /// A one-line subject, without control characters, at most
    /// [`limits::EMAIL_MAX_SUBJECT`] characters.
    pub fn subject(&self) -> String {
        escape::cut(&self.full_subject(), limits::EMAIL_MAX_SUBJECT)
    }

    /// The subject before it is cut to an email subject's length.
    pub fn full_subject(&self) -> String {
        let full = if self.digest {
            format!("[churnwatch] {}", self.digest_heading())
        } else if self.alerts.len() == 1 {
            let a = &self.alerts[0];
            let verb = if is_firing(a) { "" } else { "Resolved: " };
            format!("[churnwatch] {verb}{}: {}", account_name(a), headline(a))
        } else {
            let firing = self.alerts.iter().filter(|a| is_firing(a)).count();
            let resolved = self.alerts.len() - firing;
            let ordered = self.ordered(&PriorityConfig::default());
            let mut accounts: Vec<&str> = Vec::new();
            for a in &ordered {
                let name = account_name(a);
                if !accounts.contains(&name) {
                    accounts.push(name);
                }
            }
            let shown: Vec<String> = accounts
                .iter()
                .take(3)
                .map(|n| escape::cut(n, 24))
                .collect();
            let more = accounts.len().saturating_sub(shown.len());
            format!(
                "[churnwatch] {}: {}, {} resolved ({}{})",
                count(accounts.len(), "account", "accounts"),
                count(firing, "new risk", "new risks"),
                resolved,
                shown.join(", "),
                if more > 0 {
                    format!(", +{more}")
                } else {
                    String::new()
                }
            )
        };
        escape::plain(&full)
    }

    /// The alerts, most important first: firing before resolved, then by priority score
    /// (`crate::priority`: severity, revenue, days to renewal as of the alert), then in
    /// arrival order.
    pub fn ordered(&self, p: &PriorityConfig) -> Vec<&Value> {
        let mut v: Vec<(f64, &Value)> = self
            .alerts
            .iter()
            .map(|a| (p.alert_score_at_event(a), a))
            .collect();
        // Stable: equal scores keep their arrival order; firing before resolved even
        // with weights of 0.
        v.sort_by(|(sa, a), (sb, b)| {
            is_firing(b)
                .cmp(&is_firing(a))
                .then_with(|| sb.total_cmp(sa))
        });
        v.into_iter().map(|(_, a)| a).collect()
    }
}

/// The alerts of a batch that were not shown in full, counted for one summary line:
/// "and 37 more: 21 not activated, 9 gone dark, 7 dropped sharply".
pub struct Overflow<'a> {
    pub hidden: Vec<&'a Value>,
}

impl Overflow<'_> {
    /// The summary line in plain words (no markup), or `None` when nothing is hidden.
    pub fn line(&self) -> Option<String> {
        if self.hidden.is_empty() {
            return None;
        }
        let mut kinds: Vec<(&str, usize)> = Vec::new();
        for a in &self.hidden {
            let label = if is_firing(a) {
                match s(a, "kind") {
                    "not_activated" => "not activated",
                    "inactive" => "gone dark",
                    "activity_drop" => "dropped sharply",
                    _ => "other",
                }
            } else {
                "resolved"
            };
            match kinds.iter_mut().find(|(k, _)| *k == label) {
                Some((_, n)) => *n += 1,
                None => kinds.push((label, 1)),
            }
        }
        kinds.sort_by_key(|&(k, n)| (k == "resolved", std::cmp::Reverse(n)));
        let parts: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        Some(format!(
            "and {} more: {}",
            self.hidden.len(),
            parts.join(", ")
        ))
    }
}

fn account_name(a: &Value) -> &str {
    a.get("account")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| s(a, "account_id"))
}

/// The account's name (else its id) as shown to a person: cut to
/// [`limits::MAX_SHOWN_FIELD`] characters, control characters removed.
pub fn shown_name(a: &Value) -> String {
    escape::cut(&escape::plain(account_name(a)), limits::MAX_SHOWN_FIELD)
}

/// A short headline per kind.
pub fn headline(a: &Value) -> String {
    let resolved = s(a, "status") == "resolved";
    match (s(a, "kind"), resolved) {
        ("not_activated", false) => "not activated yet".into(),
        ("inactive", false) => "went dark".into(),
        ("activity_drop", false) => "activity dropped sharply".into(),
        (kind, true) => format!(
            "{} risk over",
            escape::cut(&escape::plain(kind), 40).replace('_', " ")
        ),
        (kind, false) => escape::cut(&escape::plain(kind), 40).replace('_', " "),
    }
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// `1 day`, `2.5 days`.
fn quantity(x: f64, singular: &str, plural: &str) -> String {
    format!(
        "{} {}",
        fmt_num(x),
        if x == 1.0 { singular } else { plural }
    )
}

/// The evidence in plain words (no markup; escape for where it goes).
pub fn plain_evidence(a: &Value) -> String {
    let e = a.get("evidence").cloned().unwrap_or(Value::Null);
    let num = |k: &str| e.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let date = |k: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .map(|t| escape::plain(t.get(..10).unwrap_or("")))
            .unwrap_or_default()
    };
    let text = if s(a, "status") == "resolved" {
        match s(&e, "reason") {
            "activated" => "The account activated.".into(),
            "activity_resumed" => "Activity resumed.".into(),
            "recovered" => "Activity is back near its usual level.".into(),
            "churned" => "The subscription ended, so this alert is closed.".into(),
            other => format!("Resolved ({}).", escape::cut(other, 40)),
        }
    } else {
        match s(a, "kind") {
            "not_activated" => {
                let missing: Vec<&str> = e
                    .get("missing_events")
                    .and_then(Value::as_array)
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut t = format!(
                    "Started {}, {} ago: active on {}, {}, {} so far.",
                    date("start"),
                    quantity(num("after_days"), "day", "days"),
                    quantity(num("active_days"), "day", "days"),
                    quantity(num("active_users"), "user", "users"),
                    quantity(num("events"), "event", "events"),
                );
                if !missing.is_empty() {
                    let shown: Vec<String> = missing
                        .iter()
                        .take(limits::MAX_SHOWN_MISSING_EVENTS)
                        .map(|m| escape::cut(m, 60))
                        .collect();
                    let more = missing.len() - shown.len();
                    t.push_str(&format!(" Never used: {}", shown.join(", ")));
                    if more > 0 {
                        t.push_str(&format!(" and {more} more"));
                    }
                    t.push('.');
                }
                t
            }
            "inactive" => format!(
                "No activity since {} ({}).",
                date("last_activity"),
                quantity(num("idle_days"), "day", "days")
            ),
            "activity_drop" => format!(
                "{} in the last {} against {} expected from the {} before: {:.0}% lower \
                 (p = {:.1e}, {} model).",
                fmt_num(num("observed")),
                quantity(num("recent_days"), "day", "days"),
                fmt_num(num("expected")),
                quantity(num("baseline_days"), "day", "days"),
                num("drop_pct") * 100.0,
                num("p_value"),
                escape::cut(s(&e, "model"), 40).replace('_', " "),
            ),
            _ => escape::cut(s(a, "summary"), 500),
        }
    };
    escape::plain(&text)
}

/// Where the account lives in the CRM: its metadata's `crm_url` if that is a safe
/// `https:` link, else the template with the percent-encoded id.
pub fn crm_link(a: &Value, template: &str) -> Option<String> {
    if let Some(u) = a
        .get("account")
        .and_then(|m| m.get("crm_url"))
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    {
        if let Some(safe) = escape::safe_link(u) {
            return Some(safe);
        }
    }
    escape::link_from_template(template, s(a, "account_id"))
}

/// "growth, $1,250 MRR" (plain, cut to a sane length).
fn account_facts(a: &Value) -> String {
    let m = a.get("account");
    let plan = m
        .and_then(|m| m.get("plan"))
        .and_then(Value::as_str)
        .map(|p| escape::cut(&escape::plain(p), 40));
    let mrr = m
        .and_then(|m| m.get("mrr"))
        .and_then(Value::as_f64)
        .filter(|x| x.is_finite());
    match (plan, mrr) {
        (Some(p), Some(r)) => format!("{p}, {} MRR", fmt_money(r)),
        (Some(p), None) => p,
        (None, Some(r)) => format!("{} MRR", fmt_money(r)),
        (None, None) => String::new(),
    }
}

fn fmt_money(x: f64) -> String {
    let whole = x.round().clamp(-1e15, 1e15) as i64;
    let digits = whole.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{}${out}", if whole < 0 { "-" } else { "" })
}

/// The alert id, status, severity and time, as one plain line.
fn id_line(a: &Value) -> String {
    escape::plain(&format!(
        "{} · {} · {} · {}",
        escape::cut(s(a, "id"), 300),
        escape::cut(s(a, "status"), 20),
        escape::cut(s(a, "severity"), 20),
        escape::cut(s(a, "event_time"), 40)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn drop_alert() -> Value {
        json!({"id":"acme-42/activity_drop/2026-03-04","account_id":"acme-42","kind":"activity_drop",
               "status":"firing","severity":"warning","event_time":"2026-03-05T00:00:00.000Z",
               "summary":"Activity dropped 83% over the last 7 days (12 events vs 71.5 expected, p=2.1e-9)",
               "evidence":{"observed":12,"expected":71.5,"drop_pct":0.832,"p_value":2.1e-9,
                           "model":"negative_binomial","recent_days":7,"baseline_days":28},
               "account":{"name":"Acme <Corp>","owner_email":"ana@example.com","plan":"growth","mrr":1250.0}})
    }

    fn note(alerts: Vec<Value>) -> Notification {
        Notification {
            receiver: "csm".into(),
            owner: "ana@example.com".into(),
            owner_chat: Some("U024BE7LH".into()),
            alerts,
            digest: false,
        }
    }

    #[test]
    fn plain_words_for_each_kind() {
        assert_eq!(
            plain_evidence(&drop_alert()),
            "12 in the last 7 days against 71.5 expected from the 28 days before: 83% lower (p = 2.1e-9, negative binomial model)."
        );
        let na = json!({"kind":"not_activated","status":"firing","evidence":{"after_days":30,"start":"2026-01-05T08:00:00.000Z","active_days":2,"active_users":1,"events":5,"missing_events":["report.created"]}});
        assert_eq!(
            plain_evidence(&na),
            "Started 2026-01-05, 30 days ago: active on 2 days, 1 user, 5 events so far. Never used: report.created."
        );
        let ina = json!({"kind":"inactive","status":"firing","evidence":{"last_activity":"2026-03-01T10:00:00.000Z","idle_days":14}});
        assert_eq!(
            plain_evidence(&ina),
            "No activity since 2026-03-01 (14 days)."
        );
        let res =
            json!({"kind":"inactive","status":"resolved","evidence":{"reason":"activity_resumed"}});
        assert_eq!(plain_evidence(&res), "Activity resumed.");
    }

    #[test]
    fn slack_message_escapes_and_links() {
        let n = note(vec![drop_alert()]);
        let m = slack(
            &n,
            &SlackOptions {
                crm_template: "https://crm.example.com/a/{account_id}",
                inbox_url: "",
                mention_owner: true,
                priority: PriorityConfig::default(),
            },
        );
        let text = m.to_string();
        assert!(text.contains("<@U024BE7LH>"));
        assert!(
            text.contains("<https://crm.example.com/a/acme-42|Acme &lt;Corp&gt;>"),
            "{text}"
        );
        assert!(text.contains("growth, $1,250 MRR"));
        assert_eq!(m["blocks"][0]["type"], "header");
    }

    #[test]
    fn idempotency_key_depends_on_ids_and_statuses_only() {
        let a = note(vec![drop_alert()]);
        let mut b = a.clone();
        b.alerts[0]["emitted_at"] = json!("2026-03-05T00:10:00.000Z");
        assert_eq!(a.idempotency_key(), b.idempotency_key());
        let mut c = a.clone();
        c.alerts[0]["status"] = json!("resolved");
        assert_ne!(a.idempotency_key(), c.idempotency_key());
        assert_eq!(a.idempotency_key().len(), 32);
    }

    #[test]
    fn email_has_text_and_html() {
        let (subject, text, html) = email(
            &note(vec![drop_alert()]),
            "",
            "",
            &PriorityConfig::default(),
        );
        assert_eq!(
            subject,
            "[churnwatch] Acme <Corp>: activity dropped sharply"
        );
        assert!(text.contains("83% lower"));
        assert!(html.contains("Acme &lt;Corp&gt;") && !html.contains("<Corp>"));
    }

    #[test]
    fn digest_has_a_heading_and_each_alerts_evidence() {
        let mut other = drop_alert();
        other["id"] = json!("globex-7/inactive/2026-03-01");
        other["account_id"] = json!("globex-7");
        other["kind"] = json!("inactive");
        other["evidence"] = json!({"last_activity":"2026-03-01T10:00:00.000Z","idle_days":14});
        other["account"]["name"] = json!("Globex");
        let mut resolved = drop_alert();
        resolved["id"] = json!("initech-1/inactive/2026-02-01");
        resolved["account_id"] = json!("initech-1");
        resolved["kind"] = json!("inactive");
        resolved["status"] = json!("resolved");
        resolved["evidence"] = json!({"reason":"activity_resumed"});
        let mut n = note(vec![drop_alert(), other, resolved]);
        n.digest = true;
        assert_eq!(
            n.subject(),
            "[churnwatch] Daily digest: 2 accounts at risk, 1 resolved"
        );
        let (_, text, html) = email(&n, "", "", &PriorityConfig::default());
        assert!(
            text.starts_with("Daily digest: 2 accounts at risk, 1 resolved."),
            "{text}"
        );
        for needle in [
            "83% lower",
            "No activity since 2026-03-01 (14 days).",
            "Activity resumed.",
        ] {
            assert!(text.contains(needle) && html.contains(needle), "{needle}");
        }
        let m = slack(
            &n,
            &SlackOptions {
                mention_owner: true,
                ..Default::default()
            },
        );
        assert_eq!(
            m["blocks"][0]["text"]["text"],
            "Daily digest: 2 accounts at risk, 1 resolved"
        );
        assert!(m.to_string().contains("your daily digest"));
        assert_eq!(webhook(&n)["digest"], true);
        // Two alerts of one account count once.
        let mut same = drop_alert();
        same["id"] = json!("acme-42/inactive/2026-03-01");
        let mut n2 = note(vec![drop_alert(), same]);
        n2.digest = true;
        assert_eq!(n2.subject(), "[churnwatch] Daily digest: 1 account at risk");
    }
}
