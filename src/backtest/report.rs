//! `--report F`: one self-contained HTML page (inline CSS and SVG, no script, nothing
//! loaded from a network) for a team lead choosing settings: for a sweep, precision
//! and recall against alerts per CSM per week (one point per run, the current config
//! marked) and a table of runs; for the current run (else the first), precision and
//! recall per rule, what CSMs did about the alerts (with actions given), the lead-time
//! distribution per rule, and each CSM's weekly load.

use std::fmt::Write;

use crate::time::{day_of, format_day, format_rfc3339, DAY};

use super::output::eligible_churns;
use super::score::{weeks, KindScore};
use super::svg::{self, esc, Point};
use super::table::label;
use super::{Inputs, Run};

/// Owners drawn as lines in the weekly load chart (the busiest ones).
const MAX_OWNER_LINES: usize = 8;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:right}\
td:first-child,th:first-child{text-align:left}tr.current{font-weight:bold;background:#f3f3f3}\
.chart{display:block;margin:1em 0;max-width:100%;height:auto}.note{color:#555;font-size:.9em}";

fn ratio(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.2}"))
}

fn days(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1}"))
}

/// Alerts (of `k`) per CSM per week: the mean over owners and the busiest owner.
fn per_csm(k: &KindScore, nweeks: f64) -> (f64, f64) {
    let owners = k.per_owner.len().max(1) as f64;
    let worst = k.per_owner.iter().copied().max().unwrap_or(0) as f64;
    (k.firing as f64 / nweeks / owners, worst / nweeks)
}

/// Renders the page.
pub fn render(inputs: &Inputs<'_>, runs: &[Run]) -> String {
    let w = &inputs.window;
    let nweeks = weeks(w) as f64;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>churnwatch backtest</title><style>{STYLE}</style></head><body><h1>churnwatch backtest</h1>"
    );
    let _ = write!(
        h,
        "<p>History {} to {} ({nweeks} weeks): {} accounts, {} churns, {} of them eligible (their whole {}-day look-back lies in the history). {} run(s).</p>",
        esc(&format_rfc3339(w.start)),
        esc(&format_rfc3339(w.end)),
        inputs.history.active_accounts,
        inputs.churns.len(),
        eligible_churns(inputs.churns, w),
        w.horizon as f64 / DAY as f64,
        runs.len()
    );
    if runs.len() > 1 {
        trade_off(&mut h, runs, nweeks);
    }
    if let Some(r) = runs.iter().find(|r| r.spec.current).or(runs.first()) {
        one_run(&mut h, inputs, r, nweeks);
    }
    h.push_str("<p class=\"note\">Definitions: docs/backtest.md. Precision = hits / (hits + false alarms); pending alerts (horizon beyond the history) are not scored. Recall = eligible churns caught / eligible churns.</p></body></html>\n");
    h
}

fn trade_off(h: &mut String, runs: &[Run], nweeks: f64) {
    h.push_str("<h2>Trade-off: alert quality against CSM load</h2><p>One point per run: precision and recall of all rules together against alerts per CSM per week (mean over owners). Hover a point for its settings.</p>");
    let mut points = Vec::new();
    for r in runs {
        let Some(any) = r.score.kind("any") else {
            continue;
        };
        let (load, _) = per_csm(any, nweeks);
        for (series, v) in [(0, any.precision), (1, any.recall)] {
            if let Some(v) = v {
                points.push(Point {
                    x: load,
                    y: v,
                    series,
                    title: format!(
                        "{}: {} {v:.2} at {load:.2} alerts/CSM/week",
                        label(r),
                        ["precision", "recall"][series]
                    ),
                    current: r.spec.current,
                });
            }
        }
    }
    h.push_str(&svg::scatter(
        "precision and recall against alerts per CSM per week, one point per run",
        &["precision", "recall"],
        &points,
        "alerts per CSM per week",
        "precision / recall",
        1.0,
    ));
    if !runs.iter().any(|r| r.spec.current) {
        h.push_str("<p class=\"note\">The config's current values are not among the swept ones, so no run is marked current.</p>");
    }
    h.push_str("<table><tr><th>run</th><th>firing</th><th>pending</th><th>precision</th><th>recall</th><th>lead p50 (days)</th><th>per CSM/week</th><th>busiest CSM/week</th></tr>");
    for r in runs {
        let Some(any) = r.score.kind("any") else {
            continue;
        };
        let (mean, worst) = per_csm(any, nweeks);
        let _ = write!(
            h,
            "<tr{}><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{mean:.2}</td><td>{worst:.2}</td></tr>",
            if r.spec.current { " class=\"current\"" } else { "" },
            esc(&label(r)),
            if r.spec.current { " (current)" } else { "" },
            any.firing,
            any.pending,
            ratio(any.precision),
            ratio(any.recall),
            days(any.lead_days.p50)
        );
    }
    h.push_str("</table>");
}

fn one_run(h: &mut String, inputs: &Inputs<'_>, r: &Run, nweeks: f64) {
    let _ = write!(h, "<h2>Per rule: {}</h2>", esc(&label(r)));
    let kinds = &r.score.kinds;
    let cats: Vec<String> = kinds.iter().map(|(k, _)| k.to_string()).collect();
    h.push_str(&svg::bars(
        "precision and recall per rule",
        &cats,
        &[
            (
                "precision",
                kinds.iter().map(|(_, s)| s.precision).collect(),
            ),
            ("recall", kinds.iter().map(|(_, s)| s.recall).collect()),
        ],
        1.0,
        "precision / recall",
    ));
    h.push_str("<table><tr><th>rule</th><th>firing</th><th>hits</th><th>false alarms</th><th>pending</th><th>precision</th><th>caught</th><th>recall</th><th>lead p25</th><th>p50</th><th>p75</th><th>per CSM/week</th><th>busiest CSM/week</th></tr>");
    for (k, s) in kinds {
        let (mean, worst) = per_csm(s, nweeks);
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{mean:.2}</td><td>{worst:.2}</td></tr>",
            esc(k),
            s.firing,
            s.hits,
            s.false_alarms,
            s.pending,
            ratio(s.precision),
            s.caught,
            ratio(s.recall),
            days(s.lead_days.p25),
            days(s.lead_days.p50),
            days(s.lead_days.p75)
        );
    }
    h.push_str("</table>");
    feedback(h, r);
    h.push_str("<h2>Lead time: how long before the churn the first alert came</h2><p>Each dot is a caught churn; the box spans the 25th to 75th percentile, the bar is the median.</p>");
    let rows: Vec<svg::Strip> = kinds
        .iter()
        .map(|(k, s)| {
            let q = [s.lead_days.p25, s.lead_days.p50, s.lead_days.p75];
            (k.to_string(), s.leads.clone(), q)
        })
        .collect();
    h.push_str(&svg::strips(
        "lead time distribution per rule",
        &rows,
        "days before the churn",
        (inputs.window.horizon as f64 / DAY as f64).max(1.0),
    ));
    load(h, r);
}

/// What CSMs did about the run's alerts, beside precision (with `--actions`).
fn feedback(h: &mut String, r: &Run) {
    let Some(fb) = &r.score.feedback else {
        return;
    };
    let _ = write!(
        h,
        "<h2>Feedback: what CSMs said, against what happened</h2><p>{} alerts with actions matched this run's alerts, {} did not. A not-a-risk churn rate near precision means CSMs dismiss real risks; far below it, with many dismissals, the rule is noisy where they say so.</p>",
        fb.matched_alerts, fb.unmatched_alerts
    );
    h.push_str("<table class=\"feedback\"><tr><th>rule</th><th>firing</th><th>acted on</th><th>acknowledged</th><th>not a risk</th><th>not a risk, churned anyway</th><th>precision</th><th>precision among acknowledged</th><th>not-a-risk churn rate</th></tr>");
    for ((k, s), (_, f)) in r.score.kinds.iter().zip(&fb.kinds) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(k),
            s.firing,
            f.acted,
            f.acknowledged,
            f.not_a_risk,
            f.not_a_risk_churned,
            ratio(s.precision),
            ratio(f.acknowledged_precision),
            ratio(f.not_a_risk_churn_rate)
        );
    }
    h.push_str("</table>");
}

fn load(h: &mut String, r: &Run) {
    let l = &r.score.load;
    h.push_str("<h2>Alert load per CSM, week by week</h2>");
    let mut order: Vec<usize> = (0..l.weekly.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(l.weekly[i].iter().sum::<u64>()));
    let first_day = day_of(l.first_week);
    let nweeks = l.weekly.first().map_or(0, Vec::len);
    let labels: Vec<String> = (0..nweeks)
        .map(|i| format_day(first_day + 7 * i as i64))
        .collect();
    let series: Vec<(String, Vec<f64>)> = order
        .iter()
        .take(MAX_OWNER_LINES)
        .map(|&i| {
            (
                l.owners[i].owner.clone(),
                l.weekly[i].iter().map(|&v| v as f64).collect(),
            )
        })
        .collect();
    if order.len() > MAX_OWNER_LINES {
        let _ = write!(
            h,
            "<p>The {MAX_OWNER_LINES} busiest of {} owners; all of them in the table below.</p>",
            order.len()
        );
    }
    h.push_str(&svg::lines(
        "firing alerts per CSM per week",
        &labels,
        &series,
        "firing alerts",
    ));
    h.push_str("<p>");
    for (i, (name, _)) in series.iter().enumerate() {
        let _ = write!(
            h,
            "<span style=\"color:{}\">&#9632;</span> {} &nbsp; ",
            svg::PALETTE[i % svg::PALETTE.len()],
            esc(name)
        );
    }
    h.push_str("</p>");
    let _ = write!(
        h,
        "<p>Fleet: {} firing alerts per 100 accounts per week.</p>",
        l.per_100_accounts_per_week
            .map_or("–".into(), |v| format!("{v:.2}"))
    );
    h.push_str("<table><tr><th>owner</th><th>accounts</th><th>mean per week</th><th>max per week</th></tr>");
    for &i in &order {
        let o = &l.owners[i];
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td></tr>",
            esc(&o.owner),
            o.accounts,
            o.mean_per_week,
            o.max_per_week
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::churns::Churns;
    use crate::backtest::history::History;
    use crate::backtest::score::{Owners, Window};
    use crate::backtest::sweep::plan;
    use crate::backtest::{run_all, Inputs};
    use crate::config::Config;
    use crate::source::file::LineReader;

    #[test]
    fn owner_names_from_metadata_are_escaped() {
        let text = concat!(
            "{\"account_id\":\"a\",\"event\":\"account.created\",\"ts\":\"2026-01-01T00:00:00Z\"}\n",
            "{\"account_id\":\"a\",\"event\":\"subscription.cancelled\",\"ts\":\"2026-02-05T00:00:00Z\"}\n",
            "{\"account_id\":\"b\",\"event\":\"login\",\"ts\":\"2026-03-01T00:00:00Z\"}\n",
        );
        let cfg = Config::default();
        let mut r = LineReader::from_reader(Box::new(std::io::Cursor::new(text.as_bytes())));
        let h = History::read(&cfg, &mut r, None, |_| {}).unwrap();
        let churns = Churns::from_end_events(&h, &cfg);
        let owners = Owners::build(
            h.known_accounts(),
            |_| Some("<script>alert(1)</script>".into()),
            |a| h.is_active(a),
        );
        let (start, end) = h.window().unwrap();
        let inputs = Inputs {
            history: &h,
            churns: &churns,
            owners: &owners,
            window: Window {
                start,
                end,
                horizon: 10 * DAY,
            },
            feedback: None,
        };
        let specs = plan(
            "",
            vec![],
            &[crate::backtest::sweep::parse_set("rules.inactive.after_days=7,14").unwrap()],
        )
        .unwrap();
        let runs = run_all(&inputs, specs, 2, || {});
        // a's 30-day alert (01-31) precedes its churn (02-05): one hit per run.
        assert_eq!(runs[0].score.kind("any").unwrap().hits, 1);
        let html = render(&inputs, &runs);
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert_eq!(html.matches("<svg").count(), 4);
    }
}
