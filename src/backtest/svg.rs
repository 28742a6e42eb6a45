//! Small inline-SVG charts for the HTML report: grouped bars, a scatter plot, lines
//! over weeks and a strip plot with quartiles. No script, no external asset; every
//! text is escaped.

use std::fmt::Write;

/// Colours of the series, in order.
pub const PALETTE: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

const W: f64 = 640.0;
const H: f64 = 300.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 44.0;

/// Escapes text for HTML and SVG content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// A linear scale from a data range onto a pixel range.
#[derive(Debug, Clone, Copy)]
struct Scale {
    d0: f64,
    d1: f64,
    p0: f64,
    p1: f64,
}

impl Scale {
    fn at(&self, v: f64) -> f64 {
        if self.d1 == self.d0 {
            return (self.p0 + self.p1) / 2.0;
        }
        self.p0 + (v - self.d0) / (self.d1 - self.d0) * (self.p1 - self.p0)
    }
}

/// A round upper bound for an axis (1, 2 or 5 times a power of ten).
pub fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&m| m >= v)
        .unwrap_or(10.0 * p)
}

fn open(out: &mut String, label: &str) {
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}">"#,
        esc(label)
    );
}

/// Frame, horizontal grid and y ticks (0..y_max, 5 steps), and the axis titles.
fn frame(out: &mut String, y: &Scale, y_max: f64, x_title: &str, y_title: &str) {
    for i in 0..=5 {
        let v = y_max * i as f64 / 5.0;
        let py = y.at(v);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            py + 4.0,
            fmt_tick(v)
        );
    }
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{}" stroke="#333"/><line x1="{LEFT}" x2="{}" y1="{}" y2="{}" stroke="#333"/><text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text><text transform="translate(14 {}) rotate(-90)" font-size="12" text-anchor="middle">{}</text>"##,
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM,
        (LEFT + W - RIGHT) / 2.0,
        H - 6.0,
        esc(x_title),
        (TOP + H - BOTTOM) / 2.0,
        esc(y_title)
    );
}

fn fmt_tick(v: f64) -> String {
    if v == v.round() && v.abs() < 1e6 {
        format!("{v:.0}")
    } else if v.abs() >= 0.1 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn y_scale(y_max: f64) -> Scale {
    Scale {
        d0: 0.0,
        d1: y_max,
        p0: H - BOTTOM,
        p1: TOP,
    }
}

/// Grouped bars: one group per category, one bar per series; `None` draws no bar and
/// writes "n/a". Values in 0..=y_max.
pub fn bars(
    label: &str,
    categories: &[String],
    series: &[(&str, Vec<Option<f64>>)],
    y_max: f64,
    y_title: &str,
) -> String {
    let mut out = String::new();
    open(&mut out, label);
    let y = y_scale(y_max);
    frame(&mut out, &y, y_max, "", y_title);
    let group = (W - LEFT - RIGHT) / categories.len().max(1) as f64;
    let bar = group * 0.7 / series.len().max(1) as f64;
    for (ci, c) in categories.iter().enumerate() {
        let gx = LEFT + group * ci as f64 + group * 0.15;
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{}" font-size="12" text-anchor="middle">{}</text>"#,
            LEFT + group * (ci as f64 + 0.5),
            H - BOTTOM + 16.0,
            esc(c)
        );
        for (si, (name, vals)) in series.iter().enumerate() {
            let x = gx + bar * si as f64;
            match vals.get(ci).copied().flatten() {
                Some(v) => {
                    let py = y.at(v.clamp(0.0, y_max));
                    let _ = write!(
                        out,
                        r#"<rect class="bar" x="{x:.1}" y="{py:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {v:.3}</title></rect>"#,
                        bar * 0.92,
                        (H - BOTTOM - py).max(0.0),
                        PALETTE[si % PALETTE.len()],
                        esc(c),
                        esc(name)
                    );
                }
                None => {
                    let _ = write!(
                        out,
                        r##"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle" fill="#888">n/a</text>"##,
                        x + bar / 2.0,
                        H - BOTTOM - 4.0
                    );
                }
            }
        }
    }
    legend(&mut out, &series.iter().map(|s| s.0).collect::<Vec<_>>());
    out.push_str("</svg>");
    out
}

fn legend(out: &mut String, names: &[&str]) {
    for (i, n) in names.iter().enumerate() {
        let x = LEFT + 8.0 + 130.0 * i as f64;
        let _ = write!(
            out,
            r#"<rect x="{x}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" font-size="11">{}</text>"#,
            TOP - 12.0,
            PALETTE[i % PALETTE.len()],
            x + 14.0,
            TOP - 3.0,
            esc(n)
        );
    }
}

/// One point of a scatter plot.
pub struct Point {
    pub x: f64,
    pub y: f64,
    /// Index of the series (colour and legend).
    pub series: usize,
    /// Shown on hover.
    pub title: String,
    /// Drawn with a ring and labelled "current".
    pub current: bool,
}

/// A scatter plot with axes from 0.
pub fn scatter(
    label: &str,
    series: &[&str],
    points: &[Point],
    x_title: &str,
    y_title: &str,
    y_max: f64,
) -> String {
    let mut out = String::new();
    open(&mut out, label);
    let x_max = nice_max(points.iter().map(|p| p.x).fold(0.0, f64::max) * 1.05);
    let y = y_scale(y_max);
    frame(&mut out, &y, y_max, x_title, y_title);
    let x = Scale {
        d0: 0.0,
        d1: x_max,
        p0: LEFT,
        p1: W - RIGHT,
    };
    for i in 0..=5 {
        let v = x_max * i as f64 / 5.0;
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            x.at(v),
            H - BOTTOM + 14.0,
            fmt_tick(v)
        );
    }
    for p in points {
        let (px, py) = (x.at(p.x), y.at(p.y.clamp(0.0, y_max)));
        let colour = PALETTE[p.series % PALETTE.len()];
        let _ = write!(
            out,
            r#"<circle class="point" cx="{px:.1}" cy="{py:.1}" r="5" fill="{colour}" fill-opacity="0.8"><title>{}</title></circle>"#,
            esc(&p.title)
        );
        if p.current {
            let _ = write!(
                out,
                r##"<circle class="current" cx="{px:.1}" cy="{py:.1}" r="10" fill="none" stroke="#000" stroke-width="2"/><text x="{:.1}" y="{:.1}" font-size="11" font-weight="bold">current</text>"##,
                px + 12.0,
                py - 8.0
            );
        }
    }
    legend(&mut out, series);
    out.push_str("</svg>");
    out
}

/// Lines over equally spaced x positions (weeks), with the x labels thinned out.
pub fn lines(
    label: &str,
    x_labels: &[String],
    series: &[(String, Vec<f64>)],
    y_title: &str,
) -> String {
    let mut out = String::new();
    open(&mut out, label);
    let y_max = nice_max(
        series
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .fold(0.0, f64::max),
    );
    let y = y_scale(y_max);
    frame(&mut out, &y, y_max, "week (Monday, UTC)", y_title);
    let n = x_labels.len().max(2);
    let x = Scale {
        d0: 0.0,
        d1: (n - 1) as f64,
        p0: LEFT,
        p1: W - RIGHT,
    };
    let step = x_labels.len().div_ceil(6).max(1);
    for (i, l) in x_labels.iter().enumerate().step_by(step) {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
            x.at(i as f64),
            H - BOTTOM + 14.0,
            esc(l)
        );
    }
    for (si, (name, vals)) in series.iter().enumerate() {
        let pts: Vec<String> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x.at(i as f64), y.at(*v)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline class="series" points="{}" fill="none" stroke="{}" stroke-width="1.5"><title>{}</title></polyline>"#,
            pts.join(" "),
            PALETTE[si % PALETTE.len()],
            esc(name)
        );
    }
    out.push_str("</svg>");
    out
}

/// One row of a strip plot: its name, its values, and their p25, p50 and p75.
pub type Strip = (String, Vec<f64>, [Option<f64>; 3]);

/// One row per category: every value as a dot, and a box from p25 to p75 with a mark
/// at p50. The x axis runs from 0 to `x_max`.
pub fn strips(label: &str, rows: &[Strip], x_title: &str, x_max: f64) -> String {
    let mut out = String::new();
    open(&mut out, label);
    let x = Scale {
        d0: 0.0,
        d1: x_max,
        p0: LEFT + 60.0,
        p1: W - RIGHT,
    };
    let row_h = (H - TOP - BOTTOM) / rows.len().max(1) as f64;
    for i in 0..=5 {
        let v = x_max * i as f64 / 5.0;
        let px = x.at(v);
        let _ = write!(
            out,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{TOP}" y2="{}" stroke="#ddd"/><text x="{px:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 14.0,
            fmt_tick(v)
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{}" font-size="12" text-anchor="middle">{}</text>"#,
        (LEFT + W) / 2.0,
        H - 6.0,
        esc(x_title)
    );
    for (ri, (name, vals, q)) in rows.iter().enumerate() {
        let cy = TOP + row_h * (ri as f64 + 0.5);
        let colour = PALETTE[ri % PALETTE.len()];
        let _ = write!(
            out,
            r#"<text x="{}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"#,
            LEFT + 52.0,
            cy + 4.0,
            esc(name)
        );
        if let [Some(p25), Some(p50), Some(p75)] = q {
            let _ = write!(
                out,
                r##"<rect class="box" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}" fill-opacity="0.2" stroke="{colour}"/><line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#000" stroke-width="2"/>"##,
                x.at(*p25),
                cy - row_h * 0.3,
                (x.at(*p75) - x.at(*p25)).max(1.0),
                row_h * 0.6,
                x.at(*p50),
                x.at(*p50),
                cy - row_h * 0.3,
                cy + row_h * 0.3
            );
        } else {
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#888">caught nothing</text>"##,
                x.at(0.0) + 4.0,
                cy + 4.0
            );
        }
        for (i, v) in vals.iter().enumerate() {
            // A small deterministic vertical spread so equal values stay visible.
            let dy = ((i * 7919) % 11) as f64 / 10.0 - 0.5;
            let _ = write!(
                out,
                r#"<circle class="lead" cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"><title>{v:.1} days</title></circle>"#,
                x.at(v.min(x_max)),
                cy + dy * row_h * 0.4
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>\u{7}"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt; "
        );
    }

    #[test]
    fn nice_max_rounds_up() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(0.83), 1.0);
        assert_eq!(nice_max(1.2), 2.0);
        assert_eq!(nice_max(3.0), 5.0);
        assert_eq!(nice_max(51.0), 100.0);
    }

    #[test]
    fn charts_escape_their_labels() {
        let s = scatter(
            "t",
            &["<b>"],
            &[Point {
                x: 1.0,
                y: 0.5,
                series: 0,
                title: "a<b".into(),
                current: true,
            }],
            "x",
            "y",
            1.0,
        );
        assert!(s.contains("a&lt;b") && s.contains("&lt;b&gt;") && !s.contains("<b>"));
        assert!(s.contains("class=\"current\""));
    }
}
