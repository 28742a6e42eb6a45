//! The `churnwatch` command line.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

mod cmd;
use cmd::{load_config, open_output};

use churnwatch::engine::Admit;
use churnwatch::gen::{generate, GenOptions};
use churnwatch::replay::{replay, ReplayOptions};
use churnwatch::sink::{record, reject};
use churnwatch::source::file::LineReader;
use churnwatch::time::wall_clock_ms;
use churnwatch::time::{parse_cli_time, parse_duration, Millis};

#[derive(Parser)]
#[command(
    name = "churnwatch",
    version,
    about = "Flags SaaS accounts at risk of churning and tells their CSM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run NDJSON events through the engine and write alert records as NDJSON.
    Replay {
        /// Config file (defaults apply to anything it leaves out; no file: all defaults).
        #[arg(long, env = "CHURNWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// Events, NDJSON, plain or gzip; `-` for stdin.
        #[arg(long)]
        input: PathBuf,
        /// Alert records; `-` (default) for stdout.
        #[arg(long, default_value = "-")]
        output: PathBuf,
        /// Rejected lines with their reasons, as NDJSON. Without it they go to stderr.
        #[arg(long)]
        rejects: Option<PathBuf>,
        /// Evaluate as of this time (RFC 3339, YYYY-MM-DD or epoch ms): later events
        /// are not applied (counted), the watermark ends here; default: the newest
        /// event time.
        #[arg(long, visible_alias = "as-of", value_parser = parse_cli_time)]
        until: Option<Millis>,
        /// Stands for the wall clock in the future-timestamp check (events more than
        /// input.max_future after it are rejected): RFC 3339, YYYY-MM-DD or epoch ms.
        /// Default: the clock.
        #[arg(long, value_parser = parse_cli_time)]
        now: Option<Millis>,
        /// Print neither the summary nor (without --rejects) the rejected lines on
        /// stderr; only a one-line count of rejects, if any.
        #[arg(long, short)]
        quiet: bool,
        /// Account metadata (CSV or JSON) to attach to records under `account`.
        #[arg(long)]
        accounts: Option<PathBuf>,
    },
    /// Write a realistic synthetic event stream (seeded, reproducible) as NDJSON.
    Gen {
        #[arg(long, default_value_t = 1000)]
        accounts: u32,
        #[arg(long, default_value_t = 150)]
        days: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// First day of the stream.
        #[arg(long, default_value = "2026-01-01", value_parser = parse_cli_time)]
        start: Millis,
        /// Multiplies every account's daily volume.
        #[arg(long, default_value_t = 1.0)]
        volume: f64,
        /// Fraction of malformed lines mixed in.
        #[arg(long, default_value_t = 0.0002)]
        bad_lines: f64,
        /// Largest delay of an event behind newer ones (e.g. 5m; keep it within
        /// `allowed_lateness` for exact results).
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        jitter: Millis,
        /// Write ts as epoch milliseconds instead of RFC 3339.
        #[arg(long)]
        epoch_ms: bool,
        /// Output file (`.gz` suffix: gzip); `-` (default) for stdout.
        #[arg(long, default_value = "-")]
        output: PathBuf,
        /// Also write the accounts' metadata (owners, plans, MRR) as CSV here.
        #[arg(long)]
        accounts_file: Option<PathBuf>,
    },
    /// Generate a customer base, run it through the engine, and print what churnwatch
    /// would tell each CSM. Needs nothing else.
    Demo {
        #[arg(long, default_value_t = 600)]
        accounts: u32,
        #[arg(long, default_value_t = 150)]
        days: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Config file (default: built-in defaults).
        #[arg(long, env = "CHURNWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run the detector as a Kafka consumer-group member (exactly-once alerts).
    Run {
        #[arg(long, env = "CHURNWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Serve the CSM inbox API from the changelog and alerts topics (or an event file).
    Serve(cmd::serve::ServeArgs),
    /// Load an NDJSON file (plain or gzip) into a Kafka topic, keyed by account id.
    Produce {
        #[arg(long, env = "CHURNWATCH_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        input: PathBuf,
        /// Topic (default: kafka.input_topic).
        #[arg(long)]
        topic: Option<String>,
        /// Key each line (a JSON object) by this string field instead of parsing it as
        /// an event, e.g. `account_id` for notify.accounts_topic. The file is checked
        /// whole before anything is produced.
        #[arg(long)]
        key_field: Option<String>,
        /// With --key-field: produce a tombstone (null value) for each line's key,
        /// which deletes it from a compacted topic.
        #[arg(long, requires = "key_field")]
        tombstones: bool,
    },
    /// Notify CSMs of the alert records in a file (routing, batching per owner, Slack,
    /// webhook, email); `--dry-run` prints what would be sent instead.
    Notify {
        #[arg(long, env = "CHURNWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// Alert records, NDJSON (as written by `replay`). Without it: consume the
        /// alerts topic (kafka.alerts_topic) as the notifier group, until SIGTERM.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Account metadata (default: notify.accounts_file).
        #[arg(long)]
        accounts: Option<PathBuf>,
        /// Render the notifications on stdout; send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Score the alerts replay would write against the churns of an event history, for
    /// the config or a sweep of settings (docs/backtest.md).
    Backtest(churnwatch::backtest::cli::Args),
    /// Actions on alerts: `export` writes the actions topic as the file `backtest
    /// --actions` reads.
    Actions(cmd::actions::ActionsArgs),
    /// Validate a config file (with environment overrides) and print the result.
    CheckConfig {
        #[arg(long, env = "CHURNWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn cmd_replay(
    config: Option<PathBuf>,
    input: PathBuf,
    output: PathBuf,
    rejects: Option<PathBuf>,
    mut opts: ReplayOptions,
    quiet: bool,
    accounts: Option<PathBuf>,
) -> Result<()> {
    let cfg = load_config(config.as_deref())?;
    let meta = accounts
        .map(|p| churnwatch::accounts::MetaStore::load(&p).map(std::sync::Arc::new))
        .transpose()?;
    if cfg.engine.known_accounts_only {
        let m = meta.clone().context(
            "engine.known_accounts_only is set: give the account metadata with --accounts F",
        )?;
        opts.known = Some(Admit(std::sync::Arc::new(move |id: &str| {
            m.get(id).is_some()
        })));
    }
    let mut reader =
        LineReader::open(&input).with_context(|| format!("cannot open {}", input.display()))?;
    let mut out = open_output(&output)?;
    let mut reject_out: Box<dyn Write> = match &rejects {
        Some(p) => open_output(p)?,
        None if quiet => Box::new(io::sink()),
        None => Box::new(io::stderr()),
    };
    let source = input.display().to_string();
    let bar = match reader.size_hint {
        Some(size) if size > (32 << 20) && io::stderr().is_terminal() && !quiet => {
            let bar = indicatif::ProgressBar::new(size);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template"),
            );
            Some(bar)
        }
        _ => None,
    };
    let counted = reader.progress();
    let summary = replay(
        &cfg,
        &mut reader,
        &opts,
        |alert| {
            out.write_all(
                record::to_json_line_with(&alert, wall_clock_ms(), meta.as_deref()).as_bytes(),
            )?;
            out.write_all(b"\n")
        },
        |line, reason, raw, len| {
            let rec = reject::file_reject(&source, line, reason, raw, len);
            reject_out.write_all(rec.to_string().as_bytes())?;
            reject_out.write_all(b"\n")
        },
        |_| {
            if let Some(b) = &bar {
                b.set_position(counted.get());
            }
        },
    )
    .with_context(|| format!("replay of {source}"))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    out.flush().context("writing alerts")?;
    drop(out);
    reject_out.flush().context("writing rejects")?;
    if !quiet {
        eprint!("{}", summary.render(&source));
    } else if rejects.is_none() && summary.rejected() > 0 {
        // Quiet, but not silent about input that was not used.
        eprintln!(
            "{}: {} line(s) rejected (not shown with -q; --rejects F writes them out)",
            source,
            summary.rejected()
        );
    }
    Ok(())
}

fn cmd_produce(
    config: Option<PathBuf>,
    input: PathBuf,
    topic: Option<String>,
    key_field: Option<String>,
    tombstones: bool,
) -> Result<()> {
    let cfg = load_config(config.as_deref())?;
    cmd::init_logging(&cfg);
    let topic = topic.unwrap_or_else(|| cfg.kafka.input_topic.clone());
    if let Some(field) = key_field {
        let s =
            churnwatch::kafka::produce::produce_keyed(&cfg, &input, &topic, &field, tombstones)?;
        eprintln!(
            "produced {} {} to {topic} keyed by {field} in {:.2} s",
            s.lines,
            if tombstones { "tombstones" } else { "records" },
            s.elapsed_secs
        );
        return Ok(());
    }
    let size = std::fs::metadata(&input).map(|m| m.len()).unwrap_or(0);
    let bar = (io::stderr().is_terminal() && size > (8 << 20)).then(|| {
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        );
        bar
    });
    let s = churnwatch::kafka::produce::produce(&cfg, &input, &topic, |pos| {
        if let Some(b) = &bar {
            b.set_position(pos);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    eprintln!(
        "produced {} messages to {topic} in {:.2} s ({} keyed by account, {} unparseable without a key)",
        s.lines, s.elapsed_secs, s.keyed, s.unkeyed
    );
    if s.too_long > 0 {
        eprintln!(
            "skipped {} lines longer than input.max_event_bytes ({} bytes)",
            s.too_long, cfg.input.max_event_bytes
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => cmd::services::cmd_run(config),
        Command::Serve(args) => cmd::serve::cmd_serve(args),
        Command::Produce {
            config,
            input,
            topic,
            key_field,
            tombstones,
        } => cmd_produce(config, input, topic, key_field, tombstones),
        Command::Replay {
            config,
            input,
            output,
            rejects,
            until,
            now,
            quiet,
            accounts,
        } => cmd_replay(
            config,
            input,
            output,
            rejects,
            ReplayOptions {
                until,
                now,
                known: None,
            },
            quiet,
            accounts,
        ),
        Command::Notify {
            config,
            input,
            accounts,
            dry_run,
        } => cmd::notify::cmd_notify(config, input, accounts, dry_run),
        Command::Gen {
            accounts,
            days,
            seed,
            start,
            volume,
            bad_lines,
            jitter,
            epoch_ms,
            output,
            accounts_file,
        } => (|| {
            let opts = GenOptions {
                accounts,
                days,
                seed,
                start,
                volume,
                bad_line_rate: bad_lines,
                jitter,
                epoch_ms,
            };
            if let Some(p) = &accounts_file {
                let mut f = open_output(p)?;
                churnwatch::gen::write_accounts_csv(&opts, &mut f)?;
                f.flush()?;
            }
            let mut out = open_output(&output)?;
            let stats = generate(&opts, &mut out)?;
            out.flush()?;
            drop(out);
            eprintln!(
                "generated {} events ({} malformed lines) for {} accounts over {} days",
                stats.events, stats.bad_lines, stats.accounts, days
            );
            Ok(())
        })(),
        Command::Demo {
            accounts,
            days,
            seed,
            config,
        } => load_config(config.as_deref()).and_then(|cfg| {
            let opts = GenOptions {
                accounts,
                days,
                seed,
                ..GenOptions::default()
            };
            let report = churnwatch::demo::run(&cfg, &opts)?;
            print!("{report}");
            Ok(())
        }),
        Command::Backtest(args) => churnwatch::backtest::cli::run(args),
        Command::Actions(args) => cmd::actions::cmd_actions(args),
        Command::CheckConfig { config } => load_config(config.as_deref())
            .and_then(|cfg| {
                // What is read only at start: token files, the legacy token, TLS files.
                churnwatch::server::auth::Authenticator::from_config(&cfg.server)
                    .map_err(anyhow::Error::msg)?;
                churnwatch::server::tls::load(&cfg.server.tls).map_err(anyhow::Error::msg)?;
                Ok(cfg)
            })
            .map(|cfg| {
            let what = match &config {
                Some(p) => format!("config {} OK", p.display()),
                None => "no --config given (nor CHURNWATCH_CONFIG): the built-in defaults, with \
                         environment overrides, are OK"
                    .to_string(),
            };
            let metric = match cfg.rules.activity_drop.metric {
                churnwatch::config::DropMetric::Events => "events",
                churnwatch::config::DropMetric::ActiveUsers => "active_users",
            };
            println!(
                "{what}: allowed_lateness {}, deadlines {:?}, inactive after {} days, activity_drop of {} over {}+{} days",
                cfg.time.allowed_lateness,
                cfg.rules.not_activated.deadlines.iter().map(|d| d.after_days).collect::<Vec<_>>(),
                cfg.rules.inactive.after_days,
                metric,
                cfg.rules.activity_drop.recent_days,
                cfg.rules.activity_drop.baseline_days,
            );
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("churnwatch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
