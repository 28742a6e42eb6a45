//! librdkafka client settings shared by every client: brokers, pass-through settings
//! from `[kafka.client]`, and secrets read from the environment (never logged).

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};

use super::KafkaSetupError;
use crate::config::KafkaConfig;

/// Settings common to all clients of this instance; `role` goes into `client.id`.
pub fn base_config(k: &KafkaConfig, role: &str) -> Result<ClientConfig, KafkaSetupError> {
    tuned_config(k, role, &[])
}

/// Like `base_config`, with tuning defaults that `[kafka.client]` may override.
pub fn tuned_config(
    k: &KafkaConfig,
    role: &str,
    defaults: &[(&str, &str)],
) -> Result<ClientConfig, KafkaSetupError> {
    let mut c = ClientConfig::new();
    for (key, value) in defaults {
        c.set(*key, *value);
    }
    c.set("bootstrap.servers", &k.brokers);
    c.set("client.id", format!("churnwatch-{}-{role}", k.instance()));
    for (key, value) in &k.client {
        c.set(key, value);
    }
    for (key, var) in &k.client_env {
        let value = std::env::var(var).map_err(|_| KafkaSetupError::MissingSecret {
            key: key.clone(),
            var: var.clone(),
        })?;
        c.set(key, value);
    }
    c.set_log_level(RDKafkaLogLevel::Warning);
    Ok(c)
}

/// Waits until every record of `producer` is acknowledged. rust-rdkafka's own flush
/// polls in 100 ms slices, which a `ThreadedProducer`'s thread starves.
pub fn drain<C: rdkafka::producer::ProducerContext>(
    producer: &rdkafka::producer::ThreadedProducer<C>,
    timeout: std::time::Duration,
) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::producer::Producer;
    // SAFETY: the pointer comes from a live client owned by `producer`; rd_kafka_flush
    // is thread-safe and only waits for the producer's queue.
    let code = unsafe {
        rdkafka::bindings::rd_kafka_flush(
            producer.client().native_ptr(),
            timeout.as_millis() as i32,
        )
    };
    if code == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(())
    } else {
        Err(rdkafka::error::KafkaError::Flush(code.into()))
    }
}

/// Routes librdkafka's own log lines into `tracing`. Connection failures and the like
/// are transient and retried by librdkafka, so they log as warnings; errors that need
/// an operator surface through the daemon's own error handling.
pub fn log_librdkafka(level: RDKafkaLogLevel, fac: &str, msg: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::warn!(target: "librdkafka", facility = fac, "{msg}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility = fac, "{msg}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", facility = fac, "{msg}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility = fac, "{msg}"),
    }
}

/// Context for plain clients: logs through `tracing`, transport errors as warnings.
#[derive(Default)]
pub struct LogContext;

impl rdkafka::ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "Kafka client error");
    }
}

impl rdkafka::consumer::ConsumerContext for LogContext {}

impl rdkafka::producer::ProducerContext for LogContext {
    type DeliveryOpaque = ();
    /// A record librdkafka gave up on (after its own retries; the producers that use
    /// this context are idempotent) is lost: said loudly, without its payload.
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            use rdkafka::message::Message;
            tracing::error!(topic = m.topic(), partition = m.partition(), error = %e, "a record was not delivered to Kafka");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn pass_through_and_secrets_from_env() {
        let mut k = Config::default().kafka;
        k.instance_id = "i-1".into();
        k.client
            .insert("security.protocol".into(), "SASL_SSL".into());
        k.client_env
            .insert("sasl.password".into(), "CW_TEST_SECRET_PRESENT".into());
        std::env::set_var("CW_TEST_SECRET_PRESENT", "s3cret");
        let c = base_config(&k, "consumer").unwrap();
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("sasl.password"), Some("s3cret"));
        assert_eq!(c.get("client.id"), Some("churnwatch-i-1-consumer"));
        k.client_env
            .insert("sasl.password".into(), "CW_TEST_SECRET_ABSENT".into());
        let e = base_config(&k, "consumer").unwrap_err().to_string();
        assert!(
            e.contains("CW_TEST_SECRET_ABSENT") && !e.contains("s3cret"),
            "{e}"
        );
    }
}
