//! `churnwatch backtest` against the independent Python oracle
//! (tests/reference/backtest_ref.py, which takes its alerts from the detection oracle)
//! on generated histories: defaults, a sweep, `--until` mid-history, `--outcomes`.
//! Every number of the `--output` document is compared (floats to 1e-9 relative).
//! Needs python3 with mpmath (`scripts/setup.sh` makes target/pyenv).

mod common;

use std::path::Path;
use std::process::Command;

use common::{churnwatch, repo};
use serde_json::Value;

fn python() -> String {
    std::env::var("CHURNWATCH_PYTHON").unwrap_or_else(|_| {
        let venv = repo().join("target/pyenv/bin/python");
        if venv.exists() {
            venv.display().to_string()
        } else {
            "python3".into()
        }
    })
}

/// Differences between two JSON documents, floats compared at relative 1e-9.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let kx: Vec<&String> = x.keys().collect();
            let ky: Vec<&String> = y.keys().collect();
            if kx != ky {
                out.push(format!("{path}: keys {kx:?} vs {ky:?}"));
                return;
            }
            for (k, v) in x {
                diff(&format!("{path}.{k}"), v, &y[k], out);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                out.push(format!("{path}: {} vs {} items", x.len(), y.len()));
                return;
            }
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), v, w, out);
            }
        }
        (Value::Number(x), Value::Number(y)) => {
            let (p, q) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            if (p - q).abs() > 1e-9 * p.abs().max(q.abs()) {
                out.push(format!("{path}: {x} vs {y}"));
            }
        }
        _ if a != b => out.push(format!("{path}: {a} vs {b}")),
        _ => {}
    }
}

fn compare(dir: &Path, name: &str, args: &[&str]) -> Value {
    let ours = dir.join(format!("{name}-ours.json"));
    let refs = dir.join(format!("{name}-ref.json"));
    let mut a = vec!["backtest", "-q", "--output", ours.to_str().unwrap()];
    a.extend_from_slice(args);
    churnwatch(&a);
    let out = Command::new(python())
        .arg(repo().join("tests/reference/backtest_ref.py"))
        .args(args)
        .arg("--output")
        .arg(&refs)
        .output()
        .expect("run the oracle");
    assert!(
        out.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read =
        |p: &Path| -> Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    let (x, y) = (read(&ours), read(&refs));
    let mut d = Vec::new();
    diff("", &x, &y, &mut d);
    assert!(d.is_empty(), "{name}: ours vs reference:\n{}", d.join("\n"));
    x
}

#[test]
fn generated_histories_score_like_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "").unwrap();
    let c = config.to_str().unwrap();
    let mut caught = 0;
    for seed in ["--seed=21"] {
        let events = dir.path().join(format!("e{seed}.ndjson"));
        let accounts = dir.path().join(format!("a{seed}.csv"));
        churnwatch(&[
            "gen",
            "--accounts=120",
            "--days=220",
            seed,
            "--output",
            events.to_str().unwrap(),
            "--accounts-file",
            accounts.to_str().unwrap(),
        ]);
        let (e, a) = (events.to_str().unwrap(), accounts.to_str().unwrap());
        let m = compare(
            dir.path(),
            "sweep",
            &[
                "--config",
                c,
                "--input",
                e,
                "--accounts",
                a,
                "--set",
                "rules.inactive.after_days=7,21",
                "--set",
                "rules.activity_drop.alpha=0.0001,0.01",
            ],
        );
        assert_eq!(m["runs"].as_array().unwrap().len(), 4);
        caught += m["runs"][0]["kinds"]["any"]["caught"].as_u64().unwrap();
        compare(
            dir.path(),
            "until",
            &[
                "--config",
                c,
                "--input",
                e,
                "--horizon",
                "45d",
                "--until",
                "2026-05-20T12:00:00Z",
            ],
        );
        // Outcomes: every fifth account with an event churns on 2026-04-10, and one of
        // them a second time.
        let mut ids: Vec<String> = std::fs::read_to_string(&events)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["account_id"].as_str().map(String::from))
            .filter(|id| id.starts_with("acct-0"))
            .collect();
        ids.sort();
        ids.dedup();
        let outcomes = dir.path().join("o.csv");
        let mut text = String::from("account_id,churned_at\n");
        for id in ids.iter().step_by(5) {
            text.push_str(&format!("{id},2026-04-10T08:00:00Z\n"));
        }
        text.push_str(&format!("{},1780000000000\n", ids[5]));
        std::fs::write(&outcomes, text).unwrap();
        compare(
            dir.path(),
            "outcomes",
            &[
                "--config",
                c,
                "--input",
                e,
                "--accounts",
                a,
                "--outcomes",
                outcomes.to_str().unwrap(),
            ],
        );
    }
    assert!(
        caught >= 3,
        "the history should have caught churns: {caught}"
    );
}
