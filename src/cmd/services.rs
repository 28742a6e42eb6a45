//! `run` and `notify` on Kafka: the detector's stream threads, the notifier, the
//! silences and actions APIs, the inbox, and the HTTP server in one process, with
//! signal handling.

use std::path::PathBuf;

use anyhow::{Context, Result};
use churnwatch::config::Config;

use super::{init_logging, load_config};

pub fn cmd_run(config: Option<PathBuf>) -> Result<()> {
    let cfg = load_config(config.as_deref())?;
    init_logging(&cfg);
    let notify = cfg.notify.enabled;
    run_services(cfg, true, notify)
}

/// Runs the detector and/or the notifier until SIGTERM/SIGINT, with the HTTP endpoints.
pub fn run_services(cfg: Config, detector: bool, notifier: bool) -> Result<()> {
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
    let inbox_view = if cfg.inbox.enabled {
        Some(super::serve::start_inbox(
            &cfg,
            shutdown.clone(),
            health.clone(),
        )?)
    } else {
        None
    };
    // Actions on alerts: wherever silences or the inbox are served.
    let actions = if notifier || inbox_view.is_some() {
        let view = inbox_view
            .clone()
            .map(|v| v as Arc<dyn churnwatch::inbox::model::InboxView>);
        Some(
            churnwatch::actions::start(&cfg, shutdown.clone(), health.clone(), view)
                .context("actions")?,
        )
    } else {
        None
    };
    let inbox = match inbox_view {
        Some(v) => {
            let served = super::serve::served_view(v, actions.as_ref().map(|(s, _)| s));
            Some(super::serve::inbox_routes(&cfg, served)?)
        }
        None => None,
    };
    if !cfg.server.listen.is_empty() {
        let extra = match (silences.as_ref().map(|(_, r)| r.clone()), inbox) {
            (Some(s), Some(i)) => Some(s.merge(i)),
            (s, i) => s.or(i),
        };
        let extra = match (extra, actions.as_ref().map(|(_, r)| r.clone())) {
            (Some(e), Some(a)) => Some(e.merge(a)),
            (e, a) => e.or(a),
        };
        let app = churnwatch::server::router(health.clone(), extra);
        let tls = churnwatch::server::tls::load(&cfg.server.tls).map_err(anyhow::Error::msg)?;
        rt.block_on(churnwatch::server::serve_with(&cfg.server.listen, app, tls))
            .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
    }
    // The notifier honours the actions this process follows.
    let honoured = actions
        .as_ref()
        .map(|(s, _)| s.clone() as Arc<dyn churnwatch::notify::honour::ActionLookup>);
    let notifier_thread = silences.map(|(store, _)| {
        let (cfg, shutdown, health) = (cfg.clone(), shutdown.clone(), health.clone());
        std::thread::spawn(move || {
            let r = churnwatch::notify::kafka::run_honouring(
                cfg,
                shutdown.clone(),
                store,
                honoured,
                Arc::new(churnwatch::time::wall_clock_ms),
                health,
                Arc::default(),
            );
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
