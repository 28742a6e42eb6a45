//! The inbox under load: builds a view of N accounts in-process (default 1,000,000:
//! state with a full 35-day window, metadata, 15 % at risk with history), prints its
//! memory per account (RSS delta), serves it on loopback and drives it with `oha` at
//! 64 concurrent clients: one account (a lead), a CSM's 50-row list, a lead's 50-row
//! list of all accounts at risk. Prints p50/p99 and requests/s for each.
//!
//! `benches/inbox.sh` installs oha and runs this (`ACCOUNTS`, `DURATION`, `CONCURRENCY`
//! to change the load). Under `cargo test --benches` it only builds a small view and
//! queries it in-process.

use std::process::Command;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use churnwatch::accounts::AccountMeta;
use churnwatch::config::Config;
use churnwatch::inbox::model::{Evidence, InboxView, ListQuery, Principal, Role};
use churnwatch::inbox::view::records::AlertIn;
use churnwatch::inbox::view::{Source, View};
use churnwatch::time::{wall_clock_ms, DAY};

const OWNERS: u64 = 4_000;

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A small, fast, seeded generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn owner(i: u64) -> String {
    format!("csm-{:04}@example.com", i % OWNERS)
}

/// Changelog records of 64 accounts with full windows (from a real shard), to be
/// applied under many ids.
fn templates(now: i64) -> Vec<Vec<u8>> {
    use churnwatch::engine::{EngineConfig, Shard};
    use churnwatch::source::event::RawEvent;
    let mut shard = Shard::new(std::sync::Arc::new(EngineConfig::new(&Config::default())));
    let start = now - 40 * DAY;
    for d in 0..40 {
        for k in 0..64i64 {
            for i in 0..(1 + (k * 7 + d) % 60) {
                let ev = RawEvent {
                    account_id: format!("t{k}").into(),
                    event: "page.viewed".into(),
                    ts: start + d * DAY + k * 1000 + i * 7,
                    user_id: Some(format!("u{}", i % 5).into()),
                };
                shard.push(&ev).unwrap();
            }
        }
    }
    shard.finish(Some(now));
    (0..shard.accounts() as u32)
        .map(|s| shard.encode_account(s))
        .collect()
}

/// Applies `n` accounts' changelog records (as the follower does); returns records/s.
fn apply_state(view: &View, n: u64, now: i64) -> f64 {
    let t = templates(now);
    let t0 = Instant::now();
    let mut w = view.write();
    for i in 0..n {
        let key = format!("a:acct-{i:07}");
        let ok = w.apply(
            Source::Changelog,
            (i % 12) as i32,
            i as i64,
            Some(key.as_bytes()),
            Some(&t[(i % 64) as usize]),
        );
        assert!(ok);
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

fn build(view: &View, n: u64) {
    let now = wall_clock_ms();
    let today = now.div_euclid(DAY);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let plans = ["starter", "growth", "enterprise"];
    let zones = [
        "Europe/Berlin",
        "America/New_York",
        "Asia/Tokyo",
        "UTC",
        "Europe/Paris",
    ];
    let segments = ["smb", "mid-market", "enterprise"];
    let mut w = view.write();
    let s = w.store();
    for i in 0..n {
        let id = format!("acct-{i:07}");
        let mrr = (100 + rng.below(5_000)) as f64;
        s.set_meta(
            &id,
            Some(&AccountMeta {
                account_id: id.clone(),
                name: Some(format!("Company {i}")),
                owner_email: Some(owner(i)),
                owner_chat: Some(format!("U{:08}", i % OWNERS)),
                plan: Some(plans[(i % 3) as usize].into()),
                mrr: Some(mrr),
                timezone: Some(zones[(i % 5) as usize].into()),
                crm_url: None,
                renewal_date: Some(churnwatch::time::format_day(today + rng.below(365) as i64)),
                arr: None,
                seats: Some(5 + rng.below(200)),
                segment: Some(segments[(i % 3) as usize].into()),
            }),
        );
        // 15 % at risk: one firing alert (3 % critical), an older episode resolved.
        if rng.below(100) < 15 {
            let critical = rng.below(5) == 0;
            let (kind, episode) = if critical {
                ("not_activated", "2026-01-01+90d")
            } else {
                ("inactive", "2026-02-01")
            };
            for (ep, firing) in [("2025-11-01", true), ("2025-11-01", false), (episode, true)] {
                s.apply_alert(AlertIn {
                    account_id: id.clone(),
                    kind: if ep == "2025-11-01" {
                        1
                    } else if critical {
                        0
                    } else {
                        1
                    },
                    firing,
                    severity: if critical && ep != "2025-11-01" { 2 } else { 1 },
                    episode: ep.into(),
                    event_time: now - 3 * DAY,
                    emitted_at: now - 3 * DAY,
                    summary: format!("{kind}: No activity for 14 days (last activity 2026-02-01)"),
                    evidence: Evidence::from_json(
                        r#"{"last_activity":"2026-02-01T10:00:00.000Z","idle_days":14}"#,
                    )
                    .unwrap(),
                });
            }
        }
    }
}

async fn bench_auth(mut req: Request, next: Next) -> Response {
    let who = req
        .headers()
        .get("x-bench-user")
        .and_then(|v| v.to_str().ok())
        .map(|v| Principal {
            email: v.into(),
            role: if v.starts_with("lead") {
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

/// Quantiles of in-process calls, in microseconds.
fn in_process(label: &str, mut f: impl FnMut(usize)) {
    let mut t: Vec<f64> = (0..2_000)
        .map(|i| {
            let s = Instant::now();
            f(i);
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    println!(
        "in-process {label:<28} p50 {:>8.1} us  p99 {:>8.1} us",
        t[t.len() / 2],
        t[t.len() * 99 / 100]
    );
}

fn oha(bin: &str, url: &str, who: &str, duration: &str, concurrency: &str) -> serde_json::Value {
    let out = Command::new(bin)
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "-z",
            duration,
            "-c",
            concurrency,
        ])
        .args(["-H", &format!("x-bench-user: {who}"), url])
        .output()
        .expect("run oha (set OHA, or use benches/inbox.sh)");
    assert!(
        out.status.success(),
        "oha: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("oha's JSON report")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let test_mode = !std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let n: u64 = env("ACCOUNTS", if test_mode { "5000" } else { "1000000" })
        .parse()
        .expect("ACCOUNTS is a number");
    let view = View::from_config(&Config::default());
    let rss0 = rss_kib();
    let rate = apply_state(&view, n, wall_clock_ms());
    let t0 = Instant::now();
    build(&view, n);
    let built = t0.elapsed();
    let rss1 = rss_kib();
    let status = view.status();
    assert_eq!(status.accounts as u64, n);
    println!("view: changelog records decoded and applied at {rate:.0} records/s");
    println!(
        "view: {n} accounts (metadata and alerts added in {:.1} s); RSS +{} MiB = {:.0} bytes per account",
        built.as_secs_f64(),
        (rss1 - rss0) / 1024,
        (rss1 - rss0) as f64 * 1024.0 / n as f64
    );
    decode_rates(if test_mode { 2_000 } else { 200_000 });
    let lead = Principal {
        email: "lead@example.com".into(),
        role: Role::Lead,
    };
    // The CSM of the account at the top: one with accounts at risk.
    let top = view.list(&lead, &ListQuery::default()).items[0].clone();
    let csm = Principal {
        email: top
            .owner_email
            .clone()
            .expect("generated accounts have owners"),
        role: Role::Csm,
    };
    let page = view.list(&csm, &ListQuery::default());
    assert!(
        page.total > 0 && page.items.len() <= 50,
        "a CSM has accounts at risk"
    );
    in_process("one account", |i| {
        let id = format!("acct-{:07}", (i as u64 * 7919) % n);
        assert!(view.account(&id).is_some());
    });
    in_process("CSM list (50 rows)", |i| {
        let who = Principal {
            email: owner(i as u64),
            role: Role::Csm,
        };
        let _ = view.list(&who, &ListQuery::default());
    });
    in_process("lead list at risk (50 rows)", |i| {
        let _ = view.list(
            &lead,
            &ListQuery {
                offset: (i % 20) * 50,
                ..ListQuery::default()
            },
        );
    });
    if test_mode {
        return;
    }
    let Ok(oha_bin) = std::env::var("OHA") else {
        println!("OHA not set: no HTTP load (benches/inbox.sh installs oha and sets it)");
        return;
    };
    let duration = env("DURATION", "10s");
    let concurrency = env("CONCURRENCY", "64");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let app =
        churnwatch::inbox::api::router(view.clone()).layer(axum::middleware::from_fn(bench_auth));
    let addr = rt
        .block_on(churnwatch::server::serve("127.0.0.1:0", app))
        .unwrap();
    for (label, path, who) in [
        (
            "one account",
            format!("/api/v1/accounts/acct-{:07}", n / 2),
            "lead@example.com".to_string(),
        ),
        (
            "CSM list (50 rows)",
            "/api/v1/accounts?limit=50".into(),
            csm.email.clone(),
        ),
        (
            "lead list at risk (50 rows)",
            "/api/v1/accounts?limit=50&offset=100".into(),
            "lead@example.com".into(),
        ),
    ] {
        let r = oha(
            &oha_bin,
            &format!("http://{addr}{path}"),
            &who,
            &duration,
            &concurrency,
        );
        let ok = r["statusCodeDistribution"]["200"].as_u64().unwrap_or(0);
        let all: u64 = r["statusCodeDistribution"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0);
        let ms = |k: &str| r["latencyPercentiles"][k].as_f64().unwrap_or(f64::NAN) * 1000.0;
        println!(
            "http {label:<28} c={concurrency} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({ok} of {all} answered 200)",
            r["summary"]["requestsPerSec"].as_f64().unwrap_or(f64::NAN),
            ms("p50"),
            ms("p99"),
        );
    }
}

/// The view's alert decoding (the record's fields it keeps, evidence as raw JSON)
/// against reading the shared typed record (`churnwatch::record::AlertRecord`: evidence
/// read by kind, account metadata) and keeping its evidence as raw JSON, on a record as
/// the detector publishes it.
fn decode_rates(n: usize) {
    let rec = br#"{"id":"acct-000042/activity_drop/2026-02-20","account_id":"acct-000042","kind":"activity_drop","status":"firing","severity":"warning","event_time":"2026-02-21T00:00:00.000Z","emitted_at":"2026-02-21T00:00:01.000Z","summary":"Activity dropped 61% over the last 7 days (21 events vs 53.5 expected, p=6.5e-4)","evidence":{"observed":21,"expected":53.5,"drop_pct":0.6074766355140186,"p_value":0.0006475823237516999,"model":"negative_binomial","recent_days":7,"baseline_days":28},"account":{"name":"Stark 42","owner_email":"farid@example.com","plan":"growth","mrr":4900.0,"timezone":"Europe/Berlin"}}"#;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(churnwatch::inbox::view::records::decode_alert(rec).unwrap());
    }
    let view = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..n {
        let r: churnwatch::record::AlertRecord = serde_json::from_slice(rec).unwrap();
        std::hint::black_box(serde_json::value::to_raw_value(&r.evidence).unwrap());
    }
    let typed = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "alert records decoded: the view's reading {view:.0}/s, the typed record {typed:.0}/s (one thread)"
    );
}
