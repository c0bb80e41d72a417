//! The pure core.
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
