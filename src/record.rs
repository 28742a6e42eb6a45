//! The alert record as a type: the one JSON object published per alert transition.
//! The detector builds it (`sink::record`, from an engine [`crate::engine::Alert`]);
//! the notifier, and anything else reading the alerts topic, deserializes it.
//!
//! The JSON is the published format, so serializing keeps it exactly: the fields in
//! this order, times as `format_rfc3339` writes them (UTC, milliseconds), numbers as
//! serde_json writes them (a non-finite float as `null`), `account` omitted when the
//! account has no metadata. Reading checks what the notifier relies on: every field
//! present with its type, a known kind, status and severity, and the evidence of the
//! kind (firing) or `{"reason": ...}` (resolved). Unknown fields are ignored, so a
//! newer writer's additions do not stop an older reader.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::accounts::AccountMeta;
use crate::config::Severity;
use crate::engine::stats::Model;
use crate::engine::{AlertKind, ResolveReason, Status};
use crate::time::Millis;

/// One alert record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawRecord")]
pub struct AlertRecord {
    /// `{account_id}/{kind}/{episode}`.
    pub id: String,
    pub account_id: String,
    pub kind: AlertKind,
    pub status: Status,
    pub severity: Severity,
    /// Event time of the transition.
    #[serde(serialize_with = "rfc3339::serialize")]
    pub event_time: Millis,
    /// Wall-clock time the detector published it.
    #[serde(serialize_with = "rfc3339::serialize")]
    pub emitted_at: Millis,
    /// One line a CSM can read without the evidence.
    pub summary: String,
    pub evidence: RecordEvidence,
    /// The account's metadata (without its id), when known.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_account"
    )]
    pub account: Option<AccountMeta>,
}

impl AlertRecord {
    pub fn is_firing(&self) -> bool {
        self.status == Status::Firing
    }

    /// The account's name, else its id.
    pub fn account_name(&self) -> &str {
        self.account
            .as_ref()
            .and_then(|m| m.name.as_deref())
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.account_id)
    }
}

/// The evidence of a record: the figures of the rule that fired, or why it resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RecordEvidence {
    NotActivated(NotActivatedEvidence),
    Inactive(InactiveEvidence),
    ActivityDrop(ActivityDropEvidence),
    Resolved(ResolvedEvidence),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotActivatedEvidence {
    pub after_days: u32,
    #[serde(with = "rfc3339")]
    pub start: Millis,
    pub active_days: u64,
    pub active_users: u64,
    pub events: u64,
    pub missing_events: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InactiveEvidence {
    #[serde(with = "rfc3339")]
    pub last_activity: Millis,
    pub idle_days: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityDropEvidence {
    pub observed: u64,
    #[serde(deserialize_with = "number_or_null")]
    pub expected: f64,
    #[serde(deserialize_with = "number_or_null")]
    pub drop_pct: f64,
    #[serde(deserialize_with = "number_or_null")]
    pub p_value: f64,
    pub model: Model,
    pub recent_days: u32,
    pub baseline_days: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedEvidence {
    pub reason: ResolveReason,
}

impl From<ResolveReason> for RecordEvidence {
    fn from(reason: ResolveReason) -> RecordEvidence {
        RecordEvidence::Resolved(ResolvedEvidence { reason })
    }
}

/// The record as it arrives, before its evidence is read by kind and status.
#[derive(Deserialize)]
struct RawRecord {
    id: String,
    account_id: String,
    kind: AlertKind,
    status: Status,
    severity: Severity,
    #[serde(deserialize_with = "rfc3339::deserialize")]
    event_time: Millis,
    #[serde(deserialize_with = "rfc3339::deserialize")]
    emitted_at: Millis,
    summary: String,
    evidence: Value,
    #[serde(default)]
    account: Option<Map<String, Value>>,
}

impl TryFrom<RawRecord> for AlertRecord {
    type Error = String;

    fn try_from(r: RawRecord) -> Result<AlertRecord, String> {
        let what = format!(
            "evidence of a {} {} alert",
            r.status.as_str(),
            r.kind.as_str()
        );
        let evidence = match (r.status, r.kind) {
            (Status::Resolved, _) => {
                serde_json::from_value(r.evidence).map(RecordEvidence::Resolved)
            }
            (Status::Firing, AlertKind::NotActivated) => {
                serde_json::from_value(r.evidence).map(RecordEvidence::NotActivated)
            }
            (Status::Firing, AlertKind::Inactive) => {
                serde_json::from_value(r.evidence).map(RecordEvidence::Inactive)
            }
            (Status::Firing, AlertKind::ActivityDrop) => {
                serde_json::from_value(r.evidence).map(RecordEvidence::ActivityDrop)
            }
        }
        .map_err(|e| format!("{what}: {e}"))?;
        let account = match r.account {
            None => None,
            Some(mut m) => {
                m.insert("account_id".into(), r.account_id.clone().into());
                Some(
                    serde_json::from_value(Value::Object(m))
                        .map_err(|e| format!("account: {e}"))?,
                )
            }
        };
        Ok(AlertRecord {
            id: r.id,
            account_id: r.account_id,
            kind: r.kind,
            status: r.status,
            severity: r.severity,
            event_time: r.event_time,
            emitted_at: r.emitted_at,
            summary: r.summary,
            evidence,
            account,
        })
    }
}

/// The `account` object: the metadata without the id, as [`AccountMeta::to_json`]
/// writes it.
fn serialize_account<S: Serializer>(m: &Option<AccountMeta>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => m.to_json().serialize(s),
        None => s.serialize_none(),
    }
}

/// A float written by serde_json: a non-finite one was written as `null`.
fn number_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Times as RFC 3339 strings (`2026-03-05T00:00:00.000Z`).
mod rfc3339 {
    use super::*;
    use crate::time::{format_rfc3339, parse_rfc3339};

    pub fn serialize<S: Serializer>(t: &Millis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        let s = String::deserialize(d)?;
        parse_rfc3339(&s).map_err(|e| D::Error::custom(format!("time {s:?}: {e}")))
    }
}

/// Serializes an enum of the record as its name (`as_str`) and reads it back.
macro_rules! by_name {
    ($t:ty, $what:literal, [$($v:expr),+ $(,)?]) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                [$($v),+]
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| D::Error::custom(format!(concat!("unknown ", $what, " {:?}"), s)))
            }
        }
    };
}

by_name!(
    AlertKind,
    "kind",
    [
        AlertKind::NotActivated,
        AlertKind::Inactive,
        AlertKind::ActivityDrop
    ]
);
by_name!(Status, "status", [Status::Firing, Status::Resolved]);
by_name!(
    ResolveReason,
    "resolution reason",
    [
        ResolveReason::Activated,
        ResolveReason::ActivityResumed,
        ResolveReason::Recovered,
        ResolveReason::Churned
    ]
);

#[cfg(test)]
mod tests {
    use super::*;

    const DROP: &str = r#"{"id":"acme-42/activity_drop/2026-03-04","account_id":"acme-42","kind":"activity_drop","status":"firing","severity":"warning","event_time":"2026-03-05T00:00:00.000Z","emitted_at":"2026-03-05T00:10:02.311Z","summary":"Activity dropped 83% over the last 7 days (12 events vs 71.5 expected, p=2.1e-9)","evidence":{"observed":12,"expected":71.5,"drop_pct":0.8321678321678322,"p_value":2.1e-9,"model":"negative_binomial","recent_days":7,"baseline_days":28},"account":{"segment":"smb","name":"Acme","owner_email":"ana@x.io","mrr":1200.0}}"#;

    #[test]
    fn a_published_record_reads_and_writes_back_byte_for_byte() {
        let r: AlertRecord = serde_json::from_str(DROP).unwrap();
        assert_eq!(r.kind, AlertKind::ActivityDrop);
        assert_eq!(r.account_name(), "Acme");
        let RecordEvidence::ActivityDrop(e) = &r.evidence else {
            panic!("{:?}", r.evidence)
        };
        assert_eq!((e.observed, e.model), (12, Model::NegativeBinomial));
        assert_eq!(serde_json::to_string(&r).unwrap(), DROP);
        let resolved = r#"{"id":"a/inactive/2026-03-01","account_id":"a","kind":"inactive","status":"resolved","severity":"warning","event_time":"2026-03-20T00:00:00.000Z","emitted_at":"2026-03-20T00:00:00.000Z","summary":"Activity resumed after 19 idle days","evidence":{"reason":"activity_resumed"}}"#;
        let r: AlertRecord = serde_json::from_str(resolved).unwrap();
        assert_eq!(
            r.evidence,
            RecordEvidence::Resolved(ResolvedEvidence {
                reason: ResolveReason::ActivityResumed
            })
        );
        assert_eq!(serde_json::to_string(&r).unwrap(), resolved);
    }

    #[test]
    fn a_malformed_record_is_refused_saying_what_is_wrong() {
        let with = |from: &str, to: &str| {
            assert!(DROP.contains(from));
            serde_json::from_str::<AlertRecord>(&DROP.replacen(from, to, 1))
                .unwrap_err()
                .to_string()
        };
        for (from, to, want) in [
            (
                r#""kind":"activity_drop""#,
                r#""kind":"dormant""#,
                "unknown kind \"dormant\"",
            ),
            (
                r#""status":"firing""#,
                r#""status":"open""#,
                "unknown status",
            ),
            (
                r#""severity":"warning""#,
                r#""severity":"loud""#,
                "unknown variant",
            ),
            (
                "2026-03-05T00:00:00.000Z",
                "yesterday",
                "time \"yesterday\"",
            ),
            (
                r#""observed":12,"#,
                "",
                "evidence of a firing activity_drop alert: missing field `observed`",
            ),
            (
                r#""status":"firing""#,
                r#""status":"resolved""#,
                "evidence of a resolved activity_drop alert: missing field `reason`",
            ),
            (r#""name":"Acme""#, r#""name":7"#, "account: invalid type"),
            (r#""summary":"#, r#""summery":"#, "missing field `summary`"),
        ] {
            let e = with(from, to);
            assert!(e.contains(want), "{from} -> {to}: {e}");
        }
        assert!(serde_json::from_str::<AlertRecord>("[1]").is_err());
        // Fields a newer writer adds are ignored.
        let r: AlertRecord =
            serde_json::from_str(&DROP.replacen("{\"id\"", "{\"new\":1,\"id\"", 1)).unwrap();
        assert_eq!(r.id, "acme-42/activity_drop/2026-03-04");
    }
}
