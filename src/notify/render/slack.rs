//! Slack Block Kit messages (incoming webhooks). One message per notification, within
//! Slack's limits (`limits.rs`): the [`SLACK_MAX_ALERTS`] most important alerts in
//! full, the rest counted by kind in one summary line that links to where all of them
//! can be seen (`notify.inbox_url`) or names their accounts. With an inbox, each
//! account's name links to its page there (and the CRM gets its own link).
//!
//! With `buttons` (`notify.slack.interactions`), each firing alert shown carries a
//! row of Acknowledge / Snooze 7 days / Not a risk buttons whose value is the alert
//! id, and [`SLACK_MAX_ALERTS_WITH_BUTTONS`] alerts are shown in full.
//!
//! Summarising, not splitting into several messages: a CSM reads one message per
//! batch, a channel is not flooded after a backfill, and the batch stays one delivery
//! with one idempotency key, recorded as delivered only when Slack accepted it.

use serde_json::{json, Value};

use crate::config::Severity;
use crate::record::AlertRecord;

use super::escape::{self, cut_markup};
use super::limits::*;
use super::{
    account_facts, crm_link, headline, id_line, inbox_account_link, plain_evidence, Notification,
    Overflow,
};
use crate::priority::PriorityConfig;

/// Where the receiver and the deployment want the message to point.
#[derive(Debug, Clone, Default)]
pub struct SlackOptions<'a> {
    /// `notify.crm_url_template`.
    pub crm_template: &'a str,
    /// `notify.inbox_url`: where a CSM sees every account of theirs; empty: none.
    pub inbox_url: &'a str,
    /// Mention the owner (`<@U...>`) when their chat handle is known.
    pub mention_owner: bool,
    /// The order of the alerts.
    pub priority: PriorityConfig,
    /// Each firing alert carries Acknowledge / Snooze 7 days / Not a risk buttons
    /// (`notify.slack.interactions`; the app's interactions reach
    /// `actions::slack`). Fewer alerts are then shown in full.
    pub buttons: bool,
}

/// The row of buttons under a firing alert: each button's value is the alert id.
fn buttons(a: &AlertRecord, i: usize) -> Option<Value> {
    let value = a.id.as_str();
    if !a.is_firing() || value.chars().count() > SLACK_MAX_BUTTON_VALUE {
        return None;
    }
    let elements: Vec<Value> = crate::actions::slack::BUTTONS
        .iter()
        .map(|(action_id, _, text)| {
            json!({"type": "button", "action_id": action_id, "value": value,
                   "text": {"type": "plain_text", "text": escape::cut(text, SLACK_MAX_BUTTON_TEXT)}})
        })
        .collect();
    debug_assert!(elements.len() <= SLACK_MAX_ACTIONS_ELEMENTS);
    Some(json!({"type": "actions", "block_id": format!("cw-actions-{i}"), "elements": elements}))
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": cut_markup(&text, SLACK_MAX_SECTION_TEXT)}})
}

/// A Slack user or group id as Slack writes them (`U024BE7LH`), else `None`: a handle
/// from the CRM must not turn into `<!channel>` or a link.
fn mention(handle: &str) -> Option<String> {
    let ok = !handle.is_empty()
        && handle.len() <= 32
        && handle
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    ok.then(|| format!("<@{handle}>"))
}

/// The message for one notification.
pub fn slack(n: &Notification, opts: &SlackOptions) -> Value {
    let heading = if n.digest {
        n.digest_heading()
    } else {
        n.subject(&opts.priority)
            .trim_start_matches("[churnwatch] ")
            .to_string()
    };
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": escape::cut(&escape::plain(&heading), SLACK_MAX_HEADER_TEXT)}
    })];
    let chat = n.owner_chat.as_deref().and_then(mention);
    if let (true, Some(who)) = (opts.mention_owner, &chat) {
        let opening = escape::slack(&n.opening());
        blocks.push(section(if n.digest {
            format!("{who} your daily digest of warnings since the last one: {opening}.")
        } else {
            format!("{who} {opening}:")
        }));
    }
    let ordered = n.ordered(&opts.priority);
    let most = if opts.buttons {
        SLACK_MAX_ALERTS_WITH_BUTTONS
    } else {
        SLACK_MAX_ALERTS
    };
    let shown = ordered.len().min(most);
    for (i, a) in ordered[..shown].iter().enumerate() {
        blocks.push(alert_section(a, opts));
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": cut_markup(&escape::slack(&id_line(a)), SLACK_MAX_TEXT_OBJECT)}]
        }));
        if let Some(b) = buttons(a, i).filter(|_| opts.buttons) {
            blocks.push(b);
        }
    }
    let overflow = Overflow {
        hidden: ordered[shown..].to_vec(),
    };
    if let Some(line) = overflow.line() {
        blocks.push(section(summary(&overflow, &line, opts.inbox_url)));
    }
    debug_assert!(blocks.len() <= SLACK_MAX_BLOCKS);
    let fallback = cut_markup(
        &escape::slack(&n.full_subject(&opts.priority)),
        SLACK_MAX_FALLBACK_TEXT,
    );
    json!({"text": fallback, "blocks": blocks})
}

/// The account's name links to its inbox page when there is an inbox (the CRM then
/// gets a link of its own after the facts), else to the CRM.
fn alert_section(a: &AlertRecord, opts: &SlackOptions) -> Value {
    let name = super::shown_name(a);
    let crm = crm_link(a, opts.crm_template);
    let (title, crm_after) = match (inbox_account_link(opts.inbox_url, &a.account_id), crm) {
        (Some(page), crm) => (
            format!("*{}*", escape::slack_link(&page, &name)),
            crm.map(|u| format!(" · {}", escape::slack_link(&u, "CRM"))),
        ),
        (None, Some(url)) => (format!("*{}*", escape::slack_link(&url, &name)), None),
        (None, None) => (format!("*{}*", escape::slack(&name)), None),
    };
    let facts = account_facts(a);
    let icon = if !a.is_firing() {
        ":white_check_mark:"
    } else if a.severity == Severity::Critical {
        ":rotating_light:"
    } else {
        ":warning:"
    };
    section(format!(
        "{title}{}{}\n{icon} *{}*\n{}",
        if facts.is_empty() {
            String::new()
        } else {
            format!(" ({})", escape::slack(&facts))
        },
        crm_after.unwrap_or_default(),
        escape::slack(&headline(a)),
        escape::slack(&plain_evidence(a)),
    ))
}

/// "…and 37 more: 21 not activated, ... <inbox|See them all>", or the hidden accounts'
/// names when there is no inbox to link to.
fn summary(o: &Overflow, line: &str, inbox_url: &str) -> String {
    let mut text = format!("…{}.", escape::slack(line));
    if let Some(url) = escape::safe_link(inbox_url).or_else(|| http_link(inbox_url)) {
        text.push(' ');
        text.push_str(&escape::slack_link(&url, "See them all in the inbox"));
    } else {
        let mut names: Vec<String> = Vec::new();
        for a in &o.hidden {
            let name = escape::cut(&super::shown_name(a), 40);
            if !names.contains(&name) {
                names.push(name);
            }
        }
        text.push_str(&format!(" Accounts: {}", escape::slack(&names.join(", "))));
    }
    text
}

/// The inbox may be served on plain `http:` inside a cluster; it is our own URL from
/// the config, not from the CRM.
fn http_link(raw: &str) -> Option<String> {
    let u = url::Url::parse(raw.trim()).ok()?;
    (u.scheme() == "http" && u.host_str().is_some()).then(|| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KINDS: [&str; 3] = ["not_activated", "inactive", "activity_drop"];

    fn alert(
        i: usize,
        kind: &str,
        severity: &str,
        status: &str,
        name: &str,
        mrr: f64,
    ) -> AlertRecord {
        // The evidence of every kind at once: each kind reads its own fields.
        serde_json::from_value(json!({"id": format!("acct-{i}/{kind}/2026-03-04"), "account_id": format!("acct-{i}"),
               "kind": kind, "status": status, "severity": severity,
               "event_time": "2026-03-05T00:00:00.000Z", "emitted_at": "2026-03-05T00:00:01.000Z",
               "summary": "",
               "evidence": {"after_days": 30, "start": "2026-02-01T00:00:00Z", "active_days": 1,
                            "active_users": 1, "events": 1,
                            "missing_events": (0..30).map(|j| format!("{name}-{j}")).collect::<Vec<_>>(),
                            "last_activity": "2026-02-01T00:00:00Z", "idle_days": 14,
                            "observed": 1, "expected": 80, "drop_pct": 0.98, "p_value": 1e-9,
                            "model": "poisson", "recent_days": 7, "baseline_days": 28,
                            "reason": "activity_resumed"},
               "account": {"name": name, "plan": name, "mrr": mrr, "crm_url": format!("https://crm.example/{name}")}}))
        .unwrap()
    }

    fn note(alerts: Vec<AlertRecord>, digest: bool) -> Notification {
        Notification {
            receiver: "slack".into(),
            owner: "ana@example.com".into(),
            owner_chat: Some("U024BE7LH".into()),
            alerts,
            digest,
        }
    }

    fn opts() -> SlackOptions<'static> {
        SlackOptions {
            crm_template: "https://crm.example/a/{account_id}",
            inbox_url: "",
            mention_owner: true,
            priority: PriorityConfig::default(),
            buttons: false,
        }
    }

    /// Every limit of `limits.rs` that a message can break.
    fn check_limits(m: &Value) -> Result<(), String> {
        let blocks = m["blocks"].as_array().ok_or("no blocks")?;
        let chars = |v: &Value| v.as_str().map_or(0, |t| t.chars().count());
        if blocks.len() > SLACK_MAX_BLOCKS {
            return Err(format!("{} blocks", blocks.len()));
        }
        if chars(&m["text"]) > SLACK_MAX_FALLBACK_TEXT {
            return Err("fallback text too long".into());
        }
        for b in blocks {
            match b["type"].as_str() {
                Some("header") if chars(&b["text"]["text"]) > SLACK_MAX_HEADER_TEXT => {
                    return Err("header too long".into())
                }
                Some("section") if chars(&b["text"]["text"]) > SLACK_MAX_SECTION_TEXT => {
                    return Err("section too long".into())
                }
                Some("actions") => {
                    let el = b["elements"].as_array().ok_or("no elements")?;
                    let bid = b["block_id"].as_str().map_or(0, |t| t.chars().count());
                    if el.len() > SLACK_MAX_ACTIONS_ELEMENTS || bid > SLACK_MAX_BLOCK_ID {
                        return Err("actions block too large".into());
                    }
                    for e in el {
                        if chars(&e["value"]) > SLACK_MAX_BUTTON_VALUE
                            || chars(&e["action_id"]) > SLACK_MAX_BUTTON_VALUE
                            || chars(&e["text"]["text"]) > SLACK_MAX_BUTTON_TEXT
                        {
                            return Err("button too large".into());
                        }
                    }
                    let mut ids: Vec<&str> =
                        el.iter().filter_map(|e| e["action_id"].as_str()).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    if ids.len() != el.len() {
                        return Err("action ids repeat within a block".into());
                    }
                }
                Some("context") => {
                    let el = b["elements"].as_array().ok_or("no elements")?;
                    if el.len() > SLACK_MAX_CONTEXT_ELEMENTS
                        || el.iter().any(|e| chars(&e["text"]) > SLACK_MAX_TEXT_OBJECT)
                    {
                        return Err("context too large".into());
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    #[test]
    fn a_busy_batch_shows_the_most_important_and_counts_the_rest() {
        let mut alerts = Vec::new();
        for i in 0..30 {
            alerts.push(alert(
                i,
                "not_activated",
                "warning",
                "firing",
                &format!("n{i}"),
                i as f64,
            ));
        }
        for i in 30..39 {
            alerts.push(alert(
                i,
                "inactive",
                "warning",
                "firing",
                &format!("n{i}"),
                10.0,
            ));
        }
        alerts.push(alert(99, "activity_drop", "critical", "firing", "big", 5.0));
        alerts.push(alert(98, "inactive", "warning", "resolved", "back", 1e6));
        let m = slack(&note(alerts, false), &opts());
        check_limits(&m).unwrap();
        let blocks = m["blocks"].as_array().unwrap();
        assert_eq!(
            blocks[1]["text"]["text"],
            "<@U024BE7LH> 40 of your accounts need a look, 1 risk is over:"
        );
        // The critical alert first, then by revenue: the inactive ones (mrr 10) after
        // the not-activated ones with mrr 29..10.
        assert!(blocks[2]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("|big>"));
        assert!(blocks[4]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("|n29>"));
        let last = blocks.last().unwrap()["text"]["text"].as_str().unwrap();
        assert!(
            last.starts_with("…and 21 more: 11 not activated, 9 gone dark, 1 resolved. Accounts: "),
            "{last}"
        );
        let with_inbox = slack(
            &note(
                vec![alert(1, "inactive", "warning", "firing", "a", 1.0); 25],
                false,
            ),
            &SlackOptions {
                inbox_url: "https://churnwatch.example/inbox",
                ..opts()
            },
        );
        assert!(with_inbox
            .to_string()
            .contains("<https://churnwatch.example/inbox|See them all in the inbox>"));
    }

    #[test]
    fn hostile_names_and_handles_stay_text() {
        let mut a = alert(
            1,
            "inactive",
            "warning",
            "firing",
            "<!channel> x|Pay at evil.example",
            1.0,
        );
        a.account_id = "x|Your invoice is overdue".into();
        a.account.as_mut().unwrap().crm_url = Some("javascript:alert(1)".into());
        let mut n = note(vec![a], false);
        n.owner_chat = Some("!channel".into());
        let m = slack(&n, &opts());
        // plain_text (the header) is never parsed for mentions; every mrkdwn text is.
        let mrkdwn: Vec<&Value> = m["blocks"].as_array().unwrap().iter().skip(1).collect();
        let t = serde_json::to_string(&mrkdwn).unwrap();
        assert!(
            !t.contains("<!channel>") && !t.contains("javascript:"),
            "{t}"
        );
        assert!(t.contains("<https://crm.example/a/x%7CYour%20invoice%20is%20overdue|&lt;!channel&gt; x\u{00a6}Pay at evil.example>"), "{t}");
        assert!(m["text"].as_str().unwrap().contains("&lt;!channel&gt;"));
        assert_eq!(
            m["blocks"].as_array().unwrap().len(),
            3,
            "no mention of a bad handle"
        );
    }

    #[test]
    fn names_link_to_their_inbox_page_and_the_crm_follows() {
        let mut a = alert(1, "inactive", "warning", "firing", "Acme|<b>", 1.0);
        a.account_id = "acme/../x|y>z".into();
        let m = slack(
            &note(vec![a], false),
            &SlackOptions {
                inbox_url: "http://churnwatch.internal:8080/inbox/",
                ..opts()
            },
        );
        check_limits(&m).unwrap();
        let t = m["blocks"][2]["text"]["text"].as_str().unwrap();
        assert!(
            t.starts_with(
                "*<http://churnwatch.internal:8080/inbox/accounts/acme%2F..%2Fx%7Cy%3Ez|Acme\u{00a6}&lt;b&gt;>* \
                 (Acme|&lt;b&gt;, $1 MRR) · <https://crm.example/Acme%7C%3Cb%3E|CRM>\n"
            ),
            "{t}"
        );
        // Without an inbox the name links to the CRM, as before.
        let m = slack(
            &note(
                vec![alert(1, "inactive", "warning", "firing", "a", 1.0)],
                false,
            ),
            &opts(),
        );
        let t = m["blocks"][2]["text"]["text"].as_str().unwrap();
        assert!(
            t.starts_with("*<https://crm.example/a|a>* (a, $1 MRR)\n"),
            "{t}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn every_batch_fits_and_every_alert_is_shown_or_counted(
            size in 1usize..500,
            name_len in 0usize..4000,
            digest in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let name: String = (0..name_len).map(|i| ['a', '<', '&', 'é', '|', '>', ' '][(i as u64 ^ seed) as usize % 7]).collect();
            let alerts: Vec<AlertRecord> = (0..size)
                .map(|i| {
                    let kind = KINDS[(i as u64 + seed) as usize % 3];
                    let sev = if (i as u64 ^ seed) % 5 == 0 { "critical" } else { "warning" };
                    let status = if (i as u64 + seed) % 7 == 0 { "resolved" } else { "firing" };
                    alert(i, kind, sev, status, &name, (i % 13) as f64)
                })
                .collect();
            // Every other batch links each name to the inbox, with ids up to the 256
            // bytes events allow (`source::event::MAX_ID_BYTES`).
            let tail: String = name.chars().take(100).collect();
            let alerts: Vec<AlertRecord> = alerts
                .into_iter()
                .map(|mut a| {
                    if seed % 2 == 0 {
                        a.account_id = format!("{}{tail}", a.account_id);
                    }
                    a
                })
                .collect();
            let inbox = if seed % 2 == 0 { "https://cw.example/inbox" } else { "" };
            // Every third batch with buttons, ids at their longest (300 bytes).
            let buttons = seed % 3 == 0;
            let alerts: Vec<AlertRecord> = alerts
                .into_iter()
                .map(|mut a| {
                    if buttons {
                        a.id = format!("{}/{}/{}", "é".repeat(130), a.kind.as_str(), a.id.len());
                    }
                    a
                })
                .collect();
            let n = note(alerts.clone(), digest);
            let firing: Vec<String> = n
                .ordered(&PriorityConfig::default())
                .into_iter()
                .take(SLACK_MAX_ALERTS_WITH_BUTTONS)
                .filter(|a| a.is_firing())
                .map(|a| a.id.clone())
                .collect();
            let m = slack(&note(alerts, digest), &SlackOptions { inbox_url: inbox, buttons, ..opts() });
            prop_assert!(check_limits(&m).is_ok(), "{:?}", check_limits(&m));
            let rows: Vec<&Value> = m["blocks"].as_array().unwrap().iter().filter(|b| b["type"] == "actions").collect();
            if buttons {
                prop_assert_eq!(rows.len(), firing.len());
                for (r, id) in rows.iter().zip(&firing) {
                    prop_assert_eq!(r["elements"].as_array().unwrap().len(), 3);
                    prop_assert!(r["elements"].as_array().unwrap().iter().all(|e| e["value"] == id.as_str()));
                }
            } else {
                prop_assert!(rows.is_empty());
            }
            if seed % 2 == 0 {
                prop_assert!(m.to_string().contains("<https://cw.example/inbox/accounts/acct-"));
            }
            let blocks = m["blocks"].as_array().unwrap();
            let shown = blocks.iter().filter(|b| b["type"] == "context").count();
            let counted = blocks
                .last()
                .and_then(|b| b["text"]["text"].as_str())
                .and_then(|t| t.strip_prefix("…and "))
                .and_then(|t| t.split(' ').next())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            prop_assert_eq!(shown + counted, size);
        }
    }
}
