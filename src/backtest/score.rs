//! Scoring one run: firing records against churns (hits, false alarms, pending,
//! precision, recall, lead times) and the alert load per owner per ISO week, exactly as
//! docs/backtest.md defines them. Pure: no I/O.

use serde::Serialize;

use crate::engine::AlertKind;
use crate::time::{day_of, Millis, DAY};

use super::churns::Churns;

/// One `firing` record, as scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firing {
    pub account: u32,
    pub kind: AlertKind,
    /// The record's `event_time`.
    pub t: Millis,
}

/// The history window and the horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Millis,
    pub end: Millis,
    /// `H`: how long after an alert a churn still counts for it.
    pub horizon: Millis,
}

/// Who owns each account, and each owner's accounts in the window.
#[derive(Debug, Clone, Default)]
pub struct Owners {
    /// Owner names, sorted; `unassigned` among them when some account has no owner.
    pub names: Vec<String>,
    /// Owner index by account index.
    pub of_account: Vec<u32>,
    /// Accounts with an applied event, by owner index.
    pub accounts: Vec<u64>,
}

impl Owners {
    /// Groups accounts by owner; `owner(account)` is `None` for no owner, and only
    /// accounts for which `counts(account)` holds are counted.
    pub fn build(
        n: usize,
        owner: impl Fn(u32) -> Option<String>,
        counts: impl Fn(u32) -> bool,
    ) -> Owners {
        let raw: Vec<String> = (0..n as u32)
            .map(|a| {
                owner(a)
                    .filter(|o| !o.is_empty())
                    .unwrap_or_else(|| "unassigned".to_string())
            })
            .collect();
        let mut names: Vec<String> = (0..n as u32)
            .filter(|&a| counts(a))
            .map(|a| raw[a as usize].clone())
            .collect();
        names.sort();
        names.dedup();
        let mut accounts = vec![0u64; names.len()];
        let of_account = raw
            .iter()
            .enumerate()
            .map(|(a, o)| match names.binary_search(o) {
                Ok(i) => {
                    if counts(a as u32) {
                        accounts[i] += 1;
                    }
                    i as u32
                }
                // Only accounts with no applied event (hence no alert) land here.
                Err(_) => u32::MAX,
            })
            .collect();
        Owners {
            names,
            of_account,
            accounts,
        }
    }
}

/// Lead-time percentiles, in days.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LeadDays {
    pub p25: Option<f64>,
    pub p50: Option<f64>,
    pub p75: Option<f64>,
}

/// The scores of one kind (or `any`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindScore {
    pub firing: u64,
    pub hits: u64,
    pub false_alarms: u64,
    pub pending: u64,
    pub precision: Option<f64>,
    pub caught: u64,
    pub recall: Option<f64>,
    pub lead_days: LeadDays,
    /// Lead times of the caught churns, ascending (for the report).
    #[serde(skip)]
    pub leads: Vec<f64>,
    /// Firing records per owner index (for the per-CSM columns).
    #[serde(skip)]
    pub per_owner: Vec<u64>,
}

/// One owner's load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OwnerLoad {
    pub owner: String,
    pub accounts: u64,
    pub mean_per_week: f64,
    pub max_per_week: u64,
}

/// The alert load of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Load {
    pub per_100_accounts_per_week: Option<f64>,
    pub owners: Vec<OwnerLoad>,
    /// Firing records per owner index and week (week 0 holds `start`).
    #[serde(skip)]
    pub weekly: Vec<Vec<u64>>,
    /// Monday 00:00 UTC of week 0.
    #[serde(skip)]
    pub first_week: Millis,
}

/// All scores of one run: per kind in config order, then `any`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunScore {
    pub kinds: Vec<(&'static str, KindScore)>,
    pub load: Load,
    /// What CSMs said about the run's alerts, when actions were given.
    pub feedback: Option<super::feedback::RunFeedback>,
}

impl RunScore {
    pub fn kind(&self, name: &str) -> Option<&KindScore> {
        self.kinds.iter().find(|(k, _)| *k == name).map(|(_, s)| s)
    }
}

/// The ISO week (Monday 00:00 UTC) holding `t`, as a week number since 1969-12-29.
pub fn week_of(t: Millis) -> i64 {
    (day_of(t) + 3).div_euclid(7)
}

/// Number of weeks from the week holding `start` to the week holding `end`, inclusive.
pub fn weeks(w: &Window) -> u64 {
    (week_of(w.end) - week_of(w.start) + 1).max(1) as u64
}

/// The `q` quantile of ascending `v` with linear interpolation between closest ranks
/// (numpy's default, including its way of interpolating from the nearer end).
pub fn percentile(v: &[f64], q: f64) -> Option<f64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let pos = q * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let t = pos - lo as f64;
    let (a, b) = (v[lo], v[hi]);
    let d = b - a;
    Some(if t >= 0.5 {
        b - d * (1.0 - t)
    } else {
        a + d * t
    })
}

/// The class of a firing record (docs/backtest.md, "Alerts").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The account churns in `(t, t + H]`.
    Hit,
    /// No churn in `(t, t + H]`, and `t + H <= end`.
    FalseAlarm,
    /// Neither: the history ends before the horizon does.
    Pending,
}

/// Classifies `f` against the churns.
pub fn classify(f: &Firing, churns: &Churns, w: &Window) -> Class {
    let cs = churns.of(f.account);
    let next = cs.partition_point(|&c| c <= f.t);
    if cs.get(next).is_some_and(|&c| c - f.t <= w.horizon) {
        Class::Hit
    } else if f.t.saturating_add(w.horizon) <= w.end {
        Class::FalseAlarm
    } else {
        Class::Pending
    }
}

/// Scores the firing records of one run. `kinds` are the kinds the run's config
/// enables, in config order; firing records of other kinds cannot occur.
pub fn score(
    firings: &[Firing],
    churns: &Churns,
    w: &Window,
    kinds: &[AlertKind],
    owners: &Owners,
) -> RunScore {
    let h = w.horizon;
    let nweeks = weeks(w) as usize;
    let first_week = week_of(w.start);
    // Firing times per (account, kind), and per account for `any`, ascending.
    let mut by_kind: Vec<std::collections::HashMap<u32, Vec<Millis>>> =
        vec![Default::default(); kinds.len()];
    let mut by_any: std::collections::HashMap<u32, Vec<Millis>> = Default::default();
    let mut out: Vec<(&'static str, KindScore)> = kinds
        .iter()
        .map(|k| (k.as_str(), KindScore::default()))
        .chain(std::iter::once(("any", KindScore::default())))
        .collect();
    for s in out.iter_mut() {
        s.1.per_owner = vec![0; owners.names.len()];
    }
    let mut weekly = vec![vec![0u64; nweeks]; owners.names.len()];
    let any = kinds.len();
    for f in firings {
        let Some(ki) = kinds.iter().position(|&k| k == f.kind) else {
            continue;
        };
        let class = classify(f, churns, w);
        let owner = owners.of_account[f.account as usize] as usize;
        for i in [ki, any] {
            let s = &mut out[i].1;
            s.firing += 1;
            match class {
                Class::Hit => s.hits += 1,
                Class::FalseAlarm => s.false_alarms += 1,
                Class::Pending => s.pending += 1,
            }
            s.per_owner[owner] += 1;
        }
        let week = (week_of(f.t) - first_week).clamp(0, nweeks as i64 - 1) as usize;
        weekly[owner][week] += 1;
        by_kind[ki].entry(f.account).or_default().push(f.t);
        by_any.entry(f.account).or_default().push(f.t);
    }
    for m in by_kind.iter_mut().chain(std::iter::once(&mut by_any)) {
        m.values_mut().for_each(|v| v.sort_unstable());
    }
    let eligible: Vec<(u32, Millis)> = churns
        .iter()
        .filter(|&(_, c)| c.saturating_sub(h) >= w.start)
        .collect();
    for (i, s) in out.iter_mut().enumerate() {
        let times = if i == any { &by_any } else { &by_kind[i] };
        let s = &mut s.1;
        s.precision =
            (s.hits + s.false_alarms > 0).then(|| s.hits as f64 / (s.hits + s.false_alarms) as f64);
        for &(a, c) in &eligible {
            let Some(ts) = times.get(&a) else { continue };
            let first = ts.partition_point(|&t| t < c.saturating_sub(h));
            if let Some(&t) = ts.get(first).filter(|&&t| t < c) {
                s.caught += 1;
                s.leads.push((c - t) as f64 / DAY as f64);
            }
        }
        s.recall = (!eligible.is_empty()).then(|| s.caught as f64 / eligible.len() as f64);
        s.leads.sort_by(f64::total_cmp);
        s.lead_days = LeadDays {
            p25: percentile(&s.leads, 0.25),
            p50: percentile(&s.leads, 0.5),
            p75: percentile(&s.leads, 0.75),
        };
    }
    let total: u64 = out[any].1.firing;
    let accounts: u64 = owners.accounts.iter().sum();
    let load = Load {
        per_100_accounts_per_week: (accounts > 0)
            .then(|| 100.0 * total as f64 / nweeks as f64 / accounts as f64),
        owners: owners
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| OwnerLoad {
                owner: name.clone(),
                accounts: owners.accounts[i],
                mean_per_week: weekly[i].iter().sum::<u64>() as f64 / nweeks as f64,
                max_per_week: weekly[i].iter().copied().max().unwrap_or(0),
            })
            .collect(),
        weekly,
        first_week: first_week * 7 * DAY - 3 * DAY,
    };
    RunScore {
        kinds: out,
        load,
        feedback: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday_utc() {
        // 1970-01-01 was a Thursday; Monday 1969-12-29 starts week 0.
        assert_eq!(week_of(0), 0);
        assert_eq!(week_of(4 * DAY - 1), 0); // Sunday 1970-01-04 23:59:59.999
        assert_eq!(week_of(4 * DAY), 1); // Monday 1970-01-05
        assert_eq!(week_of(-3 * DAY), 0);
        assert_eq!(week_of(-3 * DAY - 1), -1);
        let w = Window {
            start: 4 * DAY - 1,
            end: 4 * DAY,
            horizon: DAY,
        };
        assert_eq!(weeks(&w), 2);
    }

    #[test]
    fn percentiles_match_numpy_linear() {
        let v = [1.0, 2.0, 4.0, 8.0];
        // numpy.percentile([1,2,4,8], [25,50,75]) = [1.75, 3.0, 5.0]
        assert_eq!(percentile(&v, 0.25), Some(1.75));
        assert_eq!(percentile(&v, 0.5), Some(3.0));
        assert_eq!(percentile(&v, 0.75), Some(5.0));
        assert_eq!(percentile(&[7.5], 0.25), Some(7.5));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
