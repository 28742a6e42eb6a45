//! The router stage (Kafka Streams' `selectKey` + repartition): an alert record read
//! from the alerts topic (keyed by account) gets the account's current metadata, goes
//! through the route tree, and leaves as one [`Routed`] record per receiver on the
//! repartition topic `<notify.group_id>-by-owner`, keyed by receiver and owner. Every
//! record of one (receiver, owner) lands on one partition, so the one instance that
//! owns that partition decides all of that owner's notifications for that receiver.
//!
//! The router keeps no state. It is at-least-once: its alerts offsets are committed
//! after its records are acknowledged, so a crash re-routes a few records, which the
//! grouper and the notification log drop by (receiver, id, status).

use serde::{Deserialize, Serialize};

use super::super::{attach_account, route};
use crate::accounts::AccountLookup;
use crate::config::NotifyConfig;
use crate::record::AlertRecord;

/// Separates the receiver and the owner in a repartition key.
const SEP: char = '\u{1f}';

/// One alert record routed to one receiver for one owner: the value of a record of
/// the repartition topic (written by the router, read by the grouping stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routed {
    pub receiver: String,
    /// The owner's email, or empty for accounts with no owner.
    pub owner: String,
    /// The owner's chat handle, if known.
    #[serde(default)]
    pub owner_chat: Option<String>,
    /// The alert record, with the account's metadata as it was when routed.
    pub alert: AlertRecord,
}

/// The repartition key of a (receiver, owner).
pub fn key(receiver: &str, owner: &str) -> String {
    format!("{receiver}{SEP}{owner}")
}

/// The repartition topic's partition of a (receiver, owner), among `partitions`: Java
/// Kafka's default for a keyed record (murmur2, sign bit cleared), so that any client
/// that produces with the key agrees.
pub fn partition_of(receiver: &str, owner: &str, partitions: i32) -> i32 {
    let h = murmur2(key(receiver, owner).as_bytes()) & 0x7fff_ffff;
    (h % partitions.max(1) as u32) as i32
}

/// Routes one alert record (the bytes of an alerts-topic record): one [`Routed`]
/// per receiver, with the partition it goes to.
pub fn route(
    cfg: &NotifyConfig,
    meta: &dyn AccountLookup,
    payload: &[u8],
    partitions: i32,
) -> Result<Vec<(i32, String, Routed)>, serde_json::Error> {
    let mut alert: AlertRecord = serde_json::from_slice(payload)?;
    attach_account(&mut alert, meta);
    let owner = route::Labels::label(&alert, "owner").unwrap_or_default();
    let owner_chat = route::Labels::label(&alert, "owner_chat");
    Ok(route::receivers(&cfg.route, &alert)
        .into_iter()
        .map(|receiver| {
            let p = partition_of(&receiver, &owner, partitions);
            let k = key(&receiver, &owner);
            (
                p,
                k,
                Routed {
                    receiver,
                    owner: owner.clone(),
                    owner_chat: owner_chat.clone(),
                    alert: alert.clone(),
                },
            )
        })
        .collect())
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`).
fn murmur2(key: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = SEED ^ key.len() as u32;
    let chunks = key.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate().rev() {
            h ^= (*b as u32) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::MetaStore;

    #[test]
    fn murmur2_matches_java_kafka() {
        // Values from Kafka's UtilsTest / DefaultPartitionerTest.
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(
            murmur2(b"a-little-bit-longer-string") as i32,
            -1_486_304_829
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58_897_971
        );
        assert_eq!(murmur2(b"abc") as i32, 479_470_107);
    }

    fn cfg(toml: &str) -> NotifyConfig {
        crate::config::Config::from_toml_str(toml, [])
            .unwrap()
            .notify
    }

    #[test]
    fn every_record_of_an_owner_goes_to_one_partition_per_receiver() {
        let n = cfg("[notify]\n[[notify.receivers]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/x\"\n\
             [[notify.receivers]]\nname = \"crit\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/y\"\n\
             [notify.route]\nreceiver = \"hook\"\n[[notify.route.routes]]\nreceiver = \"crit\"\ncontinue = true\nmatch = { severity = \"critical\" }\n");
        let meta = MetaStore::default();
        let rec = |acct: &str, sev: &str, owner: &str| {
            format!(
                "{{\"id\":\"{acct}/inactive/1\",\"account_id\":\"{acct}\",\"kind\":\"inactive\",\"status\":\"firing\",\"severity\":\"{sev}\",\"event_time\":\"2026-03-05T00:00:00.000Z\",\"emitted_at\":\"2026-03-05T00:00:01.000Z\",\"summary\":\"\",\"evidence\":{{\"last_activity\":\"2026-02-19T00:00:00.000Z\",\"idle_days\":14}},\"account\":{{\"owner_email\":\"{owner}\"}}}}"
            )
        };
        let mut seen = std::collections::BTreeMap::new();
        for i in 0..50 {
            let r = route(
                &n,
                &meta,
                rec(&format!("a{i}"), "warning", "ana@x.io").as_bytes(),
                6,
            )
            .unwrap();
            assert_eq!(r.len(), 1);
            let (p, k, routed) = &r[0];
            assert_eq!(k, &key("hook", "ana@x.io"));
            assert_eq!(routed.owner, "ana@x.io");
            seen.insert(p.to_owned(), ());
        }
        assert_eq!(seen.len(), 1, "one owner, one receiver: one partition");
        let r = route(&n, &meta, rec("b", "critical", "ben@x.io").as_bytes(), 6).unwrap();
        let receivers: Vec<&str> = r.iter().map(|(_, _, x)| x.receiver.as_str()).collect();
        assert!(receivers.contains(&"crit"), "{receivers:?}");
        for (p, _, x) in &r {
            assert_eq!(*p, partition_of(&x.receiver, "ben@x.io", 6));
            assert!((0..6).contains(p));
        }
        // The owner changed in the metadata: the account's next alert goes to the new
        // owner's partition, with the new owner on it.
        let mut moved = MetaStore::default();
        moved.upsert(crate::accounts::AccountMeta {
            account_id: "a7".into(),
            owner_email: Some("ben@x.io".into()),
            ..Default::default()
        });
        let r = route(&n, &moved, rec("a7", "warning", "ana@x.io").as_bytes(), 6).unwrap();
        assert_eq!(r[0].2.owner, "ben@x.io");
        assert_eq!(r[0].0, partition_of("hook", "ben@x.io", 6));
        assert_eq!(
            r[0].2
                .alert
                .account
                .as_ref()
                .unwrap()
                .owner_email
                .as_deref(),
            Some("ben@x.io")
        );
        assert!(route(&n, &meta, b"not json", 6).is_err());
        assert!(route(&n, &meta, b"[1]", 6).is_err());
        let no_kind = rec("c", "warning", "ana@x.io").replace("\"kind\":\"inactive\",", "");
        let e = route(&n, &meta, no_kind.as_bytes(), 6).unwrap_err();
        assert!(e.to_string().contains("missing field `kind`"), "{e}");
    }
}
