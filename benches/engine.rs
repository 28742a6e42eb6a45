//! Hot paths: event parsing, timestamp parsing, the engine's per-event work, the
//! activity_drop test, and alert serialization. `cargo bench --bench engine`.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use churnwatch::config::Config;
use churnwatch::engine::{stats, EngineConfig, Shard};
use churnwatch::gen::{generate, GenOptions};
use churnwatch::source::event::{EventParser, RawEvent};
use churnwatch::time::parse_rfc3339;

fn sample_lines() -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let opts = GenOptions {
        accounts: 200,
        days: 60,
        bad_line_rate: 0.0,
        ..GenOptions::default()
    };
    generate(&opts, &mut buf).unwrap();
    buf.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn parsing(c: &mut Criterion) {
    let lines = sample_lines();
    let n = 10_000.min(lines.len());
    let bytes: usize = lines[..n].iter().map(Vec::len).sum();
    let parser = EventParser::new(&Config::default().input).unwrap();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("default_schema_{}B_avg", bytes / n), |b| {
        b.iter(|| {
            for l in &lines[..n] {
                black_box(parser.parse(black_box(l)).unwrap());
            }
        })
    });
    let segment: Vec<Vec<u8>> = lines[..n]
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap();
            serde_json::to_vec(&serde_json::json!({
                "type": "track", "event": v["event"], "userId": v["user_id"], "timestamp": v["ts"],
                "context": {"groupId": v["account_id"], "library": {"name": "analytics.js"}},
                "properties": v["properties"],
            }))
            .unwrap()
        })
        .collect();
    let mut cfg = Config::default().input;
    cfg.account_id = "/context/groupId".into();
    cfg.user_id = "/userId".into();
    cfg.ts = "/timestamp".into();
    let seg_parser = EventParser::new(&cfg).unwrap();
    g.bench_function("segment_nested_pointers", |b| {
        b.iter(|| {
            for l in &segment {
                black_box(seg_parser.parse(black_box(l)).unwrap());
            }
        })
    });
    g.finish();
    c.bench_function("rfc3339_parse", |b| {
        b.iter(|| parse_rfc3339(black_box("2026-03-04T10:15:31.123+02:00")))
    });
}

fn engine(c: &mut Criterion) {
    let lines = sample_lines();
    let parser = EventParser::new(&Config::default().input).unwrap();
    let events: Vec<RawEvent<'static>> = lines
        .iter()
        .map(|l| {
            let e = parser.parse(l).unwrap();
            RawEvent {
                account_id: e.account_id.into_owned().into(),
                event: e.event.into_owned().into(),
                ts: e.ts,
                user_id: e.user_id.map(|u| u.into_owned().into()),
            }
        })
        .collect();
    let cfg = Arc::new(EngineConfig::new(&Config::default()));
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(10);
    g.bench_function(
        format!("push_{}_events_200_accounts_60_days", events.len()),
        |b| {
            b.iter_batched(
                || Shard::new(cfg.clone()),
                |mut shard| {
                    for e in &events {
                        shard.push(e).expect("within the account limits");
                        shard.drain_alerts().for_each(drop);
                    }
                    shard.finish(None);
                    shard
                },
                BatchSize::LargeInput,
            )
        },
    );
    g.finish();
    c.bench_function("p_value_negative_binomial", |b| {
        b.iter(|| stats::p_value(black_box(12), black_box(10.2), black_box(31.0), 7))
    });
}

criterion_group!(benches, parsing, engine);
criterion_main!(benches);
