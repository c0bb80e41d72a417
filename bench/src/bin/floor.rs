//! The floor: the smallest forward-auth "outpost" possible. It answers every request 200 with
//! the five `X-authentik-*` identity headers of a fixed user and does nothing else: no cookie,
//! no crypto, no cache, no logging. It is served the way ak-outpost serves (`src/server.rs`:
//! tokio multi-thread runtime, hyper HTTP/1 with keep-alive and a header read timeout,
//! TCP_NODELAY), so the difference between the two is the outpost's logic. Keep the two in
//! step when the outpost's connection settings change.
//!
//! Also used as the "app" behind nginx in the full-request benchmarks.
//!
//! Usage: `floor <listen addr> [<headers file>]` (e.g. `127.0.0.1:9101`); prints
//! `FLOOR_READY <addr>` once listening. With a headers file (`Name: value` lines, as `curl -D`
//! writes them; the status line and framing headers are skipped) it answers with exactly those
//! headers instead: the same response bytes as the outpost, still without any logic.
//! With `FLOOR_BODY_BYTES=<n>` in the environment every answer carries a body of `n` bytes
//! (a small page; the backend of the proxy-mode benchmark, `bench/proxy.sh`).

use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    CONNECTION, CONTENT_LENGTH, DATE, HeaderMap, HeaderName, HeaderValue, TRANSFER_ENCODING,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};

/// The answer's headers when a headers file was given.
static FIXED: OnceLock<HeaderMap> = OnceLock::new();
/// The answer's body (`FLOOR_BODY_BYTES`; empty without it).
static BODY: OnceLock<Bytes> = OnceLock::new();

async fn answer(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut r = Response::new(Full::new(BODY.get().cloned().unwrap_or_default()));
    if let Some(fixed) = FIXED.get() {
        *r.headers_mut() = fixed.clone();
        return Ok(r);
    }
    let h = r.headers_mut();
    h.insert("x-authentik-username", "alice".parse().unwrap());
    h.insert("x-authentik-groups", "admins|users".parse().unwrap());
    h.insert("x-authentik-email", "alice@example.test".parse().unwrap());
    h.insert("x-authentik-name", "Alice Liddell".parse().unwrap());
    h.insert("x-authentik-uid", "alice".parse().unwrap());
    Ok(r)
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9101".to_string());
    if let Some(path) = std::env::args().nth(2) {
        let text = std::fs::read_to_string(&path).expect("headers file");
        let mut h = HeaderMap::new();
        for line in text.lines().skip(1) {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let name = HeaderName::from_bytes(k.trim().as_bytes()).expect("header name");
            if [CONTENT_LENGTH, DATE, TRANSFER_ENCODING, CONNECTION].contains(&name) {
                continue; // hyper writes these itself
            }
            h.append(name, HeaderValue::from_str(v.trim()).expect("header value"));
        }
        FIXED.set(h).expect("set once");
    }
    if let Some(n) = std::env::var("FLOOR_BODY_BYTES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let page: Vec<u8> = b"<p>ak-outpost bench backend</p>\n"
            .iter()
            .copied()
            .cycle()
            .take(n)
            .collect();
        BODY.set(Bytes::from(page)).expect("set once");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
        println!("FLOOR_READY {}", listener.local_addr().expect("addr"));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(15))
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(answer));
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
}
