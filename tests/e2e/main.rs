//! Weir's end-to-end tests: real `weir` processes on real sockets, real backends, real
//! TLS with certificates generated per test. One binary, one module per capability (each
//! test binary links the whole gateway, so there is only this one).

mod guests;
mod harness;
mod polyglot_build;
mod tokens;

mod api_keys;
mod authorizers;
mod cache;
mod cli;
mod cors;
mod examples;
mod filters;
mod http1;
mod jwt;
mod listener;
mod ops;
mod plugin_ops;
mod plugins;
mod polyglot;
mod proxy;
mod redis;
mod reuse;
mod routing;
mod sdk;
mod throttle;
mod tls;
mod wasi_http;
mod websocket;
mod websocket_api;
