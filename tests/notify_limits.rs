//! Large batches against receivers that enforce their limits: a loopback HTTP server
//! that refuses what Slack refuses (400 `invalid_blocks` past Block Kit's limits), and
//! a webhook receiver behind a body cap.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use churnwatch::config::Config;
use churnwatch::notify::deliver::Sender;
use churnwatch::notify::render::Notification;
use churnwatch::record::AlertRecord;
use common::bin;
use common::http::http_server;
use serde_json::{json, Value};

fn warning(i: usize) -> AlertRecord {
    serde_json::from_value(
        json!({"id": format!("acct-{i}/inactive/2026-03-01"), "account_id": format!("acct-{i}"),
           "kind": "inactive", "status": "firing", "severity": "warning",
           "event_time": "2026-03-15T00:00:00.000Z", "emitted_at": "2026-03-15T00:00:01.000Z",
           "summary": "No activity for 14 days",
           "evidence": {"last_activity": "2026-03-01T10:00:00.000Z", "idle_days": 14},
           "account": {"name": format!("Account {i} {}", "with a long CRM name ".repeat(8)),
                       "owner_email": "ana@example.com", "owner_chat": "U024BE7LH",
                       "plan": "growth", "mrr": (i * 10) as f64}}),
    )
    .unwrap()
}

fn sender(http: &str, extra: &str) -> Sender {
    std::env::set_var("CW_LIMITS_TEST_SLACK_URL", format!("http://{http}/slack"));
    let cfg = Config::from_toml_str(
        &format!(
            r#"
[notify]
retry_initial = "10ms"
max_attempts = 2
inbox_url = "https://cw.example.com/inbox"
[[notify.receivers]]
name = "slack"
type = "slack"
url_env = "CW_LIMITS_TEST_SLACK_URL"
rate_limit_per_sec = 100
[[notify.receivers]]
name = "hook"
type = "webhook"
url = "http://{http}/ok"
{extra}
[notify.route]
receiver = "slack"
"#
        ),
        std::iter::empty(),
    )
    .unwrap();
    Sender::new(&cfg.notify).unwrap()
}

/// The number N of "...and N more" in a Slack message, 0 without that line.
fn counted(msg: &Value) -> usize {
    msg["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"]["text"].as_str())
        .find_map(|t| t.strip_prefix("…and "))
        .and_then(|t| t.split(' ').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn the_test_server_refuses_what_slack_refuses() {
    let (http, rec) = http_server();
    let blocks: Vec<Value> = (0..62)
        .map(|_| json!({"type": "section", "text": {"type": "mrkdwn", "text": "x"}}))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let resp = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("http://{http}/slack"))
            .json(&json!({"text": "t", "blocks": blocks}))
            .send()
            .await
            .unwrap()
    });
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(rt.block_on(resp.text()).unwrap(), "invalid_blocks");
    assert_eq!(rec.reqs.lock().unwrap().len(), 1);
    // Rows of buttons: too many, a repeated action_id, a value too long; and one fine.
    let button = |id: String, value: usize| {
        json!({"type": "button", "action_id": id, "value": "v".repeat(value),
               "text": {"type": "plain_text", "text": "Acknowledge"}})
    };
    let row = |elements: Vec<Value>| json!({"type": "actions", "elements": elements});
    for (elements, want) in [
        ((0..26).map(|i| button(format!("b{i}"), 1)).collect(), 400),
        (vec![button("b".into(), 1), button("b".into(), 1)], 400),
        (vec![button("b".into(), 2001)], 400),
        (vec![button("a".into(), 2000), button("b".into(), 1)], 200),
    ] {
        let status = rt.block_on(async {
            reqwest::Client::new()
                .post(format!("http://{http}/slack"))
                .json(&json!({"text": "t", "blocks": [row(elements)]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
        assert_eq!(status, want);
    }
}

/// With buttons (`notify.slack.interactions`), a batch of 120 warnings with the
/// longest alert ids events allow still fits: 15 alerts in full, each with its row of
/// three buttons carrying its id, the rest counted.
#[test]
fn a_batch_of_120_with_buttons_stays_within_block_kits_limits() {
    let (http, rec) = http_server();
    let s = sender(&http, "[notify.slack]\ninteractions = true");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let alerts: Vec<AlertRecord> = (0..120)
        .map(|i| {
            let mut a = warning(i);
            a.account_id = format!("{i}-{}", "ü".repeat(120));
            a.id = format!("{}/inactive/2026-03-01", a.account_id);
            a
        })
        .collect();
    assert!(alerts.iter().all(|a| a.id.len() <= 300));
    let n = Notification {
        receiver: "slack".into(),
        owner: "ana@example.com".into(),
        owner_chat: Some("U024BE7LH".into()),
        alerts,
        digest: false,
    };
    assert_eq!(rt.block_on(s.deliver(&n)), Ok(1));
    let reqs = rec.reqs.lock().unwrap().clone();
    let msg: Value = serde_json::from_str(&reqs[0].body).unwrap();
    let blocks = msg["blocks"].as_array().unwrap();
    assert!(blocks.len() <= 50, "{}", blocks.len());
    let rows: Vec<&Value> = blocks.iter().filter(|b| b["type"] == "actions").collect();
    assert_eq!((rows.len(), counted(&msg)), (15, 105));
    let ids: BTreeSet<&str> = rows
        .iter()
        .map(|r| {
            let values: BTreeSet<&str> = r["elements"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["value"].as_str().unwrap())
                .collect();
            assert_eq!(
                (r["elements"].as_array().unwrap().len(), values.len()),
                (3, 1)
            );
            *values.first().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 15, "one row per alert shown");
    assert!(ids.iter().all(|id| n.alerts.iter().any(|a| a.id == *id)));
}

#[test]
fn a_digest_of_120_warnings_reaches_slack_and_a_split_webhook() {
    let (http, rec) = http_server();
    let s = sender(&http, "max_body_bytes = 16384");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut n = Notification {
        receiver: "slack".into(),
        owner: "ana@example.com".into(),
        owner_chat: Some("U024BE7LH".into()),
        alerts: (0..120).map(warning).collect(),
        digest: true,
    };
    assert_eq!(rt.block_on(s.deliver(&n)), Ok(1));
    let reqs = rec.reqs.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1);
    let msg: Value = serde_json::from_str(&reqs[0].body).unwrap();
    let shown = msg["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "context")
        .count();
    assert_eq!((shown, counted(&msg)), (20, 100));
    // The largest accounts first: acct-119 has the highest MRR.
    assert!(msg["blocks"][2]["text"]["text"]
        .as_str()
        .unwrap()
        .contains("Account 119"));
    assert!(msg["blocks"][1]["text"]["text"]
        .as_str()
        .unwrap()
        .contains("120 of your accounts need a look"));
    // Each shown account's name links to its page in the inbox.
    assert!(msg["blocks"][2]["text"]["text"]
        .as_str()
        .unwrap()
        .starts_with("*<https://cw.example.com/inbox/accounts/acct-119|Account 119 "));

    // The same batch to a webhook capped at 16 KiB: parts in order, derived keys, each
    // under the cap, every alert exactly once.
    n.receiver = "hook".into();
    let made = rt.block_on(s.deliver(&n)).unwrap();
    let parts: Vec<_> = rec
        .reqs
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "ok")
        .cloned()
        .collect();
    assert!(parts.len() > 2 && made as usize == parts.len());
    let key = n.idempotency_key();
    let mut ids = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        assert!(p.body.len() <= 16384);
        assert_eq!(p.headers["idempotency-key"], format!("{key}.{}", i + 1));
        let v: Value = serde_json::from_str(&p.body).unwrap();
        assert_eq!(v["parts"], parts.len());
        ids.extend(common::webhook_ids(&p.body).into_iter().map(|(id, _)| id));
    }
    let want: Vec<String> = n.alerts.iter().map(|a| a.id.clone()).collect();
    assert_eq!(ids, want);
}

/// The population of the bug report (300 accounts over 150 days), every owner's batch
/// through Slack's limits: all delivered, every alert shown or counted.
#[test]
fn a_300_account_population_reaches_every_csm_on_slack() {
    let dir = tempfile::tempdir().unwrap();
    let (alerts, text) = common::generated_alerts(
        dir.path(),
        &["--accounts=300", "--days=150", "--seed=5"],
        true,
    );
    let mut per_owner: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for line in text.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        let owner = r["account"]["owner_email"]
            .as_str()
            .unwrap_or("")
            .to_string();
        per_owner.entry(owner).or_default().insert((
            r["id"].as_str().unwrap().to_string(),
            r["status"].as_str().unwrap().to_string(),
        ));
    }
    assert!(
        per_owner.values().any(|a| a.len() > 24),
        "a batch over 24 alerts"
    );

    let (http, rec) = http_server();
    let cfg = dir.path().join("notify.toml");
    std::fs::write(
        &cfg,
        r#"
[notify]
crm_url_template = "https://crm.example.com/accounts/{account_id}"
max_attempts = 1
[[notify.receivers]]
name = "team-slack"
type = "slack"
url_env = "CW_TEST_SLACK_URL"
rate_limit_per_sec = 100
[notify.route]
receiver = "team-slack"
"#,
    )
    .unwrap();
    let run = Command::new(bin())
        .args(["notify", "--config", cfg.to_str().unwrap(), "--input"])
        .arg(&alerts)
        .env("CW_TEST_SLACK_URL", format!("http://{http}/slack"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let reqs = rec.reqs.lock().unwrap().clone();
    assert_eq!(reqs.len(), per_owner.len());
    for r in &reqs {
        let msg: Value = serde_json::from_str(&r.body).unwrap();
        let shown: Vec<&str> = msg["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "context")
            .map(|b| b["elements"][0]["text"].as_str().unwrap())
            .collect();
        // The batch this message is for: the owner whose alerts include the first shown.
        let first_id = shown[0].split(' ').next().unwrap();
        let batch = per_owner
            .values()
            .find(|a| a.iter().any(|(id, _)| id == first_id))
            .unwrap();
        assert!(shown.len() <= 20);
        assert_eq!(shown.len() + counted(&msg), batch.len());
    }
}
