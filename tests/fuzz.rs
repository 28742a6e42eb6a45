//! Fuzzing on the stable toolchain: proptest targets that feed untrusted input to the
//! event parser, the config loader, the changelog record decoder (the restore path)
//! and the HTTP APIs (the accounts list query, the silences API bodies), in process.
//!
//! Each target mixes three kinds of input: arbitrary bytes, byte-level mutations of a
//! seed corpus kept in the repo (`tests/fuzz/corpus/<target>/`, plus changelog records
//! made here by the real encoder), and structure-aware inputs (valid events, one config
//! option set to a random value, ...). The oracle: never a panic; a reject is a typed,
//! explained error; valid input round-trips; an HTTP request never gets a 5xx and every
//! refusal is a 4xx with a JSON `error`.
//!
//! `CHURNWATCH_FUZZ_CASES=N` runs N cases per target (the default keeps the file under
//! a minute in CI); `CHURNWATCH_FUZZ_SEED=S` varies the otherwise fixed RNG seed. A
//! failure prints the shrunk input: add it to the target's corpus as a regression case.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;

use churnwatch::accounts::{Accounts, MetaStore};
use churnwatch::config::{Config, ConfigError, TokenEntry};
use churnwatch::engine::{EngineConfig, Shard};
use churnwatch::inbox::model::{Principal, Role};
use churnwatch::inbox::pages::fixture::{FixtureView, ANA};
use churnwatch::kafka::changelog::{
    account_key, at_offset, PartitionMeta, Rebuild, ACCOUNT_PREFIX, META_KEY,
};
use churnwatch::kafka::client::LogContext;
use churnwatch::kafka::KafkaSetupError;
use churnwatch::notify::silence::Silences;
use churnwatch::notify::silence_api::{self, Api};
use churnwatch::server::auth::{sha256, Authenticator};
use churnwatch::source::event::{EventParser, RawEvent, RejectReason};
use churnwatch::time::{format_rfc3339, wall_clock_ms, Millis, DAY};

// ---------------------------------------------------------------- harness

/// Cases per target: `CHURNWATCH_FUZZ_CASES`, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("CHURNWATCH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A runner with a fixed seed (so CI is reproducible) unless `CHURNWATCH_FUZZ_SEED`.
fn runner(default_cases: u32) -> TestRunner {
    let seed: u64 = std::env::var("CHURNWATCH_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x00c4_0a7c_17f0_22ed);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let cfg = PtConfig {
        cases: cases(default_cases),
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..PtConfig::default()
    };
    TestRunner::new_with_rng(cfg, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target)
}

/// The seed files of a target, sorted by name.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("corpus {target}: {e}"))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "corpus {target} is empty");
    seeds
}

/// One byte-level mutation, as AFL/libFuzzer would make.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Duplicate(usize, usize),
    Token(usize, &'static [u8]),
}

/// Bytes that often sit on a parser's decision points.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"\\u",
    b"\\ud800",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"true",
    b"-",
    b"0",
    b"1e999",
    b"-9223372036854775809",
    b"9223372036854775807",
    b"\x00",
    b"\n",
    b"\xff",
    b"\xc3",
    b"\xe2\x80",
    b"=",
    b"&",
    b"%",
    b"%zz",
    b"%00",
    b"+",
    b"Z",
    b"T",
    b"+99:99",
    b"9999-12-31",
    b"0000-01-01",
    b"\"\"",
    b"[[",
    b"]]",
    b"\"a\" = ",
    b"'''",
    b"inf",
    b"nan",
    b"1d",
    b"0s",
    b"-1",
    b"18446744073709551616",
    b"\x80",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..32).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        (any::<usize>(), prop::sample::select(TOKENS)).prop_map(|(i, t)| Mutation::Token(i, t)),
    ]
}

fn mutate(seed: &[u8], ops: &[Mutation]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for op in ops {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match op {
            Mutation::Flip(i, b) if !v.is_empty() => {
                let n = v.len();
                v[i % n] ^= b;
            }
            Mutation::Set(i, b) if !v.is_empty() => {
                let n = v.len();
                v[i % n] = *b;
            }
            Mutation::Insert(i, b) => {
                let p = at(*i, v.len());
                v.splice(p..p, b.iter().copied());
            }
            Mutation::Delete(i, n) if !v.is_empty() => {
                let p = i % v.len();
                let end = (p + n).min(v.len());
                v.drain(p..end);
            }
            Mutation::Truncate(i) => v.truncate(at(*i, v.len())),
            Mutation::Duplicate(i, n) if !v.is_empty() => {
                let p = i % v.len();
                let chunk: Vec<u8> = v[p..(p + n).min(v.len())].to_vec();
                v.splice(p..p, chunk);
            }
            Mutation::Token(i, t) => {
                let p = at(*i, v.len());
                v.splice(p..p, t.iter().copied());
            }
            _ => {}
        }
    }
    v
}

/// Arbitrary bytes, or a corpus seed with 1 to 8 mutations (twice as often).
fn bytes_from(seeds: Vec<Vec<u8>>, max_len: usize) -> BoxedStrategy<Vec<u8>> {
    let seeds = Arc::new(seeds);
    let n = seeds.len();
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..max_len),
        2 => (0..n, prop::collection::vec(mutation(), 1..8))
            .prop_map(move |(i, ops)| mutate(&seeds[i], &ops)),
    ]
    .boxed()
}

// ---------------------------------------------------------------- 1. event parser

fn parser() -> EventParser {
    EventParser::new(&Config::default().input).unwrap()
}

/// The oracle for one message: an event whose fields obey the documented bounds, or a
/// reject with a known reason and a message; never a panic. The scanner validates the
/// whole document, so anything it accepts is a JSON object for `serde_json` too.
fn check_event(p: &EventParser, msg: &[u8]) -> Option<RawEvent<'static>> {
    match p.parse(msg) {
        Ok(ev) => {
            let doc: Value = serde_json::from_slice(msg)
                .unwrap_or_else(|e| panic!("accepted a message serde_json refuses ({e})"));
            assert!(doc.is_object());
            assert_eq!(doc["account_id"].as_str(), Some(&*ev.account_id));
            assert_eq!(doc["event"].as_str(), Some(&*ev.event));
            for id in [Some(&ev.account_id), ev.user_id.as_ref()]
                .into_iter()
                .flatten()
            {
                assert!(!id.is_empty() && id.len() <= 256, "{id:?}");
                assert!(!id.chars().any(char::is_control), "{id:?}");
            }
            assert!(!ev.event.is_empty());
            assert_eq!(p.parse_at(msg, ev.ts).as_ref(), Ok(&ev));
            Some(RawEvent {
                account_id: ev.account_id.into_owned().into(),
                event: ev.event.into_owned().into(),
                ts: ev.ts,
                user_id: ev.user_id.map(|u| u.into_owned().into()),
            })
        }
        Err(r) => {
            assert!(RejectReason::LABELS.contains(&r.as_str()), "{r:?}");
            assert!(!r.to_string().is_empty());
            None
        }
    }
}

/// Valid events, written with varied JSON: key order, escapes, ts as string or number,
/// extra fields.
fn valid_event() -> impl Strategy<Value = (String, String, Millis, Option<String>, Vec<u8>)> {
    let id = "[a-zA-Z0-9 ._@\u{e9}\u{4e2d}\"\\\\/-]{1,40}";
    (
        id,
        id,
        0i64..253_402_300_799_999,
        prop::option::of(id),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(("[a-z]{1,6}", any::<i32>()), 0..3),
    )
        .prop_map(|(account, event, ts, user, ts_str, reverse, extra)| {
            let mut fields: Vec<(String, Value)> = vec![
                ("account_id".into(), account.clone().into()),
                ("event".into(), event.clone().into()),
                (
                    "ts".into(),
                    if ts_str {
                        format_rfc3339(ts).into()
                    } else {
                        ts.into()
                    },
                ),
            ];
            if let Some(u) = &user {
                fields.push(("user_id".into(), u.clone().into()));
            }
            for (k, v) in extra {
                fields.push((format!("x_{k}"), v.into()));
            }
            if reverse {
                fields.reverse();
            }
            let doc: serde_json::Map<String, Value> = fields.into_iter().collect();
            let bytes = serde_json::to_vec(&doc).unwrap();
            (account, event, ts, user, bytes)
        })
}

#[test]
fn fuzz_event_parser() {
    let p = parser();
    let seeds = corpus("event");
    // Every committed seed (including regression cases) passes the oracle as is.
    for s in &seeds {
        check_event(&p, s);
    }
    runner(6_000)
        .run(&bytes_from(seeds, 512), |msg| {
            check_event(&p, &msg);
            Ok(())
        })
        .unwrap();
    runner(2_000)
        .run(&valid_event(), |(account, event, ts, user, bytes)| {
            let ev = check_event(&p, &bytes).expect("a valid event is accepted");
            prop_assert_eq!(&*ev.account_id, account.as_str());
            prop_assert_eq!(&*ev.event, event.as_str());
            prop_assert_eq!(ev.ts, ts);
            prop_assert_eq!(ev.user_id.as_deref(), user.as_deref());
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------- 2. config loader

/// The option names of the shipped config, as `section.key` paths.
fn option_paths() -> Vec<(Vec<String>, toml::Value)> {
    fn walk(prefix: &[String], t: &toml::Table, out: &mut Vec<(Vec<String>, toml::Value)>) {
        for (k, v) in t {
            let mut p = prefix.to_vec();
            p.push(k.clone());
            match v {
                toml::Value::Table(inner) => walk(&p, inner, out),
                _ => out.push((p, v.clone())),
            }
        }
    }
    let text = std::fs::read_to_string(corpus_dir("config").join("full_default.toml")).unwrap();
    let mut out = Vec::new();
    walk(&[], &text.parse().unwrap(), &mut out);
    out
}

fn toml_value() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        prop_oneof![Just(0i64), Just(-1), Just(1), Just(u32::MAX as i64 + 1)]
            .prop_map(toml::Value::Integer),
        any::<bool>().prop_map(toml::Value::Boolean),
        any::<f64>().prop_map(toml::Value::Float),
        "[ -~]{0,12}".prop_map(toml::Value::String),
        "-?[0-9]{1,20}(ms|s|m|h|d|w|)".prop_map(toml::Value::String),
        "/[a-z/~01]{0,10}".prop_map(toml::Value::String),
        prop::collection::vec("[a-z.]{0,8}", 0..3)
            .prop_map(|v| toml::Value::Array(v.into_iter().map(toml::Value::String).collect())),
        Just(toml::Value::Table(toml::Table::new())),
    ]
}

/// The oracle: the loader returns a config or an error; never panics. An error about
/// one option set to a bad value names that option.
fn check_config(text: &str, env: Vec<(String, String)>) -> Result<Config, String> {
    Config::from_toml_str(text, env).map_err(|e| {
        let msg = e.to_string();
        assert!(!msg.trim().is_empty());
        if let ConfigError::Invalid { option, .. } = &e {
            assert!(!option.is_empty());
        }
        msg
    })
}

#[test]
fn fuzz_config_loader() {
    let seeds = corpus("config");
    for s in &seeds {
        check_config(std::str::from_utf8(s).unwrap(), vec![]).expect("a seed config is valid");
    }
    // Regression cases: refused, naming the option given on the `# expect:` line.
    for f in corpus("config_rejects") {
        let text = String::from_utf8(f).unwrap();
        let expect = text
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("# expect: ");
        let msg = check_config(&text, vec![]).expect_err(&text);
        assert!(msg.contains(expect), "{msg}");
    }
    runner(600)
        .run(&bytes_from(seeds, 2048), |bytes| {
            let text = String::from_utf8_lossy(&bytes);
            let _ = check_config(&text, vec![]);
            Ok(())
        })
        .unwrap();
    // One option set to a random value, in the file or as an environment override.
    let paths = option_paths();
    let n = paths.len();
    runner(800)
        .run(
            &(0..n, toml_value(), any::<bool>()),
            |(i, value, from_env)| {
                let (path, _) = &paths[i];
                let (text, env) = if from_env {
                    let var = format!("CHURNWATCH_{}", path.join("__").to_ascii_uppercase());
                    let raw = match &value {
                        toml::Value::String(s) => s.clone(),
                        v => v.to_string(),
                    };
                    (String::new(), vec![(var, raw)])
                } else {
                    let mut t = toml::Table::new();
                    let mut cur = &mut t;
                    for seg in &path[..path.len() - 1] {
                        cur = cur
                            .entry(seg.clone())
                            .or_insert(toml::Value::Table(toml::Table::new()))
                            .as_table_mut()
                            .unwrap();
                    }
                    cur.insert(path[path.len() - 1].clone(), value.clone());
                    (toml::to_string(&t).unwrap(), vec![])
                };
                if let Err(msg) = check_config(&text, env) {
                    let key = &path[path.len() - 1];
                    prop_assert!(
                        msg.contains(key.as_str()),
                        "the error for {} = {value} does not name the option: {msg}",
                        path.join(".")
                    );
                }
                Ok(())
            },
        )
        .unwrap();
}

// ---------------------------------------------------------------- 3. changelog records

/// The default rules (every rule on, so account records carry their daily window).
fn engine() -> Arc<EngineConfig> {
    static ENGINE: std::sync::OnceLock<Arc<EngineConfig>> = std::sync::OnceLock::new();
    ENGINE
        .get_or_init(|| Arc::new(EngineConfig::new(&Config::default())))
        .clone()
}

/// Changelog records from the real encoder: accounts in every phase (onboarding,
/// activated with a window, ended) and a partition record, as (key, value).
fn encoded_records() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut shard = Shard::new(engine());
    let start: Millis = 1_767_225_600_000;
    let ev = |a: &'static str, e: &'static str, ts: Millis| RawEvent {
        account_id: a.into(),
        event: e.into(),
        ts,
        user_id: Some("u1".into()),
    };
    let mut evs = vec![
        ev("new", "account.created", start),
        ev("ended", "account.created", start),
        ev("ended", "subscription.cancelled", start + DAY),
    ];
    for d in 0..40 {
        evs.push(ev("busy", "page.viewed", start + d * DAY));
        evs.push(ev("busy", "report.exported", start + d * DAY + 60_000));
    }
    evs.sort_by_key(|e| e.ts);
    for e in &evs {
        shard.push(e).unwrap();
    }
    shard.advance_to(start + 41 * DAY);
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = shard
        .take_dirty()
        .into_iter()
        .map(|slot| {
            (
                account_key(shard.account_id(slot)),
                shard.encode_account(slot),
            )
        })
        .collect();
    out.sort();
    let meta = PartitionMeta {
        shard: shard.meta(),
        next_offset: 81,
        commit_offset: 80,
    };
    out.push((META_KEY.to_vec(), meta.encode()));
    out
}

/// Applies records in order, as a restore does. On success, uses the restored shard
/// (timers fire, a new event is taken), so a bad value cannot hide until later.
fn check_restore(records: &[(Vec<u8>, Vec<u8>)]) -> Result<(), String> {
    let mut rebuild = Rebuild::new(engine());
    for (offset, (k, v)) in records.iter().enumerate() {
        if let Err(e) = rebuild.apply(k, v) {
            assert!(!e.is_empty());
            let full = KafkaSetupError::Restore {
                topic: "cw-changelog".into(),
                partition: 2,
                msg: at_offset(offset as i64, &e),
            }
            .to_string();
            assert!(full.contains("partition 2") && full.contains(&format!("offset {offset}")));
            return Err(full);
        }
    }
    let (mut shard, meta) = rebuild.finish();
    let now = meta.map_or(1_767_225_600_000, |m| {
        m.shard.newest.clamp(0, 253_402_300_799_999)
    });
    for (k, _) in records {
        if let Some(id) = k.strip_prefix(ACCOUNT_PREFIX) {
            if let Ok(id) = std::str::from_utf8(id) {
                let _ = shard.push(&RawEvent {
                    account_id: id.into(),
                    event: "page.viewed".into(),
                    ts: now,
                    user_id: None,
                });
            }
        }
    }
    shard.advance_to(now.saturating_add(400 * DAY).min(253_402_300_799_999));
    let _ = shard.drain_alerts().count();
    Ok(())
}

/// The changelog corpus: `<key>\n<value>` files (records written by earlier builds).
fn changelog_corpus() -> Vec<(Vec<u8>, Vec<u8>)> {
    corpus("changelog")
        .into_iter()
        .map(|f| {
            let nl = f.iter().position(|&b| b == b'\n').expect("key line");
            (f[..nl].to_vec(), f[nl + 1..].to_vec())
        })
        .collect()
}

#[test]
fn fuzz_changelog_records() {
    let fresh = encoded_records();
    if std::env::var_os("CHURNWATCH_FUZZ_WRITE_SEEDS").is_some() {
        for (i, (k, v)) in fresh.iter().enumerate() {
            let mut f = k.clone();
            f.push(b'\n');
            f.extend(v);
            std::fs::write(corpus_dir("changelog").join(format!("{i:02}.rec")), f).unwrap();
        }
    }
    if std::env::var_os("CHURNWATCH_FUZZ_WRITE_SEEDS").is_some() {
        // Inputs the fuzzer found, replayed from their seed: each overflowed the
        // engine after decoding before restore checked the decoded values.
        let found: [(usize, Vec<Mutation>, &str); 2] = [
            (
                2,
                vec![
                    Mutation::Delete(3522128604714144656, 3),
                    Mutation::Delete(13974222982330781637, 3),
                    Mutation::Duplicate(5336680410428910233, 4),
                ],
                "onboarding_counter_overflow",
            ),
            (
                3,
                vec![Mutation::Duplicate(11748381609197122228, 19)],
                "close_day_overflow",
            ),
        ];
        for (i, ops, name) in found {
            let (k, v) = &fresh[i];
            let mut f = k.clone();
            f.push(b'\n');
            f.extend(mutate(v, &ops));
            std::fs::write(
                corpus_dir("changelog_rejects").join(format!("{name}.rec")),
                f,
            )
            .unwrap();
        }
    }
    // Regression cases: refused with the record's offset, never a panic.
    for f in corpus("changelog_rejects") {
        let nl = f.iter().position(|&b| b == b'\n').expect("key line");
        let rec = (f[..nl].to_vec(), f[nl + 1..].to_vec());
        let e = check_restore(&[rec]).expect_err("a corrupt record is refused");
        // Each decodes: only the check of the decoded values refuses it.
        assert!(
            e.contains("offset 0") && (e.contains("out of range") || e.contains("finite")),
            "{e}"
        );
    }
    // Records written by earlier builds still restore (the format is stable), and so
    // do this build's.
    let frozen = changelog_corpus();
    check_restore(&frozen).expect("the committed records restore");
    check_restore(&fresh).expect("fresh records restore");
    let mut seeds = frozen;
    seeds.extend(fresh);
    let seeds = Arc::new(seeds);
    let n = seeds.len();
    // Truncations of every record: all must fail (postcard needs every byte) or, where
    // a prefix happens to be a whole record, restore; never panic.
    for (k, v) in seeds.iter() {
        for len in 0..v.len() {
            let _ = check_restore(&[(k.clone(), v[..len].to_vec())]);
        }
    }
    let one = (0..n, prop::collection::vec(mutation(), 1..6));
    runner(6_000)
        .run(&one, |(i, ops)| {
            let (k, v) = &seeds[i];
            let _ = check_restore(&[(k.clone(), mutate(v, &ops))]);
            Ok(())
        })
        .unwrap();
    // Arbitrary values under real keys, in a whole partition's log.
    runner(1_000)
        .run(
            &prop::collection::vec((0..n, prop::collection::vec(any::<u8>(), 0..64)), 1..6),
            |recs| {
                let log: Vec<(Vec<u8>, Vec<u8>)> = recs
                    .into_iter()
                    .map(|(i, v)| (seeds[i].0.clone(), v))
                    .collect();
                let _ = check_restore(&log);
                Ok(())
            },
        )
        .unwrap();
}

// ---------------------------------------------------------------- 4. HTTP APIs

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The oracle for an API answer: below 500, and a refusal is JSON with an `error`.
async fn check_response(what: &str, resp: axum::response::Response) -> u16 {
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    assert!(
        status < 500,
        "{what}: status {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let v: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{what}: status {status}, body not JSON ({e})"));
    if status >= 400 {
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {status} without an error: {v}"
        );
    }
    status
}

/// Query strings: bytes kept to what a request line may carry (others percent-encoded,
/// as a client would send them).
fn as_query(bytes: &[u8]) -> String {
    const SAFE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'=')
        .remove(b'&')
        .remove(b'%')
        .remove(b'+')
        .remove(b'-')
        .remove(b'.')
        .remove(b'_');
    percent_encoding::percent_encode(bytes, SAFE).to_string()
}

fn structured_query() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "owner", "kind", "severity", "segment", "at_risk", "offset", "limit", "x", "",
    ]);
    let val = prop_oneof![
        Just(String::new()),
        "[a-z@.]{1,12}",
        "-?[0-9]{1,22}",
        prop::sample::select(vec![
            "inactive",
            "activity_drop",
            "not_activated",
            "high",
            "low",
            "true",
            "false",
            "%FF",
            "%00",
            "%E2%9C",
            "+",
            ANA,
        ])
        .prop_map(String::from),
        "[ -~]{0,300}",
    ];
    prop::collection::vec((key, val), 0..6).prop_map(|kv| {
        kv.into_iter()
            .map(|(k, v)| format!("{k}={}", as_query(v.as_bytes())))
            .collect::<Vec<_>>()
            .join("&")
    })
}

#[test]
fn fuzz_accounts_query() {
    use tower::ServiceExt;
    let today = wall_clock_ms().div_euclid(DAY);
    let view: Arc<dyn churnwatch::inbox::model::InboxView> = Arc::new(FixtureView::sample(today));
    let apps: Vec<axum::Router> = [Role::Csm, Role::Lead]
        .into_iter()
        .map(|role| {
            churnwatch::inbox::api::router(view.clone()).layer(axum::Extension(Principal {
                email: ANA.into(),
                role,
            }))
        })
        .collect();
    let rt = rt();
    let seeds: Vec<Vec<u8>> = corpus("accounts_query");
    let input = prop_oneof![
        1 => bytes_from(seeds, 300).prop_map(|b| as_query(&b)),
        1 => structured_query(),
    ];
    runner(3_000)
        .run(&(input, 0..apps.len()), |(q, who)| {
            let req = http::Request::get(format!("/api/v1/accounts?{q}"))
                .body(axum::body::Body::empty())
                .unwrap();
            rt.block_on(async {
                let resp = apps[who].clone().oneshot(req).await.unwrap();
                check_response(&format!("GET ?{q}"), resp).await;
            });
            Ok(())
        })
        .unwrap();
}

const CSM_TOKEN: &str = "cw_fuzz_0123456789abcdef0123456789abcdef";

/// The silences API behind sign-in, for a CSM who owns no account: every body is
/// checked in full, and none that passes reaches Kafka (the CSM may not act), so a
/// 5xx could only come from the parsing.
fn silence_app() -> axum::Router {
    let producer: rdkafka::producer::FutureProducer<LogContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:1")
        .set("message.timeout.ms", "500")
        .create_with_context(LogContext)
        .unwrap();
    let api = Arc::new(Api {
        store: Arc::new(Silences::default()),
        producer,
        topic: "silences".into(),
        max_silence: 90 * DAY,
        owners: Some(Arc::new(Accounts::new(MetaStore::default()))),
    });
    let hex: String = sha256(CSM_TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tokens = [TokenEntry {
        sha256: hex,
        email: ANA.into(),
        role: Role::Csm,
    }];
    let auth = Authenticator::new(&Default::default(), &tokens, None).unwrap();
    silence_api::router(api, Arc::new(auth))
}

fn structured_silence() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        Just(Value::Null),
        "[ -~\u{e9}\n\t\u{0}]{0,20}".prop_map(Value::from),
        "[a-z]{257,300}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::Array(vec![])),
    ];
    let until = prop_oneof![
        (-400i64..400).prop_map(|d| Value::from(format_rfc3339(wall_clock_ms() + d * DAY))),
        "[0-9T:Z.+-]{0,30}".prop_map(Value::from),
        Just(Value::from("9999-12-31T23:59:59Z")),
        Just(Value::from("0000-01-01T00:00:00Z")),
        any::<i64>().prop_map(Value::from),
    ];
    let kind = prop_oneof![
        prop::sample::select(vec![
            "inactive",
            "activity_drop",
            "not_activated",
            "",
            "all"
        ])
        .prop_map(Value::from),
        text.clone(),
    ];
    (
        prop::option::of(text.clone()),
        prop::option::of(kind),
        prop::option::of(until),
        prop::option::of(text.clone()),
        prop::option::of(text),
        any::<bool>(),
    )
        .prop_map(|(account, kind, until, author, reason, extra)| {
            let mut m = serde_json::Map::new();
            for (k, v) in [
                ("account_id", account),
                ("kind", kind),
                ("until", until),
                ("author", author),
                ("reason", reason),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            if extra {
                m.insert("id".into(), Value::from("sil-1"));
            }
            serde_json::to_vec(&m).unwrap()
        })
}

#[test]
fn fuzz_silence_bodies() {
    use tower::ServiceExt;
    let rt = rt();
    let app = rt.block_on(async { silence_app() });
    let seeds = corpus("silence_body");
    let input = prop_oneof![
        2 => bytes_from(seeds, 600),
        1 => structured_silence(),
    ];
    let request = |method: &str, path: &str, json: bool, body: Vec<u8>| {
        let mut b = http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {CSM_TOKEN}"));
        if json {
            b = b.header("content-type", "application/json");
        }
        b.body(axum::body::Body::from(body)).unwrap()
    };
    let ids = prop_oneof![
        "[ -~]{1,40}".prop_map(|s| as_query(s.as_bytes())),
        bytes_from(corpus("silence_id"), 40).prop_map(|b| as_query(&b)),
    ]
    .prop_filter("routed", |id| !id.is_empty());
    runner(3_000)
        .run(
            &(input, prop::bool::weighted(0.9), ids),
            |(body, json, id)| {
                let what = format!("POST {}", String::from_utf8_lossy(&body));
                rt.block_on(async {
                    let resp = app
                        .clone()
                        .oneshot(request("POST", "/api/v1/silences", json, body))
                        .await
                        .unwrap();
                    let status = check_response(&what, resp).await;
                    assert_ne!(
                        status, 201,
                        "{what}: a CSM owning nothing created a silence"
                    );
                    let path = format!("/api/v1/silences/{id}");
                    let resp = app
                        .clone()
                        .oneshot(request("DELETE", &path, false, vec![]))
                        .await
                        .unwrap();
                    check_response(&path, resp).await;
                });
                Ok(())
            },
        )
        .unwrap();
}
