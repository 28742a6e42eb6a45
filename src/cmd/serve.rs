//! `serve`: the CSM inbox alone: the read model following the changelog and alerts
//! topics (or, with `--events`, fed by an in-process replay of a file, no Kafka) and
//! its API on `server.listen`, with `/metrics`, `/healthz` and `/readyz` (ready once
//! the view caught up), and the actions API (`churnwatch::actions`) when following
//! Kafka. `start_inbox` is the same view inside `run`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use churnwatch::actions::view::WithActions;
use churnwatch::actions::Actions;
use churnwatch::config::Config;
use churnwatch::inbox::model::InboxView;
use churnwatch::inbox::view::{feed, follow, store::ViewSettings, View};
use churnwatch::server::auth::{with_auth, Authenticator};
use churnwatch::server::{Health, Loop, Phase};
use churnwatch::time::{parse_cli_time, wall_clock_ms, Millis};

use super::{init_logging, load_config};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[arg(long, env = "CHURNWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Serve the view of this event file (NDJSON, plain or gzip), replayed in-process
    /// at start, instead of following Kafka.
    #[arg(long)]
    events: Option<PathBuf>,
    /// With --events: the end of the replay, as `replay --until` (RFC 3339, a date or
    /// epoch ms; default: the newest event).
    #[arg(long, value_parser = parse_cli_time)]
    until: Option<Millis>,
    /// Account metadata file (CSV or JSON; default: notify.accounts_file).
    #[arg(long)]
    accounts: Option<PathBuf>,
}

/// The inbox's routes as this binary serves them: the JSON API and the pages, behind
/// the sign-in of `[server.auth]` (which inserts the request's `Principal`).
pub fn inbox_routes(cfg: &Config, view: Arc<dyn InboxView>) -> Result<Router> {
    let auth = Authenticator::from_config(&cfg.server).map_err(anyhow::Error::msg)?;
    let routes =
        churnwatch::inbox::pages::router(view.clone()).merge(churnwatch::inbox::api::router(view));
    Ok(with_auth(routes, Arc::new(auth)))
}

/// The view for `cfg`, on the wall clock.
fn new_view(cfg: &Config) -> Arc<View> {
    View::new(
        ViewSettings::new(cfg, cfg.inbox.history_len),
        Arc::new(wall_clock_ms),
    )
}

/// `run` with `[inbox] enabled`: starts following the topics; returns the view (the
/// actions API checks alerts against it; [`inbox_routes`] serves it).
pub fn start_inbox(cfg: &Config, stop: Arc<AtomicBool>, health: Arc<Health>) -> Result<Arc<View>> {
    let view = new_view(cfg);
    follow::start(cfg, view.clone(), stop, health).context("inbox view")?;
    Ok(view)
}

/// The view as served: with each account's actions when this process serves them.
pub fn served_view(view: Arc<View>, actions: Option<&Arc<Actions>>) -> Arc<dyn InboxView> {
    match actions {
        Some(a) => Arc::new(WithActions {
            view,
            actions: a.clone(),
        }),
        None => view,
    }
}

pub fn cmd_serve(args: ServeArgs) -> Result<()> {
    let mut cfg = load_config(args.config.as_deref())?;
    init_logging(&cfg);
    if let Some(a) = &args.accounts {
        cfg.notify.accounts_file = a.display().to_string();
    }
    anyhow::ensure!(
        !cfg.server.listen.is_empty(),
        "serve needs an address to listen on: set server.listen"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let stop = Arc::new(AtomicBool::new(false));
    let health = Arc::new(Health::new(std::time::Duration::from_millis(
        cfg.server.liveness_timeout.0 as u64,
    )));
    let view = new_view(&cfg);
    // Actions need Kafka: served when following the topics, not for an event file.
    let mut actions: Option<(Arc<Actions>, Router)> = None;
    match &args.events {
        Some(events) => {
            health.update(|h| h.inbox = Some(Phase::Starting));
            if !cfg.notify.accounts_file.is_empty() {
                let file = churnwatch::accounts::MetaStore::load(std::path::Path::new(
                    &cfg.notify.accounts_file,
                ))?;
                view.write().store().load_file(file);
            }
            let fed = feed::replay_into(&cfg, events, args.until, wall_clock_ms(), &view)
                .with_context(|| format!("replaying {}", events.display()))?;
            tracing::info!(
                lines = fed.lines,
                rejected = fed.rejected,
                alerts = fed.alerts,
                accounts = fed.accounts,
                "inbox view built from the event file"
            );
            view.set_caught_up(true);
            health.update(|h| h.inbox = Some(Phase::Running));
            // Nothing follows a file: the server itself is the loop liveness watches.
            let h = health.clone();
            rt.spawn(async move {
                loop {
                    h.beat(Loop::Inbox);
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            });
        }
        None => {
            follow::start(&cfg, view.clone(), stop.clone(), health.clone())
                .context("inbox view")?;
            let v = view.clone() as Arc<dyn InboxView>;
            actions = Some(
                churnwatch::actions::start(&cfg, stop.clone(), health.clone(), Some(v))
                    .context("actions")?,
            );
        }
    }
    let mut routes = inbox_routes(&cfg, served_view(view, actions.as_ref().map(|(s, _)| s)))?;
    if let Some((_, a)) = actions {
        routes = routes.merge(a);
    }
    let app = churnwatch::server::router(health.clone(), Some(routes));
    let tls = churnwatch::server::tls::load(&cfg.server.tls).map_err(anyhow::Error::msg)?;
    rt.block_on(churnwatch::server::serve_with(&cfg.server.listen, app, tls))
        .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
    tracing::info!("signal received; stopping");
    health.update(|h| h.inbox = Some(Phase::Stopping));
    stop.store(true, Ordering::Relaxed);
    Ok(())
}
