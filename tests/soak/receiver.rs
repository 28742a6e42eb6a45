//! The soak's webhook receiver on loopback: records every request (idempotency key,
//! alerts, the status it answered) and answers 503 while a burst of failures is on.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

/// One request and what it was answered.
#[derive(Debug, Clone)]
pub struct Hit {
    pub key: String,
    pub alerts: Vec<(String, String)>,
    pub ok: bool,
}

/// A burst of failures: 503 to every request until `until` and to the first
/// `at_least` requests, but never after `cap`.
struct Burst {
    until: Instant,
    at_least: usize,
    refused: usize,
    cap: Instant,
}

#[derive(Default)]
pub struct Receiver {
    pub hits: Mutex<Vec<Hit>>,
    burst: Mutex<Option<Burst>>,
}

impl Receiver {
    /// Answers 503 to everything for `length`, and to `at_least` requests at least
    /// (within 60 s), so that a burst meets deliveries even when they are sparse.
    pub fn burst(&self, length: Duration, at_least: usize) {
        let now = Instant::now();
        *self.burst.lock().unwrap() = Some(Burst {
            until: now + length,
            at_least,
            refused: 0,
            cap: now + Duration::from_secs(60),
        });
    }

    /// A burst is on.
    pub fn failing(&self) -> bool {
        let now = Instant::now();
        self.burst
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|b| now < b.cap && (now < b.until || b.refused < b.at_least))
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

async fn handle(State(rec): State<Arc<Receiver>>, headers: HeaderMap, body: String) -> StatusCode {
    let failing = {
        let mut burst = rec.burst.lock().unwrap();
        let now = Instant::now();
        match burst.as_mut() {
            Some(b) if now < b.cap && (now < b.until || b.refused < b.at_least) => {
                b.refused += 1;
                true
            }
            _ => false,
        }
    };
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    rec.hits.lock().unwrap().push(Hit {
        key,
        alerts: crate::common::webhook_ids(&body),
        ok: !failing,
    });
    if failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

/// Starts the receiver on a background runtime: its URL and its record.
pub fn start() -> (String, Arc<Receiver>) {
    let rec = Arc::new(Receiver::default());
    let app = Router::new()
        .route("/hook", post(handle))
        .with_state(rec.clone());
    let url = format!("http://{}/hook", crate::common::http::serve_loopback(app));
    (url, rec)
}
