//! Sweep cost: a 16-run `backtest` sweep (4 x 4 settings) over a generated history of
//! about 3 million events, against one `replay` of the same file, measured in one run.
//! Both read the file from the page cache; the sweep parses it once (on all cores) and
//! runs the 16 configs on all cores. Prints both times and the ratio (target: at most 4x).
//! `cargo bench --bench backtest` (CHURNWATCH_BENCH_ACCOUNTS, _DAYS to change the size,
//! _THREADS the threads of the sweep).

use std::io::Write;
use std::time::Instant;

use churnwatch::backtest::churns::Churns;
use churnwatch::backtest::history::History;
use churnwatch::backtest::score::{Owners, Window};
use churnwatch::backtest::sweep::{parse_set, plan};
use churnwatch::backtest::{run_all, Inputs};
use churnwatch::config::Config;
use churnwatch::gen::{generate, GenOptions};
use churnwatch::replay::replay;
use churnwatch::sink::record::to_json_line;
use churnwatch::source::file::LineReader;
use churnwatch::time::DAY;

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // Under `cargo test --benches` only prove it runs.
    let test_mode = !std::env::args().any(|a| a == "--bench");
    let opts = GenOptions {
        accounts: env_or(
            "CHURNWATCH_BENCH_ACCOUNTS",
            if test_mode { 60 } else { 1900 },
        ),
        days: env_or("CHURNWATCH_BENCH_DAYS", if test_mode { 60 } else { 150 }),
        seed: 1,
        ..GenOptions::default()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.ndjson");
    let stats = {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        let s = generate(&opts, &mut f).expect("generate");
        f.flush().expect("flush");
        s
    };
    let bytes = std::fs::read(&path).expect("read back"); // warm the page cache
    println!(
        "history: {} events, {} accounts x {} days, {} MB",
        stats.events,
        opts.accounts,
        opts.days,
        bytes.len() >> 20
    );
    drop(bytes);
    let cfg = Config::default();

    let t = Instant::now();
    let mut reader = LineReader::open(&path).expect("open");
    let mut sink = std::io::sink();
    let summary = replay(
        &cfg,
        &mut reader,
        &churnwatch::replay::ReplayOptions::default(),
        |a| sink.write_all(to_json_line(&a, 0).as_bytes()),
        |_, _, _, _| Ok(()),
        |_| {},
    )
    .expect("replay");
    let replay_secs = t.elapsed().as_secs_f64();
    println!(
        "replay: {replay_secs:.2} s ({} alert records)",
        summary.alerts_total()
    );

    let threads = std::env::var("CHURNWATCH_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let t = Instant::now();
    let sets = [
        parse_set("rules.inactive.after_days=7,10,14,21").unwrap(),
        parse_set("rules.activity_drop.alpha=0.0001,0.001,0.01,0.05").unwrap(),
    ];
    let specs = plan("", vec![], &sets).expect("valid sweep");
    let mut reader = LineReader::open(&path).expect("open");
    let history = History::read_with(&cfg, &mut reader, None, None, threads, |_| {}).expect("read");
    let parsed_secs = t.elapsed().as_secs_f64();
    let (start, end) = history.window().expect("events");
    let churns = Churns::from_end_events(&history, &cfg);
    let owners = Owners::build(history.known_accounts(), |_| None, |a| history.is_active(a));
    let inputs = Inputs {
        history: &history,
        churns: &churns,
        owners: &owners,
        window: Window {
            start,
            end,
            horizon: 90 * DAY,
        },
        feedback: None,
    };
    let runs = run_all(&inputs, specs, threads, || {});
    let sweep_secs = t.elapsed().as_secs_f64();
    let firing: u64 = runs
        .iter()
        .map(|r| r.score.kind("any").map_or(0, |k| k.firing))
        .sum();
    println!(
        "sweep: {sweep_secs:.2} s for {} runs on {threads} threads (parse once {parsed_secs:.2} s; {firing} firing records scored)",
        runs.len()
    );
    println!(
        "ratio: sweep / replay = {:.2} (target <= 4)",
        sweep_secs / replay_secs
    );
}
