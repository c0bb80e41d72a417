//! The HTTP listener: accept loop, one hyper connection per task (HTTP/1.1 with keep-alive
//! and upgrades; HTTP/2 when a TLS client negotiates it), header timeouts and size caps, and a
//! graceful drain on shutdown. It knows no endpoint: every request, with its body unread,
//! goes to `handlers::handle`.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::http::handlers::{self, Conn, Handled, LogInfo};
use crate::http::limits::{Limits, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_PEER};
use crate::http::respond::Body;
use crate::state::metrics::HostMetrics;
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

/// Concurrent requests on one HTTP/2 connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;

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
    let (drain, _) = watch::channel(false);
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
                    None => {
                        let info = Conn { peer, tls: false };
                        let conn = http1_builder(HEADER_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service(kind, outpost, info))
                            .with_upgrades();
                        let stop = drain.subscribe();
                        tokio::spawn(async move {
                            let _slot = slot;
                            if let Err(e) = until_drained(conn, stop).await {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                        });
                    }
                    Some(acceptor) => {
                        // The handshake runs in its own task so a slow client cannot stall
                        // the accept loop; a drain waits for it.
                        let (acceptor, stop) = (acceptor.clone(), drain.subscribe());
                        tokio::spawn(async move {
                            let _slot = slot;
                            serve_tls(acceptor, stream, kind, outpost, peer, stop).await;
                        });
                    }
                }
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    // Every connection finishes its request in flight and closes; the drain ends when the
    // last one has (each holds a receiver).
    let _ = drain.send(true);
    tokio::select! {
        _ = drain.closed() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("connections still open after the drain timeout; closing them");
        }
    }
}

/// One TLS connection: the handshake (bounded in time), then HTTP/2 if the client chose it
/// by ALPN, else HTTP/1.1 with upgrades.
async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    kind: Listener,
    outpost: Arc<Outpost>,
    peer: std::net::SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let tls_stream =
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => return tracing::debug!("TLS handshake timed out"),
        };
    let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls_stream);
    let service = service(kind, outpost, Conn { peer, tls: true });
    let served = if h2 {
        until_drained(h2_builder().serve_connection(io, service), stop).await
    } else {
        let conn = http1_builder(HEADER_TIMEOUT)
            .serve_connection(io, service)
            .with_upgrades();
        until_drained(conn, stop).await
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "TLS connection ended with an error");
    }
}

/// HTTP/1.1 with keep-alive: `header_timeout` for each request's head (slow clients), heads
/// capped at [`MAX_HEADER_BYTES`].
fn http1_builder(header_timeout: Duration) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    b
}

fn service(
    kind: Listener,
    outpost: Arc<Outpost>,
    conn: Conn,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Send
+ 'static {
    service_fn(move |req| answer(Arc::clone(&outpost), kind, req, conn))
}

/// HTTP/2, on TLS connections that negotiated it: the same header-size cap as HTTP/1.1, a
/// bounded number of concurrent streams per connection.
fn h2_builder() -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    b
}

/// A served connection that can be asked to finish its requests in flight and close.
trait Drain: Future {
    fn drain(self: std::pin::Pin<&mut Self>);
}

impl<I, S> Drain for http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn drain(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> Drain for http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn drain(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Serves a connection until it ends or a drain begins; then lets its requests in flight
/// finish and closes it. A connection that switched protocols (proxy mode's WebSockets) has
/// already ended here: its bridge runs on its own.
async fn until_drained<C, T>(conn: C, mut stop: watch::Receiver<bool>) -> T
where
    C: Drain<Output = T>,
{
    let mut conn = std::pin::pin!(conn);
    let draining = async move {
        // The guard `wait_for` returns is not kept across the next await.
        let _ = stop.wait_for(|draining| *draining).await.is_ok();
    };
    tokio::select! {
        r = conn.as_mut() => return r,
        _ = draining => {}
    }
    conn.as_mut().drain();
    conn.await
}

/// One request: its endpoint's answer, then the metrics and the log line. What the handler
/// answers at once (a repeated check, ping) is a ready future; otherwise the handler's
/// (boxed) future and what the last step needs. Either way hyper stores and moves a small
/// one (not an `async fn`, which would also hold the request it was given).
fn answer(
    outpost: Arc<Outpost>,
    kind: Listener,
    req: Request<Incoming>,
    conn: Conn,
) -> Either<Ready<Answered>, impl Future<Output = Answered> + Send> {
    let started = Instant::now();
    // Only proxy mode reads a request body (streamed upstream); elsewhere dropping it lets
    // hyper discard it.
    let (parts, body) = req.into_parts();
    if kind == Listener::Metrics {
        let resp = crate::http::metrics::handle(&outpost, &parts);
        let done = Done {
            started,
            method: parts.method,
            uri: parts.uri,
            peer: conn.peer,
        };
        return Either::Left(ready(Ok(done.finish(&outpost, kind, None, resp))));
    }
    // Cloning the URI shares its buffer; no copy of the path on the hot path.
    let done = Done {
        started,
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        peer: conn.peer,
    };
    // A span per request (method, path without the query, peer), so events logged while
    // answering carry them. Debug level: at the default level it is never created and costs a
    // level check.
    let span = tracing::debug_span!("request", method = %done.method, path = done.uri.path(), peer = %done.peer.ip());
    let handled =
        span.in_scope(|| handlers::handle(Arc::clone(&outpost), parts, Body::Stream(body), conn));
    match handled {
        Handled::Now(resp, by) => Either::Left(ready(Ok(done.finish(&outpost, kind, by, resp)))),
        Handled::Later(rest) => Either::Right(
            rest.instrument(span)
                .map(move |(resp, by)| Ok(done.finish(&outpost, kind, by, resp))),
        ),
    }
}

/// A request's answer as hyper takes it.
type Answered = Result<Response<Body>, Infallible>;

/// What is left to do once a request is answered.
struct Done {
    started: Instant,
    method: Method,
    uri: Uri,
    peer: SocketAddr,
}

impl Done {
    /// Counts the request and logs it (a debug event, or an info one with `log_requests`).
    fn finish(
        self,
        outpost: &Outpost,
        kind: Listener,
        answered_by: Option<&'static HostMetrics>,
        mut resp: Response<Body>,
    ) -> Response<Body> {
        let Done {
            started,
            method,
            uri,
            peer,
        } = self;
        let info = resp.extensions_mut().remove::<LogInfo>();
        let elapsed = started.elapsed();
        // The metrics listener's own requests (scrapes, readiness) are not counted, its pings
        // are.
        if kind == Listener::Http || uri.path().starts_with(crate::core::paths::PING_PATH) {
            crate::state::metrics::observe(
                uri.path(),
                &method,
                answered_by,
                resp.status(),
                elapsed,
            );
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
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Long enough that a test thread starved for a moment on a busy machine is not a slow
    /// client.
    const LIMIT: Duration = Duration::from_secs(2);

    /// One connection served as `serve` serves it, with a [`LIMIT`] head timeout; `/slow`
    /// answers after 1.5 × `LIMIT`, anything else at once.
    async fn one_connection() -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let svc = service_fn(|req: Request<Incoming>| async move {
                if req.uri().path() == "/slow" {
                    tokio::time::sleep(LIMIT * 3 / 2).await;
                }
                Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::from_static(b"ok"))))
            });
            let _ = http1_builder(LIMIT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
        TcpStream::connect(addr).await.expect("connect")
    }

    /// Everything the server sends until its answer's body `ok`, or until it closes.
    async fn read_answer(c: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let read = async {
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                if got.ends_with(b"\r\n\r\nok") {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("the server neither answered nor closed");
        String::from_utf8_lossy(&got).into_owned()
    }

    async fn ask(c: &mut TcpStream, path: &str) -> String {
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        c.write_all(req.as_bytes()).await.expect("write");
        read_answer(c).await
    }

    #[tokio::test]
    async fn every_head_on_a_connection_gets_the_full_time_and_no_more() {
        let mut c = one_connection().await;
        // Idle gaps that add up to more than the limit: each head's time starts anew.
        for _ in 0..5 {
            tokio::time::sleep(LIMIT / 4).await;
            assert!(ask(&mut c, "/").await.starts_with("HTTP/1.1 200"));
        }
        // An answer slower than the limit is not a slow client, nor is the next head after it.
        assert!(ask(&mut c, "/slow").await.starts_with("HTTP/1.1 200"));
        assert!(ask(&mut c, "/").await.starts_with("HTTP/1.1 200"));
        // A head that never ends: cut off (408) once the limit has passed.
        let started = Instant::now();
        c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
            .await
            .expect("write");
        let got = read_answer(&mut c).await;
        assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(started.elapsed() >= LIMIT, "{:?}", started.elapsed());
        assert_eq!(c.read(&mut [0u8; 16]).await.ok(), Some(0), "closed");
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_limit() {
        let mut c = one_connection().await;
        assert!(ask(&mut c, "/").await.starts_with("HTTP/1.1 200"));
        let started = Instant::now();
        let got = read_answer(&mut c).await;
        assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(
            started.elapsed() >= LIMIT * 9 / 10,
            "{:?}",
            started.elapsed()
        );
    }
}
