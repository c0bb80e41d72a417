//! The fuzz targets' bodies, one module per target (`fuzz_targets/<name>.rs` only calls
//! `<name>::run`). Each `run` takes any bytes, drives the outpost's real entry points, and
//! panics when an invariant (its module documents them) does not hold.
//!
//! The same modules are compiled into the main crate's `tests/fuzz_corpus.rs`, which replays
//! every corpus file and pseudo-random inputs through them on stable Rust.

pub mod authentik_json;
pub mod config_yaml;
pub mod cookie_unseal;
pub mod forwarded_url;
pub mod redirect;
pub mod skip_path;
