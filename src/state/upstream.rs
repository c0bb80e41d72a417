//! Proxy mode's connections to applications: one pooled HTTP/1.1 client per upstream
//! (keep-alive reuse, connect timeout, the outpost's one outbound trust store, certificate
//! checks off only where the upstream says so), kept across reloads while its settings stay
//! the same. It sends what it is given; which headers go where is `core::upstream`'s rule, and
//! turning failures into pages is `http::proxy`'s.

use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::oneshot;

use crate::core::app::host_key;
use crate::core::upstream::Upstream;
use crate::provider::client_tls::{TlsSetupError, client_config};
use crate::state::body::Body;
use crate::state::metrics::{UpstreamMetrics, upstream_metrics};

/// How long an idle upstream connection is kept for reuse.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream host.
pub const POOL_MAX_IDLE: usize = 256;

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection, or the connection failed before an answer.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// No answer within the response timeout.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
}

/// A proxy-mode application's way to its upstream: the (possibly shared) pooled client and
/// the application's upstream latency histograms.
pub struct ProxyTo {
    pub client: Arc<UpstreamClient>,
    pub metrics: &'static UpstreamMetrics,
}

impl ProxyTo {
    /// For the application at external host `host` (`name[:port]`): `existing` when it has
    /// these settings (a previous runtime's pool stays warm), else a new client.
    pub fn new(
        existing: Option<Arc<UpstreamClient>>,
        spec: &Upstream,
        host: &str,
    ) -> Result<ProxyTo, TlsSetupError> {
        let client = UpstreamClient::reuse_or_new(existing, spec)?;
        let metrics = upstream_metrics(host, spec.url.scheme(), &host_key(&spec.url));
        Ok(ProxyTo { client, metrics })
    }
}

/// A pooled client for one upstream.
pub struct UpstreamClient {
    pub spec: Upstream,
    client: Client<HttpsConnector<HttpConnector>, Sending>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// A client for `spec`. Fails only when the outbound TLS settings cannot be built.
    pub fn new(spec: Upstream) -> Result<UpstreamClient, TlsSetupError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(spec.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        // hyper-rustls offers ALPN itself (`enable_http1`) and panics on a configuration that
        // already lists protocols, as the shared one does.
        let mut tls = rustls::ClientConfig::clone(&*client_config(!spec.verify_tls)?);
        tls.alpn_protocols.clear();
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Ok(UpstreamClient { spec, client })
    }

    /// `existing` (a previous runtime's client with these settings, so its pool stays warm
    /// across reloads), or a new client.
    pub fn reuse_or_new(
        existing: Option<Arc<UpstreamClient>>,
        spec: &Upstream,
    ) -> Result<Arc<UpstreamClient>, TlsSetupError> {
        match existing {
            Some(u) if u.spec == *spec => Ok(u),
            _ => UpstreamClient::new(spec.clone()).map(Arc::new),
        }
    }

    /// Sends `req` (its URI absolute) and waits for the answer's head at most the response
    /// timeout after the request body was sent (an upload takes the time it takes); the
    /// answer's body then streams as the upstream sends it.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        let limit = self.spec.response_timeout;
        let (done, sent) = oneshot::channel();
        let empty = req.body().is_end_stream();
        let req = req.map(|body| Sending {
            body,
            done: Some(done),
        });
        let waited = async move {
            if !empty {
                // Err: the request ended without its body finishing; count from now.
                let _ = sent.await;
            }
            tokio::time::sleep(limit).await;
        };
        tokio::select! {
            r = self.client.request(req) => r.map_err(|e| UpstreamError::Unreachable(error_chain(&e))),
            _ = waited => Err(UpstreamError::Timeout(limit)),
        }
    }
}

/// A request body on its way upstream, telling when it has been sent whole.
pub struct Sending {
    body: Body,
    done: Option<oneshot::Sender<()>>,
}

impl HttpBody for Sending {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(r, Poll::Ready(None))
            && let Some(done) = self.done.take()
        {
            let _ = done.send(());
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An error with its causes, `a: b: c`.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hyper-rustls panics on a TLS configuration that already lists ALPN protocols, as the
    /// shared outbound one does.
    #[test]
    fn clients_build_with_and_without_certificate_checks() {
        for verify in [true, false] {
            let spec = Upstream::new("https://app:8443", verify, true).unwrap();
            assert!(UpstreamClient::new(spec).is_ok());
        }
    }
}
