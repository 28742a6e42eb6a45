//! The HTTP listener: accepts connections within limits an exposed port needs. At most
//! `MAX_CONNECTIONS` at once (more wait in the kernel's backlog), request headers
//! within `HEADER_READ_TIMEOUT` (a slow-loris client is dropped), headers of at most
//! `MAX_HEADER_BYTES`, and no connection lives past `MAX_CONNECTION_LIFE`. Bodies are
//! limited per route by the routers themselves (`DefaultBodyLimit`).
//!
//! Each request carries its connection's peer address as `ConnectInfo<SocketAddr>` in
//! its extensions (what authentication trusts a proxy by). With TLS
//! (`server::tls`), the handshake happens in the connection's own task, within
//! `HEADER_READ_TIMEOUT`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Time a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Longest life of one (keep-alive) connection.
pub const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(300);

/// Binds `listen` and serves `app` over plain HTTP until the runtime stops; returns the
/// bound address.
pub async fn serve(listen: &str, app: Router) -> std::io::Result<SocketAddr> {
    serve_with(listen, app, None).await
}

/// As [`serve`], over HTTPS when `tls` is given (see `server::tls::load`).
pub async fn serve_with(
    listen: &str,
    app: Router,
    tls: Option<TlsAcceptor>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, "http server listening (/metrics, /healthz, /readyz)");
    tokio::spawn(accept_loop(listener, app, MAX_CONNECTIONS, tls));
    Ok(addr)
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    max_connections: usize,
    tls: Option<TlsAcceptor>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, keep serving.
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, peer, app, false).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => serve_connection(s, peer, app, true).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(slot);
        });
    }
}

/// Serves one connection, each request tagged with the peer address; over TLS every
/// answer also tells the browser to come back only over HTTPS (HSTS).
async fn serve_connection<S>(stream: S, peer: SocketAddr, app: Router, tls: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let inner = TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let answer = inner.call(req);
        async move {
            let mut resp = answer.await?;
            if tls {
                resp.headers_mut().insert(
                    axum::http::header::STRICT_TRANSPORT_SECURITY,
                    axum::http::HeaderValue::from_static("max-age=31536000"),
                );
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES.max(8192))
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(MAX_CONNECTION_LIFE, conn).await;
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
        tokio::spawn(accept_loop(listener, app, max, None));
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
