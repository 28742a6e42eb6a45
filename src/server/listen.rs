//! The HTTP listener: accepts connections within limits an exposed port needs. At most
//! `MAX_CONNECTIONS` at once (more wait in the kernel's backlog), request headers
//! within `HEADER_READ_TIMEOUT` (a slow-loris client is dropped), headers of at most
//! `MAX_HEADER_BYTES`, and no connection lives past `MAX_CONNECTION_LIFE`. Bodies are
//! limited per route by the routers themselves (`DefaultBodyLimit`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Time a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Longest life of one (keep-alive) connection.
pub const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(300);

/// Binds `listen` and serves `app` until the runtime stops; returns the bound address.
pub async fn serve(listen: &str, app: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "http server listening (/metrics, /healthz, /readyz)");
    tokio::spawn(accept_loop(listener, app, MAX_CONNECTIONS));
    Ok(addr)
}

async fn accept_loop(listener: tokio::net::TcpListener, app: Router, max_connections: usize) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, keep serving.
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES.max(8192))
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(MAX_CONNECTION_LIFE, conn).await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(max: usize) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", get(|| async { "ok" }));
        tokio::spawn(accept_loop(listener, app, max));
        addr
    }

    async fn get_ok(addr: SocketAddr) -> bool {
        let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
            return false;
        };
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out.starts_with("HTTP/1.1 200")
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_finishes_its_headers_is_dropped() {
        let addr = start(4).await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        // The server closes it once HEADER_READ_TIMEOUT has passed (paused time
        // advances as soon as everything waits).
        let n = tokio::time::timeout(HEADER_READ_TIMEOUT * 2, slow.read(&mut buf))
            .await
            .expect("closed before twice the timeout")
            .unwrap_or(0);
        let answer = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    }

    #[tokio::test]
    async fn connections_past_the_limit_wait_for_a_free_slot() {
        let addr = start(2).await;
        // Two idle connections take both slots.
        let a = tokio::net::TcpStream::connect(addr).await.unwrap();
        let b = tokio::net::TcpStream::connect(addr).await.unwrap();
        let third = tokio::spawn(get_ok(addr));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!third.is_finished(), "served past the limit");
        drop(a);
        assert!(tokio::time::timeout(Duration::from_secs(10), third)
            .await
            .expect("served once a slot is free")
            .unwrap());
        drop(b);
    }
}
