//! What a CSM receives: Slack Block Kit messages, webhook JSON, and emails (plain text
//! and HTML), built from alert records (with their `account` metadata).

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

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
            .filter(|a| s(a, "status") == "firing")
            .map(|a| s(a, "account_id"))
            .collect();
        at_risk.sort_unstable();
        at_risk.dedup();
        let resolved = self
            .alerts
            .iter()
            .filter(|a| s(a, "status") != "firing")
            .count();
        (at_risk.len(), resolved)
    }

    /// The heading of a digest: "Daily digest: 3 accounts at risk, 1 resolved".
    pub fn digest_heading(&self) -> String {
        let (at_risk, resolved) = self.tally();
        let mut h = format!(
            "Daily digest: {at_risk} account{} at risk",
            if at_risk == 1 { "" } else { "s" }
        );
        if resolved > 0 {
            h.push_str(&format!(", {resolved} resolved"));
        }
        h
    }

    /// A one-line subject.
    pub fn subject(&self) -> String {
        if self.digest {
            return format!("[churnwatch] {}", self.digest_heading());
        }
        let firing = self
            .alerts
            .iter()
            .filter(|a| s(a, "status") == "firing")
            .count();
        let resolved = self.alerts.len() - firing;
        if self.alerts.len() == 1 {
            let a = &self.alerts[0];
            let verb = if firing == 1 { "" } else { "Resolved: " };
            return format!("[churnwatch] {verb}{}: {}", account_name(a), headline(a));
        }
        let mut accounts: Vec<&str> = self.alerts.iter().map(account_name).collect();
        accounts.sort_unstable();
        accounts.dedup();
        format!(
            "[churnwatch] {} accounts: {firing} new risks, {resolved} resolved ({})",
            accounts.len(),
            accounts
                .iter()
                .take(3)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn account_name(a: &Value) -> &str {
    a.get("account")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| s(a, "account_id"))
}

/// A short headline per kind.
pub fn headline(a: &Value) -> String {
    let resolved = s(a, "status") == "resolved";
    match (s(a, "kind"), resolved) {
        ("not_activated", false) => "not activated yet".into(),
        ("inactive", false) => "went dark".into(),
        ("activity_drop", false) => "activity dropped sharply".into(),
        (kind, true) => format!("{} risk over", kind.replace('_', " ")),
        (kind, false) => kind.replace('_', " "),
    }
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// The evidence in plain words.
pub fn plain_evidence(a: &Value) -> String {
    let e = a.get("evidence").cloned().unwrap_or(Value::Null);
    let num = |k: &str| e.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let date = |k: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .map(|t| t.get(..10).unwrap_or(t).to_string())
            .unwrap_or_default()
    };
    if s(a, "status") == "resolved" {
        return match s(&e, "reason") {
            "activated" => "The account activated.".into(),
            "activity_resumed" => "Activity resumed.".into(),
            "recovered" => "Activity is back near its usual level.".into(),
            "churned" => "The subscription ended, so this alert is closed.".into(),
            other => format!("Resolved ({other})."),
        };
    }
    match s(a, "kind") {
        "not_activated" => {
            let missing: Vec<&str> = e
                .get("missing_events")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut t = format!(
                "Started {}, {} days ago: active on {} days, {} users, {} events so far.",
                date("start"),
                fmt_num(num("after_days")),
                fmt_num(num("active_days")),
                fmt_num(num("active_users")),
                fmt_num(num("events")),
            );
            if !missing.is_empty() {
                t.push_str(&format!(" Never used: {}.", missing.join(", ")));
            }
            t
        }
        "inactive" => format!(
            "No activity since {} ({} days).",
            date("last_activity"),
            fmt_num(num("idle_days"))
        ),
        "activity_drop" => format!(
            "{} in the last {} days against {} expected from the {} days before: {:.0}% lower \
             (p = {:.1e}, {} model).",
            fmt_num(num("observed")),
            fmt_num(num("recent_days")),
            fmt_num(num("expected")),
            fmt_num(num("baseline_days")),
            num("drop_pct") * 100.0,
            num("p_value"),
            s(&e, "model").replace('_', " "),
        ),
        _ => s(a, "summary").to_string(),
    }
}

/// Where the account lives in the CRM.
pub fn crm_link(a: &Value, template: &str) -> Option<String> {
    if let Some(u) = a
        .get("account")
        .and_then(|m| m.get("crm_url"))
        .and_then(Value::as_str)
    {
        return Some(u.to_string());
    }
    (!template.is_empty()).then(|| template.replace("{account_id}", s(a, "account_id")))
}

fn account_facts(a: &Value) -> String {
    let m = a.get("account");
    let plan = m.and_then(|m| m.get("plan")).and_then(Value::as_str);
    let mrr = m.and_then(|m| m.get("mrr")).and_then(Value::as_f64);
    match (plan, mrr) {
        (Some(p), Some(r)) => format!("{p}, {} MRR", fmt_money(r)),
        (Some(p), None) => p.to_string(),
        (None, Some(r)) => format!("{} MRR", fmt_money(r)),
        (None, None) => String::new(),
    }
}

fn fmt_money(x: f64) -> String {
    let whole = x.round() as i64;
    let digits = whole.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("${}{out}", if whole < 0 { "-" } else { "" })
}

/// Slack's mrkdwn needs &, < and > escaped.
fn slack_escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn html_escape(t: &str) -> String {
    slack_escape(t).replace('"', "&quot;")
}

/// A Slack incoming-webhook payload (Block Kit), mentioning the owner if asked.
pub fn slack(n: &Notification, crm_template: &str, mention_owner: bool) -> Value {
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": n.subject().trim_start_matches("[churnwatch] ").chars().take(150).collect::<String>()}
    })];
    if let (true, Some(chat)) = (mention_owner, &n.owner_chat) {
        let text = if n.digest {
            format!(
                "<@{}> your daily digest of warnings since the last one:",
                slack_escape(chat)
            )
        } else {
            format!(
                "<@{}> one of your accounts needs a look:",
                slack_escape(chat)
            )
        };
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}));
    }
    for a in &n.alerts {
        let name = slack_escape(account_name(a));
        let title = match crm_link(a, crm_template) {
            Some(url) => format!("*<{}|{name}>*", slack_escape(&url)),
            None => format!("*{name}*"),
        };
        let facts = account_facts(a);
        let icon = if s(a, "status") == "resolved" {
            ":white_check_mark:"
        } else if s(a, "severity") == "critical" {
            ":rotating_light:"
        } else {
            ":warning:"
        };
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!(
                "{title}{}\n{icon} *{}*\n{}",
                if facts.is_empty() { String::new() } else { format!(" ({})", slack_escape(&facts)) },
                slack_escape(&headline(a)),
                slack_escape(&plain_evidence(a)),
            )}
        }));
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": slack_escape(&format!(
                "{} · {} · {} · {}", s(a, "id"), s(a, "status"), s(a, "severity"), s(a, "event_time")))}]
        }));
    }
    json!({"text": n.subject(), "blocks": blocks})
}

/// The generic webhook body.
pub fn webhook(n: &Notification) -> Value {
    json!({
        "version": "1",
        "receiver": n.receiver,
        "owner": n.owner,
        "idempotency_key": n.idempotency_key(),
        "digest": n.digest,
        "alerts": n.alerts,
    })
}

/// An email: (subject, plain text, HTML).
pub fn email(n: &Notification, crm_template: &str) -> (String, String, String) {
    let intro = if n.digest {
        format!(
            "{}. The warnings churnwatch found since the last digest:",
            n.digest_heading()
        )
    } else {
        "churnwatch found changes in your accounts:".to_string()
    };
    let mut text = format!("{intro}\n\n");
    let mut html = format!(
        "<html><body style=\"font-family:sans-serif\"><p>{}</p><ul>",
        html_escape(&intro)
    );
    for a in &n.alerts {
        let link = crm_link(a, crm_template);
        let facts = account_facts(a);
        text.push_str(&format!(
            "* {}{} - {} [{} {}]\n  {}\n  {}{}\n\n",
            account_name(a),
            if facts.is_empty() {
                String::new()
            } else {
                format!(" ({facts})")
            },
            headline(a),
            s(a, "severity"),
            s(a, "status"),
            plain_evidence(a),
            s(a, "id"),
            link.as_ref()
                .map(|l| format!("\n  {l}"))
                .unwrap_or_default(),
        ));
        let name = html_escape(account_name(a));
        html.push_str(&format!(
            "<li><p><b>{}</b>{} &mdash; {} <i>({} {})</i><br>{}<br><small>{}</small></p></li>",
            match &link {
                Some(l) => format!("<a href=\"{}\">{name}</a>", html_escape(l)),
                None => name,
            },
            if facts.is_empty() {
                String::new()
            } else {
                format!(" ({})", html_escape(&facts))
            },
            html_escape(&headline(a)),
            html_escape(s(a, "severity")),
            html_escape(s(a, "status")),
            html_escape(&plain_evidence(a)),
            html_escape(s(a, "id")),
        ));
    }
    text.push_str("-- churnwatch\n");
    html.push_str("</ul><p style=\"color:#888\">churnwatch</p></body></html>");
    (n.subject(), text, html)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "Started 2026-01-05, 30 days ago: active on 2 days, 1 users, 5 events so far. Never used: report.created."
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
        let m = slack(&n, "https://crm.example.com/a/{account_id}", true);
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
        let (subject, text, html) = email(&note(vec![drop_alert()]), "");
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
        let (_, text, html) = email(&n, "");
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
        let m = slack(&n, "", true);
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
