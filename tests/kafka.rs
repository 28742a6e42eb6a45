//! `churnwatch run` against a real Apache Kafka broker (KRaft, single node, loopback),
//! started by `scripts/kafka.sh` and stopped when this test process exits.
//!
//! Every test produces a generated stream to its own topics and compares the alerts
//! topic (read_committed) with `churnwatch replay` on the same input: exactly the same
//! records (minus `emitted_at`), whatever happened in between.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use common::broker::Broker;
use common::{bin, churnwatch, murmur2_partition, repo, wait_for};

/// A test's topics and input.
struct Case {
    name: String,
    input: PathBuf,
    expected: Vec<serde_json::Value>,
    bad_lines: usize,
    _dir: tempfile::TempDir,
}

const MAX_IDLE: &str = "6h";

impl Case {
    /// Generates a stream, appends one event at the same final time on every partition
    /// (so that every partition's watermark ends at the same place), creates the input
    /// topic, and computes the expected alerts with `replay`.
    fn new(
        broker: &Broker,
        name: &str,
        partitions: i32,
        accounts: u32,
        days: u32,
        seed: u64,
    ) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("events.ndjson");
        churnwatch(&[
            "gen",
            &format!("--accounts={accounts}"),
            &format!("--days={days}"),
            &format!("--seed={seed}"),
            "--bad-lines=0.002",
            "--output",
            input.to_str().unwrap(),
        ]);
        let parser = churnwatch::source::event::EventParser::new(
            &churnwatch::config::Config::default().input,
        )
        .unwrap();
        let text = std::fs::read(&input).unwrap();
        let mut newest = i64::MIN;
        let mut bad = 0;
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match parser.parse(line) {
                Ok(e) => newest = newest.max(e.ts),
                Err(_) => bad += 1,
            }
        }
        let end = churnwatch::time::format_rfc3339(newest);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&input)
            .unwrap();
        use std::io::Write;
        for p in 0..partitions as u32 {
            let id = (0..)
                .map(|i| format!("zz-end-{i}"))
                .find(|id| murmur2_partition(id.as_bytes(), partitions as u32) == p)
                .unwrap();
            writeln!(
                f,
                "{{\"account_id\":\"{id}\",\"event\":\"page.viewed\",\"ts\":\"{end}\"}}"
            )
            .unwrap();
        }
        drop(f);
        let until = newest + 6 * 3_600_000;
        let expected = replayed(&input, until, &[]);
        assert!(
            expected.len() > 20,
            "{name}: the stream should raise alerts"
        );
        let name = format!("{name}-{}", std::process::id());
        broker.create_topic(&format!("{name}-events"), partitions);
        Case {
            name,
            input,
            expected,
            bad_lines: bad,
            _dir: dir,
        }
    }

    fn produce(&self, broker: &Broker) {
        broker.produce_ok(&self.input, &["--topic", &format!("{}-events", self.name)]);
    }

    fn alerts_topic(&self) -> String {
        format!("{}-alerts", self.name)
    }

    fn daemon(&self, broker: &Broker, instance: &str) -> Daemon {
        Daemon::spawn(broker, &self.name, instance)
    }

    /// Waits until the alerts topic holds as many records as expected.
    fn await_alerts(&self, broker: &Broker, daemons: &mut [&mut Daemon], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let n = broker.count(&self.alerts_topic());
            if n >= self.expected.len() {
                return;
            }
            for d in daemons.iter_mut() {
                d.assert_alive();
            }
            assert!(
                Instant::now() < deadline,
                "{}: {n} of {} alerts after {timeout:?}",
                self.name,
                self.expected.len()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The alerts topic holds exactly the expected records.
    fn assert_alerts_equal_replay(&self, broker: &Broker) {
        let got = normalize(
            broker
                .read_all(&self.alerts_topic())
                .into_iter()
                .map(|(_, v, _)| v),
        );
        if got != self.expected {
            let missing: Vec<_> = self
                .expected
                .iter()
                .filter(|r| !got.contains(r))
                .take(5)
                .collect();
            let extra: Vec<_> = got
                .iter()
                .filter(|r| !self.expected.contains(r))
                .take(5)
                .collect();
            panic!(
                "{}: alerts topic has {} records, replay {}.\nmissing: {missing:#?}\nextra: {extra:#?}",
                self.name,
                got.len(),
                self.expected.len()
            );
        }
    }
}

/// Records without `emitted_at`, sorted.
/// `dir/notify.toml`: the notifier group `<name>-notifier`, batches after 100 ms, one
/// webhook receiver at `url`.
fn notifier_config(dir: &std::path::Path, name: &str, url: &str) -> PathBuf {
    let cfg = dir.join("notify.toml");
    std::fs::write(
        &cfg,
        format!(
            "[notify]\ngroup_id = \"{name}-notifier\"\ngroup_wait = \"100ms\"\ngroup_interval = \"100ms\"\n\
             [[notify.receivers]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{url}\"\n\
             [notify.route]\nreceiver = \"hook\"\n"
        ),
    )
    .unwrap();
    cfg
}

/// The alert records `replay --until <until> <args>` writes for `input`, normalized.
fn replayed(input: &std::path::Path, until: i64, args: &[&str]) -> Vec<serde_json::Value> {
    let until = until.to_string();
    let mut all = vec!["replay", "-q", "--rejects", "/dev/null", "--until", &until];
    all.extend_from_slice(args);
    all.extend(["--input", input.to_str().unwrap()]);
    let out = churnwatch(&all);
    normalize(
        out.stdout
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec),
    )
}

fn normalize(lines: impl Iterator<Item = Vec<u8>>) -> Vec<serde_json::Value> {
    let mut v: Vec<serde_json::Value> = lines
        .map(|l| {
            let mut r: serde_json::Value =
                serde_json::from_slice(&l).expect("alert record is JSON");
            r.as_object_mut().unwrap().remove("emitted_at");
            r
        })
        .collect();
    v.sort_by_key(|r| r.to_string());
    v
}

/// A running `churnwatch run`.
struct Daemon {
    child: Child,
    log: PathBuf,
    instance: String,
}

impl Daemon {
    fn spawn(broker: &Broker, name: &str, instance: &str) -> Daemon {
        Daemon::spawn_with(broker, name, instance, &[])
    }

    /// `spawn` with more environment variables.
    fn spawn_with(broker: &Broker, name: &str, instance: &str, env: &[(&str, String)]) -> Daemon {
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .env("CHURNWATCH_KAFKA__BROKERS", &broker.bootstrap)
            .env("CHURNWATCH_KAFKA__GROUP_ID", format!("{name}-group"))
            .env("CHURNWATCH_KAFKA__INSTANCE_ID", instance)
            .env("CHURNWATCH_KAFKA__INPUT_TOPIC", format!("{name}-events"))
            .env("CHURNWATCH_KAFKA__ALERTS_TOPIC", format!("{name}-alerts"))
            .env("CHURNWATCH_KAFKA__DEAD_LETTER_TOPIC", format!("{name}-dlq"))
            .env("CHURNWATCH_KAFKA__CHECKPOINT_INTERVAL", "300ms")
            .env("CHURNWATCH_KAFKA__IDLE_ADVANCE_AFTER", "1s")
            .env("CHURNWATCH_KAFKA__TRANSACTION_TIMEOUT", "5s")
            .env("CHURNWATCH_TIME__MAX_IDLE_ADVANCE", MAX_IDLE)
            .env(
                "CHURNWATCH_KAFKA__CLIENT",
                r#"{"session.timeout.ms" = "6000", "heartbeat.interval.ms" = "1000"}"#,
            )
            .env("CHURNWATCH_SERVER__LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info,churnwatch=debug")
            // Last: a test's own settings win over the defaults above.
            .envs(env.iter().map(|(k, v)| (k, v)));
        Daemon::start(cmd, name, instance)
    }

    /// Starts `cmd` as the process `instance` of test `name`, its log in a file.
    fn start(mut cmd: Command, name: &str, instance: &str) -> Daemon {
        let log = std::env::temp_dir().join(format!("{name}-{instance}-{}.log", rand_suffix()));
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            child,
            log,
            instance: instance.to_string(),
        }
    }

    /// The HTTP address the daemon logged.
    fn http_addr(&self) -> String {
        let mut found = None;
        wait_for(
            "the http server address in the log",
            Duration::from_secs(30),
            || {
                let log = self.log_text();
                found = common::logged_http_addr(&log);
                found.is_some()
            },
        );
        found.unwrap()
    }

    /// What the daemon has logged so far (empty before its first line).
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "daemon {} exited with {status}:\n{}",
                self.instance,
                self.log_tail()
            );
        }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait: must exit 0.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "daemon {} exited with {status}:\n{}",
            self.instance,
            self.log_tail()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

/// The value of an unlabelled metric, or the sum over its labels.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with(' ') || l[name.len()..].starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn end_to_end_alerts_equal_replay_and_poison_goes_to_dead_letters() {
    let broker = Broker::shared();
    let case = Case::new(broker, "e2e", 4, 80, 140, 21);
    case.produce(broker);
    let mut d = case.daemon(broker, "a");
    case.await_alerts(broker, &mut [&mut d], Duration::from_secs(240));

    // Operators see it: ready, with the stalled input (historical data: the wall clock
    // is far past the newest event) reported, and the counters add up.
    let addr = d.http_addr();
    let mut ready = (0, String::new());
    wait_for(
        "readiness with every partition reported stalled",
        Duration::from_secs(30),
        || {
            ready = common::http::get(&addr, "/readyz");
            ready.0 == 200
                && ready.1.contains("input stalled")
                && serde_json::from_str::<serde_json::Value>(&ready.1).unwrap()
                    ["stalled_partitions"]
                    .as_array()
                    .is_some_and(|a| a.len() == 4)
        },
    );
    let body: serde_json::Value = serde_json::from_str(&ready.1).unwrap();
    assert_eq!(body["assigned_partitions"], serde_json::json!([0, 1, 2, 3]));
    assert_eq!(common::http::get(&addr, "/healthz").0, 200);
    let (code, metrics) = common::http::get(&addr, "/metrics");
    assert_eq!(code, 200);
    let lines = std::fs::read_to_string(&case.input)
        .unwrap()
        .lines()
        .count() as f64;
    // Every line read; some perhaps twice (the stream threads may join the group one
    // after the other, and a partition moved between them is read again from its
    // checkpoint).
    let consumed = metric_sum(&metrics, "churnwatch_events_consumed_total");
    assert!(consumed >= lines, "consumed {consumed} of {lines} lines");
    assert_eq!(
        metric_sum(&metrics, "churnwatch_events_rejected_total"),
        case.bad_lines as f64
    );
    assert_eq!(
        metric_sum(&metrics, "churnwatch_alerts_total"),
        case.expected.len() as f64
    );
    assert_eq!(metric_sum(&metrics, "churnwatch_input_stalled"), 4.0);
    assert_eq!(metric_sum(&metrics, "churnwatch_assigned_partitions"), 4.0);
    assert!(metric_sum(&metrics, "churnwatch_checkpoints_total") >= 1.0);
    assert!(!metrics.contains("account_id") && !metrics.contains("user_id"));
    // Consumer lag comes from librdkafka's statistics (every 5 s): 0 once caught up.
    wait_for(
        "consumer lag per partition",
        Duration::from_secs(30),
        || {
            let m = common::http::get(&addr, "/metrics").1;
            m.lines()
                .filter(|l| l.starts_with("churnwatch_consumer_lag_messages{"))
                .count()
                == 4
                && metric_sum(&m, "churnwatch_consumer_lag_messages") == 0.0
        },
    );
    d.stop();
    case.assert_alerts_equal_replay(broker);

    // Dead letters: exactly the malformed lines, with reason and source headers.
    let dlq = broker.read_all(&format!("{}-dlq", case.name));
    assert_eq!(dlq.len(), case.bad_lines, "dead letters");
    let text = std::fs::read_to_string(&case.input).unwrap();
    let parser =
        churnwatch::source::event::EventParser::new(&churnwatch::config::Config::default().input)
            .unwrap();
    let mut bad: Vec<(String, &str)> = text
        .lines()
        .filter_map(|l| {
            parser
                .parse(l.as_bytes())
                .err()
                .map(|r| (l.to_string(), r.as_str()))
        })
        .collect();
    let mut got: Vec<(String, &str)> = dlq
        .iter()
        .map(|(_, v, h)| {
            assert_eq!(
                h["churnwatch.source.topic"],
                format!("{}-events", case.name)
            );
            assert!(h["churnwatch.source.offset"].parse::<i64>().is_ok());
            assert!(!h["churnwatch.error"].is_empty());
            let reason = churnwatch::source::event::RejectReason::LABELS
                .iter()
                .find(|l| **l == h["churnwatch.reason"])
                .copied()
                .expect("known reason");
            (String::from_utf8(v.clone()).unwrap(), reason)
        })
        .collect();
    bad.sort();
    got.sort();
    assert_eq!(got, bad);

    // A restart over the same state and offsets produces nothing new.
    let d = case.daemon(broker, "a");
    wait_for("restore after restart", Duration::from_secs(60), || {
        d.log_text().matches("state restored").count() >= 4
    });
    d.stop();
    case.assert_alerts_equal_replay(broker);
}

/// Contract version 2 on the daemon: an event dated 9999, an id with a control
/// character and events of new accounts past `engine.max_accounts_per_partition` are
/// dead-lettered with their reasons, and the alerts are exactly `replay` of the input
/// without them (the 9999 event would otherwise close every window of its partition).
#[test]
fn hostile_events_are_dead_lettered_and_change_no_alert() {
    let broker = Broker::shared();
    let partitions = 3u32;
    let case = Case::new(broker, "hostile", partitions as i32, 60, 120, 33);
    let parser =
        churnwatch::source::event::EventParser::new(&churnwatch::config::Config::default().input)
            .unwrap();
    let text = std::fs::read_to_string(&case.input).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // Accounts per partition: the cap is the largest partition's count, so that one
    // is full once all its accounts have been seen, and the others never are.
    let mut per_part: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for l in &lines {
        if let Ok(e) = parser.parse(l.as_bytes()) {
            per_part
                .entry(murmur2_partition(e.account_id.as_bytes(), partitions))
                .or_default()
                .insert(e.account_id.into_owned());
        }
    }
    let (&full, ids) = per_part.iter().max_by_key(|(_, ids)| ids.len()).unwrap();
    let cap = ids.len();
    // The 9999 event in the middle of the stream, for an account whose partition has
    // events after it; the control-character id next to it.
    let mid = lines.len() / 2;
    let account = (mid..)
        .find_map(|i| parser.parse(lines[i].as_bytes()).ok())
        .map(|e| e.account_id.into_owned())
        .unwrap();
    let poison = [
        format!(
            r#"{{"account_id":"{account}","event":"page.viewed","ts":"9999-12-31T00:00:00Z"}}"#
        ),
        r#"{"account_id":"acct\u0000evil","event":"page.viewed","ts":"2026-03-01T00:00:00Z"}"#
            .to_string(),
    ];
    lines.splice(mid..mid, poison.iter().cloned());
    // Invented accounts on the full partition, at the end (their ts is the last one).
    let last_ts = parser.parse(lines.last().unwrap().as_bytes()).unwrap().ts;
    let end = churnwatch::time::format_rfc3339(last_ts);
    let flood: Vec<String> = (0..)
        .map(|i| format!("invented-{i}"))
        .filter(|id| murmur2_partition(id.as_bytes(), partitions) == full)
        .take(25)
        .map(|id| format!(r#"{{"account_id":"{id}","event":"page.viewed","ts":"{end}"}}"#))
        .collect();
    lines.extend(flood.iter().cloned());
    std::fs::write(&case.input, lines.join("\n") + "\n").unwrap();

    // replay rejects the 9999 event as well (one shard, the default cap takes the
    // invented accounts, which are too new to raise anything): the same alerts.
    let until = last_ts + 6 * 3_600_000;
    let out = churnwatch(&[
        "replay",
        "-q",
        "--input",
        case.input.to_str().unwrap(),
        "--rejects",
        "/dev/null",
        "--until",
        &until.to_string(),
    ]);
    let replayed = normalize(
        out.stdout
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec),
    );
    assert_eq!(replayed, case.expected, "replay of the poisoned input");

    case.produce(broker);
    let mut d = Daemon::spawn_with(
        broker,
        &case.name,
        "a",
        &[(
            "CHURNWATCH_ENGINE__MAX_ACCOUNTS_PER_PARTITION",
            cap.to_string(),
        )],
    );
    case.await_alerts(broker, &mut [&mut d], Duration::from_secs(240));
    let addr = d.http_addr();
    let dead_letters = case.bad_lines + poison.len() + flood.len();
    let dlq_topic = format!("{}-dlq", case.name);
    wait_for("every dead letter", Duration::from_secs(60), || {
        broker.count(&dlq_topic) >= dead_letters
    });
    let metrics = common::http::get(&addr, "/metrics").1;
    let value = |series: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{series} not in the metrics"))
    };
    assert_eq!(
        value("churnwatch_events_rejected_total{reason=\"future_timestamp\"}"),
        1.0
    );
    assert_eq!(
        value("churnwatch_events_rejected_total{reason=\"invalid_id\"}"),
        1.0
    );
    assert_eq!(
        value("churnwatch_events_rejected_total{reason=\"account_limit\"}"),
        flood.len() as f64
    );
    assert_eq!(value("churnwatch_accounts_limit"), cap as f64);
    assert_eq!(
        value(&format!(
            "churnwatch_accounts_tracked{{partition=\"{full}\"}}"
        )),
        cap as f64
    );
    d.stop();
    case.assert_alerts_equal_replay(broker);

    // The dead letters are the generator's malformed lines and ours, with reasons.
    let now = churnwatch::time::wall_clock_ms();
    let mut expected: Vec<(String, String)> = lines
        .iter()
        .filter_map(|l| {
            parser
                .parse_at(l.as_bytes(), now)
                .err()
                .map(|r| (l.clone(), r.as_str().to_string()))
        })
        .chain(
            flood
                .iter()
                .map(|l| (l.clone(), "account_limit".to_string())),
        )
        .collect();
    let mut got: Vec<(String, String)> = broker
        .read_all(&dlq_topic)
        .iter()
        .map(|(_, v, h)| {
            (
                String::from_utf8(v.clone()).unwrap(),
                h["churnwatch.reason"].clone(),
            )
        })
        .collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    assert!(got
        .iter()
        .any(|(l, r)| l == &poison[0] && r == "future_timestamp"));
    assert!(got
        .iter()
        .any(|(l, r)| l == &poison[1] && r == "invalid_id"));
}

/// `engine.known_accounts_only` on the daemon: with metadata for half of the accounts
/// (`notify.accounts_file`), the others' events are dead-lettered as `unknown_account`
/// and the alerts are exactly `replay --accounts` under the same config.
#[test]
fn known_accounts_only_tracks_the_accounts_with_metadata() {
    let broker = Broker::shared();
    let case = Case::new(broker, "known", 2, 80, 140, 35);
    let parser =
        churnwatch::source::event::EventParser::new(&churnwatch::config::Config::default().input)
            .unwrap();
    let text = std::fs::read_to_string(&case.input).unwrap();
    let mut ids = BTreeSet::new();
    let mut newest = i64::MIN;
    for l in text.lines() {
        if let Ok(e) = parser.parse(l.as_bytes()) {
            newest = newest.max(e.ts);
            ids.insert(e.account_id.into_owned());
        }
    }
    // Every other account, and the end markers (so every partition's watermark still
    // reaches the end).
    let known: BTreeSet<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, id)| i % 2 == 0 || id.starts_with("zz-end-"))
        .map(|(_, id)| id.clone())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts.csv");
    let csv: String = known
        .iter()
        .map(|id| format!("{id},Name of {id}\n"))
        .collect();
    std::fs::write(&accounts, format!("account_id,name\n{csv}")).unwrap();
    let config = dir.path().join("known.toml");
    std::fs::write(&config, "[engine]\nknown_accounts_only = true\n").unwrap();
    let until = newest + 6 * 3_600_000;
    let expected = replayed(
        &case.input,
        until,
        &[
            "--config",
            config.to_str().unwrap(),
            "--accounts",
            accounts.to_str().unwrap(),
        ],
    );
    assert!(
        expected.len() > 10 && expected.len() < case.expected.len(),
        "{} of {} alerts",
        expected.len(),
        case.expected.len()
    );
    assert!(expected
        .iter()
        .all(|r| known.contains(r["account_id"].as_str().unwrap())));

    case.produce(broker);
    let mut d = Daemon::spawn_with(
        broker,
        &case.name,
        "a",
        &[
            ("CHURNWATCH_ENGINE__KNOWN_ACCOUNTS_ONLY", "true".to_string()),
            (
                "CHURNWATCH_NOTIFY__ACCOUNTS_FILE",
                accounts.to_str().unwrap().to_string(),
            ),
        ],
    );
    let unknown_events = text
        .lines()
        .filter_map(|l| parser.parse(l.as_bytes()).ok())
        .filter(|e| !known.contains(e.account_id.as_ref()))
        .count();
    let dlq_topic = format!("{}-dlq", case.name);
    wait_for("alerts and dead letters", Duration::from_secs(240), || {
        d.assert_alive();
        broker.count(&case.alerts_topic()) >= expected.len()
            && broker.count(&dlq_topic) >= case.bad_lines + unknown_events
    });
    d.stop();
    let got = normalize(
        broker
            .read_all(&case.alerts_topic())
            .into_iter()
            .map(|(_, v, _)| v),
    );
    assert_eq!(got, expected);
    let unknown = broker
        .read_all(&dlq_topic)
        .iter()
        .filter(|(_, _, h)| h["churnwatch.reason"] == "unknown_account")
        .count();
    assert_eq!(unknown, unknown_events);
}

#[test]
fn kill_9_at_random_points_loses_and_duplicates_nothing() {
    let broker = Broker::shared();
    let case = Case::new(broker, "crash", 4, 160, 150, 22);
    case.produce(broker);
    // Kill at points spread over the processing: wait for a growing share of the
    // alerts to be committed, then kill -9 at once and restart the same instance.
    let n = case.expected.len();
    for share in [0.15, 0.45, 0.75] {
        let mut d = case.daemon(broker, "a");
        let target = (n as f64 * share) as usize;
        let deadline = Instant::now() + Duration::from_secs(240);
        while broker.count(&case.alerts_topic()) < target {
            d.assert_alive();
            assert!(Instant::now() < deadline, "no progress to {target} alerts");
            std::thread::sleep(Duration::from_millis(200));
        }
        d.kill9();
    }
    let mut d = case.daemon(broker, "a");
    case.await_alerts(broker, &mut [&mut d], Duration::from_secs(240));
    d.stop();
    case.assert_alerts_equal_replay(broker);
}

/// The broker's log (the current file and the one rolled before it).
fn broker_log(broker: &Broker) -> String {
    let logs = PathBuf::from(&broker.dir).join("logs");
    ["server.log.1", "server.log"]
        .iter()
        .map(|f| std::fs::read_to_string(logs.join(f)).unwrap_or_default())
        .collect()
}

#[test]
fn static_member_killed_and_restarted_takes_its_partitions_back() {
    let broker = Broker::shared();
    let case = Case::new(broker, "static", 4, 160, 150, 25);
    case.produce(broker);
    let group = format!("{}-group", case.name);
    // A session far longer than the test's deadlines: only static membership can give
    // the restarted instance its partitions back (dynamic members would wait for the
    // dead one's session to expire). The broker's log says which happened.
    let env = [
        (
            "CHURNWATCH_KAFKA__CLIENT",
            r#"{"session.timeout.ms" = "300000"}"#.to_string(),
        ),
        ("CHURNWATCH_KAFKA__STREAM_THREADS", "2".to_string()),
    ];
    let spawn = || Daemon::spawn_with(broker, &case.name, "a", &env);
    let mut d = spawn();
    let n = case.expected.len();
    wait_for("a third of the alerts", Duration::from_secs(240), || {
        d.assert_alive();
        broker.count(&case.alerts_topic()) >= n / 3
    });
    d.kill9();
    let mut d = spawn();
    case.await_alerts(broker, &mut [&mut d], Duration::from_secs(240));
    let log = broker_log(broker);
    for thread in 0..2 {
        let rejoined = format!(
            "Static member with groupInstanceId=a-{thread} and unknown member id joins group {group}"
        );
        assert!(
            log.lines()
                .any(|l| l.contains(&rejoined) && l.contains("Replacing previously mapped member")),
            "the broker did not hand a-{thread}'s partitions back to the restarted member"
        );
    }
    d.stop();
    case.assert_alerts_equal_replay(broker);
    // A graceful stop left the group (LeaveGroup, static members included), so a new
    // instance can take every partition without waiting for a session timeout.
    let leaves = broker_log(broker)
        .lines()
        .filter(|l| {
            l.contains(&format!("{group}]"))
                && l.contains("has left group through explicit `LeaveGroup` request")
        })
        .count();
    assert_eq!(leaves, 2, "each stream thread leaves {group} on SIGTERM");

    // kafka.leave_group_on_stop = false: a stopped static member stays in the group, and
    // comes back as the same member.
    let stay = [
        env[0].clone(),
        env[1].clone(),
        ("CHURNWATCH_KAFKA__LEAVE_GROUP_ON_STOP", "false".to_string()),
    ];
    let replaced = |log: &str| {
        log.lines()
            .filter(|l| {
                l.contains(&format!(
                    "groupInstanceId=a-0 and unknown member id joins group {group}"
                )) && l.contains("Replacing previously mapped member")
            })
            .count()
    };
    let before = replaced(&broker_log(broker));
    for _ in 0..2 {
        let d = Daemon::spawn_with(broker, &case.name, "a", &stay);
        wait_for("partitions assigned", Duration::from_secs(120), || {
            d.log_text().contains("partitions assigned")
        });
        d.stop();
    }
    let log = broker_log(broker);
    let leaves_now = log
        .lines()
        .filter(|l| {
            l.contains(&format!("{group}]"))
                && l.contains("has left group through explicit `LeaveGroup` request")
        })
        .count();
    assert_eq!(
        leaves_now, 2,
        "no LeaveGroup with leave_group_on_stop = false"
    );
    assert_eq!(
        replaced(&log),
        before + 1,
        "the second start should take over the member the first one left in the group"
    );
    case.assert_alerts_equal_replay(broker);
}

#[test]
fn kip_848_consumer_protocol_keeps_exactly_once_across_a_restart_and_a_join() {
    let broker = Broker::shared();
    let case = Case::new(broker, "kip848", 4, 120, 150, 26);
    case.produce(broker);
    let group = format!("{}-group", case.name);
    // Session and heartbeat are the broker's with KIP-848: no client settings.
    let env = [
        ("CHURNWATCH_KAFKA__GROUP_PROTOCOL", "consumer".to_string()),
        ("CHURNWATCH_KAFKA__CLIENT", "{}".to_string()),
        ("CHURNWATCH_KAFKA__STREAM_THREADS", "2".to_string()),
    ];
    let spawn = |id: &str| Daemon::spawn_with(broker, &case.name, id, &env);
    let mut a = spawn("a");
    let n = case.expected.len();
    wait_for("a third of the alerts", Duration::from_secs(240), || {
        a.assert_alive();
        broker.count(&case.alerts_topic()) >= n / 3
    });
    // A static member stopping leaves for a while (epoch -2) and comes back under the
    // same instance id; a second instance joining gets some of the partitions.
    a.stop();
    let mut a = spawn("a");
    let mut b = spawn("b");
    wait_for(
        "the joining member to get partitions",
        Duration::from_secs(120),
        || {
            b.assert_alive();
            b.log_text().contains("partitions assigned")
        },
    );
    case.await_alerts(broker, &mut [&mut a, &mut b], Duration::from_secs(240));
    a.stop();
    b.stop();
    case.assert_alerts_equal_replay(broker);
    let log = broker_log(broker);
    let said = |what: &str| {
        log.lines()
            .any(|l| l.contains(&format!("[GroupId {group}]")) && l.contains(what))
    };
    // KIP-848: a static member that stops only leaves for a while (its partitions wait
    // for it until its session expires), as deploy/README.md says.
    assert!(
        said("with instance id a-0 temporarily left the consumer group"),
        "a-0 did not leave {group} temporarily"
    );
    assert!(
        said("with instance id a-0 re-joins the consumer group using the consumer protocol"),
        "a-0 did not come back as the same static member of {group}"
    );
    assert!(
        said("with instance id b-0 joins the consumer group using the consumer protocol"),
        "b-0 did not join {group} with the consumer protocol"
    );
}

#[test]
fn scale_out_with_a_member_killed_and_another_joining() {
    let broker = Broker::shared();
    let case = Case::new(broker, "scale", 6, 160, 150, 23);
    case.produce(broker);
    let mut a = case.daemon(broker, "a");
    let mut b = case.daemon(broker, "b");
    let mut c = case.daemon(broker, "c");
    let n = case.expected.len();
    wait_for("a third of the alerts", Duration::from_secs(240), || {
        a.assert_alive();
        b.assert_alive();
        c.assert_alive();
        broker.count(&case.alerts_topic()) >= n / 3
    });
    b.kill9();
    let mut d = case.daemon(broker, "d");
    // The new member takes over work: once b's session expires, the group rebalances and
    // d is assigned b's partitions (whose rest of the stream nobody processed yet).
    wait_for(
        "the joining member to get partitions",
        Duration::from_secs(120),
        || {
            d.assert_alive();
            d.log_text().contains("partitions assigned")
        },
    );
    case.await_alerts(
        broker,
        &mut [&mut a, &mut c, &mut d],
        Duration::from_secs(300),
    );
    for x in [a, c, d] {
        x.stop();
    }
    case.assert_alerts_equal_replay(broker);
}

#[test]
fn broker_restart_mid_stream_is_survived() {
    // Its own broker: restarting the shared one would disturb the other tests.
    let broker = Broker::start();
    let case = Case::new(&broker, "restart", 3, 120, 150, 24);
    case.produce(&broker);
    let mut d = case.daemon(&broker, "a");
    let n = case.expected.len();
    wait_for("a quarter of the alerts", Duration::from_secs(240), || {
        d.assert_alive();
        broker.count(&case.alerts_topic()) >= n / 4
    });
    broker.restart();
    case.await_alerts(&broker, &mut [&mut d], Duration::from_secs(300));
    d.stop();
    case.assert_alerts_equal_replay(&broker);
    let _ = Command::new(repo().join("scripts/kafka.sh"))
        .args(["stop", "--dir", &broker.dir])
        .status();
}

/// A transaction that holds the group's committed offsets pending far longer than any
/// of the daemon's own can live (another producer's, open with a 10-minute timeout,
/// as a hanging transaction left by a broker restart does) neither stalls nor stops
/// the daemon: its assignment waits twice `kafka.transaction_timeout` for stable
/// offsets, says so with the remedy, and resumes from the changelog's checkpoints.
/// librdkafka's own fetch of the committed offset would have waited for that
/// transaction to end. The alerts equal the replay while it is still open.
#[test]
fn offsets_held_pending_by_an_open_transaction_do_not_stall_the_assignment() {
    use rdkafka::producer::{BaseProducer, Producer};
    let broker = Broker::shared();
    let case = Case::new(broker, "pending", 2, 100, 150, 31);
    case.produce(broker);
    let mut first = case.daemon(broker, "a");
    let n = case.expected.len();
    wait_for("a third of the alerts", Duration::from_secs(240), || {
        first.assert_alive();
        broker.count(&case.alerts_topic()) >= n / 3
    });
    // A graceful stop commits a checkpoint and leaves the group, which is then empty.
    first.stop();
    let group = format!("{}-group", case.name);
    let member: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", &group)
        .create()
        .unwrap();
    let metadata = member.group_metadata().expect("group metadata");
    let foreign: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("transactional.id", format!("{}-foreign", case.name))
        .set("transaction.timeout.ms", "600000")
        .create()
        .unwrap();
    let t = Duration::from_secs(30);
    foreign.init_transactions(t).unwrap();
    foreign.begin_transaction().unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&format!("{}-events", case.name), 0, Offset::Offset(0))
        .unwrap();
    foreign
        .send_offsets_to_transaction(&offsets, &metadata, t)
        .unwrap();
    let mut second = case.daemon(broker, "b");
    // Well within the foreign transaction's 600 s. The first instance may already
    // have written every alert before its stop, so the alert count alone says
    // nothing about the second's assignment: await its word first.
    let said = "could not be read as stable";
    wait_for(
        "the assignment to go on without stable offsets",
        Duration::from_secs(240),
        || {
            second.assert_alive();
            second.log_text().contains(said)
        },
    );
    case.await_alerts(broker, &mut [&mut second], Duration::from_secs(240));
    second.stop();
    foreign.abort_transaction(t).unwrap();
    case.assert_alerts_equal_replay(broker);
}

#[test]
fn a_zombie_mid_transaction_replaced_under_its_instance_id_is_fenced() {
    zombie_and_twin("zombie-busy", false);
}

#[test]
fn an_idle_zombie_and_its_twin_settle_on_one_member_with_nothing_lost_or_doubled() {
    zombie_and_twin("zombie-idle", true);
}

/// Instance `a` (one stream thread) is paused (SIGSTOP) and another process starts
/// with the same kafka.instance_id: its member takes over `a-0` at once (the broker
/// replaces the static member) and its producer fences the paused one's transactional
/// id. Then the zombie is resumed (SIGCONT).
///
/// Paused mid-stream (`idle` false), the zombie finds its producer fenced and its
/// member replaced: it replaces its producer once and joins again once (either could
/// be a pause of its own), which fences the twin's; one of the two is fenced again
/// sooner than is possible for a pause of its own and stops with that error, and the
/// other goes on, or stops the same way a moment later (then one is restarted, as a
/// supervisor would). Paused idle, once the whole stream is done (`idle`), the zombie
/// writes nothing, so only FENCED_INSTANCE_ID tells: it joins again, which fences the
/// twin's member; the twin, which joined longer than a session timeout before, joins
/// again too (the recovery path of a member replaced under its own instance id); the
/// zombie, fenced again sooner than a session timeout after its join, stops. Either
/// way the alerts equal the replay: nothing lost, nothing twice.
fn zombie_and_twin(name: &str, idle: bool) {
    let broker = Broker::shared();
    let case = Case::new(broker, name, 2, 120, 150, 27);
    case.produce(broker);
    let env = [("CHURNWATCH_KAFKA__STREAM_THREADS", "1".to_string())];
    let spawn = || Daemon::spawn_with(broker, &case.name, "a", &env);
    let mut zombie = spawn();
    let n = case.expected.len();
    let share = if idle { n } else { n / 3 };
    wait_for("alerts before the pause", Duration::from_secs(240), || {
        zombie.assert_alive();
        broker.count(&case.alerts_topic()) >= share
    });
    if idle {
        wait_for(
            "the zombie to follow the input live",
            Duration::from_secs(60),
            || {
                zombie
                    .log_text()
                    .contains("caught up on every assigned partition")
            },
        );
    }
    let pid = zombie.child.id().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let mut twin = spawn();
    wait_for(
        "the twin to take a-0's partitions",
        Duration::from_secs(120),
        || {
            twin.assert_alive();
            twin.log_text().contains("partitions assigned")
        },
    );
    if idle {
        // Time that must pass, not a condition: the twin's member is older than the
        // session timeout (6 s, Daemon::spawn_with) when the zombie takes it over.
        std::thread::sleep(Duration::from_secs(7));
    }
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    let mut stopped = None;
    wait_for("one of the two to stop", Duration::from_secs(120), || {
        for (who, d) in [("zombie", &mut zombie), ("twin", &mut twin)] {
            if let Some(s) = d.child.try_wait().unwrap() {
                stopped = Some((who, s));
            }
        }
        stopped.is_some()
    });
    let (who, status) = stopped.unwrap();
    let (mut survivor, gone) = if who == "zombie" {
        (twin, zombie)
    } else {
        (zombie, twin)
    };
    let said = gone.log_text();
    assert!(
        !status.success()
            && (said.contains("another process runs with this kafka.instance_id")
                || said.contains("this instance was fenced")),
        "the {who} should stop fenced:\n{}",
        gone.log_tail()
    );
    eprintln!(
        "{name}: the {who} stopped: {}",
        said.lines().last().unwrap_or_default()
    );
    if idle {
        assert_eq!(who, "zombie", "{}", gone.log_tail());
    } else {
        // Busy, both may stop, each rightly seeing another process with its id: the
        // zombie's rejoin fences the twin's member a moment after it joined, and the
        // twin's replaced producer fences the zombie's young transaction. Then a
        // supervisor restarts one; nothing may be lost or doubled either way.
        let n = case.expected.len();
        let mut ended = None;
        wait_for(
            "the alerts, or the other one stopping too",
            Duration::from_secs(240),
            || {
                ended = survivor.child.try_wait().unwrap();
                ended.is_some() || broker.count(&case.alerts_topic()) >= n
            },
        );
        if let Some(status) = ended {
            let said = survivor.log_text();
            assert!(
                !status.success() && said.contains("fenced"),
                "the other should stop fenced too, or not at all:\n{}",
                survivor.log_tail()
            );
            eprintln!("{name}: both stopped; restarting one, as a supervisor would");
            survivor = spawn();
        }
    }
    case.await_alerts(broker, &mut [&mut survivor], Duration::from_secs(240));
    let kept = survivor.log_text();
    survivor.stop();
    case.assert_alerts_equal_replay(broker);
    if idle {
        assert_eq!(
            kept.matches("joining again").count(),
            1,
            "the twin should have joined again once"
        );
    }
}

#[test]
fn misconfiguration_fails_fast_with_a_clear_message() {
    let broker = Broker::shared();
    let out = Command::new(bin())
        .arg("run")
        .env("CHURNWATCH_KAFKA__BROKERS", &broker.bootstrap)
        .env("CHURNWATCH_KAFKA__INPUT_TOPIC", "no-such-topic")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("input topic \"no-such-topic\" does not exist"),
        "{err}"
    );
}

#[test]
fn notifier_delivers_every_alert_once_across_a_kill_9() {
    use common::http::http_server;
    let broker = Broker::shared();
    let name = format!("notif-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    // Alert records from a replay, one owner per account: many small notifications.
    let (alerts_file, out) = common::generated_alerts(
        dir.path(),
        &["--accounts=60", "--days=130", "--seed=41"],
        false,
    );
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(records.len() > 40, "{}", records.len());
    let accounts = dir.path().join("accounts.ndjson");
    let mut ids: Vec<&str> = records
        .iter()
        .map(|r| r["account_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    std::fs::write(
        &accounts,
        ids.iter()
            .map(|a| format!("{{\"account_id\":\"{a}\",\"owner_email\":\"{a}@example.com\"}}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let alerts_topic = format!("{name}-alerts");
    broker.create_topic(&alerts_topic, 3);
    // `produce` keys by account_id, which alert records carry too.
    broker.produce_ok(&alerts_file, &["--topic", &alerts_topic]);

    let (http, rec) = http_server();
    let cfg = notifier_config(dir.path(), &name, &format!("http://{http}/slow"));
    let spawn = || {
        Command::new(bin())
            .args([
                "notify",
                "--config",
                cfg.to_str().unwrap(),
                "--accounts",
                accounts.to_str().unwrap(),
            ])
            .env("CHURNWATCH_KAFKA__BROKERS", &broker.bootstrap)
            .env("CHURNWATCH_KAFKA__ALERTS_TOPIC", &alerts_topic)
            .env("CHURNWATCH_SERVER__LISTEN", "")
            .env(
                "CHURNWATCH_KAFKA__CLIENT",
                r#"{"session.timeout.ms" = "6000", "heartbeat.interval.ms" = "1000"}"#,
            )
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(
                    std::env::temp_dir().join(format!("{name}-notifier-{}.log", rand_suffix())),
                )
                .unwrap(),
            )
            .spawn()
            .unwrap()
    };
    let received = || -> Vec<(String, Vec<(String, String)>)> {
        rec.reqs
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                let alerts = common::webhook_ids(&r.body);
                (r.headers["idempotency-key"].clone(), alerts)
            })
            .collect()
    };
    // Each alert's latest state must reach the receiver (a firing whose resolution
    // arrives within the same batch window is superseded by it, by design).
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    for r in &records {
        let status = r["status"].as_str().unwrap().to_string();
        let e = latest
            .entry(r["id"].as_str().unwrap().to_string())
            .or_default();
        if *e != "resolved" {
            *e = status;
        }
    }
    let want: BTreeSet<(String, String)> = latest.into_iter().collect();
    // Kill -9 once a third of the alerts went out, then restart.
    let mut first = spawn();
    wait_for(
        "a third of the notifications",
        Duration::from_secs(120),
        || received().iter().map(|(_, a)| a.len()).sum::<usize>() >= want.len() / 3,
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = spawn();
    wait_for("every alert notified", Duration::from_secs(120), || {
        let got: BTreeSet<(String, String)> = received().into_iter().flat_map(|(_, a)| a).collect();
        want.is_subset(&got)
    });
    let _ = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status();
    assert!(second.wait().unwrap().success());
    // Nothing lost (above); nothing sent twice except a batch in flight at the kill,
    // which comes again with the same idempotency key.
    let mut by_key: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    for (key, alerts) in received() {
        if let Some(prev) = by_key.get(&key) {
            assert_eq!(prev, &alerts, "same key, different content");
            continue;
        }
        for a in &alerts {
            if let Some(k) = seen.insert(a.clone(), key.clone()) {
                panic!("{a:?} delivered under two keys ({k}, {key})");
            }
        }
        by_key.insert(key, alerts);
    }
}

/// An HTTP request with a JSON body on loopback: (status, body).
/// The API token of the notifiers these tests start.
const API_TOKEN: &str = "kafka-test-api-token-0123456789";

fn http_json(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAuthorization: Bearer {API_TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        buf.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

#[test]
fn silences_are_shared_through_kafka_and_mute_delivery() {
    use common::http::http_server;
    let broker = Broker::shared();
    let name = format!("sil-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let alerts_topic = format!("{name}-alerts");
    broker.create_topic(&alerts_topic, 2);
    let (http, rec) = http_server();
    let cfg = notifier_config(dir.path(), &name, &format!("http://{http}/ok"));
    let spawn = |instance: &str| {
        let mut cmd = Command::new(bin());
        cmd.args(["notify", "--config", cfg.to_str().unwrap()])
            .env("CHURNWATCH_KAFKA__BROKERS", &broker.bootstrap)
            .env("CHURNWATCH_KAFKA__ALERTS_TOPIC", &alerts_topic)
            .env("CHURNWATCH_SERVER__LISTEN", "127.0.0.1:0")
            .env("CHURNWATCH_API_TOKEN", API_TOKEN);
        Daemon::start(cmd, &name, instance)
    };
    let a = spawn("a");
    let b = spawn("b");
    let (addr_a, addr_b) = (a.http_addr(), b.http_addr());

    // Bad requests are refused with a reason.
    let (code, body) = http_json(
        &addr_a,
        "POST",
        "/api/v1/silences",
        r#"{"until":"2099-01-01T00:00:00Z","author":"ana"}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("account_id, kind, or both"));
    let (code, _) = http_json(
        &addr_a,
        "POST",
        "/api/v1/silences",
        r#"{"account_id":"x","until":"2001-01-01T00:00:00Z","author":"ana"}"#,
    );
    assert_eq!(code, 400);

    // Silence acme on instance A; instance B learns it from the topic.
    let until = churnwatch::time::format_rfc3339(
        churnwatch::time::wall_clock_ms() + 7 * churnwatch::time::DAY,
    );
    let (code, body) = http_json(
        &addr_a,
        "POST",
        "/api/v1/silences",
        &format!(
            r#"{{"account_id":"acme","until":"{until}","author":"ana@example.com","reason":"renewal call on Friday"}}"#
        ),
    );
    assert_eq!(code, 201, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    wait_for(
        "instance B to list the silence",
        Duration::from_secs(30),
        || {
            http_json(&addr_b, "GET", "/api/v1/silences", "")
                .1
                .contains(&id)
        },
    );

    // Alerts for acme and globex: only globex's are delivered.
    let alerts = dir.path().join("alerts.ndjson");
    let rec_line = |acct: &str, kind: &str| {
        common::alert_line(
            &format!("{acct}/{kind}/2026-03-01"),
            "firing",
            "warning",
            "2026-03-15T10:00:00Z",
            None,
        )
    };
    std::fs::write(
        &alerts,
        rec_line("acme", "inactive") + &rec_line("globex", "inactive"),
    )
    .unwrap();
    broker.produce_ok(&alerts, &["--topic", &alerts_topic]);
    wait_for("globex's notification", Duration::from_secs(60), || {
        rec.reqs
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.body.contains("globex/inactive"))
    });
    // The group's members share the partitions; acme's record was consumed by one of
    // them: its silenced outcome shows in that member's metrics.
    wait_for("acme recorded as silenced", Duration::from_secs(60), || {
        [&addr_a, &addr_b].iter().any(|a| {
            common::http::get(a, "/metrics").1.lines().any(|l| {
                l.starts_with("churnwatch_notifications_total{outcome=\"silenced\"")
                    && !l.ends_with(" 0")
            })
        })
    });
    assert!(!rec
        .reqs
        .lock()
        .unwrap()
        .iter()
        .any(|r| r.body.contains("acme/inactive")));

    // Expire it on B; A sees it gone.
    let (code, body) = http_json(&addr_b, "DELETE", &format!("/api/v1/silences/{id}"), "");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("expired_at"));
    wait_for(
        "instance A to drop the expired silence",
        Duration::from_secs(30),
        || {
            !http_json(&addr_a, "GET", "/api/v1/silences", "")
                .1
                .contains(&id)
        },
    );
    assert_eq!(
        http_json(&addr_a, "DELETE", "/api/v1/silences/nope", "").0,
        404
    );
    a.stop();
    b.stop();
}

/// One alert record line for the notifier tests.
fn alert_line(account: &str, kind: &str, status: &str, severity: &str) -> String {
    let id = format!("{account}/{kind}/2026-03-01");
    common::alert_line(&id, status, severity, "2026-03-15T10:00:00Z", None)
}

fn produce_lines(broker: &Broker, dir: &std::path::Path, topic: &str, lines: &[String]) {
    let f = dir.join(format!("lines-{}.ndjson", rand_suffix()));
    std::fs::write(&f, lines.concat()).unwrap();
    broker.produce_ok(&f, &["--topic", topic]);
}

/// The notifier in this process, with a clock the test sets.
struct InProcessNotifier {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl InProcessNotifier {
    fn start(
        cfg: churnwatch::config::Config,
        clock: std::sync::Arc<std::sync::atomic::AtomicI64>,
    ) -> InProcessNotifier {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            churnwatch::notify::kafka::run_with_clock(
                Arc::new(cfg),
                s2,
                Arc::new(churnwatch::notify::silence::Silences::default()),
                Arc::new(move || clock.load(Ordering::SeqCst)),
            )
        });
        InProcessNotifier {
            stop,
            thread: Some(thread),
        }
    }

    fn assert_running(&self) {
        assert!(
            !self.thread.as_ref().unwrap().is_finished(),
            "the notifier stopped"
        );
    }

    fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap().unwrap();
    }
}

impl Drop for InProcessNotifier {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn digest_goes_out_at_each_owners_local_hour_and_once_across_a_restart() {
    use common::http::http_server;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;
    let broker = Broker::shared();
    let name = format!("digest-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let alerts_topic = format!("{name}-alerts");
    // One partition: the records are read in the order they were produced.
    broker.create_topic(&alerts_topic, 1);
    let accounts = dir.path().join("accounts.ndjson");
    std::fs::write(
        &accounts,
        "{\"account_id\":\"acme\",\"name\":\"Acme\",\"owner_email\":\"ana@example.com\",\"timezone\":\"America/New_York\"}\n\
         {\"account_id\":\"initech\",\"owner_email\":\"ana@example.com\",\"timezone\":\"America/New_York\"}\n\
         {\"account_id\":\"hooli\",\"owner_email\":\"ana@example.com\",\"timezone\":\"America/New_York\"}\n\
         {\"account_id\":\"globex\",\"owner_email\":\"ben@example.com\",\"timezone\":\"Europe/Berlin\"}\n",
    )
    .unwrap();
    let (http, rec) = http_server();
    let cfg = || {
        churnwatch::config::Config::from_toml_str(
            &format!(
                "[notify]\ngroup_id = \"{name}-notifier\"\ngroup_wait = \"100ms\"\ngroup_interval = \"100ms\"\n\
                 digest_hour = 9\naccounts_file = \"{}\"\n\
                 [[notify.receivers]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{http}/ok\"\n\
                 [notify.route]\nreceiver = \"hook\"\n",
                accounts.display()
            ),
            [
                ("CHURNWATCH_KAFKA__BROKERS".to_string(), broker.bootstrap.clone()),
                ("CHURNWATCH_KAFKA__ALERTS_TOPIC".to_string(), alerts_topic.clone()),
            ],
        )
        .unwrap()
    };
    // Notifications received: (digest?, [(id, status)]).
    let received = || -> Vec<(bool, Vec<(String, String)>)> {
        rec.reqs
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == "ok")
            .map(|r| {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                let alerts = common::webhook_alerts(&r.body)
                    .into_iter()
                    .map(|a| (a.account_id, a.status.as_str().to_string()))
                    .collect();
                (v["digest"].as_bool().unwrap(), alerts)
            })
            .collect()
    };
    let mentions = |account: &str| {
        received()
            .iter()
            .filter(|(_, a)| a.iter().any(|(acct, _)| acct == account))
            .count()
    };
    // Saturday 2026-03-07 10:00Z: 05:00 in New York, 11:00 in Berlin.
    let clock = Arc::new(AtomicI64::new(common::ts("2026-03-07T10:00:00Z")));
    produce_lines(
        broker,
        dir.path(),
        &alerts_topic,
        &[
            alert_line("acme", "inactive", "firing", "warning"),
            alert_line("globex", "inactive", "firing", "warning"),
            alert_line("initech", "activity_drop", "firing", "warning"),
            alert_line("initech", "activity_drop", "resolved", "warning"),
            alert_line("hooli", "not_activated", "firing", "critical"),
        ],
    );
    let first = InProcessNotifier::start(cfg(), clock.clone());
    // The critical alert goes at once, alone.
    wait_for("the critical alert", Duration::from_secs(60), || {
        first.assert_running();
        mentions("hooli") > 0
    });
    assert_eq!(
        received(),
        [(false, vec![("hooli".to_string(), "firing".to_string())])]
    );
    // 08:59 in New York: group_wait passed long ago, the warnings still wait. (A
    // marker alert produced now is delivered after anything due before it.)
    clock.store(common::ts("2026-03-07T13:59:00Z"), Ordering::SeqCst);
    produce_lines(
        broker,
        dir.path(),
        &alerts_topic,
        &[alert_line(
            "marker-1",
            "not_activated",
            "firing",
            "critical",
        )],
    );
    wait_for("marker 1", Duration::from_secs(60), || {
        mentions("marker-1") > 0
    });
    assert_eq!(received().len(), 2, "{:?}", received());
    // 09:00 in New York: ana's digest, with initech's resolution in place of its firing.
    clock.store(common::ts("2026-03-07T14:00:00Z"), Ordering::SeqCst);
    wait_for("ana's digest", Duration::from_secs(60), || {
        mentions("acme") > 0
    });
    let digest = received().into_iter().find(|(d, _)| *d).unwrap();
    assert_eq!(
        digest.1,
        [
            ("acme".to_string(), "firing".to_string()),
            ("initech".to_string(), "resolved".to_string())
        ]
    );
    let headers = rec
        .reqs
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.body.contains("\"digest\":true"))
        .unwrap()
        .body
        .clone();
    assert!(headers.contains("ana@example.com"));
    // Berlin's 09:00 is tomorrow 08:00Z: ben waits.
    produce_lines(
        broker,
        dir.path(),
        &alerts_topic,
        &[alert_line(
            "marker-2",
            "not_activated",
            "firing",
            "critical",
        )],
    );
    wait_for("marker 2", Duration::from_secs(60), || {
        mentions("marker-2") > 0
    });
    assert_eq!(mentions("globex"), 0);
    first.stop();
    // Held records are not committed: the group's offset on the repartition topic
    // (one partition, like the alerts topic; records in the same order) stays at
    // globex's (1).
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", format!("{name}-notifier"))
        .create()
        .unwrap();
    let by_owner = format!("{name}-notifier-by-owner");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&by_owner, 0);
    let committed = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .find_partition(&by_owner, 0)
        .unwrap()
        .offset();
    assert_eq!(committed, Offset::Offset(1), "committed {committed:?}");
    // Restarted at 09:00 in Berlin: the re-read records that were delivered are not
    // sent again; ben's held warning goes in his digest, once.
    clock.store(common::ts("2026-03-08T08:00:00Z"), Ordering::SeqCst);
    let second = InProcessNotifier::start(cfg(), clock.clone());
    wait_for("ben's digest", Duration::from_secs(60), || {
        second.assert_running();
        mentions("globex") > 0
    });
    produce_lines(
        broker,
        dir.path(),
        &alerts_topic,
        &[alert_line(
            "marker-3",
            "not_activated",
            "firing",
            "critical",
        )],
    );
    wait_for("marker 3", Duration::from_secs(60), || {
        mentions("marker-3") > 0
    });
    second.stop();
    let got = received();
    assert_eq!(got.len(), 6, "{got:?}");
    assert!(got.contains(&(true, vec![("globex".to_string(), "firing".to_string())])));
    for account in ["acme", "hooli", "globex", "marker-1", "marker-2"] {
        assert_eq!(mentions(account), 1, "{account}: {got:?}");
    }
    assert!(!got
        .iter()
        .flat_map(|(_, a)| a)
        .any(|a| a == &("initech".to_string(), "firing".to_string())));
}

/// Produces records as they are (key, value or a tombstone), for records that
/// `churnwatch produce` would refuse.
fn produce_raw(broker: &Broker, topic: &str, records: &[(&str, Option<&str>)]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .unwrap();
    for (k, v) in records {
        let mut r: BaseRecord<'_, str, str> = BaseRecord::to(topic).key(*k);
        if let Some(v) = v {
            r = r.payload(*v);
        }
        p.send(r).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn account_metadata_from_a_compacted_topic_reaches_alert_records_and_routing() {
    use common::http::http_server;
    let broker = Broker::shared();
    let case = Case::new(broker, "acctopic", 2, 60, 140, 25);
    let dir = tempfile::tempdir().unwrap();
    let accounts_topic = format!("{}-accounts", case.name);
    broker.create_topic(&accounts_topic, 2);
    let mut ids: Vec<String> = case
        .expected
        .iter()
        .map(|r| r["account_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert!(ids.len() >= 4, "{ids:?}");
    let (updated, deleted) = (ids[0].clone(), ids[1].clone());
    let meta_of = |i: usize, id: &str| {
        serde_json::json!({"account_id": id, "name": format!("Account {i}"),
            "owner_email": format!("csm{}@example.com", i % 3), "plan": "growth",
            "timezone": "Europe/Berlin"})
    };
    let initial = dir.path().join("accounts.ndjson");
    std::fs::write(
        &initial,
        ids.iter()
            .enumerate()
            .map(|(i, id)| format!("{}\n", meta_of(i, id)))
            .collect::<String>(),
    )
    .unwrap();
    let produce_accounts = |file: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["--topic", &accounts_topic, "--key-field", "account_id"];
        args.extend_from_slice(extra);
        broker.produce_ok(file, &args);
    };
    produce_accounts(&initial, &[]);
    // A line without the key field is refused whole, naming the line.
    let bad_file = dir.path().join("bad.ndjson");
    std::fs::write(&bad_file, "{\"account_id\":\"x\"}\n{\"name\":\"no id\"}\n").unwrap();
    let out = broker.produce(
        &bad_file,
        &["--topic", &accounts_topic, "--key-field", "account_id"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
    // Records the daemon must skip, with a warning, and live on.
    produce_raw(
        broker,
        &accounts_topic,
        &[
            ("bad-json", Some("{not json")),
            ("bad-field", Some("{\"colour\":\"red\"}")),
        ],
    );

    let (http, rec) = http_server();
    let cfg = dir.path().join("churnwatch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[notify]\nenabled = true\ngroup_id = \"{}-notifier\"\ngroup_wait = \"100ms\"\ngroup_interval = \"100ms\"\n\
             accounts_topic = \"{accounts_topic}\"\n\
             [[notify.receivers]]\nname = \"team\"\ntype = \"webhook\"\nurl = \"http://{http}/team\"\n\
             [[notify.receivers]]\nname = \"csm\"\ntype = \"webhook\"\nurl = \"http://{http}/csm\"\n\
             [notify.route]\nreceiver = \"team\"\n\
             [[notify.route.routes]]\nmatch = {{ owner = \"*\" }}\nreceiver = \"csm\"\n",
            case.name
        ),
    )
    .unwrap();
    let mut daemon = Daemon::spawn_with(
        broker,
        &case.name,
        "a",
        &[("CHURNWATCH_CONFIG", cfg.display().to_string())],
    );
    let addr = daemon.http_addr();
    let records_read = |outcome: &str| {
        let text = common::http::get(&addr, "/metrics").1;
        metric_sum(
            &text
                .lines()
                .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
                .collect::<Vec<_>>()
                .join("\n"),
            "churnwatch_account_metadata_records_total",
        ) as usize
    };
    wait_for("the accounts topic loaded", Duration::from_secs(60), || {
        daemon.assert_alive();
        records_read("applied") == ids.len() && records_read("skipped") == 2
    });
    // The skipped records are named by topic, partition and offset.
    let log = daemon.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("account metadata record skipped"))
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    for w in &warnings {
        assert!(
            w.contains(&accounts_topic) && w.contains("partition=") && w.contains("offset="),
            "{w}"
        );
    }
    assert!(warnings.iter().any(|w| w.contains("not JSON")));
    assert!(warnings.iter().any(|w| w.contains("colour")));

    // An update and a tombstone, applied while the daemon runs.
    let update = dir.path().join("update.ndjson");
    std::fs::write(
        &update,
        format!(
            "{}\n",
            serde_json::json!({"account_id": updated, "name": "Renamed",
                "owner_email": "new-owner@example.com", "plan": "enterprise"})
        ),
    )
    .unwrap();
    produce_accounts(&update, &[]);
    let gone = dir.path().join("gone.ndjson");
    std::fs::write(&gone, format!("{{\"account_id\":\"{deleted}\"}}\n")).unwrap();
    produce_accounts(&gone, &["--tombstones"]);
    wait_for(
        "the update and the tombstone",
        Duration::from_secs(60),
        || records_read("applied") == ids.len() + 1 && records_read("deleted") == 1,
    );
    let gauge = metric_sum(
        &common::http::get(&addr, "/metrics").1,
        "churnwatch_account_metadata_accounts",
    );
    assert_eq!(gauge as usize, ids.len() - 1);

    // Now the events: every alert record carries the account's current metadata.
    case.produce(broker);
    case.await_alerts(broker, &mut [&mut daemon], Duration::from_secs(180));
    let got: Vec<serde_json::Value> = broker
        .read_all(&case.alerts_topic())
        .into_iter()
        .map(|(_, v, _)| serde_json::from_slice(&v).unwrap())
        .collect();
    let expected_account = |id: &str| -> Option<serde_json::Value> {
        if id == deleted {
            return None;
        }
        if id == updated {
            return Some(serde_json::json!({"name": "Renamed",
                "owner_email": "new-owner@example.com", "plan": "enterprise"}));
        }
        let i = ids.iter().position(|x| x == id)?;
        let mut m = meta_of(i, id);
        m.as_object_mut().unwrap().remove("account_id");
        Some(m)
    };
    for r in &got {
        let id = r["account_id"].as_str().unwrap();
        assert_eq!(r.get("account").cloned(), expected_account(id), "{r}");
    }
    // Without `account`, the records are replay's.
    let stripped = normalize(got.iter().map(|r| {
        let mut r = r.clone();
        r.as_object_mut().unwrap().remove("account");
        serde_json::to_vec(&r).unwrap()
    }));
    assert_eq!(stripped, case.expected);

    // Routing by the topic's owners: owned accounts go to the CSM receiver, addressed
    // to their current owner; the deleted account has no owner and goes to the team.
    let bodies = |path: &str| -> Vec<serde_json::Value> {
        rec.reqs
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect()
    };
    let notified = |id: &str| {
        ["csm", "team"].iter().any(|p| {
            bodies(p).iter().any(|b| {
                b["alerts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a["account_id"] == id)
            })
        })
    };
    wait_for("every account notified", Duration::from_secs(120), || {
        daemon.assert_alive();
        ids.iter().all(|id| notified(id))
    });
    for b in bodies("csm") {
        for a in b["alerts"].as_array().unwrap() {
            let id = a["account_id"].as_str().unwrap();
            assert_ne!(id, deleted);
            assert_eq!(
                b["owner"],
                expected_account(id).unwrap()["owner_email"],
                "{id}"
            );
        }
    }
    for b in bodies("team") {
        for a in b["alerts"].as_array().unwrap() {
            assert_eq!(a["account_id"], deleted.as_str());
        }
    }
    assert!(bodies("csm")
        .iter()
        .any(|b| b["owner"] == "new-owner@example.com"));
    daemon.stop();
}
