//! Feeding the view without Kafka: a shard's state (every account, as its changelog
//! records would carry it, and its clock) and alert records, applied exactly as the
//! follower applies the topics' records. `replay_into` runs an event file through one
//! shard (what `replay` does) and feeds both: the embedded `serve --events`, and the
//! reference the tests compare a Kafka-fed view with.

use std::path::Path;
use std::sync::Arc;

use super::{Source, View};
use crate::config::Config;
use crate::engine::{EngineConfig, Shard};
use crate::kafka::changelog::{account_key, PartitionMeta, META_KEY};
use crate::sink::record::to_json_line;
use crate::source::event::EventParser;
use crate::source::file::{is_blank, Line, LineReader};
use crate::time::Millis;

/// Applies every account of `shard` and its clock as changelog partition `partition`.
pub fn feed_shard(view: &View, shard: &Shard, partition: i32) {
    let mut w = view.write();
    for slot in 0..shard.accounts() as u32 {
        let key = account_key(shard.account_id(slot));
        w.apply(
            Source::Changelog,
            partition,
            -1,
            Some(&key),
            Some(&shard.encode_account(slot)),
        );
    }
    let meta = PartitionMeta {
        shard: shard.meta(),
        next_offset: 0,
        commit_offset: 0,
    };
    w.apply(
        Source::Changelog,
        partition,
        -1,
        Some(META_KEY),
        Some(&meta.encode()),
    );
}

/// Applies alert records (JSON, as published).
pub fn feed_alerts<'a>(view: &View, records: impl IntoIterator<Item = &'a [u8]>) {
    let mut w = view.write();
    for r in records {
        w.apply(Source::Alerts, 0, -1, None, Some(r));
    }
}

/// What `replay_into` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fed {
    pub lines: u64,
    pub rejected: u64,
    pub alerts: u64,
    pub accounts: usize,
}

/// Runs the events of `input` through one shard under `cfg` (up to `until`, as
/// `replay --until`), feeding each alert record (stamped `emitted_at`) and then the
/// final state to `view`.
pub fn replay_into(
    cfg: &Config,
    input: &Path,
    until: Option<Millis>,
    emitted_at: Millis,
    view: &View,
) -> std::io::Result<Fed> {
    let parser = EventParser::new(&cfg.input).map_err(std::io::Error::other)?;
    let mut shard = Shard::new(Arc::new(EngineConfig::new(cfg)));
    let mut reader = LineReader::open(input)?.with_max_line(cfg.input.max_event_bytes);
    let mut as_of = crate::asof::AsOf::new(until);
    let mut buf = Vec::with_capacity(4096);
    let mut fed = Fed::default();
    let mut pending: Vec<String> = Vec::new();
    // The clock of the future-timestamp check, as `replay` reads it.
    let now = crate::time::wall_clock_ms();
    let flush = |shard: &mut Shard, pending: &mut Vec<String>, fed: &mut Fed| {
        pending.extend(shard.drain_alerts().map(|a| to_json_line(&a, emitted_at)));
        if pending.len() >= 4096 {
            fed.alerts += pending.len() as u64;
            feed_alerts(view, pending.iter().map(String::as_bytes));
            pending.clear();
        }
    };
    while let Some(line) = reader.next_line(&mut buf)? {
        fed.lines += 1;
        if matches!(line, Line::Whole) && is_blank(&buf) {
            continue;
        }
        let pushed = match line {
            Line::TooLong { .. } => Err(()),
            Line::Whole => match parser.parse_at(&buf, now) {
                Ok(ev) if as_of.admits(ev.ts) => shard.push(&ev).map_err(|_| ()),
                Ok(_) => Ok(()),
                Err(_) => Err(()),
            },
        };
        if pushed.is_err() {
            fed.rejected += 1;
        }
        if shard.alerts_ready() > 0 {
            flush(&mut shard, &mut pending, &mut fed);
        }
    }
    as_of.finish(&mut shard);
    flush(&mut shard, &mut pending, &mut fed);
    fed.alerts += pending.len() as u64;
    feed_alerts(view, pending.iter().map(String::as_bytes));
    feed_shard(view, &shard, 0);
    fed.accounts = shard.accounts();
    Ok(fed)
}
