//! Weir's end-to-end tests: real `weir` processes on real sockets, real backends, real
//! TLS with certificates generated per test. One binary, one module per capability (each
//! test binary links the whole gateway, so there is only this one).

mod harness;

mod cli;
mod examples;
mod listener;
mod proxy;
mod routing;
mod tls;
