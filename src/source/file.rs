//! NDJSON input files: plain or gzip (detected by magic bytes), or standard input.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

/// Reads whole lines from a file or `-` (stdin), gunzipping if needed.
pub struct LineReader {
    inner: Box<dyn BufRead + Send>,
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
            line_no: 0,
            size_hint,
            bytes: count,
        })
    }

    /// Reads lines from any buffered reader (in-memory data, tests, the demo).
    pub fn from_reader(inner: Box<dyn BufRead + Send>) -> LineReader {
        LineReader {
            inner,
            line_no: 0,
            size_hint: None,
            bytes: CountedHandle::default(),
        }
    }

    /// A handle on the count of bytes read from the file so far.
    pub fn progress(&self) -> CountedHandle {
        self.bytes.clone()
    }

    /// Reads the next line into `buf` (without its `\n` or `\r\n`); `false` at the end.
    pub fn next_line(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        buf.clear();
        if self.inner.read_until(b'\n', buf)? == 0 {
            return Ok(false);
        }
        self.line_no += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        Ok(true)
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
            while r.next_line(&mut buf).unwrap() {
                lines.push(String::from_utf8(buf.clone()).unwrap());
            }
            assert_eq!(lines, ["{\"a\":1}", "", "{\"b\":2}", "{\"c\":3}"]);
            assert_eq!(r.line_no, 4);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
