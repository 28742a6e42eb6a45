//! Inline SVG for the inbox: a sparkline of daily events (list rows) and an account's
//! activity chart (daily bars, the baseline's expected level as a line over the recent
//! window, that window shaded). Numbers only, plus day labels that are escaped; no
//! script, no style attribute (the CSP forbids inline styles).

use std::fmt::Write;

use crate::inbox::model::{Baseline, DayPoint};
use crate::notify::render::escape;

/// A 120 x 24 polyline of `values` (oldest first); empty when there are none.
pub fn sparkline(values: &[u32]) -> String {
    if values.is_empty() {
        return String::new();
    }
    let (w, h) = (120.0, 24.0);
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = if values.len() > 1 {
        w / (values.len() - 1) as f64
    } else {
        0.0
    };
    let mut pts = String::with_capacity(values.len() * 10);
    for (i, v) in values.iter().enumerate() {
        let x = i as f64 * step;
        let y = h - 1.0 - (*v as f64 / max) * (h - 2.0);
        let _ = write!(pts, "{x:.1},{y:.1} ");
    }
    format!(
        "<svg class=\"spark\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" \
         aria-label=\"daily events, last {} days\"><polyline points=\"{}\"/></svg>",
        values.len(),
        pts.trim_end()
    )
}

/// The account's activity over its window: one bar per day, the baseline's expected
/// level per day as a dashed line across the recent window (shaded), and axes.
/// `metric` is what the series counts (`events`, or `active_users` when the drop rule
/// watches users).
pub fn activity_chart(series: &[DayPoint], baseline: Option<&Baseline>, metric: &str) -> String {
    let users = metric == "active_users";
    let unit = if users { "active users" } else { "events" };
    let value = |d: &DayPoint| {
        if users {
            d.active_users.unwrap_or(0)
        } else {
            d.events
        }
    };
    if series.is_empty() {
        return "<p class=\"muted\">No activity recorded in the kept window.</p>".into();
    }
    let (w, h, left, bottom, top) = (760.0, 220.0, 48.0, 24.0, 10.0);
    let plot_w = w - left - 8.0;
    let plot_h = h - bottom - top;
    let expected = baseline
        .map(|b| b.expected_per_day)
        .filter(|e| e.is_finite() && *e >= 0.0);
    let max = series
        .iter()
        .map(|d| value(d) as f64)
        .fold(expected.unwrap_or(0.0), f64::max)
        .max(1.0);
    let n = series.len() as f64;
    let bw = plot_w / n;
    let y = |v: f64| top + plot_h - v / max * plot_h;
    let mut out = String::with_capacity(series.len() * 120 + 1024);
    let _ = write!(
        out,
        "<svg class=\"chart activity\" viewBox=\"0 0 {w} {h}\" role=\"img\" \
         aria-label=\"daily {unit} over {} days\">",
        series.len()
    );
    if let Some(b) = baseline {
        let recent = (b.recent_days as usize).min(series.len());
        if recent > 0 {
            let x0 = left + (series.len() - recent) as f64 * bw;
            let _ = write!(
                out,
                "<rect class=\"recent\" x=\"{x0:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{plot_h}\"><title>recent {} days</title></rect>",
                recent as f64 * bw,
                recent
            );
        }
    }
    // Axis: 0 and the maximum.
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\"/>\
         <text class=\"tick\" x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\">0</text>\
         <text class=\"tick\" x=\"{2}\" y=\"{4:.1}\" text-anchor=\"end\">{5}</text>",
        y(0.0),
        left + plot_w,
        left - 4.0,
        y(0.0) + 4.0,
        y(max) + 4.0,
        max.round()
    );
    for (i, d) in series.iter().enumerate() {
        let x = left + i as f64 * bw;
        let top_y = y(value(d) as f64);
        let _ = write!(
            out,
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{top_y:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{}: {} {unit}</title></rect>",
            x + bw * 0.1,
            (bw * 0.8).max(0.5),
            (y(0.0) - top_y).max(0.0),
            escape::html(&d.day),
            value(d)
        );
    }
    if let (Some(e), Some(b)) = (expected, baseline) {
        let recent = (b.recent_days as usize).min(series.len());
        let x0 = left + (series.len() - recent) as f64 * bw;
        let _ = write!(
            out,
            "<line class=\"expected\" x1=\"{x0:.1}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\">\
             <title>expected {2:.1} {unit}/day (from the {3} days before)</title></line>",
            y(e),
            left + plot_w,
            e,
            b.baseline_days
        );
    }
    let first = &series[0].day;
    let last = &series[series.len() - 1].day;
    let _ = write!(
        out,
        "<text class=\"tick\" x=\"{left}\" y=\"{0}\">{1}</text>\
         <text class=\"tick\" x=\"{2:.1}\" y=\"{0}\" text-anchor=\"end\">{3}</text></svg>",
        h - 6.0,
        escape::html(first),
        left + plot_w,
        escape::html(last)
    );
    out
}

/// A horizontal bar of `value` out of `max`, `width` wide (the team page's load).
pub fn bar(value: f64, max: f64, width: f64) -> String {
    let frac = if max > 0.0 && value.is_finite() {
        (value / max).clamp(0.0, 1.0)
    } else {
        0.0
    };
    format!(
        "<svg class=\"load\" viewBox=\"0 0 {width} 12\" width=\"{width}\" height=\"12\" role=\"img\" \
         aria-label=\"{value:.1}\"><rect x=\"0\" y=\"1\" width=\"{:.1}\" height=\"10\"/></svg>",
        frac * width
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_spans_the_box() {
        let s = sparkline(&[0, 5, 10]);
        assert!(s.contains("points=\"0.0,23.0 60.0,12.0 120.0,1.0\""), "{s}");
        assert_eq!(sparkline(&[]), "");
        assert!(sparkline(&[0, 0]).contains("0.0,23.0 120.0,23.0"));
    }

    #[test]
    fn chart_has_a_bar_per_day_and_the_expectation() {
        let series: Vec<DayPoint> = (0..10)
            .map(|i| DayPoint {
                day: format!("2026-01-{:02}", i + 1),
                events: i * 10,
                active_users: None,
            })
            .collect();
        let b = Baseline {
            expected_per_day: 50.0,
            baseline_days: 28,
            recent_days: 7,
        };
        let c = activity_chart(&series, Some(&b), "events");
        assert_eq!(c.matches("class=\"bar\"").count(), 10);
        assert_eq!(c.matches("class=\"expected\"").count(), 1);
        assert!(c.contains("expected 50.0 events/day"));
        assert!(c.contains("2026-01-01") && c.contains("2026-01-10"));
        assert!(!activity_chart(&series, None, "events").contains("expected"));
        assert!(activity_chart(&[], None, "events").contains("No activity"));
    }
}
