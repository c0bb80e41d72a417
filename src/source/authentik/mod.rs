//! authentik mode: a drop-in for authentik's proxy outpost container. Configuration comes
//! from the authentik API (`AUTHENTIK_HOST` + `AUTHENTIK_TOKEN`), is kept live over the
//! outpost websocket and a periodic refresh, and is swapped atomically; the last good
//! configuration keeps serving while authentik is unreachable. This module owns the
//! environment, the API client, the websocket, the provider → application mapping, the
//! refresh loop and the keypair certificates; it may use `crate::core`, `crate::provider`,
//! `crate::state` and `crate::source::values`, never the HTTP layer.

pub mod api;
pub mod apps;
pub mod control;
pub mod env;
pub mod keypairs;
pub mod ws;

pub use apps::build_runtime;
pub use control::{Fatal, START_RETRY, control, instance_uuid};
pub use env::{AuthentikEnv, parse_bool};
pub use keypairs::KeypairCache;
