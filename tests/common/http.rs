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

/// What Slack answers a message over Block Kit's limits: `invalid_blocks` (400), as
/// its incoming webhooks do (50 blocks; section and text objects 3,000 characters;
/// header 150; context 10 elements; actions 25 elements, each with a unique
/// `action_id` of at most 255 characters, a `value` of at most 2,000 and a text of at
/// most 75).
fn slack_refusal(body: &str) -> Option<&'static str> {
    let Ok(m) = serde_json::from_str::<serde_json::Value>(body) else {
        return Some("invalid_payload");
    };
    let chars = |v: &serde_json::Value| v.as_str().map_or(0, |t| t.chars().count());
    let blocks = m["blocks"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let bad = blocks.len() > 50
        || chars(&m["text"]) > 40_000
        || blocks.iter().any(|b| match b["type"].as_str() {
            Some("header") => chars(&b["text"]["text"]) > 150,
            Some("section") => chars(&b["text"]["text"]) > 3000,
            Some("context") => b["elements"]
                .as_array()
                .is_none_or(|e| e.len() > 10 || e.iter().any(|x| chars(&x["text"]) > 3000)),
            Some("actions") => b["elements"].as_array().is_none_or(|e| {
                let mut ids: Vec<&str> = e.iter().filter_map(|x| x["action_id"].as_str()).collect();
                ids.sort_unstable();
                ids.dedup();
                e.len() > 25
                    || ids.len() != e.len()
                    || chars(&b["block_id"]) > 255
                    || e.iter().any(|x| {
                        chars(&x["action_id"]) > 255
                            || chars(&x["value"]) > 2000
                            || chars(&x["text"]["text"]) > 75
                    })
            }),
            _ => false,
        });
    bad.then_some("invalid_blocks")
}

/// Paths starting with `slack` check the body like Slack does (400 `invalid_blocks`
/// over its limits); `/redirect` answers 302 to `/ok`; `/huge` a 1 GiB 400 streamed
/// (starting with a forged log line); `/stall` 200 after 30 s; `/ok` answers 200; `/flaky` 503 twice then 200; `/limited` 429 with Retry-After: 1
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
    let refusal = path
        .starts_with("slack")
        .then(|| slack_refusal(&rec.reqs.lock().unwrap().last().unwrap().body))
        .flatten();
    let resp = match (path.as_str(), seen) {
        _ if refusal.is_some() => {
            (StatusCode::BAD_REQUEST, refusal.unwrap_or_default()).into_response()
        }
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
        ("redirect", _) => (StatusCode::FOUND, [("Location", "/ok")], "moved").into_response(),
        // A 1 GiB error answer, generated as it is read, with a forged log line first.
        ("huge", _) => {
            let head = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(axum::body::Bytes::from_static(
                    b"line one\nERROR forged log line\n",
                ))
            });
            let chunk = axum::body::Bytes::from(vec![b'x'; 1 << 20]);
            let tail = futures_util::stream::iter(
                (0..1024).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            );
            let body = axum::body::Body::from_stream(futures_util::StreamExt::chain(head, tail));
            (StatusCode::BAD_REQUEST, body).into_response()
        }
        ("stall", _) => {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            (StatusCode::OK, "late").into_response()
        }
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
    (serve_loopback(app), rec)
}

/// Serves `app` on a loopback port from a background runtime; returns `host:port`.
pub fn serve_loopback(app: Router) -> String {
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
    addr
}

/// A plain HTTP/1.1 GET on loopback: (status, body).
pub fn get(addr: &str, path: &str) -> (u16, String) {
    get_with(addr, path, &[])
}

/// A plain HTTP/1.1 GET on loopback with extra request headers: (status, body).
pub fn get_with(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let extra = header_lines(headers);
    let buf = exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"),
    );
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status_of(&buf), body)
}

/// A request on loopback with `body` of `content_type` and extra `headers`: (status,
/// headers and body as received).
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, String) {
    let extra = header_lines(headers);
    let buf = exchange(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n{extra}\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    (status_of(&buf), buf)
}

/// The body of a response `request` returned, as JSON (`null` if it is not JSON).
pub fn json_body(response: &str) -> serde_json::Value {
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// `name: value` lines of request headers.
fn header_lines<V: std::fmt::Display>(headers: &[(&str, V)]) -> String {
    headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect()
}

/// The status code of a response.
fn status_of(response: &str) -> u16 {
    response.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Writes `request` to a new connection to `addr` and reads the whole response.
fn exchange(addr: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf
}
