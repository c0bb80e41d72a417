//! Shared state.
pub mod application;
pub mod certs;
pub mod memo;
pub mod metrics;
pub mod outpost;
