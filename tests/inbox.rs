//! The inbox view against a real Apache Kafka broker: after `churnwatch run` processed
//! a generated population, a view following the changelog and alerts topics answers
//! for every account exactly what a view fed by a replay of the same input answers
//! (firing alerts with evidence, history, last activity, daily series, activation),
//! and follows a new alert within seconds; `churnwatch serve` on its own port is ready
//! once caught up and refuses requests without a signed-in caller.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use churnwatch::config::Config;
use churnwatch::inbox::model::{InboxView, ListQuery, Principal, Role};
use churnwatch::inbox::view::{feed, follow, View};
use churnwatch::server::Health;
use common::broker::Broker;
use common::proc::Proc;
use common::{churnwatch, wait_for};
use serde_json::Value;

/// The environment `run` and `serve` share for one test's topics.
fn kafka_env(broker: &Broker, name: &str) -> Vec<(String, String)> {
    [
        ("CHURNWATCH_KAFKA__BROKERS", broker.bootstrap.clone()),
        ("CHURNWATCH_KAFKA__GROUP_ID", format!("{name}-group")),
        ("CHURNWATCH_KAFKA__INPUT_TOPIC", format!("{name}-events")),
        ("CHURNWATCH_KAFKA__ALERTS_TOPIC", format!("{name}-alerts")),
        ("CHURNWATCH_KAFKA__DEAD_LETTER_TOPIC", format!("{name}-dlq")),
        ("CHURNWATCH_KAFKA__CHECKPOINT_INTERVAL", "300ms".into()),
        ("CHURNWATCH_KAFKA__IDLE_ADVANCE_AFTER", "1s".into()),
        ("CHURNWATCH_KAFKA__TRANSACTION_TIMEOUT", "5s".into()),
        ("CHURNWATCH_TIME__MAX_IDLE_ADVANCE", "6h".into()),
        ("CHURNWATCH_SERVER__LISTEN", "127.0.0.1:0".into()),
        // `run` serves the inbox too (`serve` ignores the setting).
        ("CHURNWATCH_INBOX__ENABLED", "true".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `churnwatch` with `args` in `env`, logging at info to `log`.
fn spawn(args: &[&str], env: &[(String, String)], log: PathBuf) -> Proc {
    Proc::spawn(args, log, |c| {
        c.envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info");
    })
}

/// A GET on loopback, with an optional test caller: (status, body).
fn http_get(addr: &str, path: &str, who: Option<&str>) -> (u16, String) {
    let headers: Vec<(&str, &str)> = who.map(|w| ("x-test-user", w)).into_iter().collect();
    common::http::get_with(addr, path, &headers)
}

/// Stands in for the authentication layer: `x-test-user: <email> <role>`.
async fn fake_auth(mut req: Request, next: Next) -> Response {
    let who = req
        .headers()
        .get("x-test-user")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(email, role)| Principal {
            email: email.into(),
            role: if role == "lead" {
                Role::Lead
            } else {
                Role::Csm
            },
        });
    if let Some(p) = who {
        req.extensions_mut().insert(p);
    }
    next.run(req).await
}

/// An account's page as compared: `emitted_at` (wall clock) and the priority (which
/// counts renewals from the view's clock) left out.
fn comparable(mut v: Value) -> Value {
    let o = v.as_object_mut().unwrap();
    o.remove("priority");
    for h in o["history"].as_array_mut().unwrap() {
        h.as_object_mut().unwrap().remove("emitted_at");
    }
    v
}

fn all_ids(view: &dyn InboxView) -> Vec<String> {
    let lead = Principal {
        email: "lee@x.io".into(),
        role: Role::Lead,
    };
    let mut out = Vec::new();
    let mut offset = Some(0);
    while let Some(o) = offset {
        let p = view.list(
            &lead,
            &ListQuery {
                at_risk: false,
                offset: o,
                limit: 200,
                ..ListQuery::default()
            },
        );
        out.extend(p.items.into_iter().map(|a| a.account_id));
        offset = p.next_offset;
    }
    out
}

fn produce_alert(broker: &Broker, topic: &str, account: &str, record: &str) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .unwrap();
    p.send(BaseRecord::to(topic).key(account).payload(record))
        .map_err(|(e, _)| e)
        .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
}

fn generate(dir: &Path, partitions: u32) -> (PathBuf, PathBuf, i64) {
    let input = dir.join("events.ndjson");
    let accounts = dir.join("accounts.csv");
    churnwatch(&[
        "gen",
        "--accounts=150",
        "--days=140",
        "--seed=15",
        "--bad-lines=0.001",
        "--output",
        input.to_str().unwrap(),
        "--accounts-file",
        accounts.to_str().unwrap(),
    ]);
    let parser = churnwatch::source::event::EventParser::new(&Config::default().input).unwrap();
    let text = std::fs::read(&input).unwrap();
    let newest = text
        .split(|&b| b == b'\n')
        .filter_map(|l| parser.parse(l).ok().map(|e| e.ts))
        .max()
        .unwrap();
    // One event at the newest time on every partition: every partition's watermark
    // ends at the same place, as a replay's does.
    let end = churnwatch::time::format_rfc3339(newest);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    use std::io::Write;
    for p in 0..partitions {
        let id = (0..)
            .map(|i| format!("zz-end-{i}"))
            .find(|id| common::murmur2_partition(id.as_bytes(), partitions) == p)
            .unwrap();
        writeln!(
            f,
            "{{\"account_id\":\"{id}\",\"event\":\"page.viewed\",\"ts\":\"{end}\"}}"
        )
        .unwrap();
    }
    (input, accounts, newest)
}

#[test]
fn a_view_of_the_topics_answers_what_a_replay_answers_and_follows_new_alerts() {
    let broker = Broker::shared();
    let name = format!("inbox-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let (input, accounts, newest) = generate(dir.path(), 3);
    broker.create_topic(&format!("{name}-events"), 3);
    let env = kafka_env(broker, &name);
    common::churnwatch_env(
        &["produce", "--input", input.to_str().unwrap()],
        env.clone(),
    );
    let run = spawn(&["run"], &env, dir.path().join("run.log"));

    // The reference: the same input replayed in-process into a view, up to where the
    // daemon's watermarks end (the newest event plus max_idle_advance).
    let mut cfg = Config::from_toml_str("", env.clone()).unwrap();
    cfg.notify.accounts_file = accounts.display().to_string();
    let reference = View::from_config(&cfg);
    reference
        .write()
        .store()
        .load_file(churnwatch::accounts::MetaStore::load(&accounts).unwrap());
    let fed = feed::replay_into(&cfg, &input, Some(newest + 6 * 3_600_000), 0, &reference).unwrap();
    assert!(
        fed.alerts > 20,
        "the population should raise alerts: {fed:?}"
    );
    let ids = all_ids(&*reference);
    assert_eq!(ids.len(), fed.accounts, "every account is in the list once");

    // The view under test follows the topics, served with a stand-in auth layer.
    let stop = Arc::new(AtomicBool::new(false));
    let view = View::from_config(&cfg);
    follow::start(
        &cfg,
        view.clone(),
        stop.clone(),
        Arc::new(Health::default()),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app =
        churnwatch::inbox::api::router(view.clone()).layer(axum::middleware::from_fn(fake_auth));
    let addr = rt
        .block_on(churnwatch::server::serve("127.0.0.1:0", app))
        .unwrap()
        .to_string();

    // `run` is done once the followed view holds every account as the replay does:
    // awaited account by account (the changelog lands a checkpoint at a time).
    let lead = Some("lee@x.io lead");
    let started = Instant::now();
    let mut pending: Vec<&String> = ids.iter().collect();
    let mut last_diff = String::new();
    while !pending.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{} of {} accounts still differ after 300 s; e.g. {last_diff}",
            pending.len(),
            ids.len()
        );
        pending.retain(|id| {
            let want = serde_json::to_value(reference.account(id).unwrap()).unwrap();
            let (code, body) = http_get(&addr, &format!("/api/v1/accounts/{id}"), lead);
            let got = (code == 200).then(|| serde_json::from_str::<Value>(&body).unwrap());
            let same =
                got.as_ref().map(|g| comparable(g.clone())) == Some(comparable(want.clone()));
            if !same {
                last_diff = format!("{id}: got {code} {body}\nwant {want}");
            }
            !same
        });
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    assert!(view.caught_up());
    // Same order too: the list, page by page.
    assert_eq!(all_ids(&*view), ids);
    let fired = |v: &Value| v["firing"].as_array().map_or(0, Vec::len);
    let at_risk = ids
        .iter()
        .filter(|id| fired(&serde_json::to_value(reference.account(id).unwrap()).unwrap()) > 0)
        .count();
    assert!(at_risk > 5, "{at_risk} accounts at risk");

    // A new alert is followed within seconds (awaited, not slept).
    let target = &ids[ids.len() / 2];
    let rec = serde_json::json!({"id": format!("{target}/activity_drop/2099-01-01"), "account_id": target,
        "kind": "activity_drop", "status": "firing", "severity": "critical",
        "event_time": "2099-01-02T00:00:00.000Z", "emitted_at": "2099-01-02T00:00:01.000Z",
        "summary": "Activity dropped", "evidence": {"observed": 1, "expected": 40.5, "drop_pct": 0.98,
            "p_value": 1e-9, "model": "poisson", "recent_days": 7, "baseline_days": 28}});
    let sent = Instant::now();
    produce_alert(broker, &format!("{name}-alerts"), target, &rec.to_string());
    wait_for("the new alert in the view", Duration::from_secs(10), || {
        let (_, body) = http_get(&addr, &format!("/api/v1/accounts/{target}"), lead);
        body.contains("2099-01-01")
    });
    let lag = sent.elapsed();
    assert!(lag < Duration::from_secs(5), "followed after {lag:?}");
    let (_, body) = http_get(
        &addr,
        "/api/v1/accounts?severity=critical&kind=activity_drop",
        lead,
    );
    assert!(body.contains(target.as_str()), "{body}");

    // `churnwatch serve` alone: ready once caught up, every account in its metrics,
    // nothing answered to a caller nobody signed in.
    let serve = spawn(
        &["serve", "--accounts", accounts.to_str().unwrap()],
        &env,
        dir.path().join("serve.log"),
    );
    let saddr = serve.addr_within(Duration::from_secs(30));
    wait_for("serve ready", Duration::from_secs(60), || {
        http_get(&saddr, "/readyz", None).0 == 200
    });
    let (_, metrics) = http_get(&saddr, "/metrics", None);
    let accounts_metric = metrics
        .lines()
        .find_map(|l| l.strip_prefix("churnwatch_inbox_accounts "))
        .map(|v| v.trim().parse::<usize>().unwrap());
    assert_eq!(accounts_metric, Some(ids.len()), "{metrics}");
    assert!(
        !metrics.contains(target.as_str()),
        "no account id in metrics"
    );
    assert_eq!(http_get(&saddr, "/api/v1/accounts", None).0, 401);
    assert_eq!(
        http_get(&saddr, &format!("/api/v1/accounts/{target}"), lead).0,
        401,
        "no auth layer yet: the header means nothing"
    );
    // `run` with `[inbox] enabled` holds the same view.
    let raddr = run.addr_within(Duration::from_secs(30));
    wait_for("run ready with its inbox", Duration::from_secs(30), || {
        let (code, ready) = http_get(&raddr, "/readyz", None);
        code == 200 && ready.contains("\"inbox\":true")
    });
    let want = format!("churnwatch_inbox_accounts {}\n", ids.len());
    wait_for(
        "run's view holds every account",
        Duration::from_secs(30),
        || http_get(&raddr, "/metrics", None).1.contains(&want),
    );
    assert_eq!(http_get(&raddr, "/api/v1/accounts", None).0, 401);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

#[test]
fn serve_events_builds_the_view_of_a_file_without_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    churnwatch(&[
        "gen",
        "--accounts=40",
        "--days=60",
        "--seed=3",
        "--output",
        input.to_str().unwrap(),
    ]);
    let cfg = Config::default();
    let reference = View::from_config(&cfg);
    let fed = feed::replay_into(&cfg, &input, None, 0, &reference).unwrap();
    let env = vec![(
        "CHURNWATCH_SERVER__LISTEN".to_string(),
        "127.0.0.1:0".to_string(),
    )];
    let serve = spawn(
        &["serve", "--events", input.to_str().unwrap()],
        &env,
        dir.path().join("serve.log"),
    );
    let addr = serve.addr_within(Duration::from_secs(30));
    let (code, ready) = http_get(&addr, "/readyz", None);
    assert_eq!(code, 200, "listening only once the file is read: {ready}");
    let (_, metrics) = http_get(&addr, "/metrics", None);
    assert!(
        metrics.contains(&format!("churnwatch_inbox_accounts {}\n", fed.accounts)),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "churnwatch_inbox_records_total{{source=\"alerts\"}} {}\n",
            fed.alerts
        )),
        "{metrics}"
    );
    assert_eq!(http_get(&addr, "/api/v1/accounts", None).0, 401);
}
