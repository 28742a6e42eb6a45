//! The binary end to end: replay (plain, gzip, stdin, rejects, --until), gen, demo,
//! check-config.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{bin, churnwatch};

fn lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn without_emitted_at(mut v: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    for r in &mut v {
        r.as_object_mut().unwrap().remove("emitted_at");
    }
    v
}

#[test]
fn replay_plain_gzip_and_stdin_agree() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("e.ndjson");
    let gz = dir.path().join("e.ndjson.gz");
    for p in [&plain, &gz] {
        churnwatch(&[
            "gen",
            "--accounts=40",
            "--days=120",
            "--seed=5",
            "--output",
            p.to_str().unwrap(),
        ]);
    }
    assert!(std::fs::metadata(&gz).unwrap().len() < std::fs::metadata(&plain).unwrap().len() / 3);
    let a = churnwatch(&[
        "replay",
        "-q",
        "--input",
        plain.to_str().unwrap(),
        "--rejects",
        "/dev/null",
    ]);
    let b = churnwatch(&[
        "replay",
        "-q",
        "--input",
        gz.to_str().unwrap(),
        "--rejects",
        "/dev/null",
    ]);
    let mut child = Command::new(bin())
        .args(["replay", "-q", "--input", "-", "--rejects", "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let data = std::fs::read(&plain).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let c = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let (a, b, c) = (lines(&a.stdout), lines(&b.stdout), lines(&c.stdout));
    assert!(a.len() > 10, "the stream should raise alerts");
    for r in &a {
        for key in [
            "id",
            "account_id",
            "kind",
            "status",
            "severity",
            "event_time",
            "emitted_at",
            "summary",
            "evidence",
        ] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
    }
    let a = without_emitted_at(a);
    assert_eq!(a, without_emitted_at(b));
    assert_eq!(a, without_emitted_at(c));
}

#[test]
fn rejected_lines_are_written_with_reason_and_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let mut f = std::fs::File::create(&input).unwrap();
    f.write_all(b"{\"account_id\":\"a\",\"event\":\"x\",\"ts\":\"2026-01-01T00:00:00Z\"}\n")
        .unwrap();
    f.write_all(b"not json\n\n").unwrap();
    f.write_all(b"{\"account_id\":\"a\",\"event\":\"x\",\"ts\":\"soon\"}\n")
        .unwrap();
    f.write_all(b"{\"account_id\":\"a\xff\",\"event\":\"x\",\"ts\":0}\n")
        .unwrap();
    f.write_all(b"{\"account_id\":\"a\",\"event\":\"x\",\"ts\":\"2026-01-02T00:00:00Z\"}\n")
        .unwrap();
    drop(f);
    let rejects = dir.path().join("rejects.ndjson");
    let out = churnwatch(&[
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--rejects",
        rejects.to_str().unwrap(),
    ]);
    let r = lines(&std::fs::read(&rejects).unwrap());
    let got: Vec<(String, u64)> = r
        .iter()
        .map(|v| {
            (
                v["reason"].as_str().unwrap().to_string(),
                v["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("invalid_json".into(), 2),
            ("bad_timestamp".into(), 4),
            ("invalid_utf8".into(), 5)
        ]
    );
    assert_eq!(r[0]["raw"], "not json");
    assert_eq!(
        r[2]["raw_base64"],
        "eyJhY2NvdW50X2lkIjoiYf8iLCJldmVudCI6IngiLCJ0cyI6MH0="
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("2 accepted, 3 rejected, 1 blank"),
        "{summary}"
    );
    assert!(
        summary.contains("bad_timestamp 1, invalid_json 1, invalid_utf8 1"),
        "{summary}"
    );
    // Without --rejects they go to stderr.
    let out = churnwatch(&["replay", "--input", input.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("\"reason\":").count(), 3, "{err}");
}

#[test]
fn until_runs_checks_due_after_the_last_event() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    std::fs::write(
        &input,
        "{\"account_id\":\"a\",\"event\":\"account.created\",\"ts\":\"2026-01-01T00:00:00Z\"}\n",
    )
    .unwrap();
    let none = churnwatch(&["replay", "-q", "--input", input.to_str().unwrap()]);
    assert!(none.stdout.is_empty());
    for until in ["2026-01-31T00:00:00Z", "2026-01-31", "1769817600000"] {
        let out = churnwatch(&[
            "replay",
            "-q",
            "--input",
            input.to_str().unwrap(),
            "--until",
            until,
        ]);
        let recs = lines(&out.stdout);
        assert_eq!(recs.len(), 1, "{until}");
        assert_eq!(recs[0]["id"], "a/not_activated/2026-01-01+30d");
        assert_eq!(recs[0]["event_time"], "2026-01-31T00:00:00.000Z");
    }
    let bad = Command::new(bin())
        .args([
            "replay",
            "--input",
            input.to_str().unwrap(),
            "--until",
            "next week",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("next week"));
}

#[test]
fn check_config_reports_the_option_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[rules.inactive]\nafter_days = 21\n").unwrap();
    let out = churnwatch(&["check-config", "--config", good.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("inactive after 21 days"));
    churnwatch(&["check-config", "--config", "config/churnwatch.toml"]);

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[rules.activity_drop]\nalpha = 2\n").unwrap();
    let out = Command::new(bin())
        .args(["check-config", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rules.activity_drop.alpha") && err.contains("(0, 1)"),
        "{err}"
    );

    let out = Command::new(bin())
        .args(["check-config"])
        .env("CHURNWATCH_RULES__INACTIVE__AFTER_DAYS", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CHURNWATCH_RULES__INACTIVE__AFTER_DAYS"),
        "{err}"
    );

    let out = Command::new(bin())
        .args(["check-config", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read config file /nonexistent.toml")
    );
}

#[test]
fn demo_prints_a_readable_report() {
    let out = churnwatch(&["demo", "--accounts=120", "--days=150"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Alert transitions",
        "What a CSM reads",
        "Still firing at the end, by owning CSM",
        "never_activates",
        "Activity dropped",
        "Not activated 30 days",
    ] {
        assert!(
            text.contains(needle),
            "demo output lacks {needle:?}:\n{text}"
        );
    }
}

/// `check-config` refuses what sign-in cannot use, naming the option: a bad CIDR, a
/// token hash that is not a SHA-256, an unknown role, a token file that is missing or
/// wrong, half a TLS section; a good token file passes.
#[test]
fn check_config_checks_the_sign_in_settings() {
    let dir = tempfile::tempdir().unwrap();
    let hash = "ab".repeat(32);
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!("[[tokens]]\nsha256 = \"{hash}\"\nemail = \"bot@x.io\"\nrole = \"lead\"\n"),
    )
    .unwrap();
    let bad_tokens = dir.path().join("bad-tokens.toml");
    std::fs::write(
        &bad_tokens,
        "[[tokens]]\nsha256 = \"abc\"\nemail = \"bot@x.io\"\nrole = \"lead\"\n",
    )
    .unwrap();
    let good = format!(
        "[server.auth]\ntrusted_proxies = [\"10.0.0.0/24\", \"::1\"]\nleads = [\"lee@x.io\"]\ntokens_file = {:?}\n",
        tokens.display().to_string()
    );
    let cases: Vec<(String, Option<&str>)> = vec![
        (good, None),
        (
            "[server.auth]\ntrusted_proxies = [\"10.0.0.0/33\"]\n".into(),
            Some("server.auth.trusted_proxies"),
        ),
        (
            "[[server.auth.tokens]]\nsha256 = \"abcd\"\nemail = \"a@x.io\"\nrole = \"csm\"\n"
                .into(),
            Some("64 hex digits"),
        ),
        (
            format!("[[server.auth.tokens]]\nsha256 = \"{hash}\"\nemail = \"a@x.io\"\nrole = \"boss\"\n"),
            Some("unknown variant `boss`"),
        ),
        (
            "[server.auth]\nleads = [\"not an email\"]\n".into(),
            Some("server.auth.leads"),
        ),
        (
            "[server.auth]\ntokens_file = \"/nonexistent/tokens.toml\"\n".into(),
            Some("server.auth.tokens_file"),
        ),
        (
            format!(
                "[server.auth]\ntokens_file = {:?}\n",
                bad_tokens.display().to_string()
            ),
            Some("64 hex digits"),
        ),
        (
            "[server.tls]\ncert_file = \"/x.pem\"\n".into(),
            Some("set both cert_file and key_file"),
        ),
        (
            "[server.tls]\ncert_file = \"/nonexistent/x.pem\"\nkey_file = \"/nonexistent/y.pem\"\n"
                .into(),
            Some("server.tls.cert_file"),
        ),
    ];
    for (i, (text, want)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(bin())
            .args(["check-config", "--config", path.to_str().unwrap()])
            .env_remove("CHURNWATCH_API_TOKEN")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        match want {
            None => assert!(out.status.success(), "{text}: {err}"),
            Some(needle) => {
                assert_eq!(out.status.code(), Some(1), "{text}");
                assert!(err.contains(needle), "{text}: {err}");
            }
        }
    }
}
