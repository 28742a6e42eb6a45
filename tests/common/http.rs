//! A recording HTTP server on loopback for notification tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;

#[derive(Debug, Clone)]
pub struct Req {
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    pub at: Instant,
}

#[derive(Default)]
pub struct Recorder {
    pub reqs: Mutex<Vec<Req>>,
    /// Requests being answered now, and the most at once, by path ("*": all paths).
    in_flight: Mutex<BTreeMap<String, usize>>,
    max_in_flight: Mutex<BTreeMap<String, usize>>,
}

impl Recorder {
    /// The most requests that were being answered at once on `path` ("*": any path).
    pub fn max_in_flight(&self, path: &str) -> usize {
        self.max_in_flight
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn enter(&self, path: &str) {
        let mut now = self.in_flight.lock().unwrap();
        let mut max = self.max_in_flight.lock().unwrap();
        for p in [path, "*"] {
            let n = now.entry(p.to_string()).or_default();
            *n += 1;
            let m = max.entry(p.to_string()).or_default();
            *m = (*m).max(*n);
        }
    }

    fn leave(&self, path: &str) {
        let mut now = self.in_flight.lock().unwrap();
        for p in [path, "*"] {
            *now.get_mut(p).unwrap() -= 1;
        }
    }
}

/// `/ok` answers 200; `/flaky` 503 twice then 200; `/limited` 429 with Retry-After: 1
/// once then 200; `/bad` always 400; `/slow...` (any path that starts so) 200 after
/// 100 ms.
async fn handle(
    State(rec): State<Arc<Recorder>>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    rec.enter(&path);
    let seen = {
        let mut reqs = rec.reqs.lock().unwrap();
        reqs.push(Req {
            path: path.clone(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body,
            at: Instant::now(),
        });
        reqs.iter().filter(|r| r.path == path).count()
    };
    let resp = match (path.as_str(), seen) {
        ("flaky", 1 | 2) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("Retry-After", "")],
            "try later",
        )
            .into_response(),
        ("limited", 1) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("Retry-After", "1")],
            "slow down",
        )
            .into_response(),
        ("bad", _) => (StatusCode::BAD_REQUEST, "invalid_payload").into_response(),
        (p, _) if p.starts_with("slow") => {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            (StatusCode::OK, "ok").into_response()
        }
        _ => (StatusCode::OK, "ok").into_response(),
    };
    rec.leave(&path);
    resp
}

/// Starts the recording server on a background runtime; returns its address.
pub fn http_server() -> (String, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let app = Router::new()
        .route("/{path}", post(handle))
        .with_state(rec.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
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
    (addr, rec)
}
