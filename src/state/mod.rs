//! What the running process shares between requests: applications (a core `Site` with its
//! provider client) and their host index, the current `Runtime` swapped atomically on
//! reload, the memos of opened sessions, metric counters, the server certificates, and the
//! bounded sets of used login states and ended sessions. Built by a configuration source and
//! read by the HTTP layer; it uses `core` and `provider`, and never reads a configuration or
//! answers a request itself.
pub mod application;
pub mod body;
pub mod certs;
pub mod client_rate;
pub mod memo;
pub mod metrics;
pub mod outpost;
pub mod ttl_set;
pub mod upstream;
