//! Synthetic, seeded product-usage streams: a population of accounts with personas that
//! exercise every rule (never activating, activating late, healthy with weekly
//! seasonality and over-dispersed volumes, sharp drops with or without recovery, going
//! dark, cancelling and re-subscribing), plus a few malformed lines.
//!
//! Outcomes: risky personas may later cancel (`subscription.cancelled`), so that a
//! backtest on generated data has churns worth scoring. Each account's chance and delay
//! come from their own seeded stream (`seed`, account index), drawn once per account:
//!
//! | persona | cancels with probability | on day (relative to its start) |
//! |---|---|---|
//! | never activates | 0.55 | 35..=110 (after the 30-day deadline) |
//! | goes dark (and does not come back) | 0.5 | dark day + 20..=80 |
//! | sharp drop (and does not recover) | 0.45 | drop day + 10..=70 |
//! | activates late | 0.15 | 40..=150 |
//! | healthy, low volume | 0.03 | 30..=200 (churn with no warning sign) |
//!
//! (The `churns` persona cancels without warning on its turn day, as before.) After a
//! cancellation the account is silent for good; a cancellation past the last day is
//! not written.
//!
//! Output is time-ordered up to a bounded jitter (events may arrive up to `jitter`
//! behind newer ones, as real pipelines deliver them), so it stays within the default
//! `allowed_lateness` and replays exactly.

use std::io::{self, Write};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma, LogNormal, Poisson};

use crate::time::{Millis, Rfc3339, DAY};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub accounts: u32,
    pub days: u32,
    pub seed: u64,
    /// First day of the stream (epoch ms, midnight UTC).
    pub start: Millis,
    /// Multiplies every account's daily volume.
    pub volume: f64,
    /// Fraction of lines that are malformed.
    pub bad_line_rate: f64,
    /// Largest delay of an event behind newer ones.
    pub jitter: Millis,
    /// Write `ts` as epoch milliseconds instead of RFC 3339 (both are valid input).
    pub epoch_ms: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            accounts: 1000,
            days: 150,
            seed: 42,
            start: crate::time::days_from_civil(2026, 1, 1) * DAY,
            volume: 1.0,
            bad_line_rate: 0.0002,
            jitter: 5 * 60_000,
            epoch_ms: false,
        }
    }
}

/// The kind of customer an account plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persona {
    Healthy,
    NeverActivates,
    LateActivation,
    SharpDrop,
    GoesDark,
    Churns,
    LowVolume,
}

impl Persona {
    pub fn as_str(self) -> &'static str {
        match self {
            Persona::Healthy => "healthy",
            Persona::NeverActivates => "never_activates",
            Persona::LateActivation => "late_activation",
            Persona::SharpDrop => "sharp_drop",
            Persona::GoesDark => "goes_dark",
            Persona::Churns => "churns",
            Persona::LowVolume => "low_volume",
        }
    }
}

/// One synthetic account's script.
#[derive(Debug, Clone)]
pub struct Profile {
    pub id: String,
    pub persona: Persona,
    /// Day (relative to the stream start) of the first event.
    pub start_day: u32,
    /// Whether the account announces itself with `account.created` (else its first
    /// event is plain activity: an existing customer).
    pub created_event: bool,
    /// Mean events per weekday when healthy.
    pub rate: f64,
    /// Gamma shape of day-to-day volume (lower = more over-dispersed).
    pub dispersion: f64,
    pub users: u32,
    /// Persona-specific day (relative to start_day): drop, go dark, activate, cancel.
    pub turn_day: u32,
    /// Day (relative to start_day) when a drop recovers, dark resumes, or a churned
    /// account re-subscribes; `None` for never.
    pub return_day: Option<u32>,
    /// Volume multiplier after the turn (drop personas).
    pub drop_factor: f64,
    /// Day (relative to start_day) when the account cancels for good (outcome), if ever.
    pub cancel_day: Option<u32>,
}

/// Draws whether and when an account of `persona` cancels (module docs: the table).
fn draw_cancel(seed: u64, index: u32, p: &Profile) -> Option<u32> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_c4a2_ce11_0000 ^ u64::from(index) << 20);
    let (prob, lo, hi) = match p.persona {
        Persona::NeverActivates => (0.55, 35, 110),
        Persona::GoesDark if p.return_day.is_none() => (0.5, p.turn_day + 20, p.turn_day + 80),
        Persona::SharpDrop if p.return_day.is_none() => (0.45, p.turn_day + 10, p.turn_day + 70),
        Persona::LateActivation => (0.15, 40, 150),
        Persona::Healthy | Persona::LowVolume => (0.03, 30, 200),
        _ => return None,
    };
    rng.random_bool(prob).then(|| rng.random_range(lo..=hi))
}

/// Writes account metadata for the generated population as CSV: owner CSM, name,
/// plan, MRR, time zone. One account in ten has no owner (routed to the team).
pub fn write_accounts_csv(opts: &GenOptions, out: &mut dyn Write) -> io::Result<()> {
    const NAMES: [&str; 8] = [
        "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne",
    ];
    const ZONES: [&str; 4] = [
        "Europe/Berlin",
        "America/New_York",
        "America/Los_Angeles",
        "Asia/Tokyo",
    ];
    writeln!(
        out,
        "account_id,name,owner_email,owner_chat,plan,mrr,timezone"
    )?;
    for (i, p) in profiles(opts).iter().enumerate() {
        let i = i as u32;
        let plan = ["starter", "growth", "enterprise"][(p.rate as usize) % 3];
        let mrr = match plan {
            "starter" => 49.0,
            "growth" => 490.0 + (i % 7) as f64 * 100.0,
            _ => 4900.0 + (i % 5) as f64 * 1000.0,
        };
        let (owner, chat) = if i % 10 == 9 {
            (String::new(), String::new())
        } else {
            let o = owner_of(i);
            let chat = format!("U{:08}", o.len() * 7919 + (i % 8) as usize);
            (o, chat)
        };
        writeln!(
            out,
            "{},{} {},{owner},{chat},{plan},{mrr},{}",
            p.id,
            NAMES[(i % 8) as usize],
            i,
            ZONES[(i % 4) as usize]
        )?;
    }
    Ok(())
}

/// The CSM that owns an account in generated data (stable in the account index).
pub fn owner_of(index: u32) -> String {
    const CSMS: [&str; 8] = [
        "ana", "ben", "chloe", "dev", "emma", "farid", "grace", "hiro",
    ];
    format!(
        "{}@example.com",
        CSMS[(index as usize * 7 + 3) % CSMS.len()]
    )
}

const ACTIVITY: [&str; 6] = [
    "page.viewed",
    "report.created",
    "dashboard.shared",
    "export.downloaded",
    "integration.connected",
    "user.invited",
];
const ACTIVITY_WEIGHTS: [f64; 6] = [0.55, 0.2, 0.08, 0.1, 0.02, 0.05];

fn pick_persona(rng: &mut StdRng) -> Persona {
    let x: f64 = rng.random();
    match x {
        x if x < 0.38 => Persona::Healthy,
        x if x < 0.48 => Persona::NeverActivates,
        x if x < 0.56 => Persona::LateActivation,
        x if x < 0.68 => Persona::SharpDrop,
        x if x < 0.78 => Persona::GoesDark,
        x if x < 0.88 => Persona::Churns,
        _ => Persona::LowVolume,
    }
}

/// Draws the population's profiles (deterministic in the options).
pub fn profiles(opts: &GenOptions) -> Vec<Profile> {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let rate_dist = LogNormal::new(3.0, 0.7).expect("valid lognormal");
    let late_start = (opts.days as f64 * 0.6) as u32;
    (0..opts.accounts)
        .map(|i| {
            let persona = pick_persona(&mut rng);
            let existing = rng.random_bool(0.25);
            let start_day = if existing {
                0
            } else {
                rng.random_range(0..=late_start.max(1))
            };
            let drawn: f64 = rate_dist.sample(&mut rng);
            let mut rate = drawn.clamp(4.0, 400.0) * opts.volume;
            if persona == Persona::LowVolume {
                rate = rng.random_range(0.3..2.5) * opts.volume;
            }
            let (turn_day, return_day, drop_factor) = match persona {
                Persona::SharpDrop => {
                    let t = rng.random_range(45..110);
                    (
                        t,
                        rng.random_bool(0.4).then(|| t + rng.random_range(8..25)),
                        rng.random_range(0.03..0.2),
                    )
                }
                Persona::GoesDark => {
                    let t = rng.random_range(40..110);
                    (
                        t,
                        rng.random_bool(0.35).then(|| t + rng.random_range(16..45)),
                        0.0,
                    )
                }
                Persona::Churns => {
                    let t = rng.random_range(20..100);
                    (
                        t,
                        rng.random_bool(0.3).then(|| t + rng.random_range(5..40)),
                        1.0,
                    )
                }
                Persona::LateActivation => (rng.random_range(31..80), None, 1.0),
                _ => (0, None, 1.0),
            };
            let mut p = Profile {
                id: format!("acct-{i:06}"),
                persona,
                start_day,
                created_event: !existing,
                rate,
                dispersion: rng.random_range(1.5..8.0),
                users: rng.random_range(1..40),
                turn_day,
                return_day,
                drop_factor,
                cancel_day: None,
            };
            p.cancel_day = draw_cancel(opts.seed, i, &p);
            p
        })
        .collect()
}

/// What the generator wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenStats {
    pub events: u64,
    pub bad_lines: u64,
    pub accounts: u32,
}

struct Line {
    /// Emission order key: ts plus a bounded random delay.
    key: Millis,
    text: String,
}

/// Mean events for `p` on relative day `rel` (0 = its start day), weekday `wd` (0 = Mon).
fn day_rate(p: &Profile, rel: u32, wd: i64) -> f64 {
    let weekly = if wd >= 5 { 0.3 } else { 1.0 };
    let base = p.rate * weekly;
    match p.persona {
        Persona::Healthy | Persona::LowVolume => base,
        Persona::NeverActivates => {
            if rel < 2 {
                2.0
            } else {
                0.0
            }
        }
        Persona::LateActivation => {
            // One active day early on, then a trickle that activates at turn_day.
            if rel == 0 {
                3.0
            } else if rel < p.turn_day {
                0.0
            } else {
                base
            }
        }
        Persona::SharpDrop => match p.return_day {
            Some(r) if rel >= r => base,
            _ if rel >= p.turn_day => base * p.drop_factor,
            _ => base,
        },
        Persona::GoesDark => match p.return_day {
            Some(r) if rel >= r => base,
            _ if rel >= p.turn_day => 0.0,
            _ => base,
        },
        Persona::Churns => match p.return_day {
            Some(r) if rel >= r => base,
            _ if rel >= p.turn_day => 0.0,
            _ => base,
        },
    }
}

fn push_event(
    out: &mut Vec<Line>,
    rng: &mut StdRng,
    opts: &GenOptions,
    p: &Profile,
    ts: Millis,
    name: &str,
    user: Option<u32>,
) {
    let key = ts + rng.random_range(0..=opts.jitter.max(0));
    let mut text = String::with_capacity(240);
    use std::fmt::Write as _;
    let _ = write!(
        text,
        "{{\"account_id\":\"{}\",\"event\":\"{}\",",
        p.id, name
    );
    if opts.epoch_ms {
        let _ = write!(text, "\"ts\":{ts},");
    } else {
        let _ = write!(text, "\"ts\":\"{}\",", Rfc3339(ts));
    }
    if let Some(u) = user {
        let _ = write!(text, "\"user_id\":\"{}-u{u:03}\",", p.id);
    }
    let _ = write!(
        text,
        "\"event_id\":\"{:016x}\",\"properties\":{{\"client\":\"{}\",\"path\":\"/app/{}/{}\",\"plan\":\"{}\"}}}}",
        rng.random::<u64>(),
        if rng.random_bool(0.8) { "web" } else { "api" },
        name.split('.').next().unwrap_or("home"),
        rng.random_range(1..5000),
        ["starter", "growth", "enterprise"][(p.rate as usize) % 3],
    );
    out.push(Line { key, text });
}

fn bad_line(rng: &mut StdRng, ts: Millis) -> String {
    match rng.random_range(0..5) {
        0 => format!(
            "{{\"account_id\":\"acct-x\",\"event\":\"page.viewed\",\"ts\":\"{}\"",
            Rfc3339(ts)
        ),
        1 => format!("{{\"event\":\"page.viewed\",\"ts\":\"{}\"}}", Rfc3339(ts)),
        2 => "{\"account_id\":\"acct-x\",\"event\":\"page.viewed\",\"ts\":\"last tuesday\"}"
            .to_string(),
        3 => format!("{{\"account_id\":17,\"event\":\"page.viewed\",\"ts\":{ts}}}"),
        _ => "not json at all".to_string(),
    }
}

/// Writes the stream as NDJSON.
pub fn generate(opts: &GenOptions, out: &mut dyn Write) -> io::Result<GenStats> {
    let profiles = profiles(opts);
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut stats = GenStats {
        accounts: opts.accounts,
        ..GenStats::default()
    };
    let mut lines: Vec<Line> = Vec::new();
    // Lines whose emission key falls into the next day are carried over.
    let mut carry: Vec<Line> = Vec::new();
    for day in 0..opts.days {
        let day_start = opts.start + day as i64 * DAY;
        let wd = (crate::time::day_of(day_start) + 3).rem_euclid(7); // 1970-01-01 was a Thursday
        lines.append(&mut carry);
        for p in &profiles {
            if day < p.start_day {
                continue;
            }
            let rel = day - p.start_day;
            let rand_ts = |rng: &mut StdRng| day_start + rng.random_range(0..DAY);
            if rel == 0 && p.created_event {
                let ts = day_start + rng.random_range(0..DAY / 4);
                push_event(&mut lines, &mut rng, opts, p, ts, "account.created", None);
            }
            // Billing events: (the day they happen on, name, latest time of day).
            let billing = [
                (
                    p.persona == Persona::Churns && rel == p.turn_day,
                    "subscription.cancelled",
                    DAY,
                ),
                (
                    p.persona == Persona::Churns && Some(rel) == p.return_day,
                    "subscription.started",
                    DAY / 8,
                ),
                (p.cancel_day == Some(rel), "subscription.cancelled", DAY),
            ];
            for (today, name, within) in billing {
                if today {
                    let ts = day_start + rng.random_range(0..within);
                    push_event(&mut lines, &mut rng, opts, p, ts, name, None);
                }
            }
            if p.cancel_day.is_some_and(|c| rel >= c) {
                continue;
            }
            let mean = day_rate(p, rel, wd);
            if mean <= 0.0 {
                continue;
            }
            let shape = p.dispersion;
            let mix = Gamma::new(shape, mean / shape)
                .expect("positive gamma")
                .sample(&mut rng);
            let n = if mix > 0.0 {
                Poisson::new(mix)
                    .map(|d| d.sample(&mut rng) as u64)
                    .unwrap_or(0)
            } else {
                0
            };
            for _ in 0..n {
                let w: f64 = rng.random();
                let mut acc = 0.0;
                let mut name = ACTIVITY[0];
                for (k, wt) in ACTIVITY_WEIGHTS.iter().enumerate() {
                    acc += wt;
                    if w < acc {
                        name = ACTIVITY[k];
                        break;
                    }
                }
                let user = (!rng.random_bool(0.05)).then(|| {
                    // Skewed toward the first users: a few power users do most of the work.
                    let x: f64 = rng.random();
                    (x * x * p.users as f64) as u32
                });
                let ts = rand_ts(&mut rng);
                push_event(&mut lines, &mut rng, opts, p, ts, name, user);
            }
        }
        lines.sort_unstable_by_key(|l| l.key);
        let next_day = day_start + DAY;
        let split = lines.partition_point(|l| l.key < next_day);
        let last_day = day + 1 == opts.days;
        let emit = if last_day { lines.len() } else { split };
        for l in lines.drain(..emit) {
            if opts.bad_line_rate > 0.0 && rng.random_bool(opts.bad_line_rate) {
                out.write_all(bad_line(&mut rng, l.key).as_bytes())?;
                out.write_all(b"\n")?;
                stats.bad_lines += 1;
            }
            out.write_all(l.text.as_bytes())?;
            out.write_all(b"\n")?;
            stats.events += 1;
        }
        carry.append(&mut lines);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::source::event::EventParser;

    fn small() -> GenOptions {
        GenOptions {
            accounts: 60,
            days: 120,
            seed: 7,
            ..GenOptions::default()
        }
    }

    #[test]
    fn deterministic_in_seed() {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        generate(&small(), &mut a).unwrap();
        generate(&small(), &mut b).unwrap();
        generate(&GenOptions { seed: 8, ..small() }, &mut c).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn valid_lines_parse_and_stay_within_jitter() {
        let opts = GenOptions {
            bad_line_rate: 0.01,
            ..small()
        };
        let mut buf = Vec::new();
        let stats = generate(&opts, &mut buf).unwrap();
        let parser = EventParser::new(&Config::default().input).unwrap();
        let (mut ok, mut bad, mut newest) = (0u64, 0u64, Millis::MIN);
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match parser.parse(line) {
                Ok(e) => {
                    ok += 1;
                    assert!(
                        e.ts >= newest.saturating_sub(opts.jitter),
                        "event more than jitter behind"
                    );
                    newest = newest.max(e.ts);
                }
                Err(_) => bad += 1,
            }
        }
        assert_eq!((ok, bad), (stats.events, stats.bad_lines));
        assert!(stats.bad_lines > 0 && stats.events > 10_000, "{stats:?}");
    }

    #[test]
    fn risky_personas_cancel_and_go_silent() {
        let opts = GenOptions {
            accounts: 400,
            days: 200,
            bad_line_rate: 0.0,
            ..small()
        };
        let people = profiles(&opts);
        let cancelling: Vec<&Profile> = people
            .iter()
            .filter(|p| p.cancel_day.is_some_and(|c| p.start_day + c < opts.days))
            .collect();
        let risky = |p: &&Profile| {
            matches!(
                p.persona,
                Persona::NeverActivates | Persona::GoesDark | Persona::SharpDrop
            )
        };
        let share = |sel: &dyn Fn(&&Profile) -> bool| {
            let all = people.iter().filter(|p| sel(p)).count() as f64;
            cancelling.iter().filter(|p| sel(p)).count() as f64 / all
        };
        assert!(share(&risky) > 0.25, "risky personas cancel");
        assert!(share(&|p| p.persona == Persona::Healthy) < 0.1);
        let mut buf = Vec::new();
        generate(&opts, &mut buf).unwrap();
        let parser = EventParser::new(&Config::default().input).unwrap();
        let mut cancelled_at = std::collections::HashMap::new();
        let mut last = std::collections::HashMap::new();
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let e = parser.parse(line).unwrap();
            if e.event == "subscription.cancelled" {
                cancelled_at.insert(e.account_id.to_string(), e.ts);
            } else {
                let t = last.entry(e.account_id.to_string()).or_insert(e.ts);
                *t = (*t).max(e.ts);
            }
        }
        for p in &cancelling {
            let c = cancelled_at[&p.id];
            assert_eq!(
                crate::time::day_of(c - opts.start) as u32,
                p.start_day + p.cancel_day.unwrap()
            );
            assert!(last.get(&p.id).is_none_or(|&t| t <= c + DAY), "{}", p.id);
        }
    }
}
