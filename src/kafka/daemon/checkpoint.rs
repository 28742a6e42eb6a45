//! Checkpoints and rollback. A checkpoint is one transaction: the changelog records
//! of the accounts that changed, each changed partition's record (clocks, next and
//! committed offsets), and the consumer offsets, committed together with the alert
//! records and dead letters sent since the previous one. A failed transaction is
//! aborted and every partition rebuilt from its last checkpoint (restore), its input
//! read again from the committed offset.
//!
//! The decisions (what a partition's record holds, where its input resumes, what a
//! failure calls for) are plain functions, unit-tested below without a broker.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, info_span, warn};

use super::output::transactional_producer;
use super::rebalance::Ctx;
use super::state::{State, MAX_PRODUCER_REBUILDS};
use super::DaemonError;
use crate::engine::{IdlePolicy, IdleWatch};
use crate::kafka::changelog::{account_key, restore_partition, PartitionMeta, META_KEY};
use crate::kafka::process::Part;
use crate::metrics::METRICS;
use crate::time::wall_clock_ms;
use crate::time::Millis;

/// How long an assignment's restore waits for brokers that are down.
const RESTORE_PATIENCE: Duration = Duration::from_secs(600);

/// What a failed step of the pipeline calls for.
#[derive(Debug)]
enum Recovery {
    /// A Kafka error the transaction survives: abort it, roll back.
    Abort(KafkaError),
    /// The producer failed fatally (not fenced): replace it, roll back.
    ReplaceProducer(String),
    /// Stop with this error: fenced, or a producer that keeps failing (a restart
    /// surfaces it).
    Stop(DaemonError),
}

/// The recovery for `err`, after `rebuilds` producers were replaced already;
/// `fenced_lately`: a producer was replaced for being fenced less than a transaction
/// timeout ago.
///
/// A fenced producer is replaced once: the transaction coordinator also fences the
/// producer of a transaction it aborted for outliving `kafka.transaction_timeout`
/// (the process was paused or starved), which a new producer recovers from. Fenced
/// again sooner than a transaction timeout later (no transaction of the new producer
/// can have timed out yet), it is another process with the same transactional id:
/// stop.
fn recovery(err: DaemonError, rebuilds: u32, fenced_lately: bool) -> Recovery {
    match err {
        DaemonError::Kafka(e) => Recovery::Abort(e),
        DaemonError::Fenced(id) if !fenced_lately && rebuilds < MAX_PRODUCER_REBUILDS => {
            Recovery::ReplaceProducer(format!(
                "fenced (transactional id {id:?}): a transaction outlived \
                 kafka.transaction_timeout, or another process has this kafka.instance_id"
            ))
        }
        DaemonError::ProducerFailed(msg) if rebuilds < MAX_PRODUCER_REBUILDS => {
            Recovery::ReplaceProducer(msg)
        }
        DaemonError::ProducerFailed(msg) => Recovery::Stop(DaemonError::Fatal(msg)),
        other => Recovery::Stop(other),
    }
}

/// Whether the consumer still holds partition `p` of `topic`: not when librdkafka
/// lost the assignment (the session expired) or no longer lists it.
fn still_assigned(consumer: &BaseConsumer<Ctx>, topic: &str, p: i32) -> bool {
    !consumer.assignment_lost()
        && consumer
            .assignment()
            .is_ok_and(|a| a.find_partition(topic, p).is_some())
}

/// Where a restored partition's input resumes after a rollback: the checkpoint's
/// committed offset, or (no checkpoint yet) where `kafka.start_from` says.
fn resume_offset(meta: Option<&PartitionMeta>, start_from: &str) -> Offset {
    match meta {
        Some(m) => Offset::Offset(m.commit_offset),
        None if start_from == "latest" => Offset::End,
        None => Offset::Beginning,
    }
}

/// Whether a restored partition (`restored`: its checkpoint's committed offset, None
/// without one) agrees with the offset the group committed for it. A group offset
/// without a checkpoint, or another one, is a transaction not yet readable in the
/// changelog. A checkpoint without a group offset (expired by the broker's offset
/// retention) cannot be helped by waiting.
fn restore_agrees(restored: Option<i64>, group: Offset) -> bool {
    match (restored, group) {
        (Some(r), Offset::Offset(g)) => r == g,
        (None, Offset::Offset(_)) => false,
        (_, _) => true,
    }
}

/// Whether a rollback's restore (`restored`: its checkpoint's committed offset) has
/// reached the last checkpoint known to be committed (`committed`). Later is fine (a
/// commit that reported an error may still have gone through); committed offsets
/// never go back.
fn reaches_checkpoint(restored: Option<i64>, committed: Option<i64>) -> bool {
    match (restored, committed) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(r), Some(c)) => r >= c,
    }
}

/// The checkpoint a rollback's restore must reach: the last one this thread committed
/// (`checkpointed`), or the group's committed offset if that is later (a commit that
/// reported an error but went through).
fn rollback_target(checkpointed: Option<i64>, group: Offset) -> Option<i64> {
    match group {
        Offset::Offset(g) => Some(checkpointed.map_or(g, |c| c.max(g))),
        _ => checkpointed,
    }
}

/// The offset committed for a partition whose next offset to read is `next`: that of
/// the oldest event still waiting for the watermark, which must be read again after a
/// restore.
fn commit_offset(next: i64, min_pending_seq: Option<u64>) -> i64 {
    min_pending_seq.map_or(next, |s| (s as i64).min(next))
}

/// The partition's record for this checkpoint, if it has one: only when something
/// changed (`accounts_changed`: account records are in this transaction), and once
/// an offset was read. Clears the partition's `changed`.
fn partition_record(part: &mut Part, accounts_changed: bool) -> Option<PartitionMeta> {
    if !part.changed && !accounts_changed {
        return None;
    }
    part.changed = false;
    let next = part.next_offset?;
    Some(PartitionMeta {
        shard: part.shard.meta(),
        next_offset: next,
        commit_offset: commit_offset(next, part.shard.min_pending_seq()),
    })
}

impl State {
    /// Builds newly assigned partitions from the changelog; returns, for each one
    /// with a checkpoint, the offset its input resumes from: the checkpoint's
    /// committed offset, so that the position always matches the state (the group's
    /// committed offset is only a check of the restore's completeness).
    ///
    /// The previous owner's last transaction may still be completing: the group's
    /// committed offsets are asked for as stable (read_committed: the coordinator
    /// answers once no transaction holds them pending), but the changelog's commit
    /// marker can land a moment later, and a restore that stops at the last stable
    /// offset before it would miss that transaction's state, and emit its alerts
    /// again. So the committed offsets are read first, and a partition whose
    /// checkpoint is behind them is restored again, for up to
    /// `kafka.transaction_timeout`; after that (offsets reset by an operator, say) it
    /// resumes from its checkpoint with a warning.
    ///
    /// Offsets that stay pending for longer than a transaction can live are held by a
    /// hanging transaction (a transactional offset commit the broker appended but no
    /// coordinator will end, seen after broker restarts): librdkafka's own fetch of
    /// the committed offset would wait for it forever. Past `kafka.transaction_timeout`
    /// twice, the partitions resume from their checkpoints with a warning naming the
    /// remedy. If this thread's own producer left it, its next checkpoint's commit
    /// marker on the group's offsets partition should end it (not yet observed).
    pub(super) fn restore_assigned(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        assigned: &[i32],
    ) -> Result<Vec<(i32, i64)>, DaemonError> {
        let topic = self.cfg.kafka.input_topic.clone();
        let mut tpl = TopicPartitionList::new();
        for &p in assigned {
            tpl.add_partition(&topic, p);
        }
        let wait = self.out.txn_timeout + Duration::from_secs(5);
        let started = Instant::now();
        let committed = loop {
            match consumer.committed_offsets(tpl.clone(), wait) {
                Ok(c) => break Some(c),
                // Brokers restarting or the coordinator moving: wait for them.
                Err(e) if started.elapsed() < 2 * wait => {
                    warn!(error = %e, "committed offsets not available yet; retrying");
                    self.health.beat_thread(self.thread);
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => {
                    warn!(error = %e, partitions = ?assigned, waited_s = started.elapsed().as_secs(),
                        "the group's committed offsets could not be read as stable: brokers \
                         down, or a hanging transaction on the group's offsets (list with \
                         kafka-transactions.sh find-hanging, end with its abort command); \
                         resuming from the changelog's checkpoints");
                    break None;
                }
            }
        };
        let mut resume = Vec::with_capacity(assigned.len());
        for &p in assigned {
            let group = committed
                .as_ref()
                .and_then(|c| c.find_partition(&topic, p))
                .map_or(Offset::Invalid, |e| e.offset());
            let restored = self.restore_until(
                consumer,
                p,
                false,
                "the group's committed offset",
                group,
                |r| restore_agrees(r, group),
            )?;
            if let Some(offset) = restored {
                resume.push((p, offset));
            }
        }
        Ok(resume)
    }

    /// Builds partition `p` from the changelog. With `seek`, also moves the consumer
    /// back to the checkpoint's committed offset (rollback after an aborted
    /// transaction; an assignment sets that offset in its partition list instead, see
    /// `restore_assigned`).
    /// Returns the restored checkpoint's committed offset (None: no checkpoint yet).
    pub(super) fn restore(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        p: i32,
        seek: bool,
    ) -> Result<Option<i64>, DaemonError> {
        let (health, thread) = (self.health.clone(), self.thread);
        let span = info_span!("partition", p);
        let _g = span.enter();
        let r = restore_partition(
            &self.restore_consumer,
            &self.out.changelog,
            p,
            self.engine.clone(),
            RESTORE_PATIENCE,
            &|| health.beat_thread(thread),
        )?;
        self.stats.restored_records += r.records;
        METRICS.restore_seconds.observe(r.elapsed.as_secs_f64());
        METRICS.restore_records.inc_by(r.records);
        info!(
            records = r.records,
            accounts = r.shard.accounts(),
            checkpoint = ?r.meta.as_ref().map(|m| m.commit_offset),
            elapsed_ms = r.elapsed.as_millis() as u64,
            "state restored"
        );
        let (next_offset, watermark) = match &r.meta {
            Some(m) => (Some(m.next_offset), m.shard.watermark),
            None => (None, Millis::MIN),
        };
        let restored = r.meta.as_ref().map(|m| m.commit_offset);
        if seek {
            let offset = resume_offset(r.meta.as_ref(), &self.cfg.kafka.start_from);
            let topic = &self.cfg.kafka.input_topic;
            if let Err(e) = consumer.seek(topic, p, offset, Duration::from_secs(10)) {
                if still_assigned(consumer, topic, p) {
                    return Err(e.into());
                }
                // The group took the partition away meanwhile (a paused process's
                // session expired): its revocation follows; it restarts elsewhere
                // from the changelog.
                info!(error = %e, "partition no longer assigned; dropped from the rollback");
                self.forget_partition(p);
                return Ok(restored);
            }
        }
        let idle = IdleWatch::new(IdlePolicy::new(&self.cfg), wall_clock_ms());
        let mut part = Part::new(r.shard, next_offset, watermark, idle);
        part.checkpointed = restored;
        self.parts.insert(p, part);
        Ok(restored)
    }

    /// Restores partition `p` (see `restore`) again while its checkpoint has not
    /// `reached` the one it must (`target`, from `against`), for up to
    /// `kafka.transaction_timeout`: that transaction's commit markers may still be
    /// being written, and there is nothing to wait on but time. Past that it goes on
    /// from what it read, with a warning. A partition a rollback's seek found taken
    /// away is not waited for. Returns the restored checkpoint's committed offset.
    fn restore_until(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        p: i32,
        seek: bool,
        against: &str,
        target: impl std::fmt::Debug,
        reached: impl Fn(Option<i64>) -> bool,
    ) -> Result<Option<i64>, DaemonError> {
        let deadline = Instant::now() + self.out.txn_timeout;
        let mut tries = 1;
        loop {
            let restored = self.restore(consumer, p, seek)?;
            if reached(restored) || !self.parts.contains_key(&p) {
                return Ok(restored);
            }
            if Instant::now() >= deadline {
                warn!(partition = p, restored = ?restored, target = ?target, against, tries,
                    "the restored checkpoint disagrees with the committed one; resuming from it");
                return Ok(restored);
            }
            info!(partition = p, restored = ?restored, target = ?target, against, tries,
                "the restored checkpoint is behind the committed one (a transaction's commit \
                 markers still being written); restoring again");
            tries += 1;
            self.health.beat_thread(self.thread);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Commits one transaction with everything since the last one. On an abortable
    /// error, aborts and rolls every partition back to its last checkpoint.
    pub(super) fn checkpoint(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), DaemonError> {
        if !self.out.in_txn && !self.parts.values().any(|p| p.changed) {
            return Ok(());
        }
        let started = Instant::now();
        match self.try_checkpoint(consumer) {
            Ok(n) => {
                self.stats.checkpoints += 1;
                METRICS.checkpoints.inc();
                METRICS
                    .checkpoint_seconds
                    .observe(started.elapsed().as_secs_f64());
                METRICS.checkpoint_accounts.observe(n as f64);
                debug!(
                    accounts = n,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "checkpoint committed"
                );
                Ok(())
            }
            Err(e) => self.recover(consumer, e),
        }
    }

    /// After a non-fatal Kafka error anywhere in the pipeline: abort the open
    /// transaction and roll every partition back to its last checkpoint. After a fatal
    /// producer error other than fencing: replace the producer, then roll back. Fencing
    /// and other fatal errors are returned.
    pub(super) fn recover(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        err: DaemonError,
    ) -> Result<(), DaemonError> {
        let fenced = matches!(err, DaemonError::Fenced(_));
        let fenced_lately = self
            .fenced_at
            .is_some_and(|t| t.elapsed() < self.out.txn_timeout);
        match recovery(err, self.producer_rebuilds, fenced_lately) {
            Recovery::Abort(e) => {
                warn!(error = %e, "Kafka error; aborting the transaction and rolling back to the last checkpoint");
                self.stats.aborts += 1;
                METRICS.checkpoint_failures.inc();
                if self.out.in_txn {
                    let may_have_timed_out = self.out.txn_may_have_timed_out();
                    // An abort that fails fatally (e.g. the transaction is in an
                    // invalid state after a broker restart) is a failed producer:
                    // replaced like any other, not the end of the process. So is one
                    // fenced for a transaction old enough to have outlived the
                    // transaction timeout (a broker away that long); fenced younger,
                    // another process took this transactional id: stop.
                    if let Err(e) = self.out.abort() {
                        return match e {
                            failed @ DaemonError::ProducerFailed(_) => {
                                self.recover(consumer, failed)
                            }
                            fenced @ DaemonError::Fenced(_) if may_have_timed_out => {
                                warn!(
                                    "the abort was fenced after the transaction outlived \
                                       kafka.transaction_timeout"
                                );
                                self.recover(consumer, fenced)
                            }
                            other => Err(other),
                        };
                    }
                }
                self.roll_back(consumer)
            }
            Recovery::ReplaceProducer(msg) => {
                self.producer_rebuilds += 1;
                if fenced {
                    self.fenced_at = Some(Instant::now());
                }
                warn!(error = %msg, rebuilds = self.producer_rebuilds, "transactional producer failed; replacing it and rolling back to the last checkpoint");
                self.stats.aborts += 1;
                METRICS.checkpoint_failures.inc();
                let k = &self.cfg.kafka;
                self.out.producer =
                    transactional_producer(k, &self.out.transactional_id, self.out.txn_timeout)?;
                self.out.in_txn = false;
                self.roll_back(consumer)
            }
            Recovery::Stop(e) => Err(e),
        }
    }

    /// Rebuilds every partition from its last checkpoint and re-reads its input from
    /// there.
    ///
    /// The last committed transaction's commit markers may not be in the changelog yet
    /// (the coordinator writes them after answering the commit; after a broker restart
    /// it writes them again, later): a read_committed restore then ends before that
    /// checkpoint, and the input read again from the one before it would emit the
    /// committed transaction's alerts a second time. So a partition is restored again
    /// until it reaches the checkpoint this thread knows was committed, for up to
    /// `kafka.transaction_timeout` (then it resumes from what it read, with a warning).
    fn roll_back(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), DaemonError> {
        // The aborted transaction's records are produced again from the checkpoint.
        self.out.uncommitted.forget();
        let group = self.group_offsets(consumer);
        let topic = &self.cfg.kafka.input_topic;
        let parts: Vec<(i32, Option<i64>)> = self
            .parts
            .iter()
            .map(|(&p, part)| {
                let offset = group
                    .as_ref()
                    .and_then(|g| g.find_partition(topic, p))
                    .map_or(Offset::Invalid, |e| e.offset());
                (p, rollback_target(part.checkpointed, offset))
            })
            .collect();
        self.parts.clear();
        for (p, committed) in parts {
            self.restore_until(
                consumer,
                p,
                true,
                "the last committed checkpoint",
                committed,
                |r| reaches_checkpoint(r, committed),
            )?;
        }
        Ok(())
    }

    /// The group's committed offsets of this thread's partitions, as stable (the
    /// coordinator answers once no transaction holds them pending), if the brokers
    /// answer soon: a commit that reported an error may have gone through.
    fn group_offsets(&self, consumer: &BaseConsumer<Ctx>) -> Option<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for &p in self.parts.keys() {
            tpl.add_partition(&self.cfg.kafka.input_topic, p);
        }
        let wait = self.out.txn_timeout.min(Duration::from_secs(10));
        match consumer.committed_offsets(tpl, wait) {
            Ok(c) => Some(c),
            Err(e) => {
                debug!(error = %e, "committed offsets not available for the rollback's check");
                None
            }
        }
    }

    fn try_checkpoint(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<usize, DaemonError> {
        self.out.begin()?;
        let mut offsets = TopicPartitionList::new();
        let mut checkpointed = Vec::new();
        let mut accounts = 0;
        let changelog = self.out.changelog.clone();
        for (&p, part) in self.parts.iter_mut() {
            let dirty = part.shard.take_dirty();
            accounts += dirty.len();
            for slot in &dirty {
                let key = account_key(part.shard.account_id(*slot));
                let value = part.shard.encode_account(*slot);
                self.out.send(
                    BaseRecord::to(&changelog)
                        .partition(p)
                        .key(key.as_slice())
                        .payload(value.as_slice()),
                )?;
            }
            let Some(meta) = partition_record(part, !dirty.is_empty()) else {
                continue;
            };
            self.out.send(
                BaseRecord::to(&changelog)
                    .partition(p)
                    .key(META_KEY)
                    .payload(meta.encode().as_slice()),
            )?;
            offsets.add_partition_offset(
                &self.cfg.kafka.input_topic,
                p,
                Offset::Offset(meta.commit_offset),
            )?;
            checkpointed.push((p, meta.commit_offset));
        }
        if offsets.count() > 0 {
            let group = consumer
                .group_metadata()
                .ok_or_else(|| DaemonError::Fatal("no consumer group metadata".into()))?;
            self.out.send_offsets(offsets, group)?;
        }
        self.out.commit()?;
        self.out.uncommitted.count_committed(&mut self.stats);
        for (p, offset) in checkpointed {
            if let Some(part) = self.parts.get_mut(&p) {
                part.checkpointed = Some(offset);
            }
        }
        Ok(accounts)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::engine::{Alert, EngineConfig, Shard};
    use crate::kafka::changelog::Rebuild;
    use crate::kafka::input::In;
    use crate::kafka::process::{Effects, Out};
    use crate::source::event::EventParser;
    use crate::time::{format_rfc3339, DAY};

    const T0: Millis = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    const MINUTE: Millis = 60_000;
    const HOUR: Millis = 60 * MINUTE;

    fn engine() -> Arc<EngineConfig> {
        Arc::new(EngineConfig::new(&Config::default()))
    }

    fn part(shard: Shard, next: Option<i64>, watermark: Millis) -> Part {
        let idle = IdleWatch::new(IdlePolicy::new(&Config::default()), 0);
        Part::new(shard, next, watermark, idle)
    }

    fn line(account: &str, event: &str, ts: Millis) -> String {
        format!(
            r#"{{"account_id":"{account}","event":"{event}","ts":"{}","user_id":"u1"}}"#,
            format_rfc3339(ts)
        )
    }

    /// The input of one partition, in offset order: `a` never activates (its 30-day
    /// deadline fires on day 30), `b` activates, goes quiet (`inactive` fires on day
    /// 18) and comes back on day 25 (and fires again on day 39); `c` sends every 5
    /// minutes, slightly out of order, so that some events always wait for the
    /// watermark.
    fn input() -> Vec<String> {
        let mut evs = vec![
            (T0 + 10 * HOUR, line("a", "account.created", T0 + 10 * HOUR)),
            (T0 + DAY, line("a", "page.viewed", T0 + DAY)),
            (T0 + 2 * DAY, line("a", "page.viewed", T0 + 2 * DAY)),
            (
                T0 + 25 * DAY + 12 * HOUR,
                line("b", "page.viewed", T0 + 25 * DAY + 12 * HOUR),
            ),
        ];
        for d in 0..5 {
            let t = T0 + d * DAY + 12 * HOUR;
            evs.push((t, line("b", "page.viewed", t)));
        }
        for i in 0..(40 * DAY / (5 * MINUTE)) {
            let t = T0 + i * 5 * MINUTE + 1;
            evs.push((t, line("c", "page.viewed", t)));
            // Right behind it, an event of `d` later than the lateness bound: applied
            // at once, so that a checkpoint's re-read input holds events applied
            // before it.
            evs.push((t + 1, line("d", "page.viewed", t - 30 * MINUTE)));
        }
        evs.sort();
        let mut lines: Vec<String> = evs.into_iter().map(|(_, l)| l).collect();
        for i in (0..lines.len() - 1).step_by(3) {
            lines.swap(i, i + 1);
        }
        lines
    }

    /// Reads `input[from..to]` into `part` as offsets `from..to`; returns the alerts
    /// and the effects' counts.
    fn read(part: &mut Part, input: &[String], from: usize, to: usize) -> (Vec<Alert>, Effects) {
        let parser = EventParser::new(&Config::default().input).unwrap();
        let mut fx = Effects::default();
        for (i, l) in input.iter().enumerate().take(to).skip(from) {
            let m = In {
                partition: 0,
                offset: i as i64,
                payload: l.as_bytes(),
                key: None,
                err: rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
            };
            part.handle(&parser, &m, 0, T0 + 400 * DAY, &mut fx);
        }
        let alerts = std::mem::take(&mut fx.out)
            .into_iter()
            .map(|o| match o {
                Out::Alert(a) => a,
                Out::Reject(_, r) => panic!("rejected: {r}"),
            })
            .collect();
        (alerts, fx)
    }

    /// The changelog records a checkpoint of `part` writes, as `try_checkpoint` does.
    fn checkpoint(part: &mut Part) -> Vec<(Vec<u8>, Vec<u8>)> {
        let dirty = part.shard.take_dirty();
        let mut records: Vec<_> = dirty
            .iter()
            .map(|&s| {
                let key = account_key(part.shard.account_id(s));
                (key, part.shard.encode_account(s))
            })
            .collect();
        if let Some(meta) = partition_record(part, !dirty.is_empty()) {
            records.push((META_KEY.to_vec(), meta.encode()));
        }
        records
    }

    /// Rebuilds the partition from the changelog, as `restore` does.
    fn restore(changelog: &[(Vec<u8>, Vec<u8>)]) -> (Part, PartitionMeta) {
        let mut rebuild = Rebuild::new(engine());
        for (k, v) in changelog {
            rebuild.apply(k, v).unwrap();
        }
        let (shard, meta) = rebuild.finish();
        let meta = meta.expect("a partition record");
        (
            part(shard, Some(meta.next_offset), meta.shard.watermark),
            meta,
        )
    }

    fn finish(part: &mut Part) -> Vec<Alert> {
        part.shard.finish(None);
        part.shard.drain_alerts().collect()
    }

    #[test]
    fn a_rollback_to_the_checkpoint_reproduces_the_same_alerts() {
        let input = input();
        let n = input.len();
        let mut straight = part(Shard::new(engine()), None, Millis::MIN);
        let (mut expected, _) = read(&mut straight, &input, 0, n);
        expected.extend(finish(&mut straight));
        let kinds: Vec<String> = expected.iter().map(|a| a.id()).collect();
        assert_eq!(
            kinds,
            [
                "b/inactive/2026-01-05",
                "b/inactive/2026-01-05",
                "a/not_activated/2026-01-01+30d",
                "b/inactive/2026-01-26",
            ],
            "the scenario's alerts"
        );

        // Checkpoint around day 20 (after `inactive` fired, and just after a late
        // event), then the transaction holding days 20-32 aborts.
        let mut k = n / 2;
        while !input[k - 1].contains(r#""d""#) {
            k += 1;
        }
        let m = n * 32 / 40;
        let mut p = part(Shard::new(engine()), None, Millis::MIN);
        let (mut got, _) = read(&mut p, &input, 0, k);
        assert_eq!(got.len(), 1, "{got:?}");
        let changelog = checkpoint(&mut p);
        let (lost, _) = read(&mut p, &input, k, m);
        assert_eq!(lost.len(), 2, "the aborted transaction held alerts");

        let (mut p, meta) = restore(&changelog);
        assert_eq!(meta.next_offset, k as i64);
        assert!(
            meta.commit_offset < meta.next_offset,
            "events waiting for the watermark are read again: {meta:?}"
        );
        let from = resume_offset(Some(&meta), "earliest");
        assert_eq!(from, Offset::Offset(meta.commit_offset));
        let (again, fx) = read(&mut p, &input, meta.commit_offset as usize, n);
        assert!(fx.replay_skipped > 0, "events applied before are skipped");
        assert_eq!(
            fx.replay_skipped + fx.events,
            (n - meta.commit_offset as usize) as u64
        );
        got.extend(again);
        got.extend(finish(&mut p));
        assert_eq!(got, expected);
    }

    #[test]
    fn a_restore_agrees_when_the_group_committed_its_checkpoint() {
        assert!(restore_agrees(Some(7), Offset::Offset(7)));
        assert!(restore_agrees(None, Offset::Invalid));
        // The group is ahead: a transaction whose changelog records are not readable
        // yet.
        assert!(!restore_agrees(Some(7), Offset::Offset(9)));
        assert!(!restore_agrees(None, Offset::Offset(9)));
        // Offsets expired by the broker: nothing to wait for.
        assert!(restore_agrees(Some(7), Offset::Invalid));
    }

    #[test]
    fn a_rollback_restores_again_until_it_reaches_the_last_committed_checkpoint() {
        // Nothing committed yet: any restore will do.
        assert!(reaches_checkpoint(None, None));
        assert!(reaches_checkpoint(Some(3), None));
        assert!(reaches_checkpoint(Some(7), Some(7)));
        // A commit that reported an error but went through.
        assert!(reaches_checkpoint(Some(9), Some(7)));
        // The committed transaction's markers are not in the changelog yet: its
        // alerts would be emitted again from the checkpoint before it.
        assert!(!reaches_checkpoint(Some(5), Some(7)));
        assert!(!reaches_checkpoint(None, Some(7)));
        // The target: the later of this thread's last commit and the group's.
        assert_eq!(rollback_target(Some(7), Offset::Invalid), Some(7));
        assert_eq!(rollback_target(None, Offset::Invalid), None);
        assert_eq!(rollback_target(Some(7), Offset::Offset(9)), Some(9));
        assert_eq!(rollback_target(None, Offset::Offset(9)), Some(9));
        assert_eq!(rollback_target(Some(9), Offset::Offset(7)), Some(9));
    }

    #[test]
    fn the_committed_offset_is_the_oldest_event_waiting() {
        assert_eq!(commit_offset(10, None), 10);
        assert_eq!(commit_offset(10, Some(7)), 7);
        assert_eq!(commit_offset(10, Some(12)), 10);
    }

    #[test]
    fn a_partition_record_only_when_something_changed_and_an_offset_was_read() {
        let mut p = part(Shard::new(engine()), None, Millis::MIN);
        assert_eq!(partition_record(&mut p, false), None);
        // Changed, but no offset read yet: nothing to record, and no longer changed.
        p.changed = true;
        assert_eq!(partition_record(&mut p, false), None);
        assert!(!p.changed);
        let input = input();
        read(&mut p, &input, 0, 100);
        assert!(p.changed);
        let meta = partition_record(&mut p, false).expect("changed");
        assert_eq!(meta.next_offset, 100);
        assert_eq!(
            meta.commit_offset,
            p.shard.min_pending_seq().unwrap() as i64
        );
        assert_eq!(meta.shard, p.shard.meta());
        assert!(!p.changed);
        assert_eq!(partition_record(&mut p, false), None);
        // Account records in the transaction bring the partition's along.
        assert!(partition_record(&mut p, true).is_some());
    }

    #[test]
    fn input_resumes_from_the_checkpoint_or_the_configured_start() {
        let meta = PartitionMeta {
            shard: Shard::new(engine()).meta(),
            next_offset: 42,
            commit_offset: 40,
        };
        assert_eq!(resume_offset(Some(&meta), "latest"), Offset::Offset(40));
        assert_eq!(resume_offset(None, "latest"), Offset::End);
        assert_eq!(resume_offset(None, "earliest"), Offset::Beginning);
    }

    #[test]
    fn failures_abort_replace_the_producer_or_stop() {
        let kafka = DaemonError::Kafka(KafkaError::Canceled);
        assert!(matches!(
            recovery(kafka, 0, false),
            Recovery::Abort(KafkaError::Canceled)
        ));
        let failed = || DaemonError::ProducerFailed("coordinator aborted".into());
        assert!(matches!(
            recovery(failed(), MAX_PRODUCER_REBUILDS - 1, false),
            Recovery::ReplaceProducer(m) if m == "coordinator aborted"
        ));
        assert!(matches!(
            recovery(failed(), MAX_PRODUCER_REBUILDS, false),
            Recovery::Stop(DaemonError::Fatal(m)) if m == "coordinator aborted"
        ));
        let fenced = || DaemonError::Fenced("t".into());
        assert!(matches!(
            recovery(fenced(), 0, false),
            Recovery::ReplaceProducer(m) if m.contains("transaction_timeout")
        ));
        assert!(matches!(
            recovery(fenced(), 1, true),
            Recovery::Stop(DaemonError::Fenced(_))
        ));
        assert!(matches!(
            recovery(fenced(), MAX_PRODUCER_REBUILDS, false),
            Recovery::Stop(DaemonError::Fenced(_))
        ));
    }
}
