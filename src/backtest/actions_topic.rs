//! The actions topic (`<notify.group_id>-actions`) read once to its end, for the
//! backtest's feedback (`backtest --actions-topic`) and for `churnwatch actions
//! export`, which writes it as the file `backtest --actions` reads: one JSON line per
//! alert, its value as the topic holds it (the latest per key; deleted alerts left
//! out), in alert id order. A record that cannot be read, or whose actions are not
//! about its own alert, is skipped and counted, named by its place, never its bytes.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use rdkafka::message::Message;

use crate::actions::record::AlertActions;
use crate::config::Config;
use crate::kafka::compacted;

/// What reading the topic found.
#[derive(Debug, Default)]
pub struct Read {
    /// The latest value of every alert, by alert id.
    pub values: BTreeMap<String, AlertActions>,
    /// Records read (values and tombstones).
    pub records: u64,
    /// Records skipped as unreadable.
    pub skipped: u64,
}

/// The topic of `cfg` (`<notify.group_id>-actions`), or `topic` when given.
pub fn topic_of(cfg: &Config, topic: Option<&str>) -> String {
    match topic {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => crate::actions::follow::topic_name(&cfg.notify.group_id),
    }
}

/// Reads `topic` from the beginning to its end as of now, on `cfg.kafka`'s brokers.
pub fn read(cfg: &Config, topic: &str) -> anyhow::Result<Read> {
    let consumer = compacted::reader(
        &cfg.kafka,
        "actions-export",
        format!("{}-actions-export", cfg.notify.group_id),
        false,
    )?;
    let parts = compacted::partition_count(&consumer, topic)?
        .with_context(|| format!("topic {topic} does not exist on {}", cfg.kafka.brokers))?;
    let ends = compacted::assign_from_beginning(&consumer, topic, 0..parts)?;
    let mut out = Read::default();
    compacted::read_to_end(
        &consumer,
        topic,
        &ends,
        || {},
        |m| {
            out.records += 1;
            let key = m.key().and_then(|k| std::str::from_utf8(k).ok());
            match (key, m.payload()) {
                (Some(k), None) => {
                    out.values.remove(k);
                }
                (Some(k), Some(p)) => match serde_json::from_slice::<AlertActions>(p) {
                    // Merged, as the instances' stores do: an earlier value's action
                    // that a concurrent write left out still counts.
                    Ok(v) if v.is_consistent() && v.alert_id == k => {
                        let merged = match out.values.remove(k) {
                            Some(held) => held.merge(&v),
                            None => v,
                        };
                        out.values.insert(merged.alert_id.clone(), merged);
                    }
                    _ => {
                        out.skipped += 1;
                        tracing::warn!(
                            partition = m.partition(),
                            offset = m.offset(),
                            "unreadable action record skipped"
                        );
                    }
                },
                (None, _) => {
                    out.skipped += 1;
                    tracing::warn!(
                        partition = m.partition(),
                        offset = m.offset(),
                        "action record without a readable key skipped"
                    );
                }
            }
        },
    )?;
    Ok(out)
}

/// Writes `values` as JSON lines to `w`; returns the number of lines.
pub fn write_export(
    values: &BTreeMap<String, AlertActions>,
    w: &mut impl Write,
) -> std::io::Result<usize> {
    for v in values.values() {
        serde_json::to_writer(&mut *w, v)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(values.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::record::{ActionKind, ActionRecord};

    #[test]
    fn an_export_reads_back_as_the_same_feedback() {
        let v = |alert: &str, action| {
            AlertActions::with(
                None,
                ActionRecord {
                    alert_id: alert.into(),
                    account_id: "acme".into(),
                    action,
                    by: "ana@example.com".into(),
                    at_ms: 1,
                    reason: String::new(),
                    until_ms: None,
                    source: Default::default(),
                    origin: String::new(),
                },
            )
        };
        let values: BTreeMap<String, AlertActions> = [
            v("acme/inactive/1", ActionKind::Acknowledge),
            v("acme/activity_drop/2", ActionKind::Reopen),
        ]
        .into_iter()
        .map(|a| (a.alert_id.clone(), a))
        .collect();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("export.ndjson");
        let mut f = std::fs::File::create(&p).unwrap();
        assert_eq!(write_export(&values, &mut f).unwrap(), 2);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text
            .lines()
            .next()
            .unwrap()
            .contains("acme/activity_drop/2"));
        let fb = super::super::feedback::Feedback::read(&p).unwrap();
        assert_eq!((fb.alerts(), fb.actions), (2, 2));
        assert!(fb.get("acme/inactive/1").unwrap().1.acknowledged);
        let cfg = Config::default();
        assert_eq!(
            topic_of(&cfg, None),
            format!("{}-actions", cfg.notify.group_id)
        );
        assert_eq!(topic_of(&cfg, Some("x")), "x");
    }
}
