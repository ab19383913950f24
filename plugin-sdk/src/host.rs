//! The one place that calls the gateway's host functions. Built for `wasm32` these are
//! the component's imports; built natively (unit tests of plugin logic), they are the
//! in-memory stand-ins of [`crate::testing`], so no test needs a gateway.

use crate::Response;
use crate::bindings::weir::plugin::kv::Error as KvError;
use crate::bindings::weir::plugin::log::Level;
use crate::bindings::weir::plugin::outbound::{Error as OutboundError, OutboundRequest};

#[cfg(target_arch = "wasm32")]
mod imports {
    use super::*;
    use crate::bindings::weir::plugin::{config, kv, log, outbound};

    pub(super) fn config_get() -> String {
        config::get()
    }

    pub(super) fn log_write(level: Level, message: &str) {
        log::write(level, message);
    }

    pub(super) fn kv_get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        kv::get(key)
    }

    pub(super) fn kv_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        kv::set(key, value, ttl_ms)
    }

    pub(super) fn kv_delete(key: &str) -> Result<(), KvError> {
        kv::delete(key)
    }

    pub(super) fn outbound_send(request: &OutboundRequest) -> Result<Response, OutboundError> {
        outbound::send(request)
    }
}

#[cfg(not(target_arch = "wasm32"))]
use crate::testing::native as imports;

/// The use's configuration, a JSON object.
pub(crate) fn config_get() -> String {
    imports::config_get()
}

/// Writes one line to the gateway's log.
pub(crate) fn log_write(level: Level, message: &str) {
    imports::log_write(level, message);
}

/// Reads a key of the plugin's store.
pub(crate) fn kv_get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    imports::kv_get(key)
}

/// Writes a key of the plugin's store.
pub(crate) fn kv_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
    imports::kv_set(key, value, ttl_ms)
}

/// Removes a key of the plugin's store.
pub(crate) fn kv_delete(key: &str) -> Result<(), KvError> {
    imports::kv_delete(key)
}

/// Sends an outbound request.
pub(crate) fn outbound_send(request: &OutboundRequest) -> Result<Response, OutboundError> {
    imports::outbound_send(request)
}
