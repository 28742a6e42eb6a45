//! What an action is: its kind, the record stored in the actions topic, the per-alert
//! value (the latest action is the state, a bounded history rides along), the state the
//! notifier and the inbox ask for, and the checks a request must pass before anything
//! is written. Pure: no I/O, time passed in.

use serde::{Deserialize, Serialize};

use crate::time::{format_rfc3339, parse_date, parse_rfc3339, Millis};

/// Longest reason, in characters.
pub const MAX_REASON: usize = 1000;
/// Longest alert id, in bytes.
pub const MAX_ALERT_ID: usize = 300;
/// Actions kept per alert (oldest dropped first).
pub const MAX_HISTORY: usize = 20;

/// What a person did about an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// "I'm on it": no repeats while the alert is open.
    Acknowledge,
    /// Quiet until a time, with a reason.
    Snooze,
    /// Feedback that the alert was wrong, with a reason; also quiet until a time.
    NotARisk,
    /// Undoes the previous action: the alert is open again.
    Reopen,
}

impl ActionKind {
    pub const ALL: [ActionKind; 4] = [
        ActionKind::Acknowledge,
        ActionKind::Snooze,
        ActionKind::NotARisk,
        ActionKind::Reopen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Acknowledge => "acknowledge",
            ActionKind::Snooze => "snooze",
            ActionKind::NotARisk => "not_a_risk",
            ActionKind::Reopen => "reopen",
        }
    }

    pub fn parse(s: &str) -> Option<ActionKind> {
        ActionKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the action needs a reason and an `until`.
    pub fn needs_until(self) -> bool {
        matches!(self, ActionKind::Snooze | ActionKind::NotARisk)
    }
}

/// One action as stored: who, when, on which alert of which account, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub alert_id: String,
    pub account_id: String,
    pub action: ActionKind,
    /// The signed-in email of the person who acted.
    pub by: String,
    pub at_ms: Millis,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<Millis>,
    /// Where the action came from (the API, a Slack button, an email link).
    #[serde(default, skip_serializing_if = "Source::is_api")]
    pub source: Source,
    /// The id of the request that carried it, when the channel has one that must be
    /// used once (a Slack action's `action_ts`, an email link's nonce): an action whose
    /// origin is already in the alert's history is a replay and is refused, on every
    /// instance, since the history travels through the topic.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
}

/// The channel an action came through; a label of the actions' metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `POST /api/v1/actions` (and the inbox's buttons, which call it).
    #[default]
    Api,
    /// An interactive button of a Slack message.
    Slack,
    /// A one-click link of an email.
    Email,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Api, Source::Slack, Source::Email];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Slack => "slack",
            Source::Email => "email",
        }
    }

    fn is_api(&self) -> bool {
        *self == Source::Api
    }
}

impl ActionRecord {
    /// A record for the unit tests: `kind` on `alert_id` by ana@x.io at `at_ms`, with
    /// the reason "r", until `until_ms`, through the API.
    #[cfg(test)]
    pub(crate) fn sample(
        alert_id: &str,
        kind: ActionKind,
        at_ms: Millis,
        until_ms: Option<Millis>,
    ) -> ActionRecord {
        ActionRecord {
            alert_id: alert_id.into(),
            account_id: account_of(alert_id).unwrap().into(),
            action: kind,
            by: "ana@x.io".into(),
            at_ms,
            reason: "r".into(),
            until_ms,
            source: Default::default(),
            origin: String::new(),
        }
    }

    /// The API's shape: the stored fields plus readable times.
    pub fn to_api(&self) -> serde_json::Value {
        serde_json::to_value(ActionEntry::from(self.clone())).expect("action serializes")
    }
}

/// An action as the API and the account page show it: the record and its times in
/// RFC 3339.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionEntry {
    #[serde(flatten)]
    pub record: ActionRecord,
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

impl From<ActionRecord> for ActionEntry {
    fn from(record: ActionRecord) -> ActionEntry {
        ActionEntry {
            at: format_rfc3339(record.at_ms),
            until: record.until_ms.map(format_rfc3339),
            record,
        }
    }
}

/// An account's actions: `GET /api/v1/actions?account_id=` and the account page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountActions {
    pub account_id: String,
    /// Newest first.
    pub actions: Vec<ActionEntry>,
    /// Each listed alert's state now (null: open).
    pub states: std::collections::BTreeMap<String, Option<ActionState>>,
    /// The kinds of the account's alerts quieted now by a snooze or "not a risk" on one
    /// of them: every alert of that kind is quiet (the notifier sends none), also one
    /// whose own state is open.
    pub quiet: std::collections::BTreeMap<String, QuietBy>,
}

/// Why every alert of one kind of an account is quiet: the alert whose action quiets
/// them, and that action's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuietBy {
    pub alert_id: String,
    #[serde(flatten)]
    pub state: ActionState,
}

/// The value stored under an alert id in the actions topic: its actions, oldest first,
/// at most [`MAX_HISTORY`]; the last one is the alert's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertActions {
    pub alert_id: String,
    pub account_id: String,
    pub history: Vec<ActionRecord>,
}

impl AlertActions {
    /// `prev` (what this process knows of the alert) with `a` added, bounded.
    pub fn with(prev: Option<AlertActions>, a: ActionRecord) -> AlertActions {
        let mut v = prev.unwrap_or_else(|| AlertActions {
            alert_id: a.alert_id.clone(),
            account_id: a.account_id.clone(),
            history: Vec::new(),
        });
        v.history.push(a);
        v.normalize();
        v
    }

    /// The time to record an action taken at `now` on an alert whose known history is
    /// `prev`: `now`, or just after the latest action known here when that one is not
    /// older (written by a host whose clock runs ahead). An action answers what its
    /// taker saw, so it must order after it: a reopen on a host whose clock is behind
    /// must not sort before the acknowledgement it undoes. Only actions taken on two
    /// hosts within the topic's delivery lag, neither seeing the other, are ordered by
    /// their clocks alone.
    pub fn time_after(prev: Option<&AlertActions>, now: Millis) -> Millis {
        match prev.and_then(|p| p.latest()) {
            Some(last) if last.at_ms >= now => last.at_ms + 1,
            _ => now,
        }
    }

    /// Every action of `self` and of `other` (two values of the same alert: what this
    /// process holds and what the topic delivered), each once. Two instances that act
    /// on one alert within the topic's delivery lag each write a history without the
    /// other's action; the union is what both took, and every instance computes the
    /// same one (see [`normalize`](Self::normalize)).
    pub fn merge(mut self, other: &AlertActions) -> AlertActions {
        self.history.extend(other.history.iter().cloned());
        self.normalize();
        self
    }

    /// The canonical form of a history: ordered by time (then by the other fields, so
    /// that every instance orders equal times alike), an action that is already there
    /// kept once, a request id (`origin`) used twice kept at its first use only (a Slack
    /// click or an email link used on two instances at once is one action), and the
    /// newest [`MAX_HISTORY`] kept.
    pub fn normalize(&mut self) {
        let key = |a: &ActionRecord| {
            (
                a.at_ms,
                a.by.clone(),
                a.action.as_str(),
                a.source.as_str(),
                a.origin.clone(),
                a.until_ms,
                a.reason.clone(),
            )
        };
        self.history.sort_by_cached_key(key);
        self.history.dedup();
        let mut origins = std::collections::HashSet::new();
        self.history
            .retain(|a| a.origin.is_empty() || origins.insert(a.origin.clone()));
        let extra = self.history.len().saturating_sub(MAX_HISTORY);
        self.history.drain(..extra);
    }

    pub fn latest(&self) -> Option<&ActionRecord> {
        self.history.last()
    }

    /// Whether an action with request id `origin` (non-empty) is in the history.
    pub fn has_origin(&self, origin: &str) -> bool {
        !origin.is_empty() && self.history.iter().any(|a| a.origin == origin)
    }

    /// Whether the value is well formed: every action is about this alert and account,
    /// and there is at least one. A record read from the topic that is not is skipped.
    pub fn is_consistent(&self) -> bool {
        !self.history.is_empty()
            && self.history.len() <= MAX_HISTORY
            && self
                .history
                .iter()
                .all(|a| a.alert_id == self.alert_id && a.account_id == self.account_id)
            && account_of(&self.alert_id) == Some(self.account_id.as_str())
    }

    /// The alert's state at `now` (None: open).
    pub fn state(&self, now: Millis) -> Option<ActionState> {
        let a = self.latest()?;
        match (a.action, a.until_ms) {
            (ActionKind::Acknowledge, _) => Some(ActionState::Acknowledged {
                by: a.by.clone(),
                at_ms: a.at_ms,
            }),
            (ActionKind::Snooze, Some(u)) if now < u => Some(ActionState::Snoozed {
                by: a.by.clone(),
                until_ms: u,
            }),
            (ActionKind::NotARisk, Some(u)) if now < u => Some(ActionState::NotARisk {
                by: a.by.clone(),
                until_ms: u,
            }),
            _ => None,
        }
    }
}

/// What the latest action says about an alert now. An alert with no action, reopened,
/// or whose snooze ran out has no state (it is open).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ActionState {
    /// Until the alert resolves (the notifier sends no repeat, still the resolution).
    Acknowledged {
        by: String,
        at_ms: Millis,
    },
    Snoozed {
        by: String,
        until_ms: Millis,
    },
    NotARisk {
        by: String,
        until_ms: Millis,
    },
}

/// The account of an alert id `{account_id}/{kind}/{episode}`, if the id has that
/// shape (a known kind, non-empty parts, bounded, no control characters).
pub fn account_of(alert_id: &str) -> Option<&str> {
    if alert_id.len() > MAX_ALERT_ID || alert_id.chars().any(char::is_control) {
        return None;
    }
    let mut parts = alert_id.rsplitn(3, '/');
    let (episode, kind, account) = (parts.next()?, parts.next()?, parts.next()?);
    let known = ["not_activated", "inactive", "activity_drop"].contains(&kind);
    (known && !episode.is_empty() && !account.is_empty()).then_some(account)
}

/// `until` as given: RFC 3339, or a date `YYYY-MM-DD` (its midnight UTC); it must be
/// after `now` and at most `horizon` ahead.
pub fn parse_until(s: &str, now: Millis, horizon: Millis) -> Result<Millis, String> {
    let t = if s.len() == 10 {
        parse_date(s)?
    } else {
        parse_rfc3339(s).map_err(|e| format!("until: {e}; use RFC 3339 or YYYY-MM-DD"))?
    };
    if t <= now {
        return Err("until is in the past".into());
    }
    if t > now + horizon {
        return Err(format!(
            "until is more than {} ahead (notify.max_silence)",
            crate::time::format_duration(horizon)
        ));
    }
    Ok(t)
}

/// A request as received, before the checks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAction {
    pub alert_id: String,
    pub action: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub until: Option<String>,
}

/// Why a request was refused: a short, bounded label for the metrics and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub bucket: &'static str,
    pub message: String,
}

fn refuse(bucket: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        bucket,
        message: message.into(),
    }
}

/// Checks `req` on its own (not who asks, not whether the alert exists) and builds
/// the record `by` would store at `now`.
pub fn validate(
    req: &NewAction,
    by: &str,
    now: Millis,
    horizon: Millis,
) -> Result<ActionRecord, Refusal> {
    let Some(action) = ActionKind::parse(&req.action) else {
        return Err(refuse(
            "bad_action",
            format!(
                "action {:?} is not one of acknowledge, snooze, not_a_risk, reopen",
                crate::notify::render::escape::cut(&req.action, 40)
            ),
        ));
    };
    let Some(account) = account_of(&req.alert_id) else {
        return Err(refuse(
            "bad_alert_id",
            "alert_id must look like {account_id}/{kind}/{episode} (kind: not_activated, \
             inactive or activity_drop; at most 300 bytes, no control characters)",
        ));
    };
    if req.reason.chars().count() > MAX_REASON {
        return Err(refuse(
            "bad_reason",
            format!("reason is longer than {MAX_REASON} characters"),
        ));
    }
    if req.reason.chars().any(|c| c.is_control() && c != '\n') {
        return Err(refuse("bad_reason", "reason contains a control character"));
    }
    let until_ms = if action.needs_until() {
        if req.reason.trim().is_empty() {
            return Err(refuse(
                "bad_reason",
                format!("a reason is required to {}", action.as_str()),
            ));
        }
        let Some(u) = req.until.as_deref() else {
            return Err(refuse(
                "bad_until",
                format!("until is required to {}", action.as_str()),
            ));
        };
        Some(parse_until(u, now, horizon).map_err(|e| refuse("bad_until", e))?)
    } else {
        if req.until.is_some() {
            return Err(refuse(
                "bad_until",
                format!("{} takes no until", action.as_str()),
            ));
        }
        None
    };
    Ok(ActionRecord {
        alert_id: req.alert_id.clone(),
        account_id: account.to_string(),
        action,
        by: by.to_string(),
        at_ms: now,
        reason: req.reason.clone(),
        until_ms,
        source: Source::Api,
        origin: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::DAY;

    const NOW: Millis = 1_780_000_000_000;

    fn req(action: &str, reason: &str, until: Option<&str>) -> NewAction {
        NewAction {
            alert_id: "acme/inactive/2026-03-01".into(),
            action: action.into(),
            reason: reason.into(),
            until: until.map(str::to_string),
        }
    }

    #[test]
    fn alert_ids_are_checked_by_shape() {
        assert_eq!(account_of("acme/inactive/2026-03-01"), Some("acme"));
        assert_eq!(account_of("a/b/activity_drop/2026-03-01"), Some("a/b"));
        assert_eq!(
            account_of("acme/not_activated/2026-01-05+30d"),
            Some("acme")
        );
        for bad in [
            "",
            "acme",
            "acme/inactive",
            "/inactive/2026",
            "acme/inactive/",
            "acme/churned/2026",
            "acme\n/inactive/2026",
        ] {
            assert_eq!(account_of(bad), None, "{bad:?}");
        }
        assert_eq!(account_of(&format!("{}/inactive/1", "a".repeat(400))), None);
    }

    #[test]
    fn requests_are_validated() {
        let h = 90 * DAY;
        let tomorrow = format_rfc3339(NOW + DAY);
        let ok = validate(
            &req("snooze", "call on Friday", Some(&tomorrow)),
            "ana@x.io",
            NOW,
            h,
        )
        .unwrap();
        assert_eq!(ok.account_id, "acme");
        assert_eq!(ok.until_ms, Some(NOW + DAY));
        assert_eq!(ok.by, "ana@x.io");
        let ack = validate(&req("acknowledge", "", None), "ana@x.io", NOW, h).unwrap();
        assert_eq!((ack.action, ack.until_ms), (ActionKind::Acknowledge, None));
        // A date is its midnight UTC.
        let d = validate(
            &req("not_a_risk", "seasonal", Some("2026-06-30")),
            "a",
            NOW,
            h,
        )
        .unwrap();
        assert_eq!(d.until_ms, Some(parse_date("2026-06-30").unwrap()));
        let cases: [(NewAction, &str, &str); 9] = [
            (req("delete", "", None), "bad_action", "not one of"),
            (
                req("snooze", "", Some(&tomorrow)),
                "bad_reason",
                "reason is required",
            ),
            (
                req("not_a_risk", "  ", Some(&tomorrow)),
                "bad_reason",
                "reason is required",
            ),
            (req("snooze", "x", None), "bad_until", "until is required"),
            (
                req("snooze", "x", Some("2001-01-01")),
                "bad_until",
                "in the past",
            ),
            (
                req("snooze", "x", Some(&format_rfc3339(NOW + 100 * DAY))),
                "bad_until",
                "ahead",
            ),
            (req("snooze", "x", Some("next week")), "bad_until", "until"),
            (
                req("acknowledge", "", Some(&tomorrow)),
                "bad_until",
                "takes no until",
            ),
            (
                req("snooze", &"x".repeat(MAX_REASON + 1), Some(&tomorrow)),
                "bad_reason",
                "longer",
            ),
        ];
        for (r, bucket, needle) in cases {
            let e = validate(&r, "a", NOW, h).unwrap_err();
            assert_eq!(e.bucket, bucket, "{r:?}");
            assert!(e.message.contains(needle), "{r:?}: {}", e.message);
        }
        let mut forged = req("snooze", "ok\u{1b}[31m", Some(&tomorrow));
        assert_eq!(
            validate(&forged, "a", NOW, h).unwrap_err().bucket,
            "bad_reason"
        );
        forged.alert_id = "nope".into();
        forged.reason = "fine".into();
        assert_eq!(
            validate(&forged, "a", NOW, h).unwrap_err().bucket,
            "bad_alert_id"
        );
    }

    #[test]
    fn the_latest_action_is_the_state_and_history_is_bounded() {
        let h = 90 * DAY;
        let until = format_rfc3339(NOW + DAY);
        let snooze = validate(&req("snooze", "call", Some(&until)), "ana", NOW, h).unwrap();
        let v = AlertActions::with(None, snooze);
        assert!(v.is_consistent());
        assert_eq!(
            v.state(NOW + 1),
            Some(ActionState::Snoozed {
                by: "ana".into(),
                until_ms: NOW + DAY
            })
        );
        // The snooze runs out: open again.
        assert_eq!(v.state(NOW + DAY), None);
        let reopened = AlertActions::with(
            Some(v.clone()),
            validate(&req("reopen", "", None), "ben", NOW + 5, h).unwrap(),
        );
        assert_eq!(reopened.state(NOW + 6), None);
        let mut many = reopened;
        for i in 0..(MAX_HISTORY as i64 + 5) {
            let a = validate(&req("acknowledge", "", None), "ana", NOW + 10 + i, h).unwrap();
            many = AlertActions::with(Some(many), a);
        }
        assert_eq!(many.history.len(), MAX_HISTORY);
        assert_eq!(
            many.latest().unwrap().at_ms,
            NOW + 10 + MAX_HISTORY as i64 + 4
        );
        assert!(matches!(
            many.state(NOW + 1000 * DAY),
            Some(ActionState::Acknowledged { .. })
        ));
        // A record whose actions are about another alert is not believed.
        let mut odd = many.clone();
        odd.history[0].alert_id = "globex/inactive/1".into();
        assert!(!odd.is_consistent());
        let mut wrong_account = many;
        wrong_account.account_id = "globex".into();
        for a in &mut wrong_account.history {
            a.account_id = "globex".into();
        }
        assert!(!wrong_account.is_consistent());
    }

    #[test]
    fn an_action_orders_after_what_its_taker_saw_whatever_the_clocks() {
        let h = 90 * DAY;
        // Acknowledged on a host whose clock runs a minute ahead.
        let ack = validate(&req("acknowledge", "", None), "ana", NOW + 60_000, h).unwrap();
        let v = AlertActions::with(None, ack);
        // Reopened ten seconds later on this host: its clock says NOW + 10 s.
        let mut reopen = validate(&req("reopen", "", None), "ben", NOW + 10_000, h).unwrap();
        reopen.at_ms = AlertActions::time_after(Some(&v), reopen.at_ms);
        assert_eq!(reopen.at_ms, NOW + 60_001);
        let v = AlertActions::with(Some(v), reopen.clone());
        assert_eq!(v.latest(), Some(&reopen));
        assert_eq!(v.state(NOW + 20_000), None, "the reopen wins");
        // With the clocks in order, the time is the taker's own.
        assert_eq!(
            AlertActions::time_after(Some(&v), NOW + 90_000),
            NOW + 90_000
        );
        assert_eq!(AlertActions::time_after(None, NOW), NOW);
    }

    #[test]
    fn merging_two_values_keeps_every_action_once_in_one_order() {
        let h = 90 * DAY;
        let until = format_rfc3339(NOW + DAY);
        let ack = validate(&req("acknowledge", "", None), "ana", NOW, h).unwrap();
        let base = AlertActions::with(None, ack);
        // Two instances act within the delivery lag: each appends to the same base.
        let mut snooze =
            validate(&req("snooze", "call", Some(&until)), "ben", NOW + 20, h).unwrap();
        snooze.origin = "slack:UBEN:1.2".into();
        let reopen = validate(&req("reopen", "", None), "lee", NOW + 10, h).unwrap();
        let a = AlertActions::with(Some(base.clone()), snooze.clone());
        let b = AlertActions::with(Some(base.clone()), reopen.clone());
        let ab = a.clone().merge(&b);
        assert_eq!(
            ab,
            b.clone().merge(&a),
            "every instance computes the same union"
        );
        assert_eq!(ab.history.len(), 3);
        assert_eq!(ab.latest(), Some(&snooze), "ordered by time");
        assert_eq!(
            ab.clone().merge(&a),
            ab,
            "merging what is held changes nothing"
        );
        assert_eq!(
            ab.clone().merge(&base),
            ab,
            "an older value rolls nothing back"
        );
        // The same click used on two instances at once: kept once, at its first use.
        let mut again = snooze.clone();
        again.at_ms += 5;
        let twice = ab.clone().merge(&AlertActions::with(Some(b), again));
        assert_eq!(twice, ab);
        // Bounded: the newest MAX_HISTORY of the union.
        let mut wide = base;
        for i in 0..MAX_HISTORY as i64 {
            let x = validate(&req("acknowledge", "", None), "ana", NOW + 100 + i, h).unwrap();
            wide = AlertActions::with(Some(wide), x);
        }
        let m = wide.clone().merge(&ab);
        assert_eq!(m.history.len(), MAX_HISTORY);
        assert_eq!(
            m,
            wide.history
                .iter()
                .fold(ab, |v, x| AlertActions::with(Some(v), x.clone()))
        );
    }
}
