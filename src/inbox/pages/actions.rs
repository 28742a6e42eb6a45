//! The account page's actions (issue 16): under each firing alert its state as the
//! latest action leaves it (acknowledged by X, snoozed until D: reason, not a risk;
//! or quiet because another alert of its kind was snoozed, with a button to reopen
//! that one) and, for whoever may act, the controls (Acknowledge; Snooze or Not a risk with a
//! date and a required reason; Reopen once acted on); then the account's action
//! history. The controls are `type="button"` elements that `inbox.js` turns into
//! `fetch` calls posting JSON to `POST /api/v1/actions` (same origin; the API takes
//! JSON only, so a cross-site form cannot forge one); without script they stay hidden.
//! Everything from data is escaped; the state is rendered here on every load, so a
//! reload shows what the API stored.

use std::fmt::Write;

use super::html::{e, when};
use crate::actions::record::{AccountActions, ActionEntry, ActionKind, ActionState, QuietBy};
use crate::inbox::model::FiringAlert;
use crate::time::{format_day, format_rfc3339, Millis, DAY};

/// Days ahead the snooze date defaults to.
pub const DEFAULT_SNOOZE_DAYS: i64 = 7;

/// The newest action on `alert_id`, if any (`actions` is newest first).
fn latest<'a>(actions: &'a AccountActions, alert_id: &str) -> Option<&'a ActionEntry> {
    actions
        .actions
        .iter()
        .find(|a| a.record.alert_id == alert_id)
}

/// `2026-03-01 10:00 UTC` as `<time>`.
fn at(ms: Millis) -> String {
    when(&format_rfc3339(ms))
}

/// `: “reason”` of an action, escaped (empty without one).
fn reason_of(latest: Option<&ActionEntry>) -> String {
    latest
        .map(|a| a.record.reason.as_str())
        .filter(|r| !r.is_empty())
        .map_or(String::new(), |r| {
            format!(": <q class=\"reason\">{}</q>", e(r))
        })
}

/// The state line of an alert: what its latest action says now, with who and why.
pub fn state_line(state: Option<&ActionState>, latest: Option<&ActionEntry>) -> String {
    let reason = reason_of(latest);
    let (class, text) = match state {
        Some(ActionState::Acknowledged { by, at_ms }) => (
            "acknowledged",
            format!("Acknowledged by {} {}", e(by), at(*at_ms)),
        ),
        Some(ActionState::Snoozed { by, until_ms }) => (
            "snoozed",
            format!("Snoozed until {} by {}{reason}", at(*until_ms), e(by)),
        ),
        Some(ActionState::NotARisk { by, until_ms }) => (
            "not_a_risk",
            format!(
                "Not a risk, says {} (quiet until {}){reason}",
                e(by),
                at(*until_ms)
            ),
        ),
        None => match latest.map(|a| a.record.action) {
            Some(ActionKind::Reopen) => ("open", "Open (reopened)".to_string()),
            Some(_) => ("open", "Open (the snooze ran out)".to_string()),
            None => ("open", "Open: nobody has acted on it yet".to_string()),
        },
    };
    format!("<p class=\"action-state {class}\" data-state=\"{class}\">{text}</p>")
}

/// The state line of an alert that is open itself but quiet because another alert of
/// its account and kind (`q.alert_id`) was snoozed or marked not a risk: the notifier
/// sends nothing for it. To whoever may act, a button that reopens that other alert
/// (which may have resolved and so have no controls of its own).
fn quiet_line(q: &QuietBy, latest: Option<&ActionEntry>, may_act: bool) -> String {
    let reason = reason_of(latest);
    let (what, by, until) = match &q.state {
        ActionState::Snoozed { by, until_ms } => ("snoozed", by, *until_ms),
        ActionState::NotARisk { by, until_ms } => ("marked not a risk", by, *until_ms),
        ActionState::Acknowledged { .. } => return String::new(),
    };
    let mut s = format!(
        "<p class=\"action-state quiet\" data-state=\"quiet\">Quiet until {}: {} \
         {what} <span class=\"id\">{}</span>, and that quiets this account's alerts of \
         this kind{reason}</p>",
        at(until),
        e(by),
        e(&q.alert_id),
    );
    if may_act {
        let _ = write!(
            s,
            "<div class=\"act\" data-alert-id=\"{}\">\
             <button type=\"button\" class=\"reopen\" data-action=\"reopen\">Reopen {}</button>\
             <p class=\"act-error\" role=\"alert\" hidden></p></div>",
            e(&q.alert_id),
            e(&q.alert_id),
        );
    }
    s
}

/// The state of `f` and, when `may_act`, its controls.
pub fn alert_actions(
    f: &FiringAlert,
    actions: &AccountActions,
    may_act: bool,
    now: Millis,
) -> String {
    let state = actions.states.get(&f.id).and_then(Option::as_ref);
    let quieted_by = actions
        .quiet
        .get(&f.kind)
        .filter(|q| state.is_none() && q.alert_id != f.id);
    let mut s = match quieted_by {
        Some(q) => quiet_line(q, latest(actions, &q.alert_id), may_act),
        None => state_line(state, latest(actions, &f.id)),
    };
    if !may_act {
        return s;
    }
    let acted = state.is_some();
    let acknowledged = matches!(state, Some(ActionState::Acknowledged { .. }));
    let today = now.div_euclid(DAY);
    let hidden = |h: bool| if h { " hidden" } else { "" };
    let _ = write!(
        s,
        "<div class=\"act\" data-alert-id=\"{id}\">\
         <button type=\"button\" class=\"ack\" data-action=\"acknowledge\"{ack_hidden}>Acknowledge</button>\
         <label>until <input type=\"date\" name=\"until\" value=\"{until}\" min=\"{min}\" required></label>\
         <label class=\"why\">reason <input type=\"text\" name=\"reason\" maxlength=\"1000\" \
         placeholder=\"required to snooze or dismiss\"></label>\
         <button type=\"button\" class=\"snooze\" data-action=\"snooze\">Snooze</button>\
         <button type=\"button\" class=\"not-a-risk\" data-action=\"not_a_risk\">Not a risk</button>\
         <button type=\"button\" class=\"reopen\" data-action=\"reopen\"{reopen_hidden}>Reopen</button>\
         <p class=\"act-error\" role=\"alert\" hidden></p></div>",
        id = e(&f.id),
        ack_hidden = hidden(acknowledged),
        until = format_day(today + DEFAULT_SNOOZE_DAYS),
        min = format_day(today + 1),
        reopen_hidden = hidden(!acted),
    );
    s
}

/// A past action in words.
fn verb(a: &ActionEntry) -> String {
    match a.record.action {
        ActionKind::Acknowledge => "acknowledged".into(),
        ActionKind::Reopen => "reopened".into(),
        ActionKind::Snooze => format!("snoozed until {}", a.record.until_ms.map_or("-".into(), at)),
        ActionKind::NotARisk => format!(
            "marked not a risk until {}",
            a.record.until_ms.map_or("-".into(), at)
        ),
    }
}

/// The account's action history, newest first.
pub fn history(actions: &AccountActions) -> String {
    let mut b = String::from("<section class=\"actions\"><h2>Actions</h2>");
    if actions.actions.is_empty() {
        b.push_str("<p class=\"muted\">Nobody has acted on this account's alerts.</p>");
    }
    b.push_str("<ol class=\"actions\">");
    for a in &actions.actions {
        let r = &a.record;
        let _ = write!(
            b,
            "<li class=\"{}\">{} {} {} <small class=\"id\">{}</small>{}</li>",
            r.action.as_str(),
            at(r.at_ms),
            e(&r.by),
            verb(a),
            e(&r.alert_id),
            if r.reason.is_empty() {
                String::new()
            } else {
                format!(": <q class=\"reason\">{}</q>", e(&r.reason))
            }
        );
    }
    b.push_str("</ol></section>");
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::record::ActionRecord;
    use crate::inbox::model::Evidence;

    const NOW: Millis = 1_780_000_000_000;

    fn alert() -> FiringAlert {
        FiringAlert {
            id: "acme/inactive/2026-05-01".into(),
            kind: "inactive".into(),
            severity: "warning".into(),
            since: "2026-05-15T00:00:00.000Z".into(),
            summary: "gone dark".into(),
            evidence: Evidence::from_value(&serde_json::Value::Null),
        }
    }

    fn entry(action: ActionKind, reason: &str, until: Option<Millis>) -> ActionEntry {
        ActionEntry::from(ActionRecord {
            alert_id: "acme/inactive/2026-05-01".into(),
            account_id: "acme".into(),
            action,
            by: "ana@example.com".into(),
            at_ms: NOW - 1000,
            reason: reason.into(),
            until_ms: until,
            source: Default::default(),
            origin: String::new(),
        })
    }

    fn with(entries: Vec<ActionEntry>, state: Option<ActionState>) -> AccountActions {
        AccountActions {
            account_id: "acme".into(),
            states: [("acme/inactive/2026-05-01".to_string(), state)]
                .into_iter()
                .collect(),
            actions: entries,
            quiet: Default::default(),
        }
    }

    #[test]
    fn an_open_alert_offers_every_action_but_reopen() {
        let html = alert_actions(&alert(), &with(vec![], None), true, NOW);
        assert!(html.contains("data-state=\"open\""));
        assert!(html.contains("data-alert-id=\"acme/inactive/2026-05-01\""));
        assert!(html.contains("data-action=\"acknowledge\">"));
        assert!(html.contains("data-action=\"reopen\" hidden>"));
        // Snooze defaults to a week ahead, not before tomorrow.
        let today = NOW.div_euclid(DAY);
        assert!(html.contains(&format!("value=\"{}\"", format_day(today + 7))));
        assert!(html.contains(&format!("min=\"{}\"", format_day(today + 1))));
        // No inline handler or style: the CSP would refuse them.
        assert!(!html.contains("onclick") && !html.contains("style="));
    }

    #[test]
    fn a_snoozed_alert_shows_until_who_and_why_escaped_and_offers_reopen() {
        let until = NOW + 3 * DAY;
        let state = ActionState::Snoozed {
            by: "ana@example.com".into(),
            until_ms: until,
        };
        let a = with(
            vec![entry(
                ActionKind::Snooze,
                "<script>alert(1)</script> renewal call",
                Some(until),
            )],
            Some(state),
        );
        let html = alert_actions(&alert(), &a, true, NOW);
        assert!(html.contains("data-state=\"snoozed\""));
        assert!(html.contains(&format!("Snoozed until {}", at(until))));
        assert!(html.contains("by ana@example.com"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; renewal call"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("data-action=\"reopen\">"));
        let hist = history(&a);
        assert!(hist.contains("snoozed until"));
        assert!(!hist.contains("<script>"));
    }

    #[test]
    fn whoever_may_not_act_sees_the_state_and_no_control() {
        let state = ActionState::Acknowledged {
            by: "ana@example.com".into(),
            at_ms: NOW - 1000,
        };
        let a = with(vec![entry(ActionKind::Acknowledge, "", None)], Some(state));
        let html = alert_actions(&alert(), &a, false, NOW);
        assert!(html.contains("Acknowledged by ana@example.com"));
        assert!(!html.contains("<button"));
        // The owner, acknowledged: no second Acknowledge, Reopen offered.
        let owner = alert_actions(&alert(), &a, true, NOW);
        assert!(owner.contains("data-action=\"acknowledge\" hidden>"));
        assert!(owner.contains("data-action=\"reopen\">"));
    }

    #[test]
    fn a_reopened_or_expired_alert_reads_open() {
        let a = with(vec![entry(ActionKind::Reopen, "", None)], None);
        assert!(alert_actions(&alert(), &a, false, NOW).contains("Open (reopened)"));
        let b = with(vec![entry(ActionKind::Snooze, "x", Some(NOW - 1))], None);
        assert!(alert_actions(&alert(), &b, false, NOW).contains("snooze ran out"));
        assert!(history(&with(vec![], None)).contains("Nobody has acted"));
    }

    #[test]
    fn an_alert_quiet_through_another_of_its_kind_says_so_and_offers_to_reopen_that_one() {
        let other = "acme/inactive/2026-03-01";
        let mut snoozed = entry(ActionKind::Snooze, "renewal <call>", Some(NOW + DAY));
        snoozed.record.alert_id = other.into();
        let mut a = with(vec![snoozed], None);
        a.quiet.insert(
            "inactive".into(),
            QuietBy {
                alert_id: other.into(),
                state: ActionState::Snoozed {
                    by: "ana@example.com".into(),
                    until_ms: NOW + DAY,
                },
            },
        );
        let owner = alert_actions(&alert(), &a, true, NOW);
        assert!(owner.contains("data-state=\"quiet\""), "{owner}");
        assert!(owner.contains("renewal &lt;call&gt;"), "escaped: {owner}");
        assert!(owner.contains(&format!(
            "data-alert-id=\"{other}\"><button type=\"button\" class=\"reopen\""
        )));
        // Its own controls follow, for the alert itself.
        assert!(owner.contains("data-alert-id=\"acme/inactive/2026-05-01\""));
        let reader = alert_actions(&alert(), &a, false, NOW);
        assert!(reader.contains("data-state=\"quiet\"") && !reader.contains("<button"));
        // Its own state comes first; another kind is not quieted.
        let mut acked = a.clone();
        acked.states.insert(
            "acme/inactive/2026-05-01".into(),
            Some(ActionState::Acknowledged {
                by: "ben@example.com".into(),
                at_ms: NOW,
            }),
        );
        assert!(alert_actions(&alert(), &acked, false, NOW).contains("data-state=\"acknowledged\""));
        let mut drop = alert();
        drop.kind = "activity_drop".into();
        drop.id = "acme/activity_drop/2026-05-01".into();
        assert!(alert_actions(&drop, &a, false, NOW).contains("data-state=\"open\""));
    }
}
