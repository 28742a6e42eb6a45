//! The account page: who and what is at stake (metadata, CRM link when it is a safe
//! `https:` URL), the activity chart against the baseline's expectation, the firing
//! alerts with their evidence and what was done about them (`actions`), the recently
//! resolved alerts (feedback on them), the activation checklist, the alert timeline, the account's actions and the silences.

use std::fmt::Write;

use super::actions;
use super::html::{badge, e, layout, money, renewal, when};
use super::svg;
use crate::actions::record::AccountActions;
use crate::inbox::model::{
    AccountDetail, Evidence, FiringAlert, HistoryEntry, Lifecycle, Principal, ViewStatus,
};
use crate::notify::render::escape;
use crate::time::Millis;

/// Evidence values shown at most this long.
const MAX_EVIDENCE_VALUE: usize = 200;
/// Evidence fields shown at most.
const MAX_EVIDENCE_FIELDS: usize = 30;

/// One evidence value as text: strings as they are, anything else as compact JSON.
fn evidence_value(v: &serde_json::Value) -> String {
    let s = match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    e(&escape::cut(&s, MAX_EVIDENCE_VALUE))
}

fn evidence(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) if !m.is_empty() => {
            let mut s = String::from("<dl class=\"evidence\">");
            for (k, v) in m.iter().take(MAX_EVIDENCE_FIELDS) {
                let _ = write!(
                    s,
                    "<dt>{}</dt><dd>{}</dd>",
                    e(&escape::cut(&k.replace('_', " "), 60)),
                    evidence_value(v)
                );
            }
            s.push_str("</dl>");
            s
        }
        serde_json::Value::Null => String::new(),
        other => format!("<p class=\"evidence\">{}</p>", evidence_value(other)),
    }
}

/// The account page.
/// Alerts shown resolved, newest first: enough to give feedback on recent ones.
const RESOLVED_SHOWN: usize = 5;

/// The account's recently resolved alerts (their latest transition in the history is
/// a resolution), each with its action state and, to whoever may act, the same
/// controls as a firing alert: "not a risk" on an alert that is over is the feedback
/// the backtest scores, and a snooze of it quiets the next alerts of its kind.
fn resolved_alerts(a: &AccountDetail, acts: &AccountActions, may_act: bool, now: Millis) -> String {
    let mut latest: Vec<&HistoryEntry> = Vec::new();
    for h in &a.history {
        match latest.iter_mut().find(|l| l.id == h.id) {
            Some(l) if h.event_time > l.event_time => *l = h,
            Some(_) => {}
            None => latest.push(h),
        }
    }
    latest.retain(|h| h.status == "resolved" && !a.summary.firing.iter().any(|f| f.id == h.id));
    if latest.is_empty() {
        return String::new();
    }
    latest.sort_by(|x, y| y.event_time.cmp(&x.event_time));
    let mut b = String::from("<section class=\"resolved\"><h2>Resolved recently</h2>");
    for h in latest.into_iter().take(RESOLVED_SHOWN) {
        let as_alert = FiringAlert {
            id: h.id.clone(),
            kind: h.kind.clone(),
            severity: h.severity.clone(),
            since: h.event_time.clone(),
            summary: h.summary.clone(),
            evidence: Evidence::from_value(&serde_json::Value::Null),
        };
        let _ = write!(
            b,
            "<article class=\"alert resolved\"><h3>{} {}</h3><p class=\"summary\">{}</p>\
             <p class=\"since\">resolved {} <small class=\"id\">{}</small></p>{}</article>",
            badge(&h.severity),
            e(&h.kind.replace('_', " ")),
            e(&h.summary),
            when(&h.event_time),
            e(&h.id),
            actions::alert_actions(&as_alert, acts, may_act, now)
        );
    }
    b.push_str("</section>");
    b
}

pub fn account_page(
    who: &Principal,
    status: &ViewStatus,
    a: &AccountDetail,
    now: Millis,
) -> String {
    let s = &a.summary;
    // Whoever may open the page may act (its owner, a lead, an admin); the API checks
    // again. Where this process serves no actions (`serve --events`), nobody may.
    let may_act = a.actions.is_some() && who.may_see(s.owner_email.as_deref());
    let name = s.name.as_deref().unwrap_or(&s.account_id);
    let mut b = format!(
        "<p class=\"crumbs\"><a href=\"/inbox\">Accounts</a> /</p><h1>{}</h1>\
         <p class=\"id\">{}</p>",
        e(name),
        e(&s.account_id)
    );
    let lifecycle = match s.lifecycle {
        Lifecycle::Unknown => "unknown",
        Lifecycle::Onboarding => "onboarding",
        Lifecycle::Activated => "activated",
        Lifecycle::Ended => "ended",
    };
    let _ = write!(
        b,
        "<dl class=\"facts\"><div><dt>Owner</dt><dd>{}</dd></div><div><dt>ARR</dt><dd>{}</dd></div>\
         <div><dt>Renewal</dt><dd>{}</dd></div><div><dt>Segment</dt><dd>{}</dd></div>\
         <div><dt>Lifecycle</dt><dd>{lifecycle}</dd></div><div><dt>Last activity</dt><dd>{}</dd></div>\
         <div><dt>Priority</dt><dd>{:.1}</dd></div></dl>",
        e(s.owner_email.as_deref().unwrap_or("-")),
        money(s.arr),
        renewal(s.renewal_date.as_deref(), now),
        e(s.segment.as_deref().unwrap_or("-")),
        s.last_activity.as_deref().map_or("-".into(), when),
        s.priority
    );

    b.push_str("<section class=\"firing\"><h2>Firing now</h2>");
    if s.firing.is_empty() {
        b.push_str("<p class=\"muted\">No alert is firing.</p>");
    }
    for f in &s.firing {
        let _ = write!(
            b,
            "<article class=\"alert {}\"><h3>{} {}</h3><p class=\"summary\">{}</p>\
             <p class=\"since\">since {} <small class=\"id\">{}</small></p>{}{}</article>",
            if f.severity == "critical" {
                "critical"
            } else {
                "warning"
            },
            badge(&f.severity),
            e(&f.kind.replace('_', " ")),
            e(&f.summary),
            when(&f.since),
            e(&f.id),
            evidence(&f.evidence.value()),
            a.actions.as_ref().map_or(String::new(), |acts| {
                actions::alert_actions(f, acts, may_act, now)
            })
        );
    }
    b.push_str("</section>");
    if let Some(acts) = &a.actions {
        b.push_str(&resolved_alerts(a, acts, may_act, now));
        b.push_str(&actions::history(acts));
    }

    let _ = write!(
        b,
        "<section><h2>Activity</h2><p class=\"muted\">{} per day over the kept window{}.</p>{}</section>",
        if a.series_metric == "active_users" {
            "Active users"
        } else {
            "Events"
        },
        match &a.baseline {
            Some(bl) => format!(
                "; the shaded last {} days against the {:.1} a day the {} days before lead to expect (dashed line)",
                bl.recent_days, bl.expected_per_day, bl.baseline_days
            ),
            None => String::new(),
        },
        svg::activity_chart(&a.series, a.baseline.as_ref(), &a.series_metric)
    );

    if let Some(act) = &a.activation {
        let _ = write!(
            b,
            "<section><h2>Activation</h2><p>Started {}; deadlines at {} days. {}</p><ul class=\"checklist\">",
            when(&act.started),
            act.deadlines_days
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(" and "),
            match &act.activated_at {
                Some(t) => format!("Activated {}.", when(t)),
                None => "Not activated yet.".into(),
            }
        );
        for c in &act.criteria {
            let _ = write!(
                b,
                "<li class=\"{}\"><span class=\"mark\">{}</span> {} <small>{} / {}</small></li>",
                if c.met { "met" } else { "open" },
                if c.met { "&#10003;" } else { "&#9675;" },
                e(&c.name.replace('_', " ")),
                c.progress,
                c.target
            );
        }
        b.push_str("</ul></section>");
    }

    b.push_str("<section><h2>Alert timeline</h2>");
    if a.history.is_empty() {
        b.push_str("<p class=\"muted\">No alert yet.</p>");
    } else {
        b.push_str("<ol class=\"timeline\">");
        for h in &a.history {
            let _ = write!(
                b,
                "<li class=\"{}\">{} <span class=\"status\">{}</span> {} {} <span class=\"summary\">{}</span></li>",
                if h.status == "firing" { "firing" } else { "resolved" },
                when(&h.event_time),
                e(&h.status),
                badge(&h.severity),
                e(&h.kind.replace('_', " ")),
                e(&h.summary)
            );
        }
        b.push_str("</ol>");
    }
    b.push_str("</section>");

    b.push_str("<section><h2>Silences</h2>");
    if a.silences.is_empty() {
        b.push_str("<p class=\"muted\">None.</p>");
    } else {
        b.push_str("<ul class=\"silences\">");
        for si in &a.silences {
            let _ = write!(
                b,
                "<li>{} until {}{}{}</li>",
                e(si.kind.as_deref().unwrap_or("every kind")),
                when(&si.until),
                si.created_by
                    .as_deref()
                    .map_or(String::new(), |c| format!(", by {}", e(c))),
                si.comment
                    .as_deref()
                    .map_or(String::new(), |c| format!(": {}", e(c)))
            );
        }
        b.push_str("</ul>");
    }
    b.push_str("</section>");

    if let Some(m) = &a.meta {
        b.push_str("<section><h2>Metadata</h2><dl class=\"meta\">");
        for key in [
            "name",
            "owner_email",
            "owner_chat",
            "plan",
            "segment",
            "seats",
            "arr",
            "mrr",
            "renewal_date",
            "timezone",
        ] {
            if let Some(v) = m.label(key) {
                let _ = write!(
                    b,
                    "<dt>{}</dt><dd>{}</dd>",
                    e(&key.replace('_', " ")),
                    e(&v)
                );
            }
        }
        if let Some(raw) = &m.crm_url {
            let _ = match escape::safe_link(raw) {
                Some(url) => write!(
                    b,
                    "<dt>CRM</dt><dd><a class=\"crm\" href=\"{}\" rel=\"noopener noreferrer\">open in the CRM</a></dd>",
                    e(&url)
                ),
                None => write!(
                    b,
                    "<dt>CRM</dt><dd class=\"muted\">link not shown (not an https URL)</dd>"
                ),
            };
        }
        b.push_str("</dl></section>");
    }
    layout(name, who, status, &b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::model::{InboxView, Role};
    use crate::inbox::pages::fixture::{FixtureView, ANA};

    #[test]
    fn every_part_is_there_and_markup_is_escaped() {
        let today = 20_000;
        let v = FixtureView::sample(today);
        let who = Principal {
            email: ANA.into(),
            role: Role::Csm,
        };
        let mut a = v.account("umbrella").unwrap();
        a.meta.as_mut().unwrap().crm_url = Some("javascript:alert(1)".into());
        a.summary.firing[0].evidence = crate::inbox::model::Evidence::from_value(
            &serde_json::json!({"note": "<img src=x onerror=alert(1)>"}),
        );
        let html = account_page(&who, &v.status(), &a, today * crate::time::DAY);
        assert!(!html.contains("<script>alert(1)"), "name not escaped");
        assert!(html.contains("Umbrella &lt;script&gt;"));
        assert!(!html.contains("<img src=x"));
        assert!(!html.contains("javascript:"));
        assert!(html.contains("not an https URL"));
        for part in [
            "class=\"chart activity\"",
            "class=\"expected\"",
            "class=\"checklist\"",
            "class=\"timeline\"",
            "class=\"evidence\"",
            "Firing now",
        ] {
            assert!(html.contains(part), "{part} missing");
        }
        let acme = account_page(&who, &v.status(), &v.account("acme").unwrap(), 0);
        assert!(acme.contains("href=\"https://crm.example.com/accounts/acme\""));
    }

    #[test]
    fn recently_resolved_alerts_take_feedback() {
        let today = 20_000;
        let v = FixtureView::sample(today);
        let ana = Principal {
            email: ANA.into(),
            role: Role::Csm,
        };
        let mut a = v.account("umbrella").unwrap();
        let page = |a: &AccountDetail| account_page(&ana, &v.status(), a, today * crate::time::DAY);
        assert!(
            !page(&a).contains("Resolved recently"),
            "no actions here: no section"
        );
        a.actions = Some(AccountActions {
            account_id: "umbrella".into(),
            actions: vec![],
            states: Default::default(),
            quiet: Default::default(),
        });
        let html = page(&a);
        let section = html
            .split("<section class=\"resolved\">")
            .nth(1)
            .and_then(|s| s.split("</section>").next())
            .unwrap_or_else(|| panic!("no resolved section: {html}"));
        assert!(
            section.contains("data-alert-id=\"umbrella/inactive/0\""),
            "{section}"
        );
        assert!(section.contains("data-action=\"not_a_risk\""));
        assert!(
            section.contains("Umbrella &lt;script&gt;"),
            "escaped: {section}"
        );
        // A firing alert is not listed again as resolved.
        let firing = &a.summary.firing[0].id;
        assert!(!section.contains(&format!("data-alert-id=\"{firing}\"")));
    }
}
