//! What the benchmarks against a real broker share: the repository's paths, the
//! size knobs read from the environment, scripts/kafka.sh and topic creation.

// Each benchmark uses the part it needs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The release-built `churnwatch` binary of this benchmark build.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_churnwatch"))
}

/// The number in environment variable `name`, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Runs scripts/kafka.sh with `args` and the extra environment `env`; returns its
/// standard output. Panics when it fails.
pub fn kafka_sh(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(repo().join("scripts/kafka.sh"))
        .args(args)
        .envs(env.iter().copied())
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/kafka.sh");
    assert!(out.status.success(), "scripts/kafka.sh {args:?} failed");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Starts a broker of this benchmark's own (stopped when this process ends), with the
/// extra environment `env`; returns what scripts/kafka.sh prints (`KAFKA_BOOTSTRAP`,
/// `KAFKA_DIR`, ...).
pub fn start_broker(env: &[(&str, &str)]) -> BTreeMap<String, String> {
    kafka_sh(
        &["start", "--watch-pid", &std::process::id().to_string()],
        env,
    )
    .lines()
    .filter_map(|l| l.split_once('='))
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub fn stop_broker(env: &BTreeMap<String, String>) {
    kafka_sh(&["stop", "--dir", &env["KAFKA_DIR"]], &[]);
}

/// Creates topic `name` with `partitions` partitions. The test broker keeps 100 MiB
/// per partition (scripts/kafka.sh); a benchmark topic must keep all of its few
/// million events.
pub fn topic(bootstrap: &str, name: &str, partitions: u32) {
    kafka_sh(
        &[
            "tool",
            "org.apache.kafka.tools.TopicCommand",
            "--bootstrap-server",
            bootstrap,
            "--create",
            "--topic",
            name,
            "--partitions",
            &partitions.to_string(),
            "--config",
            "retention.bytes=-1",
            "--config",
            "retention.ms=-1",
        ],
        &[],
    );
}
