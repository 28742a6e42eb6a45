//! Recovery from a crash, and the pause of a scale-out, against a real Apache Kafka
//! broker (scripts/kafka.sh on loopback): `cargo bench --bench restart`.
//!
//! 1. Restart: `churnwatch run` on a generated backlog (4 partitions) is killed with
//!    SIGKILL once 40 % of it is read, and started again with the same
//!    `kafka.instance_id`. Printed: the time from the restart to the first event
//!    processed, to the first committed checkpoint, and to caught up (every event after
//!    the committed offsets read again), for each group membership mode:
//!    `classic-dynamic` (no `group.instance.id`), `classic-static` (the default
//!    config), `consumer-dynamic` and `consumer-static` (KIP-848). Everything else is
//!    the default config (librdkafka's 45 s session timeout, the broker's 45 s
//!    `group.consumer.session.timeout.ms`). A process that exits (a fatal group error)
//!    is started again after 1 s, as a supervisor would, and counted.
//! 2. Scale-out: with the default config, a second instance joins one that follows a
//!    live input (produced at a steady rate). Printed: the time from its start to its
//!    first partitions, event and checkpoint; the pause of the partitions that moved
//!    (from their revocation on the first instance to the first event processed on
//!    the second); the longest stall of the first instance's processing meanwhile.
//!
//! Environment: CHURNWATCH_BENCH_RESTART_ACCOUNTS (2000: ~3 M events),
//! CHURNWATCH_BENCH_RESTART_RUNS (1), CHURNWATCH_BENCH_RESTART_MODES (all four, comma
//! separated), CHURNWATCH_BENCH_ONLY (`restart` or `scale-out`),
//! CHURNWATCH_BENCH_SCALE_RATE (events/s of the live input, 50000).
//! Under `cargo test` it only checks that it builds.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

mod common;
use common::{bin, env_or, now_ms, start_broker, stop_broker, topic};

const PARTITIONS: i32 = 4;

/// How the group members join: protocol and static membership.
#[derive(Clone, Copy)]
struct Mode {
    name: &'static str,
    protocol: &'static str,
    static_membership: bool,
}

const MODES: [Mode; 4] = [
    Mode {
        name: "classic-dynamic",
        protocol: "classic",
        static_membership: false,
    },
    Mode {
        name: "classic-static",
        protocol: "classic",
        static_membership: true,
    },
    Mode {
        name: "consumer-dynamic",
        protocol: "consumer",
        static_membership: false,
    },
    Mode {
        name: "consumer-static",
        protocol: "consumer",
        static_membership: true,
    },
];

/// A running `churnwatch run`.
struct Daemon {
    child: Child,
    log: PathBuf,
    addr: Option<String>,
}

impl Daemon {
    fn start(bootstrap: &str, group: &str, input: &str, env: &[(String, String)]) -> Daemon {
        let log = std::env::temp_dir().join(format!(
            "cw-bench-{group}-{}-{}.log",
            std::process::id(),
            now_ms()
        ));
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .env("CHURNWATCH_KAFKA__BROKERS", bootstrap)
            .env("CHURNWATCH_KAFKA__GROUP_ID", group)
            .env("CHURNWATCH_KAFKA__INPUT_TOPIC", input)
            .env("CHURNWATCH_KAFKA__ALERTS_TOPIC", format!("{group}-alerts"))
            .env(
                "CHURNWATCH_KAFKA__DEAD_LETTER_TOPIC",
                format!("{group}-dlq"),
            )
            .env("CHURNWATCH_SERVER__LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        Daemon {
            child: cmd.spawn().unwrap(),
            log,
            addr: None,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// A metric summed over its labels; None until the HTTP server is up.
    fn metric(&mut self, name: &str) -> Option<f64> {
        use std::io::Read;
        if self.addr.is_none() {
            self.addr = self
                .log()
                .lines()
                .find(|l| l.contains("http server listening"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|a| a.split_whitespace().next())
                .map(str::to_string);
        }
        let mut s = std::net::TcpStream::connect(self.addr.as_ref()?).ok()?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let name = format!("churnwatch_{name}");
        Some(
            buf.lines()
                .filter(|l| {
                    l.starts_with(&name)
                        && (l[name.len()..].starts_with(' ') || l[name.len()..].starts_with('{'))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Wall-clock times (ms) of the log lines containing `what`.
    fn log_times(&self, what: &str) -> Vec<i64> {
        self.log()
            .lines()
            .filter(|l| l.contains(what))
            .filter_map(|l| churnwatch::time::parse_rfc3339(l.split_whitespace().next()?).ok())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mode_env(m: Mode) -> Vec<(String, String)> {
    vec![
        ("CHURNWATCH_KAFKA__INSTANCE_ID".into(), "bench".into()),
        (
            "CHURNWATCH_KAFKA__GROUP_PROTOCOL".into(),
            m.protocol.to_string(),
        ),
        (
            "CHURNWATCH_KAFKA__STATIC_MEMBERSHIP".into(),
            m.static_membership.to_string(),
        ),
    ]
}

/// Input events after the group's committed offsets (what a restart reads again).
fn remaining(bootstrap: &str, group: &str, input: &str) -> u64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(input, p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    (0..PARTITIONS)
        .map(|p| {
            let (low, high) = c
                .fetch_watermarks(input, p, Duration::from_secs(10))
                .unwrap();
            let from = match committed.find_partition(input, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => low,
            };
            (high - from).max(0) as u64
        })
        .sum()
}

/// One crash and restart; prints and returns (processing, checkpoint, caught up) in s.
fn restart_once(bootstrap: &str, input: &str, events: u64, m: Mode, run: u64) -> [f64; 3] {
    let group = format!("rs-{}-{run}", m.name);
    let env = mode_env(m);
    let mut d = Daemon::start(bootstrap, &group, input, &env);
    let deadline = Instant::now() + Duration::from_secs(600);
    while d.metric("events_consumed_total").unwrap_or(0.0) < 0.4 * events as f64 {
        assert!(!d.exited(), "{} exited:\n{}", m.name, d.log());
        assert!(Instant::now() < deadline, "no progress:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    d.kill9();
    let again = remaining(bootstrap, &group, input);
    let restarted = Instant::now();
    let mut d = Daemon::start(bootstrap, &group, input, &env);
    let mut starts = 1;
    let (mut processing, mut checkpoint, mut caught_up) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    while caught_up.is_none() || checkpoint.is_none() {
        if d.exited() {
            // A supervisor (Kubernetes) starts it again; here after 1 s.
            let why = d
                .log()
                .lines()
                .rfind(|l| l.contains("ERROR") || l.contains("error"))
                .unwrap_or_default()
                .to_string();
            if starts == 1 {
                eprintln!(
                    "restart: {}: the process exited ({why}); started again 1 s after each exit",
                    m.name
                );
            }
            std::thread::sleep(Duration::from_secs(1));
            d = Daemon::start(bootstrap, &group, input, &env);
            starts += 1;
        }
        let t = restarted.elapsed().as_secs_f64();
        let consumed = d.metric("events_consumed_total").unwrap_or(0.0);
        if consumed > 0.0 {
            processing.get_or_insert(t);
        }
        if d.metric("checkpoints_total").unwrap_or(0.0) > 0.0 {
            checkpoint.get_or_insert(t);
        }
        if consumed >= again as f64 {
            caught_up.get_or_insert(t);
        }
        assert!(
            Instant::now() < deadline,
            "{}: not caught up:\n{}",
            m.name,
            d.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    d.stop();
    let r = [processing.unwrap(), checkpoint.unwrap(), caught_up.unwrap()];
    println!(
        "restart: {:<16} run {run}: processing after {:.2} s, first committed checkpoint {:.2} s, \
         caught up {:.2} s ({again} events read again; {starts} process start{})",
        m.name,
        r[0],
        r[1],
        r[2],
        if starts == 1 { "" } else { "s" }
    );
    r
}

/// Produces `path`'s lines to `topic` keyed by account, `rate` a second, until `stop`.
fn live_producer(
    bootstrap: String,
    path: PathBuf,
    topic: String,
    rate: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let parser = churnwatch::source::event::EventParser::new(
            &churnwatch::config::Config::default().input,
        )
        .unwrap();
        let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
            ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("linger.ms", "5")
                .set("partitioner", "murmur2_random")
                .create()
                .unwrap();
        let started = Instant::now();
        let mut sent = 0u64;
        let file = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        for line in file.lines() {
            let line = line.unwrap();
            if stop.load(Ordering::Relaxed) {
                break;
            }
            while sent as f64 > started.elapsed().as_secs_f64() * rate as f64 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let key = parser
                .parse(line.as_bytes())
                .map(|e| e.account_id.into_owned())
                .unwrap_or_default();
            let mut rec = BaseRecord::to(&topic).key(&key).payload(&line);
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        std::thread::sleep(Duration::from_millis(1));
                        rec = r;
                    }
                }
            }
            sent += 1;
        }
        let _ = producer.flush(Duration::from_secs(30));
        sent
    })
}

/// A second instance joins one following a live input; prints the pauses (s).
fn scale_out(bootstrap: &str, events_file: &Path, run: u64) -> [f64; 4] {
    let input = format!("scale-events-{run}");
    topic(bootstrap, &input, PARTITIONS as u32);
    let rate = env_or("CHURNWATCH_BENCH_SCALE_RATE", 50_000);
    let stop = Arc::new(AtomicBool::new(false));
    let producer = live_producer(
        bootstrap.to_string(),
        events_file.to_path_buf(),
        input.clone(),
        rate,
        stop.clone(),
    );
    let group = format!("so-{run}");
    let env = |id: &str| vec![("CHURNWATCH_KAFKA__INSTANCE_ID".to_string(), id.to_string())];
    let mut a = Daemon::start(bootstrap, &group, &input, &env("a"));
    // Settled: a has processed for 5 s.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut first = None;
    loop {
        assert!(!a.exited(), "a exited:\n{}", a.log());
        assert!(
            Instant::now() < deadline,
            "a does not process:\n{}",
            a.log()
        );
        if a.metric("events_consumed_total").unwrap_or(0.0) > 0.0 {
            let t = *first.get_or_insert_with(Instant::now);
            if t.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let joined = Instant::now();
    let mut b = Daemon::start(bootstrap, &group, &input, &env("b"));
    let (mut assigned, mut processing, mut checkpoint) = (None, None, None);
    let mut b_first_event_ms = 0;
    let (mut a_last, mut a_last_change, mut a_stall) = (0.0, Instant::now(), 0.0f64);
    let deadline = Instant::now() + Duration::from_secs(300);
    // Until b checkpointed, and 5 s more to see a's processing go on.
    while checkpoint.is_none_or(|c: f64| joined.elapsed().as_secs_f64() < c + 5.0) {
        assert!(!b.exited(), "b exited:\n{}", b.log());
        assert!(
            Instant::now() < deadline,
            "b does not process:\n{}",
            b.log()
        );
        let t = joined.elapsed().as_secs_f64();
        if b.metric("assigned_partitions").unwrap_or(0.0) > 0.0 {
            assigned.get_or_insert(t);
        }
        if b.metric("events_consumed_total").unwrap_or(0.0) > 0.0 && processing.is_none() {
            processing = Some(t);
            b_first_event_ms = now_ms();
        }
        if b.metric("checkpoints_total").unwrap_or(0.0) > 0.0 {
            checkpoint.get_or_insert(t);
        }
        let c = a.metric("events_consumed_total").unwrap_or(0.0);
        if c > a_last {
            a_stall = a_stall.max(a_last_change.elapsed().as_secs_f64());
            a_last = c;
            a_last_change = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The moved partitions: revoked on a, first processed on b.
    let revoked = a
        .log_times("partitions revoked")
        .into_iter()
        .filter(|&t| t <= b_first_event_ms)
        .max();
    let moved_pause = revoked.map_or(f64::NAN, |t| (b_first_event_ms - t) as f64 / 1000.0);
    stop.store(true, Ordering::Relaxed);
    let sent = producer.join().unwrap();
    a.stop();
    b.stop();
    let r = [
        assigned.unwrap_or(f64::NAN),
        processing.unwrap_or(f64::NAN),
        checkpoint.unwrap_or(f64::NAN),
        moved_pause,
    ];
    println!(
        "scale-out: run {run}: the new instance got partitions after {:.2} s, processed its first event \
         after {:.2} s, committed after {:.2} s; the moved partitions paused {:.2} s (revoked -> processed \
         again); the first instance's longest stall meanwhile {a_stall:.2} s ({rate} events/s live, {sent} sent)",
        r[0], r[1], r[2], r[3]
    );
    r
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.len() == 1 || (hi - lo).abs() < 0.005 {
        format!("{lo:.2}")
    } else {
        format!("{lo:.2}-{hi:.2}")
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("restart bench: needs a broker; run `cargo bench --bench restart`");
        return;
    }
    let env = start_broker(&[]);
    let bootstrap = env["KAFKA_BOOTSTRAP"].clone();
    let dir = tempfile::tempdir().unwrap();
    let accounts = env_or("CHURNWATCH_BENCH_RESTART_ACCOUNTS", 2000) as u32;
    let runs = env_or("CHURNWATCH_BENCH_RESTART_RUNS", 1);
    let input = dir.path().join("events.ndjson");
    let opts = churnwatch::gen::GenOptions {
        accounts,
        days: 150,
        seed: 7,
        bad_line_rate: 0.0,
        ..Default::default()
    };
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    let events = churnwatch::gen::generate(&opts, &mut f).unwrap().events;
    f.flush().unwrap();
    drop(f);
    let only = std::env::var("CHURNWATCH_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "restart" {
        topic(&bootstrap, "restart-events", PARTITIONS as u32);
        let out = Command::new(bin())
            .args(["produce", "--input", input.to_str().unwrap()])
            .args(["--topic", "restart-events"])
            .env("CHURNWATCH_KAFKA__BROKERS", &bootstrap)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let wanted = std::env::var("CHURNWATCH_BENCH_RESTART_MODES").unwrap_or_default();
        let modes: Vec<Mode> = MODES
            .into_iter()
            .filter(|m| wanted.is_empty() || wanted.split(',').any(|w| w.trim() == m.name))
            .collect();
        println!(
            "restart: {events} events on {PARTITIONS} partitions, SIGKILL at 40 %, restart with the same instance id"
        );
        let mut figures: Vec<(Mode, Vec<[f64; 3]>)> = Vec::new();
        for m in &modes {
            let r = (0..runs)
                .map(|run| restart_once(&bootstrap, "restart-events", events, *m, run))
                .collect();
            figures.push((*m, r));
        }
        for (m, r) in &figures {
            let col = |i: usize| range(&r.iter().map(|x| x[i]).collect::<Vec<_>>());
            println!(
                "restart: {:<16} processing {} s, first checkpoint {} s, caught up {} s ({runs} run{})",
                m.name,
                col(0),
                col(1),
                col(2),
                if runs == 1 { "" } else { "s" }
            );
        }
    }
    if only.is_empty() || only == "scale-out" {
        let r: Vec<[f64; 4]> = (0..runs)
            .map(|run| scale_out(&bootstrap, &input, run))
            .collect();
        let col = |i: usize| range(&r.iter().map(|x| x[i]).collect::<Vec<_>>());
        println!(
            "scale-out: partitions {} s, first event {} s, first checkpoint {} s after the join; moved partitions paused {} s",
            col(0),
            col(1),
            col(2),
            col(3)
        );
    }
    stop_broker(&env);
}
