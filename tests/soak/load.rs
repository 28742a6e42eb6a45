//! The soak's steady load: a generated stream's lines produced to the input topic at
//! an even rate over the run, keyed by account, then one end event per partition.
//!
//! Each tick's lines go in one transaction, sent again in a new one if it fails (a
//! broker restart): the daemons read `read_committed`, so the topic holds each line
//! once whatever the broker did. (An idempotent producer alone stalled for good after
//! a broker restart in a 20-minute soak, its messages timing out.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::util::Timeout;

#[derive(Default)]
pub struct Counts {
    /// Lines (and end events) committed to the topic.
    pub sent: AtomicU64,
    /// Transactions that failed and whose lines were sent again.
    pub retried: AtomicU64,
    pub done: AtomicBool,
    /// Set by the soak to end the load early (a failed run).
    pub stop: AtomicBool,
}

/// One record: its partition (None: by key), key and line.
type Rec<'a> = (Option<i32>, Option<String>, &'a str);

const TICK: Duration = Duration::from_millis(200);
const WAIT: Timeout = Timeout::After(Duration::from_secs(30));

fn producer(bootstrap: &str, id: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", id)
        .set("linger.ms", "20")
        .set("transaction.timeout.ms", "60000")
        .set("message.timeout.ms", "55000")
        .set_log_level(RDKafkaLogLevel::Warning)
        .create()
        .expect("load producer")
}

/// A new transactional producer, initialised (which fences the one it replaces and
/// aborts its open transaction); tried again until the broker answers.
fn ready(
    bootstrap: &str,
    id: &str,
    counts: &Counts,
) -> Option<ThreadedProducer<DefaultProducerContext>> {
    loop {
        let p = producer(bootstrap, id);
        match p.init_transactions(WAIT) {
            Ok(()) => return Some(p),
            Err(e) if counts.stop.load(Ordering::SeqCst) => {
                eprintln!("soak load: stopped while initialising: {e}");
                return None;
            }
            Err(e) => eprintln!("soak load: init_transactions: {e}; trying again"),
        }
    }
}

/// Sends `recs` in one transaction, again until one commits.
fn send_batch(
    p: &mut ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    recs: &[Rec<'_>],
    (bootstrap, id): (&str, &str),
    counts: &Counts,
) -> bool {
    loop {
        match try_batch(p, topic, recs) {
            Ok(()) => {
                counts.sent.fetch_add(recs.len() as u64, Ordering::Relaxed);
                return true;
            }
            Err(e) => {
                counts.retried.fetch_add(1, Ordering::Relaxed);
                eprintln!("soak load: a transaction failed ({e}); sending its lines again");
                if counts.stop.load(Ordering::SeqCst) {
                    return false;
                }
                // Not committed (a commit is retried until it is, or fails for good):
                // abort it, or let a new producer abort it.
                if p.abort_transaction(WAIT).is_err() {
                    match ready(bootstrap, id, counts) {
                        Some(n) => *p = n,
                        None => return false,
                    }
                }
            }
        }
    }
}

fn try_batch(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    recs: &[Rec<'_>],
) -> Result<(), KafkaError> {
    p.begin_transaction()?;
    for (part, key, line) in recs {
        let mut rec = BaseRecord::to(topic).payload(*line);
        if let Some(k) = key {
            rec = rec.key(k.as_str());
        }
        if let Some(part) = part {
            rec = rec.partition(*part);
        }
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
    // A commit that timed out may still complete: retried, never abandoned.
    loop {
        match p.commit_transaction(WAIT) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(t)) if t.is_retriable() => {
                eprintln!("soak load: commit: {t}; trying again");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Produces `lines` to `topic` evenly over `over`, then `ends[p]` to partition `p`
/// of `topic` for each.
pub fn start(
    bootstrap: &str,
    topic: &str,
    lines: Vec<String>,
    ends: Vec<String>,
    over: Duration,
) -> (Arc<Counts>, JoinHandle<()>) {
    let counts = Arc::new(Counts::default());
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    let id = format!("soak-load-{}", std::process::id());
    let c = counts.clone();
    let handle = std::thread::spawn(move || {
        let Some(mut p) = ready(&bootstrap, &id, &c) else {
            return;
        };
        let start = Instant::now();
        let n = lines.len();
        let mut i = 0;
        while i < n {
            if c.stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(TICK);
            let due = ((start.elapsed().as_secs_f64() / over.as_secs_f64()) * n as f64) as usize;
            let j = due.clamp(i, n);
            let recs: Vec<Rec<'_>> = lines[i..j]
                .iter()
                .map(|l| {
                    let key = serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v["account_id"].as_str().map(str::to_string));
                    (None, key, l.as_str())
                })
                .collect();
            if !recs.is_empty() && !send_batch(&mut p, &topic, &recs, (&bootstrap, &id), &c) {
                return;
            }
            i = j;
        }
        let recs: Vec<Rec<'_>> = ends
            .iter()
            .enumerate()
            .map(|(part, l)| {
                (
                    Some(part as i32),
                    Some(format!("zz-end-{part}")),
                    l.as_str(),
                )
            })
            .collect();
        if send_batch(&mut p, &topic, &recs, (&bootstrap, &id), &c) {
            c.done.store(true, Ordering::SeqCst);
        }
    });
    (counts, handle)
}
