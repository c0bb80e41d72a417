//! The protected application used behind nginx in the integration tests: an
//! HTTP/1.1 server that answers every request with a JSON description of the
//! request it received.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// A running echo app on `127.0.0.1:<random port>`, served by a tokio task of
/// the current runtime.
///
/// Every request (any method, any path) gets `200` with
/// `Content-Type: application/json` and the body
/// `{"method": "GET", "path": "/p", "query": "a=1", "headers": {"x-h": ["v1", "v2"]},
/// "listener": "127.0.0.1:41234"}`:
/// `query` is the raw query string (`""` if none), `headers` holds every
/// request header under its lowercased name, repeated headers as several
/// entries in arrival order, `listener` is the app's own address (which of
/// several apps answered).
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
        EchoApp::serve(None).await
    }

    /// Like [`EchoApp::start`], over TLS with `tls` (for instance
    /// `fake_authentik::PrivateCa::server_config`): an `https` upstream.
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> EchoApp {
        EchoApp::serve(Some(TlsAcceptor::from(tls))).await
    }

    async fn serve(tls: Option<TlsAcceptor>) -> EchoApp {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("echo app: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("echo app: local_addr");
        let (shutdown, mut stop) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = stop.changed() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let conn_stop = stop.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve_connection(stream, addr, conn_stop).await,
                        // A client that refuses the certificate ends here.
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                serve_connection(s, addr, conn_stop).await;
                            }
                        }
                    }
                });
            }
        });
        EchoApp { addr, shutdown }
    }
}

/// One HTTP/1 connection until it ends or the app stops.
async fn serve_connection<S>(stream: S, addr: SocketAddr, mut stop: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service_fn(move |req| echo(req, addr)));
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {}
    }
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn echo(
    req: Request<Incoming>,
    listener: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
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
        "listener": listener.to_string(),
    });
    let response = Response::builder()
        .status(200)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("echo app: response");
    Ok(response)
}
