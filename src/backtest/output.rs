//! The `--output` JSON document (docs/backtest.md, "Output"): the history, the horizon
//! and one entry per run with its settings, scores per kind (with the feedback from
//! actions, when given) and alert load.

use serde_json::{json, Map, Value};

use crate::time::{format_rfc3339, DAY};

use super::churns::Churns;
use super::history::History;
use super::score::Window;
use super::sweep::toml_value;
use super::Run;

/// A TOML value as JSON (a `--set` value in `settings`).
fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => s.clone().into(),
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(f) => json!(f),
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Datetime(d) => d.to_string().into(),
        toml::Value::Array(a) => a.iter().map(toml_to_json).collect(),
        toml::Value::Table(t) => t
            .iter()
            .map(|(k, v)| (k.clone(), toml_to_json(v)))
            .collect::<Map<_, _>>()
            .into(),
    }
}

/// Churns whose whole look-back window lies in the history.
pub fn eligible_churns(churns: &Churns, w: &Window) -> usize {
    churns
        .iter()
        .filter(|&(_, c)| c.saturating_sub(w.horizon) >= w.start)
        .count()
}

/// The whole document.
pub fn document(h: &History, churns: &Churns, w: &Window, runs: &[Run]) -> Value {
    let horizon_days: Value = if w.horizon % DAY == 0 {
        (w.horizon / DAY).into()
    } else {
        json!(w.horizon as f64 / DAY as f64)
    };
    let runs: Vec<Value> = runs
        .iter()
        .map(|r| {
            let settings: Map<String, Value> = r
                .spec
                .settings
                .iter()
                .map(|(k, v)| (k.clone(), toml_to_json(&toml_value(v))))
                .collect();
            let fb = r.score.feedback.as_ref();
            let kinds: Map<String, Value> = r
                .score
                .kinds
                .iter()
                .enumerate()
                .map(|(i, (k, s))| {
                    let mut v = serde_json::to_value(s).expect("plain data");
                    if let Some((_, f)) = fb.and_then(|f| f.kinds.get(i)) {
                        v["feedback"] = serde_json::to_value(f).expect("plain data");
                    }
                    (k.to_string(), v)
                })
                .collect();
            let mut run = json!({
                "settings": settings,
                "kinds": kinds,
                "load": serde_json::to_value(&r.score.load).expect("plain data"),
            });
            if let Some(f) = fb {
                run["feedback"] = serde_json::to_value(f).expect("plain data");
            }
            run
        })
        .collect();
    json!({
        "history": {
            "start": format_rfc3339(w.start),
            "end": format_rfc3339(w.end),
            "accounts": h.active_accounts,
            "churns": churns.len(),
            "eligible_churns": eligible_churns(churns, w),
        },
        "horizon_days": horizon_days,
        "runs": runs,
    })
}
