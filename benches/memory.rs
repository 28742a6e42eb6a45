//! Resident memory per tracked account: 1,000,000 activated accounts, each with a full
//! activity_drop window (36 active days), in one shard. Prints peak RSS / accounts.
//! `cargo bench --bench memory` (CHURNWATCH_BENCH_ACCOUNTS to change the count).

use std::sync::Arc;
use std::time::Instant;

use churnwatch::config::Config;
use churnwatch::engine::{EngineConfig, Shard};
use churnwatch::source::event::RawEvent;
use churnwatch::time::DAY;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // Under `cargo test --benches` only prove it runs.
    let test_mode = !std::env::args().any(|a| a == "--bench");
    let accounts: u64 = std::env::var("CHURNWATCH_BENCH_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if test_mode { 2_000 } else { 1_000_000 });
    let mut cfg = Config::default();
    // The bench measures the engine's memory per account, not the cap.
    cfg.engine.max_accounts_per_partition =
        cfg.engine.max_accounts_per_partition.max(accounts as usize);
    let days =
        (cfg.rules.activity_drop.recent_days + cfg.rules.activity_drop.baseline_days + 1) as i64;
    let mut shard = Shard::new(Arc::new(EngineConfig::new(&cfg)));
    let base_rss = status_kib("VmRSS:");
    let start = 1_767_225_600_000i64; // 2026-01-01
    let ids: Vec<String> = (0..accounts).map(|i| format!("acct-{i:07}")).collect();
    let t0 = Instant::now();
    let step = DAY / accounts as i64;
    let mut alerts = 0usize;
    for d in 0..days {
        for (i, id) in ids.iter().enumerate() {
            shard
                .push(&RawEvent {
                    account_id: id.as_str().into(),
                    event: "page.viewed".into(),
                    ts: start + d * DAY + i as i64 * step,
                    user_id: Some("u1".into()),
                })
                .expect("within the account limits");
            alerts += shard.drain_alerts().count();
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    // The id strings above are the bench's own input, not engine state.
    let ids_bytes: u64 = ids.iter().map(|s| s.capacity() as u64 + 24).sum();
    drop(ids);
    let peak = status_kib("VmHWM:") * 1024;
    let rss = status_kib("VmRSS:") * 1024;
    println!("memory: {accounts} accounts x {days} active days ({} events) in {elapsed:.1} s, {alerts} alerts", accounts * days as u64);
    println!("memory: peak RSS {:.1} MiB, RSS now {:.1} MiB, RSS before {:.1} MiB, bench input ids {:.1} MiB", peak as f64 / 1048576.0, rss as f64 / 1048576.0, base_rss as f64 / 1024.0, ids_bytes as f64 / 1048576.0);
    if test_mode {
        println!("memory: smoke run only (run `cargo bench --bench memory` for the figure)");
        assert_eq!(shard.accounts() as u64, accounts);
        return;
    }
    println!(
        "memory: peak RSS per account {:.0} bytes (target <= 512); RSS per account after the run {:.0} bytes",
        peak as f64 / accounts as f64,
        rss as f64 / accounts as f64
    );
    assert_eq!(shard.accounts() as u64, accounts);
}
