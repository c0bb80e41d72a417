//! An application for proxy-mode tests, served on `127.0.0.1:<random port>`: large streamed
//! bodies both ways, a slow answer, a WebSocket echo and the echo app's JSON for anything else.
//!
//! - `GET /bytes/<n>`: `n` bytes of [`pattern`], streamed in 64 KiB chunks with no
//!   `Content-Length` (chunked), so nothing in between can know the size in advance;
//! - `POST /count`: reads the whole request body as it streams and answers
//!   `{"bytes": n, "sum": <sum of the bytes>}`;
//! - `GET /slow/<ms>`: answers `slow` after `ms` milliseconds;
//! - `GET /ws`: a WebSocket that echoes each text or binary message back, prefixed `echo:`
//!   for text;
//! - anything else: the echo app's answer (method, path, query, headers as JSON).
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// Generated bodies repeat this many bytes.
pub const CHUNK: usize = 64 * 1024;

/// The byte at offset `i` of every generated body (period [`CHUNK`]).
pub fn pattern(i: u64) -> u8 {
    let i = i % CHUNK as u64;
    (i.wrapping_mul(31) ^ (i >> 9)) as u8
}

/// One period of [`pattern`].
pub fn chunk() -> Bytes {
    Bytes::from((0..CHUNK as u64).map(pattern).collect::<Vec<u8>>())
}

/// The sum of `n` bytes of [`pattern`].
pub fn pattern_sum(n: u64) -> u64 {
    let whole: u64 = (0..CHUNK as u64).map(|i| pattern(i) as u64).sum();
    let rest: u64 = (0..n % CHUNK as u64).map(|i| pattern(i) as u64).sum();
    (n / CHUNK as u64) * whole + rest
}

/// The sum of some bytes.
pub fn sum(b: &[u8]) -> u64 {
    b.iter().map(|x| *x as u64).sum()
}

/// A running backend; dropping it stops the listener.
pub struct Backend {
    pub addr: SocketAddr,
    /// Connections accepted so far (keep-alive reuse shows as few).
    pub connections: Arc<AtomicUsize>,
    shutdown: watch::Sender<bool>,
}

impl Backend {
    pub async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("backend bind");
        let addr = listener.local_addr().expect("backend addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let shutdown = serve(listener, answer, Arc::clone(&connections));
        Backend {
            addr,
            connections,
            shutdown,
        }
    }
}

/// Serves `handler` on `listener` (HTTP/1.1, upgrades allowed) in spawned tasks, counting
/// connections in `accepted`, until the returned sender sends `true` or is dropped.
fn serve<F, Fut, B>(
    listener: TcpListener,
    handler: F,
    accepted: Arc<AtomicUsize>,
) -> watch::Sender<bool>
where
    F: Fn(Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (shutdown, mut stop) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = stop.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok((s, _)) => s,
                    Err(_) => continue,
                },
            };
            accepted.fetch_add(1, Ordering::Relaxed);
            let mut conn_stop = stop.clone();
            tokio::spawn(async move {
                let conn = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(handler))
                    .with_upgrades();
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = conn_stop.changed() => {}
                }
            });
        }
    });
    shutdown
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

type Out = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(s: impl Into<Bytes>) -> Out {
    Full::new(s.into()).boxed()
}

async fn answer(req: Request<Incoming>) -> Result<Response<Out>, Infallible> {
    let path = req.uri().path().to_string();
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: u64 = n.parse().unwrap_or(0);
        return Ok(Response::new(
            Pattern {
                at: 0,
                len: n,
                chunk: chunk(),
            }
            .boxed(),
        ));
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        return Ok(Response::new(full("slow")));
    }
    if path == "/count" {
        let mut body = req.into_body();
        let (mut bytes, mut sum) = (0u64, 0u64);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                bytes += data.len() as u64;
                sum += self::sum(&data);
            }
        }
        let json = serde_json::json!({"bytes": bytes, "sum": sum});
        return Ok(Response::new(full(json.to_string())));
    }
    if path == "/ws" {
        return Ok(websocket(req));
    }
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        let v = serde_json::Value::String(String::from_utf8_lossy(value.as_bytes()).into());
        if let serde_json::Value::Array(a) = headers
            .entry(name.as_str().to_string())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()))
        {
            a.push(v);
        }
    }
    let json = serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query().unwrap_or(""),
        "headers": headers,
    });
    let mut r = Response::new(full(json.to_string()));
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("value"));
    r.headers_mut()
        .insert("set-cookie", "backend=1; Path=/".parse().expect("value"));
    Ok(r)
}

/// Accepts a WebSocket handshake and echoes messages on the upgraded connection.
fn websocket(mut req: Request<Incoming>) -> Response<Out> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut r = Response::new(full("not a websocket request"));
        *r.status_mut() = hyper::StatusCode::BAD_REQUEST;
        return r;
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            let reply = match msg {
                Message::Text(t) => Message::text(format!("echo:{t}")),
                Message::Binary(b) => Message::binary(b),
                Message::Close(_) => break,
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });
    let mut r = Response::new(full(""));
    *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("connection", "Upgrade".parse().expect("value"));
    h.insert("upgrade", "websocket".parse().expect("value"));
    h.insert(
        "sec-websocket-accept",
        derive_accept_key(key.as_bytes()).parse().expect("value"),
    );
    r
}

/// `len` bytes of [`pattern`] in [`CHUNK`]-sized frames.
struct Pattern {
    at: u64,
    len: u64,
    chunk: Bytes,
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.at >= self.len {
            return Poll::Ready(None);
        }
        let n = (self.len - self.at).min(CHUNK as u64);
        self.at += n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }
}
