//! Answers from the store: a page of accounts in priority order, one account in full,
//! the team. Pure reads of a [`Store`] at a given time.
//!
//! A list for one owner (every CSM's list, a lead's owner filter) sorts that owner's
//! few hundred accounts; any other list walks the priority order, stopping as soon as
//! the page is filled when the total is known without counting (at risk, no other
//! filter; or all accounts, no filter).

use std::cmp::Ordering;

use super::records::{KINDS, SEVERITIES};
use super::store::{Entry, Store, NONE};
use crate::inbox::model::{
    AccountDetail, AccountSummary, Activation, Baseline, Criterion, DayPoint, FiringAlert,
    HistoryEntry, Lifecycle, ListQuery, Page, Principal, SilenceEntry, TeamRow,
};
use crate::time::{day_of, format_day, format_rfc3339, Millis, DAY};

/// Whether an entry passes the filters other than the owner.
struct Filter {
    at_risk: bool,
    kind: Option<u8>,
    severity: Option<u8>,
    /// `Some(NONE)`: a segment nobody has.
    segment: Option<u32>,
}

impl Filter {
    fn new(s: &Store, q: &ListQuery) -> Filter {
        let pos = |list: &[&str], v: &Option<String>| {
            v.as_deref().map(|v| {
                list.iter()
                    .position(|k| *k == v)
                    .map_or(u8::MAX, |i| i as u8)
            })
        };
        Filter {
            at_risk: q.at_risk,
            kind: pos(&KINDS, &q.kind),
            severity: pos(&SEVERITIES, &q.severity),
            segment: q
                .segment
                .as_deref()
                .map(|seg| s.texts.find(seg).unwrap_or(NONE)),
        }
    }

    fn only_at_risk(&self) -> bool {
        self.kind.is_none() && self.severity.is_none() && self.segment.is_none()
    }

    fn keeps(&self, e: &Entry) -> bool {
        let f = e.firing();
        (!self.at_risk || !f.is_empty())
            && self.kind.is_none_or(|k| f.iter().any(|a| a.kind == k))
            && self
                .severity
                .is_none_or(|v| f.iter().any(|a| a.severity == v))
            && self
                .segment
                .is_none_or(|seg| seg != NONE && e.segment == seg)
    }
}

fn rank_order(a: &Entry, b: &Entry) -> Ordering {
    b.priority
        .total_cmp(&a.priority)
        .then_with(|| a.id.cmp(&b.id))
}

/// The page of accounts `who` may see that match `q`.
pub fn list(s: &Store, who: &Principal, q: &ListQuery, now: Millis) -> Page<AccountSummary> {
    let limit = q.limit.clamp(1, crate::inbox::model::MAX_PAGE);
    let filter = Filter::new(s, q);
    let owner = match (&q.owner, who.sees_all()) {
        (Some(o), true) => Some(o.to_ascii_lowercase()),
        (Some(o), false) if o.eq_ignore_ascii_case(&who.email) => Some(o.to_ascii_lowercase()),
        // A CSM sees their own accounts only, whatever they ask for.
        (_, false) => Some(who.email.to_ascii_lowercase()),
        (None, true) => None,
    };
    let (total, slots): (usize, Vec<u32>) = match owner {
        Some(o) => {
            let mut mine: Vec<u32> = s
                .owners
                .find(&o)
                .and_then(|i| s.by_owner.get(&i))
                .map(|v| {
                    v.iter()
                        .copied()
                        .filter(|&x| filter.keeps(&s.entries[x as usize]))
                        .collect()
                })
                .unwrap_or_default();
            mine.sort_unstable_by(|&a, &b| {
                rank_order(&s.entries[a as usize], &s.entries[b as usize])
            });
            let page = mine.iter().skip(q.offset).take(limit).copied().collect();
            (mine.len(), page)
        }
        None => {
            let known_total = match (filter.at_risk, filter.only_at_risk()) {
                (true, true) => Some(s.at_risk),
                (false, true) => Some(s.entries.len()),
                _ => None,
            };
            let mut seen = 0usize;
            let mut risk_seen = 0usize;
            let mut page = Vec::with_capacity(limit);
            for &(_, _, slot) in &s.ranked {
                // Past the last account at risk nothing more can match an at-risk list.
                if filter.at_risk && risk_seen == s.at_risk {
                    break;
                }
                let e = &s.entries[slot as usize];
                risk_seen += e.at_risk() as usize;
                if !filter.keeps(e) {
                    continue;
                }
                if seen >= q.offset && page.len() < limit {
                    page.push(slot);
                }
                seen += 1;
                if known_total.is_some() && page.len() == limit {
                    break;
                }
            }
            (known_total.unwrap_or(seen), page)
        }
    };
    let items: Vec<AccountSummary> = slots
        .iter()
        .map(|&x| summary(s, &s.entries[x as usize], now))
        .collect();
    let next = q.offset + items.len();
    Page {
        next_offset: (next < total && !items.is_empty()).then_some(next),
        items,
        total,
        offset: q.offset,
        limit,
    }
}

/// The last day of an account's series: its partition's current day, or its newest
/// day with activity if that is later.
fn series_end(s: &Store, e: &Entry) -> Option<i64> {
    let st = e.state.as_ref().filter(|st| st.has_life())?;
    let part = s
        .watermarks
        .get(&(e.partition as i32))
        .filter(|&&w| w != Millis::MIN)
        .map(|&w| day_of(w));
    let head = (st.window_head != i32::MIN).then_some(st.window_head as i64);
    match (part, head) {
        (Some(p), Some(h)) => Some(p.max(h)),
        (p, h) => p.or(h).or(Some(day_of(st.last_activity.max(st.start)))),
    }
}

/// The daily counters over the kept window, oldest first, ending at `series_end`.
fn series(s: &Store, e: &Entry) -> Vec<(i64, u32)> {
    let (Some(end), Some((recent, baseline, _))) = (series_end(s, e), s.settings.drop) else {
        return Vec::new();
    };
    let len = (recent + baseline) as i64;
    let st = e.state.as_ref().expect("series_end needs a state");
    let days = st.days();
    let head = st.window_head as i64;
    let first_kept = head - days.len() as i64 + 1;
    (end - len + 1..=end)
        .map(|d| {
            let n = if st.window_head != i32::MIN && d >= first_kept && d <= head {
                days[(d - first_kept) as usize]
            } else {
                0
            };
            (d, n)
        })
        .collect()
}

fn lifecycle(e: &Entry) -> Lifecycle {
    match &e.state {
        Some(st) if st.has_life() && st.activated_at != Millis::MIN => Lifecycle::Activated,
        Some(st) if st.has_life() => Lifecycle::Onboarding,
        Some(st) if st.seen => Lifecycle::Ended,
        _ => Lifecycle::Unknown,
    }
}

fn firing(s: &Store, e: &Entry) -> Vec<FiringAlert> {
    let mut f: Vec<(f64, FiringAlert)> = e
        .firing()
        .iter()
        .map(|a| {
            let kind = KINDS[a.kind as usize];
            // One account's alerts share its revenue and renewal factor: their
            // priorities compare as their severity weights.
            (
                s.settings
                    .priority
                    .severity_weight(super::records::severity_of(a.severity), true),
                FiringAlert {
                    id: format!("{}/{kind}/{}", e.id, a.episode),
                    kind: kind.into(),
                    severity: SEVERITIES[a.severity as usize].into(),
                    since: format_rfc3339(a.since),
                    summary: a.summary.to_string(),
                    evidence: a.evidence.clone(),
                },
            )
        })
        .collect();
    f.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.since.cmp(&b.1.since)));
    f.into_iter().map(|(_, a)| a).collect()
}

/// One account in brief.
pub fn summary(s: &Store, e: &Entry, _now: Millis) -> AccountSummary {
    let meta = e.meta.as_deref();
    AccountSummary {
        account_id: e.id.to_string(),
        name: meta.and_then(|m| m.name.as_deref()).map(str::to_string),
        owner_email: meta
            .and_then(|m| s.texts.get(m.owner_email))
            .map(str::to_string),
        segment: s.texts.get(e.segment).map(str::to_string),
        arr: meta.and_then(|m| m.arr()),
        renewal_date: meta
            .filter(|m| m.renewal_day != i32::MIN)
            .map(|m| format_day(m.renewal_day as i64)),
        lifecycle: lifecycle(e),
        priority: e.priority,
        last_activity: e
            .state
            .as_ref()
            .filter(|st| st.has_life() && st.last_activity != Millis::MIN)
            .map(|st| format_rfc3339(st.last_activity)),
        firing: firing(s, e),
        sparkline: series(s, e).into_iter().map(|(_, n)| n).collect(),
    }
}

fn activation(s: &Store, e: &Entry) -> Option<Activation> {
    let st = e.state.as_ref().filter(|st| st.has_life())?;
    let cfg = &s.settings;
    let done = st.activated_at != Millis::MIN;
    let crit = |name: String, target: u64, progress: u64| Criterion {
        met: done || progress >= target,
        progress: if done { target } else { progress.min(target) },
        name,
        target,
    };
    let mut criteria = Vec::new();
    if cfg.min_active_days > 0 {
        criteria.push(crit(
            "active_days".into(),
            cfg.min_active_days as u64,
            st.active_days as u64,
        ));
    }
    if cfg.min_active_users > 0 {
        criteria.push(crit(
            "active_users".into(),
            cfg.min_active_users as u64,
            st.users as u64,
        ));
    }
    if cfg.min_events > 0 {
        criteria.push(crit("events".into(), cfg.min_events, st.events));
    }
    for (i, name) in cfg.required_events.iter().enumerate().take(64) {
        let seen = st.required_seen >> i & 1;
        criteria.push(crit(format!("event:{name}"), 1, seen));
    }
    Some(Activation {
        started: format_rfc3339(st.start),
        deadlines_days: cfg.deadlines.clone(),
        criteria,
        activated_at: done.then(|| format_rfc3339(st.activated_at)),
    })
}

/// One account in full, at `now` (which silences are active).
pub fn detail(s: &Store, slot: u32, now: Millis) -> AccountDetail {
    let e = &s.entries[slot as usize];
    let users_metric = s.settings.drop.is_some_and(|d| d.2);
    let days = series(s, e);
    let baseline = s
        .settings
        .drop
        .filter(|_| !days.is_empty())
        .map(|(recent, base, _)| {
            let n = days.len();
            let from = n.saturating_sub((recent + base) as usize);
            let to = n.saturating_sub(recent as usize);
            let sum: u64 = days[from..to].iter().map(|d| d.1 as u64).sum();
            Baseline {
                expected_per_day: sum as f64 / base.max(1) as f64,
                baseline_days: base,
                recent_days: recent,
            }
        });
    let history = e
        .alerts
        .as_ref()
        .map(|a| {
            a.history
                .iter()
                .rev()
                .map(|h| {
                    let kind = KINDS[h.kind as usize];
                    HistoryEntry {
                        id: format!("{}/{kind}/{}", e.id, h.episode),
                        kind: kind.into(),
                        status: if h.firing { "firing" } else { "resolved" }.into(),
                        severity: SEVERITIES[h.severity as usize].into(),
                        event_time: format_rfc3339(h.event_time),
                        emitted_at: format_rfc3339(h.emitted_at),
                        summary: h.summary.to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let mut silences: Vec<SilenceEntry> = s
        .silences
        .values()
        .filter(|x| x.active(now) && x.account_id.as_deref().is_none_or(|a| a == &*e.id))
        .map(|x| SilenceEntry {
            id: x.id.clone(),
            kind: x.kind.clone(),
            until: format_rfc3339(x.until_ms),
            created_by: Some(x.author.clone()).filter(|a| !a.is_empty()),
            comment: Some(x.reason.clone()).filter(|r| !r.is_empty()),
        })
        .collect();
    silences.sort_by(|a, b| a.until.cmp(&b.until).then_with(|| a.id.cmp(&b.id)));
    AccountDetail {
        summary: summary(s, e, now),
        meta: s.meta_of(e),
        activation: activation(s, e),
        series: days
            .iter()
            .map(|&(d, n)| DayPoint {
                day: format_day(d),
                events: if users_metric { 0 } else { n },
                active_users: users_metric.then_some(n),
            })
            .collect(),
        series_metric: if users_metric {
            "active_users"
        } else {
            "events"
        }
        .into(),
        baseline,
        history,
        silences,
        actions: None,
    }
}

/// Per owner, highest total priority first (then by owner).
pub fn team(s: &Store, now: Millis) -> Vec<TeamRow> {
    let week_ago = now - 7 * DAY;
    let mut rows: std::collections::HashMap<u32, TeamRow> = std::collections::HashMap::new();
    for e in &s.entries {
        let r = rows.entry(e.owner).or_insert_with(|| TeamRow {
            owner_email: s.owners.get(e.owner).map(str::to_string),
            accounts: 0,
            at_risk: 0,
            critical: 0,
            alerts_this_week: 0,
            priority: 0.0,
        });
        r.accounts += 1;
        let f = e.firing();
        r.at_risk += !f.is_empty() as usize;
        r.critical += f
            .iter()
            .any(|a| SEVERITIES[a.severity as usize] == "critical") as usize;
        r.priority += e.priority;
        if let Some(a) = &e.alerts {
            r.alerts_this_week += a
                .history
                .iter()
                .filter(|h| h.firing && h.emitted_at >= week_ago)
                .count();
        }
    }
    let mut v: Vec<TeamRow> = rows.into_values().collect();
    v.sort_by(|a, b| {
        b.priority
            .total_cmp(&a.priority)
            .then_with(|| a.owner_email.cmp(&b.owner_email))
    });
    v
}
