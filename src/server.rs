//! HTTP endpoints for operators: `/metrics` (Prometheus text), `/healthz` (the main loop
//! is alive), `/readyz` (assigned partitions restored and consuming; a JSON body says
//! why not).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::metrics::METRICS;

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Running,
    Stopping,
}

/// What health and readiness are computed from; updated by the daemon.
#[derive(Debug)]
pub struct HealthState {
    pub phase: Phase,
    pub assigned: BTreeSet<i32>,
    pub restoring: BTreeSet<i32>,
    pub stalled: BTreeSet<i32>,
    /// Last turn of each stream thread's loop, by thread.
    pub heartbeats: BTreeMap<usize, Instant>,
    pub started: Instant,
    /// Why the process is not ready, when it knows (e.g. "brokers unreachable").
    pub problem: Option<String>,
}

impl HealthState {
    /// Time since the stream thread that turned least recently last did (since the
    /// start while none has).
    fn since_last_beat(&self) -> Duration {
        self.heartbeats
            .values()
            .min()
            .unwrap_or(&self.started)
            .elapsed()
    }
}

/// Shared health, cheap to update.
#[derive(Debug)]
pub struct Health {
    state: Mutex<HealthState>,
    /// The main loop counts as stuck after this long without a heartbeat.
    stuck_after: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: Mutex::new(HealthState {
                phase: Phase::Starting,
                assigned: BTreeSet::new(),
                restoring: BTreeSet::new(),
                stalled: BTreeSet::new(),
                heartbeats: BTreeMap::new(),
                started: Instant::now(),
                problem: None,
            }),
            stuck_after: Duration::from_secs(60),
        }
    }
}

impl Health {
    /// Changes the state.
    pub fn update(&self, f: impl FnOnce(&mut HealthState)) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
    }

    /// Records a turn of stream thread `thread`'s loop.
    pub fn beat_thread(&self, thread: usize) {
        self.update(|s| {
            s.heartbeats.insert(thread, Instant::now());
        });
    }

    /// `(alive, detail)`.
    pub fn liveness(&self) -> (bool, serde_json::Value) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let since = s.since_last_beat();
        let alive = since < self.stuck_after;
        (
            alive,
            json!({"alive": alive, "last_loop_seconds_ago": since.as_secs_f64()}),
        )
    }

    /// `(ready, detail)`.
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut reasons: Vec<String> = Vec::new();
        match s.phase {
            Phase::Starting => reasons.push("starting: joining the consumer group".into()),
            Phase::Stopping => reasons.push("stopping".into()),
            Phase::Running => {}
        }
        if !s.restoring.is_empty() {
            reasons.push(format!("restoring state of partitions {:?}", s.restoring));
        }
        if let Some(p) = &s.problem {
            reasons.push(p.clone());
        }
        if s.since_last_beat() >= self.stuck_after {
            reasons.push("main loop is not turning".into());
        }
        let ready = reasons.is_empty();
        let mut notes: Vec<String> = Vec::new();
        if !s.stalled.is_empty() {
            notes.push(format!(
                "input stalled on partitions {:?}: no events for longer than max_idle_advance; absence alerts paused",
                s.stalled
            ));
        }
        if s.phase == Phase::Running && s.assigned.is_empty() {
            notes.push("no partitions assigned (more instances than partitions?)".into());
        }
        (
            ready,
            json!({
                "ready": ready,
                "reasons": reasons,
                "notes": notes,
                "assigned_partitions": s.assigned,
                "restoring_partitions": s.restoring,
                "stalled_partitions": s.stalled,
            }),
        )
    }
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        METRICS.render(),
    )
        .into_response()
}

async fn healthz(State(h): State<Arc<Health>>) -> Response {
    let (ok, body) = h.liveness();
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn readyz(State(h): State<Arc<Health>>) -> Response {
    let (ok, body) = h.readiness();
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// The router, for tests and for `serve`.
pub fn router(health: Arc<Health>, extra: Option<Router>) -> Router {
    let base = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health);
    match extra {
        Some(e) => base.merge(e),
        None => base,
    }
}

/// Binds `listen` and serves until the runtime stops; returns the bound address.
pub async fn serve(listen: &str, app: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "http server listening (/metrics, /healthz, /readyz)");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_explains_itself() {
        let h = Health::default();
        let (ready, body) = h.readiness();
        assert!(!ready);
        assert!(body["reasons"][0].as_str().unwrap().contains("starting"));
        h.update(|s| {
            s.phase = Phase::Running;
            s.assigned.insert(0);
            s.restoring.insert(0);
        });
        let (ready, body) = h.readiness();
        assert!(!ready);
        assert!(body["reasons"][0].as_str().unwrap().contains("restoring"));
        h.update(|s| {
            s.restoring.clear();
            s.stalled.insert(0);
        });
        let (ready, body) = h.readiness();
        assert!(ready, "{body}");
        assert!(body["notes"][0].as_str().unwrap().contains("stalled"));
        assert_eq!(body["stalled_partitions"], json!([0]));
        assert!(h.liveness().0);
    }
}
