//! An in-memory [`InboxView`] for tests of the pages and of sign-in (unit tests here,
//! `tests/inbox_security.rs`, `tests/browser.rs`): a handful of accounts owned by two
//! CSMs, with firing alerts, evidence, a daily series and a history. Not used by the
//! daemon; the real view is `inbox::view`.

use crate::accounts::AccountMeta;
use crate::inbox::model::*;
use crate::time::{format_day, format_rfc3339, DAY};

/// The CSMs who own the fixture's accounts.
pub const ANA: &str = "ana@example.com";
pub const BEN: &str = "ben@example.com";

/// Accounts in memory; `list` filters, orders and pages them as the real view does.
#[derive(Debug, Clone, Default)]
pub struct FixtureView {
    pub accounts: Vec<AccountDetail>,
}

/// One account of the fixture.
#[allow(clippy::too_many_arguments)]
fn account(
    id: &str,
    name: &str,
    owner: &str,
    arr: f64,
    renewal: &str,
    segment: &str,
    firing: &[(&str, &str, f64)],
    level: u32,
    today: i64,
) -> AccountDetail {
    // 56 days: flat at `level`, then the last 7 days at a fifth of it when an
    // activity_drop fires (the shape the chart shows).
    let drop = firing.iter().any(|(k, _, _)| *k == "activity_drop");
    let dark = firing.iter().any(|(k, _, _)| *k == "inactive");
    let series: Vec<DayPoint> = (0..56)
        .map(|i| {
            let day = today - 55 + i;
            let weekly = if day.rem_euclid(7) >= 5 {
                level / 3
            } else {
                level
            };
            let events = match () {
                _ if dark && i >= 40 => 0,
                _ if drop && i >= 49 => weekly / 5,
                _ => weekly + (i as u32 * 7919) % (level / 4 + 1),
            };
            DayPoint {
                day: format_day(day),
                events,
                active_users: Some(events.div_ceil(10)),
            }
        })
        .collect();
    let since = format_rfc3339((today - 2) * DAY + 9 * 3_600_000);
    let firing: Vec<FiringAlert> = firing
        .iter()
        .enumerate()
        .map(|(i, (kind, severity, _))| FiringAlert {
            id: format!("{id}/{kind}/{i}"),
            kind: kind.to_string(),
            severity: severity.to_string(),
            since: since.clone(),
            summary: match *kind {
                "activity_drop" => {
                    format!("{name}: activity fell 80% (7 days vs the 28 before, p < 0.001)")
                }
                "inactive" => format!("{name}: no activity for 16 days"),
                _ => format!("{name}: not activated 30 days after the start"),
            },
            evidence: crate::inbox::model::Evidence::from_value(&serde_json::json!({
                "recent_events": 140, "expected_events": 700.5, "p_value": 0.00002,
                "window": "7d vs 28d",
            })),
        })
        .collect();
    let priority = firing_priority(&firing, arr);
    let onboarding = firing.iter().any(|f| f.kind == "not_activated");
    let started = (today - 120) * DAY;
    let meta = AccountMeta {
        account_id: id.into(),
        name: Some(name.into()),
        owner_email: Some(owner.into()),
        crm_url: Some(format!("https://crm.example.com/accounts/{id}")),
        renewal_date: Some(renewal.into()),
        arr: Some(arr),
        seats: Some(40),
        segment: Some(segment.into()),
        plan: Some("business".into()),
        ..AccountMeta::default()
    };
    let history = firing
        .iter()
        .map(|f| HistoryEntry {
            id: f.id.clone(),
            kind: f.kind.clone(),
            status: "firing".into(),
            severity: f.severity.clone(),
            event_time: f.since.clone(),
            emitted_at: f.since.clone(),
            summary: f.summary.clone(),
        })
        .chain(std::iter::once(HistoryEntry {
            id: format!("{id}/inactive/0"),
            kind: "inactive".into(),
            status: "resolved".into(),
            severity: "warning".into(),
            event_time: format_rfc3339((today - 30) * DAY),
            emitted_at: format_rfc3339((today - 30) * DAY),
            summary: format!("{name}: active again"),
        }))
        .collect();
    AccountDetail {
        summary: AccountSummary {
            account_id: id.into(),
            name: Some(name.into()),
            owner_email: Some(owner.into()),
            segment: Some(segment.into()),
            arr: Some(arr),
            renewal_date: Some(renewal.into()),
            lifecycle: if onboarding {
                Lifecycle::Onboarding
            } else {
                Lifecycle::Activated
            },
            priority,
            last_activity: Some(format_rfc3339(today * DAY - 3_600_000)),
            firing,
            sparkline: series.iter().map(|d| d.events).collect(),
        },
        meta: Some(meta),
        activation: Some(Activation {
            started: format_rfc3339(started),
            deadlines_days: vec![30, 90],
            criteria: vec![
                Criterion {
                    name: "active_days".into(),
                    target: 3,
                    progress: 3,
                    met: true,
                },
                Criterion {
                    name: "event:report.created".into(),
                    target: 1,
                    progress: u64::from(!onboarding),
                    met: !onboarding,
                },
            ],
            activated_at: (!onboarding).then(|| format_rfc3339(started + 9 * DAY)),
        }),
        series,
        series_metric: "events".into(),
        baseline: Some(Baseline {
            expected_per_day: level as f64 * 0.8,
            baseline_days: 28,
            recent_days: 7,
        }),
        history,
        silences: Vec::new(),
        actions: None,
    }
}

fn firing_priority(f: &[FiringAlert], arr: f64) -> f64 {
    f.iter()
        .map(|a| if a.severity == "critical" { 3.0 } else { 1.0 })
        .sum::<f64>()
        * (1.0 + (1.0 + arr / 10_000.0).ln())
}

impl FixtureView {
    /// Six accounts: four of Ana's (one healthy, one whose name is markup), two of
    /// Ben's; `today` is the day number (days since 1970) the series end on.
    pub fn sample(today: i64) -> FixtureView {
        let r = |d: i64| format_day(today + d);
        FixtureView {
            accounts: vec![
                account(
                    "acme",
                    "Acme Corp",
                    ANA,
                    500_000.0,
                    &r(30),
                    "enterprise",
                    &[("activity_drop", "critical", 0.0)],
                    400,
                    today,
                ),
                account(
                    "initech",
                    "Initech",
                    ANA,
                    20_000.0,
                    &r(200),
                    "smb",
                    &[("inactive", "warning", 0.0)],
                    60,
                    today,
                ),
                account(
                    "umbrella",
                    "Umbrella <script>alert(1)</script>",
                    ANA,
                    90_000.0,
                    &r(75),
                    "mid",
                    &[
                        ("not_activated", "critical", 0.0),
                        ("inactive", "warning", 0.0),
                    ],
                    30,
                    today,
                ),
                account(
                    "hooli",
                    "Hooli",
                    ANA,
                    5_000.0,
                    &r(300),
                    "smb",
                    &[],
                    80,
                    today,
                ),
                account(
                    "globex",
                    "Globex",
                    BEN,
                    300_000.0,
                    &r(15),
                    "enterprise",
                    &[("activity_drop", "critical", 0.0)],
                    300,
                    today,
                ),
                account(
                    "soylent",
                    "Soylent",
                    BEN,
                    10_000.0,
                    &r(120),
                    "smb",
                    &[("inactive", "warning", 0.0)],
                    50,
                    today,
                ),
            ],
        }
    }

    fn find(&self, id: &str) -> Option<&AccountDetail> {
        self.accounts.iter().find(|a| a.summary.account_id == id)
    }
}

impl InboxView for FixtureView {
    fn list(&self, who: &Principal, q: &ListQuery) -> Page<AccountSummary> {
        let mut rows: Vec<&AccountSummary> = self
            .accounts
            .iter()
            .map(|a| &a.summary)
            .filter(|s| who.may_see(s.owner_email.as_deref()))
            .filter(|s| {
                q.owner.as_ref().is_none_or(|o| {
                    s.owner_email
                        .as_deref()
                        .is_some_and(|e| e.eq_ignore_ascii_case(o))
                })
            })
            .filter(|s| !q.at_risk || !s.firing.is_empty())
            .filter(|s| {
                q.kind
                    .as_ref()
                    .is_none_or(|k| s.firing.iter().any(|f| &f.kind == k))
            })
            .filter(|s| {
                q.severity
                    .as_ref()
                    .is_none_or(|v| s.firing.iter().any(|f| &f.severity == v))
            })
            .filter(|s| {
                q.segment
                    .as_ref()
                    .is_none_or(|g| s.segment.as_ref() == Some(g))
            })
            .collect();
        rows.sort_by(|a, b| {
            b.priority
                .total_cmp(&a.priority)
                .then_with(|| a.account_id.cmp(&b.account_id))
        });
        let total = rows.len();
        let items: Vec<AccountSummary> = rows
            .into_iter()
            .skip(q.offset)
            .take(q.limit)
            .cloned()
            .collect();
        let end = q.offset + items.len();
        Page {
            items,
            total,
            offset: q.offset,
            limit: q.limit,
            next_offset: (end < total).then_some(end),
        }
    }

    fn account(&self, account_id: &str) -> Option<AccountDetail> {
        self.find(account_id).cloned()
    }

    fn team(&self) -> Vec<TeamRow> {
        let mut rows: Vec<TeamRow> = Vec::new();
        for a in &self.accounts {
            let s = &a.summary;
            let i = match rows.iter().position(|r| r.owner_email == s.owner_email) {
                Some(i) => i,
                None => {
                    rows.push(TeamRow {
                        owner_email: s.owner_email.clone(),
                        accounts: 0,
                        at_risk: 0,
                        critical: 0,
                        alerts_this_week: 0,
                        priority: 0.0,
                    });
                    rows.len() - 1
                }
            };
            let r = &mut rows[i];
            r.accounts += 1;
            r.at_risk += usize::from(!s.firing.is_empty());
            r.critical += usize::from(s.firing.iter().any(|f| f.severity == "critical"));
            r.alerts_this_week += s.firing.len();
            r.priority += s.priority;
        }
        rows.sort_by(|a, b| b.priority.total_cmp(&a.priority));
        rows
    }

    fn status(&self) -> ViewStatus {
        ViewStatus {
            caught_up: true,
            accounts: self.accounts.len(),
            last_update_ms: Some(crate::time::wall_clock_ms()),
        }
    }
}
