//! The HTTP listener: accept loop, one hyper HTTP/1 connection per task, keep-alive, header
//! timeouts, Go-style header casing, and graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::handlers::{self, LogInfo};
use crate::outpost::Outpost;
use crate::respond::Body;

/// How long in-flight requests may take to finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The outpost endpoints.
    Http,
    /// `/metrics`, `/ping` and readiness only.
    Metrics,
}

/// Serves `listener` until `shutdown` resolves, then drains open connections.
pub async fn serve(
    listener: TcpListener,
    kind: Listener,
    outpost: Arc<Outpost>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and similar: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true); // best effort; latency only
                let outpost = Arc::clone(&outpost);
                let svc = service_fn(move |req| answer(Arc::clone(&outpost), kind, req, peer));
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .title_case_headers(true)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("connections still open after the drain timeout; closing them");
        }
    }
}

async fn answer(
    outpost: Arc<Outpost>,
    kind: Listener,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    // Request bodies are never used; dropping it lets hyper discard it.
    let (parts, _body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let mut resp = match kind {
        Listener::Http => handlers::handle(&outpost, parts, peer).await,
        Listener::Metrics => crate::metrics::handle(&outpost, &parts),
    };
    let info = resp.extensions_mut().remove::<LogInfo>();
    let elapsed = started.elapsed();
    crate::metrics::observe(&path, resp.status(), elapsed);
    if let Some(info) = info {
        let log_all = outpost.runtime().settings.log_requests;
        if log_all {
            tracing::info!(
                method = %method, path = %path, status = resp.status().as_u16(), app = %info.app,
                outcome = info.outcome, user = %info.user, latency_us = elapsed.as_micros() as u64,
                peer = %peer.ip(), "request"
            );
        } else {
            tracing::debug!(
                method = %method, path = %path, status = resp.status().as_u16(), app = %info.app,
                outcome = info.outcome, user = %info.user, latency_us = elapsed.as_micros() as u64,
                peer = %peer.ip(), "request"
            );
        }
    }
    Ok(resp)
}
