//! Notifications against real servers on loopback: an HTTP server that records requests
//! and fails on demand, and an SMTP server (Python's aiosmtpd, installed by
//! scripts/setup.sh) whose mailbox the test reads.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::bin;
use common::http::{http_server, Req};
use common::smtp::Smtp;

fn config(dir: &Path, http: &str, smtp_port: u16, webhook_path: &str) -> PathBuf {
    let p = dir.join("notify.toml");
    std::fs::write(
        &p,
        format!(
            r#"
[notify]
crm_url_template = "https://crm.example.com/accounts/{{account_id}}"
retry_initial = "50ms"
retry_max = "200ms"
max_attempts = 4
timeout = "5s"

[[notify.receivers]]
name = "team-slack"
type = "slack"
url_env = "CW_TEST_SLACK_URL"
rate_limit_per_sec = 50

[[notify.receivers]]
name = "csm-email"
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
smtp_tls = "none"
from = "churnwatch@example.com"

[[notify.receivers]]
name = "leads-webhook"
type = "webhook"
url = "http://{http}/{webhook_path}"
hmac_key_env = "CW_TEST_HMAC"

[notify.route]
receiver = "team-slack"

[[notify.route.routes]]
match = {{ severity = "critical" }}
receiver = "leads-webhook"
continue = true

[[notify.route.routes]]
match = {{ owner = "*" }}
receiver = "csm-email"
"#
        ),
    )
    .unwrap();
    p
}

/// Alert records with account metadata, from a generated population.
fn alerts(dir: &Path) -> (PathBuf, Vec<serde_json::Value>) {
    let (path, text) =
        common::generated_alerts(dir, &["--accounts=120", "--days=130", "--seed=31"], true);
    let recs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(recs.len() > 30);
    (path, recs)
}

fn owner(r: &serde_json::Value) -> Option<String> {
    r["account"]["owner_email"]
        .as_str()
        .filter(|o| !o.is_empty())
        .map(str::to_string)
}

fn verify_signature(req: &Req, key: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    let ts = &req.headers["x-churnwatch-timestamp"];
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{ts}.{}", req.body).as_bytes());
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    req.headers["x-churnwatch-signature"] == format!("v1={want}")
}

#[test]
fn routes_batches_signs_retries_and_delivers_by_slack_webhook_and_email() {
    let dir = tempfile::tempdir().unwrap();
    let (http, rec) = http_server();
    let smtp = Smtp::start();
    let (alerts_file, recs) = alerts(dir.path());
    let cfg = config(dir.path(), &http, smtp.port, "flaky");
    let run = |extra: &[&str]| {
        Command::new(bin())
            .args([
                "notify",
                "--config",
                cfg.to_str().unwrap(),
                "--input",
                alerts_file.to_str().unwrap(),
            ])
            .args(extra)
            .env("CW_TEST_SLACK_URL", format!("http://{http}/slack"))
            .env("CW_TEST_HMAC", "s3cret-key-of-the-notify-test-0123456789")
            .output()
            .unwrap()
    };

    // Dry run: nothing sent, every notification shown.
    let dry = run(&["--dry-run"]);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(rec.reqs.lock().unwrap().is_empty() && smtp.messages().is_empty());
    let dry_text = String::from_utf8_lossy(&dry.stdout);
    let owners: BTreeSet<String> = recs.iter().filter_map(owner).collect();
    assert_eq!(
        dry_text.matches("== email receiver \"csm-email\"").count(),
        owners.len()
    );
    assert!(dry_text.contains("== slack receiver \"team-slack\" for (no owner)"));

    // For real.
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Email: one message per owning CSM, holding exactly that CSM's alerts.
    let mails = smtp.messages();
    assert_eq!(mails.len(), owners.len());
    for o in &owners {
        let mail = mails
            .iter()
            .find(|m| {
                m.lines()
                    .any(|l| l.to_ascii_lowercase().starts_with("to:") && l.contains(o.as_str()))
            })
            .unwrap_or_else(|| panic!("no mail to {o}"));
        assert!(
            mail.contains("Content-Type: text/html") && mail.contains("Content-Type: text/plain")
        );
        assert!(mail.contains("X-Churnwatch-Idempotency-Key"));
        let ids: BTreeSet<&str> = recs
            .iter()
            .filter(|r| owner(r).as_deref() == Some(o.as_str()))
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        for id in &ids {
            assert!(mail.contains(id), "{o}'s mail lacks {id}");
        }
        for r in recs
            .iter()
            .filter(|r| owner(r).as_deref() != Some(o.as_str()))
        {
            let id = r["id"].as_str().unwrap();
            assert!(
                !mail.contains(&format!("{id}\n")) && !mail.contains(&format!("{id}<")),
                "{o} got {id}"
            );
        }
    }

    let reqs = rec.reqs.lock().unwrap().clone();
    // Slack: the unowned accounts, batched into one team message, Block Kit.
    let slack: Vec<&Req> = reqs.iter().filter(|r| r.path == "slack").collect();
    assert_eq!(slack.len(), 1);
    let msg: serde_json::Value = serde_json::from_str(&slack[0].body).unwrap();
    assert_eq!(msg["blocks"][0]["type"], "header");
    // (As in Alertmanager, an alert a child route claimed - here critical ones, by the
    // leads' webhook - does not also go to the parent's default receiver.)
    let unowned: Vec<&serde_json::Value> = recs
        .iter()
        .filter(|r| owner(r).is_none() && r["severity"] != "critical")
        .collect();
    assert!(!unowned.is_empty());
    for r in &unowned {
        assert!(slack[0].body.contains(r["id"].as_str().unwrap()));
        assert!(slack[0].body.contains(&format!(
            "https://crm.example.com/accounts/{}",
            r["account_id"].as_str().unwrap()
        )));
    }
    for r in recs
        .iter()
        .filter(|r| owner(r).is_none() && r["severity"] == "critical")
    {
        assert!(!slack[0].body.contains(r["id"].as_str().unwrap()));
    }

    // Webhook: critical alerts, signed; the first two requests failed with 503 (the
    // notifications go concurrently, so they may be of two notifications) and were
    // retried with the same idempotency key and body.
    let hooks: Vec<&Req> = reqs.iter().filter(|r| r.path == "flaky").collect();
    let critical: BTreeSet<&str> = recs
        .iter()
        .filter(|r| r["severity"] == "critical")
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(!critical.is_empty());
    let mut by_key: std::collections::BTreeMap<&str, Vec<&Req>> = Default::default();
    for h in &hooks {
        by_key
            .entry(h.headers["idempotency-key"].as_str())
            .or_default()
            .push(h);
    }
    assert_eq!(
        hooks.len(),
        by_key.len() + 2,
        "two failed attempts, retried"
    );
    for failed in &hooks[..2] {
        let same = &by_key[failed.headers["idempotency-key"].as_str()];
        assert!(same.len() >= 2);
        assert!(same.iter().all(|r| r.body == failed.body));
    }
    for h in &hooks {
        assert!(
            verify_signature(h, b"s3cret-key-of-the-notify-test-0123456789"),
            "bad signature"
        );
        let v: serde_json::Value = serde_json::from_str(&h.body).unwrap();
        for a in v["alerts"].as_array().unwrap() {
            assert!(critical.contains(a["id"].as_str().unwrap()));
        }
    }
    let delivered: BTreeSet<String> = by_key
        .values()
        .map(|same| same[0])
        .flat_map(|h| common::webhook_ids(&h.body).into_iter().map(|(id, _)| id))
        .collect();
    assert_eq!(delivered, critical.iter().map(|s| s.to_string()).collect());
    assert!(!verify_signature(hooks[0], b"another-key"));
}

#[test]
fn honours_retry_after_and_dead_letters_permanent_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (http, rec) = http_server();
    let input = dir.path().join("alerts.ndjson");
    std::fs::write(
        &input,
        common::alert_line(
            "a-1/inactive/2026-03-01",
            "firing",
            "warning",
            "2026-03-15T10:00:00Z",
            None,
        )
        .repeat(2),
    )
    .unwrap();
    let write_cfg = |path: &str| {
        let p = dir.path().join(format!("{path}.toml"));
        std::fs::write(
            &p,
            format!(
                "[notify]\nretry_initial = \"50ms\"\nmax_attempts = 3\n[[notify.receivers]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{http}/{path}\"\n[notify.route]\nreceiver = \"hook\"\n"
            ),
        )
        .unwrap();
        p
    };
    let notify = |path: &str| {
        Command::new(bin())
            .args(["notify", "--input", input.to_str().unwrap(), "--config"])
            .arg(write_cfg(path))
            .output()
            .unwrap()
    };
    // 429 with Retry-After: 1 -> the second attempt waits at least a second.
    let out = notify("limited");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let limited: Vec<Req> = rec
        .reqs
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "limited")
        .cloned()
        .collect();
    assert_eq!(
        limited.len(),
        2,
        "one 429, one success; the duplicate record is not sent twice"
    );
    assert!(limited[1].at - limited[0].at >= Duration::from_millis(950));
    // 400 -> no retry, a dead letter with the reason, exit code 1.
    let out = notify("bad");
    assert_eq!(out.status.code(), Some(1));
    let bad = rec
        .reqs
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "bad")
        .count();
    assert_eq!(bad, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    let dead: serde_json::Value =
        serde_json::from_str(err.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert!(dead["reason"].as_str().unwrap().contains("400"));
    assert_eq!(dead["alerts"][0]["id"], "a-1/inactive/2026-03-01");
}

#[test]
fn delivers_to_different_owners_concurrently_within_the_bound_and_the_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (http, rec) = http_server();
    // 16 owners on an unlimited receiver, 6 on one limited to 5 messages a second;
    // every request takes 100 ms to answer.
    let mut lines = String::new();
    for i in 0..22 {
        let plan = if i < 16 { "fast" } else { "limited" };
        lines.push_str(&common::alert_line(
            &format!("a{i}/inactive/2026-03-01"),
            "firing",
            "warning",
            "2026-03-15T10:00:00Z",
            Some(serde_json::json!({"owner_email": format!("csm{i}@example.com"), "plan": plan})),
        ));
    }
    let input = dir.path().join("alerts.ndjson");
    std::fs::write(&input, lines).unwrap();
    let cfg = dir.path().join("notify.toml");
    std::fs::write(
        &cfg,
        format!(
            "[notify]\nmax_concurrent_deliveries = 4\n\
             [[notify.receivers]]\nname = \"fast\"\ntype = \"webhook\"\nurl = \"http://{http}/slow-fast\"\n\
             [[notify.receivers]]\nname = \"limited\"\ntype = \"webhook\"\nurl = \"http://{http}/slow-limited\"\nrate_limit_per_sec = 5\n\
             [notify.route]\nreceiver = \"fast\"\n\
             [[notify.route.routes]]\nmatch = {{ plan = \"limited\" }}\nreceiver = \"limited\"\n"
        ),
    )
    .unwrap();
    common::churnwatch(&[
        "notify",
        "--config",
        cfg.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    let reqs = rec.reqs.lock().unwrap().clone();
    // Every owner got exactly their message.
    let owners: Vec<String> = reqs
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            v["owner"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(owners.len(), 22);
    assert_eq!(owners.iter().collect::<BTreeSet<_>>().len(), 22);
    // Concurrent, within the bound.
    let all = rec.max_in_flight("*");
    assert!(all > 1 && all <= 4, "{all} requests at once");
    assert!(rec.max_in_flight("slow-fast") > 1);
    // The limited receiver's requests leave the client 200 ms apart. The server sees
    // them arrive with the loopback's scheduling jitter (a first request that opens
    // the connection arrives later than one that reuses it), so each gap is checked
    // with room for that jitter and the whole run, where it cannot add up, tightly:
    // six requests take five intervals (an unlimited receiver takes ~0 ms).
    let limited: Vec<&Req> = reqs.iter().filter(|r| r.path == "slow-limited").collect();
    assert_eq!(limited.len(), 6);
    for w in limited.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= Duration::from_millis(150),
            "{gap:?} between two requests"
        );
    }
    let span = limited[5].at - limited[0].at;
    assert!(
        span >= Duration::from_millis(950),
        "six requests in {span:?}"
    );
}
