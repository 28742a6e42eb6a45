//! Replay: NDJSON events in, alerts out, through one engine shard. The same engine the
//! Kafka daemon runs; `finish(until)` stands for the end of the stream.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::engine::Admit;
use crate::engine::{Alert, AlertKind, EngineConfig, Shard, ShardStats, Status};
use crate::source::event::{EventParser, RejectReason};
use crate::source::file::{is_blank, Line, LineReader};
use crate::time::{wall_clock_ms, Millis};

/// What a replay did, for the summary on stderr and for tests.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub lines: u64,
    pub blank_lines: u64,
    pub events: u64,
    pub rejects: BTreeMap<&'static str, u64>,
    pub alerts: BTreeMap<(AlertKind, Status), u64>,
    pub engine: ShardStats,
    pub accounts: usize,
    pub elapsed_secs: f64,
    /// Newest event time seen.
    pub newest: Option<Millis>,
}

impl Summary {
    pub fn rejected(&self) -> u64 {
        self.rejects.values().sum()
    }

    pub fn alerts_total(&self) -> u64 {
        self.alerts.values().sum()
    }

    pub fn events_per_sec(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            self.lines as f64 / self.elapsed_secs
        } else {
            0.0
        }
    }

    /// The human summary printed after a replay.
    pub fn render(&self, source: &str) -> String {
        let mut s = format!(
            "replayed {} lines from {source} in {:.2} s ({:.0} lines/s)\n",
            self.lines,
            self.elapsed_secs,
            self.events_per_sec()
        );
        s.push_str(&format!(
            "  events: {} accepted, {} rejected, {} blank; {} accounts\n",
            self.events,
            self.rejected(),
            self.blank_lines,
            self.accounts
        ));
        s.push_str(&format!(
            "  engine: {} late, {} outside a lifecycle, {} after --until (not applied)\n",
            self.engine.late_events, self.engine.outside_lifecycle, self.engine.beyond_until
        ));
        if !self.rejects.is_empty() {
            let parts: Vec<String> = self
                .rejects
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            s.push_str(&format!("  rejects by reason: {}\n", parts.join(", ")));
        }
        s.push_str(&format!("  alerts: {}", self.alerts_total()));
        for kind in AlertKind::ALL {
            let f = self
                .alerts
                .get(&(kind, Status::Firing))
                .copied()
                .unwrap_or(0);
            let r = self
                .alerts
                .get(&(kind, Status::Resolved))
                .copied()
                .unwrap_or(0);
            s.push_str(&format!("; {} {f} firing / {r} resolved", kind.as_str()));
        }
        s.push('\n');
        s
    }
}

/// How a replay runs, beyond the config.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// End of the evaluation horizon (`--until`); default: the newest event time.
    pub until: Option<Millis>,
    /// Stands for the wall clock in the `future_timestamp` check (`--now`), so that a
    /// replay over data that is not in the past is reproducible; default: the clock.
    pub now: Option<Millis>,
    /// The accounts to track when `engine.known_accounts_only` is set (those with
    /// account metadata).
    pub known: Option<Admit>,
}

/// Lines between two readings of the wall clock (for the `future_timestamp` check).
const CLOCK_EVERY: u64 = 1 << 16;

/// Reads every line of `input`, feeding accepted events to one shard; calls `on_alert`
/// for each alert transition (in processing order) and `on_reject` for each rejected
/// line (line number, reason, raw bytes, the line's length: more than the raw bytes
/// when only a prefix of a line too long to hold was kept). At the end, runs everything
/// due by `opts.until`.
pub fn replay(
    cfg: &Config,
    input: &mut LineReader,
    opts: &ReplayOptions,
    mut on_alert: impl FnMut(Alert) -> io::Result<()>,
    mut on_reject: impl FnMut(u64, &RejectReason, &[u8], u64) -> io::Result<()>,
    mut on_progress: impl FnMut(u64),
) -> io::Result<Summary> {
    let started = Instant::now();
    let parser = EventParser::new(&cfg.input).map_err(io::Error::other)?;
    let mut engine = EngineConfig::new(cfg);
    if cfg.engine.known_accounts_only {
        engine.admit = Some(opts.known.clone().ok_or_else(|| {
            io::Error::other(
                "engine.known_accounts_only is set but no account metadata was given \
                 (replay --accounts F)",
            )
        })?);
    }
    let mut shard = Shard::new(Arc::new(engine));
    input.set_max_line(cfg.input.max_event_bytes);
    let mut as_of = crate::asof::AsOf::new(opts.until);
    let mut summary = Summary::default();
    let mut buf = Vec::with_capacity(4096);
    let mut flush = |shard: &mut Shard, summary: &mut Summary| -> io::Result<()> {
        for a in shard.drain_alerts() {
            *summary.alerts.entry((a.kind, a.status)).or_default() += 1;
            on_alert(a)?;
        }
        Ok(())
    };
    let mut now = opts.now.unwrap_or_else(wall_clock_ms);
    while let Some(line) = input.next_line(&mut buf)? {
        summary.lines += 1;
        if summary.lines % CLOCK_EVERY == 0 {
            on_progress(summary.lines);
            if opts.now.is_none() {
                now = wall_clock_ms();
            }
        }
        let len = match line {
            Line::Whole => buf.len() as u64,
            Line::TooLong { len } => len,
        };
        let parsed = match line {
            Line::TooLong { len } => Err(RejectReason::Oversized {
                size: usize::try_from(len).unwrap_or(usize::MAX),
                limit: cfg.input.max_event_bytes,
            }),
            Line::Whole if is_blank(&buf) => {
                summary.blank_lines += 1;
                continue;
            }
            Line::Whole => parser.parse_at(&buf, now),
        };
        // Events after --until (as of) are accepted and counted, not applied.
        let applied = parsed.and_then(|ev| {
            if as_of.admits(ev.ts) {
                shard.push(&ev).map(|()| true)
            } else {
                Ok(false)
            }
        });
        match applied {
            Ok(applied) => {
                summary.events += 1;
                if !applied {
                    continue;
                }
                if shard.alerts_ready() > 0 {
                    flush(&mut shard, &mut summary)?;
                }
            }
            Err(reason) => {
                *summary.rejects.entry(reason.as_str()).or_default() += 1;
                on_reject(input.line_no, &reason, &buf, len)?;
            }
        }
    }
    summary.newest = (shard.newest() != Millis::MIN).then_some(shard.newest());
    as_of.finish(&mut shard);
    flush(&mut shard, &mut summary)?;
    summary.engine = shard.stats.clone();
    summary.accounts = shard.accounts();
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(summary)
}
