//! Write [Weir](https://github.com/weir-gateway/weir) plugins in Rust.
//!
//! A Weir plugin is a WebAssembly component built for `wasm32-wasip2` against the WIT
//! package `weir:plugin` (`wit/plugin.wit`). This crate holds the generated bindings of
//! all its worlds and makes a plugin a type, a trait implementation and one macro:
//!
//! | role | route file | trait | macro |
//! | --- | --- | --- | --- |
//! | handler | `handler = { plugin = "NAME" }` | [`Handler`] | [`export_handler!`] |
//! | filter | `filters = [{ plugin = "NAME" }]` | [`Filter`] | [`export_filter!`] |
//! | authorizer | `[authorizers.NAME] type = "plugin"` | [`Authorizer`] | [`export_authorizer!`] |
//!
//! **The plugin type is its configuration.** It derives `serde::Deserialize`; before each
//! call the SDK deserializes the `config` table of the plugin's use (which the gateway
//! passes as JSON) into it. A configuration that does not fit never reaches the plugin:
//! the SDK logs where and why (see [`config::parse`]) and answers a 500 JSON error (an
//! authorizer denies with it).
//!
//! Around that: helpers on [`Request`] and [`Response`] (headers case-insensitive, query
//! and route parameters, JSON bodies, [`Response::json`], [`Response::error`]), the
//! verdict builders of [`Decision`] and [`Allow`], and the host functions as modules:
//! [`log`], [`kv`] (the plugin's key-value store), [`outbound`] (HTTP to allowed
//! upstreams), [`config`].
//!
//! # Example
//!
//! A handler that greets by route parameter and counts greetings in the store:
//!
//! ```
//! use serde::Deserialize;
//! use weir_plugin::{Handler, Request, Response, kv, log};
//!
//! /// `config = { greeting = "hello" }`; every field has a default, so `{}` is valid too.
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Greeter {
//!     #[serde(default = "default_greeting")]
//!     greeting: String,
//! }
//!
//! fn default_greeting() -> String {
//!     "hello".to_owned()
//! }
//!
//! impl Handler for Greeter {
//!     fn handle(&self, request: Request) -> Response {
//!         let Some(name) = request.param("name") else {
//!             return Response::error(404, "no name");
//!         };
//!         let count = match kv::get_json::<u64>("count") {
//!             Ok(count) => count.unwrap_or(0) + 1,
//!             Err(err) => {
//!                 log::warn(&format!("count unavailable: {err}"));
//!                 return Response::error(503, "try again later");
//!             }
//!         };
//!         if let Err(err) = kv::set_json("count", &count, None) {
//!             log::warn(&format!("count not saved: {err}"));
//!         }
//!         Response::json(200, &serde_json::json!({
//!             "message": format!("{}, {name}", self.greeting),
//!             "count": count,
//!         }))
//!     }
//! }
//!
//! weir_plugin::export_handler!(Greeter);
//!
//! // Natively (`cargo test`), the host functions are in-memory stand-ins
//! // (`weir_plugin::testing`), so the whole plugin runs in a unit test:
//! # fn main() {
//! weir_plugin::testing::reset();
//! let greeter = Greeter { greeting: "hi".to_owned() };
//! let response = greeter.handle(Request::new("GET", "/greet/ada").with_param("name", "ada"));
//! assert_eq!(response.status, 200);
//! let body: serde_json::Value = response.json_body().expect("json");
//! assert_eq!(body, serde_json::json!({ "message": "hi, ada", "count": 1 }));
//! # }
//! ```
//!
//! Its `Cargo.toml` makes a component library:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! weir-plugin = { path = "../weir/plugin-sdk" }
//! serde = { version = "1", features = ["derive"] }
//! serde_json = "1"
//! ```
//!
//! `cargo build --release --target wasm32-wasip2` then gives
//! `target/wasm32-wasip2/release/NAME.wasm`, which `weir plugin inspect` describes and
//! `[plugins.NAME] path = "..."` loads. `docs/writing-plugins.md` walks through it.
//!
//! # Native tests
//!
//! Built for anything but `wasm32`, the host functions are served by [`testing`]: the
//! configuration is what [`testing::set_config`] set, the key-value store is an
//! in-memory map, log lines are kept for [`testing::logs`]. Plugin logic (and the SDK's
//! own glue) is tested with plain `cargo test`; the types are plain structs, with
//! builders such as [`Request::new`] and [`Request::with_header`].

extern crate self as weir_plugin;

#[doc(hidden)]
pub mod bindings;
mod body;
pub mod config;
pub mod headers;
mod host;
pub mod kv;
pub mod log;
pub mod outbound;
mod outcome;
mod request;
mod response;
mod roles;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use bindings::authorizer::{Allow, Decision};
pub use bindings::filter::RequestOutcome;
pub use bindings::weir::plugin::types::{AuthContext, Request, Response, TlsIdentity};
pub use body::BodyError;
pub use config::ConfigError;
pub use headers::Headers;
pub use roles::{Authorizer, Filter, Handler};

/// What the export macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::{authorizer, filter, handler};
    pub use crate::roles::Export;
}

/// Exports a [`Handler`] as the component's `handler` world: `export_handler!(MyHandler);`
/// once, at the crate root of a `cdylib`.
#[macro_export]
macro_rules! export_handler {
    ($plugin:ty) => {
        const _: () = {
            type __WeirPluginExport = $crate::__private::Export<$plugin>;
            $crate::__private::handler::export!(
                __WeirPluginExport with_types_in $crate::__private::handler
            );
        };
    };
}

/// Exports a [`Filter`] as the component's `filter` world: `export_filter!(MyFilter);`
/// once, at the crate root of a `cdylib`.
#[macro_export]
macro_rules! export_filter {
    ($plugin:ty) => {
        const _: () = {
            type __WeirPluginExport = $crate::__private::Export<$plugin>;
            $crate::__private::filter::export!(
                __WeirPluginExport with_types_in $crate::__private::filter
            );
        };
    };
}

/// Exports an [`Authorizer`] as the component's `authorizer` world:
/// `export_authorizer!(MyAuthorizer);` once, at the crate root of a `cdylib`.
#[macro_export]
macro_rules! export_authorizer {
    ($plugin:ty) => {
        const _: () = {
            type __WeirPluginExport = $crate::__private::Export<$plugin>;
            $crate::__private::authorizer::export!(
                __WeirPluginExport with_types_in $crate::__private::authorizer
            );
        };
    };
}
