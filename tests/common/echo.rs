//! The protected application used behind nginx in the integration tests: an
//! HTTP/1.1 server that answers every request with a JSON description of the
//! request it received.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A running echo app on `127.0.0.1:<random port>`, served by a tokio task of
/// the current runtime.
///
/// Every request (any method, any path) gets `200` with
/// `Content-Type: application/json` and the body
/// `{"method": "GET", "path": "/p", "query": "a=1", "headers": {"x-h": ["v1", "v2"]}}`:
/// `query` is the raw query string (`""` if none), `headers` holds every
/// request header under its lowercased name, repeated headers as several
/// entries in arrival order.
///
/// Dropping the value stops the listener and closes open connections.
pub struct EchoApp {
    /// The address the app listens on (use it as nginx's app upstream).
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
}

impl EchoApp {
    /// Binds `127.0.0.1:0` and starts serving in a spawned task. Must be
    /// called inside a tokio runtime.
    pub async fn start() -> EchoApp {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("echo app: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("echo app: local_addr");
        let shutdown = super::backend::serve(listener, echo);
        EchoApp { addr, shutdown }
    }
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        let value = serde_json::Value::String(String::from_utf8_lossy(value.as_bytes()).into());
        match headers
            .entry(name.as_str().to_ascii_lowercase())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()))
        {
            serde_json::Value::Array(values) => values.push(value),
            _ => unreachable!(),
        }
    }
    let body = serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query().unwrap_or(""),
        "headers": headers,
    });
    let response = Response::builder()
        .status(200)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("echo app: response");
    Ok(response)
}
