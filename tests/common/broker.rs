//! A real Apache Kafka broker for the integration tests (KRaft, single node, loopback),
//! started by `scripts/kafka.sh` and stopped when the test process exits.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::repo;

/// One record read back: key, value, headers.
pub type Record = (Option<Vec<u8>>, Vec<u8>, BTreeMap<String, String>);

/// A broker started by scripts/kafka.sh.
pub struct Broker {
    pub bootstrap: String,
    pub dir: String,
}

impl Broker {
    pub fn start() -> Broker {
        let out = Command::new(repo().join("scripts/kafka.sh"))
            .args(["start", "--watch-pid", &std::process::id().to_string()])
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/kafka.sh");
        assert!(out.status.success(), "kafka broker failed to start");
        let env: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Broker {
            bootstrap: env["KAFKA_BOOTSTRAP"].clone(),
            dir: env["KAFKA_DIR"].clone(),
        }
    }

    /// The broker shared by the tests of this process.
    pub fn shared() -> &'static Broker {
        static B: OnceLock<Broker> = OnceLock::new();
        B.get_or_init(Broker::start)
    }

    /// Runs `churnwatch produce --input <input> <args>` against this broker.
    pub fn produce(&self, input: &std::path::Path, args: &[&str]) -> std::process::Output {
        Command::new(super::bin())
            .args(["produce", "--input", input.to_str().unwrap()])
            .args(args)
            .env("CHURNWATCH_KAFKA__BROKERS", &self.bootstrap)
            .output()
            .expect("run churnwatch produce")
    }

    /// As [`Broker::produce`]; panics with its stderr if it fails.
    pub fn produce_ok(&self, input: &std::path::Path, args: &[&str]) {
        let out = self.produce(input, args);
        assert!(
            out.status.success(),
            "produce {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn restart(&self) {
        let out = Command::new(repo().join("scripts/kafka.sh"))
            .args(["restart-broker", "--dir", &self.dir])
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "broker restart failed");
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let res = rt
            .block_on(admin.create_topics(
                &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            ))
            .unwrap();
        for r in res {
            r.unwrap_or_else(|(t, e)| panic!("create {t}: {e}"));
        }
    }

    /// Reads a whole topic (read_committed) up to its end.
    pub fn read_all(&self, topic: &str) -> Vec<Record> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", format!("reader-{topic}"))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "50")
            .create()
            .unwrap();
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let parts = match md.topics().first() {
            Some(t) if t.error().is_none() => t.partitions().len() as i32,
            _ => return Vec::new(), // not created yet
        };
        let mut tpl = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for p in 0..parts {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
            // A partition without a leader yet (e.g. a broker just restarted or a
            // topic just created) reads as "nothing yet": callers await their count.
            let Some((_, high)) =
                (0..50).find_map(|_| c.fetch_watermarks(topic, p, Duration::from_secs(5)).ok())
            else {
                return Vec::new();
            };
            ends.insert(p, high);
        }
        c.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        // Done when every partition's position reached its end offset (transaction
        // markers included).
        loop {
            let pos = c.position().unwrap();
            let done = (0..parts).all(|p| {
                let at = pos
                    .find_partition(topic, p)
                    .and_then(|e| e.offset().to_raw())
                    .unwrap_or(-1);
                at >= ends[&p]
            });
            if done {
                break;
            }
            assert!(Instant::now() < deadline, "reading {topic} did not finish");
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (
                                    x.key.to_string(),
                                    String::from_utf8_lossy(x.value.unwrap_or_default())
                                        .to_string(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((
                    m.key().map(<[u8]>::to_vec),
                    m.payload().unwrap_or_default().to_vec(),
                    headers,
                ));
            }
        }
        out
    }

    /// Committed record count of a topic (read_committed), without keeping them.
    pub fn count(&self, topic: &str) -> usize {
        self.read_all(topic).len()
    }
}
