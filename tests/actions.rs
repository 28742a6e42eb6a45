//! Actions on alerts over real HTTP on loopback: against a real broker, two `notify`
//! processes following the same actions topic (an action posted to one is listed by
//! the other; refused requests write nothing; a CSM cannot act on another owner's
//! account; a `kill -9` and a new instance lose no acknowledged action, and the new
//! instance has read the topic before it answers); `serve` checking alerts against its
//! view and showing actions on the account; and in-process against the inbox fixture
//! (alerts checked against the view, hostile bodies refused).

mod common;

use std::sync::Arc;
use std::time::Duration;

use churnwatch::actions::api::{self, Api};
use churnwatch::actions::Actions;
use churnwatch::config::{AuthConfig, TokenEntry};
use churnwatch::inbox::model::Role;
use churnwatch::server::auth::{sha256, Authenticator};
use churnwatch::time::{format_rfc3339, wall_clock_ms, DAY};
use common::actions::{call, hex, notifier, token_entry, write_config, written, Setup};
use common::proc::Proc;
use common::wait_for;
use serde_json::{json, Value};

const ANA: &str = "ana@example.com";
const BEN: &str = "ben@example.com";
const LEE: &str = "lee@example.com";
const ANA_TOKEN: &str = "cw_ana_0123456789abcdef0123456789abcdef";
const BEN_TOKEN: &str = "cw_ben_0123456789abcdef0123456789abcdef";
const LEE_TOKEN: &str = "cw_lee_0123456789abcdef0123456789abcdef";

/// A config with three tokens (Ana and Ben CSMs, Lee a lead) and the account owners.
fn config(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!("account_id,owner_email\nacme,{ANA}\nglobex,{BEN}\n"),
        |accounts| {
            format!(
                "[notify]\ngroup_id = \"{name}-notifier\"\naccounts_file = \"{}\"\n\
                 [[notify.receivers]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n\
                 [notify.route]\nreceiver = \"hook\"\n{}{}{}",
                accounts.display(),
                token_entry(ANA_TOKEN, ANA, "csm"),
                token_entry(BEN_TOKEN, BEN, "csm"),
                token_entry(LEE_TOKEN, LEE, "lead"),
            )
        },
    )
}

#[test]
fn an_action_on_one_instance_is_listed_by_another_and_refusals_write_nothing() {
    let Setup {
        broker,
        name,
        dir,
        alerts,
    } = Setup::new("act");
    let cfg = config(dir.path(), &name);
    let a = notifier(broker, &cfg, &alerts, dir.path().join("notify-a.log"), &[]);
    let b = notifier(broker, &cfg, &alerts, dir.path().join("notify-b.log"), &[]);
    let (addr_a, addr_b) = (a.addr(), b.addr());
    let topic = format!("{name}-notifier-actions");
    let until = format_rfc3339(wall_clock_ms() + 7 * DAY);
    let snooze = |alert: &str| {
        json!({"alert_id": alert, "action": "snooze", "reason": "renewal call on Friday", "until": until})
            .to_string()
    };

    // Refused: Ben on Ana's account, bad bodies, no credentials. Nothing is written.
    let (code, body) = call(
        &addr_a,
        "POST",
        "/api/v1/actions",
        BEN_TOKEN,
        &snooze("acme/inactive/2026-03-01"),
    );
    assert_eq!(code, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not yours"));
    for (bad, want) in [
        (json!({"alert_id": "acme/inactive/2026-03-01", "action": "snooze", "until": until}).to_string(), "reason is required"),
        (json!({"alert_id": "acme/inactive/2026-03-01", "action": "snooze", "reason": "x", "until": "2001-01-01"}).to_string(), "in the past"),
        (json!({"alert_id": "acme", "action": "acknowledge"}).to_string(), "alert_id must look like"),
        (json!({"alert_id": "acme/inactive/1", "action": "delete"}).to_string(), "not one of"),
        ("{\"alert_id\":".to_string(), "Content-Type"),
    ] {
        let (code, body) = call(&addr_a, "POST", "/api/v1/actions", ANA_TOKEN, &bad);
        assert_eq!(code / 100, 4, "{bad}: {body}");
        let msg = body["error"].as_str().unwrap_or_else(|| panic!("{bad}: {body}"));
        assert!(msg.contains(want) || want == "Content-Type", "{bad}: {msg}");
    }
    let (code, _) = call(
        &addr_a,
        "POST",
        "/api/v1/actions",
        "cw_nobody_0123456789abcdef0123456789",
        &snooze("acme/inactive/2026-03-01"),
    );
    assert_eq!(code, 401);
    assert_eq!(
        written(broker, &topic),
        0,
        "a refused request wrote to the topic"
    );

    // Ana snoozes her alert on A; B lists it (it followed the topic).
    let (code, body) = call(
        &addr_a,
        "POST",
        "/api/v1/actions",
        ANA_TOKEN,
        &snooze("acme/inactive/2026-03-01"),
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["by"], ANA);
    assert_eq!(body["state"]["state"], "snoozed");
    let listed = || {
        call(
            &addr_b,
            "GET",
            "/api/v1/actions?account_id=acme",
            LEE_TOKEN,
            "",
        )
        .1
    };
    wait_for(
        "instance B to list the action",
        Duration::from_secs(30),
        || {
            listed()["actions"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        },
    );
    let l = listed();
    assert_eq!(l["actions"][0]["action"], "snooze");
    assert_eq!(l["actions"][0]["by"], ANA);
    assert_eq!(l["actions"][0]["reason"], "renewal call on Friday");
    assert_eq!(l["states"]["acme/inactive/2026-03-01"]["state"], "snoozed");
    // Ben may not list Ana's account; Ana may.
    assert_eq!(
        call(
            &addr_b,
            "GET",
            "/api/v1/actions?account_id=acme",
            BEN_TOKEN,
            ""
        )
        .0,
        403
    );
    assert_eq!(
        call(
            &addr_b,
            "GET",
            "/api/v1/actions?account_id=acme",
            ANA_TOKEN,
            ""
        )
        .0,
        200
    );
    assert_eq!(
        call(&addr_b, "GET", "/api/v1/actions", ANA_TOKEN, "").0,
        400
    );

    // The lead reopens it on B: the history grows and the state is open on A.
    let reopen = json!({"alert_id": "acme/inactive/2026-03-01", "action": "reopen"}).to_string();
    // B listed the snooze (above), so the value it writes carries both actions.
    let (code, body) = call(&addr_b, "POST", "/api/v1/actions", LEE_TOKEN, &reopen);
    assert_eq!(code, 201, "{body}");
    wait_for(
        "A to see the alert open again",
        Duration::from_secs(30),
        || {
            let l = call(
                &addr_a,
                "GET",
                "/api/v1/actions?account_id=acme",
                ANA_TOKEN,
                "",
            )
            .1;
            l["actions"].as_array().is_some_and(|a| a.len() == 2)
                && l["states"]["acme/inactive/2026-03-01"].is_null()
        },
    );
    assert_eq!(written(broker, &topic), 2);
    // Still refused and still nothing written for Ben.
    assert_eq!(
        call(&addr_b, "POST", "/api/v1/actions", BEN_TOKEN, &reopen).0,
        403
    );
    assert_eq!(written(broker, &topic), 2);
    // The metrics count by kind and outcome, never by account.
    let (_, m) = common::http::get(&addr_a, "/metrics");
    assert!(
        m.contains("churnwatch_actions_total{action=\"snooze\",outcome=\"forbidden\"} 1"),
        "{m}"
    );
    assert!(m.contains("churnwatch_actions_total{action=\"snooze\",outcome=\"accepted\"} 1"));
    assert!(!m
        .lines()
        .any(|l| l.starts_with("churnwatch_actions") && l.contains("acme")));
    // kill -9 of A and a new instance: nothing acknowledged is lost.
    drop(a);
    let a2 = notifier(broker, &cfg, &alerts, dir.path().join("notify-a2.log"), &[]);
    let addr_a2 = a2.addr();
    let l = call(
        &addr_a2,
        "GET",
        "/api/v1/actions?account_id=acme",
        ANA_TOKEN,
        "",
    )
    .1;
    assert_eq!(l["actions"].as_array().map(Vec::len), Some(2), "{l}");
    assert_eq!(l["actions"][0]["action"], "reopen");

    // Two instances act on one alert at once: each writes a history without the
    // other's action (forced here: Lee's snooze written as by an instance that had not
    // seen Ana's acknowledgement), and compaction would keep only the later value.
    let fresh = "acme/inactive/2026-04-01";
    let ack = json!({"alert_id": fresh, "action": "acknowledge"}).to_string();
    let (code, body) = call(&addr_a2, "POST", "/api/v1/actions", ANA_TOKEN, &ack);
    assert_eq!(code, 201, "{body}");
    let of_fresh = |addr: &str| {
        let l = call(
            addr,
            "GET",
            "/api/v1/actions?account_id=acme",
            LEE_TOKEN,
            "",
        )
        .1;
        let acts: Vec<String> = l["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["alert_id"] == fresh)
            .map(|a| a["action"].as_str().unwrap().to_string())
            .collect();
        (acts, l["states"][fresh]["state"].clone())
    };
    wait_for(
        "B to read the acknowledgement",
        Duration::from_secs(30),
        || of_fresh(&addr_b).0.len() == 1,
    );
    write_value_without_the_first(broker, &topic, fresh);
    // Both instances keep both (the later one, by time, is the state)...
    for addr in [&addr_a2, &addr_b] {
        wait_for("both actions held", Duration::from_secs(30), || {
            of_fresh(addr)
                == (
                    vec!["snooze".into(), "acknowledge".into()],
                    json!("snoozed"),
                )
        });
    }
    // ...and the topic's latest value of the alert holds both again (written back).
    wait_for(
        "the union written back to the topic",
        Duration::from_secs(30),
        || {
            let last = broker
                .read_all(&topic)
                .into_iter()
                .rev()
                .find(|r| r.0.as_deref() == Some(fresh.as_bytes()));
            last.is_some_and(|r| {
                let v: Value = serde_json::from_slice(&r.1).unwrap();
                v["history"].as_array().map(Vec::len) == Some(2)
            })
        },
    );
    let (_, m) = common::http::get(&addr_b, "/metrics");
    assert!(m.contains("outcome=\"merged\""), "{m}");
    drop((a2, b));
}

/// Writes Lee's snooze of `alert` to the actions topic as a value whose history has
/// only that snooze: what an instance that had not yet read the alert's first action
/// would write.
fn write_value_without_the_first(broker: &common::broker::Broker, topic: &str, alert: &str) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let snooze = churnwatch::actions::ActionRecord {
        alert_id: alert.into(),
        account_id: "acme".into(),
        action: churnwatch::actions::ActionKind::Snooze,
        by: LEE.into(),
        at_ms: wall_clock_ms() + 1_000,
        reason: "call booked".into(),
        until_ms: Some(wall_clock_ms() + DAY),
        source: Default::default(),
        origin: String::new(),
    };
    let value = serde_json::to_vec(&churnwatch::actions::AlertActions::with(None, snooze)).unwrap();
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .unwrap();
    p.send(BaseRecord::to(topic).key(alert).payload(&value))
        .map_err(|(e, _)| e)
        .unwrap();
    p.flush(Duration::from_secs(30)).unwrap();
}

/// The API in-process over loopback, against the inbox fixture (alerts are checked
/// against the view) and an unreachable broker: a request that passes every check ends
/// in 503 and nothing is stored; every other one is refused with the right status.
#[tokio::test]
async fn requests_are_checked_against_the_view_and_refused_ones_store_nothing() {
    use churnwatch::inbox::model::InboxView;
    use churnwatch::inbox::pages::fixture::FixtureView;
    let view = FixtureView::sample(wall_clock_ms().div_euclid(DAY));
    let acme_alert = view.account("acme").unwrap().summary.firing[0].id.clone();
    let globex_alert = view.account("globex").unwrap().summary.firing[0].id.clone();
    let mut meta = churnwatch::accounts::MetaStore::default();
    for a in &view.accounts {
        meta.upsert(a.meta.clone().unwrap());
    }
    let tokens =
        [(ANA_TOKEN, ANA, Role::Csm), (LEE_TOKEN, LEE, Role::Lead)].map(|(t, email, role)| {
            TokenEntry {
                sha256: hex(sha256(t.as_bytes())),
                email: email.into(),
                role,
            }
        });
    let auth = Arc::new(Authenticator::new(&AuthConfig::default(), &tokens, None).unwrap());
    let producer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:1")
        .set("message.timeout.ms", "500")
        .create_with_context(churnwatch::kafka::client::LogContext)
        .unwrap();
    let store = Arc::new(Actions::new(10, Arc::new(wall_clock_ms)));
    let api = Arc::new(Api {
        store: store.clone(),
        producer,
        topic: "actions".into(),
        horizon: 90 * DAY,
        owners: Some(Arc::new(churnwatch::accounts::Accounts::new(meta))),
        view: Some(Arc::new(view)),
        writing: tokio::sync::Mutex::new(()),
        rate: Default::default(),
    });
    let app = churnwatch::server::router(
        Arc::new(churnwatch::server::Health::default()),
        Some(api::router(api.clone(), auth)),
    );
    let addr = churnwatch::server::serve_with("127.0.0.1:0", app, None)
        .await
        .unwrap();
    let url = format!("http://{addr}/api/v1/actions");
    let c = reqwest::Client::new();
    let ack = |alert: &str| json!({"alert_id": alert, "action": "acknowledge"}).to_string();
    let post = |token: &'static str, ctype: &'static str, body: String| {
        c.post(&url)
            .bearer_auth(token)
            .header("content-type", ctype)
            .body(body)
    };
    let json_ct = "application/json";
    let cases = [
        (
            "Ana on Ben's account",
            post(ANA_TOKEN, json_ct, ack(&globex_alert)),
            403,
            "not yours",
        ),
        (
            "an alert the view does not have",
            post(ANA_TOKEN, json_ct, ack("acme/inactive/1999-01-01")),
            404,
            "no such alert",
        ),
        (
            "an account the view does not have",
            post(LEE_TOKEN, json_ct, ack("nope/inactive/1")),
            404,
            "no such account",
        ),
        (
            "a form post",
            post(
                ANA_TOKEN,
                "application/x-www-form-urlencoded",
                format!("alert_id={acme_alert}&action=acknowledge"),
            ),
            415,
            "Content-Type",
        ),
        (
            "an unknown field",
            post(
                ANA_TOKEN,
                json_ct,
                json!({"alert_id": acme_alert, "action": "acknowledge", "by": "lee@example.com"})
                    .to_string(),
            ),
            422,
            "unknown field",
        ),
        (
            "20 KiB",
            post(
                ANA_TOKEN,
                json_ct,
                json!({"alert_id": acme_alert, "action": "snooze", "reason": "x".repeat(20 << 10)})
                    .to_string(),
            ),
            413,
            "",
        ),
        (
            "a valid request, Kafka unreachable",
            post(ANA_TOKEN, json_ct, ack(&acme_alert)),
            503,
            "did not acknowledge",
        ),
        (
            "the lead, Kafka unreachable",
            post(LEE_TOKEN, json_ct, ack(&globex_alert)),
            503,
            "did not acknowledge",
        ),
    ];
    for (what, req, status, needle) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{what}");
        let text = r.text().await.unwrap();
        if status != 413 {
            let v: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
            let msg = v["error"].as_str().unwrap_or_default();
            assert!(msg.contains(needle), "{what}: {msg}");
        }
        assert!(store.is_empty(), "{what} changed the store");
    }
    // One person acting too fast is held back (429 with a Retry-After), no one else.
    let burst = churnwatch::actions::rate::BURST;
    let taken = (0..burst)
        .take_while(|_| api.rate.take(LEE, wall_clock_ms()).is_ok())
        .count();
    assert!(
        taken < burst as usize,
        "the request above took one of the burst"
    );
    let r = post(LEE_TOKEN, json_ct, ack(&globex_alert))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("too many actions"),
        "{v}"
    );
    let r = post(ANA_TOKEN, json_ct, ack(&acme_alert))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "Ana is not held back by Lee");
    assert!(store.is_empty());
    // Listing: Ana her own account, not Ben's; the parameter is required and bounded.
    let get = |token: &'static str, q: &str| c.get(format!("{url}{q}")).bearer_auth(token);
    assert_eq!(
        get(ANA_TOKEN, "?account_id=acme")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get(ANA_TOKEN, "?account_id=globex")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        get(LEE_TOKEN, "?account_id=globex")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(get(LEE_TOKEN, "").send().await.unwrap().status(), 400);
    let long = format!("?account_id={}", "a".repeat(300));
    assert_eq!(get(LEE_TOKEN, &long).send().await.unwrap().status(), 400);
    assert_eq!(
        c.get(format!("{url}?account_id=acme"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

/// `serve` following Kafka: the alert is checked against its view (an alert the view
/// lacks is 404), and the account in full carries the actions on its alerts.
#[test]
fn serve_checks_alerts_against_its_view_and_shows_actions_on_the_account() {
    let Setup {
        broker,
        name,
        dir,
        alerts,
    } = Setup::new("acts");
    broker.create_topic(&format!("{name}-group-changelog"), 1);
    let lines = dir.path().join("alerts.ndjson");
    std::fs::write(
        &lines,
        common::alert_line(
            "acme/inactive/2026-03-01",
            "firing",
            "warning",
            "2026-03-15T10:00:00Z",
            None,
        ),
    )
    .unwrap();
    broker.produce_ok(&lines, &["--topic", &alerts]);
    let cfg = config(dir.path(), &name);
    let serve = Proc::spawn(
        &["serve", "--config", cfg.to_str().unwrap()],
        dir.path().join("serve.log"),
        |c| {
            c.env("CHURNWATCH_KAFKA__BROKERS", &broker.bootstrap)
                .env("CHURNWATCH_KAFKA__GROUP_ID", format!("{name}-group"))
                .env("CHURNWATCH_KAFKA__ALERTS_TOPIC", &alerts);
        },
    );
    let addr = serve.addr();
    wait_for(
        "the view to hold acme's alert",
        Duration::from_secs(60),
        || {
            let (code, v) = call(&addr, "GET", "/api/v1/accounts/acme", ANA_TOKEN, "");
            code == 200
                && v["firing"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|a| a["id"] == "acme/inactive/2026-03-01"))
                && common::http::get(&addr, "/readyz").0 == 200
        },
    );
    let ack = |id: &str| json!({"alert_id": id, "action": "acknowledge"}).to_string();
    let (code, body) = call(
        &addr,
        "POST",
        "/api/v1/actions",
        ANA_TOKEN,
        &ack("acme/inactive/1999-01-01"),
    );
    assert_eq!(code, 404, "{body}");
    let (code, body) = call(
        &addr,
        "POST",
        "/api/v1/actions",
        ANA_TOKEN,
        &ack("acme/inactive/2026-03-01"),
    );
    assert_eq!(code, 201, "{body}");
    let (_, v) = call(&addr, "GET", "/api/v1/accounts/acme", ANA_TOKEN, "");
    assert_eq!(v["actions"]["actions"][0]["action"], "acknowledge", "{v}");
    assert_eq!(
        v["actions"]["states"]["acme/inactive/2026-03-01"]["state"],
        "acknowledged"
    );
    drop(serve);
}
