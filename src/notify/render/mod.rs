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

pub use email::{email, email_with_links, ActionLink};
pub use slack::{slack, SlackOptions};
pub use webhook::{webhook, webhook_parts, WebhookPart};

use sha2::{Digest, Sha256};

use crate::engine::{AlertKind, ResolveReason};
use crate::priority::PriorityConfig;
use crate::record::{AlertRecord, RecordEvidence};
use crate::time::{day_of, format_day, format_rfc3339};

/// One notification: a batch of alert records for one receiver and one owner.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Notification {
    pub receiver: String,
    /// The owner's email, or empty for accounts with no owner.
    pub owner: String,
    /// The owner's chat handle, if known.
    pub owner_chat: Option<String>,
    /// Alert records, in the order they arrived.
    pub alerts: Vec<AlertRecord>,
    /// A daily digest (the warnings held since the last one) rather than a batch.
    #[serde(default)]
    pub digest: bool,
}

/// `1 account`, `2 accounts`.
pub fn count(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

impl Notification {
    /// Deterministic key of this batch: the same alerts and statuses give the same key,
    /// so a receiver can drop a repeated delivery.
    pub fn idempotency_key(&self) -> String {
        let mut parts: Vec<String> = self
            .alerts
            .iter()
            .map(|a| format!("{}:{}", a.id, a.status.as_str()))
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
            .filter(|a| a.is_firing())
            .map(|a| a.account_id.as_str())
            .collect();
        at_risk.sort_unstable();
        at_risk.dedup();
        let resolved = self.alerts.iter().filter(|a| !a.is_firing()).count();
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
    /// [`limits::EMAIL_MAX_SUBJECT`] characters; the accounts it names are the most
    /// important by the `[priority]` weights `p`.
    pub fn subject(&self, p: &PriorityConfig) -> String {
        escape::cut(&self.full_subject(p), limits::EMAIL_MAX_SUBJECT)
    }

    /// The subject before it is cut to an email subject's length.
    pub fn full_subject(&self, p: &PriorityConfig) -> String {
        let full = if self.digest {
            format!("[churnwatch] {}", self.digest_heading())
        } else if self.alerts.len() == 1 {
            let a = &self.alerts[0];
            let verb = if a.is_firing() { "" } else { "Resolved: " };
            format!("[churnwatch] {verb}{}: {}", a.account_name(), headline(a))
        } else {
            let firing = self.alerts.iter().filter(|a| a.is_firing()).count();
            let resolved = self.alerts.len() - firing;
            let ordered = self.ordered(p);
            let mut accounts: Vec<&str> = Vec::new();
            for a in &ordered {
                let name = a.account_name();
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
    pub fn ordered(&self, p: &PriorityConfig) -> Vec<&AlertRecord> {
        let mut v: Vec<(f64, &AlertRecord)> = self
            .alerts
            .iter()
            .map(|a| (p.alert_score_at_event(a), a))
            .collect();
        // Stable: equal scores keep their arrival order; firing before resolved even
        // with weights of 0.
        v.sort_by(|(sa, a), (sb, b)| {
            b.is_firing()
                .cmp(&a.is_firing())
                .then_with(|| sb.total_cmp(sa))
        });
        v.into_iter().map(|(_, a)| a).collect()
    }
}

/// The alerts of a batch that were not shown in full, counted for one summary line:
/// "and 37 more: 21 not activated, 9 gone dark, 7 dropped sharply".
pub struct Overflow<'a> {
    pub hidden: Vec<&'a AlertRecord>,
}

impl Overflow<'_> {
    /// The summary line in plain words (no markup), or `None` when nothing is hidden.
    pub fn line(&self) -> Option<String> {
        if self.hidden.is_empty() {
            return None;
        }
        let mut kinds: Vec<(&str, usize)> = Vec::new();
        for a in &self.hidden {
            let label = if a.is_firing() {
                match a.kind {
                    AlertKind::NotActivated => "not activated",
                    AlertKind::Inactive => "gone dark",
                    AlertKind::ActivityDrop => "dropped sharply",
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

/// The account's name (else its id) as shown to a person: cut to
/// [`limits::MAX_SHOWN_FIELD`] characters, control characters removed.
pub fn shown_name(a: &AlertRecord) -> String {
    escape::cut(&escape::plain(a.account_name()), limits::MAX_SHOWN_FIELD)
}

/// A short headline per kind.
pub fn headline(a: &AlertRecord) -> String {
    match (a.kind, a.is_firing()) {
        (AlertKind::NotActivated, true) => "not activated yet".into(),
        (AlertKind::Inactive, true) => "went dark".into(),
        (AlertKind::ActivityDrop, true) => "activity dropped sharply".into(),
        (kind, false) => format!("{} risk over", kind.as_str().replace('_', " ")),
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
pub fn plain_evidence(a: &AlertRecord) -> String {
    let date = |t| format_day(day_of(t));
    let text = match &a.evidence {
        RecordEvidence::Resolved(r) => match r.reason {
            ResolveReason::Activated => "The account activated.".into(),
            ResolveReason::ActivityResumed => "Activity resumed.".into(),
            ResolveReason::Recovered => "Activity is back near its usual level.".into(),
            ResolveReason::Churned => "The subscription ended, so this alert is closed.".into(),
        },
        RecordEvidence::NotActivated(e) => {
            let mut t = format!(
                "Started {}, {} ago: active on {}, {}, {} so far.",
                date(e.start),
                quantity(e.after_days.into(), "day", "days"),
                quantity(e.active_days as f64, "day", "days"),
                quantity(e.active_users as f64, "user", "users"),
                quantity(e.events as f64, "event", "events"),
            );
            if !e.missing_events.is_empty() {
                let shown: Vec<String> = e
                    .missing_events
                    .iter()
                    .take(limits::MAX_SHOWN_MISSING_EVENTS)
                    .map(|m| escape::cut(m, 60))
                    .collect();
                let more = e.missing_events.len() - shown.len();
                t.push_str(&format!(" Never used: {}", shown.join(", ")));
                if more > 0 {
                    t.push_str(&format!(" and {more} more"));
                }
                t.push('.');
            }
            t
        }
        RecordEvidence::Inactive(e) => format!(
            "No activity since {} ({}).",
            date(e.last_activity),
            quantity(e.idle_days.into(), "day", "days")
        ),
        RecordEvidence::ActivityDrop(e) => format!(
            "{} in the last {} against {} expected from the {} before: {:.0}% lower \
             (p = {:.1e}, {} model).",
            fmt_num(e.observed as f64),
            quantity(e.recent_days.into(), "day", "days"),
            fmt_num(e.expected),
            quantity(e.baseline_days.into(), "day", "days"),
            e.drop_pct * 100.0,
            e.p_value,
            e.model.as_str().replace('_', " "),
        ),
    };
    escape::plain(&text)
}

/// Where the account lives in the CRM: its metadata's `crm_url` if that is a safe
/// `https:` link, else the template with the percent-encoded id.
pub fn crm_link(a: &AlertRecord, template: &str) -> Option<String> {
    if let Some(u) = a
        .account
        .as_ref()
        .and_then(|m| m.crm_url.as_deref())
        .filter(|u| !u.is_empty())
    {
        if let Some(safe) = escape::safe_link(u) {
            return Some(safe);
        }
    }
    escape::link_from_template(template, &a.account_id)
}

/// The account's page in the inbox, for a link on its name: `inbox_url`
/// (`notify.inbox_url`, our own config, so `http:` is allowed inside a cluster) without
/// a trailing `/inbox`, then [`crate::inbox::pages::account_path`] (the id
/// percent-encoded, so it cannot leave its path segment nor end a Slack link). `None`
/// when no inbox is configured or the URL is not an absolute http(s) URL without
/// credentials; its query and fragment are dropped.
pub fn inbox_account_link(inbox_url: &str, account_id: &str) -> Option<String> {
    Some(
        format!(
            "{}{}",
            inbox_base(inbox_url)?,
            crate::inbox::pages::account_path(account_id)
        )
        .replace('|', "%7C"),
    )
}

/// Where the inbox's paths (`/inbox/...`) start: `notify.inbox_url`'s origin and path
/// without a trailing `/inbox`. `None` as for [`inbox_account_link`].
pub fn inbox_base(inbox_url: &str) -> Option<String> {
    let raw = inbox_url.trim();
    if raw.is_empty() {
        return None;
    }
    let u = url::Url::parse(raw).ok()?;
    let ok = matches!(u.scheme(), "http" | "https")
        && u.host_str().is_some_and(|h| !h.is_empty())
        && u.username().is_empty()
        && u.password().is_none();
    if !ok {
        return None;
    }
    let path = u.path().trim_end_matches('/');
    let path = path.strip_suffix("/inbox").unwrap_or(path);
    Some(format!("{}{path}", u.origin().ascii_serialization()))
}

/// "growth, $1,250 MRR" (plain, cut to a sane length).
fn account_facts(a: &AlertRecord) -> String {
    let m = a.account.as_ref();
    let plan = m
        .and_then(|m| m.plan.as_deref())
        .map(|p| escape::cut(&escape::plain(p), 40));
    let mrr = m.and_then(|m| m.mrr).filter(|x| x.is_finite());
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
fn id_line(a: &AlertRecord) -> String {
    escape::plain(&format!(
        "{} · {} · {} · {}",
        escape::cut(&a.id, 300),
        a.status.as_str(),
        a.severity.as_str(),
        format_rfc3339(a.event_time)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A record: the fields of `v` over those of Acme's activity drop.
    fn rec(v: serde_json::Value) -> AlertRecord {
        let mut r = drop_json();
        for (k, x) in v.as_object().unwrap() {
            r[k] = x.clone();
        }
        serde_json::from_value(r).unwrap()
    }

    fn drop_alert() -> AlertRecord {
        rec(json!({}))
    }

    fn drop_json() -> serde_json::Value {
        json!({"id":"acme-42/activity_drop/2026-03-04","account_id":"acme-42","kind":"activity_drop",
               "status":"firing","severity":"warning","event_time":"2026-03-05T00:00:00.000Z",
               "emitted_at":"2026-03-05T00:00:01.000Z",
               "summary":"Activity dropped 83% over the last 7 days (12 events vs 71.5 expected, p=2.1e-9)",
               "evidence":{"observed":12,"expected":71.5,"drop_pct":0.832,"p_value":2.1e-9,
                           "model":"negative_binomial","recent_days":7,"baseline_days":28},
               "account":{"name":"Acme <Corp>","owner_email":"ana@example.com","plan":"growth","mrr":1250.0}})
    }

    fn note(alerts: Vec<AlertRecord>) -> Notification {
        Notification {
            receiver: "csm".into(),
            owner: "ana@example.com".into(),
            owner_chat: Some("U024BE7LH".into()),
            alerts,
            digest: false,
        }
    }

    #[test]
    fn inbox_links_keep_the_id_in_its_segment() {
        for base in [
            "https://cw.example",
            "https://cw.example/",
            "https://cw.example/inbox",
            "https://cw.example/inbox/?x=1#y",
        ] {
            assert_eq!(
                inbox_account_link(base, "a/../b?c#d|e>").as_deref(),
                Some("https://cw.example/inbox/accounts/a%2F..%2Fb%3Fc%23d%7Ce%3E"),
                "{base}"
            );
        }
        assert_eq!(
            inbox_account_link("http://10.0.0.5:8080/cw/inbox", "x").as_deref(),
            Some("http://10.0.0.5:8080/cw/inbox/accounts/x")
        );
        for bad in [
            "",
            "javascript:alert(1)",
            "https://u:p@cw.example",
            "/inbox",
        ] {
            assert_eq!(inbox_account_link(bad, "x"), None, "{bad}");
        }
    }

    #[test]
    fn plain_words_for_each_kind() {
        assert_eq!(
            plain_evidence(&drop_alert()),
            "12 in the last 7 days against 71.5 expected from the 28 days before: 83% lower (p = 2.1e-9, negative binomial model)."
        );
        let na = rec(
            json!({"kind":"not_activated","status":"firing","evidence":{"after_days":30,"start":"2026-01-05T08:00:00.000Z","active_days":2,"active_users":1,"events":5,"missing_events":["report.created"]}}),
        );
        assert_eq!(
            plain_evidence(&na),
            "Started 2026-01-05, 30 days ago: active on 2 days, 1 user, 5 events so far. Never used: report.created."
        );
        let ina = rec(
            json!({"kind":"inactive","evidence":{"last_activity":"2026-03-01T10:00:00.000Z","idle_days":14}}),
        );
        assert_eq!(
            plain_evidence(&ina),
            "No activity since 2026-03-01 (14 days)."
        );
        let res = rec(
            json!({"kind":"inactive","status":"resolved","evidence":{"reason":"activity_resumed"}}),
        );
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
                buttons: false,
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
        b.alerts[0].emitted_at += 600_000;
        assert_eq!(a.idempotency_key(), b.idempotency_key());
        let mut c = a.clone();
        c.alerts[0].status = crate::engine::Status::Resolved;
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
        let other = rec(
            json!({"id": "globex-7/inactive/2026-03-01", "account_id": "globex-7",
            "kind": "inactive", "evidence": {"last_activity":"2026-03-01T10:00:00.000Z","idle_days":14},
            "account": {"name": "Globex", "owner_email": "ana@example.com"}}),
        );
        let resolved = rec(
            json!({"id": "initech-1/inactive/2026-02-01", "account_id": "initech-1",
            "kind": "inactive", "status": "resolved", "evidence": {"reason":"activity_resumed"}}),
        );
        let mut n = note(vec![drop_alert(), other, resolved]);
        n.digest = true;
        assert_eq!(
            n.subject(&PriorityConfig::default()),
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
        same.id = "acme-42/inactive/2026-03-01".into();
        let mut n2 = note(vec![drop_alert(), same]);
        n2.digest = true;
        assert_eq!(
            n2.subject(&PriorityConfig::default()),
            "[churnwatch] Daily digest: 1 account at risk"
        );
    }

    #[test]
    fn the_subject_names_accounts_in_the_configured_priority_order() {
        let mut critical = rec(
            json!({"id": "globex-7/inactive/1", "account_id": "globex-7",
            "kind": "inactive", "severity": "critical",
            "evidence": {"last_activity":"2026-03-01T10:00:00.000Z","idle_days":14},
            "account": {"name": "Globex"}}),
        );
        let n = note(vec![drop_alert(), critical.clone()]);
        let default = PriorityConfig::default();
        assert!(
            n.subject(&default).ends_with("(Globex, Acme <Corp>)"),
            "{}",
            n.subject(&default)
        );
        let warnings_first = PriorityConfig {
            critical_weight: 1.0,
            warning_weight: 5.0,
            ..default
        };
        assert!(n
            .subject(&warnings_first)
            .ends_with("(Acme <Corp>, Globex)"));
        let (subject, _, _) = email(&n, "", "", &warnings_first);
        assert_eq!(subject, n.subject(&warnings_first));
        critical.severity = crate::config::Severity::Warning;
        let even = note(vec![drop_alert(), critical]);
        assert!(even.subject(&default).ends_with("(Acme <Corp>, Globex)"));
    }
}
