//! ak-outpost: a forward-auth outpost, wire-compatible with authentik's proxy outpost.
//!
//! A reverse proxy (nginx `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth`, Envoy
//! `ext_authz`) asks on every request whether the browser is logged in; the outpost answers
//! 200 with `X-authentik-*` identity headers, or 401/302 to start an OpenID Connect login.
//! In proxy mode the outpost is itself the reverse proxy for an application and forwards
//! signed-in users' requests to it with those headers.
//! Sessions are sealed cookies (no server-side store), checked against the provider through a
//! cached token introspection.
//!
//! # Layers
//! One folder per layer; a layer uses the layers above it in this list, never one below it
//! (`scripts/check-layers.py` enforces it, and that no two modules import each other in a
//! circle). `ARCHITECTURE.md` walks through a request and a login.
//!
//! - [`core`]: the pure part. Paths and header names, the request parsed at the edge
//!   ([`core::request`]), redirect targets, sealing, the session cookie codec, the login
//!   state, identity headers, [`core::decide::decide`] and proxy mode's header rules
//!   ([`core::upstream`]). No sockets, no tokio, no caches.
//! - [`provider`]: the OpenID Connect client — discovery, keys and ID tokens, the token
//!   endpoint, and the cached introspection. Talks to the identity provider only.
//! - [`state`]: what the running process shares: [`state::application::Application`]s and
//!   their index, the current [`state::outpost::Runtime`] swapped atomically, the session
//!   memos, metric counters, server certificates, the bounded sets of used login states
//!   and ended sessions ([`state::ttl_set`]) and proxy mode's upstream pools.
//! - [`source`]: where a configuration comes from: [`source::yaml`] (standalone) or
//!   [`source::authentik`] (API, websocket, providers → applications). Both produce a
//!   `Runtime`.
//! - [`http`]: the listeners, routing, endpoint handlers and responses.
//! - [`telemetry`], [`healthcheck`]: process support for `main.rs`, which only wires the rest
//!   (its one module, `startup_pages.rs`, hands the binary's start-up pages back to the
//!   kernel once the outpost is ready).

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod core;
pub mod healthcheck;
pub mod http;
pub mod provider;
pub mod source;
pub mod state;
pub mod telemetry;
