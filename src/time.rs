//! Event time: epoch milliseconds, UTC days, RFC 3339 parsing and formatting, and the
//! short duration syntax used in config ("10m", "6h").
//!
//! Hand-written rather than pulled from a date crate: the parser sits on the hot path of
//! every event (it is ~10x faster than a general-purpose one), and the formats needed are
//! narrow. Correctness is pinned by unit and property tests.

use std::fmt;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// One UTC day in milliseconds.
pub const DAY: Millis = 86_400_000;

/// Earliest accepted timestamp: 0000-01-01T00:00:00Z.
pub const MIN_TS: Millis = -62_167_219_200_000;
/// Latest accepted timestamp: 9999-12-31T23:59:59.999Z.
pub const MAX_TS: Millis = 253_402_300_799_999;

/// UTC day number of a timestamp: `floor(ts / DAY)`.
#[inline]
pub fn day_of(ts: Millis) -> i64 {
    ts.div_euclid(DAY)
}

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Proleptic Gregorian date of a day number.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Why a timestamp string was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("not an RFC 3339 timestamp (expected e.g. 2026-03-04T10:15:00Z)")]
    Syntax,
    #[error("date or time field out of range")]
    Range,
}

#[inline]
fn digits(b: &[u8], at: usize, n: usize) -> Result<u32, TimeError> {
    let mut v = 0u32;
    for i in 0..n {
        let c = *b.get(at + i).ok_or(TimeError::Syntax)?;
        if !c.is_ascii_digit() {
            return Err(TimeError::Syntax);
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Ok(v)
}

/// Parses an RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.fff…](Z|±HH:MM)`; `T`/`Z` in
/// either case, or a space between date and time) to epoch milliseconds. Fractions finer
/// than a millisecond are truncated toward the past. Leap seconds (`:60`) are rejected.
pub fn parse_rfc3339(s: &str) -> Result<Millis, TimeError> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return Err(TimeError::Syntax);
    }
    let year = digits(b, 0, 4)? as i64;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(TimeError::Syntax);
    }
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    if b[13] != b':' || b[16] != b':' {
        return Err(TimeError::Syntax);
    }
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(TimeError::Range);
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return Err(TimeError::Syntax);
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    let offset_min: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = digits(b, i + 1, 2)? as i64;
            let om = digits(b, i + 4, 2)? as i64;
            if oh > 23 || om > 59 {
                return Err(TimeError::Range);
            }
            let o = oh * 60 + om;
            if sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return Err(TimeError::Syntax),
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64 - offset_min * 60;
    let ts = secs * 1000 + millis;
    if !(MIN_TS..=MAX_TS).contains(&ts) {
        return Err(TimeError::Range);
    }
    Ok(ts)
}

/// Writes `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub struct Rfc3339(pub Millis);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = day_of(self.0);
        let ms_of_day = self.0 - days * DAY;
        let (y, m, d) = civil_from_days(days);
        let secs = ms_of_day / 1000;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            y,
            m,
            d,
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            ms_of_day % 1000
        )
    }
}

/// Formats a timestamp as RFC 3339 with milliseconds and `Z`.
pub fn format_rfc3339(ts: Millis) -> String {
    Rfc3339(ts).to_string()
}

/// Formats the UTC date of a day number as `YYYY-MM-DD`.
pub fn format_day(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Wall-clock now in epoch milliseconds: the one place churnwatch reads the clock
/// (`emitted_at`, the future-timestamp check, the notifier); the engine never does.
pub fn wall_clock_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Parses a calendar date `YYYY-MM-DD` to its midnight UTC.
pub fn parse_date(s: &str) -> Result<Millis, String> {
    if s.len() != 10 || s.as_bytes()[4] != b'-' || s.as_bytes()[7] != b'-' {
        return Err(format!("{s:?} is not a date; use YYYY-MM-DD"));
    }
    parse_rfc3339(&format!("{s}T00:00:00Z")).map_err(|e| format!("{s:?}: {e}; use YYYY-MM-DD"))
}

/// Parses a timestamp given on a command line: RFC 3339, a plain date (midnight UTC),
/// or integer epoch milliseconds.
pub fn parse_cli_time(s: &str) -> Result<Millis, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if s.len() == 10 {
        return parse_rfc3339(&format!("{s}T00:00:00Z"))
            .map_err(|e| format!("{s:?}: {e}; use YYYY-MM-DD, RFC 3339 or epoch ms"));
    }
    parse_rfc3339(s).map_err(|e| format!("{s:?}: {e}; use YYYY-MM-DD, RFC 3339 or epoch ms"))
}

/// Parses a duration such as `500ms`, `30s`, `10m`, `6h` or `14d` to milliseconds.
pub fn parse_duration(s: &str) -> Result<Millis, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit; write e.g. \"10m\" (units: ms, s, m, h, d)"))?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} does not start with a whole number"))?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => DAY,
        _ => {
            return Err(format!(
                "{s:?} has unknown unit {unit:?} (units: ms, s, m, h, d)"
            ))
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Formats milliseconds in the same syntax, with the largest exact unit.
pub fn format_duration(ms: Millis) -> String {
    for (unit, scale) in [("d", DAY), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms != 0 && ms % scale == 0 {
            return format!("{}{unit}", ms / scale);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339("2026-03-05T00:00:00.000Z"),
            Ok(days_from_civil(2026, 3, 5) * DAY)
        );
        assert_eq!(parse_rfc3339("1970-01-01T02:00:00+02:00"), Ok(0));
        assert_eq!(parse_rfc3339("1969-12-31T23:00:00-01:00"), Ok(0));
        assert_eq!(parse_rfc3339("1970-01-01t00:00:01.5z"), Ok(1500));
        assert_eq!(parse_rfc3339("1970-01-01 00:00:00.123456789Z"), Ok(123));
        // Truncation toward the past, also before the epoch.
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.9999Z"), Ok(-1));
        assert!(parse_rfc3339("2024-02-29T12:00:00Z").is_ok());
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "2026-03-05",
            "2026-03-05T00:00:00",
            "2026-03-05T00:00:00.Z",
            "2026-03-05T00:00:00+0200",
            "2026-03-05T00:00:00Zjunk",
            "2026/03/05T00:00:00Z",
            "20260305T000000Z",
            "2026-03-05T00:00:00+02:00x",
        ] {
            assert_eq!(parse_rfc3339(s), Err(TimeError::Syntax), "{s}");
        }
        for s in [
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-01-32T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z",
            "2026-01-01T00:00:60Z",
            "2026-01-01T00:00:00+24:00",
        ] {
            assert_eq!(parse_rfc3339(s), Err(TimeError::Range), "{s}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339(MAX_TS), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339(MIN_TS), "0000-01-01T00:00:00.000Z");
        assert_eq!(format_day(days_from_civil(2026, 1, 5)), "2026-01-05");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Ok(600_000));
        assert_eq!(parse_duration("6h"), Ok(21_600_000));
        assert_eq!(parse_duration("14d"), Ok(14 * DAY));
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("m").is_err());
        assert_eq!(format_duration(600_000), "10m");
        assert_eq!(format_duration(1500), "1500ms");
    }

    proptest! {
        #[test]
        fn format_parse_roundtrip(ts in MIN_TS..=MAX_TS) {
            prop_assert_eq!(parse_rfc3339(&format_rfc3339(ts)), Ok(ts));
        }

        #[test]
        fn civil_roundtrip(days in -800_000i64..3_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!(d >= 1 && d <= days_in_month(y, m));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn offsets_shift_exactly(ts in 0i64..4_000_000_000_000, off in -1439i64..=1439) {
            // The same instant written in another offset parses to the same millis.
            let local = ts + off * 60_000;
            let base = format_rfc3339(local);
            let sign = if off < 0 { '-' } else { '+' };
            let s = format!("{}{}{:02}:{:02}", &base[..23], sign, off.abs() / 60, off.abs() % 60);
            prop_assert_eq!(parse_rfc3339(&s), Ok(ts));
        }
    }
}
