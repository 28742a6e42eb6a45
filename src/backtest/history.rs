//! The event history of a backtest, parsed once and kept in memory in a compact form
//! (24 bytes an event: account and event names interned, the user id kept as the
//! engine's hash of it), so that every run of a sweep replays the same events without
//! reading or parsing the file again, and without looking a string up again: a run
//! resolves each account and event name once and hands the engine slots and classes
//! (`Shard::push_resolved`).

use std::collections::BTreeMap;

use hashbrown::HashMap;
use std::io;
use std::sync::Arc;

use crate::asof::AsOf;
use crate::config::Config;
use crate::engine::account::user_hash;
use crate::engine::{Alert, EngineConfig, Shard, ShardStats};
use crate::source::event::{EventParser, RawEvent, RejectReason};
use crate::source::file::{is_blank, Line, LineReader};
use crate::time::Millis;

/// No engine slot for the account yet (or the engine refused it).
const NO_SLOT: u32 = u32::MAX;

/// One accepted event, its strings replaced by indices into the history's tables.
#[derive(Debug, Clone, Copy)]
pub struct Ev {
    pub ts: Millis,
    pub account: u32,
    pub name: u32,
    /// `user_hash` of the user id; 0 for none.
    user: u64,
}

/// Interns strings as dense indices.
#[derive(Debug, Default)]
struct Interner {
    index: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.into());
        self.index.insert(s.into(), i);
        i
    }
}

/// The parsed history: the accepted events up to the end of the window, in arrival
/// order, and what reading it found.
#[derive(Debug)]
pub struct History {
    /// Accepted events with `ts <= until` (all of them without `--until`), in file order.
    pub events: Vec<Ev>,
    accounts: Interner,
    names: Interner,
    /// Where the evaluation ends (and how many accepted events lie after it).
    pub as_of: AsOf,
    pub lines: u64,
    pub blank_lines: u64,
    pub rejects: BTreeMap<&'static str, u64>,
    /// Accounts with an applied event (some accounts may only have events after
    /// `--until`; they are known, for `--outcomes`, but do not count).
    pub active_accounts: usize,
    applied: Vec<bool>,
}

impl History {
    /// Reads and parses every line of `input` with `cfg`'s field locations. Events after
    /// `until` are counted and left out. `on_progress` gets the line count now and then.
    pub fn read(
        cfg: &Config,
        input: &mut LineReader,
        until: Option<Millis>,
        on_progress: impl FnMut(u64),
    ) -> io::Result<History> {
        Self::read_at(cfg, input, until, None, on_progress)
    }

    /// [`Self::read`] with `now` standing for the clock in the future-timestamp check
    /// (as `replay --now`); `None`: the wall clock.
    pub fn read_at(
        cfg: &Config,
        input: &mut LineReader,
        until: Option<Millis>,
        now: Option<Millis>,
        mut on_progress: impl FnMut(u64),
    ) -> io::Result<History> {
        let parser = EventParser::new(&cfg.input).map_err(io::Error::other)?;
        let mut h = History {
            events: Vec::new(),
            accounts: Interner::default(),
            names: Interner::default(),
            as_of: AsOf::new(until),
            lines: 0,
            blank_lines: 0,
            rejects: BTreeMap::new(),
            active_accounts: 0,
            applied: Vec::new(),
        };
        let mut buf = Vec::with_capacity(4096);
        input.set_max_line(cfg.input.max_event_bytes);
        let clock = || now.unwrap_or_else(crate::time::wall_clock_ms);
        let mut at = clock();
        while let Some(line) = input.next_line(&mut buf)? {
            h.lines += 1;
            if h.lines & 0xffff == 0 {
                on_progress(h.lines);
                at = clock();
            }
            let parsed = match line {
                Line::TooLong { .. } => Err(RejectReason::Oversized {
                    size: usize::MAX,
                    limit: cfg.input.max_event_bytes,
                }),
                Line::Whole if is_blank(&buf) => {
                    h.blank_lines += 1;
                    continue;
                }
                Line::Whole => parser.parse_at(&buf, at),
            };
            match parsed {
                Ok(ev) => h.add(&ev),
                Err(reason) => *h.rejects.entry(reason.as_str()).or_default() += 1,
            }
        }
        h.active_accounts = h.applied.iter().filter(|&&a| a).count();
        Ok(h)
    }

    fn add(&mut self, ev: &RawEvent<'_>) {
        let account = self.accounts.intern(&ev.account_id);
        if account as usize == self.applied.len() {
            self.applied.push(false);
        }
        if !self.as_of.admits(ev.ts) {
            return;
        }
        self.applied[account as usize] = true;
        let user = ev.user_id.as_deref().map_or(0, user_hash);
        self.events.push(Ev {
            ts: ev.ts,
            account,
            name: self.names.intern(&ev.event),
            user,
        });
    }

    /// The account's id.
    pub fn account_id(&self, account: u32) -> &str {
        &self.accounts.names[account as usize]
    }

    /// The account's index, if it has an accepted event (applied or not).
    pub fn account_index(&self, id: &str) -> Option<u32> {
        self.accounts.index.get(id).copied()
    }

    /// Number of accounts with an accepted event, applied or not.
    pub fn known_accounts(&self) -> usize {
        self.accounts.names.len()
    }

    /// Whether the account has an applied event (it counts in the window).
    pub fn is_active(&self, account: u32) -> bool {
        self.applied[account as usize]
    }

    /// An event's name.
    pub fn name(&self, name: u32) -> &str {
        &self.names.names[name as usize]
    }

    /// The history window: the oldest applied event time, and `--until` or else the
    /// newest applied event time. `None` when no event was applied.
    pub fn window(&self) -> Option<(Millis, Millis)> {
        let start = self.events.iter().map(|e| e.ts).min()?;
        let newest = self.events.iter().map(|e| e.ts).max()?;
        Some((start, self.as_of.until().unwrap_or(newest)))
    }

    /// Replays the history through one engine shard with `cfg`, exactly as `replay`
    /// does over the same file with the same `--until`; calls `on_alert` for each alert
    /// transition in the order they arise. Each account id and event name is resolved
    /// once per run (the names' meaning depends on `cfg`), the events then go to the
    /// engine as slots and classes.
    pub fn run(&self, cfg: &Config, mut on_alert: impl FnMut(Alert)) -> ShardStats {
        let mut shard = Shard::new(Arc::new(EngineConfig::new(cfg)));
        let classes: Vec<_> = self.names.names.iter().map(|n| shard.class_of(n)).collect();
        let mut slots = vec![NO_SLOT; self.known_accounts()];
        for e in &self.events {
            let mut slot = slots[e.account as usize];
            if slot == NO_SLOT {
                match shard.account_slot(self.account_id(e.account)) {
                    Ok(s) => {
                        slots[e.account as usize] = s;
                        slot = s;
                    }
                    // A refusal (account cap) is a reject in replay too: nothing
                    // applied. It is asked again at the account's next event, as
                    // replay would.
                    Err(_) => continue,
                }
            }
            shard.push_resolved(e.ts, slot, classes[e.name as usize], e.user);
            if shard.alerts_ready() > 0 {
                shard.drain_alerts().for_each(&mut on_alert);
            }
        }
        self.as_of.finish(&mut shard);
        shard.drain_alerts().for_each(&mut on_alert);
        shard.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, until: Option<Millis>) -> History {
        let mut r = LineReader::from_reader(Box::new(io::Cursor::new(text.as_bytes().to_vec())));
        History::read(&Config::default(), &mut r, until, |_| {}).unwrap()
    }

    #[test]
    fn interns_and_cuts_at_until() {
        let h = read(
            concat!(
                r#"{"account_id":"a","event":"x","ts":1000,"user_id":"u"}"#,
                "\n\n",
                r#"{"account_id":"b","event":"x","ts":3000}"#,
                "\nnot json\n",
                r#"{"account_id":"a","event":"y","ts":2000,"user_id":""}"#,
                "\n"
            ),
            Some(2000),
        );
        assert_eq!(h.lines, 5);
        assert_eq!(h.blank_lines, 1);
        assert_eq!(h.rejects.get("invalid_json"), Some(&1));
        assert_eq!(h.events.len(), 2);
        assert_eq!(h.as_of.not_applied, 1);
        assert_eq!(h.known_accounts(), 2);
        assert_eq!(h.active_accounts, 1);
        assert!(!h.is_active(h.account_index("b").unwrap()));
        assert_eq!(h.window(), Some((1000, 2000)));
        assert_eq!(h.events[0].user, user_hash("u"));
        assert_eq!(h.events[1].user, 0);
        assert_eq!(h.name(h.events[1].name), "y");
    }
}
