//! WebSocket APIs: a route with `websocket = { ... }` makes the gateway itself the
//! WebSocket server, as API Gateway's WebSocket APIs do.
//!
//! The life of a connection:
//!
//! 1. **`$connect`**: the handshake is an ordinary request; the route's throttle,
//!    authorizer and API key run on it (and only on it). In the `integrate` phase
//!    [`accept`] checks it is a WebSocket handshake (`426` otherwise), gives it a fresh
//!    connection id, runs the `connect` handler (which may refuse it with a response) and
//!    answers `101` with a [`Session`] in the response's extensions.
//! 2. the transport ([`crate::server`]) runs [`Session::run`] once hyper has handed the
//!    connection over: tokio-tungstenite does the framing (with the route's `max_frame`
//!    and `max_message`); the connection is registered in [`Connections`]; each message
//!    gets its route key from the route's `selection` expression (`$default` for unknown
//!    keys and non-JSON or binary messages) and goes to that key's handler, one message
//!    at a time per connection; a handler's reply goes back to the client.
//! 3. **`$disconnect`**: whoever ended the connection, the `disconnect` handler is called
//!    once, best effort.
//!
//! A handler is a plugin of the `websocket` world (each event in a fresh instance, with
//! the `connections` interface) or an upstream (`"upstream:NAME"`): the message is POSTed
//! to the handshake's path with the connection id in `x-weir-connection-id` and the route
//! key in `x-weir-route-key`; a `2xx` answer with a body is the reply.
//!
//! Limits, each closing the connection with its close code and counted by reason
//! ([`registry::Counters`]): a frame over `max_frame` or a message over `max_message`
//! (1009), messages past `rate`/`burst` (1008), `idle_timeout` without a message either
//! way and `max_duration` after the handshake (1001), gateway shutdown (1001).

pub mod admin;
pub mod registry;

/// The read buffer of one WebSocket API connection.
pub const WS_READ_BUFFER_BYTES: usize = 2 * 1024;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

pub use self::registry::{CloseReason, ConnectionError, Connections, Described, Outgoing};
use crate::body::Body;
use crate::config::websocket::{ROUTE_KEY_CONNECT, ROUTE_KEY_DISCONNECT};
use crate::config::{WebSocketApi, WsHandler};
use crate::error::{GatewayError, Phase};
use crate::headers;
use crate::plugin::{self, CallInfo, ConnectOutcome, ConnectionInfo, Message, Outbound, Plugin};
use crate::router::Params;
use crate::state::State;
use crate::upstream::{Forward, UpstreamPool, UpstreamReport};

/// The header carrying the connection id to upstream handlers.
pub const CONNECTION_ID_HEADER: HeaderName = HeaderName::from_static("x-weir-connection-id");
/// The header carrying the route key to upstream handlers.
pub const ROUTE_KEY_HEADER: HeaderName = HeaderName::from_static("x-weir-route-key");
/// How long a peer gets to answer the gateway's Close before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Close code: going away (idle timeout, maximum duration, shutdown).
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: policy violation (message rate).
const CLOSE_POLICY: u16 = 1008;
/// Close code: message too big.
const CLOSE_TOO_BIG: u16 = 1009;

/// The plugins a WebSocket API's handlers name (indices into `config.plugins`).
pub fn plugins_of(api: &WebSocketApi) -> impl Iterator<Item = usize> + '_ {
    [&api.connect, &api.disconnect, &api.default]
        .into_iter()
        .flatten()
        .chain(api.routes.values())
        .filter_map(|handler| match handler {
            WsHandler::Plugin(index) => Some(*index),
            WsHandler::Upstream(_) => None,
        })
}

/// What [`accept`] needs of the gateway and the request's earlier phases.
pub struct Upgrade<'a> {
    pub api: &'a WebSocketApi,
    /// The route's name.
    pub route: &'a str,
    /// The canonical path.
    pub path: &'a str,
    pub params: &'a Params,
    pub client: IpAddr,
    pub request_id: &'a HeaderValue,
    pub plugins: &'a plugin::Plugins,
    pub upstreams: &'a Arc<[UpstreamPool]>,
    pub state: &'a Arc<State>,
    pub registry: &'a Arc<Connections>,
}

/// The `integrate` phase of a WebSocket API route: the handshake, `$connect`, and the
/// `101` carrying the [`Session`].
pub async fn accept(
    request: Request<Body>,
    upgrade: Upgrade<'_>,
) -> Result<Response<Body>, GatewayError> {
    let (mut parts, _body) = request.into_parts();
    let key = parts.headers.get(http::header::SEC_WEBSOCKET_KEY).cloned();
    let version_ok = parts
        .headers
        .get(http::header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    if parts.version != Version::HTTP_11
        || parts.method != Method::GET
        || !headers::wants_websocket(&parts.headers)
        || !version_ok
    {
        return Err(GatewayError::UpgradeRequired);
    }
    let (Some(key), Some(on_upgrade)) = (key, parts.extensions.remove::<OnUpgrade>()) else {
        return Err(GatewayError::UpgradeRequired);
    };
    let handlers = Handlers::resolve(&upgrade);
    let info = ConnectionInfo {
        connection_id: registry::new_id(),
        route: upgrade.route.to_owned(),
        path: upgrade.path.to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: plugin::convert::headers(&parts.headers),
        params: upgrade
            .params
            .iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
        client_addr: upgrade.client.to_string(),
        auth: plugin::convert::auth(&parts.extensions),
        connected_at_ms: 0,
    };
    if let Some(handler) = &upgrade.api.connect {
        let mut handshake_headers = parts.headers.clone();
        headers::strip_hop_by_hop(&mut handshake_headers);
        for name in [
            http::header::SEC_WEBSOCKET_KEY,
            http::header::SEC_WEBSOCKET_VERSION,
            http::header::SEC_WEBSOCKET_EXTENSIONS,
            http::header::SEC_WEBSOCKET_PROTOCOL,
        ] {
            handshake_headers.remove(name);
        }
        if let Some(refused) = handlers.connect(handler, &info, handshake_headers).await? {
            return Ok(refused);
        }
    }
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let accept_key = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let head = response.headers_mut();
    head.insert(UPGRADE, HeaderValue::from_static("websocket"));
    head.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept_key) {
        head.insert(SEC_WEBSOCKET_ACCEPT, value);
    }
    head.remove(CONTENT_LENGTH);
    response.extensions_mut().insert(Session {
        client: on_upgrade,
        handlers: Arc::new(handlers),
        info,
        principal: crate::identity::principal_in(&parts.extensions).map(|p| p.as_str().to_owned()),
    });
    Ok(response)
}

/// What a connection's events are handled with, resolved at its handshake (a reload
/// later changes nothing for it).
struct Handlers {
    api: WebSocketApi,
    plugins: HashMap<usize, Arc<Plugin>>,
    upstreams: Arc<[UpstreamPool]>,
    state: Arc<State>,
    registry: Arc<Connections>,
    request_id: Arc<str>,
    /// The handshake's canonical path: where upstream handlers get their `POST`s.
    path: String,
}

impl Handlers {
    fn resolve(upgrade: &Upgrade<'_>) -> Handlers {
        let plugins = plugins_of(upgrade.api)
            .filter_map(|index| Some((index, upgrade.plugins.get(index)?.clone())))
            .collect();
        Handlers {
            api: upgrade.api.clone(),
            plugins,
            upstreams: upgrade.upstreams.clone(),
            state: upgrade.state.clone(),
            registry: upgrade.registry.clone(),
            request_id: Arc::from(upgrade.request_id.to_str().unwrap_or("")),
            path: upgrade.path.to_owned(),
        }
    }

    fn call(&self, plugin: &Plugin) -> CallInfo {
        CallInfo {
            plugin: plugin.name().clone(),
            request_id: self.request_id.clone(),
            config: self.api.config.clone(),
            state: self.state.clone(),
            outbound: Outbound {
                pools: self.upstreams.clone(),
                allowed: self.api.upstreams.clone(),
            },
        }
    }

    fn plugin(&self, index: usize) -> Result<&Arc<Plugin>, plugin::PluginError> {
        self.plugins
            .get(&index)
            .ok_or_else(|| plugin::PluginError::Instantiate("plugin not loaded".to_owned()))
    }

    /// `$connect`: `Some(response)` when the handler refuses the connection.
    async fn connect(
        &self,
        handler: &WsHandler,
        info: &ConnectionInfo,
        handshake_headers: HeaderMap,
    ) -> Result<Option<Response<Body>>, GatewayError> {
        match handler {
            WsHandler::Plugin(index) => {
                let failed = |plugin: Arc<str>, error| GatewayError::Plugin {
                    phase: Phase::Integrate,
                    plugin,
                    error,
                };
                let plugin = self
                    .plugin(*index)
                    .map_err(|error| failed(Arc::from("?"), error))?;
                let outcome = plugin
                    .on_connect(self.call(plugin), self.registry.clone(), info.clone())
                    .await
                    .map_err(|error| failed(plugin.name().clone(), error))?;
                match outcome {
                    ConnectOutcome::Accept => Ok(None),
                    ConnectOutcome::Refuse(response) => plugin::convert::response(response)
                        .map(Some)
                        .map_err(|error| failed(plugin.name().clone(), error)),
                }
            }
            WsHandler::Upstream(index) => {
                let mut response = self
                    .post(
                        *index,
                        &info.connection_id,
                        ROUTE_KEY_CONNECT,
                        handshake_headers,
                        None,
                    )
                    .await?;
                if response.status().is_success() {
                    return Ok(None);
                }
                headers::strip_hop_by_hop(response.headers_mut());
                Ok(Some(response))
            }
        }
    }

    /// A message with route key `route_key`: the handler's reply, if any. Failures are
    /// logged; the connection goes on.
    async fn message(
        &self,
        handler: &WsHandler,
        info: &ConnectionInfo,
        route_key: &str,
        message: Message,
    ) -> Option<Outgoing> {
        match handler {
            WsHandler::Plugin(index) => {
                let plugin = self.plugin(*index).ok()?;
                match plugin
                    .on_message(
                        self.call(plugin),
                        self.registry.clone(),
                        info.clone(),
                        route_key,
                        message,
                    )
                    .await
                {
                    Ok(reply) => reply.map(|reply| match reply {
                        Message::Text(text) => Outgoing::Text(text),
                        Message::Binary(bytes) => Outgoing::Binary(Bytes::from(bytes)),
                    }),
                    Err(error) => {
                        tracing::warn!(
                            plugin = &**plugin.name(),
                            request_id = &*self.request_id,
                            route_key,
                            %error,
                            "websocket message handler failed"
                        );
                        None
                    }
                }
            }
            WsHandler::Upstream(index) => {
                let (content_type, body) = match message {
                    Message::Text(text) => {
                        let json = serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok();
                        let kind = if json {
                            "application/json"
                        } else {
                            "text/plain; charset=utf-8"
                        };
                        (kind, Bytes::from(text))
                    }
                    Message::Binary(bytes) => ("application/octet-stream", Bytes::from(bytes)),
                };
                let mut head = HeaderMap::new();
                head.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                let response = self
                    .post(*index, &info.connection_id, route_key, head, Some(body))
                    .await;
                let response = match response {
                    Ok(response) => response,
                    Err(error) => {
                        tracing::warn!(request_id = &*self.request_id, route_key, %error, "websocket upstream handler failed");
                        return None;
                    }
                };
                if !response.status().is_success() {
                    tracing::warn!(
                        request_id = &*self.request_id,
                        route_key,
                        status = response.status().as_u16(),
                        "websocket upstream handler answered an error"
                    );
                    return None;
                }
                let limit = usize::try_from(self.api.max_message).unwrap_or(usize::MAX);
                let body = http_body_util::Limited::new(response.into_body(), limit)
                    .collect()
                    .await
                    .ok()?
                    .to_bytes();
                if body.is_empty() {
                    return None;
                }
                Some(match String::from_utf8(body.to_vec()) {
                    Ok(text) => Outgoing::Text(text),
                    Err(_) => Outgoing::Binary(body),
                })
            }
        }
    }

    /// `$disconnect`, best effort.
    async fn disconnect(&self, info: &ConnectionInfo) {
        let Some(handler) = &self.api.disconnect else {
            return;
        };
        match handler {
            WsHandler::Plugin(index) => {
                let Ok(plugin) = self.plugin(*index) else {
                    return;
                };
                if let Err(error) = plugin
                    .on_disconnect(self.call(plugin), self.registry.clone(), info.clone())
                    .await
                {
                    tracing::warn!(plugin = &**plugin.name(), %error, "websocket disconnect handler failed");
                }
            }
            WsHandler::Upstream(index) => {
                if let Err(error) = self
                    .post(
                        *index,
                        &info.connection_id,
                        ROUTE_KEY_DISCONNECT,
                        HeaderMap::new(),
                        None,
                    )
                    .await
                {
                    tracing::warn!(%error, "websocket disconnect upstream failed");
                }
            }
        }
    }

    /// POSTs an event to upstream `index`, at the handshake's path.
    async fn post(
        &self,
        index: usize,
        connection_id: &str,
        route_key: &str,
        mut head: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Response<Body>, GatewayError> {
        let Some(upstream) = self.upstreams.get(index) else {
            return Err(GatewayError::NoRoute);
        };
        if let Ok(value) = HeaderValue::from_str(connection_id) {
            head.insert(CONNECTION_ID_HEADER, value);
        }
        if let Ok(value) = HeaderValue::from_str(route_key) {
            head.insert(ROUTE_KEY_HEADER, value);
        }
        if let Ok(value) = HeaderValue::from_str(&self.request_id) {
            head.insert(&headers::X_REQUEST_ID, value);
        }
        let body = match body {
            Some(bytes) => {
                head.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                Body::full(bytes)
            }
            None => {
                head.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
                Body::Empty
            }
        };
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        *request.headers_mut() = head;
        let mut report = UpstreamReport::default();
        upstream
            .forward(
                request,
                Forward {
                    path_and_query: &self.path,
                    upgrade: false,
                    forwarding: None,
                },
                &mut report,
            )
            .await
    }
}

/// An accepted WebSocket of a WebSocket API, waiting for hyper to hand the connection
/// over: what the transport runs after sending the `101` that carried it.
#[derive(Clone)]
pub struct Session {
    client: OnUpgrade,
    handlers: Arc<Handlers>,
    info: ConnectionInfo,
    principal: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("connection_id", &self.info.connection_id)
            .field("route", &self.info.route)
            .finish()
    }
}

/// Unix milliseconds now.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A token bucket of messages for one connection.
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Session {
    /// Serves the connection until it ends: the client closes, a limit closes it, the
    /// connections API closes it, or `shutdown` completes. Then `$disconnect`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Session {
            client,
            handlers,
            mut info,
            principal,
        } = self;
        let upgraded = match client.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "websocket upgrade not completed");
                return;
            }
        };
        let api = &handlers.api;
        let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        // tungstenite's default read buffer (128 KiB, zero-filled on the first read) would
        // be most of an idle connection's memory: 2 KiB keeps 10,000 idle connections
        // within a couple of hundred MiB (bench/RESULTS.md, WebSocket).
        let config = WebSocketConfig::default()
            .read_buffer_size(WS_READ_BUFFER_BYTES)
            .max_frame_size(Some(to_usize(api.max_frame)))
            .max_message_size(Some(to_usize(api.max_message)));
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        let started = Instant::now();
        info.connected_at_ms = unix_ms();
        let last_active = Arc::new(AtomicU64::new(info.connected_at_ms));
        let registry = handlers.registry.clone();
        let counters = registry.counters(&info.route);
        let mut commands = registry
            .open(
                Described {
                    connection_id: info.connection_id.clone(),
                    route: info.route.clone(),
                    path: info.path.clone(),
                    client: info.client_addr.clone(),
                    principal,
                    connected_at_ms: info.connected_at_ms,
                    last_active_ms: info.connected_at_ms,
                    instance: String::new(),
                    max_message: api.max_message,
                },
                last_active.clone(),
                &counters,
            )
            .await;
        let mut bucket = api.rate.map(|rate| Bucket {
            tokens: f64::from(rate.burst),
            last: started,
        });
        let deadline = started + api.max_duration;
        let mut idle_since = started;
        tokio::pin!(shutdown);
        // Why the connection ends, and the Close the gateway sends (after the connection
        // left the registry, so that the connections API says `gone` at once).
        let (reason, close_with) = loop {
            let idle_at = (idle_since + api.idle_timeout).min(deadline);
            tokio::select! {
                () = &mut shutdown => {
                    break (CloseReason::Shutdown, Some((CLOSE_GOING_AWAY, "going away".to_owned())));
                }
                () = tokio::time::sleep_until(idle_at) => {
                    if Instant::now() >= deadline {
                        break (CloseReason::MaxDuration, Some((CLOSE_GOING_AWAY, "maximum duration reached".to_owned())));
                    }
                    break (CloseReason::IdleTimeout, Some((CLOSE_GOING_AWAY, "idle timeout".to_owned())));
                }
                command = commands.recv() => match command {
                    Some(registry::Command::Send(message)) => {
                        idle_since = Instant::now();
                        last_active.store(unix_ms(), Ordering::Relaxed);
                        counters.messages_out.fetch_add(1, Ordering::Relaxed);
                        if ws.send(outgoing(message)).await.is_err() {
                            break (CloseReason::Error, None);
                        }
                    }
                    Some(registry::Command::Close { code, reason }) => {
                        break (CloseReason::Api, Some((code, reason)));
                    }
                    None => break (CloseReason::Error, None),
                },
                frame = ws.next() => {
                    let message = match frame {
                        None => break (CloseReason::Client, None),
                        Some(Ok(WsMessage::Close(_))) => {
                            // tungstenite answers the Close; flush it out.
                            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
                            break (CloseReason::Client, None);
                        }
                        Some(Ok(WsMessage::Text(text))) => Message::Text(text.as_str().to_owned()),
                        Some(Ok(WsMessage::Binary(bytes))) => Message::Binary(bytes.to_vec()),
                        Some(Ok(_)) => continue, // ping, pong (answered by tungstenite)
                        Some(Err(tungstenite::Error::Capacity(error))) => {
                            tracing::debug!(connection_id = &*info.connection_id, %error, "websocket message too large");
                            break (CloseReason::TooLarge, Some((CLOSE_TOO_BIG, "message too big".to_owned())));
                        }
                        Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                            break (CloseReason::Client, None);
                        }
                        Some(Err(error)) => {
                            tracing::debug!(connection_id = &*info.connection_id, %error, "websocket connection failed");
                            break (CloseReason::Error, None);
                        }
                    };
                    idle_since = Instant::now();
                    last_active.store(unix_ms(), Ordering::Relaxed);
                    counters.messages_in.fetch_add(1, Ordering::Relaxed);
                    if let (Some(bucket), Some(rate)) = (bucket.as_mut(), api.rate) {
                        let now = Instant::now();
                        let refill = now.duration_since(bucket.last).as_secs_f64() * rate.per_second;
                        bucket.tokens = (bucket.tokens + refill).min(f64::from(rate.burst));
                        bucket.last = now;
                        if bucket.tokens < 1.0 {
                            break (CloseReason::RateLimited, Some((CLOSE_POLICY, "message rate exceeded".to_owned())));
                        }
                        bucket.tokens -= 1.0;
                    }
                    let key = match &message {
                        Message::Text(text) => api.selection.route_key(text),
                        Message::Binary(_) => None,
                    };
                    let Some((route_key, handler)) = api.handler_for(key.as_deref()) else {
                        tracing::debug!(connection_id = &*info.connection_id, "websocket message with no handler dropped");
                        continue;
                    };
                    // Boxed, as `$disconnect` below: a handler call's state (a plugin call or
                    // an upstream request) is kilobytes, which inline would sit in every
                    // idle connection's task.
                    let reply = Box::pin(handlers.message(handler, &info, route_key, message));
                    if let Some(reply) = reply.await {
                        counters.messages_out.fetch_add(1, Ordering::Relaxed);
                        if ws.send(outgoing(reply)).await.is_err() {
                            break (CloseReason::Error, None);
                        }
                    }
                }
            }
        };
        registry
            .closed(&info.connection_id, reason, &counters)
            .await;
        if let Some((code, text)) = close_with {
            close(&mut ws, code, &text).await;
        }
        tracing::debug!(
            connection_id = &*info.connection_id,
            route = &*info.route,
            reason = reason.as_str(),
            duration = ?started.elapsed(),
            "websocket connection closed"
        );
        Box::pin(handlers.disconnect(&info)).await;
    }
}

fn outgoing(message: Outgoing) -> WsMessage {
    match message {
        Outgoing::Text(text) => WsMessage::text(text),
        Outgoing::Binary(bytes) => WsMessage::binary(bytes),
    }
}

/// Sends a Close frame and waits (up to [`CLOSE_TIMEOUT`]) for the client's Close or end
/// of stream.
async fn close<S>(ws: &mut WebSocketStream<S>, code: u16, reason: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: registry::close_reason(reason).into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if ws.close(Some(frame)).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_are_the_protocols() {
        assert_eq!(CLOSE_GOING_AWAY, u16::from(CloseCode::Away));
        assert_eq!(CLOSE_POLICY, u16::from(CloseCode::Policy));
        assert_eq!(CLOSE_TOO_BIG, u16::from(CloseCode::Size));
    }
}
