//! The `backtest` subcommand: arguments, and the steps in order (config and `--set`
//! checked first, then the history read once, churns, the actions on alerts when
//! given, owners, the runs on all cores, and the outputs).

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::accounts::MetaStore;
use crate::source::file::LineReader;
use crate::time::{parse_cli_time, parse_duration, Millis};

use super::actions_topic;
use super::churns::Churns;
use super::feedback::{Collect, Feedback};
use super::history::History;
use super::score::{Owners, Window};
use super::sweep::{parse_set, plan, SetFlag};
use super::{outcomes, output, report, run_all, table, Inputs};

/// `churnwatch backtest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file (defaults apply to anything it leaves out).
    #[arg(long, env = "CHURNWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Event history, NDJSON, plain or gzip; `-` for stdin.
    #[arg(long)]
    pub input: PathBuf,
    /// Account metadata (CSV or JSON, as `replay --accounts`): owners for the load.
    #[arg(long)]
    pub accounts: Option<PathBuf>,
    /// Churns (CSV `account_id,churned_at` or NDJSON) instead of the end events.
    #[arg(long)]
    pub outcomes: Option<PathBuf>,
    /// What CSMs did about the alerts: an export of the actions topic (JSON lines, each
    /// an alert's value as the topic stores it or one action; `churnwatch actions
    /// export` writes one), scored beside precision (docs/backtest.md, "Feedback from
    /// actions"). Repeatable (exports of several periods; an alert in several counts
    /// once, its actions merged).
    #[arg(long)]
    pub actions: Vec<PathBuf>,
    /// Read the actions from Kafka (kafka.brokers of the config): this topic, or
    /// without a value `<notify.group_id>-actions`. With --actions too, both count.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    pub actions_topic: Option<String>,
    /// How long after an alert a churn still counts for it.
    #[arg(long, default_value = "90d", value_parser = parse_duration)]
    pub horizon: Millis,
    /// End of the history (as `replay --until`/`--as-of`): later events are not applied.
    #[arg(long, visible_alias = "as-of", value_parser = parse_cli_time)]
    pub until: Option<Millis>,
    /// KEY=V1,V2,... : run every combination of these config values (repeatable).
    #[arg(long = "set", value_parser = parse_set_arg)]
    pub set: Vec<SetFlag>,
    /// Write the metrics as JSON here.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Threads for the runs (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No table or progress on stderr/stdout, only the files asked for.
    #[arg(long, short)]
    pub quiet: bool,
}

fn parse_set_arg(s: &str) -> Result<SetFlag, String> {
    parse_set(s).map_err(|e| e.to_string())
}

fn bar(len: u64, template: &str, show: bool) -> Option<indicatif::ProgressBar> {
    show.then(|| {
        let b = indicatif::ProgressBar::new(len);
        b.set_style(indicatif::ProgressStyle::with_template(template).expect("valid template"));
        b
    })
}

/// The actions of `--actions` and `--actions-topic`, merged; None when neither is given.
fn load_feedback(a: &Args, cfg: &crate::config::Config) -> Result<Option<Feedback>> {
    if a.actions.is_empty() && a.actions_topic.is_none() {
        return Ok(None);
    }
    let mut c = Collect::default();
    if let Some(t) = &a.actions_topic {
        let topic = actions_topic::topic_of(cfg, Some(t));
        let read = actions_topic::read(cfg, &topic)
            .with_context(|| format!("reading the actions topic {topic}"))?;
        if read.skipped > 0 {
            eprintln!(
                "{topic}: {} unreadable action records skipped (see the log)",
                read.skipped
            );
        }
        read.values.into_values().for_each(|v| c.add_value(v));
    }
    for p in &a.actions {
        c.read_file(p)?;
    }
    let fb = c.finish();
    Ok(Some(fb))
}

/// Runs the backtest.
pub fn run(a: Args) -> Result<()> {
    anyhow::ensure!(a.horizon > 0, "--horizon must be positive");
    let text = match &a.config {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read config {}", p.display()))?,
        None => String::new(),
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let specs = plan(&text, env.clone(), &a.set)?;
    let base = crate::config::Config::from_toml_str(&text, env).context("config")?;
    let meta = a
        .accounts
        .as_ref()
        .map(|p| MetaStore::load(p))
        .transpose()?;
    let mut reader =
        LineReader::open(&a.input).with_context(|| format!("cannot open {}", a.input.display()))?;
    let interactive = io::stderr().is_terminal() && !a.quiet;
    let read_bar = bar(
        reader.size_hint.unwrap_or(0),
        "reading {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        interactive && reader.size_hint.is_some_and(|s| s > (32 << 20)),
    );
    let counted = reader.progress();
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let history = History::read_with(&base, &mut reader, a.until, None, threads, |_| {
        if let Some(b) = &read_bar {
            b.set_position(counted.get());
        }
    })
    .with_context(|| format!("reading {}", a.input.display()))?;
    if let Some(b) = read_bar {
        b.finish_and_clear();
    }
    let (start, end) = history
        .window()
        .context("the history has no accepted event (before --until)")?;
    let churns = match &a.outcomes {
        Some(p) => outcomes::load(p, &history)?,
        None => Churns::from_end_events(&history, &base),
    };
    let feedback = load_feedback(&a, &base)?;
    let owners = Owners::build(
        history.known_accounts(),
        |i| {
            meta.as_ref()
                .and_then(|m| m.get(history.account_id(i)))
                .and_then(|m| m.owner_email.clone())
        },
        |i| history.is_active(i),
    );
    let inputs = Inputs {
        history: &history,
        churns: &churns,
        owners: &owners,
        window: Window {
            start,
            end,
            horizon: a.horizon,
        },
        feedback: feedback.as_ref(),
    };
    let runs_bar = bar(
        specs.len() as u64,
        "runs {bar:40} {pos}/{len} eta {eta}",
        interactive && specs.len() > 1,
    );
    let runs = run_all(&inputs, specs, threads, || {
        if let Some(b) = &runs_bar {
            b.inc(1);
        }
    });
    if let Some(b) = runs_bar {
        b.finish_and_clear();
    }
    if let Some(p) = &a.output {
        let doc = output::document(&history, &churns, &inputs.window, &runs);
        std::fs::write(p, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &a.report {
        let html = report::render(&inputs, &runs);
        std::fs::write(p, html).with_context(|| format!("cannot write {}", p.display()))?;
    }
    if !a.quiet {
        let mut out = io::stdout().lock();
        out.write_all(table::render(&history, &churns, &inputs.window, &runs).as_bytes())?;
        if history.as_of.not_applied > 0 {
            writeln!(
                out,
                "{} accepted events after --until not applied",
                history.as_of.not_applied
            )?;
        }
        out.flush()?;
    }
    Ok(())
}
