//! What CSMs said about the alerts, scored beside the outcomes (issue 16): the actions
//! of an export of the actions topic (or the topic itself, `actions_topic`) are
//! merged per alert id, each alert gets a [`Verdict`] (acted on, acknowledged, not a
//! risk), and each run's firing records are matched to them by alert id (the ids are
//! deterministic: `replay`, `backtest` and the daemon give the same alert the same id).
//! [`score`] counts, per kind, the alerts acted on, acknowledged and marked not a
//! risk, how many of the not-a-risk ones churned anyway, and the precision among the
//! acknowledged ones (docs/backtest.md, "Feedback from actions"). Pure but for reading
//! the file.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::churns::Churns;
use super::score::{classify, Class, Firing, Window};
use crate::actions::record::{account_of, ActionKind, ActionRecord, AlertActions};
use crate::engine::AlertKind;

/// Most alerts an export may hold (more is refused, not cut).
pub const MAX_ALERTS: usize = 5_000_000;
/// Longest line of an export, in bytes (an alert's whole history: 20 actions with
/// reasons of up to 1000 characters fit).
pub const MAX_LINE: usize = 256 * 1024;

/// What the actions on one alert say, all of them taken into account in time order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    /// At least one action (any kind).
    pub acted: bool,
    /// An `acknowledge` not withdrawn by a later `reopen`.
    pub acknowledged: bool,
    /// A `not_a_risk` not withdrawn by a later `reopen`.
    pub not_a_risk: bool,
}

impl Verdict {
    /// The verdict of `history`, oldest first.
    pub fn of(history: &[ActionRecord]) -> Verdict {
        let mut v = Verdict {
            acted: !history.is_empty(),
            ..Verdict::default()
        };
        for a in history {
            match a.action {
                ActionKind::Acknowledge => v.acknowledged = true,
                ActionKind::NotARisk => v.not_a_risk = true,
                ActionKind::Snooze => {}
                ActionKind::Reopen => {
                    v.acknowledged = false;
                    v.not_a_risk = false;
                }
            }
        }
        v
    }
}

/// The actions known, by alert id.
#[derive(Debug, Clone, Default)]
pub struct Feedback {
    verdicts: HashMap<String, Verdict>,
    /// Distinct actions read (after merging duplicates).
    pub actions: usize,
}

/// Why an export was refused.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("{source_name}: {e}")]
    Io {
        source_name: String,
        e: std::io::Error,
    },
    #[error("{source_name} line {line}: {why}")]
    Line {
        source_name: String,
        line: u64,
        why: String,
    },
    #[error("{source_name}: more than {MAX_ALERTS} alerts with actions")]
    TooMany { source_name: String },
}

/// One line of an export, as parsed.
fn parse_line(text: &[u8]) -> Result<Vec<ActionRecord>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    if v.get("history").is_some() {
        let a: AlertActions = serde_json::from_value(v)
            .map_err(|e| format!("not an alert's actions (alert_id, account_id, history): {e}"))?;
        if !a.is_consistent() {
            return Err(format!(
                "the actions of {:?} are not all about that alert and account",
                crate::notify::render::escape::cut(&a.alert_id, 80)
            ));
        }
        Ok(a.history)
    } else {
        let r: ActionRecord = serde_json::from_value(v).map_err(|e| {
            format!(
                "neither an alert's actions nor one action (alert_id, account_id, action, \
                 by, at_ms): {e}"
            )
        })?;
        if account_of(&r.alert_id) != Some(r.account_id.as_str()) {
            return Err(format!(
                "alert_id {:?} is not an alert of account {:?}",
                crate::notify::render::escape::cut(&r.alert_id, 80),
                crate::notify::render::escape::cut(&r.account_id, 80)
            ));
        }
        Ok(vec![r])
    }
}

/// Merges per alert: every action once (the same action in two values of the topic,
/// or in a value and a line of its own, counts once), in time order.
fn merge(by_alert: HashMap<String, Vec<ActionRecord>>) -> Feedback {
    let mut actions = 0;
    let verdicts = by_alert
        .into_iter()
        .map(|(id, mut h)| {
            h.sort_by(|a, b| {
                (a.at_ms, a.action.as_str(), &a.by, &a.reason, a.until_ms).cmp(&(
                    b.at_ms,
                    b.action.as_str(),
                    &b.by,
                    &b.reason,
                    b.until_ms,
                ))
            });
            h.dedup();
            actions += h.len();
            (id, Verdict::of(&h))
        })
        .collect();
    Feedback { verdicts, actions }
}

/// Actions gathered from one or more sources (the topic, a file), merged by
/// [`Collect::finish`].
#[derive(Debug, Default)]
pub struct Collect {
    by_alert: HashMap<String, Vec<ActionRecord>>,
}

impl Collect {
    /// Adds an alert's value (as the actions topic holds it).
    pub fn add_value(&mut self, v: AlertActions) {
        self.by_alert
            .entry(v.alert_id)
            .or_default()
            .extend(v.history);
    }

    /// Reads an export: JSON lines (plain or gzip), each either an alert's value as
    /// the actions topic stores it (`{"alert_id", "account_id", "history": [...]}`) or
    /// one action (`{"alert_id", "account_id", "action", "by", "at_ms", "reason"?,
    /// "until_ms"?}`); blank lines are skipped. A line that is neither, or whose
    /// actions are not about its alert, refuses the whole file with its number.
    pub fn read_file(&mut self, path: &std::path::Path) -> Result<(), FeedbackError> {
        use crate::source::file::{Line, LineReader};
        let source_name = path.display().to_string();
        let io = |e| FeedbackError::Io {
            source_name: source_name.clone(),
            e,
        };
        let mut r = LineReader::open(path).map_err(io)?;
        r.set_max_line(MAX_LINE);
        let mut buf = Vec::new();
        while let Some(l) = r.next_line(&mut buf).map_err(io)? {
            let bad = |why: String| FeedbackError::Line {
                source_name: source_name.clone(),
                line: r.line_no,
                why,
            };
            if let Line::TooLong { len } = l {
                return Err(bad(format!("{len} bytes, longer than {MAX_LINE}")));
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let records = parse_line(&buf).map_err(bad)?;
            let Some(first) = records.first() else {
                continue;
            };
            if !self.by_alert.contains_key(&first.alert_id) && self.by_alert.len() >= MAX_ALERTS {
                return Err(FeedbackError::TooMany { source_name });
            }
            self.by_alert
                .entry(first.alert_id.clone())
                .or_default()
                .extend(records);
        }
        Ok(())
    }

    /// Every action once, per alert, in time order, and each alert's verdict.
    pub fn finish(self) -> Feedback {
        merge(self.by_alert)
    }
}

impl Feedback {
    /// The feedback of the alerts' values (as the actions topic holds them).
    pub fn from_values(values: impl IntoIterator<Item = AlertActions>) -> Feedback {
        let mut c = Collect::default();
        values.into_iter().for_each(|v| c.add_value(v));
        c.finish()
    }

    /// The feedback of an export file (see [`Collect::read_file`]).
    pub fn read(path: &std::path::Path) -> Result<Feedback, FeedbackError> {
        let mut c = Collect::default();
        c.read_file(path)?;
        Ok(c.finish())
    }

    /// Alerts with at least one action.
    pub fn alerts(&self) -> usize {
        self.verdicts.len()
    }

    /// The alert id as stored here and its verdict, if it has actions.
    pub fn get(&self, alert_id: &str) -> Option<(&str, Verdict)> {
        self.verdicts
            .get_key_value(alert_id)
            .map(|(k, v)| (k.as_str(), *v))
    }
}

/// The feedback columns of one kind (or `any`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindFeedback {
    /// Firing records whose alert has at least one action.
    pub acted: u64,
    pub acknowledged: u64,
    pub not_a_risk: u64,
    /// Not-a-risk alerts that were hits: the account churned within the horizon anyway.
    pub not_a_risk_churned: u64,
    /// Not-a-risk alerts that were false alarms (no churn, horizon over).
    pub not_a_risk_no_churn: u64,
    /// `not_a_risk_churned / (not_a_risk_churned + not_a_risk_no_churn)`.
    pub not_a_risk_churn_rate: Option<f64>,
    pub acknowledged_hits: u64,
    pub acknowledged_false_alarms: u64,
    /// Precision among the acknowledged alerts.
    pub acknowledged_precision: Option<f64>,
}

/// The feedback of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunFeedback {
    /// Per kind in config order, then `any` (as `RunScore::kinds`).
    #[serde(skip)]
    pub kinds: Vec<(&'static str, KindFeedback)>,
    /// Alerts with actions that match a firing record of this run.
    pub matched_alerts: u64,
    /// Alerts with actions that match none (another config, or outside the history).
    pub unmatched_alerts: u64,
}

fn rate(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// Scores the verdicts of a run's firing records (`verdicts[i]` is that of
/// `firings[i]`, None without actions); `matched` is the number of distinct alerts
/// with actions among them, `fb` the feedback they came from.
pub fn score(
    firings: &[Firing],
    verdicts: &[Option<Verdict>],
    matched: usize,
    fb: &Feedback,
    churns: &Churns,
    w: &Window,
    kinds: &[AlertKind],
) -> RunFeedback {
    let any = kinds.len();
    let mut out: Vec<(&'static str, KindFeedback)> = kinds
        .iter()
        .map(|k| (k.as_str(), KindFeedback::default()))
        .chain(std::iter::once(("any", KindFeedback::default())))
        .collect();
    for (f, v) in firings.iter().zip(verdicts) {
        let (Some(v), Some(ki)) = (v, kinds.iter().position(|&k| k == f.kind)) else {
            continue;
        };
        let class = classify(f, churns, w);
        for i in [ki, any] {
            let s = &mut out[i].1;
            s.acted += v.acted as u64;
            if v.acknowledged {
                s.acknowledged += 1;
                match class {
                    Class::Hit => s.acknowledged_hits += 1,
                    Class::FalseAlarm => s.acknowledged_false_alarms += 1,
                    Class::Pending => {}
                }
            }
            if v.not_a_risk {
                s.not_a_risk += 1;
                match class {
                    Class::Hit => s.not_a_risk_churned += 1,
                    Class::FalseAlarm => s.not_a_risk_no_churn += 1,
                    Class::Pending => {}
                }
            }
        }
    }
    for (_, s) in &mut out {
        s.not_a_risk_churn_rate = rate(
            s.not_a_risk_churned,
            s.not_a_risk_churned + s.not_a_risk_no_churn,
        );
        s.acknowledged_precision = rate(
            s.acknowledged_hits,
            s.acknowledged_hits + s.acknowledged_false_alarms,
        );
    }
    RunFeedback {
        kinds: out,
        matched_alerts: matched as u64,
        unmatched_alerts: (fb.alerts() - matched.min(fb.alerts())) as u64,
    }
}

/// The verdict of each firing whose alert id `id_of(i)` has actions, and the number
/// of distinct alerts matched.
pub fn match_ids(
    ids: impl IntoIterator<Item = String>,
    fb: &Feedback,
) -> (Vec<Option<Verdict>>, usize) {
    let mut seen: HashSet<&str> = HashSet::new();
    let verdicts = ids
        .into_iter()
        .map(|id| {
            fb.get(&id).map(|(k, v)| {
                seen.insert(k);
                v
            })
        })
        .collect();
    (verdicts, seen.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::DAY;

    fn rec(alert: &str, action: ActionKind, at: i64) -> ActionRecord {
        ActionRecord {
            alert_id: alert.into(),
            account_id: alert.split('/').next().unwrap().into(),
            action,
            by: "ana@example.com".into(),
            at_ms: at,
            reason: if matches!(action, ActionKind::Snooze | ActionKind::NotARisk) {
                "why".into()
            } else {
                String::new()
            },
            until_ms: matches!(action, ActionKind::Snooze | ActionKind::NotARisk)
                .then_some(at + DAY),
            source: Default::default(),
            origin: String::new(),
        }
    }

    #[test]
    fn a_reopen_withdraws_earlier_verdicts_and_later_ones_stand() {
        use ActionKind::*;
        let h = |kinds: &[ActionKind]| {
            let v: Vec<ActionRecord> = kinds
                .iter()
                .enumerate()
                .map(|(i, k)| rec("a/inactive/1", *k, i as i64))
                .collect();
            let v = Verdict::of(&v);
            (v.acted, v.acknowledged, v.not_a_risk)
        };
        assert_eq!(h(&[]), (false, false, false));
        assert_eq!(h(&[Snooze]), (true, false, false));
        assert_eq!(h(&[Acknowledge]), (true, true, false));
        assert_eq!(h(&[NotARisk]), (true, false, true));
        assert_eq!(h(&[Acknowledge, NotARisk]), (true, true, true));
        assert_eq!(h(&[NotARisk, Reopen]), (true, false, false));
        assert_eq!(h(&[NotARisk, Reopen, Acknowledge]), (true, true, false));
    }

    #[test]
    fn exports_merge_values_and_single_actions_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("actions.ndjson");
        let nar = rec("acme/inactive/2026-03-01", ActionKind::NotARisk, 10);
        let reopen = rec("acme/inactive/2026-03-01", ActionKind::Reopen, 20);
        let v1 = AlertActions::with(None, nar.clone());
        let v2 = AlertActions::with(Some(v1.clone()), reopen.clone());
        let ack = rec(
            "globex/activity_drop/2026-04-02",
            ActionKind::Acknowledge,
            5,
        );
        // Two values of one alert (the topic before compaction), a lone action, its
        // duplicate, and a blank line.
        let text = format!(
            "{}\n\n{}\n{}\n{}\n",
            serde_json::to_string(&v1).unwrap(),
            serde_json::to_string(&v2).unwrap(),
            serde_json::to_string(&ack).unwrap(),
            serde_json::to_string(&ack).unwrap(),
        );
        std::fs::write(&p, text).unwrap();
        let fb = Feedback::read(&p).unwrap();
        assert_eq!((fb.alerts(), fb.actions), (2, 3));
        let (_, v) = fb.get("acme/inactive/2026-03-01").unwrap();
        assert!(v.acted && !v.not_a_risk, "the reopen withdrew it");
        let (_, g) = fb.get("globex/activity_drop/2026-04-02").unwrap();
        assert!(g.acknowledged);
        assert!(fb.get("acme/inactive/2026-09-09").is_none());
    }

    #[test]
    fn bad_lines_refuse_the_file_with_their_number() {
        let dir = tempfile::tempdir().unwrap();
        let good =
            serde_json::to_string(&rec("acme/inactive/1", ActionKind::Acknowledge, 1)).unwrap();
        let mut forged = rec("acme/inactive/1", ActionKind::Acknowledge, 1);
        forged.account_id = "globex".into();
        for (bad, needle) in [
            ("{not json".to_string(), "not JSON"),
            ("{\"alert_id\": \"acme/inactive/1\"}".to_string(), "neither"),
            (serde_json::to_string(&forged).unwrap(), "not an alert of"),
            (
                "{\"alert_id\": \"acme/inactive/1\", \"account_id\": \"acme\", \"history\": []}"
                    .to_string(),
                "not all about",
            ),
            (format!("\"{}\"", "x".repeat(MAX_LINE + 1)), "longer than"),
        ] {
            let p = dir.path().join("bad.ndjson");
            std::fs::write(&p, format!("{good}\n{bad}\n")).unwrap();
            let e = Feedback::read(&p).unwrap_err().to_string();
            assert!(e.contains("line 2") && e.contains(needle), "{e}");
        }
    }

    /// Five alerts of one account kind, a churn at day 100, horizon 30 days, history
    /// to day 200: firings at days 75 and 90 are hits, 10 and 20 false alarms, 190
    /// pending. By hand: acknowledged = {75, 10} -> precision 1/2; not a risk = {90,
    /// 20, 190} -> 1 churned, 1 did not, 1 pending -> churn rate 1/2; acted = 5 (the
    /// snoozed one too); the export's alert on another account matches nothing.
    #[test]
    fn feedback_scores_are_counted_by_hand() {
        let mut churns = Churns::new(1);
        churns.add(0, 100 * DAY);
        let w = Window {
            start: 0,
            end: 200 * DAY,
            horizon: 30 * DAY,
        };
        let day = |d: i64| Firing {
            account: 0,
            kind: AlertKind::Inactive,
            t: d * DAY,
        };
        let firings = [day(75), day(90), day(10), day(20), day(190), day(50)];
        let ids: Vec<String> = [75, 90, 10, 20, 190, 50]
            .iter()
            .map(|d| format!("acme/inactive/{d}"))
            .collect();
        use ActionKind::*;
        let mut values: Vec<AlertActions> = [
            (75, Acknowledge),
            (10, Acknowledge),
            (90, NotARisk),
            (20, NotARisk),
            (190, NotARisk),
        ]
        .iter()
        .map(|&(d, k)| AlertActions::with(None, rec(&format!("acme/inactive/{d}"), k, 1)))
        .collect();
        values.push(AlertActions::with(None, rec("acme/inactive/50", Snooze, 1)));
        values.push(AlertActions::with(
            None,
            rec("zed/inactive/1", Acknowledge, 1),
        ));
        let fb = Feedback::from_values(values);
        let (verdicts, matched) = match_ids(ids, &fb);
        assert_eq!(matched, 6);
        let r = score(
            &firings,
            &verdicts,
            matched,
            &fb,
            &churns,
            &w,
            &[AlertKind::Inactive, AlertKind::ActivityDrop],
        );
        assert_eq!((r.matched_alerts, r.unmatched_alerts), (6, 1));
        let want = KindFeedback {
            acted: 6,
            acknowledged: 2,
            not_a_risk: 3,
            not_a_risk_churned: 1,
            not_a_risk_no_churn: 1,
            not_a_risk_churn_rate: Some(0.5),
            acknowledged_hits: 1,
            acknowledged_false_alarms: 1,
            acknowledged_precision: Some(0.5),
        };
        assert_eq!(r.kinds[0], ("inactive", want.clone()));
        assert_eq!(r.kinds[1], ("activity_drop", KindFeedback::default()));
        assert_eq!(r.kinds[2], ("any", want));
    }
}
