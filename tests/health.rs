//! `/healthz` and `/readyz` of each kind of process, against a real Apache Kafka broker
//! (started by `scripts/kafka.sh`, stopped when this test process exits): `run` (the
//! detector), `run` with the notifier inside (and account metadata from a topic), and
//! `notify` alone. Each is watched for
//! several liveness windows (`server.liveness_timeout`, short here) after it is ready:
//! every probe must answer 200, and the body must name the loops that process runs and
//! only those.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::broker::Broker;
use common::http::http_server;
use common::{bin, churnwatch};

/// Liveness window of the processes under test.
const WINDOW: Duration = Duration::from_secs(3);

/// The broker shared by the tests of this process.
fn broker() -> &'static str {
    &Broker::shared().bootstrap
}

fn create_topic(name: &str, partitions: i32) {
    Broker::shared().create_topic(name, partitions)
}

/// A churnwatch process with its own config and log.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(args: &[&str], config: &Path) -> Proc {
        let log = config.with_extension("log");
        let child = Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(config)
            .env("CHURNWATCH_KAFKA__BROKERS", broker())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn http_addr(&mut self) -> String {
        let mut found = None;
        self.wait_for("the http server address in the log", |log| {
            found = common::logged_http_addr(log);
            found.is_some()
        });
        found.unwrap()
    }

    /// Polls `cond` (given the log so far) until it holds; fails (with the log) if it
    /// does not within 120 s or the process exits.
    fn wait_for(&mut self, what: &str, mut cond: impl FnMut(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !cond(&self.log()) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "process exited ({status}) waiting for {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `/readyz` answers 200, then probes both endpoints for four liveness
    /// windows: every answer must be 200. Returns the last bodies.
    fn ready_and_alive(&mut self) -> (Value, Value) {
        let addr = self.http_addr();
        self.wait_for("/readyz 200", |_| get(&addr, "/readyz").0 == 200);
        let until = Instant::now() + 4 * WINDOW;
        let mut last = (Value::Null, Value::Null);
        let mut probes = 0;
        while Instant::now() < until {
            let (code, live) = get(&addr, "/healthz");
            assert_eq!(code, 200, "/healthz after {probes} probes: {live}");
            let (code, ready) = get(&addr, "/readyz");
            assert_eq!(code, 200, "/readyz after {probes} probes: {ready}");
            last = (live, ready);
            probes += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(probes > 10);
        last
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(addr: &str, path: &str) -> (u16, Value) {
    let (code, body) = common::http::get(addr, path);
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The loops `/healthz` watches, by name.
fn loops(live: &Value) -> Vec<String> {
    live["loops_seconds_ago"]
        .as_object()
        .unwrap_or_else(|| panic!("no loops in {live}"))
        .keys()
        .cloned()
        .collect()
}

/// A test's names and config file; `notify` adds a webhook receiver on `http`.
struct Case {
    dir: tempfile::TempDir,
    name: String,
}

impl Case {
    fn new(name: &str) -> Case {
        Case {
            dir: tempfile::tempdir().unwrap(),
            name: format!("health-{name}-{}", std::process::id()),
        }
    }

    fn config(&self, notifier: Option<&str>) -> PathBuf {
        let n = &self.name;
        let mut text = format!(
            "[kafka]\ngroup_id = \"{n}\"\ninstance_id = \"{n}-i\"\ninput_topic = \"{n}-events\"\n\
             alerts_topic = \"{n}-alerts\"\ndead_letter_topic = \"{n}-dlq\"\n\
             checkpoint_interval = \"300ms\"\nidle_advance_after = \"1s\"\n\
             [server]\nlisten = \"127.0.0.1:0\"\nliveness_timeout = \"{}s\"\n",
            WINDOW.as_secs()
        );
        if let Some(http) = notifier {
            text.push_str(&format!(
                "[notify]\ngroup_id = \"{n}-notifier\"\ngroup_wait = \"100ms\"\n\
                 group_interval = \"100ms\"\n\
                 [[notify.receivers]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{http}/ok\"\n\
                 [notify.route]\nreceiver = \"hook\"\n"
            ));
        }
        let path = self.dir.path().join(format!(
            "{}.toml",
            if notifier.is_some() { "notify" } else { "run" }
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Creates the input topic and produces a small generated stream into it.
    fn input(&self, partitions: i32) {
        create_topic(&format!("{}-events", self.name), partitions);
        let events = self.dir.path().join("events.ndjson");
        churnwatch(&[
            "gen",
            "--accounts=40",
            "--days=60",
            "--seed=5",
            "--output",
            events.to_str().unwrap(),
        ]);
        let topic = format!("{}-events", self.name);
        Broker::shared().produce_ok(&events, &["--topic", &topic]);
    }
}

#[test]
fn run_stays_alive_and_ready_past_the_liveness_window_and_logs_when_caught_up() {
    let case = Case::new("run");
    case.input(2);
    let mut p = Proc::spawn(&["run"], &case.config(None));
    let (live, ready) = p.ready_and_alive();
    let names = loops(&live);
    assert!(
        names
            .iter()
            .any(|l| l.starts_with("detector stream thread")),
        "{live}"
    );
    assert!(
        !names
            .iter()
            .any(|l| l == "notifier" || l == "silences follower"),
        "a detector alone watches no notifier loop: {live}"
    );
    assert_eq!(
        ready["components"],
        serde_json::json!({"detector": true, "notifier": false})
    );
    assert_eq!(ready["assigned_partitions"], serde_json::json!([0, 1]));
    // The backlog is done: one line per partition, one for the whole assignment, and
    // the stall warning (the generated history ended long ago) says what it means.
    p.wait_for("the caught-up lines in the log", |log| {
        log.matches("partition caught up").count() == 2
            && log.contains("caught up on every assigned partition")
    });
    p.wait_for("the stall warning", |log| {
        log.contains("the newest event time is older than max_idle_advance")
    });
    let stalled = get(&p.http_addr(), "/readyz").1;
    assert!(
        stalled["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("absence alerts are paused")),
        "{stalled}"
    );
}

#[test]
fn run_with_the_notifier_watches_both() {
    let case = Case::new("run-notify");
    case.input(2);
    // Account metadata from a topic too: its follower is a loop of the process.
    let accounts_topic = format!("{}-accounts", case.name);
    create_topic(&accounts_topic, 1);
    let accounts = case.dir.path().join("accounts.ndjson");
    std::fs::write(
        &accounts,
        "{\"account_id\":\"acct-000001\",\"name\":\"Acme\",\"owner_email\":\"ana@example.com\"}\n",
    )
    .unwrap();
    Broker::shared().produce_ok(
        &accounts,
        &["--topic", &accounts_topic, "--key-field", "account_id"],
    );
    let (http, rec) = http_server();
    let config = case.config(Some(&http));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace(
        "[notify]\n",
        &format!("[notify]\nenabled = true\naccounts_topic = \"{accounts_topic}\"\n"),
    );
    std::fs::write(&config, text).unwrap();
    let mut p = Proc::spawn(&["run"], &config);
    let (live, ready) = p.ready_and_alive();
    let names = loops(&live);
    for want in [
        "notifier",
        "silences follower",
        "accounts follower",
        "actions follower",
    ] {
        assert!(names.iter().any(|l| l == want), "{want} in {live}");
    }
    assert!(
        names
            .iter()
            .any(|l| l.starts_with("detector stream thread")),
        "{live}"
    );
    assert_eq!(
        ready["components"],
        serde_json::json!({"detector": true, "notifier": true})
    );
    p.wait_for("a delivery", |_| !rec.reqs.lock().unwrap().is_empty());
}

#[test]
fn notify_alone_stays_alive_and_ready_and_shows_no_detector_notes() {
    let case = Case::new("notify");
    // Alert records on the alerts topic, as `run` would have written them.
    let events = case.dir.path().join("events.ndjson");
    churnwatch(&[
        "gen",
        "--accounts=30",
        "--days=60",
        "--seed=9",
        "--output",
        events.to_str().unwrap(),
    ]);
    let alerts = case.dir.path().join("alerts.ndjson");
    churnwatch(&[
        "replay",
        "-q",
        "--input",
        events.to_str().unwrap(),
        "--output",
        alerts.to_str().unwrap(),
        "--rejects",
        "/dev/null",
    ]);
    let records = std::fs::read_to_string(&alerts).unwrap().lines().count();
    assert!(records > 0);
    let topic = format!("{}-alerts", case.name);
    create_topic(&topic, 1);
    Broker::shared().produce_ok(&alerts, &["--topic", &topic, "--key-field", "account_id"]);
    let (http, rec) = http_server();
    let mut p = Proc::spawn(&["notify"], &case.config(Some(&http)));
    let (live, ready) = p.ready_and_alive();
    let names = loops(&live);
    assert_eq!(
        names,
        vec!["actions follower", "notifier", "silences follower"],
        "{live}"
    );
    assert_eq!(
        ready["components"],
        serde_json::json!({"detector": false, "notifier": true})
    );
    assert_eq!(ready["notes"], serde_json::json!([]), "{ready}");
    assert!(ready.get("assigned_partitions").is_none(), "{ready}");
    // And it does its job: every record's alert reaches the receiver.
    let ids: BTreeMap<String, ()> = std::fs::read_to_string(&alerts)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["id"].as_str().unwrap().to_string(), ())
        })
        .collect();
    p.wait_for("every alert delivered", |_| {
        let reqs = rec.reqs.lock().unwrap();
        let seen: std::collections::BTreeSet<String> = reqs
            .iter()
            .flat_map(|r| common::webhook_ids(&r.body).into_iter().map(|(id, _)| id))
            .collect();
        ids.keys().all(|id| seen.contains(id))
    });
}
