//! The terminal result: a heading with the history, then one row per run and rule
//! (firing, pending, precision, recall, lead-time quartiles, alerts per CSM per week:
//! mean over owners and the worst owner); with actions given, a second table of the
//! feedback beside precision.

use std::fmt::Write;

use crate::time::format_rfc3339;

use super::churns::Churns;
use super::history::History;
use super::output::eligible_churns;
use super::score::{weeks, Window};
use super::Run;

/// A run's label: its settings (`rules.` dropped), or `config` without a sweep.
pub fn label(r: &Run) -> String {
    if r.spec.settings.is_empty() {
        return "config".into();
    }
    r.spec
        .settings
        .iter()
        .map(|(k, v)| format!("{}={v}", k.strip_prefix("rules.").unwrap_or(k)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ratio(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

fn days(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

/// Renders the table.
pub fn render(h: &History, churns: &Churns, w: &Window, runs: &[Run]) -> String {
    let nweeks = weeks(w) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "history {} .. {} ({} weeks): {} accounts, {} churns, {} eligible (horizon {} d)",
        format_rfc3339(w.start),
        format_rfc3339(w.end),
        nweeks,
        h.active_accounts,
        churns.len(),
        eligible_churns(churns, w),
        w.horizon as f64 / crate::time::DAY as f64
    );
    let header = [
        "run",
        "rule",
        "firing",
        "pending",
        "precision",
        "recall",
        "lead p25",
        "p50",
        "p75",
        "per CSM/wk",
        "worst CSM",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in runs {
        let owners = r.score.load.owners.len().max(1) as f64;
        let mark = if r.spec.current && runs.len() > 1 {
            "* "
        } else {
            ""
        };
        for (i, (kind, k)) in r.score.kinds.iter().enumerate() {
            let worst = k.per_owner.iter().copied().max().unwrap_or(0) as f64 / nweeks;
            rows.push(vec![
                if i == 0 {
                    format!("{mark}{}", label(r))
                } else {
                    String::new()
                },
                kind.to_string(),
                k.firing.to_string(),
                k.pending.to_string(),
                ratio(k.precision),
                ratio(k.recall),
                days(k.lead_days.p25),
                days(k.lead_days.p50),
                days(k.lead_days.p75),
                format!("{:.2}", k.firing as f64 / nweeks / owners),
                format!("{worst:.2}"),
            ]);
        }
    }
    s.push_str(&align(&header, &rows));
    if runs.len() > 1 && runs.iter().any(|r| r.spec.current) {
        s.push_str("* the config's current settings\n");
    }
    s.push_str("lead times in days; per CSM/wk: firing alerts per owner per week (mean over owners, and the busiest owner)\n");
    if runs.iter().any(|r| r.score.feedback.is_some()) {
        s.push('\n');
        s.push_str(&feedback(runs));
    }
    s
}

/// The feedback table: per run and rule, what CSMs did about the alerts beside
/// precision, and the two cross-checks.
fn feedback(runs: &[Run]) -> String {
    let header = [
        "run",
        "rule",
        "firing",
        "acted",
        "ack",
        "not a risk",
        "churned",
        "precision",
        "ack precision",
        "not-a-risk churn",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut matched = Vec::new();
    for r in runs {
        let Some(fb) = &r.score.feedback else {
            continue;
        };
        matched.push(format!(
            "{}: {} alerts with actions matched, {} not",
            label(r),
            fb.matched_alerts,
            fb.unmatched_alerts
        ));
        for (i, ((kind, k), (_, f))) in r.score.kinds.iter().zip(&fb.kinds).enumerate() {
            rows.push(vec![
                if i == 0 { label(r) } else { String::new() },
                kind.to_string(),
                k.firing.to_string(),
                f.acted.to_string(),
                f.acknowledged.to_string(),
                f.not_a_risk.to_string(),
                f.not_a_risk_churned.to_string(),
                ratio(k.precision),
                ratio(f.acknowledged_precision),
                ratio(f.not_a_risk_churn_rate),
            ]);
        }
    }
    let mut s = String::from("feedback from the actions on alerts\n");
    s.push_str(&align(&header, &rows));
    for m in matched {
        s.push_str(&m);
        s.push('\n');
    }
    s.push_str(
        "acted: firing alerts with any action; churned: not-a-risk alerts whose account \
         churned anyway within the horizon;\nack precision: precision among acknowledged \
         alerts; not-a-risk churn: churned / decided not-a-risk alerts\n\
         (how to read them: docs/backtest.md, Feedback from actions)\n",
    );
    s
}

/// `rows` under `header`, the first two columns left-aligned, the others right-aligned.
fn align(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            if i < 2 {
                l.push_str(c);
                l.push_str(&" ".repeat(pad));
            } else {
                l.push_str(&" ".repeat(pad));
                l.push_str(c);
            }
            l.push_str("  ");
        }
        l.trim_end().to_string() + "\n"
    };
    let mut s = line(header);
    for row in rows {
        s.push_str(&line(&row.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    s
}
