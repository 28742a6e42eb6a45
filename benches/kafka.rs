//! The daemon against a real Apache Kafka broker (started by scripts/kafka.sh on
//! loopback): `cargo bench --bench kafka`. Prints
//!
//! 1. throughput of `churnwatch run` with exactly-once on, next to the broker's raw
//!    consume rate for the same topic measured in the same run with Kafka's own
//!    `org.apache.kafka.tools.ConsumerPerformance`;
//! 2. time to restore 1,000,000 accounts from the changelog;
//! 3. latency from an event's arrival to its alert being committed (p50/p99).
//!
//! Sizes: CHURNWATCH_BENCH_EVENTS_ACCOUNTS (default 4000 accounts x 150 days, ~6.3 M
//! events), CHURNWATCH_BENCH_RESTORE_ACCOUNTS (1,000,000), CHURNWATCH_BENCH_PARTITIONS (4).
//! Under `cargo test` it only checks that it builds.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

mod common;
use common::{bin, env_or, kafka_sh, start_broker, stop_broker, topic};

/// The test broker forms groups at once (fast tests); a production broker waits 3 s
/// (Kafka's default) for the first members of a new group, so that a process's stream
/// threads share the first assignment instead of rebalancing right after it.
const BROKER_PROPS: [(&str, &str); 1] = [(
    "KAFKA_SERVER_PROPS",
    "group.initial.rebalance.delay.ms=3000",
)];

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(bootstrap: &str, name: &str, extra: &[(&str, &str)]) -> Daemon {
        let log = std::env::temp_dir().join(format!("cw-bench-{name}-{}.log", std::process::id()));
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .env("CHURNWATCH_KAFKA__BROKERS", bootstrap)
            .env("CHURNWATCH_KAFKA__GROUP_ID", format!("{name}-group"))
            .env("CHURNWATCH_KAFKA__INSTANCE_ID", "bench")
            .env("CHURNWATCH_KAFKA__INPUT_TOPIC", format!("{name}-events"))
            .env("CHURNWATCH_KAFKA__ALERTS_TOPIC", format!("{name}-alerts"))
            .env("CHURNWATCH_KAFKA__DEAD_LETTER_TOPIC", format!("{name}-dlq"))
            .env("CHURNWATCH_SERVER__LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Daemon {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn addr(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(a) = self
                .log()
                .lines()
                .find(|l| l.contains("http server listening"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|a| a.split_whitespace().next())
            {
                return a.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn metric(&self, addr: &str, name: &str) -> f64 {
        use std::io::Read;
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return 0.0;
        };
        let _ = write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.lines()
            .filter(|l| {
                l.starts_with(name)
                    && (l[name.len()..].starts_with(' ') || l[name.len()..].starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// CPU seconds used so far by each thread, summed by thread name (Linux /proc).
    fn thread_cpu(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        let dir = format!("/proc/{}/task", self.child.id());
        for t in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ... utime(14) stime(15), counted after the ')'.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let name = stat[open + 1..close].trim_end_matches(|c: char| c.is_ascii_digit());
            let f: Vec<&str> = stat[close + 2..].split(' ').collect();
            let ticks: f64 =
                f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
            *out.entry(name.to_string()).or_insert(0.0) += ticks / 100.0;
        }
        out
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn produce_file(bootstrap: &str, path: &Path, topic: &str) {
    let out = Command::new(bin())
        .args([
            "produce",
            "--input",
            path.to_str().unwrap(),
            "--topic",
            topic,
        ])
        .env("CHURNWATCH_KAFKA__BROKERS", bootstrap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the daemon consumed `n` messages; returns the seconds from its first
/// consumed message to the last, and the CPU seconds each of its threads used then.
fn consume_time(d: &Daemon, n: f64) -> (f64, BTreeMap<String, f64>) {
    let addr = d.addr();
    let mut first = None;
    let mut cpu_before = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let c = d.metric(&addr, "churnwatch_events_consumed_total");
        if c > 0.0 && first.is_none() {
            first = Some(Instant::now());
            cpu_before = d.thread_cpu();
        }
        if c >= n {
            let secs = first.unwrap().elapsed().as_secs_f64();
            let mut cpu = d.thread_cpu();
            for (k, v) in cpu.iter_mut() {
                *v -= cpu_before.get(k).copied().unwrap_or(0.0);
            }
            return (secs, cpu);
        }
        assert!(
            Instant::now() < deadline,
            "daemon stuck at {c} of {n}:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn throughput(bootstrap: &str, dir: &Path, partitions: u32) {
    let accounts = env_or("CHURNWATCH_BENCH_EVENTS_ACCOUNTS", 4000) as u32;
    let input = dir.join("events.ndjson");
    let opts = churnwatch::gen::GenOptions {
        accounts,
        days: 150,
        seed: 5,
        bad_line_rate: 0.0,
        ..Default::default()
    };
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    let stats = churnwatch::gen::generate(&opts, &mut f).unwrap();
    f.flush().unwrap();
    drop(f);
    let n = stats.events;
    let bytes = std::fs::metadata(&input).unwrap().len();
    topic(bootstrap, "tput-events", partitions);
    produce_file(bootstrap, &input, "tput-events");
    // Warm-up, unmeasured: one pass of each consumer over the topic, so that the
    // broker's JIT has compiled what both use (fetches, read_committed ones,
    // transactions) before either is timed, as on a long-running broker. Without it
    // the broker's compiler threads take a large share of the 2 CPUs during the
    // daemon's run (several CPU-seconds each time, measured with per-thread times).
    let warm = Daemon::start(
        bootstrap,
        "tput",
        &[
            ("CHURNWATCH_KAFKA__GROUP_ID", "tput-warmup-group"),
            ("CHURNWATCH_KAFKA__ALERTS_TOPIC", "tput-warmup-alerts"),
            ("CHURNWATCH_KAFKA__DEAD_LETTER_TOPIC", "tput-warmup-dlq"),
        ],
    );
    consume_time(&warm, n as f64);
    warm.stop();
    let consumer_performance = || {
        kafka_sh(
            &[
                "tool",
                "org.apache.kafka.tools.ConsumerPerformance",
                "--bootstrap-server",
                bootstrap,
                "--topic",
                "tput-events",
                "--num-records",
                &n.to_string(),
                "--timeout",
                "120000",
            ],
            &[],
        )
    };
    consumer_performance();
    // The broker's raw consume rate for the same topic, with Kafka's own tool.
    let perf = consumer_performance();
    let line = perf.lines().last().unwrap_or_default().to_string();
    // start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, ...
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let field = |i: usize| -> f64 {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    // nMsg.sec counts the tool's group join too; fetch.nMsg.sec does not (nor does
    // the daemon's figure, timed from its first message): the fair comparison.
    let (headline_rate, raw_rate) = (field(5), field(9));
    let d = Daemon::start(bootstrap, "tput", &[]);
    let (secs, cpu) = consume_time(&d, n as f64);
    d.stop();
    let rate = n as f64 / secs;
    let per_event: Vec<String> = cpu
        .iter()
        .filter(|(_, s)| **s >= 0.05)
        .map(|(t, s)| {
            format!(
                "{t} {:.2} us ({:.0}% busy)",
                1e6 * s / n as f64,
                100.0 * s / secs
            )
        })
        .collect();
    println!(
        "kafka: {n} events ({} bytes/event avg), {partitions} partitions, exactly-once checkpoints every 1s",
        bytes / n.max(1)
    );
    println!(
        "kafka: raw consume rate (ConsumerPerformance, same topic, same run): {raw_rate:.0} msg/s \
         (fetch.nMsg.sec; {headline_rate:.0} msg/s with its group join)"
    );
    println!(
        "kafka: churnwatch run: {rate:.0} events/s ({secs:.2} s), {:.0}% of the raw rate (target >= 70%)",
        100.0 * rate / raw_rate
    );
    println!(
        "kafka: daemon CPU per event by thread: {}",
        per_event.join(", ")
    );
}

fn restore(bootstrap: &str, dir: &Path, partitions: u32) {
    let accounts = env_or("CHURNWATCH_BENCH_RESTORE_ACCOUNTS", 1_000_000);
    let input = dir.join("accounts.ndjson");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    let base = 1_767_225_600_000i64; // 2026-01-01
    for i in 0..accounts {
        let t = base + (i as i64 * 37) % 86_400_000;
        writeln!(
            f,
            "{{\"account_id\":\"acct-{i:07}\",\"event\":\"account.created\",\"ts\":{t}}}"
        )
        .unwrap();
    }
    for i in 0..accounts {
        let t = base + 86_400_000 + (i as i64 * 37) % 86_400_000;
        writeln!(f, "{{\"account_id\":\"acct-{i:07}\",\"event\":\"page.viewed\",\"ts\":{t},\"user_id\":\"u1\"}}")
            .unwrap();
    }
    f.flush().unwrap();
    drop(f);
    topic(bootstrap, "restore-events", partitions);
    produce_file(bootstrap, &input, "restore-events");
    let d = Daemon::start(bootstrap, "restore", &[]);
    consume_time(&d, (2 * accounts) as f64);
    d.stop();
    let d = Daemon::start(bootstrap, "restore", &[]);
    let deadline = Instant::now() + Duration::from_secs(600);
    let restored = |log: &str| log.matches("state restored").count();
    while restored(&d.log()) < partitions as usize {
        assert!(
            Instant::now() < deadline,
            "restore did not finish:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = d.log();
    d.stop();
    // Restores run side by side on the stream threads: the figure is the wall time
    // from the first restore's start to the last one's end (each log line has its end
    // time and its duration); the sum over partitions is printed too.
    let mut total_ms = 0u64;
    let mut records = 0u64;
    let mut restored_accounts = 0u64;
    let (mut first_start, mut last_end) = (i64::MAX, i64::MIN);
    for l in log.lines().filter(|l| l.contains("state restored")) {
        let field = |k: &str| -> u64 {
            l.split(&format!("{k}="))
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let elapsed = field("elapsed_ms");
        total_ms += elapsed;
        records += field("records");
        restored_accounts += field("accounts");
        let end = l
            .split_whitespace()
            .next()
            .and_then(|t| churnwatch::time::parse_rfc3339(t).ok())
            .expect("log lines start with an RFC 3339 time");
        first_start = first_start.min(end - elapsed as i64);
        last_end = last_end.max(end);
    }
    println!(
        "kafka: restore of {restored_accounts} accounts ({records} changelog records, {partitions} partitions): \
         {:.2} s (target <= 10 s; {:.2} s summed over partitions, restored side by side by the stream threads)",
        (last_end - first_start) as f64 / 1000.0,
        total_ms as f64 / 1000.0
    );
}

fn latency(bootstrap: &str, partitions: u32) {
    // Accounts created 40 days ago with two active days have a firing not_activated
    // alert; a third active day, produced live, activates them and resolves it.
    let accounts = env_or("CHURNWATCH_BENCH_LATENCY_ACCOUNTS", 2000);
    topic(bootstrap, "lat-events", partitions);
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let now = churnwatch::time::wall_clock_ms();
    let day = 86_400_000i64;
    let send_to = |id: &str, event: &str, ts: i64, partition: Option<i32>| {
        let v = format!(
            "{{\"account_id\":\"{id}\",\"event\":\"{event}\",\"ts\":{ts},\"user_id\":\"u\"}}"
        );
        let mut rec = BaseRecord::to("lat-events").key(id).payload(&v);
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    std::thread::sleep(Duration::from_millis(1));
                    rec = r;
                }
            }
        }
    };
    let send = |id: &str, event: &str, ts: i64| send_to(id, event, ts, None);
    // One ticker account per partition keeps every partition's stream current.
    let tick = |ts: i64| {
        for p in 0..partitions as i32 {
            send_to(&format!("lat-ticker-{p}"), "page.viewed", ts, Some(p));
        }
    };
    let ids: Vec<String> = (0..accounts).map(|i| format!("lat-{i:05}")).collect();
    for (ev, off) in [
        ("account.created", -40 * day),
        ("page.viewed", -40 * day + 1000),
        ("page.viewed", -39 * day),
    ] {
        for id in &ids {
            send(id, ev, now + off);
        }
    }
    // The stream is live: its newest event is now, so the watermark reaches the
    // backlog's deadlines.
    tick(now);
    producer.flush(Duration::from_secs(30)).unwrap();
    let d = Daemon::start(
        bootstrap,
        "lat",
        &[
            ("CHURNWATCH_TIME__ALLOWED_LATENESS", "1s"),
            ("CHURNWATCH_KAFKA__CHECKPOINT_INTERVAL", "100ms"),
            ("CHURNWATCH_KAFKA__IDLE_ADVANCE_AFTER", "500ms"),
        ],
    );
    // Wait for the backlog's not_activated alerts.
    let addr = d.addr();
    let deadline = Instant::now() + Duration::from_secs(300);
    while d.metric(&addr, "churnwatch_alerts_total") < accounts as f64 {
        assert!(
            Instant::now() < deadline,
            "backlog alerts missing:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A read_committed reader of the alerts topic, positioned at its end.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "lat-reader")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        let (_, high) = reader
            .fetch_watermarks("lat-alerts", p, Duration::from_secs(10))
            .unwrap();
        tpl.add_partition_offset("lat-alerts", p, Offset::Offset(high))
            .unwrap();
    }
    reader.assign(&tpl).unwrap();
    // Live activity: 200 accounts a second, each event stamped with the wall clock.
    let mut sent_at: BTreeMap<String, Instant> = BTreeMap::new();
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut next = 0usize;
    let mut last_tick = Instant::now();
    while latencies.len() < ids.len() {
        let due = (started.elapsed().as_secs_f64() * 200.0) as usize;
        while next < ids.len() && next <= due {
            send(&ids[next], "page.viewed", churnwatch::time::wall_clock_ms());
            sent_at.insert(ids[next].clone(), Instant::now());
            next += 1;
        }
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(2)) {
            let v: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            if v["status"] == "resolved" {
                let id = v["account_id"].as_str().unwrap();
                if let Some(t) = sent_at.get(id) {
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        // Keep the stream moving after the last account so its event passes the
        // watermark as it would in a live stream.
        if last_tick.elapsed() >= Duration::from_millis(50) {
            tick(churnwatch::time::wall_clock_ms());
            last_tick = Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "latency run stuck"
        );
    }
    d.stop();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |f: f64| latencies[((latencies.len() as f64 - 1.0) * f) as usize];
    println!(
        "kafka: latency from event arrival to committed alert ({} alerts, allowed_lateness 1s, checkpoints every \
         100ms): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        latencies.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("kafka bench: needs a broker; run `cargo bench --bench kafka`");
        return;
    }
    let partitions = env_or("CHURNWATCH_BENCH_PARTITIONS", 4) as u32;
    let env = start_broker(&BROKER_PROPS);
    let bootstrap = env["KAFKA_BOOTSTRAP"].clone();
    let dir = tempfile::tempdir().unwrap();
    let only = std::env::var("CHURNWATCH_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "throughput" {
        throughput(&bootstrap, dir.path(), partitions);
    }
    if only.is_empty() || only == "restore" {
        restore(&bootstrap, dir.path(), partitions);
    }
    if only.is_empty() || only == "latency" {
        latency(&bootstrap, partitions);
    }
    stop_broker(&env);
}
