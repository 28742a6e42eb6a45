//! The event history of a backtest, parsed once and kept in memory in a compact form
//! (24 bytes an event: account and event names interned, the user id kept as the
//! engine's hash of it), so that every run of a sweep replays the same events without
//! reading or parsing the file again, and without looking a string up again: a run
//! resolves each account and event name once and hands the engine slots and classes
//! (`Shard::push_resolved`). Reading is spread over several threads (`parse`); the
//! parsed batches are merged here in file order.

use std::collections::BTreeMap;

use std::io;
use std::sync::Arc;

use super::order::{Order, OrderKey};
use super::parse::{self, Interner, Parsed};
use crate::asof::AsOf;
use crate::config::Config;
use crate::engine::{Alert, EngineConfig, Shard, ShardStats};
use crate::source::file::LineReader;
use crate::time::Millis;

/// No index yet: no engine slot for the account (or the engine refused it), or a
/// worker's entry not looked up in the history's tables.
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

/// One parsing worker's tables of ids and names, and where each entry is in the
/// history's.
#[derive(Default)]
struct WorkerTables {
    account_names: Vec<Box<str>>,
    accounts: Vec<u32>,
    name_names: Vec<Box<str>>,
    names: Vec<u32>,
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
        on_progress: impl FnMut(u64),
    ) -> io::Result<History> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::read_with(cfg, input, until, now, threads, on_progress)
    }

    /// [`Self::read_at`] with `threads` threads parsing (and this one reading): the
    /// same history whatever the number.
    pub fn read_with(
        cfg: &Config,
        input: &mut LineReader,
        until: Option<Millis>,
        now: Option<Millis>,
        threads: usize,
        on_progress: impl FnMut(u64),
    ) -> io::Result<History> {
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
        // Per worker: its tables, and their indices in the history's (NO_SLOT: not
        // looked up yet).
        let mut tables: Vec<WorkerTables> = Vec::new();
        h.lines = parse::run(cfg, input, now, threads, on_progress, |p| {
            if tables.len() <= p.worker {
                tables.resize_with(p.worker + 1, WorkerTables::default);
            }
            h.merge(&mut tables[p.worker], p);
        })?;
        h.active_accounts = h.applied.iter().filter(|&&a| a).count();
        Ok(h)
    }

    /// Adds a parsed batch, the next in file order, as if its lines were read here.
    fn merge(&mut self, t: &mut WorkerTables, p: Parsed) {
        t.account_names.extend(p.new_accounts);
        t.accounts.resize(t.account_names.len(), NO_SLOT);
        t.name_names.extend(p.new_names);
        t.names.resize(t.name_names.len(), NO_SLOT);
        self.blank_lines += p.blank_lines;
        for (reason, n) in p.rejects {
            *self.rejects.entry(reason).or_default() += n;
        }
        self.events.reserve(p.events.len());
        for e in p.events {
            let mut account = t.accounts[e.account as usize];
            if account == NO_SLOT {
                account = self.accounts.intern(&t.account_names[e.account as usize]);
                t.accounts[e.account as usize] = account;
            }
            if account as usize == self.applied.len() {
                self.applied.push(false);
            }
            if !self.as_of.admits(e.ts) {
                continue;
            }
            self.applied[account as usize] = true;
            let mut name = t.names[e.name as usize];
            if name == NO_SLOT {
                name = self.names.intern(&t.name_names[e.name as usize]);
                t.names[e.name as usize] = name;
            }
            self.events.push(Ev {
                ts: e.ts,
                account,
                name,
                user: e.user,
            });
        }
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
    /// transition in the order they arise. (A sweep works the order out once for all
    /// its runs: [`Self::run_ordered`].)
    pub fn run(&self, cfg: &Config, on_alert: impl FnMut(Alert)) -> ShardStats {
        self.run_ordered(&Order::new(self, OrderKey::of(cfg)), cfg, on_alert)
    }

    /// [`Self::run`] with the order the events apply in already worked out for `cfg`
    /// (its `OrderKey`). Each account id and event name is resolved once per run (the
    /// names' meaning depends on `cfg`); the events then go to the engine as slots and
    /// classes, in that order, and the engine does all the rules' work.
    pub fn run_ordered(
        &self,
        order: &Order,
        cfg: &Config,
        mut on_alert: impl FnMut(Alert),
    ) -> ShardStats {
        assert_eq!(order.key, OrderKey::of(cfg), "the order of these settings");
        let mut shard = Shard::new(Arc::new(EngineConfig::new(cfg)));
        let classes: Vec<_> = self.names.names.iter().map(|n| shard.class_of(n)).collect();
        let mut slots = vec![NO_SLOT; self.known_accounts()];
        for &a in &order.admitted {
            slots[a as usize] = shard
                .account_slot(self.account_id(a))
                .expect("the order takes on the accounts the engine takes on");
        }
        let mut late = order.late.iter().peekable();
        for (pos, e) in order.events.iter().enumerate() {
            let (t, is_late) = match late.peek() {
                Some(&&(p, w)) if p as usize == pos => {
                    late.next();
                    (w, true)
                }
                _ => (e.ts, false),
            };
            let class = classes[e.name as usize];
            shard.apply_in_order(t, e.ts, slots[e.account as usize], class, e.user, is_late);
            if shard.alerts_ready() > 0 {
                shard.drain_alerts().for_each(&mut on_alert);
            }
        }
        shard.stats.beyond_until += order.beyond_until;
        self.as_of.finish(&mut shard);
        shard.drain_alerts().for_each(&mut on_alert);
        shard.stats
    }

    /// [`Self::run`] through the engine's own reorder buffer (`Shard::push_resolved`),
    /// the way `replay` drives it: the reference the ordered runs are tested against.
    pub fn run_buffered(&self, cfg: &Config, mut on_alert: impl FnMut(Alert)) -> ShardStats {
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
    use crate::engine::account::user_hash;

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

    /// The history read by several threads is the one a single loop over the lines
    /// builds: same events in file order, ids first seen in the same order, same counts.
    #[test]
    fn several_threads_read_what_one_loop_reads() {
        use crate::gen::{generate, GenOptions};
        use crate::source::event::EventParser;
        let mut text = Vec::new();
        let opts = GenOptions {
            accounts: 80,
            days: 60,
            seed: 5,
            bad_line_rate: 0.01,
            ..GenOptions::default()
        };
        generate(&opts, &mut text).unwrap();
        // Blank lines and a line over the limit, mid-file.
        let mid = text.len() / 2
            + text[text.len() / 2..]
                .iter()
                .position(|&b| b == b'\n')
                .unwrap();
        let mut long = format!("\n\n{{\"pad\":\"{}\"}}\n", "x".repeat(70_000)).into_bytes();
        long.extend_from_slice(&text[mid + 1..]);
        text.truncate(mid + 1);
        text.extend(long);
        let now = opts.start + 200 * crate::time::DAY;
        let until = opts.start + 40 * crate::time::DAY;

        // The reference: one loop over the lines.
        let cfg = Config::default();
        let parser = EventParser::new(&cfg.input).unwrap();
        let (mut accounts, mut events, mut rejects, mut blank) =
            (Interner::default(), vec![], 0, 0);
        let mut not_applied = 0;
        for line in text.strip_suffix(b"\n").unwrap().split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                blank += 1;
                continue;
            }
            match parser.parse_at(line, now) {
                Ok(ev) if line.len() <= cfg.input.max_event_bytes => {
                    let a = accounts.intern(&ev.account_id);
                    if ev.ts > until {
                        not_applied += 1;
                        continue;
                    }
                    let user = ev.user_id.as_deref().map_or(0, user_hash);
                    events.push((ev.ts, a, ev.event.to_string(), user));
                }
                _ => rejects += 1,
            }
        }
        assert!(
            events.len() > 3 * 8192,
            "{} events: several batches",
            events.len()
        );
        assert!(rejects > 10 && blank == 2 && not_applied > 1000);

        for threads in [1, 2, 5] {
            let mut r = LineReader::from_reader(Box::new(io::Cursor::new(text.clone())));
            let h =
                History::read_with(&cfg, &mut r, Some(until), Some(now), threads, |_| {}).unwrap();
            let got: Vec<_> = h
                .events
                .iter()
                .map(|e| (e.ts, e.account, h.name(e.name).to_string(), e.user))
                .collect();
            assert!(got == events, "{threads} threads");
            assert_eq!(h.accounts.names, accounts.names, "{threads} threads");
            assert_eq!(h.rejects.values().sum::<u64>(), rejects);
            assert_eq!(h.rejects.get("oversized"), Some(&1));
            assert_eq!((h.blank_lines, h.as_of.not_applied), (blank, not_applied));
            assert_eq!(h.lines, text.iter().filter(|&&b| b == b'\n').count() as u64);
        }
    }
}
