//! The `churnwatch` command line.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use churnwatch::config::Config;
use churnwatch::engine::Admit;
use churnwatch::gen::{generate, GenOptions};
use churnwatch::replay::{replay, wall_clock_ms, ReplayOptions};
use churnwatch::sink::{record, reject};
use churnwatch::source::file::LineReader;
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
    /// Validate a config file (with environment overrides) and print the result.
    CheckConfig {
        #[arg(long, env = "CHURNWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn open_output(path: &Path) -> Result<Box<dyn Write>> {
    if path == Path::new("-") {
        return Ok(Box::new(BufWriter::with_capacity(
            1 << 20,
            io::stdout().lock(),
        )));
    }
    let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let w = BufWriter::with_capacity(1 << 20, f);
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(flate2::write::GzEncoder::new(
            w,
            flate2::Compression::fast(),
        )))
    } else {
        Ok(Box::new(w))
    }
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    Config::load(path).with_context(|| match path {
        Some(p) => format!("config {}", p.display()),
        None => "built-in config with environment overrides".to_string(),
    })
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
        .map(|p| churnwatch::notify::meta::MetaStore::load(&p).map(std::sync::Arc::new))
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

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    let _ = if cfg.log.format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

fn cmd_run(config: Option<PathBuf>) -> Result<()> {
    let cfg = load_config(config.as_deref())?;
    init_logging(&cfg);
    let notify = cfg.notify.enabled;
    run_services(cfg, true, notify)
}

/// Runs the detector and/or the notifier until SIGTERM/SIGINT, with the HTTP endpoints.
fn run_services(cfg: Config, detector: bool, notifier: bool) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let cfg = Arc::new(cfg);
    let shutdown = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let grace = std::time::Duration::from_millis(cfg.kafka.shutdown_timeout.0 as u64);
    let flag = shutdown.clone();
    rt.spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("signal received; committing and leaving the group");
        flag.store(true, Ordering::Relaxed);
        // A stop that hangs (e.g. brokers unreachable) must not outlive the grace period.
        tokio::time::sleep(grace + std::time::Duration::from_secs(5)).await;
        tracing::error!("graceful stop took too long; exiting");
        std::process::exit(1);
    });
    // Health reflects the components this process runs, and only them.
    let health = Arc::new(churnwatch::server::Health::new(
        std::time::Duration::from_millis(cfg.server.liveness_timeout.0 as u64),
    ));
    if detector {
        health.detector(|_| {});
    }
    if notifier {
        health.notifier(|_| {});
    }
    let silences = if notifier {
        Some(
            churnwatch::notify::silence::start(&cfg, shutdown.clone(), health.clone())
                .context("silences")?,
        )
    } else {
        None
    };
    if !cfg.server.listen.is_empty() {
        let app =
            churnwatch::server::router(health.clone(), silences.as_ref().map(|(_, r)| r.clone()));
        rt.block_on(churnwatch::server::serve(&cfg.server.listen, app))
            .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
    }
    let notifier_thread = silences.map(|(store, _)| {
        let (cfg, shutdown, health) = (cfg.clone(), shutdown.clone(), health.clone());
        std::thread::spawn(move || {
            let r = churnwatch::notify::kafka::run(cfg, shutdown.clone(), store, health);
            if r.is_err() {
                // The notifier failing ends the process (the orchestrator restarts it).
                shutdown.store(true, Ordering::Relaxed);
            }
            r
        })
    });
    let detector_result: Result<()> = if detector {
        let daemon_cfg = cfg.clone();
        let sd = shutdown.clone();
        let result = rt.block_on(async move {
            tokio::task::spawn_blocking(move || {
                churnwatch::kafka::daemon::run(daemon_cfg, sd, health)
            })
            .await
        });
        shutdown.store(true, Ordering::Relaxed);
        match result {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e)),
            Err(e) => Err(anyhow::anyhow!("daemon thread failed: {e}")),
        }
    } else {
        Ok(())
    };
    if let Some(t) = notifier_thread {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.context("notifier")),
            Err(_) => anyhow::bail!("notifier thread panicked"),
        }
    }
    detector_result
}

fn cmd_produce(
    config: Option<PathBuf>,
    input: PathBuf,
    topic: Option<String>,
    key_field: Option<String>,
    tombstones: bool,
) -> Result<()> {
    let cfg = load_config(config.as_deref())?;
    init_logging(&cfg);
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

fn cmd_notify(
    config: Option<PathBuf>,
    input: Option<PathBuf>,
    accounts: Option<PathBuf>,
    dry_run: bool,
) -> Result<()> {
    use churnwatch::notify::{deliver::Sender, meta::MetaStore, plan, render};
    let mut cfg = load_config(config.as_deref())?;
    init_logging(&cfg);
    let Some(input) = input else {
        anyhow::ensure!(!dry_run, "--dry-run needs --input");
        if let Some(a) = accounts {
            cfg.notify.accounts_file = a.display().to_string();
        }
        return run_services(cfg, false, true);
    };
    let accounts = accounts.or_else(|| {
        (!cfg.notify.accounts_file.is_empty()).then(|| cfg.notify.accounts_file.clone().into())
    });
    let meta = match accounts {
        Some(p) => MetaStore::load(&p)?,
        None => MetaStore::default(),
    };
    let text = std::fs::read_to_string(&input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let mut records = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not an alert record", input.display(), i + 1))?;
        records.push(v);
    }
    if cfg.notify.receivers.is_empty() {
        anyhow::bail!(
            "no receivers configured: add [[notify.receivers]] and [notify.route] to the config"
        );
    }
    // Secrets are read now, in a dry run too, so that a missing one fails here and not
    // only when sending (their values are never printed).
    let sender = Sender::new(&cfg.notify)
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}{}",
                if dry_run {
                    " (a real run would fail: set it before sending)"
                } else {
                    ""
                }
            )
        })?
        .with_priority(cfg.priority.clone());
    let notes = plan(&cfg.notify, records, &meta);
    let no_owner: std::collections::BTreeSet<&str> = notes
        .iter()
        .filter(|n| n.owner.is_empty())
        .flat_map(|n| n.alerts.iter().filter_map(|a| a["id"].as_str()))
        .collect();
    if !no_owner.is_empty() {
        eprintln!(
            "warning: {} alert(s) carry no owner (their accounts have no metadata, or no \
             owner_email in it): each receiver gets them in one \"(no owner)\" message; give \
             the owners with --accounts F (CSV or JSON) or notify.accounts_file",
            no_owner.len()
        );
    }
    let kinds: std::collections::HashMap<&str, &str> = cfg
        .notify
        .receivers
        .iter()
        .map(|r| (r.name.as_str(), r.kind.as_str()))
        .collect();
    if dry_run {
        for n in &notes {
            let kind = kinds.get(n.receiver.as_str()).copied().unwrap_or("?");
            let to = if n.owner.is_empty() {
                "(no owner)".to_string()
            } else {
                n.owner.clone()
            };
            println!(
                "== {kind} receiver {:?} for {to}: {} alert(s), idempotency key {}",
                n.receiver,
                n.alerts.len(),
                n.idempotency_key()
            );
            match kind {
                "email" => {
                    let (subject, body, _) = render::email(
                        n,
                        &cfg.notify.crm_url_template,
                        &cfg.notify.inbox_url,
                        &cfg.priority,
                    );
                    println!("Subject: {subject}\n\n{body}");
                }
                "slack" => {
                    let mention = cfg
                        .notify
                        .receivers
                        .iter()
                        .any(|r| r.name == n.receiver && r.mention_owner);
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&render::slack(
                            n,
                            &render::SlackOptions {
                                crm_template: &cfg.notify.crm_url_template,
                                inbox_url: &cfg.notify.inbox_url,
                                mention_owner: mention,
                                priority: cfg.priority.clone(),
                            }
                        ))?
                    );
                }
                _ => println!("{}", serde_json::to_string_pretty(&render::webhook(n))?),
            }
            println!();
        }
        eprintln!("{} notification(s) would be sent", notes.len());
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut failed = 0;
    let results = rt.block_on(sender.deliver_all(&notes));
    for (n, result) in notes.iter().zip(results) {
        let to = if n.owner.is_empty() {
            "(no owner)"
        } else {
            n.owner.as_str()
        };
        match result {
            Ok(attempts) => println!(
                "delivered to {:?} for {to}: {} alert(s), {attempts} attempt(s)",
                n.receiver,
                n.alerts.len()
            ),
            Err(e) => {
                failed += 1;
                let dead = serde_json::json!({"receiver": n.receiver, "owner": n.owner, "reason": e.to_string(),
                    "idempotency_key": n.idempotency_key(), "alerts": n.alerts});
                eprintln!("{dead}");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} notification(s) failed (dead letters on stderr)",
            notes.len()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => cmd_run(config),
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
        } => cmd_notify(config, input, accounts, dry_run),
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
        Command::CheckConfig { config } => load_config(config.as_deref()).map(|cfg| {
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
