//! Account metadata: who owns an account and what it is worth (used by the detector,
//! the notifier and the backtest alike; `topic.rs` reads and follows its Kafka topic). Loaded from CSV
//! (header row) or JSON (an array, or one object per line); attached to alert records
//! under `account` and used for routing.

mod topic;
pub use topic::load;

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

/// What churnwatch knows about an account besides its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountMeta {
    pub account_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Email of the owning CSM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_email: Option<String>,
    /// Chat handle of the owning CSM (a Slack member id such as `U024BE7LH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_chat: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Monthly recurring revenue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrr: Option<f64>,
    /// IANA time zone of the owner, e.g. `Europe/Berlin` (for digests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Link to the account in the CRM (else built from `notify.crm_url_template`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_url: Option<String>,
    /// Next renewal, `YYYY-MM-DD` (the closer, the higher the priority).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_date: Option<String>,
    /// Annual recurring revenue (else 12 x `mrr` where revenue matters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arr: Option<f64>,
    /// Seats bought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats: Option<u64>,
    /// Customer segment (`smb`, `mid-market`, `enterprise`, ...): a filter and a route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
}

/// Longest account id, name, plan or time zone accepted from metadata.
pub const MAX_META_TEXT: usize = 256;
/// Longest CRM link accepted from metadata.
pub const MAX_META_URL: usize = 2048;

/// Whether `addr` is one bare email address (`ana@example.com`): no display name, no
/// angle brackets, no list, no whitespace; a CRM value like `CSM <x@evil.example>`
/// or `a@x.com, b@y.com` is refused rather than guessed at.
pub fn is_bare_address(addr: &str) -> bool {
    !addr.is_empty()
        && addr.len() <= 254
        && !addr
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"()[]\\".contains(c))
        && addr.parse::<lettre::Address>().is_ok()
}

impl AccountMeta {
    /// Checks the fields a person or a mail server will see: bounded lengths, no
    /// control characters, a bare owner address, a Slack member id as chat handle, a
    /// finite non-negative MRR.
    pub fn validate(&self) -> Result<(), String> {
        let text = |field: &str, v: &str, max: usize| -> Result<(), String> {
            if v.chars().count() > max {
                return Err(format!("{field} is longer than {max} characters"));
            }
            if v.chars().any(char::is_control) {
                return Err(format!("{field} contains a control character"));
            }
            Ok(())
        };
        text("account_id", &self.account_id, MAX_META_TEXT)?;
        for (field, v) in [
            ("name", &self.name),
            ("plan", &self.plan),
            ("timezone", &self.timezone),
            ("segment", &self.segment),
        ] {
            if let Some(v) = v {
                text(field, v, MAX_META_TEXT)?;
            }
        }
        if let Some(u) = &self.crm_url {
            text("crm_url", u, MAX_META_URL)?;
        }
        if let Some(e) = self.owner_email.as_deref().filter(|e| !e.is_empty()) {
            if !is_bare_address(e) {
                return Err(format!(
                    "owner_email {:?} is not one bare address like ana@example.com",
                    crate::notify::render::escape::cut(e, 80)
                ));
            }
        }
        if let Some(c) = self.owner_chat.as_deref().filter(|c| !c.is_empty()) {
            if c.len() > 32
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            {
                return Err(format!(
                    "owner_chat {:?} is not a Slack member id like U024BE7LH",
                    crate::notify::render::escape::cut(c, 40)
                ));
            }
        }
        for (field, v) in [("mrr", self.mrr), ("arr", self.arr)] {
            if let Some(m) = v {
                if !m.is_finite() || m < 0.0 {
                    return Err(format!("{field} {m} is not a non-negative number"));
                }
            }
        }
        if let Some(d) = &self.renewal_date {
            crate::time::parse_date(d).map_err(|e| format!("renewal_date {e}"))?;
        }
        if self.seats.is_some_and(|n| n > 100_000_000) {
            return Err("seats is not a plausible number (over 100 million)".into());
        }
        Ok(())
    }

    /// The record's `account` object: the metadata without the id.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("metadata serializes");
        v.as_object_mut().expect("an object").remove("account_id");
        v
    }

    /// A routing label of the account (`owner`, `plan`, `name`, `timezone`, `mrr`).
    pub fn label(&self, key: &str) -> Option<String> {
        match key {
            "owner" | "owner_email" => self.owner_email.clone(),
            "owner_chat" => self.owner_chat.clone(),
            "plan" => self.plan.clone(),
            "name" => self.name.clone(),
            "timezone" => self.timezone.clone(),
            "mrr" => self.mrr.map(|m| m.to_string()),
            "arr" => self.arr.map(|m| m.to_string()),
            "seats" => self.seats.map(|m| m.to_string()),
            "segment" => self.segment.clone(),
            "renewal_date" => self.renewal_date.clone(),
            _ => None,
        }
        .filter(|v| !v.is_empty())
    }
}

/// A metadata file that cannot be used, with the place of the problem.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}, record {record}: {msg}")]
    Record {
        path: String,
        record: usize,
        msg: String,
    },
}

/// Account metadata by account id.
#[derive(Debug, Clone, Default)]
pub struct MetaStore {
    by_id: HashMap<String, AccountMeta>,
}

impl MetaStore {
    pub fn get(&self, account_id: &str) -> Option<&AccountMeta> {
        self.by_id.get(account_id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every account's metadata, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &AccountMeta> {
        self.by_id.values()
    }

    /// Adds or replaces one account's metadata.
    pub fn upsert(&mut self, m: AccountMeta) {
        self.by_id.insert(m.account_id.clone(), m);
    }

    /// Loads a `.csv` file (header row with the field names) or JSON (`[...]` or one
    /// object per line). Empty CSV cells mean unknown.
    pub fn load(path: &Path) -> Result<MetaStore, MetaError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| MetaError::Read {
            path: p.clone(),
            source,
        })?;
        let rec_err = |record: usize, msg: String| MetaError::Record {
            path: p.clone(),
            record,
            msg,
        };
        let mut store = MetaStore::default();
        let records: Vec<AccountMeta> = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            let mut r = csv::ReaderBuilder::new()
                .trim(csv::Trim::All)
                .from_reader(text.as_bytes());
            let headers = r.headers().map_err(|e| rec_err(0, e.to_string()))?.clone();
            let mut out = Vec::new();
            for (i, row) in r.records().enumerate() {
                let row = row.map_err(|e| rec_err(i + 1, e.to_string()))?;
                let mut obj = serde_json::Map::new();
                for (h, v) in headers.iter().zip(row.iter()) {
                    if v.is_empty() {
                        continue;
                    }
                    let value = match h {
                        "mrr" | "arr" => {
                            serde_json::Value::from(v.parse::<f64>().map_err(|_| {
                                rec_err(i + 1, format!("{h} {v:?} is not a number"))
                            })?)
                        }
                        "seats" => serde_json::Value::from(v.parse::<u64>().map_err(|_| {
                            rec_err(i + 1, format!("seats {v:?} is not a whole number"))
                        })?),
                        _ => serde_json::Value::from(v),
                    };
                    obj.insert(h.to_string(), value);
                }
                out.push(
                    serde_json::from_value(serde_json::Value::Object(obj))
                        .map_err(|e| rec_err(i + 1, e.to_string()))?,
                );
            }
            out
        } else if text.trim_start().starts_with('[') {
            serde_json::from_str(&text).map_err(|e| rec_err(0, e.to_string()))?
        } else {
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| serde_json::from_str(l).map_err(|e| rec_err(i + 1, e.to_string())))
                .collect::<Result<_, _>>()?
        };
        for (i, m) in records.into_iter().enumerate() {
            if m.account_id.is_empty() {
                return Err(rec_err(i + 1, "account_id is empty".into()));
            }
            m.validate().map_err(|e| rec_err(i + 1, e))?;
            store.upsert(m);
        }
        Ok(store)
    }
}

/// Looks up an account's metadata (the `account` of its alert records).
pub trait AccountLookup {
    fn account(&self, account_id: &str) -> Option<AccountMeta>;
}

impl AccountLookup for MetaStore {
    fn account(&self, account_id: &str) -> Option<AccountMeta> {
        self.get(account_id).cloned()
    }
}

/// Account metadata that changes while the process runs: the file's entries, overlaid
/// by the entries of the accounts topic (a topic entry wins; a tombstone removes the
/// topic's entry, so the file's, if any, applies again).
#[derive(Debug, Default)]
pub struct Accounts {
    file: MetaStore,
    topic: RwLock<HashMap<String, AccountMeta>>,
}

impl Accounts {
    pub fn new(file: MetaStore) -> Accounts {
        Accounts {
            file,
            topic: RwLock::default(),
        }
    }

    pub fn get(&self, account_id: &str) -> Option<AccountMeta> {
        if let Some(m) = self
            .topic
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(account_id)
        {
            return Some(m.clone());
        }
        self.file.get(account_id).cloned()
    }

    /// Applies one record of the accounts topic: metadata, or None for a tombstone.
    pub fn apply(&self, account_id: &str, meta: Option<AccountMeta>) {
        let mut t = self.topic.write().unwrap_or_else(|p| p.into_inner());
        match meta {
            Some(m) => t.insert(account_id.to_string(), m),
            None => t.remove(account_id),
        };
    }

    /// Accounts with metadata.
    pub fn len(&self) -> usize {
        let t = self.topic.read().unwrap_or_else(|p| p.into_inner());
        t.len()
            + self
                .file
                .by_id
                .keys()
                .filter(|k| !t.contains_key(*k))
                .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl AccountLookup for Accounts {
    fn account(&self, account_id: &str) -> Option<AccountMeta> {
        self.get(account_id)
    }
}

/// Reads one record of the accounts topic: key = account id, value = the JSON object
/// of the metadata file's format (its `account_id`, if any, must equal the key), or
/// null for a tombstone. Returns the account id and its metadata (None: delete).
pub fn parse_topic_record(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<(String, Option<AccountMeta>), String> {
    let id = match key.map(std::str::from_utf8) {
        None => return Err("no key (the key must be the account id)".into()),
        Some(Err(_)) => return Err("the key is not UTF-8".into()),
        Some(Ok("")) => return Err("empty key (the key must be the account id)".into()),
        Some(Ok(k)) => k.to_string(),
    };
    let Some(value) = value else {
        return Ok((id, None));
    };
    let mut v: serde_json::Value =
        serde_json::from_slice(value).map_err(|e| format!("value is not JSON: {e}"))?;
    let Some(obj) = v.as_object_mut() else {
        return Err("value is not a JSON object".into());
    };
    match obj.get("account_id") {
        None => {
            obj.insert("account_id".into(), id.clone().into());
        }
        Some(serde_json::Value::String(a)) if *a == id => {}
        Some(other) => {
            return Err(format!(
                "account_id {other} in the value differs from the key {id:?}"
            ))
        }
    }
    let m: AccountMeta = serde_json::from_value(v).map_err(|e| e.to_string())?;
    m.validate()?;
    Ok((id, Some(m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_metadata_is_refused_with_the_record_named() {
        let dir = tempfile::tempdir().unwrap();
        for (line, want) in [
            (
                r#"{"account_id":"a","owner_email":"CSM <attacker@evil.example>"}"#,
                "bare address",
            ),
            (
                r#"{"account_id":"a","owner_email":"ana@example.com, x@evil.example"}"#,
                "bare address",
            ),
            (
                r#"{"account_id":"a","owner_email":"ana@example.com\r\nBcc: x@evil.example"}"#,
                "bare address",
            ),
            (
                r#"{"account_id":"a","owner_chat":"!channel"}"#,
                "Slack member id",
            ),
            (
                r#"{"account_id":"a","name":"line\nforged"}"#,
                "control character",
            ),
            (r#"{"account_id":"a","mrr":-5}"#, "non-negative"),
        ] {
            let p = dir.path().join("m.ndjson");
            std::fs::write(&p, format!("{{\"account_id\":\"ok\"}}\n{line}\n")).unwrap();
            let e = MetaStore::load(&p).unwrap_err().to_string();
            assert!(e.contains("record 2") && e.contains(want), "{line}: {e}");
            let topic = parse_topic_record(Some(b"a"), Some(line.as_bytes()));
            assert!(topic.unwrap_err().contains(want));
        }
        let long = format!(r#"{{"account_id":"a","name":"{}"}}"#, "x".repeat(300));
        assert!(parse_topic_record(Some(b"a"), Some(long.as_bytes()))
            .unwrap_err()
            .contains("longer than"));
        assert!(is_bare_address("ana.m+csm@example.co.uk"));
        for (line, want) in [
            (
                r#"{"account_id":"a","renewal_date":"next spring"}"#,
                "renewal_date",
            ),
            (r#"{"account_id":"a","arr":-1}"#, "arr"),
            (r#"{"account_id":"a","seats":1000000000}"#, "seats"),
        ] {
            let e = parse_topic_record(Some(b"a"), Some(line.as_bytes())).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
        let csv = dir.path().join("m.csv");
        std::fs::write(
            &csv,
            "account_id,arr,seats,segment,renewal_date\nacme,120000,40,enterprise,2027-01-31\n",
        )
        .unwrap();
        let m = MetaStore::load(&csv).unwrap();
        let a = m.get("acme").unwrap();
        assert_eq!((a.arr, a.seats), (Some(120000.0), Some(40)));
        assert_eq!(a.label("segment").as_deref(), Some("enterprise"));
        assert_eq!(a.renewal_date.as_deref(), Some("2027-01-31"));
        let bad = dir.path().join("b.csv");
        std::fs::write(&bad, "account_id,seats\nacme,many\n").unwrap();
        assert!(MetaStore::load(&bad)
            .unwrap_err()
            .to_string()
            .contains("record 1"));
    }

    #[test]
    fn loads_csv_json_and_ndjson_alike() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("a.csv");
        std::fs::write(
            &csv,
            "account_id,name,owner_email,owner_chat,plan,mrr,timezone\n\
             acme-42, Acme Corp ,ana@example.com,U1,growth,1250.5,Europe/Berlin\n\
             solo-1,,,,starter,,\n",
        )
        .unwrap();
        let json = dir.path().join("a.json");
        std::fs::write(
            &json,
            r#"[{"account_id":"acme-42","name":"Acme Corp","owner_email":"ana@example.com","owner_chat":"U1","plan":"growth","mrr":1250.5,"timezone":"Europe/Berlin"},{"account_id":"solo-1","plan":"starter"}]"#,
        )
        .unwrap();
        let nd = dir.path().join("a.ndjson");
        std::fs::write(
            &nd,
            "{\"account_id\":\"acme-42\",\"name\":\"Acme Corp\",\"owner_email\":\"ana@example.com\",\"owner_chat\":\"U1\",\"plan\":\"growth\",\"mrr\":1250.5,\"timezone\":\"Europe/Berlin\"}\n\n{\"account_id\":\"solo-1\",\"plan\":\"starter\"}\n",
        )
        .unwrap();
        for p in [&csv, &json, &nd] {
            let s = MetaStore::load(p).unwrap();
            assert_eq!(s.len(), 2);
            let a = s.get("acme-42").unwrap();
            assert_eq!(a.name.as_deref(), Some("Acme Corp"));
            assert_eq!(a.mrr, Some(1250.5));
            assert_eq!(a.label("owner").as_deref(), Some("ana@example.com"));
            assert_eq!(s.get("solo-1").unwrap().label("owner"), None);
            assert!(a.to_json().get("account_id").is_none());
        }
    }

    #[test]
    fn bad_records_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("a.csv");
        std::fs::write(&csv, "account_id,mrr\nacme,lots\n").unwrap();
        let e = MetaStore::load(&csv).unwrap_err().to_string();
        assert!(e.contains("record 1") && e.contains("lots"), "{e}");
        let nd = dir.path().join("a.ndjson");
        std::fs::write(
            &nd,
            "{\"account_id\":\"a\"}\n{\"account_id\":\"b\",\"owner\":\"x\"}\n",
        )
        .unwrap();
        let e = MetaStore::load(&nd).unwrap_err().to_string();
        assert!(e.contains("record 2") && e.contains("owner"), "{e}");
    }

    #[test]
    fn topic_entries_override_the_file_and_tombstones_remove_them() {
        let mut file = MetaStore::default();
        file.upsert(AccountMeta {
            account_id: "acme".into(),
            owner_email: Some("ana@example.com".into()),
            ..Default::default()
        });
        let a = Accounts::new(file);
        assert_eq!(a.len(), 1);
        let (id, m) = parse_topic_record(
            Some(b"acme"),
            Some(br#"{"owner_email":"ben@example.com","timezone":"Europe/Berlin"}"#),
        )
        .unwrap();
        a.apply(&id, m);
        let (id, m) = parse_topic_record(
            Some(b"globex"),
            Some(br#"{"account_id":"globex","plan":"growth","mrr":99}"#),
        )
        .unwrap();
        a.apply(&id, m);
        assert_eq!(a.len(), 2);
        assert_eq!(
            a.get("acme").unwrap().owner_email.as_deref(),
            Some("ben@example.com")
        );
        assert_eq!(
            a.account("globex").unwrap().to_json(),
            serde_json::json!({"plan": "growth", "mrr": 99.0})
        );
        let (id, m) = parse_topic_record(Some(b"acme"), None).unwrap();
        assert!(m.is_none());
        a.apply(&id, m);
        a.apply("globex", None);
        // The file's entry applies again; globex is gone.
        assert_eq!(
            a.get("acme").unwrap().owner_email.as_deref(),
            Some("ana@example.com")
        );
        assert!(a.get("globex").is_none());
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn bad_topic_records_say_what_is_wrong() {
        type Case<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, &'a str);
        let cases: [Case; 6] = [
            (None, Some(b"{}"), "no key"),
            (Some(b"a"), Some(b"{not json"), "not JSON"),
            (Some(b"a"), Some(b"[1]"), "not a JSON object"),
            (
                Some(b"a"),
                Some(br#"{"colour":"red"}"#),
                "unknown field `colour`",
            ),
            (Some(b"a"), Some(br#"{"mrr":"lots"}"#), "invalid type"),
            (
                Some(b"a"),
                Some(br#"{"account_id":"b"}"#),
                "differs from the key",
            ),
        ];
        for (k, v, want) in cases {
            let e = parse_topic_record(k, v).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
