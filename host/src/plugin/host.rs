//! What a plugin instance may reach: the store data of one call ([`Host`]) and the host
//! functions of `wit/plugin.wit` (`log`, `config`, `kv`, `outbound`), plus a WASI 0.2
//! context with nothing in it but clocks and randomness.
//!
//! **Invariant:** host functions never call back into the guest and stay shallow (no
//! deep recursion on the host stack); the ones that wait (`kv`) are bounded by the state
//! backend's own timeout and by the wall-clock bound around the whole call.

use std::sync::Arc;

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::imports::weir::plugin::{config, kv, log, outbound};
use crate::state::State;

/// The longest log line a plugin may write, in bytes; longer lines are cut.
pub const MAX_LOG_LINE_BYTES: usize = 4096;
/// The longest KV key, in bytes.
pub const MAX_KV_KEY_BYTES: usize = 1024;
/// The largest KV value, in bytes.
pub const MAX_KV_VALUE_BYTES: usize = 1024 * 1024;

/// Who is calling, for the host functions and the logs.
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// `[plugins.NAME]`: also the KV namespace.
    pub plugin: Arc<str>,
    pub request_id: Arc<str>,
    /// The use's `config`, as JSON.
    pub config: Arc<str>,
    /// The state backend behind `kv`.
    pub state: Arc<State>,
}

/// The data of one store (one request's instance).
pub struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: MemoryCap,
    call: CallInfo,
}

impl Host {
    pub fn new(call: CallInfo, memory_bytes: usize) -> Host {
        Host {
            wasi: sandbox(),
            table: ResourceTable::new(),
            limiter: MemoryCap::new(memory_bytes),
            call,
        }
    }

    /// Whether the guest asked for more memory than its cap (and was refused).
    pub fn memory_exceeded(&self) -> bool {
        self.limiter.exceeded
    }
}

/// The WASI context of a plugin: no preopened directory, no environment, no arguments,
/// stdin closed and stdout/stderr discarded, no TCP, no UDP, no name lookup. Clocks and
/// random numbers are the host's.
fn sandbox() -> WasiCtx {
    WasiCtxBuilder::new()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A memory cap that remembers when it refused to grow (to tell a memory overrun from
/// any other trap: a guest whose allocation fails usually aborts with `unreachable`).
#[derive(Debug)]
pub struct MemoryCap {
    max_bytes: usize,
    exceeded: bool,
}

/// The most table elements one instance may have.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl MemoryCap {
    fn new(max_bytes: usize) -> MemoryCap {
        MemoryCap {
            max_bytes,
            exceeded: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl log::Host for Host {
    fn write(&mut self, level: log::Level, message: String) {
        let message = cut(&message, MAX_LOG_LINE_BYTES);
        let (plugin, request_id) = (&*self.call.plugin, &*self.call.request_id);
        match level {
            log::Level::Trace => tracing::trace!(plugin, request_id, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, request_id, "{message}"),
            log::Level::Info => tracing::info!(plugin, request_id, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, request_id, "{message}"),
            log::Level::Error => tracing::error!(plugin, request_id, "{message}"),
        }
    }
}

impl config::Host for Host {
    fn get(&mut self) -> String {
        self.call.config.to_string()
    }
}

impl kv::Host for Host {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::Error> {
        if key.len() > MAX_KV_KEY_BYTES {
            return Err(kv::Error::TooLarge);
        }
        match self.call.state.kv_get(&self.call.plugin, &key).await {
            Ok(value) => Ok(value.map(|bytes| bytes.to_vec())),
            Err(error) => Err(self.unavailable(&error)),
        }
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), kv::Error> {
        if key.len() > MAX_KV_KEY_BYTES || value.len() > MAX_KV_VALUE_BYTES {
            return Err(kv::Error::TooLarge);
        }
        let ttl = ttl_ms.map(std::time::Duration::from_millis);
        self.call
            .state
            .kv_set(&self.call.plugin, &key, Bytes::from(value), ttl)
            .await
            .map_err(|error| self.unavailable(&error))
    }

    async fn delete(&mut self, key: String) -> Result<(), kv::Error> {
        if key.len() > MAX_KV_KEY_BYTES {
            return Err(kv::Error::TooLarge);
        }
        self.call
            .state
            .kv_delete(&self.call.plugin, &key)
            .await
            .map_err(|error| self.unavailable(&error))
    }
}

impl Host {
    fn unavailable(&self, error: &crate::state::StateError) -> kv::Error {
        tracing::warn!(
            plugin = &*self.call.plugin,
            request_id = &*self.call.request_id,
            error = %error,
            "plugin kv: state backend unavailable"
        );
        kv::Error::Unavailable
    }
}

impl outbound::Host for Host {
    /// Outbound requests are not wired to the upstream pools yet: every upstream is
    /// refused, which is what a plugin whose config names none gets anyway.
    async fn send(
        &mut self,
        request: outbound::OutboundRequest,
    ) -> Result<super::bindings::Response, outbound::Error> {
        tracing::debug!(
            plugin = &*self.call.plugin,
            request_id = &*self.call.request_id,
            upstream = request.upstream,
            "plugin outbound request refused"
        );
        Err(outbound::Error::NotAllowed)
    }
}

impl super::bindings::imports::weir::plugin::types::Host for Host {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_char_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
    }
}
