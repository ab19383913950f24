//! Weir: a self-hosted API gateway whose custom logic runs as WebAssembly components.
//!
//! The request's path through this crate: [`server`] accepts connections and hands each
//! request to [`pipeline::Gateway::handle`], which runs the lifecycle phases (`route` via
//! [`path`] and [`router`], then `integrate` via [`upstream`] or [`mock`]); every error
//! becomes a response in [`error`]. [`config`] turns the route file into the validated
//! form all of that runs on. See `ARCHITECTURE.md`.

pub mod access_log;
pub mod admin;
pub mod apikey;
pub mod authorize;
pub mod body;
pub mod cache;
pub mod config;
pub mod cors;
pub mod error;
pub mod filters;
pub mod gate;
pub mod headers;
pub mod http1;
pub mod identity;
pub mod jwt;
pub mod metrics;
pub mod mock;
pub mod path;
pub mod pipeline;
pub mod plugin;
pub mod router;
pub mod server;
pub mod state;
pub mod throttle;
pub mod timer;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod websocket;
