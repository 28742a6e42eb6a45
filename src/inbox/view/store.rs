//! The view's data: one compact entry per account (engine state, metadata, firing
//! alerts and recent history), an id index, a per-owner index and the priority order
//! (every account in one ordered set, highest priority first, ties by id). Written by
//! one follower (or a replay) under the view's write lock; read by queries.
//!
//! Sizes: an entry is 64 bytes; state ~80 bytes (packed daily counters), metadata
//! ~90 bytes plus its name and link (owners, segments, plans, time zones and chat
//! handles are interned), alerts only on accounts that ever had one. `history_len`
//! bounds the history per account.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::records::{AccountState, AlertIn};
use crate::accounts::{AccountMeta, MetaStore};
use crate::config::{Config, DropMetric};
use crate::notify::silence::Silence;
use crate::priority::PriorityConfig;
use crate::time::{day_of, Millis, DAY};

/// "None" for interned fields.
pub const NONE: u32 = u32::MAX;

/// What the view needs of the configuration.
#[derive(Debug, Clone)]
pub struct ViewSettings {
    pub priority: PriorityConfig,
    pub required_events: Vec<String>,
    pub min_active_days: u32,
    pub min_active_users: u32,
    pub min_events: u64,
    /// Onboarding deadlines (days after the start), when the rule is on.
    pub deadlines: Vec<u32>,
    /// `(recent_days, baseline_days, counts distinct users)` when the drop rule is on.
    pub drop: Option<(u32, u32, bool)>,
    /// Alert transitions kept per account.
    pub history_len: usize,
}

impl ViewSettings {
    pub fn new(cfg: &Config, history_len: usize) -> ViewSettings {
        let r = &cfg.rules;
        ViewSettings {
            priority: cfg.priority.clone(),
            required_events: cfg.activation.required_events.clone(),
            min_active_days: cfg.activation.min_active_days,
            min_active_users: cfg.activation.min_active_users,
            min_events: cfg.activation.min_events,
            deadlines: if r.not_activated.enabled {
                r.not_activated
                    .deadlines
                    .iter()
                    .map(|d| d.after_days)
                    .collect()
            } else {
                Vec::new()
            },
            drop: r.activity_drop.enabled.then(|| {
                let d = &r.activity_drop;
                (
                    d.recent_days,
                    d.baseline_days,
                    d.metric == DropMetric::ActiveUsers,
                )
            }),
            history_len: history_len.max(1),
        }
    }
}

/// Strings that repeat across accounts, stored once.
#[derive(Debug, Default)]
pub struct Interner {
    by_str: HashMap<Arc<str>, u32>,
    strs: Vec<Arc<str>>,
}

impl Interner {
    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.by_str.get(s) {
            return i;
        }
        let a: Arc<str> = s.into();
        let i = self.strs.len() as u32;
        self.strs.push(a.clone());
        self.by_str.insert(a, i);
        i
    }

    pub fn opt(&mut self, s: Option<&str>) -> u32 {
        s.filter(|s| !s.is_empty()).map_or(NONE, |s| self.intern(s))
    }

    pub fn find(&self, s: &str) -> Option<u32> {
        self.by_str.get(s).copied()
    }

    pub fn get(&self, i: u32) -> Option<&str> {
        (i != NONE).then(|| &*self.strs[i as usize])
    }
}

/// Metadata, compact: repeated strings interned, numbers with sentinels.
#[derive(Debug, Clone)]
pub struct MetaC {
    pub name: Option<Box<str>>,
    pub crm_url: Option<Box<str>>,
    /// NaN: unknown.
    pub mrr: f64,
    pub arr: f64,
    /// Day number of the renewal date, or `i32::MIN`.
    pub renewal_day: i32,
    /// `u32::MAX`: unknown.
    pub seats: u32,
    /// The owner's address as given (interned in `texts`).
    pub owner_email: u32,
    pub owner_chat: u32,
    pub plan: u32,
    pub timezone: u32,
}

impl MetaC {
    /// ARR as the priority score uses it (`arr`, else 12 x `mrr`).
    pub fn arr(&self) -> Option<f64> {
        if !self.arr.is_nan() {
            Some(self.arr)
        } else if !self.mrr.is_nan() {
            Some(self.mrr * 12.0)
        } else {
            None
        }
    }
}

/// An alert firing now.
#[derive(Debug, Clone)]
pub struct Firing {
    pub kind: u8,
    pub severity: u8,
    pub since: Millis,
    pub episode: Box<str>,
    pub summary: Box<str>,
    /// Compact JSON, written out as is.
    pub evidence: crate::inbox::model::Evidence,
}

/// One alert transition of the history.
#[derive(Debug, Clone)]
pub struct Hist {
    pub kind: u8,
    pub firing: bool,
    pub severity: u8,
    pub event_time: Millis,
    pub emitted_at: Millis,
    pub episode: Box<str>,
    pub summary: Box<str>,
}

/// An account's alerts: what fires now and the latest transitions (oldest first).
#[derive(Debug, Clone, Default)]
pub struct Alerts {
    pub firing: Vec<Firing>,
    pub history: Vec<Hist>,
}

/// One account.
#[derive(Debug)]
pub struct Entry {
    pub id: Arc<str>,
    pub state: Option<Box<AccountState>>,
    pub meta: Option<Box<MetaC>>,
    pub alerts: Option<Box<Alerts>>,
    /// The account's priority score (0 with nothing firing).
    pub priority: f64,
    /// Lower-cased owner address, interned in `owners`.
    pub owner: u32,
    /// Interned in `texts`.
    pub segment: u32,
    /// The changelog partition its state comes from (its clock ends the series).
    pub partition: u16,
}

impl Entry {
    pub fn firing(&self) -> &[Firing] {
        self.alerts.as_ref().map_or(&[], |a| &a.firing)
    }

    pub fn at_risk(&self) -> bool {
        !self.firing().is_empty()
    }
}

/// Order key of the priority order: highest score first, then account id.
/// (The slot rides along: ids are unique, so it never decides the order.)
pub type RankKey = (Reverse<u64>, Arc<str>, u32);

fn rank_key(priority: f64, id: &Arc<str>, slot: u32) -> RankKey {
    // Scores are finite and >= 0, where the bit pattern orders like the number.
    (Reverse(priority.max(0.0).to_bits()), id.clone(), slot)
}

/// Everything the view holds.
pub struct Store {
    pub settings: Arc<ViewSettings>,
    pub entries: Vec<Entry>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    pub ranked: BTreeSet<RankKey>,
    pub by_owner: HashMap<u32, Vec<u32>>,
    /// Lower-cased owner addresses.
    pub owners: Interner,
    /// Segments, plans, time zones, chat handles, owner addresses as given.
    pub texts: Interner,
    /// Accounts with at least one firing alert.
    pub at_risk: usize,
    /// Watermark of each changelog partition, from its partition record.
    pub watermarks: HashMap<i32, Millis>,
    pub silences: HashMap<String, Silence>,
    /// The metadata file, for topic tombstones (the file's entry applies again).
    pub file_meta: Option<Arc<MetaStore>>,
    /// The time priorities were computed at (renewals are counted from it).
    pub priority_at: Millis,
}

impl Store {
    pub fn new(settings: Arc<ViewSettings>, now: Millis) -> Store {
        Store {
            settings,
            entries: Vec::new(),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            ranked: BTreeSet::new(),
            by_owner: HashMap::new(),
            owners: Interner::default(),
            texts: Interner::default(),
            at_risk: 0,
            watermarks: HashMap::new(),
            silences: HashMap::new(),
            file_meta: None,
            priority_at: now,
        }
    }

    pub fn slot(&self, id: &str) -> Option<u32> {
        let h = self.hasher.hash_one(id);
        self.index
            .find(h, |&i| &*self.entries[i as usize].id == id)
            .copied()
    }

    /// The slot of `id`, created if new.
    fn slot_or_new(&mut self, id: &str) -> u32 {
        if let Some(s) = self.slot(id) {
            return s;
        }
        let slot = self.entries.len() as u32;
        let id: Arc<str> = id.into();
        self.ranked.insert(rank_key(0.0, &id, slot));
        self.entries.push(Entry {
            id,
            state: None,
            meta: None,
            alerts: None,
            priority: 0.0,
            owner: NONE,
            segment: NONE,
            partition: 0,
        });
        let h = self.hasher.hash_one(&*self.entries[slot as usize].id);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index
            .insert_unique(h, slot, |&i| hasher.hash_one(&*entries[i as usize].id));
        slot
    }

    /// Replaces an account's state (None: forgotten).
    pub fn set_state(&mut self, id: &str, partition: i32, state: Option<AccountState>) {
        let slot = match (self.slot(id), &state) {
            (Some(s), _) => s,
            (None, Some(_)) => self.slot_or_new(id),
            (None, None) => return,
        };
        let e = &mut self.entries[slot as usize];
        e.state = state.map(Box::new);
        e.partition = partition.clamp(0, u16::MAX as i32) as u16;
    }

    /// A partition's clock.
    pub fn set_watermark(&mut self, partition: i32, watermark: Millis) {
        self.watermarks.insert(partition, watermark);
    }

    /// Applies an alert transition. A transition already in the history (the same
    /// id and status) is ignored.
    pub fn apply_alert(&mut self, a: AlertIn) {
        let slot = self.slot_or_new(&a.account_id);
        let cap = self.settings.history_len;
        let e = &mut self.entries[slot as usize];
        let was_at_risk = e.at_risk();
        let alerts = e.alerts.get_or_insert_with(Box::default);
        if alerts
            .history
            .iter()
            .any(|h| h.kind == a.kind && h.firing == a.firing && *h.episode == *a.episode)
        {
            return;
        }
        let pos = alerts
            .firing
            .iter()
            .position(|f| f.kind == a.kind && *f.episode == *a.episode);
        if a.firing {
            let f = Firing {
                kind: a.kind,
                severity: a.severity,
                since: a.event_time,
                episode: a.episode.as_str().into(),
                summary: a.summary.as_str().into(),
                evidence: a.evidence,
            };
            match pos {
                Some(i) => alerts.firing[i] = f,
                None => alerts.firing.push(f),
            }
        } else if let Some(i) = pos {
            alerts.firing.remove(i);
        }
        if alerts.history.len() >= cap {
            let drop = alerts.history.len() + 1 - cap;
            alerts.history.drain(..drop);
        }
        alerts.history.push(Hist {
            kind: a.kind,
            firing: a.firing,
            severity: a.severity,
            event_time: a.event_time,
            emitted_at: a.emitted_at,
            episode: a.episode.into(),
            summary: a.summary.into(),
        });
        let now_at_risk = e.at_risk();
        match (was_at_risk, now_at_risk) {
            (false, true) => self.at_risk += 1,
            (true, false) => self.at_risk -= 1,
            _ => {}
        }
        self.rerank(slot);
    }

    /// Replaces an account's metadata (None: none known).
    pub fn set_meta(&mut self, id: &str, meta: Option<&AccountMeta>) {
        let slot = match (self.slot(id), meta) {
            (Some(s), _) => s,
            (None, Some(_)) => self.slot_or_new(id),
            (None, None) => return,
        };
        let owner = self.owners.opt(
            meta.and_then(|m| m.owner_email.as_deref())
                .map(str::to_ascii_lowercase)
                .as_deref(),
        );
        let compact = meta.map(|m| {
            Box::new(MetaC {
                name: m.name.as_deref().map(Into::into),
                crm_url: m.crm_url.as_deref().map(Into::into),
                mrr: m.mrr.unwrap_or(f64::NAN),
                arr: m.arr.unwrap_or(f64::NAN),
                renewal_day: m
                    .renewal_date
                    .as_deref()
                    .and_then(|d| crate::time::parse_date(d).ok())
                    .map_or(i32::MIN, |t| day_of(t) as i32),
                seats: m
                    .seats
                    .map_or(u32::MAX, |s| s.min(u32::MAX as u64 - 1) as u32),
                owner_email: self.texts.opt(m.owner_email.as_deref()),
                owner_chat: self.texts.opt(m.owner_chat.as_deref()),
                plan: self.texts.opt(m.plan.as_deref()),
                timezone: self.texts.opt(m.timezone.as_deref()),
            })
        });
        let segment = self.texts.opt(meta.and_then(|m| m.segment.as_deref()));
        let e = &mut self.entries[slot as usize];
        let old_owner = std::mem::replace(&mut e.owner, owner);
        e.meta = compact;
        e.segment = segment;
        if old_owner != owner {
            if let Some(v) = self.by_owner.get_mut(&old_owner) {
                v.retain(|&s| s != slot);
                if v.is_empty() {
                    self.by_owner.remove(&old_owner);
                }
            }
            if owner != NONE {
                self.by_owner.entry(owner).or_default().push(slot);
            }
        }
        self.rerank(slot);
    }

    /// A record of the accounts topic: metadata, or a tombstone (the file's entry, if
    /// any, applies again).
    pub fn apply_meta_record(&mut self, id: &str, meta: Option<AccountMeta>) {
        match meta {
            Some(m) => self.set_meta(id, Some(&m)),
            None => {
                let file = self.file_meta.clone();
                self.set_meta(id, file.as_ref().and_then(|f| f.get(id)));
            }
        }
    }

    /// Loads the metadata file (its entries apply until the topic overrides them).
    pub fn load_file(&mut self, file: MetaStore) {
        let file = Arc::new(file);
        for m in file.iter() {
            self.set_meta(&m.account_id, Some(m));
        }
        self.file_meta = Some(file);
    }

    /// The revenue and renewal factor of an account at `now`.
    pub fn factor(&self, e: &Entry, now: Millis) -> f64 {
        let Some(m) = &e.meta else {
            return self.settings.priority.factor(None, None, now);
        };
        let renewal = (m.renewal_day != i32::MIN).then(|| m.renewal_day as i64 * crate::time::DAY);
        self.settings.priority.factor(m.arr(), renewal, now)
    }

    /// Recomputes one account's score and moves it in the order.
    fn rerank(&mut self, slot: u32) {
        let e = &self.entries[slot as usize];
        let p = if e.at_risk() {
            let w: f64 = e
                .firing()
                .iter()
                .map(|f| {
                    self.settings
                        .priority
                        .severity_weight(super::records::severity_of(f.severity), true)
                })
                .sum();
            w * self.factor(e, self.priority_at)
        } else {
            0.0
        };
        if p.to_bits() == e.priority.to_bits() {
            return;
        }
        let old = rank_key(e.priority, &e.id, slot);
        let new = rank_key(p, &e.id, slot);
        self.ranked.remove(&old);
        self.ranked.insert(new);
        self.entries[slot as usize].priority = p;
    }

    /// Counts renewals from `now`'s day: once a day every at-risk account is scored
    /// again (days to renewal changed).
    pub fn set_priority_time(&mut self, now: Millis) {
        if now.div_euclid(DAY) == self.priority_at.div_euclid(DAY) {
            return;
        }
        self.priority_at = now;
        for slot in 0..self.entries.len() as u32 {
            if self.entries[slot as usize].at_risk() {
                self.rerank(slot);
            }
        }
    }

    pub fn apply_silence(&mut self, id: &str, s: Option<Silence>) {
        match s {
            Some(s) => {
                self.silences.insert(id.to_string(), s);
            }
            None => {
                self.silences.remove(id);
            }
        }
    }

    /// The metadata of an entry, as the file or topic gave it.
    pub fn meta_of(&self, e: &Entry) -> Option<AccountMeta> {
        let m = e.meta.as_ref()?;
        let t = |i: u32| self.texts.get(i).map(str::to_string);
        Some(AccountMeta {
            account_id: e.id.to_string(),
            name: m.name.as_deref().map(str::to_string),
            owner_email: t(m.owner_email),
            owner_chat: t(m.owner_chat),
            plan: t(m.plan),
            mrr: (!m.mrr.is_nan()).then_some(m.mrr),
            timezone: t(m.timezone),
            crm_url: m.crm_url.as_deref().map(str::to_string),
            renewal_date: (m.renewal_day != i32::MIN)
                .then(|| crate::time::format_day(m.renewal_day as i64)),
            arr: (!m.arr.is_nan()).then_some(m.arr),
            seats: (m.seats != u32::MAX).then_some(m.seats as u64),
            segment: t(e.segment),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_stays_small() {
        assert!(
            std::mem::size_of::<Entry>() <= 64,
            "{}",
            std::mem::size_of::<Entry>()
        );
        assert!(std::mem::size_of::<AccountState>() <= 88);
        assert!(std::mem::size_of::<MetaC>() <= 96);
    }
}
