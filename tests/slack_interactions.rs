//! Slack's interactive buttons over real HTTP on loopback, against a real broker: two
//! `notify` processes serve `POST /api/v1/slack/interactions` and follow the same
//! actions topic; a recording HTTP server on loopback is the clicks' `response_url`.
//! A click signed with Slack's algorithm (HMAC-SHA256 computed here) on a button of
//! the message churnwatch renders is recorded and the message is updated; a wrong
//! signature, an old timestamp, the same request again (at the same instance or at
//! the other one), an unknown Slack user, a user on another owner's account and a
//! malformed payload are refused and write nothing to the topic.

mod common;

use std::time::Duration;

use churnwatch::notify::render::{slack, Notification, SlackOptions};
use churnwatch::record::AlertRecord;
use churnwatch::time::wall_clock_ms;
use common::actions::{notifier, token_entry, write_config, written, Setup};
use common::http::{http_server, json_body, request};
use common::wait_for;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

const SECRET: &str = "slack-signing-secret-of-the-test-0123456789";
const LEE_TOKEN: &str = "cw_lee_0123456789abcdef0123456789abcdef";
const ACME_ALERT: &str = "acme/inactive/2026-03-01";
const GLOBEX_ALERT: &str = "globex/inactive/2026-03-01";

/// Ana owns acme (her Slack id UANA is its `owner_chat` in the metadata), Ben globex;
/// Ben (a CSM) and Lee (a lead) are known to Slack through `[notify.slack.users]`.
fn config(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    write_config(dir, "account_id,owner_email,owner_chat\nacme,ana@example.com,UANA\nglobex,ben@example.com,UBEN\n", |accounts| {
        format!(
            "[server.auth]\nleads = [\"lee@example.com\"]\n\
             {}\
             [notify]\ngroup_id = \"{name}-notifier\"\naccounts_file = \"{}\"\n\
             [notify.slack]\ninteractions = true\nsigning_secret_env = \"CW_TEST_SLACK_SECRET\"\n\
             allow_loopback_response_url = true\n\
             [notify.slack.users]\nULEE = \"Lee@Example.com\"\nUBEN = \"ben@example.com\"\n\
             [[notify.receivers]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n\
             [notify.route]\nreceiver = \"hook\"\n",
            token_entry(LEE_TOKEN, "lee@example.com", "lead"),
            accounts.display(),
        )
    })
}

/// The Slack message churnwatch sends for `alert_id` (with buttons), as Slack echoes
/// it back in a click's payload.
fn rendered_message(alert_id: &str) -> Value {
    let line = common::alert_line(alert_id, "firing", "warning", "2026-03-15T10:00:00Z", None);
    let a: AlertRecord = serde_json::from_str(line.trim()).unwrap();
    let n = Notification {
        receiver: "slack".into(),
        owner: "ana@example.com".into(),
        owner_chat: Some("UANA".into()),
        alerts: vec![a],
        digest: false,
    };
    slack(
        &n,
        &SlackOptions {
            buttons: true,
            ..Default::default()
        },
    )
}

/// How long before a click its message was posted (the message's `ts`).
const POSTED_AGO_SECS: i64 = 600;

/// A `block_actions` payload: `user` clicked the button `label` of the message of
/// `alert_id`, as form body `payload=...`.
fn click(user: &str, label: &str, alert_id: &str, action_ts: &str, response_url: &str) -> String {
    let mut message = rendered_message(alert_id);
    // Slack gives the message its post time; this one was posted ten minutes ago.
    message["ts"] = json!(format!(
        "{}.000100",
        wall_clock_ms() / 1000 - POSTED_AGO_SECS
    ));
    let row = message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "actions")
        .expect("a row of buttons")
        .clone();
    let button = row["elements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["text"]["text"] == label)
        .unwrap_or_else(|| panic!("no button {label}"))
        .clone();
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": "someone", "team_id": "T1"},
        "api_app_id": "A1",
        "token": "deprecated-verification-token",
        "container": {"type": "message", "message_ts": "1700000000.000100"},
        "channel": {"id": "C1", "name": "csm"},
        "response_url": response_url,
        "message": message,
        "actions": [{
            "type": "button",
            "action_id": button["action_id"],
            "block_id": row["block_id"],
            "value": button["value"],
            "text": button["text"],
            "action_ts": action_ts,
        }],
    });
    format!(
        "payload={}",
        percent_encoding::utf8_percent_encode(
            &payload.to_string(),
            percent_encoding::NON_ALPHANUMERIC
        )
    )
}

/// Slack's signature of `body` at `ts`: `v0=` hex HMAC-SHA256 of `v0:{ts}:{body}`.
fn signature(secret: &str, ts: i64, body: &str) -> String {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(format!("v0:{ts}:{body}").as_bytes());
    let hex: String = m
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v0={hex}")
}

/// POSTs `body` to the interactions endpoint with the given headers: (status, JSON).
fn post(addr: &str, body: &str, headers: &[(&str, String)]) -> (u16, Value) {
    let (status, response) = request(
        addr,
        "POST",
        "/api/v1/slack/interactions",
        "application/x-www-form-urlencoded",
        headers,
        body,
    );
    (status, json_body(&response))
}

/// Request headers: (name, value).
type Headers = Vec<(&'static str, String)>;

fn signed(ts: i64, sig: String) -> Headers {
    vec![
        ("X-Slack-Request-Timestamp", ts.to_string()),
        ("X-Slack-Signature", sig),
    ]
}

fn listed(addr: &str, account: &str) -> Value {
    common::actions::listed(addr, account, LEE_TOKEN)
}

#[test]
fn signed_clicks_are_applied_and_everything_else_is_refused_and_writes_nothing() {
    let Setup {
        broker,
        name,
        dir,
        alerts,
    } = Setup::new("slack");
    let cfg = config(dir.path(), &name);
    let env = [("CW_TEST_SLACK_SECRET", SECRET)];
    let a = notifier(broker, &cfg, &alerts, dir.path().join("notify-a.log"), &env);
    let b = notifier(broker, &cfg, &alerts, dir.path().join("notify-b.log"), &env);
    let (addr_a, addr_b) = (a.addr(), b.addr());
    let topic = format!("{name}-notifier-actions");
    let (http, rec) = http_server();
    let response_url = format!("http://{http}/slack-response");
    let now = || wall_clock_ms() / 1000;

    // Ana, the owner of acme (her Slack id is acme's owner_chat), acknowledges.
    let body = click(
        "UANA",
        "Acknowledge",
        ACME_ALERT,
        "1700000001.000001",
        &response_url,
    );
    let ts = now();
    let ok_headers = signed(ts, signature(SECRET, ts, &body));
    let started = std::time::Instant::now();
    let (code, v) = post(&addr_a, &body, &ok_headers);
    let took = started.elapsed();
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["action"], "acknowledge", "stored before the answer: {v}");
    assert!(took < Duration::from_secs(3), "Slack waits 3 s: {took:?}");
    eprintln!("a click answered, stored in Kafka, in {took:?}");
    let l = listed(&addr_a, "acme");
    assert_eq!(l["actions"][0]["action"], "acknowledge", "{l}");
    assert_eq!(l["actions"][0]["by"], "ana@example.com");
    assert_eq!(l["actions"][0]["source"], "slack");
    assert_eq!(l["actions"][0]["origin"], "slack:UANA:1700000001.000001");
    assert_eq!(l["states"][ACME_ALERT]["state"], "acknowledged");
    // The message is updated through response_url: the row of buttons clicked is
    // replaced by who did what; the rest is the message as sent (and within Block
    // Kit's limits: the recorder answers 400 otherwise).
    wait_for("the message update", Duration::from_secs(20), || {
        rec.reqs
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.path == "slack-response")
    });
    let update: Value = {
        let reqs = rec.reqs.lock().unwrap();
        serde_json::from_str(
            &reqs
                .iter()
                .find(|r| r.path == "slack-response")
                .unwrap()
                .body,
        )
        .unwrap()
    };
    assert_eq!(update["replace_original"], true, "{update}");
    let blocks = update["blocks"].as_array().unwrap();
    assert!(blocks.iter().all(|b| b["type"] != "actions"), "{update}");
    assert!(
        update.to_string().contains("Acknowledged by <@UANA>"),
        "{update}"
    );
    assert!(update.to_string().contains(ACME_ALERT));
    let after_first = written(broker, &topic);
    assert_eq!(after_first, 1);

    // The same request again: refused by this instance's memory of the signature...
    let (code, v) = post(&addr_a, &body, &ok_headers);
    assert_eq!(code, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("replay"), "{v}");
    // ...also with its hex in upper case (a valid signature, the same request).
    let upper = signature(SECRET, ts, &body)
        .replace("v0=", "")
        .to_uppercase();
    let (code, v) = post(&addr_a, &body, &signed(ts, format!("v0={upper}")));
    assert_eq!(code, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("replay"), "{v}");
    // ...and at the other instance, which has not seen it, by the click's id in the
    // alert's history (read from the topic).
    wait_for(
        "instance b to read the action",
        Duration::from_secs(30),
        || {
            listed(&addr_b, "acme")["actions"]
                .as_array()
                .is_some_and(|a| a.len() == 1)
        },
    );
    // Signed by Slack: answered 200 (the clicker is told aside), nothing recorded.
    let (code, v) = post(&addr_b, &body, &ok_headers);
    assert_eq!(
        (code, &v["ok"], &v["status"]),
        (200, &json!(false), &json!(409)),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("already used"), "{v}");

    // Refusals, each signed but for the thing it tests, each writing nothing.
    let snooze = click(
        "UANA",
        "Snooze 7 days",
        ACME_ALERT,
        "1700000002.000001",
        &response_url,
    );
    let t = now();
    // A case whose body is signed as Slack signs, now.
    let correctly_signed = |what: &'static str, b: String, want: u16| {
        let headers = signed(t, signature(SECRET, t, &b));
        (what, b, headers, want)
    };
    let cases: Vec<(&str, String, Headers, u16)> = vec![
        ("unsigned", snooze.clone(), vec![], 401),
        (
            "wrong secret",
            snooze.clone(),
            signed(t, signature("not-the-secret-0123456789", t, &snooze)),
            401,
        ),
        (
            "signature of another body",
            snooze.clone(),
            signed(t, signature(SECRET, t, &body)),
            401,
        ),
        (
            "timestamp not the signed one",
            snooze.clone(),
            signed(t - 1, signature(SECRET, t, &snooze)),
            401,
        ),
        (
            "six minutes old",
            snooze.clone(),
            signed(t - 360, signature(SECRET, t - 360, &snooze)),
            401,
        ),
        correctly_signed(
            "unknown Slack user",
            click(
                "UEVE",
                "Acknowledge",
                ACME_ALERT,
                "1700000003.000001",
                &response_url,
            ),
            200,
        ),
        correctly_signed(
            "another owner's account",
            click(
                "UBEN",
                "Not a risk",
                ACME_ALERT,
                "1700000004.000001",
                &response_url,
            ),
            200,
        ),
        correctly_signed(
            "malformed",
            "payload=%7B%22type%22%3A%22block_actions%22%7D".to_string(),
            400,
        ),
        correctly_signed(
            "response_url elsewhere",
            click(
                "UANA",
                "Snooze 7 days",
                ACME_ALERT,
                "1700000005.000001",
                "https://evil.example/x",
            ),
            400,
        ),
    ];
    for (what, body, headers, want) in cases {
        let (code, v) = post(&addr_a, &body, &headers);
        assert_eq!(code, want, "{what}: {v}");
        assert_eq!(v["ok"], false, "{what}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {v}"
        );
    }
    assert_eq!(
        written(broker, &topic),
        after_first,
        "refusals wrote nothing"
    );
    // The people whose clicks were refused are told why, aside; the message stays.
    let notes = || -> Vec<Value> {
        let reqs = rec.reqs.lock().unwrap();
        reqs.iter()
            .filter(|r| r.path == "slack-response")
            .skip(1)
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect()
    };
    let said = |what: &str| {
        notes()
            .iter()
            .any(|n| n["text"].as_str().unwrap().contains(what))
    };
    wait_for("the notes of refusal", Duration::from_secs(20), || {
        said("not known") && said("not yours") && said("already used")
    });
    assert!(
        notes()
            .iter()
            .all(|n| n["response_type"] == "ephemeral" && n["replace_original"] == false),
        "{:?}",
        notes()
    );
    assert_eq!(
        listed(&addr_a, "acme")["actions"].as_array().unwrap().len(),
        1
    );
    assert!(listed(&addr_a, "globex")["actions"]
        .as_array()
        .unwrap()
        .is_empty());

    // Lee, a lead known through [notify.slack.users], may act on Ben's account; Not a
    // risk from Slack carries its fixed reason and lasts a week.
    let b2 = click(
        "ULEE",
        "Not a risk",
        GLOBEX_ALERT,
        "1700000006.000001",
        &response_url,
    );
    let t = now();
    let (code, v) = post(&addr_b, &b2, &signed(t, signature(SECRET, t, &b2)));
    assert_eq!(code, 200, "{v}");
    let g = listed(&addr_b, "globex");
    assert_eq!(g["actions"][0]["action"], "not_a_risk", "{g}");
    assert_eq!(g["actions"][0]["by"], "lee@example.com");
    assert_eq!(g["actions"][0]["reason"], "marked not a risk from Slack");
    let until =
        churnwatch::time::parse_rfc3339(g["actions"][0]["until"].as_str().unwrap()).unwrap();
    let week = 7 * churnwatch::time::DAY;
    assert!((until - wall_clock_ms() - week).abs() < 120_000, "{g}");
    assert_eq!(written(broker, &topic), after_first + 1);

    // The metrics count by channel and outcome, with no account or person in them; the
    // notifier has no inbox view, so the time to the first action runs from the
    // message's post time.
    let (_, m) = common::http::get(&addr_a, "/metrics");
    assert!(
        m.contains("churnwatch_action_requests_total{outcome=\"accepted\",source=\"slack\"} 1"),
        "{m}"
    );
    assert!(
        m.contains(
            "churnwatch_action_requests_total{outcome=\"bad_signature\",source=\"slack\"} 4"
        ),
        "{m}"
    );
    assert!(m.contains("churnwatch_action_requests_total{outcome=\"stale\",source=\"slack\"} 1"));
    assert!(m.contains("churnwatch_action_requests_total{outcome=\"replayed\",source=\"slack\"} 2"));
    assert!(
        m.contains("churnwatch_action_requests_total{outcome=\"unknown_user\",source=\"slack\"} 1")
    );
    assert!(
        m.contains("churnwatch_action_requests_total{outcome=\"forbidden\",source=\"slack\"} 1")
    );
    let value = |name: &str| {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .map(|v| v.parse::<f64>().unwrap())
    };
    let first = "churnwatch_actions_first_action_seconds";
    let labels = "{action=\"acknowledge\",source=\"slack\"}";
    assert_eq!(value(&format!("{first}_count{labels}")), Some(1.0), "{m}");
    let took = value(&format!("{first}_sum{labels}")).unwrap();
    assert!(
        (POSTED_AGO_SECS as f64..POSTED_AGO_SECS as f64 + 60.0).contains(&took),
        "{took}"
    );
    assert!(!m.contains("churnwatch_actions_first_action_unknown_time_total{source=\"slack\"} 1"));
    assert!(!m.lines().any(|l| l.starts_with("churnwatch_action")
        && (l.contains("acme") || l.contains("UANA") || l.contains("ana@"))));
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(!log.contains(SECRET), "the signing secret is never logged");
    drop((a, b));
}
