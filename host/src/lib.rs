//! Weir: a self-hosted API gateway whose custom logic runs as WebAssembly components.
//!
//! The request's path through this crate: [`server`] accepts connections and hands each
//! request to [`pipeline::Gateway::handle`], which runs the lifecycle phases (`route` via
//! [`path`] and [`router`], then `integrate` via [`upstream`] or [`mock`]); every error
//! becomes a response in [`error`]. [`config`] turns the route file into the validated
//! form all of that runs on. See `ARCHITECTURE.md`.

pub mod admin;
pub mod body;
pub mod config;
pub mod error;
pub mod headers;
pub mod mock;
pub mod path;
pub mod pipeline;
pub mod router;
pub mod server;
pub mod tls;
pub mod upstream;
