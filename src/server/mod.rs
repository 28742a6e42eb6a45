//! HTTP endpoints for operators: `/metrics` (Prometheus text), `/healthz` (every loop
//! the process runs is turning), `/readyz` (each component the process runs is ready; a
//! JSON body says why not). `Health` is what they answer from: the detector, the
//! notifier and the topic followers each report their own state and loop turns into it,
//! so a process is judged only by the parts it actually runs.

pub mod auth;
mod listen;
pub mod tls;
pub use listen::{serve, serve_with};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::metrics::METRICS;

/// Where a component is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Running,
    Stopping,
}

/// A loop the process runs; liveness watches each one's turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Loop {
    /// A detector stream thread (`kafka.stream_threads`), by index.
    Stream(usize),
    /// The notifier's consume, batch and deliver loop.
    Notifier,
    /// The follower of the silences topic (what the silences API reads).
    Silences,
    /// The reader and follower of the account metadata topic (`notify.accounts_topic`).
    Accounts,
    /// The inbox view's follower of the changelog and alerts topics.
    Inbox,
    /// The follower of the actions topic (what the actions API and the notifier read).
    Actions,
}

impl fmt::Display for Loop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loop::Stream(t) => write!(f, "detector stream thread {t}"),
            Loop::Notifier => f.write_str("notifier"),
            Loop::Silences => f.write_str("silences follower"),
            Loop::Accounts => f.write_str("accounts follower"),
            Loop::Inbox => f.write_str("inbox view follower"),
            Loop::Actions => f.write_str("actions follower"),
        }
    }
}

/// The detector's part of the health (`run`).
#[derive(Debug)]
pub struct DetectorHealth {
    pub phase: Phase,
    pub assigned: BTreeSet<i32>,
    pub restoring: BTreeSet<i32>,
    pub stalled: BTreeSet<i32>,
    /// Assigned partitions whose input was read up to its end (reported once each).
    pub caught_up: BTreeSet<i32>,
    /// Why the detector is not ready, when it knows (e.g. "all brokers are down").
    pub problem: Option<String>,
}

impl Default for DetectorHealth {
    fn default() -> Self {
        DetectorHealth {
            phase: Phase::Starting,
            assigned: BTreeSet::new(),
            restoring: BTreeSet::new(),
            stalled: BTreeSet::new(),
            caught_up: BTreeSet::new(),
            problem: None,
        }
    }
}

/// The notifier's part of the health (`notify`, or `run` with `notify.enabled`).
#[derive(Debug)]
pub struct NotifierHealth {
    /// Starting until the notification log is read back and the alerts topic
    /// subscribed.
    pub phase: Phase,
    pub problem: Option<String>,
}

impl Default for NotifierHealth {
    fn default() -> Self {
        NotifierHealth {
            phase: Phase::Starting,
            problem: None,
        }
    }
}

/// What health and readiness are computed from.
#[derive(Debug)]
pub struct HealthState {
    /// Present when the process runs the detector.
    pub detector: Option<DetectorHealth>,
    /// Present when the process runs the notifier.
    pub notifier: Option<NotifierHealth>,
    /// Present when the process serves the inbox view: starting until caught up.
    pub inbox: Option<Phase>,
    /// Last turn of each loop the process runs (set when the loop starts).
    beats: BTreeMap<Loop, Instant>,
    started: Instant,
}

/// Shared health, cheap to update.
#[derive(Debug)]
pub struct Health {
    state: Mutex<HealthState>,
    /// A loop counts as stuck after this long without a turn (`server.liveness_timeout`).
    stuck_after: Duration,
}

impl Default for Health {
    /// No component yet, 60 s liveness window.
    fn default() -> Self {
        Health::new(Duration::from_secs(60))
    }
}

impl Health {
    /// A health with no component yet; loops count as stuck after `stuck_after`.
    pub fn new(stuck_after: Duration) -> Health {
        Health {
            state: Mutex::new(HealthState {
                detector: None,
                notifier: None,
                inbox: None,
                beats: BTreeMap::new(),
                started: Instant::now(),
            }),
            stuck_after,
        }
    }

    /// Changes the state.
    pub fn update(&self, f: impl FnOnce(&mut HealthState)) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
    }

    /// Changes the detector's state (which makes the process one that runs a detector).
    pub fn detector(&self, f: impl FnOnce(&mut DetectorHealth)) {
        self.update(|s| f(s.detector.get_or_insert_with(DetectorHealth::default)));
    }

    /// Changes the notifier's state (which makes the process one that runs a notifier).
    pub fn notifier(&self, f: impl FnOnce(&mut NotifierHealth)) {
        self.update(|s| f(s.notifier.get_or_insert_with(NotifierHealth::default)));
    }

    /// Records a turn of `l` (the first one registers it: from then on, liveness needs
    /// it to keep turning).
    pub fn beat(&self, l: Loop) {
        self.update(|s| {
            s.beats.insert(l, Instant::now());
        });
    }

    /// Records a turn of stream thread `thread`'s loop.
    pub fn beat_thread(&self, thread: usize) {
        self.beat(Loop::Stream(thread));
    }

    /// Loops that have not turned for `stuck_after`, with how long ago they last did;
    /// with none registered yet, the process itself counts from its start.
    fn stuck(&self, s: &HealthState) -> Vec<(String, Duration)> {
        if s.beats.is_empty() {
            let since = s.started.elapsed();
            return if since >= self.stuck_after {
                vec![("process (no loop started)".to_string(), since)]
            } else {
                Vec::new()
            };
        }
        s.beats
            .iter()
            .map(|(l, at)| (l.to_string(), at.elapsed()))
            .filter(|(_, since)| *since >= self.stuck_after)
            .collect()
    }

    /// `(alive, detail)`.
    pub fn liveness(&self) -> (bool, serde_json::Value) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let stuck = self.stuck(&s);
        let loops: BTreeMap<String, f64> = s
            .beats
            .iter()
            .map(|(l, at)| (l.to_string(), round_ms(at.elapsed())))
            .collect();
        let oldest = s.beats.values().min().unwrap_or(&s.started).elapsed();
        let alive = stuck.is_empty();
        (
            alive,
            json!({
                "alive": alive,
                "last_loop_seconds_ago": round_ms(oldest),
                "loops_seconds_ago": loops,
                "stuck": stuck.iter().map(|(l, _)| l).collect::<Vec<_>>(),
                "liveness_timeout_seconds": self.stuck_after.as_secs_f64(),
            }),
        )
    }

    /// `(ready, detail)`.
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut reasons: Vec<String> = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        if s.detector.is_none() && s.notifier.is_none() && s.inbox.is_none() {
            reasons.push("starting".into());
        }
        if let Some(d) = &s.detector {
            match d.phase {
                Phase::Starting => {
                    reasons.push("detector starting: joining the consumer group".into())
                }
                Phase::Stopping => reasons.push("detector stopping".into()),
                Phase::Running => {}
            }
            if !d.restoring.is_empty() {
                reasons.push(format!("restoring state of partitions {:?}", d.restoring));
            }
            if let Some(p) = &d.problem {
                reasons.push(p.clone());
            }
            if !d.stalled.is_empty() {
                notes.push(format!(
                    "input stalled on partitions {:?}: their newest event time is older than \
                     max_idle_advance, so absence alerts are paused until newer events arrive",
                    d.stalled
                ));
            }
            if d.phase == Phase::Running && d.assigned.is_empty() {
                notes.push("no partitions assigned (more instances than partitions?)".into());
            }
        }
        if let Some(n) = &s.notifier {
            match n.phase {
                Phase::Starting => {
                    reasons.push("notifier starting: reading the notification log back".into())
                }
                Phase::Stopping => reasons.push("notifier stopping".into()),
                Phase::Running => {}
            }
            if let Some(p) = &n.problem {
                reasons.push(format!("notifier: {p}"));
            }
        }
        match s.inbox {
            Some(Phase::Starting) => reasons
                .push("inbox view catching up: reading the changelog and alerts topics".into()),
            Some(Phase::Stopping) => reasons.push("inbox view stopping".into()),
            _ => {}
        }
        for (l, since) in self.stuck(&s) {
            reasons.push(format!(
                "{l} is not turning (last turn {:.0} s ago)",
                since.as_secs_f64()
            ));
        }
        let ready = reasons.is_empty();
        let mut body = json!({
            "ready": ready,
            "reasons": reasons,
            "notes": notes,
            "components": {
                "detector": s.detector.is_some(),
                "notifier": s.notifier.is_some(),
            },
        });
        if s.inbox.is_some() {
            body["components"]["inbox"] = json!(true);
        }
        if let Some(d) = &s.detector {
            body["assigned_partitions"] = json!(d.assigned);
            body["restoring_partitions"] = json!(d.restoring);
            body["stalled_partitions"] = json!(d.stalled);
            body["caught_up_partitions"] = json!(d.caught_up);
        }
        (ready, body)
    }
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_explains_itself() {
        let h = Health::default();
        let (ready, body) = h.readiness();
        assert!(!ready);
        assert!(body["reasons"][0].as_str().unwrap().contains("starting"));
        h.detector(|d| {
            d.phase = Phase::Running;
            d.assigned.insert(0);
            d.restoring.insert(0);
        });
        let (ready, body) = h.readiness();
        assert!(!ready);
        assert!(body["reasons"][0].as_str().unwrap().contains("restoring"));
        h.detector(|d| {
            d.restoring.clear();
            d.stalled.insert(0);
        });
        let (ready, body) = h.readiness();
        assert!(ready, "{body}");
        let note = body["notes"][0].as_str().unwrap();
        assert!(note.contains("stalled") && note.contains("newest event time"));
        assert_eq!(body["stalled_partitions"], json!([0]));
        assert!(h.liveness().0);
    }

    #[test]
    fn a_notifier_alone_shows_no_detector_notes() {
        let h = Health::default();
        h.notifier(|_| {});
        let (ready, body) = h.readiness();
        assert!(!ready);
        assert!(body["reasons"][0].as_str().unwrap().contains("notifier"));
        h.notifier(|n| n.phase = Phase::Running);
        let (ready, body) = h.readiness();
        assert!(ready, "{body}");
        assert_eq!(body["notes"], json!([]));
        assert!(body.get("assigned_partitions").is_none(), "{body}");
        assert_eq!(
            body["components"],
            json!({"detector": false, "notifier": true})
        );
    }

    #[test]
    fn every_registered_loop_must_keep_turning() {
        let h = Health::new(Duration::from_millis(200));
        h.notifier(|n| n.phase = Phase::Running);
        h.beat(Loop::Notifier);
        h.beat(Loop::Silences);
        assert!(h.liveness().0);
        // The notifier keeps turning; the follower stops.
        let deadline = Instant::now() + Duration::from_secs(5);
        let body = loop {
            h.beat(Loop::Notifier);
            let (alive, body) = h.liveness();
            if !alive {
                break body;
            }
            assert!(Instant::now() < deadline, "never reported dead: {body}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(body["stuck"], json!(["silences follower"]));
        let (ready, rbody) = h.readiness();
        assert!(!ready);
        assert!(
            rbody["reasons"][0]
                .as_str()
                .unwrap()
                .contains("silences follower is not turning"),
            "{rbody}"
        );
        h.beat(Loop::Silences);
        assert!(h.liveness().0);
        assert!(h.readiness().0);
    }

    #[test]
    fn before_any_loop_the_process_counts_from_its_start() {
        let h = Health::new(Duration::from_millis(50));
        assert!(h.liveness().0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.liveness().0 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        h.beat(Loop::Stream(0));
        assert!(h.liveness().0);
    }
}
