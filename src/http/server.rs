//! The HTTP listener: accept loop, one hyper HTTP/1 connection per task, keep-alive, header
//! timeouts, Go-style header casing, and graceful drain on shutdown. It knows no endpoint:
//! every request goes to `handlers::handle`.

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
use tracing::Instrument;

use crate::http::handlers::{self, LogInfo};
use crate::http::limits::{Limits, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_PEER, Slot};
use crate::http::respond::Body;
use crate::state::outpost::Outpost;

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

/// The most a request's head (request line and headers) may take; more is refused with 431.
/// Sessions split into several cookies stay far below it.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Time a TLS client has to finish its handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` (over TLS when `tls` is given) until `shutdown` resolves, then drains
/// open connections.
pub async fn serve(
    listener: TcpListener,
    kind: Listener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    outpost: Arc<Outpost>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let limits = Limits::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_PEER);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A free place first: at the cap, new connections wait in the kernel's backlog.
        let place = tokio::select! {
            place = limits.place() => place,
            _ = &mut shutdown => break,
        };
        let Some(place) = place else { break };
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
                let trusted = outpost.runtime().settings.is_trusted(peer.ip());
                let Some(slot) = limits.admit(place, peer.ip(), trusted) else {
                    tracing::debug!(peer = %peer.ip(), "too many connections from one address");
                    continue; // dropping the stream closes it
                };
                let _ = stream.set_nodelay(true); // best effort; latency only
                let outpost = Arc::clone(&outpost);
                match &tls {
                    None => spawn_conn(TokioIo::new(stream), kind, outpost, peer, &graceful, slot),
                    Some(acceptor) => {
                        // The handshake runs in its own task so a slow client cannot stall
                        // the accept loop; drained connections are tracked once it completes.
                        let acceptor = acceptor.clone();
                        let watcher = graceful.watcher();
                        tokio::spawn(async move {
                            let _slot = slot;
                            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls_stream)) => {
                                    let conn = http1_builder()
                                        .serve_connection(TokioIo::new(tls_stream), service(kind, outpost, peer));
                                    if let Err(e) = watcher.watch(conn).await {
                                        tracing::debug!(error = %e, "TLS connection ended with an error");
                                    }
                                }
                                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!("TLS handshake timed out"),
                            }
                        });
                    }
                }
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

fn http1_builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    b
}

fn service(
    kind: Listener,
    outpost: Arc<Outpost>,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Send
+ 'static {
    service_fn(move |req| answer(Arc::clone(&outpost), kind, req, peer))
}

fn spawn_conn(
    io: TokioIo<tokio::net::TcpStream>,
    kind: Listener,
    outpost: Arc<Outpost>,
    peer: SocketAddr,
    graceful: &GracefulShutdown,
    slot: Slot,
) {
    let conn = http1_builder().serve_connection(io, service(kind, outpost, peer));
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        let _slot = slot;
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
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
    // Cloning the URI shares its buffer; no copy of the path on the hot path.
    let uri = parts.uri.clone();
    // A span per request (method, path without the query, peer), so events logged while
    // answering carry them. Debug level: at the default level it is never created and costs a
    // level check.
    let span = tracing::debug_span!("request", %method, path = uri.path(), peer = %peer.ip());
    let mut answered_by = None;
    let mut resp = match kind {
        Listener::Http => {
            handlers::handle(&outpost, parts, peer, &mut answered_by)
                .instrument(span)
                .await
        }
        Listener::Metrics => crate::http::metrics::handle(&outpost, &parts),
    };
    let info = resp.extensions_mut().remove::<LogInfo>();
    let elapsed = started.elapsed();
    // The metrics listener's own requests (scrapes, readiness) are not counted, its pings are.
    if kind == Listener::Http || uri.path().starts_with(crate::core::paths::PING_PATH) {
        crate::state::metrics::observe(uri.path(), &method, answered_by, resp.status(), elapsed);
    }
    if let Some(info) = info {
        let log_all = outpost.runtime().settings.log_requests;
        if log_all {
            tracing::info!(
                method = %method, path = %uri.path(), status = resp.status().as_u16(), app = %info.app,
                outcome = info.outcome, user = %info.user, latency_us = elapsed.as_micros() as u64,
                peer = %peer.ip(), "request"
            );
        } else {
            tracing::debug!(
                method = %method, path = %uri.path(), status = resp.status().as_u16(), app = %info.app,
                outcome = info.outcome, user = %info.user, latency_us = elapsed.as_micros() as u64,
                peer = %peer.ip(), "request"
            );
        }
    }
    Ok(resp)
}
