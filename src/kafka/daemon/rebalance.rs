//! The consumer's callbacks (librdkafka calls them from `poll`, on the stream
//! thread): assignment (restore before any input is processed), revocation
//! (checkpoint, then drop), statistics (lag, and when each partition caught up) and
//! errors.

use std::sync::{Arc, Mutex, OnceLock};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, warn};

use super::lock;
use super::state::State;
use crate::kafka::input::InputQueue;
use crate::metrics::METRICS;
use crate::server::{Health, Phase};

pub(super) struct Ctx {
    pub(super) state: Mutex<Option<State>>,
    /// Where assigned partitions' messages go (set once the consumer exists).
    pub(super) input: OnceLock<InputQueue>,
    pub(super) input_topic: String,
    pub(super) health: Arc<Health>,
}

impl ClientContext for Ctx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::kafka::client::log_librdkafka(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        warn!(error = %error, reason, "Kafka consumer error");
        if matches!(error, KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)) {
            self.health
                .detector(|h| h.problem = Some("all brokers are down".into()));
        }
    }

    fn stats(&self, stats: rdkafka::Statistics) {
        let Some(topic) = stats.topics.get(&self.input_topic) else {
            return;
        };
        // librdkafka's own consumer_lag counts from the consumer's committed offset,
        // which stays unknown here (offsets are committed by the producer's
        // transaction): measure from the position the application reached instead.
        for (p, part) in &topic.partitions {
            let end = if part.ls_offset >= 0 {
                part.ls_offset
            } else {
                part.hi_offset
            };
            if *p >= 0 && end >= 0 && part.app_offset >= 0 {
                METRICS
                    .consumer_lag
                    .with_label_values(&[&p.to_string()])
                    .set((end - part.app_offset).max(0));
            }
            // Read to the end: handed everything to the application, or (nothing
            // handed yet) fetched to the end with nothing waiting.
            let at_end = part.app_offset >= end
                || (part.app_offset < 0 && part.next_offset >= end && part.fetchq_cnt == 0);
            if *p >= 0 && part.desired && end >= 0 && at_end {
                self.caught_up(*p, end);
            }
        }
    }
}

impl Ctx {
    /// Logs, once per assignment, that partition `p` (of this stream thread) was read
    /// up to `end`, and when every partition assigned to the process has, so that a
    /// person watching the log knows the backlog is processed.
    fn caught_up(&self, p: i32, end: i64) {
        let owned = lock(&self.state)
            .as_ref()
            .is_some_and(|st| st.parts.contains_key(&p));
        if !owned {
            return;
        }
        let mut first = false;
        let mut all = None;
        self.health.detector(|h| {
            first = h.caught_up.insert(p);
            if first && h.assigned.iter().all(|a| h.caught_up.contains(a)) {
                all = Some(h.assigned.len());
            }
        });
        if first {
            info!(
                partition = p,
                offset = end,
                "partition caught up: its input is processed to the end"
            );
        }
        if let Some(n) = all {
            info!(
                partitions = n,
                "caught up on every assigned partition; following the input live"
            );
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let (Rebalance::Assign(tpl), Some(input)) = (rebalance, self.input.get()) {
            // Before librdkafka starts fetching them.
            for e in tpl.elements() {
                input.attach(e.topic(), e.partition());
            }
        }
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let mut guard = lock(&self.state);
        let Some(st) = guard.as_mut() else { return };
        let revoked = partitions(tpl);
        info!(partitions = ?revoked, "partitions revoked; checkpointing");
        METRICS.rebalances.with_label_values(&["revoke"]).inc();
        // A failed checkpoint here is aborted and the remaining partitions rolled back
        // inside `checkpoint`; the revoked ones restart from the changelog elsewhere.
        if let Err(e) = st.checkpoint(consumer) {
            st.failed.get_or_insert(e);
        }
        for p in revoked {
            st.forget_partition(p);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(_) = rebalance else {
            return;
        };
        let guard = lock(&self.state);
        let Some(st) = guard.as_ref() else { return };
        st.health.detector(|h| {
            // Of the whole process: every stream thread's partitions.
            METRICS.assigned_partitions.set(h.assigned.len() as i64);
            h.phase = Phase::Running;
        });
    }

    /// librdkafka's rebalance, as rdkafka's default does it (pre_rebalance, assign or
    /// unassign, post_rebalance), except that assigned partitions are restored from
    /// the changelog before they are assigned, each with the offset its checkpoint
    /// committed: the input resumes where the state stands, and librdkafka does not
    /// wait on the group's committed offset (see `State::restore_assigned`).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.pre_rebalance(consumer, &Rebalance::Assign(tpl));
                self.restore(consumer, tpl);
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = assigned {
                    self.fail(e.into());
                }
                self.post_rebalance(consumer, &Rebalance::Assign(tpl));
            }
            // A revocation, or a rebalance error: librdkafka then wants the current
            // assignment dropped, as rdkafka's default does.
            other => {
                if other == RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    self.pre_rebalance(consumer, &Rebalance::Revoke(tpl));
                } else {
                    warn!(error = %RDKafkaErrorCode::from(other), "rebalance error");
                }
                let unassigned = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = unassigned {
                    warn!(error = %e, "unassigning the revoked partitions failed");
                }
            }
        }
    }
}

impl Ctx {
    /// Restores the partitions of `tpl` and sets each one's offset to its
    /// checkpoint's (those without one keep the group's, or `auto.offset.reset`).
    fn restore(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let mut guard = lock(&self.state);
        let Some(st) = guard.as_mut() else { return };
        let assigned = partitions(tpl);
        info!(partitions = ?assigned, "partitions assigned; restoring state");
        METRICS.rebalances.with_label_values(&["assign"]).inc();
        st.health.detector(|h| {
            h.restoring.extend(assigned.iter().copied());
            h.assigned.extend(assigned.iter().copied());
        });
        match st.restore_assigned(consumer, &assigned) {
            Ok(resume) => {
                for (p, offset) in resume {
                    if let Err(e) =
                        tpl.set_partition_offset(&self.input_topic, p, Offset::Offset(offset))
                    {
                        st.failed.get_or_insert(e.into());
                    }
                }
            }
            Err(e) => {
                st.failed.get_or_insert(e);
            }
        }
        st.health.detector(|h| {
            for p in &assigned {
                h.restoring.remove(p);
            }
        });
    }

    /// Records a failure for the stream loop to act on.
    fn fail(&self, e: super::DaemonError) {
        if let Some(st) = lock(&self.state).as_mut() {
            st.failed.get_or_insert(e);
        }
    }
}

/// The partitions of a rebalance's list.
fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}
