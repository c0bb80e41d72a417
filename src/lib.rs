//! ak-outpost: a forward-auth outpost, wire-compatible with authentik's proxy outpost.
//!
//! A reverse proxy (nginx `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth`, Envoy
//! `ext_authz`) asks on every request whether the browser is logged in; the outpost answers
//! 200 with `X-authentik-*` identity headers, or 401/302 to start an OpenID Connect login.
//! Sessions are sealed cookies (no server-side store), checked against the provider through a
//! cached token introspection.
//!
//! # Layout
//! - [`config`]: the YAML file, parsed once into validated types (all problems at once).
//! - [`secret`]: `env://` / `file://` value indirections.
//! - [`app`]: applications, their settings, and host lookup.
//! - [`paths`], [`headers`]: every path and header name, spelled once.
//! - [`request`]: the edge; a forward-auth request becomes an [`request::AuthRequest`].
//! - [`decide`]: the pure verdict `decide(request, session, app, now) -> Decision`.
//! - [`respond`]: the one place outcomes become HTTP responses.
//! - [`handlers`]: the endpoints (auth checks, start, callback, sign_out, ping, ready).
//! - [`session`]: the sealed, chunked session cookie.
//! - [`memo`]: a bounded memo of opened session cookies (skips unsealing on the hot path).
//! - [`login`]: the sealed OAuth state for the login round trip.
//! - [`redirect`]: [`redirect::RedirectTarget`], the only way to name a post-login target.
//! - [`seal`]: AES-256-GCM sealing with derived keys.
//! - [`oidc`]: discovery, JWKS, token calls, ID-token checks, cached introspection.
//! - [`extras`]: authentik's per-user Basic credentials and additional headers.
//! - [`outpost`]: shared state, swapped atomically on reload.
//! - [`server`]: the hyper accept loop and graceful drain.
//! - [`metrics`]: Prometheus text on the metrics listener.
//! - [`telemetry`]: tracing set-up.
//! - [`healthcheck`]: the `ak-outpost healthcheck` probe.
//! - [`authentik`]: authentik mode: API client, websocket, providers → applications.
//! - [`tls`]: TLS configuration helpers.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod core;
pub mod healthcheck;
pub mod http;
pub mod provider;
pub mod source;
pub mod state;
pub mod telemetry;
