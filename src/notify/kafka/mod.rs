//! The notifier on Kafka, in two stages in one consumer group (`notify.group_id`):
//!
//! - the **router** (`router.rs`) reads the alerts topic (read_committed, keyed by
//!   account), attaches each account's current metadata, routes, and writes one record
//!   per receiver to the repartition topic `<group>-by-owner`, keyed by receiver and
//!   owner;
//! - the **grouping stage** (`tasks.rs`) reads the repartition topic: one task per
//!   assigned partition batches, holds digests, repeats and delivers (`deliver.rs`)
//!   everything of the (receiver, owner)s that hash to it, and records it in its
//!   partition of the notification log (`log.rs`), which is read back when the
//!   partition is assigned.
//!
//! So one instance decides each owner's notifications per receiver, however many run.
//! A record's offset is committed only once every notification it is part of was
//! delivered or dead-lettered (the router's: once its records are acknowledged), so a
//! crash or a rebalance loses nothing, and the log keeps anything from going twice.
//!
//! With the actions store of the process ([`run_honouring`]), the tasks honour
//! people's actions on alerts (`super::honour`): a withheld record is counted
//! (`outcome="withheld"`) and its offset released, but not logged as delivered, so a
//! record read again is judged again.

mod log;
mod router;
mod tasks;

pub use router::{partition_of, Routed};
pub use tasks::Outstanding;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use tracing::{info, warn};

use super::deliver::Sender;
use super::group::{Grouper, Timing};
use super::honour::{ActionLookup, NoActions};
use super::render::Notification;
use super::silence::Silences;
use crate::accounts::AccountLookup;
use crate::config::Config;
use crate::kafka::client::{base_config, LogContext};
use crate::metrics::METRICS;
use crate::server::{Health, Loop, Phase};
use crate::time::wall_clock_ms;
use log::{delivery_key, Io, Outcome, Planned};
use tasks::{lock, Ctx, State};

/// Where the notifier reads the time (the wall clock, or a test's).
pub type Clock = Arc<dyn Fn() -> crate::time::Millis + Send + Sync>;

/// The notifier's topics, named after `notify.group_id`.
#[derive(Debug, Clone)]
pub struct Topics {
    /// Alert records, keyed by account (the detector's output).
    pub alerts: String,
    /// Alert records routed, keyed by receiver and owner.
    pub by_owner: String,
    /// The notification log, co-partitioned with `by_owner`.
    pub log: String,
    /// Notifications that failed for good.
    pub dlq: String,
}

impl Topics {
    pub fn of(cfg: &Config) -> Topics {
        let g = &cfg.notify.group_id;
        Topics {
            alerts: cfg.kafka.alerts_topic.clone(),
            by_owner: format!("{g}-by-owner"),
            log: format!("{g}-log"),
            dlq: format!("{g}-dead-letters"),
        }
    }
}

/// What a running notifier owns right now, for whoever watches it (tests, and a
/// person debugging): its partitions of the repartition topic, alerts waiting in its
/// batches (or batches to send again), and alerts held for digests.
#[derive(Debug, Default)]
pub struct Probe {
    state: Mutex<ProbeState>,
}

/// A reading of a [`Probe`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProbeState {
    pub assigned: BTreeSet<i32>,
    pub waiting: usize,
    pub held: usize,
}

impl Probe {
    pub fn get(&self) -> ProbeState {
        lock(&self.state).clone()
    }

    fn set(&self, assigned: BTreeSet<i32>, waiting: usize, held: usize) {
        *lock(&self.state) = ProbeState {
            assigned,
            waiting,
            held,
        };
    }
}

/// Runs the notifier until `shutdown` is set, reporting its state and loop turns to
/// `health`.
pub fn run(
    cfg: Arc<Config>,
    shutdown: Arc<AtomicBool>,
    silences: Arc<Silences>,
    health: Arc<Health>,
) -> anyhow::Result<()> {
    run_with(cfg, shutdown, silences, Arc::new(wall_clock_ms), health)
}

/// `run` with the time taken from `clock` (batch windows, digests, repeats and the
/// notification log's times), so that a test can make a digest hour come.
pub fn run_with_clock(
    cfg: Arc<Config>,
    shutdown: Arc<AtomicBool>,
    silences: Arc<Silences>,
    clock: Clock,
) -> anyhow::Result<()> {
    run_with(cfg, shutdown, silences, clock, Arc::new(Health::default()))
}

/// `run` with the time taken from `clock`.
pub fn run_with(
    cfg: Arc<Config>,
    shutdown: Arc<AtomicBool>,
    silences: Arc<Silences>,
    clock: Clock,
    health: Arc<Health>,
) -> anyhow::Result<()> {
    run_probed(cfg, shutdown, silences, clock, health, Arc::default())
}

/// Group members the notifier starts again in a row (each replaced within a minute of
/// its start) after its static member was replaced (see `run_probed`) before it gives
/// up.
const MAX_REJOINS: u32 = 10;

/// The notifier's group member was replaced under its own `group.instance.id`.
#[derive(Debug, thiserror::Error)]
#[error("the notifier's group member was replaced under group.instance.id {0}")]
struct Replaced(String);

/// `run_with`, reporting what it owns to `probe`.
///
/// A static member whose session expired while the brokers were unreachable is
/// replaced by librdkafka's own rejoin under the same `group.instance.id`, and the old
/// member's consumer is then fenced (`FENCED_INSTANCE_ID`, fatal for librdkafka). The
/// notifier then starts again in-process, as after a restart: a new member is assigned
/// partitions and reads their notification log, so nothing goes out twice.
pub fn run_probed(
    cfg: Arc<Config>,
    shutdown: Arc<AtomicBool>,
    silences: Arc<Silences>,
    clock: Clock,
    health: Arc<Health>,
    probe: Arc<Probe>,
) -> anyhow::Result<()> {
    run_honouring(cfg, shutdown, silences, None, clock, health, probe)
}

/// `run_probed`, honouring the actions on alerts that `actions` knows (the store the
/// process follows; None: no action is honoured).
pub fn run_honouring(
    cfg: Arc<Config>,
    shutdown: Arc<AtomicBool>,
    silences: Arc<Silences>,
    actions: Option<Arc<dyn ActionLookup>>,
    clock: Clock,
    health: Arc<Health>,
    probe: Arc<Probe>,
) -> anyhow::Result<()> {
    let actions: Arc<dyn ActionLookup> = actions.unwrap_or_else(|| Arc::new(NoActions));
    let mut rejoins = 0;
    loop {
        let started = Instant::now();
        let r = member(
            cfg.clone(),
            shutdown.clone(),
            silences.clone(),
            actions.clone(),
            clock.clone(),
            health.clone(),
            probe.clone(),
        );
        match r {
            Err(e) if rejoins < MAX_REJOINS && e.downcast_ref::<Replaced>().is_some() => {
                if started.elapsed() > Duration::from_secs(60) {
                    rejoins = 0;
                }
                rejoins += 1;
                warn!(reason = %e, rejoins, "the notifier's group member was replaced under its own group.instance.id; joining again");
            }
            r => return r,
        }
    }
}

/// One group member of the notifier, until `shutdown` or a failure.
fn member(
    cfg: Arc<Config>,
    shutdown: Arc<AtomicBool>,
    silences: Arc<Silences>,
    actions: Arc<dyn ActionLookup>,
    clock: Clock,
    health: Arc<Health>,
    probe: Arc<Probe>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    health.notifier(|h| h.phase = Phase::Starting);
    health.beat(Loop::Notifier);
    let k = &cfg.kafka;
    let n = &cfg.notify;
    let topics = Topics::of(&cfg);
    // Inside `run`, the detector creates the alerts topic: give it a moment.
    let mut tries = 0;
    let partitions = loop {
        match crate::kafka::topics::ensure_notify_topics(
            k,
            &topics.alerts,
            &topics.by_owner,
            &topics.log,
            &topics.dlq,
        ) {
            Ok(p) => break p,
            Err(e) if tries < 60 && e.to_string().contains("does not exist yet") => {
                tries += 1;
                health.beat(Loop::Notifier);
                if shutdown.load(Ordering::Relaxed) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let meta = crate::accounts::load(&cfg, shutdown.clone(), &health)
        .context("account metadata")?
        .unwrap_or_default();
    let sender = Sender::new(n)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_priority(cfg.priority.clone());
    let producer: Arc<ThreadedProducer<LogContext>> = Arc::new(
        base_config(k, "notify-producer")?
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create_with_context(LogContext)?,
    );
    let restore: BaseConsumer<LogContext> = base_config(k, "notify-log")?
        .set("group.id", format!("{}-log-reader", n.group_id))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create_with_context(LogContext)?;
    let state = State {
        topics: topics.clone(),
        timing: Timing::from_config(n),
        partitions,
        tasks: Default::default(),
        routed: Default::default(),
        producer: producer.clone(),
        restore,
        clock: clock.clone(),
        health: health.clone(),
        probe,
        failed: None,
    };
    let mut member = base_config(k, "notify-consumer")?;
    if k.static_membership && !k.instance_id.is_empty() {
        // As the stream threads (KIP-345): a restarted notifier takes its partitions
        // back at once instead of waiting for its old member's session to expire.
        // Only with kafka.instance_id set: notifiers alone never needed one, and
        // several on one host would share the host name's.
        member.set("group.instance.id", k.notifier_instance_id());
    }
    let consumer: BaseConsumer<Ctx> = member
        .set("group.id", &n.group_id)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        // A wave of deliveries lasts at most notify.delivery_deadline (<= 4 min).
        .set(
            "max.poll.interval.ms",
            (n.delivery_deadline.0 + 60_000).max(300_000).to_string(),
        )
        .create_with_context(Ctx {
            state: Mutex::new(state),
        })?;
    consumer.subscribe(&[&topics.alerts, &topics.by_owner])?;
    info!(alerts = %topics.alerts, by_owner = %topics.by_owner, partitions, "notifier subscribed");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let io = Io {
        clock: &clock,
        producer: &producer,
        sender: &sender,
        rt: &rt,
        log_topic: &topics.log,
        dlq_topic: &topics.dlq,
        health: &health,
    };
    let mut last_commit = Instant::now();
    let mut last_due = Instant::now();
    let mut last_prune = Instant::now();
    health.notifier(|h| h.phase = Phase::Running);
    while !shutdown.load(Ordering::Relaxed) {
        // Rebalance callbacks run inside `poll`: the state is not held across it.
        let polled = consumer.poll(Duration::from_millis(50));
        let mut guard = lock(&consumer.context().state);
        let st = &mut *guard;
        if let Some(e) = st.failed.take() {
            return Err(e);
        }
        match polled {
            Some(Ok(m)) => take(st, &m, &cfg, &*meta)?,
            // Replaced under its own group.instance.id: fatal for librdkafka.
            Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::FencedInstanceId) => {
                return Err(Replaced(format!("{:?}: {e}", k.notifier_instance_id())).into());
            }
            Some(Err(e)) => warn!(error = %e, "notifier consumer error"),
            None => {}
        }
        if last_due.elapsed() >= Duration::from_millis(100) {
            last_due = Instant::now();
            health.beat(Loop::Notifier);
            wave(st, &io, &silences, &*actions)?;
        }
        if last_prune.elapsed() >= Duration::from_secs(3600) {
            last_prune = Instant::now();
            prune(st, &io, n.log_retention.0)?;
        }
        if last_commit.elapsed() >= Duration::from_secs(1) {
            last_commit = Instant::now();
            st.commit(&consumer)?;
        }
    }
    // A graceful stop leaves the group's offsets where the work stopped.
    health.notifier(|h| h.phase = Phase::Stopping);
    lock(&consumer.context().state).commit(&consumer)?;
    if k.static_membership && !k.instance_id.is_empty() && k.leave_group_on_stop {
        // A static member sends no LeaveGroup when it closes; unsubscribing does (the
        // revocation commits again), so the others take the partitions over at once.
        consumer.unsubscribe();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && consumer.assignment().is_ok_and(|a| a.count() > 0) {
            consumer.poll(Duration::from_millis(100));
        }
    }
    producer.flush(Duration::from_secs(30))?;
    info!("notifier stopped");
    Ok(())
}

/// Takes one record: from the alerts topic, the router's; from the repartition topic,
/// its task's.
fn take(
    st: &mut State,
    m: &BorrowedMessage<'_>,
    cfg: &Config,
    meta: &dyn AccountLookup,
) -> anyhow::Result<()> {
    let (p, offset) = (m.partition(), m.offset());
    let payload = m.payload().unwrap_or_default();
    if m.topic() == st.topics.alerts {
        match router::route(&cfg.notify, meta, payload, st.partitions) {
            Ok(routed) => {
                for (to, key, r) in routed {
                    let body = serde_json::to_vec(&r)?;
                    log::send(
                        &st.producer,
                        BaseRecord::to(&st.topics.by_owner)
                            .partition(to)
                            .key(key.as_bytes())
                            .payload(&body),
                    )?;
                }
            }
            Err(e) => {
                warn!(partition = p, offset, error = %e, "not an alert record; skipped")
            }
        }
        st.routed.insert(p, offset + 1);
        return Ok(());
    }
    let Some(task) = st.tasks.get_mut(&p) else {
        warn!(
            partition = p,
            "record of a partition without a task; read again by its owner"
        );
        return Ok(());
    };
    task.position = Some(offset + 1);
    let r: Routed = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            warn!(partition = p, offset, error = %e, "unreadable routed record; skipped");
            return Ok(());
        }
    };
    let id = r.alert.id.clone();
    let status = r.alert.status.as_str();
    let now = (st.clock)();
    let receiver = r.receiver.clone();
    if task
        .grouper
        .add(now, &r.receiver, &r.owner, r.owner_chat, r.alert)
    {
        task.outstanding.open(&receiver, &id, status, p, offset);
    } else {
        METRICS
            .notifications
            .with_label_values(&[&receiver, "skipped"])
            .inc();
    }
    for (receiver, id, status) in task.grouper.take_superseded() {
        task.outstanding.close(&receiver, &id, &status);
    }
    Ok(())
}

/// One wave: every task's batches to send again and its due notifications, silenced
/// alerts and those actions withhold taken out, delivered together; then each outcome
/// recorded in its task.
fn wave(
    st: &mut State,
    io: &Io<'_>,
    silences: &Silences,
    actions: &dyn ActionLookup,
) -> anyhow::Result<()> {
    let now = (st.clock)();
    let mut planned = Vec::new();
    for (&p, task) in st.tasks.iter_mut() {
        for (old, receiver, id, status, at) in task.legacy.drain(..) {
            io.log_delivery(p, &receiver, &id, &status, at, false)?;
            io.tombstone(p, &old)?;
        }
        for note in task.resend.drain(..) {
            planned.push(Planned {
                partition: p,
                note,
                resend: true,
            });
        }
        let due = task.grouper.due_with(now, actions);
        // Withheld: not delivered and not logged (read again, a record is judged again).
        for (receiver, id, status) in task.grouper.take_withheld() {
            METRICS
                .notifications
                .with_label_values(&[&receiver, "withheld"])
                .inc();
            task.outstanding.close(&receiver, &id, &status);
        }
        for mut note in due {
            // Silenced alerts are recorded (log, metrics) but not delivered.
            let (muted, kept): (Vec<_>, Vec<_>) = note
                .alerts
                .drain(..)
                .partition(|a| silences.muting(a, now).is_some());
            note.alerts = kept;
            for a in &muted {
                let (id, status) = (a.id.as_str(), a.status.as_str());
                METRICS
                    .notifications
                    .with_label_values(&[&note.receiver, "silenced"])
                    .inc();
                task.grouper.remember(&note.receiver, id, status, now);
                io.log_delivery(p, &note.receiver, id, status, now, true)?;
                task.outstanding.close(&note.receiver, id, status);
            }
            if !note.alerts.is_empty() {
                planned.push(Planned {
                    partition: p,
                    note,
                    resend: false,
                });
            }
        }
    }
    let outcomes = io.deliver(&planned)?;
    for (w, outcome) in planned.into_iter().zip(outcomes) {
        // Revoked meanwhile (callbacks run in `poll` only, so not yet): skip.
        let Some(task) = st.tasks.get_mut(&w.partition) else {
            continue;
        };
        match outcome {
            Outcome::Delivered => task.grouper.delivered(&w.note, (st.clock)()),
            Outcome::DeadLettered => {}
            // Its write-ahead record stays in the log: it is tried again, as it is.
            Outcome::Deferred if w.resend => {
                task.resend.push(w.note);
                continue;
            }
            // Still outstanding: the offsets stay behind these records.
            Outcome::Deferred => {
                requeue(&mut task.grouper, &w.note, (st.clock)());
                continue;
            }
        }
        for a in &w.note.alerts {
            task.outstanding
                .close(&w.note.receiver, &a.id, a.status.as_str());
        }
    }
    st.report();
    Ok(())
}

/// Forgets deliveries older than `retention`, in memory and in the log.
fn prune(st: &mut State, io: &Io<'_>, retention: i64) -> anyhow::Result<()> {
    let now = (st.clock)();
    let (mut pruned, mut remembered, mut groups) = (0, 0, 0);
    for (&p, task) in st.tasks.iter_mut() {
        let gone = task.grouper.prune(now, retention);
        for (receiver, id, status) in &gone {
            io.tombstone(p, &delivery_key(receiver, id, status))?;
        }
        pruned += gone.len();
        let (s, g) = task.grouper.sizes();
        remembered += s;
        groups += g;
    }
    info!(pruned, remembered, groups, "notification log pruned");
    Ok(())
}

/// Puts a deferred notification's alerts back into their group's next batch.
fn requeue(grouper: &mut Grouper, note: &Notification, now: crate::time::Millis) {
    for a in &note.alerts {
        grouper.add(
            now,
            &note.receiver,
            &note.owner,
            note.owner_chat.clone(),
            a.clone(),
        );
    }
}
