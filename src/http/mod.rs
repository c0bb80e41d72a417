//! The HTTP side.
pub mod handlers;
pub mod respond;
pub mod server;
pub mod tls;
