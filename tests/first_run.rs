//! What a new user meets on a first run of the binary: quiet replays, config checks that
//! say what they checked, dry runs that fail where the real run would, and delivery
//! errors that name their cause without the secret URL.

mod common;

use std::process::{Command, Output};

use common::bin;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("CHURNWATCH_CONFIG")
        .output()
        .expect("run churnwatch")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A few alert records (from a small generated population) in `dir`.
fn alerts(dir: &std::path::Path) -> std::path::PathBuf {
    let (path, text) = common::generated_alerts(dir, &["--accounts=20", "--days=60"], false);
    assert!(!text.is_empty());
    path
}

#[test]
fn quiet_replay_prints_one_line_about_rejects_instead_of_each() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    std::fs::write(
        &input,
        "{\"account_id\":\"a\",\"event\":\"x\",\"ts\":\"2026-01-01T00:00:00Z\"}\nnot json\n{\"event\":\"x\"}\n",
    )
    .unwrap();
    let out = run(&["replay", "-q", "--input", input.to_str().unwrap()], &[]);
    assert!(out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("2 line(s) rejected"), "{err}");
    // Without -q, each one is shown with its reason.
    let out = run(&["replay", "--input", input.to_str().unwrap()], &[]);
    let err = stderr(&out);
    assert!(
        err.contains("invalid_json") && err.contains("missing_field"),
        "{err}"
    );
}

#[test]
fn check_config_says_what_it_checked_and_errors_say_their_cause_once() {
    let out = run(&["check-config"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("built-in defaults"), "{text}");
    assert!(
        text.contains("activity_drop of events over 7+28 days"),
        "{text}"
    );

    let out = run(&["check-config", "--config", "/nonexistent.toml"], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn dry_run_fails_on_a_missing_secret_and_warns_about_alerts_without_owners() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = alerts(dir.path());
    let cfg = dir.path().join("notify.toml");
    std::fs::write(
        &cfg,
        "[[notify.receivers]]\nname = \"team\"\ntype = \"slack\"\nurl_env = \"CW_TEST_TEAM_URL\"\n\
         [notify.route]\nreceiver = \"team\"\n",
    )
    .unwrap();
    let args = [
        "notify",
        "--dry-run",
        "--config",
        cfg.to_str().unwrap(),
        "--input",
        alerts.to_str().unwrap(),
    ];
    let out = run(&args, &[]);
    assert!(!out.status.success(), "a real run would fail: so must this");
    let err = stderr(&out);
    assert!(err.contains("CW_TEST_TEAM_URL"), "{err}");

    let secret = "https://hooks.example.com/services/T0/B0/s3cret";
    let out = run(&args, &[("CW_TEST_TEAM_URL", secret)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("carry no owner") && err.contains("--accounts"),
        "{err}"
    );
    let all = format!("{err}{}", String::from_utf8_lossy(&out.stdout));
    assert!(!all.contains("s3cret"), "the secret is never printed");
}

#[test]
fn a_failed_delivery_names_its_cause_but_not_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = alerts(dir.path());
    // A port nobody listens on: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("notify.toml");
    std::fs::write(
        &cfg,
        "[notify]\nmax_attempts = 2\nretry_initial = \"10ms\"\n\
         [[notify.receivers]]\nname = \"hook\"\ntype = \"webhook\"\nurl_env = \"CW_TEST_HOOK_URL\"\n\
         [notify.route]\nreceiver = \"hook\"\n",
    )
    .unwrap();
    let secret = format!("http://127.0.0.1:{port}/s3cret-path");
    let out = run(
        &[
            "notify",
            "--config",
            cfg.to_str().unwrap(),
            "--input",
            alerts.to_str().unwrap(),
        ],
        &[("CW_TEST_HOOK_URL", &secret)],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.to_lowercase().contains("connection refused"),
        "the cause is named: {err}"
    );
    assert!(!err.contains("s3cret"), "the URL is not: {err}");
}
