//! Configuration sources.
pub mod authentik;
pub mod values;
pub mod yaml;
