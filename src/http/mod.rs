//! The HTTP side: the listeners (accept loop, keep-alive, TLS, graceful drain), routing of
//! `/outpost.goauthentik.io/*`, the endpoint handlers, the one place outcomes become
//! responses, and the metrics listener. Handlers read the current `state::outpost::Runtime`;
//! they never build configurations (no imports from `source`).
pub mod handlers;
pub mod limits;
pub mod metrics;
pub mod respond;
pub mod server;
