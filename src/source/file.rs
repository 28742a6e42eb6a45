//! NDJSON input files: plain or gzip (detected by magic bytes), or standard input,
//! read line by line in bounded memory: a line longer than the limit is skipped to its
//! end, keeping only its first [`PREFIX`] bytes and its length.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

/// Bytes kept of a line longer than the limit (for its reject record).
pub const PREFIX: usize = 1024;

/// Line limit when none is set: the default `input.max_event_bytes`.
const DEFAULT_MAX_LINE: usize = 65536;

/// What [`LineReader::next_line`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// The buffer holds the whole line.
    Whole,
    /// The line was longer than the limit: the buffer holds its first [`PREFIX`] bytes
    /// (or fewer, cut at a character boundary when the prefix is UTF-8), `len` is
    /// its length in bytes.
    TooLong { len: u64 },
}

/// Reads lines from a file or `-` (stdin), gunzipping if needed.
pub struct LineReader {
    inner: Box<dyn BufRead + Send>,
    /// Longest line returned whole, in bytes (without its line ending).
    max_line: usize,
    /// 1-based number of the last line returned.
    pub line_no: u64,
    /// Size of the file on disk, when known (for progress reporting).
    pub size_hint: Option<u64>,
    bytes: CountedHandle,
}

/// Shared count of compressed bytes read, for a progress bar.
#[derive(Clone, Default)]
pub struct CountedHandle(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl CountedHandle {
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct Counted<R> {
    inner: R,
    count: CountedHandle,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .0
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

const BUF: usize = 1 << 20;

impl LineReader {
    /// Opens `path` (`-` for stdin).
    pub fn open(path: &Path) -> io::Result<LineReader> {
        let count = CountedHandle::default();
        let (raw, size_hint): (Box<dyn Read + Send>, Option<u64>) = if path == Path::new("-") {
            (Box::new(io::stdin()), None)
        } else {
            let f = File::open(path)?;
            let size = f.metadata().ok().map(|m| m.len());
            (Box::new(f), size)
        };
        let mut buffered = BufReader::with_capacity(
            BUF,
            Counted {
                inner: raw,
                count: count.clone(),
            },
        );
        let gz = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
        let inner: Box<dyn BufRead + Send> = if gz {
            Box::new(BufReader::with_capacity(BUF, MultiGzDecoder::new(buffered)))
        } else {
            Box::new(buffered)
        };
        Ok(LineReader {
            inner,
            max_line: DEFAULT_MAX_LINE,
            line_no: 0,
            size_hint,
            bytes: count,
        })
    }

    /// Reads lines from any buffered reader (in-memory data, tests, the demo).
    pub fn from_reader(inner: Box<dyn BufRead + Send>) -> LineReader {
        LineReader {
            inner,
            max_line: DEFAULT_MAX_LINE,
            line_no: 0,
            size_hint: None,
            bytes: CountedHandle::default(),
        }
    }

    /// A handle on the count of bytes read from the file so far.
    pub fn progress(&self) -> CountedHandle {
        self.bytes.clone()
    }

    /// Sets the longest line returned whole (`input.max_event_bytes`); longer lines
    /// come back as [`Line::TooLong`] and never take more memory than that.
    pub fn with_max_line(mut self, max_line: usize) -> LineReader {
        self.set_max_line(max_line);
        self
    }

    /// Like [`Self::with_max_line`], on a reader already built.
    pub fn set_max_line(&mut self, max_line: usize) {
        self.max_line = max_line;
    }

    /// Reads the next line into `buf` (without its `\n` or `\r\n`); `None` at the end.
    ///
    /// At most `max_line + 1` bytes of a line are buffered (room for a `\r`); past
    /// that the rest of the line is skipped as it streams by. A line longer than
    /// `max_line` (its ending excluded) is [`Line::TooLong`].
    pub fn next_line(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<Line>> {
        buf.clear();
        let keep = self.max_line.saturating_add(1);
        let mut len = 0u64;
        let mut too_long = false;
        let mut read_any = false;
        let mut terminated = false;
        let mut last = 0u8;
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break;
            }
            read_any = true;
            let end = memchr::memchr(b'\n', chunk);
            let part = &chunk[..end.unwrap_or(chunk.len())];
            if let Some(&b) = part.last() {
                last = b;
            }
            len += part.len() as u64;
            if !too_long {
                let room = keep - buf.len();
                if part.len() <= room {
                    buf.extend_from_slice(part);
                } else {
                    buf.extend_from_slice(&part[..room]);
                    too_long = true;
                }
            }
            let used = end.map_or(chunk.len(), |i| i + 1);
            self.inner.consume(used);
            if end.is_some() {
                terminated = true;
                break;
            }
        }
        if !read_any {
            return Ok(None);
        }
        self.line_no += 1;
        if terminated && last == b'\r' {
            len -= 1;
        }
        if too_long || len > self.max_line as u64 {
            buf.truncate(prefix_len(buf));
            return Ok(Some(Line::TooLong { len }));
        }
        if terminated && buf.last() == Some(&b'\r') {
            buf.pop();
        }
        Ok(Some(Line::Whole))
    }
}

/// Length of the prefix of `buf` kept for a reject: [`PREFIX`] bytes, cut back to a
/// character boundary when they are UTF-8 up to a character cut in two.
fn prefix_len(buf: &[u8]) -> usize {
    let n = buf.len().min(PREFIX);
    match std::str::from_utf8(&buf[..n]) {
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        _ => n,
    }
}

/// `true` for a line with nothing but whitespace (skipped, not rejected).
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_plain_and_gzip_alike() {
        let dir = std::env::temp_dir().join(format!("cw-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = b"{\"a\":1}\r\n\n{\"b\":2}\n{\"c\":3}";
        let plain = dir.join("p.ndjson");
        std::fs::write(&plain, text).unwrap();
        let gz = dir.join("p.ndjson.gz");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        enc.write_all(text).unwrap();
        enc.finish().unwrap();
        for p in [plain, gz] {
            let mut r = LineReader::open(&p).unwrap();
            let mut buf = Vec::new();
            let mut lines = Vec::new();
            while let Some(line) = r.next_line(&mut buf).unwrap() {
                assert_eq!(line, Line::Whole);
                lines.push(String::from_utf8(buf.clone()).unwrap());
            }
            assert_eq!(lines, ["{\"a\":1}", "", "{\"b\":2}", "{\"c\":3}"]);
            assert_eq!(r.line_no, 4);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn long_lines_are_skipped_in_bounded_memory() {
        let mut text = Vec::new();
        text.extend_from_slice(b"short\n");
        text.extend(std::iter::repeat_n(b'x', 5000));
        text.extend_from_slice(b"\r\n");
        text.extend_from_slice(b"0123456789\r\n"); // exactly max, and a \r
        text.extend(std::iter::repeat_n(b'y', 3000)); // last line, no newline
                                                      // A 7-byte BufReader: a line arrives in many chunks.
        let inner = BufReader::with_capacity(7, io::Cursor::new(text));
        let mut r = LineReader::from_reader(Box::new(inner)).with_max_line(10);
        let mut buf = Vec::new();
        assert_eq!(r.next_line(&mut buf).unwrap(), Some(Line::Whole));
        assert_eq!(buf, b"short");
        assert_eq!(
            r.next_line(&mut buf).unwrap(),
            Some(Line::TooLong { len: 5000 })
        );
        assert_eq!(buf, vec![b'x'; 11], "only max + 1 bytes were ever kept");
        assert!(buf.capacity() < 64);
        assert_eq!(r.next_line(&mut buf).unwrap(), Some(Line::Whole));
        assert_eq!(buf, b"0123456789");
        assert_eq!(
            r.next_line(&mut buf).unwrap(),
            Some(Line::TooLong { len: 3000 })
        );
        assert_eq!(r.next_line(&mut buf).unwrap(), None);
        assert_eq!(r.line_no, 4);
    }

    #[test]
    fn prefix_is_cut_at_a_character_boundary() {
        let line = "é".repeat(2000); // 4000 bytes, 2 per character
        let mut text = line.clone().into_bytes();
        text.insert(0, b'a'); // shifts every character by one byte: 1024 cuts one in two
        let mut r = LineReader::from_reader(Box::new(io::Cursor::new(text))).with_max_line(2000);
        let mut buf = Vec::new();
        assert_eq!(
            r.next_line(&mut buf).unwrap(),
            Some(Line::TooLong { len: 4001 })
        );
        assert_eq!(buf.len(), 1023);
        assert!(std::str::from_utf8(&buf).is_ok());
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Against a simple model (split on `\n`, drop one `\r` before it): every
            /// line comes back whole or as a bounded prefix with its true length.
            #[test]
            fn agrees_with_split(
                lines in prop::collection::vec(
                    prop::collection::vec(prop::sample::select(vec![b'a', b'\r', 0xc3, 0xa9, b' ']), 0..40),
                    0..12,
                ),
                trailing_newline in any::<bool>(),
                max in 1usize..30,
                chunk in 1usize..16,
            ) {
                let mut text = lines.join(&b'\n');
                if trailing_newline && !lines.is_empty() {
                    text.push(b'\n');
                }
                let inner = BufReader::with_capacity(chunk, io::Cursor::new(text.clone()));
                let mut r = LineReader::from_reader(Box::new(inner)).with_max_line(max);
                let mut buf = Vec::new();
                let mut got = Vec::new();
                while let Some(l) = r.next_line(&mut buf).unwrap() {
                    got.push((l, buf.clone()));
                }
                let mut expected: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
                let terminated = text.last() == Some(&b'\n');
                if terminated || text.is_empty() {
                    expected.pop();
                }
                prop_assert_eq!(got.len(), expected.len());
                let n = expected.len();
                for (i, ((l, b), e)) in got.into_iter().zip(expected).enumerate() {
                    let e = match e.strip_suffix(b"\r") {
                        Some(s) if i + 1 < n || terminated => s,
                        _ => e,
                    };
                    if e.len() <= max {
                        prop_assert_eq!(l, Line::Whole);
                        prop_assert_eq!(&b[..], e);
                    } else {
                        prop_assert_eq!(l, Line::TooLong { len: e.len() as u64 });
                        prop_assert!(b.len() <= PREFIX.min(max + 1));
                        prop_assert!(e.starts_with(&b));
                    }
                }
            }
        }
    }
}
