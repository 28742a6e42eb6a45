//! The soak's steady load: a generated stream's lines produced to the input topic at
//! an even rate over the run, keyed by account (idempotent producer, so a broker
//! restart neither loses nor repeats a line), then one end event per partition.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

#[derive(Default)]
pub struct Counts {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub done: AtomicBool,
}

struct Ctx(Arc<Counts>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            eprintln!("soak load: a delivery failed: {e}");
            self.0.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Produces `lines` to `topic` evenly over `over`, then `ends[p]` to partition `p`
/// of `topic` for each, and flushes.
pub fn start(
    bootstrap: &str,
    topic: &str,
    lines: Vec<String>,
    ends: Vec<String>,
    over: Duration,
) -> (Arc<Counts>, JoinHandle<()>) {
    let counts = Arc::new(Counts::default());
    let producer: ThreadedProducer<Ctx> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        // Across a broker restart: retried (in order, once) rather than failed.
        .set("message.timeout.ms", "600000")
        .create_with_context(Ctx(counts.clone()))
        .expect("load producer");
    let topic = topic.to_string();
    let c = counts.clone();
    let handle = std::thread::spawn(move || {
        let start = Instant::now();
        let n = lines.len().max(1) as f64;
        for (i, line) in lines.iter().enumerate() {
            let due = start + over.mul_f64(i as f64 / n);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let key = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["account_id"].as_str().map(str::to_string));
            let mut rec = BaseRecord::to(&topic).payload(line.as_str());
            if let Some(k) = &key {
                rec = rec.key(k.as_str());
            }
            send(&producer, rec);
            c.sent.fetch_add(1, Ordering::Relaxed);
        }
        for (p, line) in ends.iter().enumerate() {
            let key = format!("zz-end-{p}");
            send(
                &producer,
                BaseRecord::to(&topic)
                    .partition(p as i32)
                    .key(key.as_str())
                    .payload(line.as_str()),
            );
            c.sent.fetch_add(1, Ordering::Relaxed);
        }
        producer
            .flush(Duration::from_secs(600))
            .expect("flush the load");
        c.done.store(true, Ordering::SeqCst);
    });
    (counts, handle)
}

fn send(p: &ThreadedProducer<Ctx>, mut rec: BaseRecord<'_, str, str>) {
    loop {
        match p.send(rec) {
            Ok(()) => return,
            Err((_, r)) => {
                rec = r;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
