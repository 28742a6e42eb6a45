//! A validating JSON scanner specialised for pulling a few fields out of an event.
//!
//! Every message is checked in full (RFC 8259 grammar, strings with valid escapes and
//! no raw control characters, nesting at most [`MAX_DEPTH`]), but only the values at
//! the configured pointers are decoded: strings borrowed from the message unless they
//! hold escapes, integers as `i64`; everything else is skipped in place. It replaced a
//! `serde_json` deserializer with seeds, which spent most of its time in visitor
//! plumbing (about 40 % of the daemon's per-event CPU); a property test in
//! `event.rs` checks that both agree on every document.

use std::borrow::Cow;
use std::fmt;

/// Nesting of objects and arrays must stay below this (127 levels, as `serde_json`).
pub const MAX_DEPTH: usize = 128;

/// Why a message is not JSON, and where. Boxed: one word, so that the scanner's
/// results travel in registers (errors are the rare path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError(Box<(&'static str, usize)>);

impl JsonError {
    #[cold]
    fn new(what: &'static str, at: usize) -> JsonError {
        JsonError(Box::new((what, at)))
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.0 .0, self.0 .1)
    }
}

type Result<T> = std::result::Result<T, JsonError>;

/// A captured leaf value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Null,
    /// Any other type, by name.
    Other(&'static str),
}

/// A node of the pointer tree: either a leaf (a field slot) or a set of children.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub leaf: Option<usize>,
    pub children: Vec<(String, Node)>,
}

/// Scans `text` (already known to be UTF-8) as one JSON document, filling `slots`
/// with the values found at the leaves of `root`; returns whether the document is an
/// object. For duplicate keys, the last one wins.
pub fn scan<'a>(text: &'a str, root: &Node, slots: &mut [Option<Val<'a>>]) -> Result<bool> {
    let mut s = Scanner {
        text,
        b: text.as_bytes(),
        i: 0,
    };
    s.ws();
    let is_object = s.node_value(root, slots, 0)?;
    s.ws();
    if s.i < s.b.len() {
        return Err(s.err("trailing characters"));
    }
    Ok(is_object)
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `x` that is zero (exact for the lowest such byte).
#[inline]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(LO) & !x & HI
}

/// `a == b` for the short strings object keys are, without a call to `memcmp` (which
/// the few comparisons of every event pay dearly for).
#[inline]
fn same_key(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8"));
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4"));
    match n {
        // Two overlapping words cover the whole key.
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        _ => a == b,
    }
}

/// Bytes that end a run of plain string content: `"`, `\` and control characters.
#[inline]
fn special_bytes(x: u64) -> u64 {
    zero_bytes(x ^ (LO * b'"' as u64))
        | zero_bytes(x ^ (LO * b'\\' as u64))
        | (x.wrapping_sub(LO * 0x20) & !x & HI)
}

impl<'a> Scanner<'a> {
    fn err(&self, what: &'static str) -> JsonError {
        JsonError::new(what, self.i)
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            // Compact JSON: the next byte is a token, most of the time.
            if c > b' ' || !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                return;
            }
            self.i += 1;
        }
    }

    #[inline(always)]
    fn expect(&mut self, c: u8, what: &'static str) -> Result<()> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    /// Moves to the next `"`, `\` or control character inside a string.
    #[inline(always)]
    fn skip_plain(&mut self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::*;
            // SAFETY: SSE2 is part of x86_64; every load reads 16 bytes inside `b`.
            unsafe {
                let quote = _mm_set1_epi8(b'"' as i8);
                let backslash = _mm_set1_epi8(b'\\' as i8);
                let control = _mm_set1_epi8(0x1f);
                while self.i + 16 <= self.b.len() {
                    let v = _mm_loadu_si128(self.b.as_ptr().add(self.i) as *const __m128i);
                    // Unsigned v <= 0x1f: min(v, 0x1f) == v.
                    let hit = _mm_or_si128(
                        _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                        _mm_cmpeq_epi8(_mm_min_epu8(v, control), v),
                    );
                    let mask = _mm_movemask_epi8(hit) as u32;
                    if mask != 0 {
                        self.i += mask.trailing_zeros() as usize;
                        return;
                    }
                    self.i += 16;
                }
            }
        }
        while self.i + 8 <= self.b.len() {
            let chunk: [u8; 8] = self.b[self.i..self.i + 8].try_into().expect("8 bytes");
            let m = special_bytes(u64::from_le_bytes(chunk));
            if m != 0 {
                self.i += (m.trailing_zeros() / 8) as usize;
                return;
            }
            self.i += 8;
        }
        while let Some(c) = self.peek() {
            if c == b'"' || c == b'\\' || c < 0x20 {
                return;
            }
            self.i += 1;
        }
    }

    /// A string at the opening quote: its raw content (between the quotes) and
    /// whether it holds escapes. Escapes are checked, not decoded.
    #[inline(always)]
    fn string_raw(&mut self) -> Result<(&'a str, bool)> {
        self.i += 1;
        let start = self.i;
        self.skip_plain();
        if self.peek() == Some(b'"') {
            // SAFETY: `start` follows a `"` and `i` is at one: both are char
            // boundaries of `text`, with start <= i <= len.
            let raw = unsafe { self.text.get_unchecked(start..self.i) };
            self.i += 1;
            return Ok((raw, false));
        }
        self.string_rest(start)
    }

    /// The rest of a string from its first escape (or error) on.
    #[cold]
    #[inline(never)]
    fn string_rest(&mut self, start: usize) -> Result<(&'a str, bool)> {
        let mut escaped = false;
        loop {
            match self.peek() {
                Some(b'"') => {
                    // SAFETY: as in `string_raw`.
                    let raw = unsafe { self.text.get_unchecked(start..self.i) };
                    self.i += 1;
                    return Ok((raw, escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            self.i += 1;
                            self.hex4()?;
                        }
                        Some(_) => return Err(self.err("invalid escape")),
                        None => return Err(self.err("end of input inside a string")),
                    }
                }
                Some(_) => return Err(self.err("control character inside a string")),
                None => return Err(self.err("end of input inside a string")),
            }
            self.skip_plain();
        }
    }

    fn hex4(&mut self) -> Result<u16> {
        let digits = self
            .b
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.err("end of input inside a \\u escape"))?;
        let mut v = 0u16;
        for &d in digits {
            let n = (d as char)
                .to_digit(16)
                .ok_or_else(|| self.err("invalid \\u escape"))?;
            v = v * 16 + n as u16;
        }
        self.i += 4;
        Ok(v)
    }

    /// A string at the opening quote, decoded (borrowed when it holds no escape).
    #[inline(always)]
    fn string(&mut self) -> Result<Cow<'a, str>> {
        let at = self.i;
        let (raw, escaped) = self.string_raw()?;
        if !escaped {
            return Ok(Cow::Borrowed(raw));
        }
        unescape(raw)
            .map(Cow::Owned)
            .ok_or_else(|| JsonError::new("lone surrogate in a \\u escape", at))
    }

    /// A number at its first character; validates the grammar and names its type the
    /// way `serde_json` would see it.
    fn number(&mut self) -> Result<Val<'a>> {
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("invalid number")),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number"));
            }
            self.digits();
            integer = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number"));
            }
            self.digits();
            integer = false;
        }
        if !integer {
            return Ok(Val::Other("floating-point number"));
        }
        let text = &self.text[start..self.i];
        if negative {
            Ok(text
                .parse::<i64>()
                .map_or(Val::Other("floating-point number"), Val::Int))
        } else {
            Ok(match text.parse::<u64>() {
                Ok(v) => i64::try_from(v).map_or(Val::Other("integer above 2^63"), Val::Int),
                Err(_) => Val::Other("floating-point number"),
            })
        }
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn enter(&self, depth: usize) -> Result<usize> {
        if depth + 1 >= MAX_DEPTH {
            Err(self.err("nesting too deep"))
        } else {
            Ok(depth + 1)
        }
    }

    /// Skips one value (whitespace before it included), checking it.
    fn skip_value(&mut self, depth: usize) -> Result<()> {
        self.ws();
        match self.peek() {
            Some(b'"') => self.string_raw().map(|_| ()),
            Some(b'{' | b'[') => self.skip_container(depth),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| ()),
            Some(_) => Err(self.err("expected a value")),
            None => Err(self.err("end of input, expected a value")),
        }
    }

    /// After a member or element: `,` (false) or the closing bracket (true).
    #[inline(always)]
    fn close_or_next(&mut self, close: u8) -> Result<bool> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                Ok(false)
            }
            Some(c) if c == close => {
                self.i += 1;
                Ok(true)
            }
            _ => Err(self.err(if close == b'}' {
                "expected `,` or `}`"
            } else {
                "expected `,` or `]`"
            })),
        }
    }

    /// A value at a leaf: strings, integers and null are captured, the rest named.
    fn leaf_value(&mut self, depth: usize) -> Result<Val<'a>> {
        self.ws();
        Ok(match self.peek() {
            Some(b'"') => Val::Str(self.string()?),
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(b'n') => {
                self.literal(b"null")?;
                Val::Null
            }
            Some(b't' | b'f') => {
                self.skip_value(depth)?;
                Val::Other("boolean")
            }
            Some(b'{') => {
                self.skip_value(depth)?;
                Val::Other("object")
            }
            Some(b'[') => {
                self.skip_value(depth)?;
                Val::Other("array")
            }
            // Not a value: the error of the general path.
            _ => return self.skip_value(depth).map(|_| Val::Null),
        })
    }

    /// A value at an inner node: descends into the wanted keys (or array indexes) only.
    /// Returns whether it is an object.
    fn node_value(
        &mut self,
        node: &Node,
        slots: &mut [Option<Val<'a>>],
        depth: usize,
    ) -> Result<bool> {
        self.ws();
        match self.peek() {
            Some(b'{' | b'[') => self.container(Some(node), slots, depth),
            _ => self.skip_value(depth).map(|_| false),
        }
    }

    /// Enters the object or array at its opening bracket: whether it is an object, its
    /// closing bracket, the depth inside, and whether it is empty (then also closed).
    #[inline(always)]
    fn open(&mut self, depth: usize) -> Result<(bool, u8, usize, bool)> {
        let object = self.peek() == Some(b'{');
        let close = if object { b'}' } else { b']' };
        let depth = self.enter(depth)?;
        self.i += 1;
        self.ws();
        let empty = self.peek() == Some(close);
        if empty {
            self.i += 1;
        }
        Ok((object, close, depth, empty))
    }

    /// An object or array at its opening bracket, skipped and checked in full.
    fn skip_container(&mut self, depth: usize) -> Result<()> {
        let (object, close, depth, empty) = self.open(depth)?;
        if empty {
            return Ok(());
        }
        loop {
            if object {
                self.ws();
                if self.peek() != Some(b'"') {
                    return Err(self.err("expected a key"));
                }
                self.string_raw()?;
                self.expect(b':', "expected `:`")?;
            }
            self.skip_value(depth)?;
            if self.close_or_next(close)? {
                return Ok(());
            }
        }
    }

    /// An object or array at its opening bracket, checked in full; with a `node`,
    /// the values of its wanted keys (or indexes) are captured, the rest skipped.
    /// Keys are decoded only where they are compared. Returns whether it is an object.
    fn container(
        &mut self,
        node: Option<&Node>,
        slots: &mut [Option<Val<'a>>],
        depth: usize,
    ) -> Result<bool> {
        let node = node.filter(|n| !n.children.is_empty());
        let (object, close, depth, empty) = self.open(depth)?;
        if empty {
            return Ok(object);
        }
        let mut index = 0usize;
        loop {
            let wanted = if object {
                self.ws();
                if self.peek() != Some(b'"') {
                    return Err(self.err("expected a key"));
                }
                let wanted = match node {
                    Some(n) => {
                        let key = self.string()?;
                        n.children
                            .iter()
                            .find(|(k, _)| same_key(k.as_bytes(), key.as_bytes()))
                    }
                    None => {
                        self.string_raw()?;
                        None
                    }
                };
                self.expect(b':', "expected `:`")?;
                wanted
            } else {
                let wanted = node.and_then(|n| {
                    n.children
                        .iter()
                        .find(|(k, _)| k.parse::<usize>().ok() == Some(index))
                });
                index += 1;
                wanted
            };
            match wanted {
                Some((_, child)) => self.child_value(child, slots, depth)?,
                None => self.skip_value(depth)?,
            }
            if self.close_or_next(close)? {
                return Ok(object);
            }
        }
    }

    fn child_value(
        &mut self,
        child: &Node,
        slots: &mut [Option<Val<'a>>],
        depth: usize,
    ) -> Result<()> {
        match child.leaf {
            Some(slot) => slots[slot] = Some(self.leaf_value(depth)?),
            None => {
                self.node_value(child, slots, depth)?;
            }
        }
        Ok(())
    }
}

/// Decodes the escapes of a string's raw content (already checked); `None` for a
/// `\u` escape that is a lone surrogate.
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(p) = rest.find('\\') {
        out.push_str(&rest[..p]);
        let b = rest.as_bytes();
        let (c, used) = match b[p + 1] {
            b'"' => ('"', 2),
            b'\\' => ('\\', 2),
            b'/' => ('/', 2),
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'n' => ('\n', 2),
            b'r' => ('\r', 2),
            b't' => ('\t', 2),
            _ => {
                let hex = |at: usize| u32::from_str_radix(rest.get(at..at + 4)?, 16).ok();
                let hi = hex(p + 2)?;
                match hi {
                    0xD800..=0xDBFF => {
                        if rest.get(p + 6..p + 8) != Some("\\u") {
                            return None;
                        }
                        let lo = hex(p + 8)?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return None;
                        }
                        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        (char::from_u32(c)?, 12)
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => (char::from_u32(hi)?, 6),
                }
            }
        };
        out.push(c);
        rest = &rest[p + used..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_tree(keys: &[&str]) -> Node {
        Node {
            leaf: None,
            children: keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    (
                        k.to_string(),
                        Node {
                            leaf: Some(i),
                            children: vec![],
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn special_bytes_finds_the_first_quote_backslash_or_control() {
        for (s, first) in [
            (*b"abcdefgh", None),
            (*b"abc\"efgh", Some(3)),
            (*b"a\\c\"efgh", Some(1)),
            (*b"abcdefg\n", Some(7)),
            (*b"\xc3\xa9cdefgh", None),
            (*b"\x7f\xffcdefg\x1f", Some(7)),
        ] {
            let m = special_bytes(u64::from_le_bytes(s));
            let got = (m != 0).then(|| (m.trailing_zeros() / 8) as usize);
            assert_eq!(got, first, "{s:?}");
        }
    }

    #[test]
    fn captures_strings_integers_and_names_other_types() {
        let root = leaf_tree(&["a", "b", "c", "d"]);
        let mut slots = [None, None, None, None];
        let doc = r#" {"a":"x\u00e9\ud83d\ude00\n","b":-12,"c":1.5e3,"z":[1,{"q":null}],"d":18446744073709551615} "#;
        assert_eq!(scan(doc, &root, &mut slots), Ok(true));
        assert_eq!(slots[0], Some(Val::Str("xé😀\n".into())));
        assert_eq!(slots[1], Some(Val::Int(-12)));
        assert_eq!(slots[2], Some(Val::Other("floating-point number")));
        assert_eq!(slots[3], Some(Val::Other("integer above 2^63")));
    }

    #[test]
    fn rejects_what_is_not_json() {
        let root = leaf_tree(&["a"]);
        for bad in [
            "",
            "{",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":-}",
            "{\"a\":+1}",
            "{\"a\":tru}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":\"\u{1}\"}",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":1} x",
            "[1,]",
            "{'a':1}",
        ] {
            let mut slots = [None];
            assert!(scan(bad, &root, &mut slots).is_err(), "{bad:?} accepted");
        }
        let deep = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(scan(&deep, &root, &mut [None]).is_err());
        let ok = "[".repeat(MAX_DEPTH - 1) + &"]".repeat(MAX_DEPTH - 1);
        assert_eq!(scan(&ok, &root, &mut [None]), Ok(false));
    }
}
