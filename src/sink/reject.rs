//! Dead-letter records for rejected input: the reason, where it came from, and the
//! original bytes (as text when they are UTF-8, else base64), so nothing is lost. A
//! line too long to hold keeps its first KiB and its length (`raw_length`).

use serde_json::{json, Value};

use crate::source::event::RejectReason;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A reject record for a line of a file; `raw` is the line, or its first bytes when
/// `length` (the line's length) is larger.
pub fn file_reject(
    source: &str,
    line: u64,
    reason: &RejectReason,
    raw: &[u8],
    length: u64,
) -> Value {
    let mut v = json!({
        "reason": reason.as_str(),
        "error": reason.to_string(),
        "source": source,
        "line": line,
    });
    if length > raw.len() as u64 {
        v["raw_truncated"] = true.into();
        v["raw_length"] = length.into();
    }
    match std::str::from_utf8(raw) {
        Ok(s) => v["raw"] = s.into(),
        Err(_) => v["raw_base64"] = base64(raw).into(),
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn keeps_raw_bytes() {
        let r = file_reject("in.ndjson", 7, &RejectReason::InvalidUtf8(1), b"a\xffb", 3);
        assert_eq!(r["raw_base64"], "Yf9i");
        assert_eq!(r["reason"], "invalid_utf8");
        assert_eq!(r["line"], 7);
        let r = file_reject("in.ndjson", 8, &RejectReason::NotObject, b"[1]", 3);
        assert_eq!(r["raw"], "[1]");
        assert!(r.get("raw_truncated").is_none());
        let reason = RejectReason::Oversized {
            size: 1 << 30,
            limit: 65536,
        };
        let r = file_reject("in.ndjson", 9, &reason, b"{\"account_id\"", 1 << 30);
        assert_eq!(r["raw"], "{\"account_id\"");
        assert_eq!(r["raw_truncated"], true);
        assert_eq!(r["raw_length"], 1u64 << 30);
    }
}
