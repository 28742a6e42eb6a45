//! Hostile input and careless upstreams, through the binary (`replay`): an event dated
//! 9999, ids with control characters, a line of hundreds of megabytes inside a small
//! gzip file, and floods of invented account ids. Each case shows the failure the
//! check prevents and that the rest of the input is processed as if the bad lines
//! were not there.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Output;

use common::{bin, churnwatch};

fn records(bytes: &[u8]) -> Vec<serde_json::Value> {
    let mut v: Vec<serde_json::Value> = String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    for r in &mut v {
        r.as_object_mut().unwrap().remove("emitted_at");
    }
    v.sort_by_key(|r| r.to_string());
    v
}

/// `replay` of `input` with extra arguments; returns (alerts, rejects, stderr).
fn replay(
    dir: &Path,
    input: &Path,
    extra: &[&str],
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>, String) {
    let rejects = dir.join("rejects.ndjson");
    let mut args = vec![
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--rejects",
        rejects.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = churnwatch(&args);
    let rej = std::fs::read(&rejects).unwrap();
    let rej = String::from_utf8_lossy(&rej)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        records(&out.stdout),
        rej,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn event(account: &str, ts: &str) -> String {
    format!(r#"{{"account_id":"{account}","event":"report.created","ts":"{ts}","user_id":"u1"}}"#)
}

/// The issue's repro: twenty ordinary events (five accounts, four days each, in time
/// order), plus one event dated 9999 after the first two days.
fn twenty_and_one_from_9999(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut lines: Vec<String> = (1..=4)
        .flat_map(|d| {
            (0..5).map(move |a| event(&format!("acct-{a}"), &format!("2026-03-0{d}T10:0{a}:00Z")))
        })
        .collect();
    let clean = dir.join("clean.ndjson");
    std::fs::write(&clean, lines.join("\n") + "\n").unwrap();
    lines.insert(
        10,
        r#"{"account_id":"zz","event":"x","ts":"9999-12-31T00:00:00Z"}"#.into(),
    );
    let poisoned = dir.join("poisoned.ndjson");
    std::fs::write(&poisoned, lines.join("\n") + "\n").unwrap();
    (clean, poisoned)
}

#[test]
fn one_event_dated_9999_is_rejected_and_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, poisoned) = twenty_and_one_from_9999(dir.path());
    let until = ["--until", "2026-04-01"];
    let (expected, _, _) = replay(dir.path(), &clean, &until);
    assert_eq!(
        expected.len(),
        5,
        "each account goes dark once: {expected:#?}"
    );

    // Today's clock: the 9999 event is rejected, the rest is as if it were not there.
    let (got, rejects, summary) = replay(dir.path(), &poisoned, &until);
    assert_eq!(got, expected);
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0]["reason"], "future_timestamp");
    assert_eq!(rejects[0]["line"], 11);
    assert!(rejects[0]["error"]
        .as_str()
        .unwrap()
        .contains("9999-12-31T00:00:00.000Z is more than 1d after the clock"));
    assert!(summary.contains("future_timestamp 1"), "{summary}");

    // What the check prevents (a clock at the end of time accepts the event): the
    // watermark jumps to 9999, every account (two active days, not activated yet) fires
    // both onboarding alerts, and the ordinary events after it arrive "late" and
    // resolve them all at the end of time.
    let (broken, _, summary) = replay(dir.path(), &poisoned, &["--now", "9999-12-31T00:00:00Z"]);
    let firing = broken
        .iter()
        .filter(|r| r["kind"] == "not_activated" && r["status"] == "firing")
        .count();
    let resolved_in_9999 = broken
        .iter()
        .filter(|r| r["status"] == "resolved" && r["event_time"] == "9999-12-30T23:50:00.000Z")
        .count();
    assert_eq!((firing, resolved_in_9999), (10, 10), "{broken:#?}");
    assert!(broken
        .iter()
        .any(|r| r["summary"].as_str().unwrap().contains("Activated 2912")));
    assert!(summary.contains("10 late"), "{summary}");

    // --now stands for the clock: data after it (plus a day) is rejected, reproducibly.
    let (none, rejects, _) = replay(dir.path(), &clean, &["--now", "2026-03-02T09:00:00Z"]);
    assert!(none.is_empty());
    let future = rejects
        .iter()
        .filter(|r| r["reason"] == "future_timestamp")
        .count();
    assert_eq!(future, 10, "days 3 and 4 of the five accounts");
}

#[test]
fn ids_with_control_characters_are_rejected_as_invalid_id() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let lines = [
        event("acme", "2026-03-01T10:00:00Z"),
        r#"{"account_id":"acme\n[fake] owner: root","event":"x","ts":"2026-03-01T10:00:00Z"}"#.into(),
        r#"{"account_id":"acme","event":"x","ts":"2026-03-01T11:00:00Z","user_id":"\u001b]8;;http://evil\u0007"}"#.into(),
        "{\"account_id\":\"\u{7f}\",\"event\":\"x\",\"ts\":\"2026-03-01T11:00:00Z\"}".into(),
        event("acme", "2026-03-02T10:00:00Z"),
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();
    let (_, rejects, summary) = replay(dir.path(), &input, &[]);
    let got: Vec<(&str, u64)> = rejects
        .iter()
        .map(|r| (r["reason"].as_str().unwrap(), r["line"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        got,
        [("invalid_id", 2), ("invalid_id", 3), ("invalid_id", 4)]
    );
    assert!(summary.contains("2 accepted, 3 rejected"), "{summary}");
    assert!(summary.contains("1 accounts"), "{summary}");
}

/// Writes a gzip file of several members (`MultiGzDecoder` reads them as one stream):
/// `head`, then `big` bytes of `x` inside a JSON string, then `tail`. The big part is
/// one compressed megabyte repeated, so the file stays small and quick to write.
fn gzip_with_a_huge_line(path: &Path, head: &str, big: usize, tail: &str) {
    let member = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&member(
        format!("{head}{{\"account_id\":\"big\",\"event\":\"x\",\"ts\":0,\"pad\":\"").as_bytes(),
    ))
    .unwrap();
    const MB: usize = 1 << 20;
    let block = member(&vec![b'x'; MB]);
    for _ in 0..big / MB {
        f.write_all(&block).unwrap();
    }
    f.write_all(&member(format!("\"}}\n{tail}").as_bytes()))
        .unwrap();
    f.flush().unwrap();
}

#[test]
fn a_300_mb_line_in_a_small_gzip_file_is_skipped_with_a_small_reject() {
    let dir = tempfile::tempdir().unwrap();
    let before: String = (1..=5)
        .map(|d| event("acct-a", &format!("2026-03-0{d}T10:00:00Z")) + "\n")
        .collect();
    let after: String = (1..=5)
        .map(|d| event("acct-b", &format!("2026-03-0{d}T10:00:00Z")) + "\n")
        .collect();
    let big = 300 << 20;
    let gz = dir.path().join("huge.ndjson.gz");
    gzip_with_a_huge_line(&gz, &before, big, &after);
    assert!(std::fs::metadata(&gz).unwrap().len() < 2 << 20);
    let clean = dir.path().join("clean.ndjson");
    std::fs::write(&clean, format!("{before}{after}")).unwrap();

    let until = ["--until", "2026-04-01"];
    let (expected, _, _) = replay(dir.path(), &clean, &until);
    assert_eq!(expected.len(), 2, "both accounts go dark: {expected:#?}");
    let (got, rejects, summary) = replay(dir.path(), &gz, &until);
    // The lines after it were all processed.
    assert_eq!(got, expected);
    assert!(summary.contains("10 accepted, 1 rejected"), "{summary}");
    assert_eq!(rejects.len(), 1);
    let r = &rejects[0];
    assert_eq!(r["reason"], "oversized");
    assert_eq!(r["line"], 6);
    let len = (big + 48) as u64; // the JSON around the padding
    assert_eq!(r["raw_length"], len);
    assert_eq!(r["raw_truncated"], true);
    let raw = r["raw"].as_str().unwrap();
    assert!(raw.starts_with("{\"account_id\":\"big\"") && raw.len() == 1024);
    assert!(r["error"]
        .as_str()
        .unwrap()
        .contains(&format!("{len} bytes")));
    let reject_file = std::fs::metadata(dir.path().join("rejects.ndjson")).unwrap();
    assert!(reject_file.len() < 2048, "{} bytes", reject_file.len());
}

/// `n` distinct ids of 256 bytes, one event each at the same time.
fn invented_accounts(path: &Path, real: &[&str], n: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for a in real {
        for d in 1..=4 {
            writeln!(f, "{}", event(a, &format!("2026-03-0{d}T10:00:00Z"))).unwrap();
        }
    }
    for i in 0..n {
        let id = format!("{i:0>256}");
        writeln!(f, "{}", event(&id, "2026-03-04T11:00:00Z")).unwrap();
    }
}

#[test]
fn invented_account_ids_stop_at_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("flood.ndjson");
    invented_accounts(&input, &["acct-a", "acct-b"], 20_000);
    let config = dir.path().join("cap.toml");
    std::fs::write(&config, "[engine]\nmax_accounts_per_partition = 1000\n").unwrap();
    let until = [
        "--until",
        "2026-07-01",
        "--config",
        config.to_str().unwrap(),
    ];
    let (alerts, rejects, summary) = replay(dir.path(), &input, &until);
    assert_eq!(rejects.len(), 19_002);
    assert!(rejects.iter().all(|r| r["reason"] == "account_limit"));
    assert!(rejects[0]["error"]
        .as_str()
        .unwrap()
        .contains("limit of 1000 accounts (engine.max_accounts_per_partition)"));
    assert!(summary.contains("account_limit 19002"), "{summary}");
    assert!(summary.contains("; 1000 accounts"), "{summary}");
    // Without the cap every invented id would have its two onboarding alerts; with it,
    // only the 998 that fit do, and the real accounts (seen first) are untouched.
    let not_activated = alerts
        .iter()
        .filter(|r| r["kind"] == "not_activated")
        .count();
    assert_eq!(not_activated, 2 * 998);
    for a in ["acct-a", "acct-b"] {
        assert!(
            alerts
                .iter()
                .any(|r| r["account_id"] == a && r["kind"] == "inactive"),
            "{a}"
        );
    }
}

#[test]
fn known_accounts_only_tracks_the_accounts_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("flood.ndjson");
    invented_accounts(&input, &["acct-a", "acct-b"], 500);
    let accounts = dir.path().join("accounts.csv");
    std::fs::write(
        &accounts,
        "account_id,name,owner_email\nacct-a,Acme,ana@example.com\nacct-b,Beta,bo@example.com\n",
    )
    .unwrap();
    let config = dir.path().join("known.toml");
    std::fs::write(&config, "[engine]\nknown_accounts_only = true\n").unwrap();
    let args = [
        "--until",
        "2026-07-01",
        "--config",
        config.to_str().unwrap(),
        "--accounts",
        accounts.to_str().unwrap(),
    ];
    let (alerts, rejects, summary) = replay(dir.path(), &input, &args);
    assert_eq!(rejects.len(), 500);
    assert!(rejects.iter().all(|r| r["reason"] == "unknown_account"));
    assert!(summary.contains("8 accepted, 500 rejected"), "{summary}");
    assert!(summary.contains("; 2 accounts"), "{summary}");
    assert!(!alerts.is_empty());
    assert!(alerts
        .iter()
        .all(|r| r["account_id"] == "acct-a" || r["account_id"] == "acct-b"));

    // The mode without metadata is a mistake, said as such.
    let out: Output = std::process::Command::new(bin())
        .args([
            "replay",
            "--input",
            input.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("engine.known_accounts_only") && err.contains("--accounts"),
        "{err}"
    );
}
