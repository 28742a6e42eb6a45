//! The binary's commands that run services or deliver notifications, and the helpers
//! every command shares (config, logging, output files). `main.rs` parses the command
//! line and dispatches.

pub mod actions;
pub mod notify;
pub mod serve;
pub mod services;

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result};
use churnwatch::config::Config;

pub fn open_output(path: &Path) -> Result<Box<dyn Write>> {
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

pub fn load_config(path: Option<&Path>) -> Result<Config> {
    Config::load(path).with_context(|| match path {
        Some(p) => format!("config {}", p.display()),
        None => "built-in config with environment overrides".to_string(),
    })
}

pub fn init_logging(cfg: &Config) {
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
