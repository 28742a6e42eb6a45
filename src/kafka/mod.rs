//! The Kafka side: `churnwatch run` (consumer group, changelog-backed state,
//! exactly-once checkpoints) and `churnwatch produce` (backfill).

pub mod changelog;
pub mod client;
pub mod compacted;
pub mod daemon;
pub mod input;
mod process;
pub mod produce;
pub mod topics;

/// Kafka set-up and run-time failures, each saying what to check.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("environment variable {var} (for librdkafka setting {key}) is not set")]
    MissingSecret { key: String, var: String },
    #[error("cannot create Kafka client: {0}")]
    Client(rdkafka::error::KafkaError),
    #[error("input topic {topic:?} does not exist (or the brokers at {brokers} are unreachable): {detail}")]
    NoInputTopic {
        topic: String,
        brokers: String,
        detail: String,
    },
    #[error("topic {topic:?}: {msg}")]
    Topic { topic: String, msg: String },
    #[error("reading changelog {topic:?} partition {partition}: {msg}")]
    Restore {
        topic: String,
        partition: i32,
        msg: String,
    },
}
