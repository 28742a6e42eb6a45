//! `churnwatch demo`: a generated customer base through the engine, reported the way a
//! CS team would look at it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Cursor;

use crate::config::{Config, Severity};
use crate::engine::{Alert, AlertKind, Status};
use crate::gen::{generate, owner_of, profiles, GenOptions, Persona};
use crate::replay::{replay, ReplayOptions};
use crate::sink::record::summary;
use crate::source::file::LineReader;
use crate::time::{day_of, format_day, format_rfc3339, DAY};

/// Runs the demo and returns the report.
pub fn run(cfg: &Config, opts: &GenOptions) -> anyhow::Result<String> {
    let mut data = Vec::new();
    let gen_stats = generate(opts, &mut data)?;
    let mut reader = LineReader::from_reader(Box::new(Cursor::new(data.clone())));
    let mut alerts: Vec<Alert> = Vec::new();
    // The generated stream's own clock (its dates may lie anywhere relative to today),
    // and its population as the accounts with metadata.
    let ids: std::collections::HashSet<String> = profiles(opts).into_iter().map(|p| p.id).collect();
    let replay_opts = ReplayOptions {
        until: None,
        now: Some(opts.start + opts.days as i64 * DAY),
        known: Some(crate::engine::Admit(std::sync::Arc::new(
            move |id: &str| ids.contains(id),
        ))),
    };
    let summary_stats = replay(
        cfg,
        &mut reader,
        &replay_opts,
        |a| {
            alerts.push(a);
            Ok(())
        },
        |_, _, _, _| Ok(()),
        |_| {},
    )?;
    let people = profiles(opts);
    let index: HashMap<&str, usize> = people
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();

    let mut r = String::new();
    let end = opts.start + opts.days as i64 * DAY;
    let _ = writeln!(
        r,
        "churnwatch demo: {} synthetic accounts, {} days from {} to {} (seed {})",
        opts.accounts,
        opts.days,
        format_day(day_of(opts.start)),
        format_day(day_of(end) - 1),
        opts.seed
    );
    let _ = writeln!(
        r,
        "  {} events replayed in {:.2} s; {} malformed lines rejected with their reasons\n",
        gen_stats.events,
        summary_stats.elapsed_secs,
        summary_stats.rejected()
    );

    let _ = writeln!(r, "Alert transitions            firing  resolved");
    for kind in AlertKind::ALL {
        let f = summary_stats
            .alerts
            .get(&(kind, Status::Firing))
            .copied()
            .unwrap_or(0);
        let s = summary_stats
            .alerts
            .get(&(kind, Status::Resolved))
            .copied()
            .unwrap_or(0);
        let _ = writeln!(r, "  {:<26} {f:>6}  {s:>8}", kind.as_str());
    }

    let _ = writeln!(r, "\nWhat a CSM reads (one example of each):");
    let mut shown: Vec<(AlertKind, Status, &str)> = Vec::new();
    for a in &alerts {
        let reason = match &a.evidence {
            crate::engine::Evidence::Resolved { reason, .. } => reason.as_str(),
            _ => "",
        };
        if shown
            .iter()
            .any(|&(k, s, r)| k == a.kind && s == a.status && r == reason)
        {
            continue;
        }
        shown.push((a.kind, a.status, reason));
        let _ = writeln!(
            r,
            "  {} {:<8} {:<8} {}{}\n      {}",
            format_rfc3339(a.event_time),
            a.status.as_str(),
            a.severity.as_str(),
            a.id(),
            if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            },
            summary(a)
        );
    }

    // Alerts still firing at the end, per owner.
    let mut open: BTreeMap<String, (AlertKind, Severity)> = BTreeMap::new();
    for a in &alerts {
        match a.status {
            Status::Firing => {
                open.insert(a.id(), (a.kind, a.severity));
            }
            Status::Resolved => {
                open.remove(&a.id());
            }
        }
    }
    let mut by_owner: BTreeMap<String, BTreeMap<&str, u32>> = BTreeMap::new();
    for (id, (kind, sev)) in &open {
        let account = id.split('/').next().unwrap_or("");
        let owner = index
            .get(account)
            .map_or("team@example.com".into(), |&i| owner_of(i as u32));
        let e = by_owner.entry(owner).or_default();
        *e.entry(kind.as_str()).or_default() += 1;
        if *sev == Severity::Critical {
            *e.entry("critical").or_default() += 1;
        }
    }
    let _ = writeln!(r, "\nStill firing at the end, by owning CSM:");
    for (owner, counts) in &by_owner {
        let total: u32 = AlertKind::ALL
            .iter()
            .map(|k| counts.get(k.as_str()).copied().unwrap_or(0))
            .sum();
        let parts: Vec<String> = AlertKind::ALL
            .iter()
            .filter_map(|k| {
                counts
                    .get(k.as_str())
                    .map(|n| format!("{n} {}", k.as_str()))
            })
            .collect();
        let _ = writeln!(
            r,
            "  {owner:<20} {total:>3} open ({} critical): {}",
            counts.get("critical").copied().unwrap_or(0),
            parts.join(", ")
        );
    }

    // How the personas the generator played were caught.
    let mut flagged: HashMap<(&str, AlertKind), ()> = HashMap::new();
    for a in alerts.iter().filter(|a| a.status == Status::Firing) {
        flagged.insert((a.account_id.as_str(), a.kind), ());
    }
    let _ = writeln!(r, "\nWho got flagged, by the persona the generator played:");
    let _ = writeln!(
        r,
        "  persona            accounts  not_activated  inactive  activity_drop"
    );
    for persona in [
        Persona::Healthy,
        Persona::NeverActivates,
        Persona::LateActivation,
        Persona::SharpDrop,
        Persona::GoesDark,
        Persona::Churns,
        Persona::LowVolume,
    ] {
        let members: Vec<&str> = people
            .iter()
            .filter(|p| p.persona == persona)
            .map(|p| p.id.as_str())
            .collect();
        let count = |k| {
            members
                .iter()
                .filter(|id| flagged.contains_key(&(**id, k)))
                .count()
        };
        let _ = writeln!(
            r,
            "  {:<18} {:>8}  {:>13}  {:>8}  {:>13}",
            persona.as_str(),
            members.len(),
            count(AlertKind::NotActivated),
            count(AlertKind::Inactive),
            count(AlertKind::ActivityDrop)
        );
    }
    backtest(
        &mut r,
        cfg,
        data,
        &alerts,
        opts.start + opts.days as i64 * DAY,
    )?;
    let _ = writeln!(
        r,
        "\n(Accounts that start late in the period have not reached their deadlines or a full\n\
         35-day window yet, so not every scripted risk can fire. Try --days 240.)"
    );
    Ok(r)
}

/// The backtest of the demo's alerts against the cancellations the generator scripted
/// (docs/backtest.md; horizon 90 days, owners as in `gen --accounts-file`).
fn backtest(
    r: &mut String,
    cfg: &Config,
    data: Vec<u8>,
    alerts: &[Alert],
    now: crate::time::Millis,
) -> anyhow::Result<()> {
    use crate::backtest::{churns::Churns, history::History, score, sweep::RunSpec, table, Run};
    let mut reader = LineReader::from_reader(Box::new(Cursor::new(data)));
    let h = History::read_at(cfg, &mut reader, None, Some(now), |_| {})?;
    let Some((start, end)) = h.window() else {
        return Ok(());
    };
    let churns = Churns::from_end_events(&h, cfg);
    let owners = score::Owners::build(
        h.known_accounts(),
        |a| {
            let id = h.account_id(a);
            let i: u32 = id.strip_prefix("acct-")?.parse().ok()?;
            (i % 10 != 9).then(|| owner_of(i))
        },
        |a| h.is_active(a),
    );
    let firings: Vec<score::Firing> = alerts
        .iter()
        .filter(|a| a.status == Status::Firing)
        .filter_map(|a| {
            Some(score::Firing {
                account: h.account_index(&a.account_id)?,
                kind: a.kind,
                t: a.event_time,
            })
        })
        .collect();
    let w = score::Window {
        start,
        end,
        horizon: 90 * DAY,
    };
    let run = Run {
        spec: RunSpec {
            settings: Vec::new(),
            config: cfg.clone(),
            current: true,
        },
        score: score::score(
            &firings,
            &churns,
            &w,
            &crate::backtest::kinds_enabled(cfg),
            &owners,
        ),
    };
    let _ = writeln!(
        r,
        "\nBacktest: would these alerts have caught the accounts that cancelled? (horizon 90 days)"
    );
    for line in table::render(&h, &churns, &w, std::slice::from_ref(&run)).lines() {
        let _ = writeln!(r, "  {line}");
    }
    Ok(())
}
