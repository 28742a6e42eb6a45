//! `--outcomes F`: churns from billing or the CRM, instead of the history's end events.
//! CSV with the header `account_id,churned_at`, or NDJSON objects with those fields;
//! `churned_at` in any form an event's `ts` takes (RFC 3339 or epoch milliseconds).
//! Every problem names the file and line; nothing is half-read.

use std::path::Path;

use crate::time::{parse_rfc3339, Millis, MAX_TS, MIN_TS};

use super::churns::Churns;
use super::history::History;

/// An outcomes file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OutcomesError {
    #[error("cannot read outcomes file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {msg}")]
    Line {
        path: String,
        line: usize,
        msg: String,
    },
}

/// Reads `path` into churns of the history's accounts.
pub fn load(path: &Path, h: &History) -> Result<Churns, OutcomesError> {
    let text = std::fs::read_to_string(path).map_err(|source| OutcomesError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, h).map_err(|(line, msg)| OutcomesError::Line {
        path: path.display().to_string(),
        line,
        msg,
    })
}

/// Parses outcomes text; errors carry the 1-based line number.
pub fn parse(text: &str, h: &History) -> Result<Churns, (usize, String)> {
    let mut churns = Churns::new(h.known_accounts());
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty());
    let Some((first_no, first)) = lines.next() else {
        return Ok(churns);
    };
    let mut add = |line: usize, id: &str, at: Millis| -> Result<(), (usize, String)> {
        let a = h.account_index(id).ok_or_else(|| {
            (
                line,
                format!("account {id:?} has no accepted event in the history"),
            )
        })?;
        churns.add(a, at);
        Ok(())
    };
    if first.starts_with('{') {
        for (no, l) in std::iter::once((first_no, first)).chain(lines) {
            let (id, at) = json_line(l).map_err(|m| (no, m))?;
            add(no, &id, at)?;
        }
    } else {
        let header: Vec<&str> = first.split(',').map(str::trim).collect();
        let col = |name: &str| {
            header.iter().position(|h| *h == name).ok_or_else(|| {
                (
                    first_no,
                    format!("header has no {name} column (expected account_id,churned_at)"),
                )
            })
        };
        let (ci, ct) = (col("account_id")?, col("churned_at")?);
        for (no, l) in lines {
            let cells: Vec<&str> = l.split(',').map(str::trim).collect();
            if cells.len() != header.len() {
                return Err((
                    no,
                    format!("{} cells, the header has {}", cells.len(), header.len()),
                ));
            }
            let at = time_text(cells[ct]).map_err(|m| (no, m))?;
            if cells[ci].is_empty() {
                return Err((no, "empty account_id".into()));
            }
            add(no, cells[ci], at)?;
        }
    }
    Ok(churns)
}

fn json_line(l: &str) -> Result<(String, Millis), String> {
    let v: serde_json::Value =
        serde_json::from_str(l).map_err(|e| format!("not a JSON object: {e}"))?;
    let o = v.as_object().ok_or("not a JSON object")?;
    let id = match o.get("account_id") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(serde_json::Value::String(_)) => return Err("empty account_id".into()),
        Some(_) => return Err("account_id is not a string".into()),
        None => return Err("missing field account_id".into()),
    };
    let at = match o.get("churned_at") {
        Some(serde_json::Value::String(s)) => time_text(s)?,
        Some(serde_json::Value::Number(n)) => match n.as_i64() {
            Some(ms) => in_range(ms)?,
            None => return Err(format!("churned_at {n} is not whole epoch milliseconds")),
        },
        Some(_) => return Err("churned_at is not a string or an integer".into()),
        None => return Err("missing field churned_at".into()),
    };
    Ok((id, at))
}

/// A CSV cell or JSON string: epoch milliseconds (digits) or RFC 3339.
fn time_text(s: &str) -> Result<Millis, String> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let ms = s
            .parse::<i64>()
            .map_err(|_| format!("churned_at {s:?} is out of range"))?;
        return in_range(ms);
    }
    parse_rfc3339(s).map_err(|e| format!("churned_at {s:?}: {e} (RFC 3339 or epoch ms)"))
}

fn in_range(ms: Millis) -> Result<Millis, String> {
    if (MIN_TS..=MAX_TS).contains(&ms) {
        Ok(ms)
    } else {
        Err(format!("churned_at {ms} lies outside years 0000-9999"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::source::file::LineReader;

    fn history() -> History {
        let text = "{\"account_id\":\"a\",\"event\":\"x\",\"ts\":1}\n{\"account_id\":\"b\",\"event\":\"x\",\"ts\":2}\n";
        let mut r = LineReader::from_reader(Box::new(std::io::Cursor::new(text.as_bytes())));
        History::read(&Config::default(), &mut r, None, |_| {}).unwrap()
    }

    #[test]
    fn csv_and_ndjson_in_every_time_form() {
        let h = history();
        let c = parse(
            "churned_at,account_id\n1000,a\n2026-01-01T00:00:00Z,b\n\n5,a\n",
            &h,
        )
        .unwrap();
        assert_eq!(c.of(0), &[5, 1000]);
        assert_eq!(c.of(1), &[1_767_225_600_000]);
        let j = parse(
            "{\"account_id\":\"b\",\"churned_at\":7}\n{\"account_id\":\"b\",\"churned_at\":\"1970-01-01T00:00:00.003+00:00\"}\n",
            &h,
        )
        .unwrap();
        assert_eq!(j.of(1), &[3, 7]);
        assert!(parse("", &h).unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let h = history();
        let cases = [
            (
                "account_id,churned_at\na,1\nzz,2\n",
                3,
                "\"zz\" has no accepted event",
            ),
            (
                "account_id,churned_at\na,yesterday\n",
                2,
                "churned_at \"yesterday\"",
            ),
            ("account_id,when\na,1\n", 1, "no churned_at column"),
            ("account_id,churned_at\na\n", 2, "1 cells, the header has 2"),
            ("{\"account_id\":\"a\"}\n", 1, "missing field churned_at"),
            (
                "{\"account_id\":\"a\",\"churned_at\":1}\n{\"churned_at\":1}\n",
                2,
                "missing field account_id",
            ),
            (
                "{\"account_id\":\"a\",\"churned_at\":1.5}\n",
                1,
                "not whole epoch",
            ),
            (
                "{\"account_id\":\"q\",\"churned_at\":1}\n",
                1,
                "\"q\" has no accepted event",
            ),
            (
                "account_id,churned_at\na,99999999999999999\n",
                2,
                "outside years",
            ),
            (
                "{\"account_id\":\"a\",\"churned_at\":\"2026-13-01T00:00:00Z\"}\n",
                1,
                "churned_at",
            ),
        ];
        for (text, line, needle) in cases {
            let (l, msg) = parse(text, &h).unwrap_err();
            assert_eq!(l, line, "{text:?}: {msg}");
            assert!(msg.contains(needle), "{text:?}: {msg}");
        }
    }
}
