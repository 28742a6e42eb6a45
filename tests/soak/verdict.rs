//! The soak's checks and figures: the input topic against the generated lines (the
//! load wrote each exactly once, which the oracle assumes), the alerts topic against
//! `replay` (none lost, none twice), the notifications against each alert's latest state (each delivered, none
//! under two idempotency keys), and each long-lived process's resident memory.

use std::collections::{BTreeMap, BTreeSet};

use crate::procs::{self, Life};
use crate::receiver::Hit;

/// What a run came to, for the checks.
pub struct Run<'a> {
    pub sent: u64,
    /// Load transactions that failed and were sent again.
    pub retried: u64,
    pub faults: &'a BTreeMap<&'static str, usize>,
    pub exits: usize,
    /// The lines the load meant to write once each (its input, with the end events).
    pub input: &'a [String],
    /// What the input topic holds (read_committed).
    pub input_got: &'a [Vec<u8>],
    pub expected: &'a [serde_json::Value],
    pub got: &'a [serde_json::Value],
    pub hits: &'a [Hit],
    pub lives: &'a [Life],
    pub run_secs: f64,
}

/// Alert records without `emitted_at`, sorted.
pub fn normalize(lines: impl Iterator<Item = Vec<u8>>) -> Vec<serde_json::Value> {
    let mut v: Vec<serde_json::Value> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut r: serde_json::Value = serde_json::from_slice(&l).expect("an alert record");
            r.as_object_mut().unwrap().remove("emitted_at");
            r
        })
        .collect();
    v.sort_by_key(|r| r.to_string());
    v
}

/// (missing, extra) of `got` against `want`, as multisets.
pub fn diff(want: &[serde_json::Value], got: &[serde_json::Value]) -> (Vec<String>, Vec<String>) {
    let mut count: BTreeMap<String, i64> = BTreeMap::new();
    for r in want {
        *count.entry(r.to_string()).or_default() += 1;
    }
    for r in got {
        *count.entry(r.to_string()).or_default() -= 1;
    }
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    for (r, n) in count {
        for _ in 0..n.max(0) {
            missing.push(r.clone());
        }
        for _ in 0..(-n).max(0) {
            extra.push(r.clone());
        }
    }
    (missing, extra)
}

/// Each alert's latest state: (id, status). A firing whose resolution comes in the
/// same batch window is superseded by it, by design, so only the latest must arrive.
pub fn latest_states(records: &[serde_json::Value]) -> BTreeSet<(String, String)> {
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    for r in records {
        let e = latest
            .entry(r["id"].as_str().unwrap().to_string())
            .or_default();
        if *e != "resolved" {
            *e = r["status"].as_str().unwrap().to_string();
        }
    }
    latest.into_iter().collect()
}

/// What the notifications came to. Only requests answered 2xx count as delivered.
#[derive(Debug, PartialEq, Eq)]
pub struct Notified {
    /// Latest states never delivered.
    pub lost: usize,
    /// Alert states delivered under a second idempotency key.
    pub twice: usize,
    /// A delivered notification sent again under its key (a batch in flight at a
    /// kill: the receiver drops it by its key).
    pub again: usize,
    /// Requests answered 503 (a burst), tried again by the notifier.
    pub refused: usize,
}

pub fn notification_figures(hits: &[Hit], want: &BTreeSet<(String, String)>) -> Notified {
    let mut first_key: BTreeMap<(String, String), String> = BTreeMap::new();
    let (mut twice, mut again, mut refused) = (0, 0, 0);
    let mut keys = BTreeSet::new();
    for h in hits {
        if !h.ok {
            refused += 1;
            continue;
        }
        if !keys.insert(h.key.clone()) {
            again += 1;
            continue;
        }
        for a in &h.alerts {
            if let Some(k) = first_key.insert(a.clone(), h.key.clone()) {
                eprintln!("soak: {a:?} delivered under two keys ({k}, {})", h.key);
                twice += 1;
            }
        }
    }
    let lost = want.iter().filter(|a| !first_key.contains_key(*a)).count();
    Notified {
        lost,
        twice,
        again,
        refused,
    }
}

/// Lines of `want` missing from `got`, and records of `got` beyond `want` (a line
/// written twice counts once here), as multisets.
pub fn input_figures(want: &[String], got: &[Vec<u8>]) -> (usize, usize) {
    let mut count: BTreeMap<&[u8], i64> = BTreeMap::new();
    for l in want {
        *count.entry(l.as_bytes()).or_default() += 1;
    }
    for r in got {
        *count.entry(r.as_slice()).or_default() -= 1;
    }
    let missing = count
        .values()
        .filter(|&&c| c > 0)
        .map(|&c| c as usize)
        .sum();
    let extra = count
        .values()
        .filter(|&&c| c < 0)
        .map(|&c| (-c) as usize)
        .sum();
    (missing, extra)
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Prints the figures; returns the failures.
pub fn report(r: &Run<'_>) -> Vec<String> {
    let mut failures = Vec::new();
    let (in_missing, in_extra) = input_figures(r.input, r.input_got);
    println!(
        "input records        {} lines, {} in the topic: missing {in_missing}, written twice {in_extra}",
        r.input.len(),
        r.input_got.len()
    );
    if in_missing + in_extra > 0 {
        failures.push(format!(
            "the load's input topic differs from its lines (missing {in_missing}, extra \
             {in_extra}): the replay's oracle assumes each line once, so the alerts below \
             cannot be judged against it"
        ));
    }
    let (missing, extra) = diff(r.expected, r.got);
    let want = latest_states(r.expected);
    let n = notification_figures(r.hits, &want);
    println!(
        "events produced      {} (transactions of the load sent again {})",
        r.sent, r.retried
    );
    println!("faults injected      {:?}", r.faults);
    println!("unexpected exits     {}", r.exits);
    println!(
        "alert records        {} expected, {} in the topic: lost {}, duplicated {}",
        r.expected.len(),
        r.got.len(),
        missing.len(),
        extra.len()
    );
    println!(
        "notifications        {} latest states: lost {}, duplicated {} \
         (same key again {}, 503 answers {}, requests {})",
        want.len(),
        n.lost,
        n.twice,
        n.again,
        n.refused,
        r.hits.len()
    );
    // Long-lived: half the run at least. Within 10 % + 10 MiB of the warm-up's.
    for life in r.lives {
        let lived = (life.end.unwrap() - life.start).as_secs_f64();
        match procs::memory(life) {
            Some((warm, end)) if lived >= r.run_secs * 0.5 => {
                let ok = end as f64 <= warm as f64 * 1.10 + 10.0 * 1024.0;
                println!(
                    "memory {:>8} #{}  {:.1} MiB after warm-up, {:.1} MiB at end ({lived:.0} s){}",
                    life.role.name(),
                    life.n,
                    mib(warm),
                    mib(end),
                    if ok { "" } else { "  GREW" }
                );
                if !ok {
                    failures.push(format!("{} #{} memory grew", life.role.name(), life.n));
                }
            }
            _ => println!(
                "memory {:>8} #{}  lived {lived:.0} s (not long-lived: not compared)",
                life.role.name(),
                life.n
            ),
        }
    }
    if !missing.is_empty() || !extra.is_empty() {
        failures.push(format!(
            "alerts topic differs from replay: missing {:?}, extra {:?}",
            &missing[..missing.len().min(3)],
            &extra[..extra.len().min(3)]
        ));
    }
    if n.lost > 0 || n.twice > 0 {
        failures.push(format!(
            "notifications: lost {}, duplicated {}",
            n.lost, n.twice
        ));
    }
    failures
}

#[test]
fn input_lines_missing_or_written_twice_are_counted_as_multisets() {
    let want: Vec<String> = ["a", "b", "b", "c"].map(String::from).to_vec();
    let got = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
    assert_eq!(input_figures(&want, &got(&["c", "b", "a", "b"])), (0, 0));
    assert_eq!(input_figures(&want, &got(&["a", "b", "c"])), (1, 0));
    assert_eq!(
        input_figures(&want, &got(&["a", "b", "b", "b", "c", "d"])),
        (0, 2)
    );
}

#[test]
fn a_state_under_two_keys_is_a_duplicate_and_a_refused_request_delivers_nothing() {
    let hit = |key: &str, ok: bool| Hit {
        key: key.into(),
        alerts: vec![("x/inactive/1".into(), "firing".into())],
        ok,
    };
    let want: BTreeSet<_> = [("x/inactive/1".to_string(), "firing".to_string())].into();
    let n = notification_figures(&[hit("k1", false)], &want);
    assert_eq!((n.lost, n.refused), (1, 1));
    let n = notification_figures(&[hit("k1", false), hit("k1", true), hit("k1", true)], &want);
    assert_eq!((n.lost, n.twice, n.again), (0, 0, 1));
    let n = notification_figures(&[hit("k1", true), hit("k2", true)], &want);
    assert_eq!(n.twice, 1);
}
