//! A corrupt changelog record on a real broker: the restore stops with an error that
//! names the topic, the partition and the offset of the record (what the daemon logs
//! and exits with), and the intact records before it are not the cause. The corrupt
//! records are the fuzzer's regression cases (`tests/fuzz/corpus/changelog_rejects/`)
//! and a truncation of a real record.

mod common;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use churnwatch::config::Config;
use churnwatch::engine::EngineConfig;
use churnwatch::kafka::changelog::{account_key, restore_partition, RestoreContext};

use common::broker::Broker;

fn corpus_record(name: &str) -> (Vec<u8>, Vec<u8>) {
    let f = std::fs::read(common::repo().join("tests/fuzz/corpus").join(name)).unwrap();
    let nl = f.iter().position(|&b| b == b'\n').unwrap();
    (f[..nl].to_vec(), f[nl + 1..].to_vec())
}

#[test]
fn a_corrupt_record_stops_the_restore_naming_topic_partition_offset() {
    let broker = Broker::start();
    let topic = "cw-fuzz-changelog";
    broker.create_topic(topic, 2);
    let engine = Arc::new(EngineConfig::new(&Config::default()));
    // A record written by the real encoder (the fuzzer's seed).
    let (key, good) = corpus_record("changelog/00.rec");
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        corpus_record("changelog_rejects/onboarding_counter_overflow.rec"),
        corpus_record("changelog_rejects/close_day_overflow.rec"),
        (account_key("acct-cut"), good[..good.len() - 1].to_vec()),
    ];
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .unwrap();
    // Partition 1: a good record at offset 0, then the corrupt ones at 1, 2, 3.
    producer
        .send(BaseRecord::to(topic).partition(1).key(&key).payload(&good))
        .unwrap();
    for (k, v) in &cases {
        producer
            .send(BaseRecord::to(topic).partition(1).key(k).payload(v))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let consumer: BaseConsumer<RestoreContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", "cw-fuzz-restore")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create_with_context(RestoreContext::default())
        .unwrap();
    let err = match restore_partition(
        &consumer,
        topic,
        1,
        engine.clone(),
        Duration::from_secs(60),
        &|| {},
    ) {
        Ok(_) => panic!("a corrupt record restored"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&format!("{topic:?}"))
            && err.contains("partition 1")
            && err.contains("record at offset 1:")
            && err.contains("state record is corrupt"),
        "{err}"
    );
    // Partition 0 (empty) still restores with the same consumer.
    let empty =
        restore_partition(&consumer, topic, 0, engine, Duration::from_secs(60), &|| {}).unwrap();
    assert_eq!(empty.records, 0);
}
