//! Parsing one input message into an event, or a named rejection.
//!
//! The configured JSON pointers are compiled into a small tree; a scanner
//! (`super::json`) checks the whole document once, captures only the four fields
//! (borrowed where the JSON has no escapes) and skips everything else in place.

use std::borrow::Cow;

use super::json::{Node, Val};
use crate::config::InputConfig;
use crate::time::{format_rfc3339, parse_rfc3339, Millis, MAX_TS, MIN_TS};

/// Longest accepted account id or event name, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// The input fields, in slot order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    AccountId = 0,
    Event = 1,
    Ts = 2,
    UserId = 3,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::AccountId => "account_id",
            Field::Event => "event",
            Field::Ts => "ts",
            Field::UserId => "user_id",
        }
    }
    const ALL: [Field; 4] = [Field::AccountId, Field::Event, Field::Ts, Field::UserId];
}

/// Why a message was rejected. `as_str` is the stable label used in metrics,
/// dead-letter headers and reject files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("message is {size} bytes, above the limit of {limit}")]
    Oversized { size: usize, limit: usize },
    #[error("message is not valid UTF-8 (first bad byte at offset {0})")]
    InvalidUtf8(usize),
    #[error("message is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("message is JSON but not an object")]
    NotObject,
    #[error("required field {0} (at {1}) is missing")]
    MissingField(&'static str, String),
    #[error("field {0} has the wrong type: expected {1}, got {2}")]
    WrongType(&'static str, &'static str, &'static str),
    #[error("field ts is not a valid timestamp: {0}")]
    BadTimestamp(String),
    #[error("field {0} is empty")]
    EmptyField(&'static str),
    #[error("field {0} is {1} bytes, above the limit of 256")]
    FieldTooLong(&'static str, usize),
    #[error("field {0} contains control character U+{1:04X} at byte {2}")]
    InvalidId(&'static str, u8, usize),
    #[error("ts {ts} is more than {max_future} after the clock ({now})")]
    FutureTimestamp {
        ts: String,
        now: String,
        max_future: String,
    },
    #[error("a new account, and this shard already tracks its limit of {0} accounts (engine.max_accounts_per_partition)")]
    AccountLimit(usize),
    #[error("the account has no account metadata (engine.known_accounts_only)")]
    UnknownAccount,
}

impl RejectReason {
    /// Stable snake_case label.
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::Oversized { .. } => "oversized",
            RejectReason::InvalidUtf8(_) => "invalid_utf8",
            RejectReason::InvalidJson(_) => "invalid_json",
            RejectReason::NotObject => "not_object",
            RejectReason::MissingField(..) => "missing_field",
            RejectReason::WrongType(..) => "wrong_type",
            RejectReason::BadTimestamp(_) => "bad_timestamp",
            RejectReason::EmptyField(_) => "empty_field",
            RejectReason::FieldTooLong(..) => "field_too_long",
            RejectReason::InvalidId(..) => "invalid_id",
            RejectReason::FutureTimestamp { .. } => "future_timestamp",
            RejectReason::AccountLimit(_) => "account_limit",
            RejectReason::UnknownAccount => "unknown_account",
        }
    }

    /// Every label, for pre-registering metrics and summaries.
    pub const LABELS: [&'static str; 13] = [
        "oversized",
        "invalid_utf8",
        "invalid_json",
        "not_object",
        "missing_field",
        "wrong_type",
        "bad_timestamp",
        "empty_field",
        "field_too_long",
        "invalid_id",
        "future_timestamp",
        "account_limit",
        "unknown_account",
    ];
}

/// One accepted input event, borrowing from the message where it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent<'a> {
    pub account_id: Cow<'a, str>,
    pub event: Cow<'a, str>,
    pub ts: Millis,
    /// `None` when the field is missing, null or empty.
    pub user_id: Option<Cow<'a, str>>,
}

/// Compiled field locations; cheap to share.
#[derive(Debug, Clone)]
pub struct EventParser {
    root: Node,
    pointers: [String; 4],
    max_bytes: usize,
    max_future: Millis,
}

fn unescape(seg: &str) -> String {
    seg.replace("~1", "/").replace("~0", "~")
}

impl EventParser {
    /// Compiles the pointers of `cfg`. Fails if one pointer lies inside another.
    pub fn new(cfg: &InputConfig) -> Result<EventParser, String> {
        let pointers = [
            cfg.account_id.clone(),
            cfg.event.clone(),
            cfg.ts.clone(),
            cfg.user_id.clone(),
        ];
        let mut root = Node::default();
        for (slot, p) in pointers.iter().enumerate() {
            let segs: Vec<String> = p
                .strip_prefix('/')
                .ok_or_else(|| format!("{p:?} is not a JSON pointer (it must start with /)"))?
                .split('/')
                .map(unescape)
                .collect();
            let mut node = &mut root;
            for seg in &segs {
                if node.leaf.is_some() {
                    return Err(format!("pointer {p:?} lies inside another field"));
                }
                let pos = match node.children.iter().position(|(k, _)| k == seg) {
                    Some(i) => i,
                    None => {
                        node.children.push((seg.clone(), Node::default()));
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[pos].1;
            }
            if node.leaf.is_some() || !node.children.is_empty() {
                return Err(format!("pointer {p:?} overlaps another field"));
            }
            node.leaf = Some(slot);
        }
        Ok(EventParser {
            root,
            pointers,
            max_bytes: cfg.max_event_bytes,
            max_future: cfg.max_future.0,
        })
    }

    /// Parses one message read when the clock said `now` (epoch ms): [`Self::parse`],
    /// then rejects an event dated more than `input.max_future` after `now`.
    pub fn parse_at<'a>(&self, msg: &'a [u8], now: Millis) -> Result<RawEvent<'a>, RejectReason> {
        let ev = self.parse(msg)?;
        if ev.ts > now.saturating_add(self.max_future) {
            return Err(RejectReason::FutureTimestamp {
                ts: format_rfc3339(ev.ts),
                now: format_rfc3339(now.clamp(MIN_TS, MAX_TS)),
                max_future: crate::config::Duration(self.max_future).to_string(),
            });
        }
        Ok(ev)
    }

    /// Parses one message, with no clock: everything but the `future_timestamp` check
    /// (see [`Self::parse_at`]).
    pub fn parse<'a>(&self, msg: &'a [u8]) -> Result<RawEvent<'a>, RejectReason> {
        if msg.len() > self.max_bytes {
            return Err(RejectReason::Oversized {
                size: msg.len(),
                limit: self.max_bytes,
            });
        }
        let text = if ascii(msg) {
            // SAFETY: ASCII is UTF-8.
            unsafe { std::str::from_utf8_unchecked(msg) }
        } else {
            std::str::from_utf8(msg).map_err(|e| RejectReason::InvalidUtf8(e.valid_up_to()))?
        };
        let mut slots: [Option<Val<'a>>; 4] = [None, None, None, None];
        let is_object = super::json::scan(text, &self.root, &mut slots)
            .map_err(|e| RejectReason::InvalidJson(e.to_string()))?;
        if !is_object {
            return Err(RejectReason::NotObject);
        }
        let [a, e, t, u] = slots;
        let account_id = self.required_str(Field::AccountId, a)?;
        let event = self.required_str(Field::Event, e)?;
        let ts = match t {
            None => return Err(self.missing(Field::Ts)),
            Some(Val::Null) => return Err(self.missing(Field::Ts)),
            Some(Val::Int(ms)) if (MIN_TS..=MAX_TS).contains(&ms) => ms,
            Some(Val::Int(ms)) => {
                return Err(RejectReason::BadTimestamp(format!(
                    "epoch milliseconds {ms} outside years 0000-9999"
                )))
            }
            Some(Val::Str(s)) => parse_rfc3339(&s)
                .map_err(|err| RejectReason::BadTimestamp(format!("{}: {err}", clip(&s))))?,
            Some(Val::Other(got)) => {
                return Err(RejectReason::WrongType(
                    "ts",
                    "RFC 3339 string or integer epoch milliseconds",
                    got,
                ))
            }
        };
        let user_id = match u {
            None | Some(Val::Null) => None,
            Some(Val::Str(s)) if s.is_empty() => None,
            Some(Val::Str(s)) => Some(s),
            Some(Val::Int(_)) => {
                return Err(RejectReason::WrongType("user_id", "string", "integer"))
            }
            Some(Val::Other(got)) => return Err(RejectReason::WrongType("user_id", "string", got)),
        };
        check_id(Field::AccountId, &account_id)?;
        if let Some(u) = &user_id {
            check_id(Field::UserId, u)?;
        }
        Ok(RawEvent {
            account_id,
            event,
            ts,
            user_id,
        })
    }

    fn missing(&self, f: Field) -> RejectReason {
        RejectReason::MissingField(f.name(), self.pointers[f as usize].clone())
    }

    fn required_str<'a>(&self, f: Field, v: Option<Val<'a>>) -> Result<Cow<'a, str>, RejectReason> {
        match v {
            None | Some(Val::Null) => Err(self.missing(f)),
            Some(Val::Str(s)) if s.is_empty() => Err(RejectReason::EmptyField(f.name())),
            Some(Val::Str(s)) if s.len() > MAX_ID_BYTES => {
                Err(RejectReason::FieldTooLong(f.name(), s.len()))
            }
            Some(Val::Str(s)) => Ok(s),
            Some(Val::Int(_)) => Err(RejectReason::WrongType(f.name(), "string", "integer")),
            Some(Val::Other(got)) => Err(RejectReason::WrongType(f.name(), "string", got)),
        }
    }

    /// The configured pointer of a field.
    pub fn pointer(&self, f: Field) -> &str {
        &self.pointers[f as usize]
    }

    /// All fields with their pointers.
    pub fn fields(&self) -> impl Iterator<Item = (Field, &str)> {
        Field::ALL.iter().map(|&f| (f, self.pointer(f)))
    }
}

/// Rejects an id holding a C0 control character or DEL: ids end up in keys, logs,
/// links and messages, where such characters break lines or hide text.
#[inline]
fn check_id(f: Field, id: &str) -> Result<(), RejectReason> {
    if !has_control(id.as_bytes()) {
        return Ok(());
    }
    let at = id
        .bytes()
        .position(is_control)
        .expect("has_control found one");
    Err(RejectReason::InvalidId(f.name(), id.as_bytes()[at], at))
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// Whether any byte is a control character, eight bytes per step: a byte below 0x20
/// borrows into its high bit when 0x20 is subtracted (`x - 0x20 & !x & 0x80`), and DEL
/// is the byte that XOR 0x7f turns to zero. A borrow can only mark bytes above a byte
/// that matched, so the answer is exact.
#[inline]
fn has_control(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let word = |x: u64| {
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let y = x ^ (ONES * 0x7f);
        let del = y.wrapping_sub(ONES) & !y & HIGH;
        below_space | del != 0
    };
    if b.len() < 8 {
        return b.iter().any(|&x| is_control(x));
    }
    let load = |c: &[u8]| u64::from_le_bytes(c.try_into().expect("8 bytes"));
    // Whole words, then the last eight bytes (overlapping the last word).
    b.chunks_exact(8).any(|c| word(load(c))) || word(load(&b[b.len() - 8..]))
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(40);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if end < s.len() {
        format!("{:?}...", &s[..end])
    } else {
        format!("{s:?}")
    }
}

/// Whether `b` is all ASCII: one pass of wide ORs that the compiler vectorises, several
/// times faster on event-sized messages than `from_utf8`'s general loop, which then
/// only runs for the others.
#[inline]
fn ascii(b: &[u8]) -> bool {
    let mut acc = 0u64;
    let mut chunks = b.chunks_exact(32);
    for c in &mut chunks {
        for w in c.chunks_exact(8) {
            acc |= u64::from_le_bytes(w.try_into().expect("8 bytes"));
        }
    }
    let mut last = 0u8;
    for &x in chunks.remainder() {
        last |= x;
    }
    (acc & 0x8080_8080_8080_8080) == 0 && last < 0x80
}

/// The deserializer the scanner replaced (`serde_json` with seeds), kept as the
/// reference the property test compares the scanner with.
#[cfg(test)]
mod serde_reference {
    use super::*;
    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    pub fn scan<'a>(
        text: &'a str,
        root: &Node,
        slots: &mut [Option<Val<'a>>; 4],
    ) -> Result<bool, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        Root { node: root, slots }
            .deserialize(&mut de)
            .and_then(|o| de.end().map(|_| o))
    }

    /// Seed for the document root: reports whether it was an object.
    struct Root<'n, 's, 'de> {
        node: &'n Node,
        slots: &'s mut [Option<Val<'de>>; 4],
    }

    impl<'de> DeserializeSeed<'de> for Root<'_, '_, 'de> {
        type Value = bool;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_any(NodeVisitor {
                node: self.node,
                slots: self.slots,
            })
        }
    }

    /// Seed for a value at a node of the pointer tree.
    struct NodeSeed<'n, 's, 'de> {
        node: &'n Node,
        slots: &'s mut [Option<Val<'de>>; 4],
    }

    impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_, 'de> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            if let Some(slot) = self.node.leaf {
                self.slots[slot] = Some(d.deserialize_any(LeafVisitor)?);
                Ok(())
            } else {
                d.deserialize_any(NodeVisitor {
                    node: self.node,
                    slots: self.slots,
                })
                .map(|_| ())
            }
        }
    }

    /// Seed for an object key: finds the wanted child, if any, without copying the key.
    struct KeySeed<'n>(&'n Node);

    impl<'de, 'n> DeserializeSeed<'de> for KeySeed<'n> {
        type Value = Option<&'n Node>;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de, 'n> Visitor<'de> for KeySeed<'n> {
        type Value = Option<&'n Node>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object key")
        }
        fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
            Ok(self
                .0
                .children
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, n)| n))
        }
    }

    /// Walks an object (or array) at an inner node, descending into wanted keys only.
    struct NodeVisitor<'n, 's, 'de> {
        node: &'n Node,
        slots: &'s mut [Option<Val<'de>>; 4],
    }

    macro_rules! not_container {
        ($($method:ident: $t:ty),*) => {$(
            fn $method<E: de::Error>(self, _: $t) -> Result<bool, E> { Ok(false) }
        )*};
    }

    impl<'de> Visitor<'de> for NodeVisitor<'_, '_, 'de> {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON value")
        }
        not_container!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            while let Some(wanted) = map.next_key_seed(KeySeed(self.node))? {
                match wanted {
                    Some(child) => map.next_value_seed(NodeSeed {
                        node: child,
                        slots: &mut *self.slots,
                    })?,
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(true)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            let mut index = 0usize;
            loop {
                let wanted = self
                    .node
                    .children
                    .iter()
                    .find(|(k, _)| k.parse::<usize>().ok() == Some(index));
                let more = match wanted {
                    Some((_, child)) => seq
                        .next_element_seed(NodeSeed {
                            node: child,
                            slots: &mut *self.slots,
                        })?
                        .is_some(),
                    None => seq.next_element::<IgnoredAny>()?.is_some(),
                };
                if !more {
                    return Ok(false);
                }
                index += 1;
            }
        }
    }

    /// Captures a leaf: strings (borrowed if unescaped), integers, null; names other types.
    struct LeafVisitor;

    impl<'de> Visitor<'de> for LeafVisitor {
        type Value = Val<'de>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Val<'de>, E> {
            Ok(Val::Str(Cow::Borrowed(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Val<'de>, E> {
            Ok(Val::Str(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Val<'de>, E> {
            Ok(Val::Str(Cow::Owned(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Val<'de>, E> {
            Ok(Val::Int(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Val<'de>, E> {
            Ok(i64::try_from(v)
                .map(Val::Int)
                .unwrap_or(Val::Other("integer above 2^63")))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Val<'de>, E> {
            Ok(Val::Other("floating-point number"))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Val<'de>, E> {
            Ok(Val::Other("boolean"))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Val<'de>, E> {
            Ok(Val::Null)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val<'de>, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Val::Other("object"))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val<'de>, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Val::Other("array"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::time::DAY;

    fn default_parser() -> EventParser {
        EventParser::new(&Config::default().input).unwrap()
    }

    fn segment_parser() -> EventParser {
        let mut c = Config::default().input;
        c.account_id = "/context/groupId".into();
        c.user_id = "/userId".into();
        c.ts = "/timestamp".into();
        EventParser::new(&c).unwrap()
    }

    #[test]
    fn parses_default_schema() {
        let p = default_parser();
        let e = p
            .parse(br#"{"account_id":"acme-42","event":"report.created","ts":"2026-03-04T10:00:00Z","user_id":"u1","extra":{"a":[1,2]}}"#)
            .unwrap();
        assert_eq!(e.account_id, "acme-42");
        assert_eq!(e.event, "report.created");
        assert_eq!(
            e.ts,
            crate::time::parse_rfc3339("2026-03-04T10:00:00Z").unwrap()
        );
        assert_eq!(e.user_id.as_deref(), Some("u1"));
        assert!(matches!(e.account_id, Cow::Borrowed(_)));
        let e = p
            .parse(br#"{"ts":1700000000000,"event":"x","account_id":"a\u0041"}"#)
            .unwrap();
        assert_eq!(
            (e.ts, e.account_id.as_ref(), e.user_id),
            (1_700_000_000_000, "aA", None)
        );
    }

    #[test]
    fn null_or_empty_user_is_no_user() {
        let p = default_parser();
        for line in [
            r#"{"account_id":"a","event":"x","ts":0,"user_id":null}"#,
            r#"{"account_id":"a","event":"x","ts":0,"user_id":""}"#,
        ] {
            assert_eq!(p.parse(line.as_bytes()).unwrap().user_id, None, "{line}");
        }
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let e = default_parser()
            .parse(br#"{"account_id":"a","account_id":"b","event":"x","ts":0}"#)
            .unwrap();
        assert_eq!(e.account_id, "b");
    }

    #[test]
    fn segment_style_pointers() {
        let p = segment_parser();
        let e = p
            .parse(br#"{"type":"track","event":"Report Created","userId":"u-7","context":{"ip":"1.2.3.4","groupId":"org-9"},"timestamp":"2026-03-04T12:00:00.123+02:00"}"#)
            .unwrap();
        assert_eq!(e.account_id, "org-9");
        assert_eq!(e.user_id.as_deref(), Some("u-7"));
        assert_eq!(
            e.ts,
            crate::time::parse_rfc3339("2026-03-04T10:00:00.123Z").unwrap()
        );
        let r = p.parse(br#"{"event":"x","userId":"u","timestamp":0,"context":{}}"#);
        assert_eq!(
            r,
            Err(RejectReason::MissingField(
                "account_id",
                "/context/groupId".into()
            ))
        );
        let r = p
            .parse(br#"{"event":"x","timestamp":0,"context":"org-9"}"#)
            .unwrap_err();
        assert_eq!(r.as_str(), "missing_field");
    }

    #[test]
    fn array_index_pointers_and_escapes() {
        let mut c = Config::default().input;
        c.account_id = "/groups/1".into();
        c.event = "/a~1b/c~0d".into();
        let p = EventParser::new(&c).unwrap();
        let e = p
            .parse(br#"{"groups":["x","acct",{"q":1}],"a/b":{"c~d":"ev"},"ts":5}"#)
            .unwrap();
        assert_eq!((e.account_id.as_ref(), e.event.as_ref()), ("acct", "ev"));
    }

    #[test]
    fn overlapping_pointers_are_refused() {
        let mut c = Config::default().input;
        c.account_id = "/a".into();
        c.event = "/a/b".into();
        assert!(EventParser::new(&c).is_err());
    }

    #[test]
    fn every_rejection_reason() {
        let mut c = Config::default().input;
        c.max_event_bytes = 120;
        let p = EventParser::new(&c).unwrap();
        let long = "x".repeat(257);
        let oversized = format!(
            r#"{{"account_id":"a","event":"x","ts":0,"pad":"{}"}}"#,
            "y".repeat(120)
        );
        let too_long = format!(r#"{{"account_id":"{long}","event":"x","ts":0}}"#);
        let p_big = EventParser::new(&Config::default().input).unwrap();
        let cases: Vec<(&[u8], &str, &str)> = vec![
            (oversized.as_bytes(), "oversized", "above the limit of 120"),
            (
                b"{\"account_id\":\"a\xff\",\"event\":\"x\",\"ts\":0}",
                "invalid_utf8",
                "offset 16",
            ),
            (b"{\"account_id\":", "invalid_json", "end of input"),
            (
                b"{\"account_id\":\"a\"} trailing",
                "invalid_json",
                "trailing",
            ),
            (b"", "invalid_json", "end of input"),
            (b"[1,2]", "not_object", "not an object"),
            (b"\"str\"", "not_object", "not an object"),
            (b"{\"event\":\"x\",\"ts\":0}", "missing_field", "account_id"),
            (
                b"{\"account_id\":null,\"event\":\"x\",\"ts\":0}",
                "missing_field",
                "account_id",
            ),
            (b"{\"account_id\":\"a\",\"ts\":0}", "missing_field", "event"),
            (
                b"{\"account_id\":\"a\",\"event\":\"x\"}",
                "missing_field",
                "ts",
            ),
            (
                b"{\"account_id\":42,\"event\":\"x\",\"ts\":0}",
                "wrong_type",
                "got integer",
            ),
            (
                b"{\"account_id\":\"a\",\"event\":[],\"ts\":0}",
                "wrong_type",
                "got array",
            ),
            (
                b"{\"account_id\":\"a\",\"event\":\"x\",\"ts\":1.5}",
                "wrong_type",
                "floating-point",
            ),
            (
                b"{\"account_id\":\"a\",\"event\":\"x\",\"ts\":true}",
                "wrong_type",
                "boolean",
            ),
            (
                b"{\"account_id\":\"a\",\"event\":\"x\",\"ts\":0,\"user_id\":7}",
                "wrong_type",
                "user_id",
            ),
            (
                b"{\"account_id\":\"a\",\"event\":\"x\",\"ts\":\"yesterday\"}",
                "bad_timestamp",
                "yesterday",
            ),
            (
                b"{\"account_id\":\"a\",\"event\":\"x\",\"ts\":\"2026-02-30T00:00:00Z\"}",
                "bad_timestamp",
                "range",
            ),
            (
                b"{\"account_id\":\"a\",\"event\":\"x\",\"ts\":999999999999999999}",
                "bad_timestamp",
                "outside",
            ),
            (
                b"{\"account_id\":\"\",\"event\":\"x\",\"ts\":0}",
                "empty_field",
                "account_id",
            ),
            (
                b"{\"account_id\":\"a\",\"event\":\"\",\"ts\":0}",
                "empty_field",
                "event",
            ),
        ];
        for (msg, label, needle) in cases {
            let r = p.parse(msg).expect_err(&String::from_utf8_lossy(msg));
            assert_eq!(r.as_str(), label, "{}", String::from_utf8_lossy(msg));
            assert!(r.to_string().contains(needle), "{r} lacks {needle}");
        }
        let r = p_big.parse(too_long.as_bytes()).unwrap_err();
        assert_eq!(r.as_str(), "field_too_long");
        assert!(RejectReason::LABELS.contains(&r.as_str()));
    }

    #[test]
    fn control_characters_in_ids_are_invalid_id() {
        let p = default_parser();
        for (line, field, byte) in [
            (
                r#"{"account_id":"a\u0000b","event":"x","ts":0}"#,
                "account_id",
                0u8,
            ),
            (
                r#"{"account_id":"acme\n","event":"x","ts":0}"#,
                "account_id",
                b'\n',
            ),
            (
                "{\"account_id\":\"\u{7f}acme\",\"event\":\"x\",\"ts\":0}",
                "account_id",
                0x7f,
            ),
            (
                r#"{"account_id":"a","event":"x","ts":0,"user_id":"u\u001b[31m"}"#,
                "user_id",
                0x1b,
            ),
            (
                r#"{"account_id":"a","event":"x","ts":0,"user_id":"\t"}"#,
                "user_id",
                b'\t',
            ),
        ] {
            let r = p.parse(line.as_bytes()).expect_err(line);
            assert_eq!(r.as_str(), "invalid_id", "{line}");
            assert!(r.to_string().contains(field), "{r}");
            assert!(r.to_string().contains(&format!("U+{byte:04X}")), "{r}");
        }
        // Not control characters: C1 controls, NBSP, line separator; event names are
        // not ids.
        for line in [
            r#"{"account_id":"a\u0080\u00a0\u2028é","event":"x","ts":0}"#,
            r#"{"account_id":"a","event":"tab\there","ts":0,"user_id":"u~"}"#,
        ] {
            assert!(p.parse(line.as_bytes()).is_ok(), "{line}");
        }
    }

    #[test]
    fn future_timestamps_are_rejected_against_the_given_clock() {
        let p = default_parser();
        let now = crate::time::parse_rfc3339("2026-12-02T08:00:00Z").unwrap();
        let at = |ts: Millis| format!(r#"{{"account_id":"a","event":"x","ts":{ts}}}"#);
        // The bound is inclusive: exactly now + 1d is fine.
        assert!(p.parse_at(at(now + DAY).as_bytes(), now).is_ok());
        let r = p.parse_at(at(now + DAY + 1).as_bytes(), now).unwrap_err();
        assert_eq!(r.as_str(), "future_timestamp");
        assert_eq!(
            r.to_string(),
            "ts 2026-12-03T08:00:00.001Z is more than 1d after the clock (2026-12-02T08:00:00.000Z)"
        );
        let far = br#"{"account_id":"zz","event":"x","ts":"9999-12-31T00:00:00Z"}"#;
        assert_eq!(
            p.parse_at(far, now).unwrap_err().as_str(),
            "future_timestamp"
        );
        // A clock of its own (replay --now) accepts it; so does plain parse.
        assert!(p.parse_at(far, MAX_TS).is_ok());
        assert!(p.parse(far).is_ok());
        // Past events are never future, however old; other rejections come first.
        assert!(p.parse_at(at(0).as_bytes(), now).is_ok());
        let bad = br#"{"account_id":"a\u0001","event":"x","ts":"9999-12-31T00:00:00Z"}"#;
        assert_eq!(p.parse_at(bad, now).unwrap_err().as_str(), "invalid_id");
        let mut c = Config::default().input;
        c.max_future = crate::config::Duration(0);
        let strict = EventParser::new(&c).unwrap();
        assert!(strict.parse_at(at(now).as_bytes(), now).is_ok());
        assert!(strict.parse_at(at(now + 1).as_bytes(), now).is_err());
    }

    mod ids {
        use super::*;
        use proptest::prelude::*;

        /// A JSON string literal for `s`, escaping what JSON requires and, at random,
        /// some other characters too (`\u` escapes).
        fn literal(s: &str, escape_all: bool) -> String {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if (c as u32) < 0x20 || (escape_all && (c as u32) < 0x10000) => {
                        out.push_str(&format!("\\u{:04x}", c as u32))
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }

        fn id() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z0-9-]{1,20}",
                prop::collection::vec(any::<char>(), 1..20).prop_map(|v| v.into_iter().collect()),
                prop::collection::vec(0u8..0x80, 1..20)
                    .prop_map(|v| v.into_iter().map(char::from).collect()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            /// The word-at-a-time test agrees with the byte-wise definition.
            #[test]
            fn has_control_is_exact(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
                prop_assert_eq!(has_control(&bytes), bytes.iter().any(|&b| is_control(b)));
            }

            /// Any id, however written, is accepted exactly when it has no control
            /// character (and fits), and comes back as it was.
            #[test]
            fn ids_with_any_characters(account in id(), user in id(), esc in any::<bool>()) {
                let line = format!(
                    r#"{{"account_id":{},"event":"x","ts":5,"user_id":{}}}"#,
                    literal(&account, esc),
                    literal(&user, !esc)
                );
                let control = |s: &str| s.bytes().any(|b| b < 0x20 || b == 0x7f);
                match default_parser().parse(line.as_bytes()) {
                    Ok(e) => {
                        prop_assert!(!control(&account) && !control(&user));
                        prop_assert_eq!(e.account_id.as_ref(), account.as_str());
                        prop_assert_eq!(e.user_id.as_deref(), Some(user.as_str()));
                    }
                    Err(RejectReason::InvalidId(field, byte, at)) => {
                        let s = if field == "account_id" { &account } else { &user };
                        prop_assert_eq!(s.as_bytes()[at], byte);
                        prop_assert!(byte < 0x20 || byte == 0x7f);
                        if field == "user_id" {
                            prop_assert!(!control(&account));
                        }
                    }
                    Err(RejectReason::FieldTooLong(..)) => prop_assert!(account.len() > MAX_ID_BYTES),
                    Err(e) => prop_assert!(false, "{} for {}", e, line),
                }
            }

            /// Raw bytes as an id: never a panic, and every accepted id is clean UTF-8
            /// without control characters.
            #[test]
            fn raw_bytes_never_pass_as_a_dirty_id(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
                let mut line = br#"{"account_id":""#.to_vec();
                line.extend_from_slice(&bytes);
                line.extend_from_slice(br#"","event":"x","ts":5}"#);
                if let Ok(e) = default_parser().parse(&line) {
                    prop_assert!(!e.account_id.bytes().any(|b| b < 0x20 || b == 0x7f));
                    prop_assert!(!e.account_id.is_empty());
                }
            }
        }
    }

    mod differential {
        use super::*;
        use proptest::prelude::*;

        fn string_lit() -> impl Strategy<Value = String> {
            r#""([a-z0-9 é😀]|\\[nt"\\/bfr]|\\u[0-9a-fA-F]{4}|\\ud83d\\ude00)*""#
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("\"account_id\"".to_string()),
                Just("\"event\"".to_string()),
                Just("\"ts\"".to_string()),
                Just("\"user_id\"".to_string()),
                Just("\"context\"".to_string()),
                Just("\"groupId\"".to_string()),
                Just("\"0\"".to_string()),
                string_lit(),
            ]
        }

        fn value() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                Just("null".to_string()),
                any::<bool>().prop_map(|b| b.to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                Just("184467440737095516150".to_string()),
                Just("-92233720368547758080".to_string()),
                (-1e6..1e6f64).prop_map(|f| format!("{f}")),
                (-1e6..1e6f64).prop_map(|f| format!("{f:E}")),
                Just("1767225600000".to_string()),
                Just("\"2026-03-04T05:06:07.089Z\"".to_string()),
                string_lit(),
            ];
            leaf.prop_recursive(4, 40, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4)
                        .prop_map(|v| format!("[{}]", v.join(","))),
                    prop::collection::vec((key(), inner), 0..6).prop_map(|kv| {
                        let members: Vec<String> =
                            kv.iter().map(|(k, v)| format!("{k} : {v}")).collect();
                        format!("{{ {} }}", members.join(",\n"))
                    }),
                ]
            })
        }

        /// A document, then maybe one edit of a character that matters to JSON.
        fn document() -> impl Strategy<Value = String> {
            let edit = prop_oneof![
                Just(None),
                (
                    any::<prop::sample::Index>(),
                    0..3u8,
                    prop::sample::select(vec![
                        '{', '}', '[', ']', ',', ':', '"', '\\', '0', '-', '.', 'e', ' ', 'a', 'u',
                        '\u{1}', 'é',
                    ])
                )
                    .prop_map(Some),
            ];
            (value(), edit).prop_map(|(doc, edit)| {
                let mut chars: Vec<char> = doc.chars().collect();
                if let Some((at, kind, c)) = edit {
                    let i = at.index(chars.len() + 1);
                    match kind {
                        0 => chars.insert(i, c),
                        1 if i < chars.len() => {
                            chars.remove(i);
                        }
                        _ => chars.truncate(i),
                    }
                }
                chars.into_iter().collect()
            })
        }

        fn trees() -> Vec<EventParser> {
            let mut segment = Config::default().input;
            segment.account_id = "/context/groupId".into();
            segment.user_id = "/context/0".into();
            vec![
                EventParser::new(&Config::default().input).unwrap(),
                EventParser::new(&segment).unwrap(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(800))]
            /// The scanner and the serde_json deserializer it replaced agree on every
            /// document: valid or not, object or not, and every captured field.
            #[test]
            fn scanner_agrees_with_serde_json(doc in document()) {
                for p in trees() {
                    let mut fast = [None, None, None, None];
                    let mut reference = [None, None, None, None];
                    let a = crate::source::json::scan(&doc, &p.root, &mut fast);
                    let b = serde_reference::scan(&doc, &p.root, &mut reference);
                    match (&a, &b) {
                        (Ok(x), Ok(y)) => {
                            prop_assert_eq!(x, y, "object? {}", doc);
                            prop_assert_eq!(&fast, &reference, "fields of {}", doc);
                        }
                        (Err(_), Err(_)) => {}
                        // Known differences, both where the grammar allows the text:
                        // serde_json decodes every string and number it walks (a key
                        // inside a captured object, a value where an object was
                        // expected) and so rejects lone surrogates and numbers beyond
                        // f64 there; the scanner decodes only the values it uses.
                        (Ok(_), Err(e))
                            if e.to_string().contains("hex escape")
                                || e.to_string().contains("number out of range") => {}
                        _ => prop_assert!(false, "{:?} vs {:?} for {}", a, b.map_err(|e| e.to_string()), doc),
                    }
                }
            }
        }
    }
}
