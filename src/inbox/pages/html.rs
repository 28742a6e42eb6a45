//! The frame every inbox page shares (head, navigation, who is signed in, how current
//! the view is), the list and team pages, error pages, and the small formatting helpers
//! (money, dates, days to renewal). Every string that comes from data goes through
//! `escape::html`; URLs built from ids through `escape::url_component`.

use std::fmt::Write;

use super::svg;
use crate::actions::ActionState;
use crate::inbox::model::{AccountSummary, ListQuery, Page, Principal, Role, TeamRow, ViewStatus};
use crate::notify::render::escape;
use crate::time::{parse_date, parse_rfc3339, Millis, DAY};

/// HTML-escaped.
pub fn e(s: &str) -> String {
    escape::html(s)
}

/// The link to an account's page.
pub fn account_href(id: &str) -> String {
    format!("/inbox/accounts/{}", escape::url_component(id))
}

/// `$500k`, `$1.2M`, `$950`; `-` when unknown.
pub fn money(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() && x >= 1_000_000.0 => format!("${:.1}M", x / 1_000_000.0),
        Some(x) if x.is_finite() && x >= 10_000.0 => format!("${:.0}k", x / 1000.0),
        Some(x) if x.is_finite() && x >= 1000.0 => format!("${:.1}k", x / 1000.0),
        Some(x) if x.is_finite() => format!("${x:.0}"),
        _ => "-".into(),
    }
}

/// `2026-12-31 · in 30 d` (or `12 d ago`) against `now`.
pub fn renewal(date: Option<&str>, now: Millis) -> String {
    let Some(d) = date else { return "-".into() };
    match parse_date(d) {
        Ok(t) => {
            let days = t.div_euclid(DAY) - now.div_euclid(DAY);
            let rel = if days >= 0 {
                format!("in {days} d")
            } else {
                format!("{} d ago", -days)
            };
            let soon = if (0..=30).contains(&days) {
                " soon"
            } else {
                ""
            };
            format!(
                "<span class=\"renewal{soon}\">{} <small>{rel}</small></span>",
                e(d)
            )
        }
        Err(_) => e(d),
    }
}

/// An RFC 3339 time as `<time>` (`YYYY-MM-DD HH:MM UTC`), or the text as it is.
pub fn when(ts: &str) -> String {
    match parse_rfc3339(ts) {
        Ok(_) if ts.len() >= 16 && ts.is_ascii() => format!(
            "<time datetime=\"{}\">{} {} UTC</time>",
            e(ts),
            e(&ts[..10]),
            e(&ts[11..16])
        ),
        _ => e(ts),
    }
}

/// A severity badge.
pub fn badge(severity: &str) -> String {
    let class = match severity {
        "critical" => "critical",
        "warning" => "warning",
        _ => "info",
    };
    format!("<span class=\"badge {class}\">{}</span>", e(severity))
}

/// A badge for an alert's action state (empty when open).
pub fn state_badge(state: Option<&ActionState>) -> &'static str {
    match state {
        Some(ActionState::Acknowledged { .. }) => {
            "<span class=\"badge state acknowledged\">acknowledged</span> "
        }
        Some(ActionState::Snoozed { .. }) => "<span class=\"badge state snoozed\">snoozed</span> ",
        Some(ActionState::NotARisk { .. }) => {
            "<span class=\"badge state not_a_risk\">not a risk</span> "
        }
        None => "",
    }
}

/// The whole page around `body`.
pub fn layout(title: &str, who: &Principal, status: &ViewStatus, body: &str) -> String {
    let role = match who.role {
        Role::Csm => "CSM",
        Role::Lead => "lead",
        Role::Admin => "admin",
    };
    let team = if who.sees_all() {
        "<a href=\"/inbox/team\">Team</a>"
    } else {
        ""
    };
    let fresh = if status.caught_up {
        format!("{} accounts in the view", status.accounts)
    } else {
        format!(
            "{} accounts so far: still catching up with the topics",
            status.accounts
        )
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} - churnwatch</title>\
         <link rel=\"icon\" href=\"/inbox/assets/favicon.svg\" type=\"image/svg+xml\">\
         <link rel=\"stylesheet\" href=\"/inbox/assets/inbox.css\">\
         <script src=\"/inbox/assets/inbox.js\" defer></script></head>\
         <body><header><a class=\"brand\" href=\"/inbox\">churnwatch</a>\
         <nav><a href=\"/inbox\">Accounts</a>{team}</nav>\
         <span class=\"who\">{} <small>{role}</small></span></header>\
         <main>{body}</main><footer>{}</footer></body></html>",
        e(title),
        e(&who.email),
        e(&fresh)
    )
}

/// A page that says what went wrong (400, 403, 404).
pub fn problem(who: &Principal, status: &ViewStatus, title: &str, why: &str) -> String {
    layout(
        title,
        who,
        status,
        &format!(
            "<h1>{}</h1><p class=\"problem\">{}</p><p><a href=\"/inbox\">Back to the accounts</a></p>",
            e(title),
            e(why)
        ),
    )
}

const KINDS: [&str; 3] = ["not_activated", "inactive", "activity_drop"];
const SEVERITIES: [&str; 2] = ["critical", "warning"];

fn select(name: &str, label: &str, options: &[&str], chosen: Option<&str>) -> String {
    let mut s = format!("<label>{label} <select name=\"{name}\"><option value=\"\">any</option>");
    for o in options {
        let sel = if chosen == Some(*o) { " selected" } else { "" };
        let _ = write!(
            s,
            "<option value=\"{o}\"{sel}>{}</option>",
            o.replace('_', " ")
        );
    }
    s.push_str("</select></label>");
    s
}

/// The query string of `q` at `offset` (for paging links).
pub fn query_string(q: &ListQuery, offset: usize) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (k, v) in [
        ("kind", &q.kind),
        ("severity", &q.severity),
        ("segment", &q.segment),
        ("owner", &q.owner),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={}", escape::url_component(v)));
        }
    }
    if !q.at_risk {
        parts.push("all=1".into());
    }
    if q.limit != crate::inbox::model::DEFAULT_PAGE {
        parts.push(format!("limit={}", q.limit));
    }
    if offset > 0 {
        parts.push(format!("offset={offset}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// The inbox list: filters, one row per account in priority order, paging.
pub fn list_page(
    who: &Principal,
    status: &ViewStatus,
    q: &ListQuery,
    page: &Page<AccountSummary>,
    top_states: &[Option<ActionState>],
    now: Millis,
) -> String {
    let title = match (who.sees_all(), q.at_risk) {
        (false, true) => "My accounts at risk",
        (false, false) => "My accounts",
        (true, true) => "Accounts at risk",
        (true, false) => "All accounts",
    };
    let mut b = format!("<h1>{title}</h1>");
    let _ = write!(
        b,
        "<form class=\"filters\" method=\"get\" action=\"/inbox\">{}{}\
         <label>Segment <input name=\"segment\" maxlength=\"64\" value=\"{}\"></label>",
        select("kind", "Kind", &KINDS, q.kind.as_deref()),
        select("severity", "Severity", &SEVERITIES, q.severity.as_deref()),
        e(q.segment.as_deref().unwrap_or(""))
    );
    if who.sees_all() {
        let _ = write!(
            b,
            "<label>Owner <input name=\"owner\" type=\"email\" maxlength=\"254\" value=\"{}\"></label>",
            e(q.owner.as_deref().unwrap_or(""))
        );
    }
    let checked = if q.at_risk { "" } else { " checked" };
    let _ = write!(
        b,
        "<label><input type=\"checkbox\" name=\"all\" value=\"1\"{checked}> not at risk too</label>\
         <button type=\"submit\">Filter</button></form>"
    );
    if page.items.is_empty() {
        b.push_str("<p class=\"empty\">No account matches: nothing to worry about here.</p>");
        return layout(title, who, status, &b);
    }
    let _ = write!(
        b,
        "<p class=\"count\">{} accounts, showing {}-{}, highest priority first</p>\
         <table class=\"accounts\"><thead><tr><th>#</th><th>Account</th><th>Owner</th>\
         <th class=\"num\">ARR</th><th>Renewal</th><th>Top alert</th><th>Daily activity</th>\
         <th class=\"num\">Priority</th></tr></thead><tbody>",
        page.total,
        page.offset + 1,
        page.offset + page.items.len()
    );
    for (i, a) in page.items.iter().enumerate() {
        let href = account_href(&a.account_id);
        let name = a.name.as_deref().unwrap_or(&a.account_id);
        let top = match a.firing.first() {
            Some(f) => format!(
                "{} {}<span class=\"kind\">{}</span> <span class=\"summary\">{}</span>{}",
                badge(&f.severity),
                state_badge(top_states.get(i).and_then(Option::as_ref)),
                e(&f.kind.replace('_', " ")),
                e(&escape::cut(&f.summary, 160)),
                if a.firing.len() > 1 {
                    format!(" <small>+{} more</small>", a.firing.len() - 1)
                } else {
                    String::new()
                }
            ),
            None => "<span class=\"muted\">no alert firing</span>".into(),
        };
        let _ = write!(
            b,
            "<tr class=\"account\" data-href=\"{href}\"><td class=\"rank\">{}</td>\
             <td><a class=\"name\" href=\"{href}\">{}</a><br><small class=\"id\">{}</small></td>\
             <td>{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"alert\">{top}</td>\
             <td>{}</td><td class=\"num priority\">{:.1}</td></tr>",
            page.offset + i + 1,
            e(name),
            e(&a.account_id),
            e(a.owner_email.as_deref().unwrap_or("-")),
            money(a.arr),
            renewal(a.renewal_date.as_deref(), now),
            svg::sparkline(&a.sparkline),
            a.priority
        );
    }
    b.push_str("</tbody></table><nav class=\"pages\">");
    if page.offset > 0 {
        let prev = page.offset.saturating_sub(page.limit);
        let _ = write!(
            b,
            "<a rel=\"prev\" href=\"/inbox{}\">Previous</a>",
            e(&query_string(q, prev))
        );
    }
    if let Some(next) = page.next_offset {
        let _ = write!(
            b,
            "<a rel=\"next\" href=\"/inbox{}\">Next</a>",
            e(&query_string(q, next))
        );
    }
    b.push_str("</nav>");
    layout(title, who, status, &b)
}

/// The team page: per owner, accounts, at risk, critical, alerts this week, and the
/// load (total priority) as a bar.
pub fn team_page(who: &Principal, status: &ViewStatus, rows: &[TeamRow]) -> String {
    let mut b = String::from(
        "<h1>Team</h1><p class=\"count\">Load per CSM: the sum of their accounts' priorities.</p>\
         <table class=\"team\"><thead><tr><th>Owner</th><th class=\"num\">Accounts</th>\
         <th class=\"num\">At risk</th><th class=\"num\">Critical</th>\
         <th class=\"num\">Alerts this week</th><th>Load</th></tr></thead><tbody>",
    );
    let max = rows.iter().map(|r| r.priority).fold(0.0, f64::max);
    for r in rows {
        let owner = match &r.owner_email {
            Some(o) => format!(
                "<a href=\"/inbox?owner={}\">{}</a>",
                escape::url_component(o),
                e(o)
            ),
            None => "<span class=\"muted\">no owner</span>".into(),
        };
        let _ = write!(
            b,
            "<tr><td>{owner}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{} {:.1}</td></tr>",
            r.accounts,
            r.at_risk,
            r.critical,
            r.alerts_this_week,
            svg::bar(r.priority, max, 160.0),
            r.priority
        );
    }
    b.push_str("</tbody></table>");
    layout("Team", who, status, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(money(Some(500_000.0)), "$500k");
        assert_eq!(money(Some(1_250_000.0)), "$1.2M");
        assert_eq!(money(Some(2_500.0)), "$2.5k");
        assert_eq!(money(None), "-");
        let now = parse_date("2026-12-01").unwrap();
        assert!(renewal(Some("2026-12-31"), now).contains("in 30 d"));
        assert!(renewal(Some("2026-12-31"), now).contains("soon"));
        assert!(renewal(Some("2026-11-21"), now).contains("10 d ago"));
        assert_eq!(renewal(Some("<b>"), now), "&lt;b&gt;");
        assert!(when("2026-11-30T09:05:00Z").contains("2026-11-30 09:05 UTC"));
        assert_eq!(when("<x>"), "&lt;x&gt;");
    }

    #[test]
    fn paging_links_keep_the_filters() {
        let q = ListQuery {
            kind: Some("inactive".into()),
            segment: Some("a&b".into()),
            at_risk: false,
            ..ListQuery::default()
        };
        assert_eq!(
            query_string(&q, 50),
            "?kind=inactive&segment=a%26b&all=1&offset=50"
        );
        assert_eq!(query_string(&ListQuery::default(), 0), "");
    }

    #[test]
    fn list_rows_carry_their_top_alerts_state() {
        use crate::inbox::model::{InboxView, Role};
        use crate::inbox::pages::fixture::{FixtureView, ANA};
        let v = FixtureView::sample(20_000);
        let who = Principal {
            email: ANA.into(),
            role: Role::Csm,
        };
        let p = v.list(&who, &ListQuery::default());
        assert!(p.items.len() >= 2);
        let mut states = vec![None; p.items.len()];
        states[1] = Some(ActionState::Snoozed {
            by: ANA.into(),
            until_ms: 1,
        });
        let html = list_page(&who, &v.status(), &ListQuery::default(), &p, &states, 0);
        let rows: Vec<&str> = html.split("<tr class=\"account\"").skip(1).collect();
        assert_eq!(rows.len(), p.items.len());
        assert!(!rows[0].contains("badge state"));
        assert!(rows[1].contains("<span class=\"badge state snoozed\">snoozed</span>"));
        // No state known (a view without actions): no badge anywhere.
        let plain = list_page(&who, &v.status(), &ListQuery::default(), &p, &[], 0);
        assert!(!plain.contains("badge state"));
    }
}
