//! Reading a history on several threads. The calling thread reads lines (plain, gzip
//! or standard input, as `LineReader` gives them) into batches; workers parse the
//! batches and intern their account ids and event names in tables of their own; the
//! caller takes the parsed batches back in file order ([`Pipeline::run`]), so the
//! history is exactly what one thread reading line by line would build.
//!
//! Memory stays bounded: at most a few batches per worker are in flight.

use std::collections::BTreeMap;
use std::io;
use std::sync::mpsc::{channel, sync_channel, Receiver};
use std::sync::Mutex;

use hashbrown::HashMap;

use crate::config::Config;
use crate::engine::account::user_hash;
use crate::source::event::{EventParser, RejectReason};
use crate::source::file::{is_blank, Line, LineReader};
use crate::time::Millis;

/// Lines per batch, a divisor of the clock's refresh period (`CLOCK_EVERY`).
const BATCH_LINES: usize = 8192;
/// Bytes of text after which a batch is sent even if it has fewer lines.
const BATCH_BYTES: usize = 4 << 20;
/// Lines between readings of the clock for the future-timestamp check (and calls of
/// the progress callback).
pub(super) const CLOCK_EVERY: u64 = 0x10000;
/// Batches queued per worker.
const QUEUED_PER_WORKER: usize = 2;
/// `ends` marker of a line longer than `input.max_event_bytes`.
const TOO_LONG: usize = usize::MAX;

/// Interns strings as dense indices, in the order they are first seen.
#[derive(Debug, Default)]
pub(super) struct Interner {
    pub(super) index: HashMap<Box<str>, u32>,
    pub(super) names: Vec<Box<str>>,
}

impl Interner {
    pub(super) fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.into());
        self.index.insert(s.into(), i);
        i
    }
}

/// Consecutive lines of the input and the clock reading they are checked against.
struct Batch {
    seq: u64,
    text: Vec<u8>,
    /// End of each line in `text` (its start is the previous end), or `TOO_LONG`.
    ends: Vec<usize>,
    at: Millis,
}

/// One accepted event, its strings as indices into its worker's tables.
#[derive(Debug, Clone, Copy)]
pub(super) struct LocalEv {
    pub(super) ts: Millis,
    pub(super) account: u32,
    pub(super) name: u32,
    /// `user_hash` of the user id; 0 for none.
    pub(super) user: u64,
}

/// A parsed batch.
pub(super) struct Parsed {
    seq: u64,
    /// Which worker parsed it (whose tables its indices refer to).
    pub(super) worker: usize,
    pub(super) events: Vec<LocalEv>,
    /// Ids and names the worker saw for the first time in this batch, in index order
    /// (they extend its tables).
    pub(super) new_accounts: Vec<Box<str>>,
    pub(super) new_names: Vec<Box<str>>,
    pub(super) blank_lines: u64,
    pub(super) rejects: BTreeMap<&'static str, u64>,
}

/// Reads `input` with `workers` parsing threads and hands every parsed batch to
/// `merge`, in file order. `on_lines` gets the line count every `CLOCK_EVERY` lines.
/// Returns the number of lines.
pub(super) fn run(
    cfg: &Config,
    input: &mut LineReader,
    now: Option<Millis>,
    workers: usize,
    mut on_lines: impl FnMut(u64),
    mut merge: impl FnMut(Parsed),
) -> io::Result<u64> {
    let parser = EventParser::new(&cfg.input).map_err(io::Error::other)?;
    let limit = cfg.input.max_event_bytes;
    input.set_max_line(limit);
    let workers = workers.max(1);
    let clock = || now.unwrap_or_else(crate::time::wall_clock_ms);
    let (work_tx, work_rx) = sync_channel::<Batch>(workers * QUEUED_PER_WORKER);
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = channel::<Parsed>();
    std::thread::scope(|s| {
        for worker in 0..workers {
            let (work_rx, done_tx, parser) = (&work_rx, done_tx.clone(), &parser);
            s.spawn(move || parse_batches(worker, parser, limit, work_rx, done_tx));
        }
        drop(done_tx);
        let mut order = InOrder::default();
        let mut lines = 0u64;
        let mut sent = 0u64;
        let mut at = clock();
        let mut batch = Batch::new(0, at);
        let mut buf = Vec::with_capacity(4096);
        let read = loop {
            let line = match input.next_line(&mut buf) {
                Ok(Some(line)) => line,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            lines += 1;
            if lines % CLOCK_EVERY == 0 {
                // The line that reaches the period is checked against the new reading.
                on_lines(lines);
                at = clock();
                send(&mut batch, at, &mut sent, &work_tx);
            }
            match line {
                Line::Whole => batch.text.extend_from_slice(&buf),
                Line::TooLong { .. } => {}
            }
            batch.ends.push(match line {
                Line::Whole => batch.text.len(),
                Line::TooLong { .. } => TOO_LONG,
            });
            if batch.ends.len() >= BATCH_LINES || batch.text.len() >= BATCH_BYTES {
                send(&mut batch, at, &mut sent, &work_tx);
                order.take(&done_rx, false, &mut merge);
            }
        };
        send(&mut batch, at, &mut sent, &work_tx);
        drop(work_tx);
        while order.next < sent {
            order.take(&done_rx, true, &mut merge);
        }
        read.map(|()| lines)
    })
}

impl Batch {
    fn new(seq: u64, at: Millis) -> Batch {
        Batch {
            seq,
            text: Vec::new(),
            ends: Vec::new(),
            at,
        }
    }
}

/// Sends the batch if it has lines, and starts the next one at clock reading `at`.
fn send(batch: &mut Batch, at: Millis, sent: &mut u64, tx: &std::sync::mpsc::SyncSender<Batch>) {
    if batch.ends.is_empty() {
        batch.at = at;
        return;
    }
    let full = std::mem::replace(batch, Batch::new(*sent + 1, at));
    tx.send(full).expect("workers run until the queue closes");
    *sent += 1;
}

/// Parsed batches that came back before their turn.
#[derive(Default)]
struct InOrder {
    next: u64,
    early: BTreeMap<u64, Parsed>,
}

impl InOrder {
    /// Merges the batches that are ready, in order; with `wait`, waits for at least one.
    fn take(&mut self, rx: &Receiver<Parsed>, wait: bool, merge: &mut impl FnMut(Parsed)) {
        if wait {
            let p = rx.recv().expect("a worker panicked");
            self.early.insert(p.seq, p);
        }
        while let Ok(p) = rx.try_recv() {
            self.early.insert(p.seq, p);
        }
        while let Some(p) = self.early.remove(&self.next) {
            self.next += 1;
            merge(p);
        }
    }
}

/// A worker: parses batches until the queue closes.
fn parse_batches(
    worker: usize,
    parser: &EventParser,
    limit: usize,
    rx: &Mutex<Receiver<Batch>>,
    tx: std::sync::mpsc::Sender<Parsed>,
) {
    let mut accounts = Interner::default();
    let mut names = Interner::default();
    loop {
        let Ok(batch) = rx.lock().expect("no worker panicked").recv() else {
            return;
        };
        let (known_accounts, known_names) = (accounts.names.len(), names.names.len());
        let mut out = Parsed {
            seq: batch.seq,
            worker,
            events: Vec::with_capacity(batch.ends.len()),
            new_accounts: Vec::new(),
            new_names: Vec::new(),
            blank_lines: 0,
            rejects: BTreeMap::new(),
        };
        let mut start = 0;
        for &end in &batch.ends {
            let parsed = if end == TOO_LONG {
                Err(RejectReason::Oversized {
                    size: usize::MAX,
                    limit,
                })
            } else {
                let line = &batch.text[start..end];
                start = end;
                if is_blank(line) {
                    out.blank_lines += 1;
                    continue;
                }
                parser.parse_at(line, batch.at)
            };
            match parsed {
                Ok(ev) => out.events.push(LocalEv {
                    ts: ev.ts,
                    account: accounts.intern(&ev.account_id),
                    name: names.intern(&ev.event),
                    user: ev.user_id.as_deref().map_or(0, user_hash),
                }),
                Err(reason) => *out.rejects.entry(reason.as_str()).or_default() += 1,
            }
        }
        out.new_accounts = accounts.names[known_accounts..].to_vec();
        out.new_names = names.names[known_names..].to_vec();
        if tx.send(out).is_err() {
            return;
        }
    }
}
