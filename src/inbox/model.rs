//! The shapes the inbox answers with: who is asking ([`Principal`]), what they ask
//! ([`ListQuery`]) and what the view gives back (one account in brief or in full, the
//! team). The JSON API serializes these types as they are, the HTML pages render them,
//! and [`InboxView`] is the one interface between the read model and both.

use serde::{Deserialize, Serialize};

use crate::accounts::AccountMeta;

/// What a signed-in person may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees and acts on the accounts they own.
    Csm,
    /// Sees and acts on every account, and the team view.
    Lead,
    /// As lead; also manages what only an administrator may (e.g. silences for all).
    Admin,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// Lower-case email (the proxy's user header or the token's configured owner);
    /// matched against an account's `owner_email`.
    pub email: String,
    pub role: Role,
}

impl Principal {
    /// Whether this caller may see (and act on) an account owned by `owner_email`.
    pub fn may_see(&self, owner_email: Option<&str>) -> bool {
        match self.role {
            Role::Lead | Role::Admin => true,
            Role::Csm => owner_email.is_some_and(|o| o.eq_ignore_ascii_case(&self.email)),
        }
    }

    /// Whether this caller sees every account (the team view, other owners' filters).
    pub fn sees_all(&self) -> bool {
        matches!(self.role, Role::Lead | Role::Admin)
    }
}

/// Largest page a list request may ask for.
pub const MAX_PAGE: usize = 200;
/// Page size when the request names none.
pub const DEFAULT_PAGE: usize = 50;

/// `GET /api/v1/accounts` (and the inbox page): filters, then priority order, then a
/// page. Every filter is optional; `at_risk` (default true) keeps accounts with at
/// least one firing alert.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// Accounts owned by this email (a CSM may only name themselves).
    pub owner: Option<String>,
    /// Accounts with a firing alert of this kind (`not_activated`, `inactive`,
    /// `activity_drop`).
    pub kind: Option<String>,
    /// Accounts with a firing alert of this severity (`warning`, `critical`).
    pub severity: Option<String>,
    pub segment: Option<String>,
    pub at_risk: bool,
    /// Rows skipped (paging).
    pub offset: usize,
    /// Rows returned, 1..=[`MAX_PAGE`].
    pub limit: usize,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            owner: None,
            kind: None,
            severity: None,
            segment: None,
            at_risk: true,
            offset: 0,
            limit: DEFAULT_PAGE,
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Rows matching the filters, over all pages.
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    /// The offset of the next page, when there is one.
    pub next_offset: Option<usize>,
}

/// An alert firing now on an account.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FiringAlert {
    /// The alert id (`account/kind/episode`).
    pub id: String,
    pub kind: String,
    pub severity: String,
    /// When it fired (event time, RFC 3339).
    pub since: String,
    /// The record's one-line explanation.
    pub summary: String,
    /// The record's evidence, as published.
    pub evidence: Evidence,
}

/// An alert's evidence kept as the compact JSON the view stored and written out as
/// is: a list row costs a copy, not a parse and a re-serialization.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Evidence(pub Box<serde_json::value::RawValue>);

impl Evidence {
    /// The evidence of a JSON value.
    pub fn from_value(v: &serde_json::Value) -> Evidence {
        Evidence(serde_json::value::to_raw_value(v).expect("a Value serializes"))
    }

    /// Evidence from JSON text (checked, kept as written).
    pub fn from_json(text: &str) -> Result<Evidence, serde_json::Error> {
        serde_json::value::RawValue::from_string(text.to_string()).map(Evidence)
    }

    /// The evidence parsed, for a page that shows its fields.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }
}

impl PartialEq for Evidence {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

/// Where an account is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Known from metadata or alerts only: no state in the changelog.
    Unknown,
    Onboarding,
    Activated,
    /// The lifecycle ended (the subscription ended): the changelog keeps the account
    /// without a lifecycle.
    Ended,
}

/// One account in brief: a row of the inbox list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountSummary {
    pub account_id: String,
    pub name: Option<String>,
    pub owner_email: Option<String>,
    pub segment: Option<String>,
    /// ARR as used by the priority score (`arr`, else 12 x `mrr`).
    pub arr: Option<f64>,
    pub renewal_date: Option<String>,
    pub lifecycle: Lifecycle,
    /// The account's priority score now (sum over its firing alerts; 0 when none).
    pub priority: f64,
    /// Last counted activity (RFC 3339).
    pub last_activity: Option<String>,
    /// Firing alerts, highest priority first.
    pub firing: Vec<FiringAlert>,
    /// Daily events over the kept window, oldest first, ending at the account's
    /// current day (for a sparkline).
    pub sparkline: Vec<u32>,
}

/// One day of an account's activity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayPoint {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub events: u32,
    /// Distinct active users that day, where the state keeps them.
    pub active_users: Option<u32>,
}

/// One activation criterion and how far the account is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Criterion {
    /// e.g. `active_days`, `active_users`, `events`, `event:report.created`.
    pub name: String,
    pub target: u64,
    pub progress: u64,
    pub met: bool,
}

/// Activation progress against the configured criteria.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activation {
    /// Lifecycle start (RFC 3339).
    pub started: String,
    /// The configured deadlines, in days after the start.
    pub deadlines_days: Vec<u32>,
    pub criteria: Vec<Criterion>,
    /// When the account activated, if it has.
    pub activated_at: Option<String>,
}

/// What the activity-drop test expects against what it sees.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baseline {
    /// Expected events per day from the baseline window.
    pub expected_per_day: f64,
    pub baseline_days: u32,
    pub recent_days: u32,
}

/// One alert transition in the account's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    pub id: String,
    pub kind: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub severity: String,
    pub event_time: String,
    pub emitted_at: String,
    pub summary: String,
}

/// A silence that covers the account.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SilenceEntry {
    pub id: String,
    pub kind: Option<String>,
    pub until: String,
    pub created_by: Option<String>,
    pub comment: Option<String>,
}

/// One account in full: `GET /api/v1/accounts/{id}` and the account page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountDetail {
    #[serde(flatten)]
    pub summary: AccountSummary,
    pub meta: Option<AccountMeta>,
    /// Present while onboarding (and kept once activated, for the checklist).
    pub activation: Option<Activation>,
    /// Daily activity over the kept window, oldest first.
    pub series: Vec<DayPoint>,
    /// What the series counts: `events` (in `events`) or `active_users` (in
    /// `active_users`, with `events` 0), as the activity-drop rule is configured.
    pub series_metric: String,
    pub baseline: Option<Baseline>,
    /// Recent alert transitions, newest first (bounded).
    pub history: Vec<HistoryEntry>,
    pub silences: Vec<SilenceEntry>,
    /// The actions on this account's alerts, where the process serves actions: the
    /// same object as `GET /api/v1/actions?account_id=` (`actions`, newest first, and
    /// each alert's current `states`); absent elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<crate::actions::record::AccountActions>,
}

/// One owner's line in the team view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TeamRow {
    /// The owner's email; accounts without one are grouped under `None`.
    pub owner_email: Option<String>,
    pub accounts: usize,
    pub at_risk: usize,
    pub critical: usize,
    /// Firing transitions emitted in the last 7 days.
    pub alerts_this_week: usize,
    /// Sum of the owner's account priorities.
    pub priority: f64,
}

/// How current the view is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewStatus {
    /// Whether every partition of both topics has been read to the end seen at start.
    pub caught_up: bool,
    pub accounts: usize,
    /// Wall-clock ms of the last record applied, if any.
    pub last_update_ms: Option<i64>,
}

/// The read model as the API and pages see it. Implementations are shared between
/// request tasks, so every method is `&self` and quick (no I/O).
pub trait InboxView: Send + Sync + 'static {
    /// The accounts `who` may see that match `q`, in priority order (highest first,
    /// ties by account id).
    fn list(&self, who: &Principal, q: &ListQuery) -> Page<AccountSummary>;
    /// One account in full, whoever owns it (the caller checks `may_see`).
    fn account(&self, account_id: &str) -> Option<AccountDetail>;
    /// Per owner, highest total priority first.
    fn team(&self) -> Vec<TeamRow>;
    fn status(&self) -> ViewStatus;
    /// What the latest action on `alert_id` says now (None: open, or no actions
    /// served here), for the list's state badges.
    fn alert_state(&self, _alert_id: &str) -> Option<crate::actions::ActionState> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csm_sees_only_their_own_accounts() {
        let ana = Principal {
            email: "ana@x.io".into(),
            role: Role::Csm,
        };
        assert!(ana.may_see(Some("Ana@X.io")));
        assert!(!ana.may_see(Some("ben@x.io")));
        assert!(!ana.may_see(None));
        assert!(!ana.sees_all());
        let lead = Principal {
            email: "lee@x.io".into(),
            role: Role::Lead,
        };
        assert!(lead.may_see(Some("ben@x.io")) && lead.may_see(None) && lead.sees_all());
    }
}
