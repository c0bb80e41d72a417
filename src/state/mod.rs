//! Shared state.
pub mod memo;
pub mod metrics;
pub mod outpost;
