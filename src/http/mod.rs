//! The HTTP side.
pub mod handlers;
pub mod metrics;
pub mod respond;
pub mod server;
