//! The soak's webhook receiver on loopback: records every request (idempotency key,
//! alerts, the status it answered) and answers 503 while a burst of failures is on.

use std::sync::{Arc, Mutex};
use std::time::Instant;

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

#[derive(Default)]
pub struct Receiver {
    pub hits: Mutex<Vec<Hit>>,
    /// 503 to every request until then.
    fail_until: Mutex<Option<Instant>>,
}

impl Receiver {
    /// Answers 503 to everything until `until`.
    pub fn fail_until(&self, until: Instant) {
        *self.fail_until.lock().unwrap() = Some(until);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

async fn handle(State(rec): State<Arc<Receiver>>, headers: HeaderMap, body: String) -> StatusCode {
    let failing = rec
        .fail_until
        .lock()
        .unwrap()
        .is_some_and(|t| Instant::now() < t);
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
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(l, app).await.unwrap();
            })
    });
    (url, rec)
}
