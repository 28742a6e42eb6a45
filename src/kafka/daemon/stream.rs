//! One stream thread: its clients, and the poll loop.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use tracing::{error, warn};

use super::output::{transactional_producer, Output, Uncommitted};
use super::rebalance::Ctx;
use super::state::State;
use super::{lock, DaemonError, DaemonStats, Shared};
use crate::config::{GroupProtocol, KafkaConfig};
use crate::kafka::changelog::RestoreContext;
use crate::kafka::client::tuned_config;
use crate::kafka::input::{Batch, In, InputQueue};
use crate::kafka::process::{process, Effects};
use crate::kafka::KafkaSetupError;
use crate::metrics::METRICS;
use crate::server::Phase;
use crate::time::wall_clock_ms;

/// Closes the input queue before the consumer is dropped.
struct CloseInput<'a>(&'a BaseConsumer<Ctx>);

impl Drop for CloseInput<'_> {
    fn drop(&mut self) {
        if let Some(q) = self.0.context().input.get() {
            q.close();
        }
    }
}

/// Group members a stream thread starts again after its static member was replaced
/// (see `stream_thread`) before it gives up.
const MAX_REJOINS: u32 = 10;

/// One stream thread: a consumer-group member with its own partitions, until the
/// process stops or it fails.
///
/// A static member whose session expired while the brokers were unreachable is
/// replaced by librdkafka's own rejoin under the same `group.instance.id`, and the old
/// member's consumer is then fenced (`FENCED_INSTANCE_ID`, fatal for librdkafka; its
/// issue 3437). The thread then aborts its open transaction, forgets its partitions and
/// joins again with a new consumer; the new member restores what it is assigned.
/// Another process with the same instance id is stopped by the producers' fencing
/// (same transactional ids) when it writes; an idle one, which does not, would take
/// the member back and forth with the other process: a member fenced sooner than a
/// session timeout after it joined cannot have been replaced by its own rejoin (that
/// comes only after its session expired), so the thread stops then.
pub(super) fn stream_thread(shared: &Shared, thread: usize) -> Result<DaemonStats, DaemonError> {
    let k = &shared.cfg.kafka;
    let mut state = new_state(shared, thread)?;
    let mut rejoins = 0;
    loop {
        let joined = Instant::now();
        let ctx = Ctx {
            state: Mutex::new(Some(state)),
            input: OnceLock::new(),
            input_topic: k.input_topic.clone(),
            health: shared.health.clone(),
        };
        let consumer = group_consumer(k, thread, ctx)?;
        let input = InputQueue::new(&consumer);
        if consumer.context().input.set(input).is_err() {
            unreachable!("input queue set once");
        }
        // librdkafka cannot shut the consumer down while messages of it are held.
        let close_input = CloseInput(&consumer);
        if rejoins == 0 && !shared.all_set_up() {
            return Ok(DaemonStats::default());
        }
        match member(shared, thread, &consumer) {
            Err(DaemonError::InstanceFenced(why)) if joined.elapsed() < session_timeout(k) => {
                let e = DaemonError::InstanceFenced(format!(
                    "{why} ({:.1} s after joining, sooner than a session timeout: another \
                     process runs with this kafka.instance_id)",
                    joined.elapsed().as_secs_f64()
                ));
                error!(error = %e, "stopping");
                return Err(e);
            }
            Err(DaemonError::InstanceFenced(why)) if rejoins < MAX_REJOINS => {
                rejoins += 1;
                warn!(reason = %why, rejoins, "this group member was replaced under its own group.instance.id; joining again");
                let mut st = lock(&consumer.context().state)
                    .take()
                    .expect("state lives until the end");
                st.forget_partitions()?;
                drop(close_input);
                drop(consumer);
                state = st;
            }
            Err(e) => {
                error!(error = %e, "stopping");
                return Err(e);
            }
            Ok(stats) => return Ok(stats),
        }
    }
}

/// What a stream thread owns across group members: producer, changelog reader,
/// partitions.
fn new_state(shared: &Shared, thread: usize) -> Result<State, DaemonError> {
    let cfg = &shared.cfg;
    let k = &cfg.kafka;
    let health = &shared.health;
    let txn_timeout = Duration::from_millis(k.transaction_timeout.0 as u64);
    let transactional_id = k.transactional_id(thread);
    let producer = transactional_producer(k, &transactional_id, txn_timeout)?;
    // librdkafka pauses a partition's fetching for fetch.queue.backoff.ms (default 1 s)
    // whenever its prefetch queue is full: a consumer that works on every message then
    // sits idle most of the time. A short backoff keeps the queue flowing.
    let restore_consumer: BaseConsumer<RestoreContext> = tuned_config(
        k,
        &format!("restore-{thread}"),
        &[("fetch.queue.backoff.ms", "5")],
    )?
    .set("group.id", format!("{}-restore", k.group_id))
    .set("enable.partition.eof", "true")
    .set("fetch.wait.max.ms", "10")
    .set("max.partition.fetch.bytes", "16777216")
    .set("fetch.max.bytes", "67108864")
    .set("queued.max.messages.kbytes", "262144")
    .set("enable.auto.commit", "false")
    .set("isolation.level", "read_committed")
    .set("auto.offset.reset", "earliest")
    .create_with_context(RestoreContext::default())
    .map_err(KafkaSetupError::Client)?;
    let state = State {
        cfg: cfg.clone(),
        engine: shared.engine.clone(),
        thread,
        out: Output {
            producer,
            transactional_id,
            in_txn: false,
            txn_began: Instant::now(),
            alerts_topic: k.alerts_topic.clone(),
            dead_letter_topic: k.dead_letter_topic.clone(),
            changelog: k.changelog(),
            txn_timeout,
            meta: shared.meta.clone(),
            uncommitted: Uncommitted::default(),
        },
        restore_consumer,
        parts: BTreeMap::new(),
        failed: None,
        stats: DaemonStats::default(),
        health: health.clone(),
        producer_rebuilds: 0,
        fenced_at: None,
    };
    Ok(state)
}

/// One consumer-group member of a stream thread: subscribes, polls and processes until
/// the process stops (then commits and leaves) or it fails.
fn member(
    shared: &Shared,
    thread: usize,
    consumer: &BaseConsumer<Ctx>,
) -> Result<DaemonStats, DaemonError> {
    let k = &shared.cfg.kafka;
    let health = &shared.health;
    consumer.subscribe(&[&k.input_topic])?;
    let interval = Duration::from_millis(k.checkpoint_interval.0 as u64);
    let max_dirty = k.checkpoint_max_dirty;
    let mut last_checkpoint = Instant::now();
    let mut last_idle_check = Instant::now();
    let started = Instant::now();
    let mut batch = Batch::default();
    let mut assigned = false;
    let result = loop {
        if shared.stopping() {
            break Ok(());
        }
        // Rebalances, statistics and errors; messages come in batches below (the
        // consumer's queue only sees one if it was fetched before its partition's
        // queue was attached). Until something is assigned, wait here.
        let wait = if assigned {
            Duration::ZERO
        } else {
            Duration::from_millis(50)
        };
        let polled = consumer.poll(wait);
        let mut guard = lock(&consumer.context().state);
        let st = guard.as_mut().expect("state lives until the end");
        if let Some(e) = st.failed.take() {
            break Err(e);
        }
        let batch_started = Instant::now();
        let mut handled = 0usize;
        match polled {
            Some(Ok(m)) => {
                let m = In {
                    partition: m.partition(),
                    offset: m.offset(),
                    payload: m.payload().unwrap_or_default(),
                    key: m.key(),
                    err: rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                };
                let mut fx = Effects::default();
                if let Some(part) = st.parts.get_mut(&m.partition) {
                    part.handle(&shared.parser, &m, 0, wall_clock_ms(), &mut fx);
                }
                if let Err(e) = st.emit(fx, |_| m).or_else(|e| st.recover(consumer, e)) {
                    break Err(e);
                }
                handled += 1;
            }
            Some(Err(e)) => match consumer.client().fatal_error() {
                Some((code, reason)) => break Err(consumer_fatal(k, thread, code, &reason)),
                None => warn!(error = %e, "consumer error"),
            },
            None => {}
        }
        assigned = !st.parts.is_empty();
        let n = if assigned {
            let input = consumer.context().input.get().expect("set above");
            match input.poll(&mut batch) {
                0 => {
                    input.wait(Duration::from_millis(50));
                    input.poll(&mut batch)
                }
                n => n,
            }
        } else {
            0
        };
        if n > 0 {
            let ok = |m: &In<'_>| {
                if m.err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    return true;
                }
                let code = RDKafkaErrorCode::from(m.err);
                warn!(partition = m.partition, error = %code, "consumer error");
                false
            };
            // One clock reading per batch for the future-timestamp check.
            let fx = process(&shared.parser, &mut st.parts, &batch, wall_clock_ms(), ok);
            handled += fx.consumed as usize;
            // On an error, rolled back: the rest of the batch is stale (cleared below).
            if let Err(e) = st
                .emit(fx, |i| batch.get(i))
                .or_else(|e| st.recover(consumer, e))
            {
                break Err(e);
            }
        }
        batch.clear();
        if handled > 0 {
            let per_message = batch_started.elapsed().as_secs_f64() / handled as f64;
            METRICS.processing_seconds.observe(per_message);
        }
        if last_idle_check.elapsed() >= Duration::from_secs(1) {
            last_idle_check = Instant::now();
            health.beat_thread(thread);
            health.detector(|h| {
                h.problem = None;
                // Members with nothing assigned are ready too, once settled in.
                if h.phase == Phase::Starting && started.elapsed() > Duration::from_secs(15) {
                    h.phase = Phase::Running;
                }
            });
            st.refresh_gauges();
            if let Err(e) = st
                .idle_advance(consumer)
                .or_else(|e| st.recover(consumer, e))
            {
                break Err(e);
            }
        }
        if last_checkpoint.elapsed() >= interval || st.dirty_accounts() >= max_dirty {
            if let Err(e) = st.checkpoint(consumer) {
                break Err(e);
            }
            last_checkpoint = Instant::now();
        }
    };
    if let Err(e) = result {
        // A consumer fenced meanwhile fails the next call made on it (a seek of a
        // rollback, say): the fencing is what to act on.
        return Err(match consumer.client().fatal_error() {
            Some((code @ RDKafkaErrorCode::FencedInstanceId, reason))
                if !matches!(e, DaemonError::InstanceFenced(_)) =>
            {
                consumer_fatal(k, thread, code, &reason)
            }
            _ => e,
        });
    }
    // Graceful stop: commit what was done, then leave the group.
    health.detector(|h| h.phase = Phase::Stopping);
    let deadline = Instant::now() + Duration::from_millis(k.shutdown_timeout.0 as u64);
    {
        let mut guard = lock(&consumer.context().state);
        let st = guard.as_mut().expect("state");
        st.checkpoint(consumer)?;
    }
    if !leaves_on_stop(k) {
        // A static member that stays: no LeaveGroup (librdkafka sends none when a
        // static member closes), so its partitions wait for it to come back.
        let mut guard = lock(&consumer.context().state);
        let st = guard.take().expect("state");
        return match st.failed {
            Some(e) => Err(e),
            None => Ok(st.stats),
        };
    }
    // Unsubscribing sends LeaveGroup, a static member's too (librdkafka only skips it
    // when a static member closes), so the others take the partitions over at once.
    consumer.unsubscribe();
    while Instant::now() < deadline {
        if consumer.poll(Duration::from_millis(100)).is_none()
            && consumer
                .assignment()
                .map(|a| a.count() == 0)
                .unwrap_or(true)
        {
            break;
        }
    }
    let mut guard = lock(&consumer.context().state);
    let st = guard.take().expect("state");
    match st.failed {
        Some(e) => Err(e),
        None => Ok(st.stats),
    }
}

/// A fatal error of the group consumer, said in the terms of the config.
fn consumer_fatal(
    k: &KafkaConfig,
    thread: usize,
    code: RDKafkaErrorCode,
    reason: &str,
) -> DaemonError {
    let id = k.group_instance_id(thread);
    DaemonError::Fatal(match code {
        RDKafkaErrorCode::FencedInstanceId => {
            return DaemonError::InstanceFenced(format!("{id:?}: {reason}"))
        }
        RDKafkaErrorCode::UnreleasedInstanceId => format!(
            "the group still holds a member with group.instance.id {id:?}, a previous \
             incarnation that did not leave (KIP-848 releases it when its session times \
             out: group.consumer.session.timeout.ms on the broker); restart later, or run \
             with kafka.static_membership = false ({reason})"
        ),
        _ => format!("consumer: {reason}"),
    })
}

/// The group session timeout: `session.timeout.ms` of `[kafka.client]` (librdkafka's
/// default 45 s); KIP-848: the broker's `group.consumer.session.timeout.ms`, taken as
/// its default 45 s.
fn session_timeout(k: &KafkaConfig) -> Duration {
    let ms = match k.group_protocol {
        GroupProtocol::Classic => k
            .client
            .get("session.timeout.ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(45_000),
        GroupProtocol::Consumer => 45_000,
    };
    Duration::from_millis(ms)
}

/// Whether a graceful stop leaves the group. Without static membership a closing
/// member always leaves; with it, `kafka.leave_group_on_stop` decides.
fn leaves_on_stop(k: &KafkaConfig) -> bool {
    k.leave_group_on_stop || !k.static_membership
}

/// The librdkafka settings of a stream thread's group consumer, apart from the
/// tuning defaults and `[kafka.client]`: group, protocol, static membership.
fn group_settings(k: &KafkaConfig, thread: usize) -> Vec<(&'static str, String)> {
    let mut s = vec![
        ("group.id", k.group_id.clone()),
        ("enable.auto.commit", "false".into()),
        ("enable.auto.offset.store", "false".into()),
        ("isolation.level", "read_committed".into()),
        ("auto.offset.reset", k.start_from.clone()),
        ("max.poll.interval.ms", "600000".into()),
        ("statistics.interval.ms", "5000".into()),
        ("group.protocol", k.group_protocol.as_str().into()),
    ];
    if k.group_protocol == GroupProtocol::Classic {
        // KIP-848 assigns on the broker (always incrementally, and sticky).
        s.push(("partition.assignment.strategy", "cooperative-sticky".into()));
    }
    if k.static_membership {
        s.push(("group.instance.id", k.group_instance_id(thread)));
    }
    s
}

/// The consumer-group member of stream thread `thread`.
fn group_consumer(
    k: &KafkaConfig,
    thread: usize,
    ctx: Ctx,
) -> Result<BaseConsumer<Ctx>, KafkaSetupError> {
    let mut defaults = vec![("fetch.queue.backoff.ms", "5")];
    if k.group_protocol == GroupProtocol::Classic {
        // Members learn of a rebalance at their next heartbeat: 1 s instead of
        // librdkafka's 3 s makes joins, scale-outs and the cooperative protocol's
        // second round that much quicker. (KIP-848: the broker's setting.)
        defaults.push(("heartbeat.interval.ms", "1000"));
    }
    let mut c = tuned_config(k, &format!("consumer-{thread}"), &defaults)?;
    for (key, value) in group_settings(k, thread) {
        c.set(key, value);
    }
    c.create_with_context(ctx).map_err(KafkaSetupError::Client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn kafka(toml: &str) -> KafkaConfig {
        Config::from_toml_str(toml, []).unwrap().kafka
    }

    fn get<'a>(s: &'a [(&str, String)], key: &str) -> Option<&'a str> {
        s.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_session_timeout_is_the_clients_or_the_default() {
        let k = kafka("[kafka.client]\n\"session.timeout.ms\" = \"6000\"\n");
        assert_eq!(session_timeout(&k), Duration::from_secs(6));
        assert_eq!(session_timeout(&kafka("")), Duration::from_secs(45));
    }

    #[test]
    fn the_notifier_member_is_named_by_instance_apart_from_the_threads() {
        let k = kafka("[kafka]\ninstance_id = \"pod-7\"\n");
        assert_eq!(k.notifier_instance_id(), "pod-7-notify");
        assert!((0..8).all(|t| k.group_instance_id(t) != k.notifier_instance_id()));
    }

    #[test]
    fn static_members_are_named_by_instance_and_thread() {
        let k = kafka("[kafka]\ninstance_id = \"pod-7\"\ngroup_id = \"g\"\n");
        let s = group_settings(&k, 1);
        assert_eq!(get(&s, "group.instance.id"), Some("pod-7-1"));
        assert_eq!(get(&s, "group.protocol"), Some("classic"));
        assert_eq!(
            get(&s, "partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        // The transactional id is as stable, and differs per thread.
        assert_eq!(k.transactional_id(1), "g-pod-7-1");
        assert_ne!(k.transactional_id(0), k.transactional_id(1));
        assert!(leaves_on_stop(&k));
    }

    #[test]
    fn dynamic_members_and_kip_848() {
        let k = kafka(
            "[kafka]\ninstance_id = \"a\"\nstatic_membership = false\ngroup_protocol = \"consumer\"\nleave_group_on_stop = false\n",
        );
        let s = group_settings(&k, 0);
        assert_eq!(get(&s, "group.instance.id"), None);
        assert_eq!(get(&s, "group.protocol"), Some("consumer"));
        assert_eq!(get(&s, "partition.assignment.strategy"), None);
        // A dynamic member always leaves.
        assert!(leaves_on_stop(&k));
        let k = kafka("[kafka]\nleave_group_on_stop = false\n");
        assert!(!leaves_on_stop(&k));
    }

    #[test]
    fn settings_that_clash_with_the_group_options_are_refused() {
        let err = |toml: &str| Config::from_toml_str(toml, []).unwrap_err().to_string();
        let e = err("[kafka]\ngroup_protocol = \"consumer\"\n[kafka.client]\n\"session.timeout.ms\" = \"6000\"\n");
        assert!(
            e.contains("session.timeout.ms") && e.contains("KIP-848"),
            "{e}"
        );
        let e = err("[kafka.client]\n\"group.instance.id\" = \"x\"\n");
        assert!(e.contains("set by churnwatch itself"), "{e}");
        let e = err("[kafka]\ngroup_protocol = \"streams\"\n");
        assert!(e.contains("group_protocol"), "{e}");
        // The classic protocol keeps accepting them.
        Config::from_toml_str("[kafka.client]\n\"session.timeout.ms\" = \"6000\"\n", []).unwrap();
    }

    #[test]
    fn librdkafka_accepts_the_settings() {
        // Creating the client validates the combination (librdkafka refuses e.g. a
        // session timeout with the consumer protocol); no broker is contacted.
        for toml in [
            "",
            "[kafka]\ngroup_protocol = \"consumer\"\n",
            "[kafka]\nstatic_membership = false\n",
        ] {
            let k = kafka(toml);
            let mut c = tuned_config(&k, "t", &[]).unwrap();
            for (key, value) in group_settings(&k, 0) {
                c.set(key, value);
            }
            let r: Result<BaseConsumer, _> = c.create();
            assert!(r.is_ok(), "{toml}: {:?}", r.err());
        }
    }
}
