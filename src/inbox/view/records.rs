//! What the view reads from Kafka, decoded into its own compact forms: an account's
//! changelog record (the engine's state, see `engine::snapshot`) becomes an
//! [`AccountState`]; a partition record gives the partition's clock; an alert record
//! (JSON, `crate::record::AlertRecord`'s format, read with its kind, status and
//! severity types) becomes an [`AlertIn`], its evidence kept as the JSON written. Nothing here keeps the raw bytes,
//! and no error message repeats them.

use serde::Deserialize;

use crate::config::Severity;
use crate::engine::account::{Life, Phase, NEVER, NO_DAY};
use crate::engine::snapshot::{decode, SnapshotError};
use crate::engine::{AlertKind, Status};
use crate::inbox::model::Evidence;
use crate::kafka::changelog::{PartitionMeta, ACCOUNT_PREFIX, META_KEY};
use crate::time::{parse_rfc3339, Millis};

/// The engine's account record as written to the changelog. Mirrors the private
/// `AccountRecord` of `engine::snapshot` field for field (postcard is positional);
/// `a_shard_record_decodes` in the tests pins the two together.
#[derive(Deserialize)]
struct AccountRecord {
    seen: bool,
    life: Option<LifeRecord>,
}

#[derive(Deserialize)]
struct LifeRecord {
    life: Life,
    window: Option<(i32, Vec<u32>)>,
}

/// What the view keeps of an account's engine state (about 80 bytes with a full
/// window: the daily counters are varint-packed).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountState {
    /// Lifecycle start, or `NEVER` when the account has no lifecycle (ended).
    pub start: Millis,
    /// The engine has processed an event of the account: with no lifecycle, its
    /// lifecycle ended (the subscription ended, or, with `start_on_first_event = false`,
    /// it never started).
    pub seen: bool,
    pub last_activity: Millis,
    /// Activation time, `NEVER` while onboarding.
    pub activated_at: Millis,
    pub events: u64,
    pub required_seen: u64,
    pub active_days: u32,
    /// Distinct users counted toward activation (capped as the engine caps them).
    pub users: u32,
    /// Newest day of the daily window, or `NO_DAY`.
    pub window_head: i32,
    /// Daily counters oldest to newest, LEB128 varints.
    pub window: Box<[u8]>,
}

impl AccountState {
    pub fn has_life(&self) -> bool {
        self.start != NEVER
    }

    /// The daily counters, oldest first, ending at `window_head`.
    pub fn days(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(40);
        let mut v: u32 = 0;
        let mut shift = 0;
        for &b in self.window.iter() {
            v |= ((b & 0x7f) as u32) << shift;
            if b & 0x80 == 0 {
                out.push(v);
                v = 0;
                shift = 0;
            } else {
                shift += 7;
            }
        }
        out
    }
}

/// Packs daily counters as the view keeps them (LEB128 varints).
pub fn pack(days: &[u32]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(days.len() + 4);
    for &d in days {
        let mut v = d;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }
    out.into_boxed_slice()
}

/// One changelog record, decoded.
#[derive(Debug, PartialEq)]
pub enum ChangelogRecord {
    /// `a:<id>` with a value: the account's state.
    Account(String, AccountState),
    /// `a:<id>` without a value: the account is gone.
    Forget(String),
    /// `m`: the partition's clocks.
    Partition(PartitionMeta),
    /// A key the view does not use.
    Other,
}

/// Why a record was skipped (never containing the record's bytes).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RecordError {
    #[error("account key is not UTF-8")]
    Key,
    #[error("state record: {0}")]
    State(String),
    #[error("alert record: {0}")]
    Alert(String),
    #[error("metadata record: {0}")]
    Meta(String),
    #[error("silence record: {0}")]
    Silence(String),
}

impl From<SnapshotError> for RecordError {
    fn from(e: SnapshotError) -> Self {
        RecordError::State(e.to_string())
    }
}

/// Decodes one changelog record.
pub fn decode_changelog(key: &[u8], value: Option<&[u8]>) -> Result<ChangelogRecord, RecordError> {
    if key == META_KEY {
        return match value {
            Some(v) => Ok(ChangelogRecord::Partition(decode(v)?)),
            None => Ok(ChangelogRecord::Other),
        };
    }
    let Some(id) = key.strip_prefix(ACCOUNT_PREFIX) else {
        return Ok(ChangelogRecord::Other);
    };
    let id = std::str::from_utf8(id)
        .map_err(|_| RecordError::Key)?
        .to_string();
    match value {
        None | Some([]) => Ok(ChangelogRecord::Forget(id)),
        Some(v) => Ok(ChangelogRecord::Account(id, decode_account(v)?)),
    }
}

/// Decodes an account's state record.
pub fn decode_account(bytes: &[u8]) -> Result<AccountState, RecordError> {
    let rec: AccountRecord = decode(bytes)?;
    let Some(LifeRecord { life, window }) = rec.life else {
        return Ok(AccountState {
            start: NEVER,
            seen: rec.seen,
            last_activity: NEVER,
            activated_at: NEVER,
            events: 0,
            required_seen: 0,
            active_days: 0,
            users: 0,
            window_head: NO_DAY,
            window: Box::new([]),
        });
    };
    let (events, required_seen, active_days, users, activated_at) = match &life.phase {
        Phase::Onboarding(p) => (
            p.events,
            p.required_seen,
            p.active_days,
            p.users.len() as u32,
            NEVER,
        ),
        Phase::Activated { at, .. } => (0, 0, 0, 0, *at),
    };
    let (window_head, window) = match window {
        Some((head, days)) => (head, pack(&days)),
        None => (NO_DAY, Box::new([]) as Box<[u8]>),
    };
    Ok(AccountState {
        start: life.start,
        seen: rec.seen,
        last_activity: life.last_activity,
        activated_at,
        events,
        required_seen,
        active_days,
        users,
        window_head,
        window,
    })
}

/// Alert kinds the view knows, as stored.
pub const KINDS: [&str; 3] = ["not_activated", "inactive", "activity_drop"];
/// Severities the view knows, as stored.
pub const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];

/// The severity stored as an index into [`SEVERITIES`].
pub fn severity_of(i: u8) -> crate::config::Severity {
    use crate::config::Severity;
    match i {
        0 => Severity::Info,
        1 => Severity::Warning,
        _ => Severity::Critical,
    }
}

/// One alert transition, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertIn {
    pub account_id: String,
    /// Index into [`KINDS`].
    pub kind: u8,
    pub firing: bool,
    /// Index into [`SEVERITIES`].
    pub severity: u8,
    /// The id after `<account>/<kind>/`.
    pub episode: String,
    pub event_time: Millis,
    pub emitted_at: Millis,
    pub summary: String,
    /// The evidence as compact JSON text, as the shared record writes it.
    pub evidence: Evidence,
}

/// The fields of an alert record ([`crate::record::AlertRecord`], the published format)
/// that the view keeps, read with the record's own kind, status and severity types. Not
/// the typed record itself: that one also reads the evidence by kind and the account's
/// metadata, which the view does not use: that is 3-4x slower than this reading
/// (`benches/inbox.rs`, "alert records decoded"). The evidence is kept as the raw JSON
/// the detector wrote.
#[derive(Deserialize)]
struct Published {
    id: String,
    account_id: String,
    kind: AlertKind,
    status: Status,
    severity: Severity,
    event_time: String,
    emitted_at: String,
    summary: String,
    evidence: Box<serde_json::value::RawValue>,
}

/// Longest alert record the view accepts (records are a few hundred bytes).
pub const MAX_ALERT_BYTES: usize = 64 * 1024;

/// Decodes an alert record.
pub fn decode_alert(bytes: &[u8]) -> Result<AlertIn, RecordError> {
    let bad = |m: String| RecordError::Alert(m);
    if bytes.len() > MAX_ALERT_BYTES {
        return Err(bad(format!(
            "{} bytes, over {MAX_ALERT_BYTES}",
            bytes.len()
        )));
    }
    let r: Published =
        serde_json::from_slice(bytes).map_err(|e| bad(without_values(&e.to_string())))?;
    let kind_name = r.kind.as_str();
    let kind = KINDS
        .iter()
        .position(|k| *k == kind_name)
        .ok_or_else(|| bad("unknown kind".into()))? as u8;
    let severity = SEVERITIES
        .iter()
        .position(|k| *k == r.severity.as_str())
        .ok_or_else(|| bad("unknown severity".into()))? as u8;
    let prefix_len = r.account_id.len() + 1 + kind_name.len() + 1;
    let episode = (r.id.len() > prefix_len
        && r.id.starts_with(r.account_id.as_str())
        && r.id[r.account_id.len()..].starts_with('/')
        && r.id[r.account_id.len() + 1..].starts_with(kind_name)
        && r.id.as_bytes()[prefix_len - 1] == b'/')
        .then(|| r.id[prefix_len..].to_string())
        .ok_or_else(|| bad("id is not <account_id>/<kind>/<episode>".into()))?;
    let time = |s: &str, f: &str| {
        parse_rfc3339(s).map_err(|e| bad(format!("{f}: {}", without_values(&e.to_string()))))
    };
    Ok(AlertIn {
        kind,
        firing: r.status == Status::Firing,
        severity,
        episode,
        event_time: time(&r.event_time, "event_time")?,
        emitted_at: time(&r.emitted_at, "emitted_at")?,
        evidence: Evidence(r.evidence),
        summary: r.summary,
        account_id: r.account_id,
    })
}

/// An error message of the typed record with every quoted part (`"..."`, `` `...` ``,
/// where serde and the record's readers put the offending value) replaced by `…`, so
/// a log line never repeats what a record carried.
fn without_values(m: &str) -> String {
    let mut out = String::with_capacity(m.len());
    let mut chars = m.chars();
    while let Some(c) = chars.next() {
        if c == '"' || c == '`' {
            let mut escaped = false;
            for d in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' && c == '"' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
            out.push(c);
            out.push('…');
            out.push(c);
        } else {
            out.push(c);
        }
    }
    out
}

/// A parsed time, for callers that hold RFC 3339 text.
pub fn millis(s: &str) -> Option<Millis> {
    parse_rfc3339(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::{EngineConfig, Shard};
    use crate::source::event::RawEvent;
    use crate::time::DAY;
    use std::sync::Arc;

    fn ev(shard: &mut Shard, id: &str, ts: Millis, user: &str) {
        shard
            .push(&RawEvent {
                account_id: id.into(),
                event: "page.viewed".into(),
                ts,
                user_id: Some(user.into()),
            })
            .unwrap();
    }

    #[test]
    fn a_shard_record_decodes() {
        let cfg = Config::default();
        let mut shard = Shard::new(Arc::new(EngineConfig::new(&cfg)));
        let t0 = crate::time::parse_rfc3339("2026-01-01T10:00:00Z").unwrap();
        for d in 0..5 {
            for i in 0..(d * 70) {
                ev(&mut shard, "a", t0 + d * DAY + i, "u1");
            }
        }
        ev(&mut shard, "b", t0, "u1");
        ev(&mut shard, "b", t0 + 1, "u2");
        shard.finish(None);
        let slot = |s: &Shard, id: &str| {
            (0..s.accounts() as u32)
                .find(|&i| s.account_id(i) == id)
                .unwrap()
        };
        let a = decode_account(&shard.encode_account(slot(&shard, "a"))).unwrap();
        // Day 0 had no events (0 x 70), so activity started on day 1.
        assert_eq!(a.start, t0 + DAY);
        assert_eq!(a.last_activity, t0 + 4 * DAY + 279);
        assert!(a.activated_at != NEVER, "3 active days activate");
        let days = a.days();
        assert_eq!(days.len(), 35);
        assert_eq!(&days[31..], &[70, 140, 210, 280]);
        assert_eq!(a.window_head as i64, crate::time::day_of(t0) + 4);
        let b = decode_account(&shard.encode_account(slot(&shard, "b"))).unwrap();
        assert_eq!(
            (b.activated_at, b.users, b.events, b.active_days),
            (NEVER, 2, 2, 1)
        );
        assert!(decode_account(&[9, 1, 2]).is_err());
        assert!(decode_account(&[1, 0xff, 0xff]).is_err());
        assert!(matches!(
            decode_changelog(b"m", Some(&shard.encode_meta())),
            Err(_) | Ok(ChangelogRecord::Partition(_))
        ));
    }

    #[test]
    fn varints_round_trip() {
        let days = [0, 1, 127, 128, 300, 16_384, u32::MAX];
        let s = AccountState {
            start: 0,
            seen: true,
            last_activity: 0,
            activated_at: NEVER,
            events: 0,
            required_seen: 0,
            active_days: 0,
            users: 0,
            window_head: 0,
            window: pack(&days),
        };
        assert_eq!(s.days(), days);
        assert_eq!(s.window.len(), 1 + 1 + 1 + 2 + 2 + 3 + 5);
    }

    #[test]
    fn alert_records_decode_and_bad_ones_are_named_without_their_bytes() {
        let ok = br#"{"id":"acme/x/inactive/2026-01-03","account_id":"acme/x","kind":"inactive","status":"firing","severity":"warning","event_time":"2026-01-17T12:00:00.000Z","emitted_at":"2026-01-17T12:00:01.000Z","summary":"No activity for 14 days","evidence":{"last_activity":"2026-01-03T09:00:00.000Z","idle_days":14},"account":{"name":"Acme"}}"#;
        let a = decode_alert(ok).unwrap();
        assert_eq!((a.kind, a.firing, a.severity), (1, true, 1));
        assert_eq!(a.episode, "2026-01-03");
        assert_eq!(
            a.evidence.0.get(),
            r#"{"last_activity":"2026-01-03T09:00:00.000Z","idle_days":14}"#
        );
        let text = String::from_utf8_lossy(ok);
        for (bad, want) in [
            (text.replace("\"inactive\",", "\"gone\","), "unknown kind"),
            (text.replace("firing", "burning"), "unknown status"),
            (
                text.replace("acme/x/inactive/", "other/inactive/"),
                "id is not",
            ),
            (
                text.replace("2026-01-17T12:00:00.000Z", "yesterday-secret"),
                "event_time: ",
            ),
            ("{\"secret-token\": 1".to_string(), "alert record"),
        ] {
            let e = decode_alert(bad.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
