//! What a plugin instance may reach: the store data of one call ([`Host`]) and the host
//! functions of `wit/plugin.wit` (`log`, `config`, `kv`, `outbound`), plus a WASI 0.2
//! context with nothing in it but clocks and randomness, and the `wasi:http` types (for
//! `wasi:http/proxy` handlers) with outgoing requests refused ([`HttpHooks`]).
//!
//! **Invariant:** host functions never call back into the guest and stay shallow (no
//! deep recursion on the host stack); the ones that wait (`kv`) are bounded by the state
//! backend's own timeout and by the wall-clock bound around the whole call.

use std::sync::Arc;

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::bindings::imports::weir::plugin::{config, kv, log, outbound};
use super::bindings::websocket::weir::plugin::connections;
use crate::state::State;
use crate::upstream::UpstreamPool;

/// The longest log line a plugin may write, in bytes; longer lines are cut.
pub const MAX_LOG_LINE_BYTES: usize = 4096;
/// The longest KV key, in bytes.
pub const MAX_KV_KEY_BYTES: usize = 1024;
/// The largest KV value, in bytes.
pub const MAX_KV_VALUE_BYTES: usize = 1024 * 1024;

/// The largest outbound response body a plugin gets, in bytes (`too-large` past it).
pub const MAX_OUTBOUND_BODY_BYTES: u64 = 16 * 1024 * 1024;

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
    /// What `outbound` may reach.
    pub outbound: Outbound,
}

/// The upstreams a use of a plugin may send requests to (`config.upstreams`), and the
/// gateway's pools they are in.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub pools: Arc<[UpstreamPool]>,
    /// (name, index into `pools`).
    pub allowed: Arc<[(String, usize)]>,
}

impl Outbound {
    /// Nothing reachable.
    pub fn none() -> Outbound {
        Outbound {
            pools: Arc::from([]),
            allowed: Arc::from([]),
        }
    }

    fn pool(&self, name: &str) -> Option<&UpstreamPool> {
        let (_, index) = self.allowed.iter().find(|(allowed, _)| allowed == name)?;
        self.pools.get(*index)
    }
}

/// The data of one store: one request's instance, or, for a plugin with
/// `requests_per_instance` above 1, an instance serving one request after another.
pub struct Host {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_hooks: HttpHooks,
    table: ResourceTable,
    pub(super) limiter: MemoryCap,
    call: CallInfo,
    /// When the running call must stop (set before each call; the epoch callback checks
    /// it).
    pub(super) deadline: std::time::Instant,
    /// What `connections` reaches: set for the calls of `websocket` plugins only.
    pub(super) connections: Option<Arc<crate::websocket::api::Connections>>,
}

impl Host {
    pub fn new(call: CallInfo, memory_bytes: usize) -> Host {
        Host {
            wasi: sandbox(),
            http: WasiHttpCtx::new(),
            http_hooks: HttpHooks {
                plugin: call.plugin.clone(),
                request_id: call.request_id.clone(),
            },
            table: ResourceTable::new(),
            limiter: MemoryCap::new(memory_bytes),
            call,
            deadline: std::time::Instant::now(),
            connections: None,
        }
    }

    /// Points a kept instance's host functions at the next request's call: its request id
    /// (logs, `wasi:http` errors), its use's config and outbound upstreams.
    pub fn rebind(&mut self, call: CallInfo) {
        self.http_hooks.request_id = call.request_id.clone();
        self.call = call;
        self.connections = None;
        // A refused `memory.grow` the guest survived belongs to the last request.
        self.limiter.exceeded = false;
    }

    /// The config of the use this store last served (a kept instance only serves the
    /// use it was made for: a guest may have cached its config).
    pub fn config(&self) -> &Arc<str> {
        &self.call.config
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

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// How `wasi:http` behaves for a plugin: the default header rules, and no outgoing
/// requests. `wasi:http/outgoing-handler` is linked (standard `wasi:http/proxy` components
/// import it) but every request sent through it fails with `HTTP-request-denied`: a
/// plugin reaches only the upstreams its config names, through `weir:plugin/outbound`
/// (see docs/security-model.md).
pub struct HttpHooks {
    plugin: Arc<str>,
    request_id: Arc<str>,
}

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        tracing::debug!(
            plugin = &*self.plugin,
            request_id = &*self.request_id,
            method = %request.method(),
            authority = request.uri().authority().map_or("", |a| a.as_str()),
            "plugin outgoing wasi:http request refused: plugins reach upstreams through `outbound` only"
        );
        Box::new(std::future::ready(Err(
            wasmtime_wasi_http::Error::HttpRequestDenied,
        )))
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
    /// Sends the request through the named upstream's pool (its load balancing, timeouts,
    /// retries and ejection apply) and buffers the response, up to
    /// [`MAX_OUTBOUND_BODY_BYTES`]. Only the upstreams the use's `config.upstreams` names
    /// are reachable.
    async fn send(
        &mut self,
        request: outbound::OutboundRequest,
    ) -> Result<super::bindings::Response, outbound::Error> {
        let (plugin, request_id) = (&*self.call.plugin, &*self.call.request_id);
        let Some(pool) = self.call.outbound.pool(&request.upstream) else {
            tracing::debug!(
                plugin,
                request_id,
                upstream = request.upstream,
                "plugin outbound request refused: upstream not in its config's `upstreams`"
            );
            return Err(outbound::Error::NotAllowed);
        };
        let invalid = |what: &str| {
            tracing::debug!(
                plugin,
                request_id,
                "plugin outbound request refused: {what}"
            );
            outbound::Error::NotAllowed
        };
        if !request.path_and_query.starts_with('/') {
            return Err(invalid("path must start with '/'"));
        }
        let method = http::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| invalid("invalid method"))?;
        let path_and_query = http::uri::PathAndQuery::try_from(request.path_and_query.as_str())
            .map_err(|_| invalid("invalid path"))?;
        let mut headers = super::convert::header_map(request.headers)
            .map_err(|_| invalid("invalid header field"))?;
        crate::headers::strip_hop_by_hop(&mut headers);
        headers.remove(http::header::CONTENT_LENGTH);
        if let Ok(id) = http::HeaderValue::from_str(request_id) {
            headers.insert(&crate::headers::X_REQUEST_ID, id);
        }
        let body = request.body.map(Bytes::from).unwrap_or_default();
        if body.len() as u64 > MAX_OUTBOUND_BODY_BYTES {
            return Err(outbound::Error::TooLarge);
        }
        if !body.is_empty() {
            headers.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(body.len()),
            );
        }
        let mut outgoing = http::Request::new(crate::body::Body::full(body));
        *outgoing.method_mut() = method;
        *outgoing.headers_mut() = headers;
        let mut report = crate::upstream::UpstreamReport::default();
        let forward = crate::upstream::Forward {
            path_and_query: path_and_query.as_str(),
            upgrade: false,
            forwarding: None,
        };
        let response = pool
            .forward(outgoing, forward, &mut report)
            .await
            .map_err(|error| {
                tracing::debug!(plugin, request_id, error = %error, "plugin outbound request failed");
                match error {
                    crate::error::GatewayError::UpstreamTimeout { .. } => outbound::Error::Timeout,
                    _ => outbound::Error::Unreachable,
                }
            })?;
        let (parts, body) = response.into_parts();
        let limit = MAX_OUTBOUND_BODY_BYTES;
        let body = crate::pipeline::buffer_body(&parts.headers, body, limit)
            .await
            .map_err(|error| match error {
                crate::error::GatewayError::BodyTooLarge { .. } => outbound::Error::TooLarge,
                _ => outbound::Error::Unreachable,
            })?;
        let mut headers = parts.headers;
        crate::headers::strip_hop_by_hop(&mut headers);
        Ok(super::bindings::Response {
            status: parts.status.as_u16(),
            headers: super::convert::headers(&headers),
            body: Some(body.to_vec()),
        })
    }
}

impl super::bindings::imports::weir::plugin::types::Host for Host {}

/// `connections`, for `websocket` plugins: the gateway's connection registry (which
/// reaches connections held by other gateways through the state backend).
impl connections::Host for Host {
    async fn send_to(
        &mut self,
        connection_id: String,
        message: connections::Message,
    ) -> Result<(), connections::Error> {
        let Some(registry) = self.connections.clone() else {
            return Err(connections::Error::Gone);
        };
        let message = match message {
            connections::Message::Text(text) => crate::websocket::api::Outgoing::Text(text),
            connections::Message::Binary(bytes) => {
                crate::websocket::api::Outgoing::Binary(Bytes::from(bytes))
            }
        };
        registry
            .send(&connection_id, message)
            .await
            .map_err(connection_error)
    }

    async fn close(
        &mut self,
        connection_id: String,
        code: u16,
        reason: String,
    ) -> Result<(), connections::Error> {
        let Some(registry) = self.connections.clone() else {
            return Err(connections::Error::Gone);
        };
        registry
            .close(&connection_id, code, &reason)
            .await
            .map_err(connection_error)
    }
}

fn connection_error(error: crate::websocket::api::ConnectionError) -> connections::Error {
    use crate::websocket::api::ConnectionError;
    match error {
        ConnectionError::Gone => connections::Error::Gone,
        ConnectionError::Unavailable => connections::Error::Unavailable,
        ConnectionError::TooLarge => connections::Error::TooLarge,
    }
}

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
