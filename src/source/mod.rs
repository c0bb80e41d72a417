//! Where a configuration comes from. [`yaml`]: a standalone file against any OpenID Connect
//! provider. [`authentik`]: authentik's outpost API, kept live over its websocket. Both are
//! parsed and validated whole before anything is bound (every problem listed at once, see
//! [`values::ConfigError`]) and both produce the same `state::outpost::Runtime`. Sources
//! use `core`, `provider` and `state`; they never touch the HTTP layer.
pub mod authentik;
pub mod values;
pub mod yaml;
