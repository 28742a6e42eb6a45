//! The read model behind the inbox: every account's lifecycle, activation progress,
//! last activity, daily series, firing alerts with their evidence, recent history,
//! metadata and silences, queryable in priority order.
//!
//! It is fed records: from Kafka by [`follow`] (the changelog and alerts topics, the
//! accounts and silences topics, all partitions, read_committed, no consumer group),
//! or in-process by [`feed`] (a replay's state and alerts, no Kafka). Either way one
//! writer applies them through [`View::write`]; queries ([`InboxView`]) take a read
//! lock and do no I/O.

pub mod feed;
pub mod follow;
mod metrics;
mod query;
pub mod records;
pub mod store;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tracing::warn;

pub use metrics::INBOX as METRICS;
use records::{decode_alert, decode_changelog, ChangelogRecord, RecordError};
use store::{Store, ViewSettings};

use crate::config::Config;
use crate::inbox::model::{
    AccountDetail, AccountSummary, InboxView, ListQuery, Page, Principal, TeamRow, ViewStatus,
};
use crate::notify::silence::Silence;
use crate::time::{wall_clock_ms, Millis};

/// The clock of the view: when silences end, how far renewals are, what "this week"
/// is. Tests inject a fixed one.
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

/// Alert transitions kept per account.
pub const HISTORY_LEN: usize = 20;

/// Where a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Changelog = 0,
    Alerts,
    Accounts,
    Silences,
}

/// The applied-records counter of each source, looked up once (one lookup per record
/// would cost more than a small record's decoding).
static APPLIED: std::sync::LazyLock<[prometheus::IntCounter; 4]> = std::sync::LazyLock::new(|| {
    [
        Source::Changelog,
        Source::Alerts,
        Source::Accounts,
        Source::Silences,
    ]
    .map(|s| METRICS.records.with_label_values(&[s.as_str()]))
});

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Changelog => "changelog",
            Source::Alerts => "alerts",
            Source::Accounts => "accounts",
            Source::Silences => "silences",
        }
    }
}

/// The read model, shared between its writer and the request tasks.
pub struct View {
    store: RwLock<Store>,
    clock: Clock,
    caught_up: AtomicBool,
    last_update_ms: AtomicI64,
}

impl View {
    pub fn new(settings: ViewSettings, clock: Clock) -> Arc<View> {
        let now = clock();
        METRICS.caught_up.set(0);
        Arc::new(View {
            store: RwLock::new(Store::new(Arc::new(settings), now)),
            clock,
            caught_up: AtomicBool::new(false),
            last_update_ms: AtomicI64::new(Millis::MIN),
        })
    }

    /// A view for `cfg`, on the wall clock.
    pub fn from_config(cfg: &Config) -> Arc<View> {
        View::new(ViewSettings::new(cfg, HISTORY_LEN), Arc::new(wall_clock_ms))
    }

    pub fn now(&self) -> Millis {
        (self.clock)()
    }

    /// The writer: holds the write lock until dropped (keep it for one batch).
    pub fn write(&self) -> Writer<'_> {
        let mut s = self.store.write().unwrap_or_else(|p| p.into_inner());
        s.set_priority_time(self.now());
        Writer {
            s,
            view: self,
            applied: false,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the view as caught up (every partition read to the end seen at start).
    pub fn set_caught_up(&self, yes: bool) {
        self.caught_up.store(yes, Ordering::Release);
        METRICS.caught_up.set(yes as i64);
    }

    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }
}

/// Applies records under the write lock.
pub struct Writer<'a> {
    s: RwLockWriteGuard<'a, Store>,
    view: &'a View,
    /// A record was applied (the view's `last_update_ms` moves).
    applied: bool,
}

impl Writer<'_> {
    /// Applies one record of `source`. An unreadable record is skipped, counted and
    /// logged by its place (never its bytes); returns whether it was applied.
    pub fn apply(
        &mut self,
        source: Source,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> bool {
        match self.try_apply(source, partition, key, value) {
            Ok(()) => {
                APPLIED[source as usize].inc();
                self.applied = true;
                true
            }
            Err(e) => {
                METRICS.skipped.with_label_values(&[source.as_str()]).inc();
                warn!(source = source.as_str(), partition, offset, error = %e,
                    "inbox view: record skipped");
                false
            }
        }
    }

    fn try_apply(
        &mut self,
        source: Source,
        partition: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), RecordError> {
        match source {
            Source::Changelog => match decode_changelog(key.unwrap_or_default(), value)? {
                ChangelogRecord::Account(id, st) => self.s.set_state(&id, partition, Some(st)),
                ChangelogRecord::Forget(id) => self.s.set_state(&id, partition, None),
                ChangelogRecord::Partition(m) => self.s.set_watermark(partition, m.shard.watermark),
                ChangelogRecord::Other => {}
            },
            Source::Alerts => {
                let a = decode_alert(value.ok_or_else(|| RecordError::Alert("no value".into()))?)?;
                self.s.apply_alert(a);
            }
            Source::Accounts => {
                let (id, meta) =
                    crate::accounts::parse_topic_record(key, value).map_err(RecordError::Meta)?;
                self.s.apply_meta_record(&id, meta);
            }
            Source::Silences => {
                let id = key
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .ok_or_else(|| RecordError::Silence("no UTF-8 key".into()))?;
                let s = match value {
                    None => None,
                    Some(v) => Some(
                        serde_json::from_slice::<Silence>(v)
                            .map_err(|e| RecordError::Silence(e.to_string()))?,
                    ),
                };
                self.s.apply_silence(id, s);
            }
        }
        Ok(())
    }

    /// The store itself (for feeding state without Kafka).
    pub fn store(&mut self) -> &mut Store {
        self.applied = true;
        &mut self.s
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        METRICS.accounts.set(self.s.entries.len() as i64);
        METRICS.at_risk.set(self.s.at_risk as i64);
        if self.applied {
            self.view
                .last_update_ms
                .store(wall_clock_ms(), Ordering::Release);
        }
    }
}

impl InboxView for View {
    fn list(&self, who: &Principal, q: &ListQuery) -> Page<AccountSummary> {
        let now = self.now();
        query::list(&self.read(), who, q, now)
    }

    fn account(&self, account_id: &str) -> Option<AccountDetail> {
        let now = self.now();
        let s = self.read();
        let slot = s.slot(account_id)?;
        Some(query::detail(&s, slot, now))
    }

    fn team(&self) -> Vec<TeamRow> {
        let now = self.now();
        query::team(&self.read(), now)
    }

    fn status(&self) -> ViewStatus {
        let at = self.last_update_ms.load(Ordering::Acquire);
        ViewStatus {
            caught_up: self.caught_up(),
            accounts: self.read().entries.len(),
            last_update_ms: (at != Millis::MIN).then_some(at),
        }
    }
}

#[cfg(test)]
mod tests;
