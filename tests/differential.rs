//! churnwatch against the independent Python implementation of the spec
//! (tests/reference): hand-made scenarios and generated streams under several configs.
//! Every record is compared (id, status, event_time, evidence; floats to 1e-9).
//! Needs python3 with mpmath (`.ci/run` installs it).

mod common;

use std::path::Path;
use std::process::Command;

use common::{bin, churnwatch, repo};

fn python() -> String {
    std::env::var("CHURNWATCH_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn require_python() {
    let ok = Command::new(python())
        .args(["-c", "import mpmath"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 with mpmath is required for the differential tests: pip install mpmath"
    );
}

/// Runs the oracle and churnwatch on the same input and compares the outputs.
fn compare(dir: &Path, config: &Path, input: &Path, until: Option<&str>) -> String {
    compare_at(dir, config, input, until, None)
}

/// `compare` with a clock for the future-timestamp check (`--now` to both).
fn compare_at(
    dir: &Path,
    config: &Path,
    input: &Path,
    until: Option<&str>,
    now: Option<&str>,
) -> String {
    let refs = dir.join("ref.ndjson");
    let ours = dir.join("ours.ndjson");
    let mut r = Command::new(python());
    r.arg(repo().join("tests/reference/churnwatch_ref.py"))
        .arg("--config")
        .arg(config)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(&refs);
    let mut c = Command::new(bin());
    c.args(["replay", "-q", "--config"])
        .arg(config)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(&ours)
        .arg("--rejects")
        .arg(dir.join("rejects.ndjson"));
    if let Some(u) = until {
        r.args(["--until", u]);
        c.args(["--until", u]);
    }
    if let Some(n) = now {
        r.args(["--now", n]);
        c.args(["--now", n]);
    }
    let ro = r.output().expect("run the reference");
    assert!(
        ro.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&ro.stderr)
    );
    let co = c.output().expect("run churnwatch");
    assert!(
        co.status.success(),
        "churnwatch failed: {}",
        String::from_utf8_lossy(&co.stderr)
    );
    let cmp = Command::new(python())
        .arg(repo().join("tests/reference/compare.py"))
        .arg(&refs)
        .arg(&ours)
        .output()
        .expect("run compare.py");
    let text =
        String::from_utf8_lossy(&cmp.stdout).to_string() + &String::from_utf8_lossy(&cmp.stderr);
    assert!(
        cmp.status.success(),
        "{} differs from the reference:\n{text}",
        input.display()
    );
    text
}

#[test]
fn hand_made_scenarios_match_reference() {
    require_python();
    let scen = repo().join("tests/reference/scenarios");
    let cases: [(&str, Option<&str>); 14] = [
        ("s01_not_activated_progress", Some("2026-04-06T00:00:00Z")),
        ("s02_late_activation", None),
        ("s03_activation_at_deadline", Some("2026-02-10T00:00:00Z")),
        ("s04_inactive_episodes", Some("2026-02-12T00:00:00Z")),
        ("s05_drop_negbin_recovery", Some("2026-02-09T00:00:00Z")),
        ("s06_drop_poisson", Some("2026-04-06T00:00:00Z")),
        ("s07_drop_not_fired", Some("2026-04-06T00:00:00Z")),
        ("s08_baseline_boundary", Some("2026-04-06T00:00:00Z")),
        ("s09_churn_resubscribe", Some("2026-05-26T00:00:00Z")),
        ("s10_start_on_first_false", Some("2026-03-01T00:00:00Z")),
        ("s11_start_on_first_true", Some("2026-03-01T00:00:00Z")),
        ("s12_segment_pointers", Some("2026-02-10T00:00:00Z")),
        ("s13_active_users_metric", Some("2026-04-06T00:00:00Z")),
        ("s14_out_of_order", None),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut nonempty = 0;
    for (name, until) in cases {
        let own = scen.join(format!("{name}.toml"));
        let config = if own.exists() {
            own
        } else {
            scen.join("default.toml")
        };
        let text = compare(
            dir.path(),
            &config,
            &scen.join(format!("{name}.ndjson")),
            until,
        );
        if !text.starts_with("0 records") {
            nonempty += 1;
        }
    }
    assert!(nonempty >= 12, "most scenarios must produce alerts");
    // Contract version 2 rejections (an event dated 9999, control characters in ids,
    // one event just past --now + max_future and one exactly at it), on a fixed clock.
    let text = compare_at(
        dir.path(),
        &scen.join("default.toml"),
        &scen.join("s15_hostile_input.ndjson"),
        None,
        Some("2026-02-10T00:00:00Z"),
    );
    assert!(text.starts_with("2 records"), "{text}");
}

/// Generated populations (every persona, jitter, malformed lines) under configs that
/// move every knob.
#[test]
fn generated_streams_match_reference() {
    require_python();
    let dir = tempfile::tempdir().unwrap();
    let configs = [
        ("default", "", "--seed=11", None),
        (
            "users-required-deadlines",
            "[activation]\nrequired_events = [\"report.created\", \"dashboard.shared\"]\nmin_active_users = 2\n\
             [rules.not_activated]\ndeadlines = [{after_days = 7, severity = \"info\"}, {after_days = 14, severity = \"warning\"}, \
             {after_days = 30, severity = \"critical\"}]\n\
             [rules.activity_drop]\nmetric = \"active_users\"\nmin_expected = 10.0\n",
            "--seed=12",
            None,
        ),
        (
            "short-windows-lateness",
            "[time]\nallowed_lateness = \"30m\"\n[lifecycle]\nstart_on_first_event = false\n\
             [activation]\nmin_active_days = 5\nmin_events = 40\n\
             [rules.inactive]\nafter_days = 7\nseverity = \"critical\"\n\
             [rules.activity_drop]\nrecent_days = 5\nbaseline_days = 20\nmin_expected = 10.0\nmin_drop = 0.4\nalpha = 0.01\nrecovery = 0.9\n",
            "--seed=13",
            None,
        ),
        ("until-past-the-end", "", "--seed=14", Some("2026-08-15T00:00:00Z")),
    ];
    for (name, toml, seed, until) in configs {
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, toml).unwrap();
        let input = dir.path().join(format!("{name}.ndjson"));
        let jitter = if name == "short-windows-lateness" {
            "--jitter=25m"
        } else {
            "--jitter=5m"
        };
        churnwatch(&[
            "gen",
            "--accounts=90",
            "--days=150",
            seed,
            jitter,
            "--bad-lines=0.001",
            if name == "users-required-deadlines" {
                "--epoch-ms"
            } else {
                "--volume=1"
            },
            "--output",
            input.to_str().unwrap(),
        ]);
        let text = compare(dir.path(), &config, &input, until);
        let n: u64 = text.split_whitespace().next().unwrap().parse().unwrap_or(0);
        assert!(
            n >= 20,
            "{name}: only {n} records; the stream should exercise the rules"
        );
    }
}
