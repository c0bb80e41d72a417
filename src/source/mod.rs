//! Configuration sources.
pub mod authentik;
pub mod secret;
pub mod yaml;
