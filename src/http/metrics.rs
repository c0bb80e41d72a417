//! The metrics listener: `/metrics` (Prometheus text from [`crate::state::metrics`]), liveness
//! (`/outpost.goauthentik.io/ping`) and readiness (`/outpost.goauthentik.io/ready`, `/ready`).
//! It only reads: the counters live in `state::metrics`.

use http::request::Parts;
use http::{Response, StatusCode};

use crate::core::paths::{METRICS_PATH, PING_PATH, READY_PATH};
use crate::http::respond::{self, Body};
use crate::state::metrics::{Health, render};
use crate::state::outpost::Outpost;

/// Serves the metrics listener.
pub fn handle(outpost: &Outpost, parts: &Parts) -> Response<Body> {
    let path = parts.uri.path();

    if path == METRICS_PATH {
        let mut r = respond::text(StatusCode::OK, &render_for(outpost));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    } else if path.starts_with(PING_PATH) {
        respond::empty(StatusCode::NO_CONTENT)
    } else if path == READY_PATH || path == "/ready" {
        match outpost.ready() {
            Ok(()) => respond::text(StatusCode::OK, "ready"),
            Err(e) => respond::text(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready: {e}")),
        }
    } else {
        respond::text(StatusCode::NOT_FOUND, "404 page not found")
    }
}

fn render_for(outpost: &Outpost) -> String {
    let rt = outpost.runtime();
    let providers = outpost.providers();
    let health = Health {
        ready: outpost.ready().is_ok(),
        providers_up: providers.iter().all(|c| c.down_since().is_none()),
        cached_checks: providers.iter().map(|c| c.cached_checks()).sum(),
        grace_served: providers.iter().map(|c| c.grace_served()).sum(),
    };
    render(&rt.settings.outpost_name, &health)
}
