//! `churnwatch run`: a consumer-group member that turns the input topic into alert
//! records, exactly once.
//!
//! One engine shard per assigned partition. Every checkpoint is one Kafka transaction
//! holding the changelog records of the accounts that changed, each partition's record
//! (clocks and offsets), the alert records and dead letters produced since the last
//! checkpoint, and the consumer offsets. A crash anywhere rolls back to the last
//! checkpoint; the input read again from the committed offsets reproduces the same
//! records.
//!
//! Offsets: the offset committed for a partition is that of the oldest event still
//! waiting for the watermark, so those events are read again after a restore. Events
//! read again that were already applied (offset below the checkpoint's `next_offset`
//! and time below its watermark) and rejects already dead-lettered are skipped.
//!
//! The stream thread's parts, one file each: `stream` (the poll loop of one
//! consumer-group member), `rebalance` (the consumer's callbacks: assignment,
//! revocation, statistics), `state` (what a stream thread owns, and sending what
//! processing produced), `output` (the transactional producer and the records it
//! sends), `checkpoint` (transactions, restore and rollback), `idle` (the broker side
//! of the live-mode watermark; the rule is the engine's `IdleWatch`).

mod checkpoint;
mod idle;
mod output;
mod rebalance;
mod state;
mod stream;

use stream::stream_thread;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::error::KafkaError;
use tracing::{info, info_span};

use super::topics::ensure_topics;
use super::KafkaSetupError;
use crate::config::Config;
use crate::engine::EngineConfig;
use crate::metrics::METRICS;
use crate::server::Health;
use crate::source::event::EventParser;

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error("Kafka error: {0}")]
    Kafka(#[from] KafkaError),
    #[error(
        "this instance was fenced: another instance with transactional id {0:?} took over \
         (kafka.instance_id must differ between running instances)"
    )]
    Fenced(String),
    #[error("fatal Kafka error, restart needed: {0}")]
    Fatal(String),
    /// A member joined the group with this stream thread's `group.instance.id`: this
    /// member's own rejoin after its session expired (handled by joining again), or
    /// another process with the same `kafka.instance_id`.
    #[error(
        "this group member was replaced by another with group.instance.id {0} \
         (kafka.instance_id must differ between running instances)"
    )]
    InstanceFenced(String),
    /// The transactional producer hit a fatal error other than fencing (e.g. the
    /// coordinator aborted a transaction that outlived a broker restart): recovered
    /// in-process by a new producer, as a restart would.
    #[error("the transactional producer failed: {0}")]
    ProducerFailed(String),
    #[error("graceful stop did not finish within {0:?}")]
    ShutdownTimeout(Duration),
}

/// Counters for metrics and logs.
#[derive(Debug, Default, Clone)]
pub struct DaemonStats {
    pub events: u64,
    pub rejected: u64,
    pub alerts: u64,
    pub replay_skipped: u64,
    pub checkpoints: u64,
    pub aborts: u64,
    pub restored_records: u64,
}

impl DaemonStats {
    fn add(&mut self, o: &DaemonStats) {
        self.events += o.events;
        self.rejected += o.rejected;
        self.alerts += o.alerts;
        self.replay_skipped += o.replay_skipped;
        self.checkpoints += o.checkpoints;
        self.aborts += o.aborts;
        self.restored_records += o.restored_records;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What every stream thread shares.
struct Shared {
    cfg: Arc<Config>,
    engine: Arc<EngineConfig>,
    parser: EventParser,
    meta: Option<Arc<crate::accounts::Accounts>>,
    health: Arc<Health>,
    /// The process is asked to stop (signal).
    shutdown: Arc<AtomicBool>,
    /// A stream thread failed: the others stop too (gracefully).
    sibling_failed: AtomicBool,
    threads: usize,
    /// Stream threads set up and about to join the group.
    set_up: Mutex<usize>,
    set_up_cv: std::sync::Condvar,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed) || self.sibling_failed.load(Ordering::Relaxed)
    }

    /// Waits until every stream thread is set up (its producer initialised, which can
    /// take seconds), so that they join the group together and the first assignment
    /// already spreads partitions over all of them. Returns false when stopping.
    fn all_set_up(&self) -> bool {
        let mut n = lock(&self.set_up);
        *n += 1;
        self.set_up_cv.notify_all();
        while *n < self.threads {
            if self.stopping() {
                return false;
            }
            n = self
                .set_up_cv
                .wait_timeout(n, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// Runs the daemon until `shutdown` is set (then commits and leaves the group) or a
/// fatal error.
///
/// The process runs `kafka.stream_threads` members of the consumer group, as Kafka
/// Streams runs stream threads: each has its own consumer, transactional producer
/// (`<group>-<instance>-<thread>`), changelog reader and partitions, and commits its
/// own transactions, so partitions are fetched, parsed, applied and checkpointed in
/// parallel with no coordination beyond the group protocol. When one fails, the
/// others checkpoint and leave, and the first error is returned.
pub fn run(
    cfg: Arc<Config>,
    shutdown: Arc<AtomicBool>,
    health: Arc<Health>,
) -> Result<DaemonStats, DaemonError> {
    let k = &cfg.kafka;
    let partitions = ensure_topics(k)?;
    let threads = k.stream_threads(partitions);
    info!(
        input = %k.input_topic, partitions, group = %k.group_id, instance = %k.instance(),
        stream_threads = threads, "starting"
    );
    let meta = crate::accounts::load(&cfg, shutdown.clone(), &health)
        .map_err(|e| DaemonError::Fatal(format!("account metadata: {e:#}")))?;
    let parser = EventParser::new(&cfg.input).map_err(|msg| KafkaSetupError::Topic {
        topic: k.input_topic.clone(),
        msg,
    })?;
    let mut engine = EngineConfig::new(&cfg);
    if cfg.engine.known_accounts_only {
        let known = meta.clone().ok_or_else(|| {
            DaemonError::Fatal(
                "engine.known_accounts_only is set but there is no account metadata: set \
                 notify.accounts_file or notify.accounts_topic"
                    .into(),
            )
        })?;
        engine = engine.with_admit(move |id| known.get(id).is_some());
    }
    METRICS
        .accounts_limit
        .set(cfg.engine.max_accounts_per_partition as i64);
    let shared = Arc::new(Shared {
        engine: Arc::new(engine),
        cfg: cfg.clone(),
        parser,
        meta,
        health,
        shutdown,
        sibling_failed: AtomicBool::new(false),
        threads,
        set_up: Mutex::new(0),
        set_up_cv: std::sync::Condvar::new(),
    });
    let (done_tx, done) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    for t in 0..threads {
        let (sh, tx) = (shared.clone(), done_tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("cw-stream-{t}"))
            .spawn(move || {
                let r = info_span!("stream", thread = t).in_scope(|| stream_thread(&sh, t));
                if r.is_err() {
                    sh.sibling_failed.store(true, Ordering::Relaxed);
                }
                let _ = tx.send(r);
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                shared.sibling_failed.store(true, Ordering::Relaxed);
                let _ = done_tx.send(Err(DaemonError::Fatal(format!(
                    "cannot start a stream thread: {e}"
                ))));
            }
        }
    }
    drop(done_tx);
    let mut stats = DaemonStats::default();
    let mut first_error = None;
    // Every thread sends exactly one result; a panicking one drops its sender.
    let mut results = 0;
    while let Ok(r) = done.recv() {
        results += 1;
        match r {
            Ok(s) => stats.add(&s),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    for h in handles {
        let _ = h.join();
    }
    if results < threads && first_error.is_none() {
        first_error = Some(DaemonError::Fatal("a stream thread panicked".into()));
    }
    match first_error {
        Some(e) => Err(e),
        None => {
            info!(
                events = stats.events,
                rejected = stats.rejected,
                alerts = stats.alerts,
                checkpoints = stats.checkpoints,
                "stopped"
            );
            Ok(stats)
        }
    }
}
