//! The pure core: every rule of the outpost that can be stated without the network. Request
//! parsing at the edge, paths and header names, applications' validated settings, redirect
//! checks, sealing, the session cookie codec, the login state, identity headers, the
//! decision and proxy mode's rules for what crosses to the upstream. It holds no shared
//! state and does no I/O: no sockets, no tokio, no caches, no configuration files; nothing
//! here imports another layer of the crate.
pub mod app;
pub mod decide;
pub mod extras;
pub mod headers;
pub mod identity;
pub mod identity_headers;
pub mod login;
pub mod paths;
pub mod redirect;
pub mod request;
pub mod seal;
pub mod session;
pub mod token;
pub mod upstream;
