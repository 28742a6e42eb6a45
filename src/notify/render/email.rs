//! Emails: a subject, a plain-text part and an HTML part. At most
//! [`EMAIL_MAX_ALERTS`] alerts in full, most important first; the rest counted in one
//! closing paragraph. Every value is escaped for HTML; links from the CRM are `https:`
//! only. With an inbox (`notify.inbox_url`), each account's name links to its page
//! there and the CRM link follows it. With one-click links (`notify.email_links`),
//! each firing alert carries Acknowledge and Snooze 7 days links.

use super::escape;
use super::limits::EMAIL_MAX_ALERTS;
use super::{
    account_facts, crm_link, headline, id_line, inbox_account_link, plain_evidence, shown_name,
};
use super::{Notification, Overflow};
use crate::actions::ActionKind;
use crate::priority::PriorityConfig;

/// The one-click link that takes an action on an alert (`actions::email_link`), if
/// links are on.
pub type ActionLink<'a> = &'a dyn Fn(&str, ActionKind) -> Option<String>;

/// The one-click actions an email offers on each firing alert.
const LINKED: [(ActionKind, &str); 2] = [
    (ActionKind::Acknowledge, "Acknowledge"),
    (ActionKind::Snooze, "Snooze 7 days"),
];

/// An email for one notification: (subject, plain text, HTML).
pub fn email(
    n: &Notification,
    crm_template: &str,
    inbox_url: &str,
    priority: &PriorityConfig,
) -> (String, String, String) {
    email_with_links(n, crm_template, inbox_url, priority, None)
}

/// An email whose firing alerts carry one-click action links made by `links`.
pub fn email_with_links(
    n: &Notification,
    crm_template: &str,
    inbox_url: &str,
    priority: &PriorityConfig,
    links: Option<ActionLink>,
) -> (String, String, String) {
    let opening = n.opening();
    let intro = if n.digest {
        format!(
            "{}. The warnings churnwatch found since the last digest:",
            n.digest_heading()
        )
    } else {
        format!("{}:", capitalise(&opening))
    };
    let mut text = format!("{intro}\n\n");
    let mut html = format!(
        "<html><body style=\"font-family:sans-serif\"><p>{}</p><ul>",
        escape::html(&intro)
    );
    let ordered = n.ordered(priority);
    let shown = ordered.len().min(EMAIL_MAX_ALERTS);
    for a in &ordered[..shown] {
        let link = crm_link(a, crm_template);
        let page = inbox_account_link(inbox_url, &a.account_id);
        let facts = account_facts(a);
        let name = shown_name(a);
        text.push_str(&format!(
            "* {name}{} - {} [{} {}]\n  {}\n  {}{}{}\n\n",
            if facts.is_empty() {
                String::new()
            } else {
                format!(" ({facts})")
            },
            headline(a),
            a.severity.as_str(),
            a.status.as_str(),
            plain_evidence(a),
            id_line(a),
            page.as_ref()
                .map(|l| format!("\n  Inbox: {l}"))
                .unwrap_or_default(),
            link.as_ref()
                .map(|l| format!("\n  {}{l}", if page.is_some() { "CRM: " } else { "" }))
                .unwrap_or_default(),
        ));
        let actions: Vec<(&str, String)> = match links {
            Some(f) if a.is_firing() => LINKED
                .iter()
                .filter_map(|(k, label)| Some((*label, f(&a.id, *k)?)))
                .collect(),
            _ => Vec::new(),
        };
        for (label, url) in &actions {
            text.push_str(&format!("  {label}: {url}\n"));
        }
        if !actions.is_empty() {
            text.push('\n');
        }
        let name = escape::html(&name);
        let (named, crm_after) = match (&page, &link) {
            (Some(p), l) => (
                format!("<a href=\"{}\">{name}</a>", escape::html(p)),
                l.as_ref()
                    .map(|l| format!(" &middot; <a href=\"{}\">CRM</a>", escape::html(l)))
                    .unwrap_or_default(),
            ),
            (None, Some(l)) => (
                format!("<a href=\"{}\">{name}</a>", escape::html(l)),
                String::new(),
            ),
            (None, None) => (name, String::new()),
        };
        let action_html: String = actions
            .iter()
            .map(|(label, url)| {
                format!(
                    "<a href=\"{}\">{}</a>",
                    escape::html(url),
                    escape::html(label)
                )
            })
            .collect::<Vec<_>>()
            .join(" &middot; ");
        let action_html = if action_html.is_empty() {
            action_html
        } else {
            format!("<br>{action_html}")
        };
        html.push_str(&format!(
            "<li><p><b>{named}</b>{}{crm_after} &mdash; {}<br>{}<br><small>{}</small>{action_html}</p></li>",
            if facts.is_empty() {
                String::new()
            } else {
                format!(" ({})", escape::html(&facts))
            },
            escape::html(&headline(a)),
            escape::html(&plain_evidence(a)),
            escape::html(&id_line(a)),
        ));
    }
    html.push_str("</ul>");
    let overflow = Overflow {
        hidden: ordered[shown..].to_vec(),
    };
    if let Some(line) = overflow.line() {
        let inbox = escape::safe_link(inbox_url);
        text.push_str(&format!(
            "...{line}.{}\n\n",
            inbox
                .as_ref()
                .map(|u| format!(" See them all: {u}"))
                .unwrap_or_default()
        ));
        html.push_str(&format!(
            "<p>&hellip;{}.{}</p>",
            escape::html(&line),
            inbox
                .map(|u| format!(
                    " <a href=\"{}\">See them all in the inbox</a>",
                    escape::html(&u)
                ))
                .unwrap_or_default()
        ));
    }
    text.push_str("-- churnwatch\n");
    html.push_str("<p style=\"color:#888\">churnwatch</p></body></html>");
    (n.subject(priority), text, html)
}

fn capitalise(t: &str) -> String {
    let mut c = t.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::render::limits::EMAIL_MAX_SUBJECT;
    use crate::record::AlertRecord;
    use proptest::prelude::*;
    use serde_json::json;

    fn alert(i: usize, name: &str) -> AlertRecord {
        serde_json::from_value(json!({"id": format!("a{i}/inactive/2026-03-01"), "account_id": format!("a{i}"), "kind": "inactive",
               "status": "firing", "severity": "warning", "event_time": "2026-03-01T00:00:00.000Z",
               "emitted_at": "2026-03-01T00:00:01.000Z", "summary": "",
               "evidence": {"last_activity": "2026-02-15T00:00:00Z", "idle_days": 14},
               "account": {"name": name, "crm_url": "javascript:alert(document.cookie)"}}))
        .unwrap()
    }

    #[test]
    fn firing_alerts_carry_escaped_action_links_and_resolved_ones_none() {
        let mut resolved = alert(2, "Globex");
        resolved.status = serde_json::from_value(json!("resolved")).unwrap();
        let n = note(vec![alert(1, "Acme"), resolved]);
        let link = |id: &str, k: ActionKind| {
            Some(format!(
                "https://cw.example/inbox/actions/email?t={}&x=<{id}>",
                k.as_str()
            ))
        };
        let (_, text, html) = email_with_links(&n, "", "", &PriorityConfig::default(), Some(&link));
        assert!(text.contains(
            "  Acknowledge: https://cw.example/inbox/actions/email?t=acknowledge&x=<a1/inactive/2026-03-01>\n"
        ));
        assert!(text.contains("  Snooze 7 days: https://cw.example/inbox/actions/email?t=snooze"));
        assert!(
            !text.contains("<a2/inactive"),
            "no links on a resolved alert"
        );
        assert!(html.contains(
            "<a href=\"https://cw.example/inbox/actions/email?t=snooze&amp;x=&lt;a1/inactive/2026-03-01&gt;\">Snooze 7 days</a>"
        ));
        assert_eq!(html.matches("/actions/email").count(), 2);
        // Without links the email is as before.
        let (_, plain, _) = email(&n, "", "", &PriorityConfig::default());
        assert!(!plain.contains("Acknowledge"));
    }

    fn note(alerts: Vec<AlertRecord>) -> Notification {
        Notification {
            receiver: "mail".into(),
            owner: "ana@example.com".into(),
            owner_chat: None,
            alerts,
            digest: false,
        }
    }

    #[test]
    fn a_long_batch_is_summarised_and_links_are_safe() {
        let alerts: Vec<_> = (0..130).map(|i| alert(i, &format!("Acct {i}"))).collect();
        let (subject, text, html) = email(
            &note(alerts),
            "",
            "https://cw.example/inbox",
            &PriorityConfig::default(),
        );
        assert!(subject.chars().count() <= EMAIL_MAX_SUBJECT, "{subject}");
        assert!(
            text.starts_with("130 of your accounts need a look:"),
            "{text}"
        );
        assert!(
            text.contains("...and 30 more: 30 gone dark. See them all: https://cw.example/inbox")
        );
        assert_eq!(html.matches("<li>").count(), EMAIL_MAX_ALERTS);
        assert!(!html.contains("javascript:"));
    }

    #[test]
    fn names_link_to_their_inbox_page() {
        let mut a = alert(1, "Acme");
        a.account_id = "a b/\"x".into();
        let (_, text, html) = email(
            &note(vec![a]),
            "https://crm.example/{account_id}",
            "https://cw.example",
            &PriorityConfig::default(),
        );
        let page = "https://cw.example/inbox/accounts/a%20b%2F%22x";
        assert!(
            html.contains(&format!(
                "<b><a href=\"{page}\">Acme</a></b> &middot; <a href=\"https://crm.example/a%20b%2F%22x\">CRM</a>"
            )),
            "{html}"
        );
        assert!(
            text.contains(&format!(
                "\n  Inbox: {page}\n  CRM: https://crm.example/a%20b%2F%22x\n"
            )),
            "{text}"
        );
    }

    #[test]
    fn one_alert_reads_as_english() {
        let (subject, text, _) = email(
            &note(vec![alert(1, "Acme")]),
            "",
            "",
            &PriorityConfig::default(),
        );
        assert_eq!(subject, "[churnwatch] Acme: went dark");
        assert!(
            text.starts_with("1 of your accounts needs a look:"),
            "{text}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn subjects_and_html_stay_safe(name in any::<String>(), n in 1usize..300) {
            let alerts: Vec<_> = (0..n).map(|i| alert(i, &name)).collect();
            let (subject, text, html) = email(&note(alerts), "https://crm.example/{account_id}", "", &PriorityConfig::default());
            prop_assert!(subject.chars().count() <= EMAIL_MAX_SUBJECT);
            prop_assert!(!subject.chars().any(char::is_control));
            prop_assert!(!html.contains("<script") && !html.contains("javascript:"));
            prop_assert_eq!(html.matches("<li>").count(), n.min(EMAIL_MAX_ALERTS));
            if n > EMAIL_MAX_ALERTS {
                let expected = format!("...and {} more", n - EMAIL_MAX_ALERTS);
                prop_assert!(text.contains(&expected));
            }
        }
    }
}
