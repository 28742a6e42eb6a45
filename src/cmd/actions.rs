//! `churnwatch actions export`: the actions topic (`<notify.group_id>-actions`, on
//! `kafka.brokers`) read to its end and written as JSON lines, one alert's value per
//! line, the file `backtest --actions` reads (docs/backtest.md, "Feedback").

use std::path::PathBuf;

use anyhow::{Context, Result};
use churnwatch::backtest::actions_topic;

use super::{init_logging, load_config, open_output};

#[derive(clap::Args, Debug)]
pub struct ActionsArgs {
    #[command(subcommand)]
    command: ActionsCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ActionsCommand {
    /// Write every alert's actions (the topic's latest value per alert, deleted ones
    /// left out) as JSON lines, in alert id order.
    Export {
        #[arg(long, env = "CHURNWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// The topic (default: `<notify.group_id>-actions`).
        #[arg(long)]
        topic: Option<String>,
        /// Output file (`.gz` suffix: gzip); `-` (default) for stdout.
        #[arg(long, default_value = "-")]
        output: PathBuf,
    },
}

pub fn cmd_actions(args: ActionsArgs) -> Result<()> {
    match args.command {
        ActionsCommand::Export {
            config,
            topic,
            output,
        } => {
            let cfg = load_config(config.as_deref())?;
            init_logging(&cfg);
            let topic = actions_topic::topic_of(&cfg, topic.as_deref());
            let read = actions_topic::read(&cfg, &topic)
                .with_context(|| format!("reading the actions topic {topic}"))?;
            let mut out = open_output(&output)?;
            let n = actions_topic::write_export(&read.values, &mut out)
                .with_context(|| format!("writing {}", output.display()))?;
            drop(out);
            eprintln!(
                "{topic}: {} records read, {n} alerts with actions written{}",
                read.records,
                if read.skipped > 0 {
                    format!(", {} unreadable records skipped", read.skipped)
                } else {
                    String::new()
                }
            );
            Ok(())
        }
    }
}
