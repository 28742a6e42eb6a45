//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod actions;
pub mod broker;
pub mod http;
pub mod proc;
pub mod smtp;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use churnwatch::config::Config;
use churnwatch::engine::{EngineConfig, Shard};
use churnwatch::sink::record::to_record;
use churnwatch::source::event::RawEvent;
use churnwatch::time::{parse_rfc3339, Millis};

/// The churnwatch binary built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_churnwatch"))
}

/// Runs the binary; panics with its stderr if it fails.
pub fn churnwatch(args: &[&str]) -> Output {
    churnwatch_env(args, std::iter::empty::<(&str, &str)>())
}

/// Runs the binary with `args` in the environment `env` besides this one's; panics
/// with its stderr if it fails.
pub fn churnwatch_env<K, V>(args: &[&str], env: impl IntoIterator<Item = (K, V)>) -> Output
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let out = Command::new(bin())
        .args(args)
        .envs(env)
        .output()
        .expect("run churnwatch");
    assert!(
        out.status.success(),
        "churnwatch {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Alert records of a generated population: `gen` with `gen_args` (and an accounts
/// file, when `with_accounts`), then `replay -q` (with that metadata); the records are
/// written to `dir/alerts.ndjson`. Returns that file and its text.
pub fn generated_alerts(dir: &Path, gen_args: &[&str], with_accounts: bool) -> (PathBuf, String) {
    let events = dir.join("events.ndjson");
    let accounts = dir.join("accounts.csv");
    let mut gen = vec!["gen", "--output", events.to_str().unwrap()];
    gen.extend_from_slice(gen_args);
    let mut replay = vec!["replay", "-q", "--input", events.to_str().unwrap()];
    replay.extend(["--rejects", "/dev/null"]);
    if with_accounts {
        gen.extend(["--accounts-file", accounts.to_str().unwrap()]);
        replay.extend(["--accounts", accounts.to_str().unwrap()]);
    }
    churnwatch(&gen);
    let out = churnwatch(&replay);
    let path = dir.join("alerts.ndjson");
    std::fs::write(&path, &out.stdout).unwrap();
    (path, String::from_utf8(out.stdout).expect("UTF-8 records"))
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn ts(s: &str) -> Millis {
    parse_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// One test event: account, event name, RFC 3339 time, user.
pub type Ev<'a> = (&'a str, &'a str, &'a str, Option<&'a str>);

/// Runs events through one shard with the given config text and returns the alert
/// records (with `emitted_at` removed), in emission order.
pub fn run_engine(config_toml: &str, events: &[Ev], until: Option<&str>) -> Vec<serde_json::Value> {
    let cfg = Config::from_toml_str(config_toml, []).expect("test config");
    let mut shard = Shard::new(Arc::new(EngineConfig::new(&cfg)));
    let mut out = Vec::new();
    for (a, e, t, u) in events {
        shard
            .push(&RawEvent {
                account_id: (*a).into(),
                event: (*e).into(),
                ts: ts(t),
                user_id: u.map(Into::into),
            })
            .expect("within the account limits");
        out.extend(shard.drain_alerts().map(|a| strip(to_record(&a, 0))));
    }
    shard.finish(until.map(ts));
    out.extend(shard.drain_alerts().map(|a| strip(to_record(&a, 0))));
    out
}

/// The record (or any JSON object) without its `emitted_at`.
pub fn strip(r: impl serde::Serialize) -> serde_json::Value {
    let mut v = serde_json::to_value(r).expect("a JSON object");
    v.as_object_mut().unwrap().remove("emitted_at");
    v
}

/// Compact view of records: "status id @event_time".
pub fn brief(records: &[serde_json::Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            format!(
                "{} {} @{}",
                r["status"].as_str().unwrap(),
                r["id"].as_str().unwrap(),
                r["event_time"].as_str().unwrap()
            )
        })
        .collect()
}

/// Polls `cond` every 200 ms until it holds; panics after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One alert record as the detector writes it, as a JSON line: `id` is
/// `account/kind/episode`, `status` and `severity` as published, at `event_time`
/// (RFC 3339), with the evidence of its kind (or of a resolution), and `account` as
/// its account object when given.
pub fn alert_line(
    id: &str,
    status: &str,
    severity: &str,
    event_time: &str,
    account: Option<serde_json::Value>,
) -> String {
    fn parse<T: serde::de::DeserializeOwned>(name: &str) -> T {
        serde_json::from_value(serde_json::json!(name)).expect("a known name")
    }
    let mut r = churnwatch::record::AlertRecord::sample(id, parse(status), parse(severity));
    r.event_time = ts(event_time);
    r.emitted_at = r.event_time;
    let mut v = serde_json::to_value(&r).expect("a record");
    if let Some(a) = account {
        v["account"] = a;
    }
    format!("{v}\n")
}

/// The alert records of a webhook body (read as the typed record: what a webhook
/// sends is what the detector published).
pub fn webhook_alerts(body: &str) -> Vec<churnwatch::record::AlertRecord> {
    let v: serde_json::Value = serde_json::from_str(body).expect("a webhook body");
    serde_json::from_value(v["alerts"].clone()).expect("alert records")
}

/// (id, status) of each alert record of a webhook body.
pub fn webhook_ids(body: &str) -> Vec<(String, String)> {
    webhook_alerts(body)
        .into_iter()
        .map(|a| (a.id, a.status.as_str().to_string()))
        .collect()
}

/// The address of the HTTP server a churnwatch process logged, if it did yet.
pub fn logged_http_addr(log: &str) -> Option<String> {
    log.lines()
        .find(|l| l.contains("http server listening"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .map(str::to_string)
}

/// Java's murmur2 partitioner (what `produce` uses for keyed records).
pub fn murmur2_partition(key: &[u8], partitions: u32) -> u32 {
    let (seed, m): (u32, u32) = (0x9747_b28c, 0x5bd1_e995);
    let mut h: u32 = seed ^ key.len() as u32;
    let chunks = key.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(m);
        k ^= k >> 24;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m) ^ k;
    }
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate().rev() {
            h ^= (*b as u32) << (8 * i);
        }
        h = h.wrapping_mul(m);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(m);
    h ^= h >> 15;
    (h & 0x7fff_ffff) % partitions
}
