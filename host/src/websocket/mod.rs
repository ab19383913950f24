//! Proxied WebSocket routes: a route with an `upstream` passes WebSocket upgrades through.
//!
//! The handshake is an ordinary request: it runs the route's phases (throttle, authorize,
//! api_key, …) and can be refused by any of them before anything reaches the upstream.
//! In the `upstream` integration:
//!
//! 1. [`Handshake::take`] recognises it (HTTP/1.1 `GET` with `Connection: upgrade` and
//!    `Upgrade: websocket`) and takes the client's half of the upgrade from the request;
//!    the caller sets the two upgrade headers back after hop-by-hop removal;
//! 2. the upstream gets it on a new HTTP/1.1 connection of its own
//!    ([`crate::upstream::Forward::upgrade`]);
//! 3. [`Handshake::answer`] makes the client's answer from the upstream's: anything but
//!    `101` goes back as it is (a refused upgrade keeps its status and body); a `101` goes
//!    back as `101` with a [`Tunnel`] in its extensions;
//! 4. the transport ([`crate::server`]) takes the tunnel out of the response, sends the
//!    `101`, and once hyper has handed the connection over runs [`Tunnel::run`]: bytes are
//!    piped both ways (`tunnel.rs`), with the route's `websocket_idle_timeout` and
//!    `websocket_max_duration`, until either side closes.
//!
//! The tunnel keeps its client connection's place under `max_connections` and in the
//! shutdown drain; on shutdown it closes with status 1001.
//!
//! WebSocket over HTTP/2 (RFC 8441, extended `CONNECT`) is not supported: the gateway
//! does not offer it to HTTP/2 clients (they open WebSockets over HTTP/1.1, as browsers
//! do when a server does not announce it), and handshakes go upstream over HTTP/1.1.
//!
//! **Invariant:** after the `101` the gateway copies bytes, it does not re-frame; the only
//! frame it ever writes itself is a Close (1001, when it ends a tunnel), and only between
//! two frames.

pub mod api;
mod frame;
mod tunnel;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Method, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::body::Body;
use crate::config::WebSocketProxy;
use crate::error::GatewayError;
use crate::headers;
use crate::metrics::TunnelMetrics;

/// Whether `request` is a WebSocket handshake the gateway can pass through (what
/// [`Handshake::take`] takes), without taking it: for phases that must leave handshakes
/// alone (a cached response is no answer to one).
pub fn is_handshake<B>(request: &http::Request<B>) -> bool {
    request.version() == Version::HTTP_11
        && request.method() == Method::GET
        && request.extensions().get::<OnUpgrade>().is_some()
        && headers::wants_websocket(request.headers())
}

/// A client's WebSocket handshake, taken from its request in the `upstream` integration.
#[derive(Debug)]
pub struct Handshake {
    /// The client connection, once hyper has sent our `101`.
    client: OnUpgrade,
}

impl Handshake {
    /// The WebSocket handshake in `parts`, if it is one: HTTP/1.1, `GET`, `Connection:
    /// upgrade` and `Upgrade: websocket`, on a connection hyper can hand over. Takes the
    /// client's half of the upgrade out of the request's extensions.
    pub fn take(parts: &mut http::request::Parts) -> Option<Handshake> {
        // The connection's upgrade first: most requests have none, and it is cheaper to
        // look at than their fields.
        if parts.extensions.get::<OnUpgrade>().is_none()
            || parts.version != Version::HTTP_11
            || parts.method != Method::GET
            || !headers::wants_websocket(&parts.headers)
        {
            return None;
        }
        let client = parts.extensions.remove::<OnUpgrade>()?;
        Some(Handshake { client })
    }

    /// The client's answer, from the upstream's `response` to the handshake. Not `101`: the
    /// response as it is, hop-by-hop headers removed (a refused upgrade passes its status
    /// and body). `101`: a `101` with the upstream's end-to-end headers (`Sec-WebSocket-*`)
    /// and the upgrade headers, carrying the [`Tunnel`] for the transport to run. A `101`
    /// that is not a WebSocket upgrade is the upstream's fault (`502`).
    pub fn answer(
        self,
        mut response: Response<Body>,
        limits: WebSocketProxy,
        upstream: &str,
        request_id: &HeaderValue,
        target: Option<Arc<str>>,
        metrics: Option<Arc<TunnelMetrics>>,
    ) -> Result<Response<Body>, GatewayError> {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            headers::strip_hop_by_hop(response.headers_mut());
            return Ok(response);
        }
        let failed = |reason: &str| GatewayError::UpstreamProtocol {
            upstream: upstream.to_owned(),
            target: target.as_deref().unwrap_or("").to_owned(),
            reason: reason.to_owned(),
        };
        if !headers::wants_websocket(response.headers()) {
            return Err(failed(
                "answered a websocket handshake with 101 but without `Connection: upgrade` \
                 and `Upgrade: websocket`",
            ));
        }
        let Some(upstream_io) = response.extensions_mut().remove::<OnUpgrade>() else {
            return Err(failed(
                "switched protocols on a connection that cannot be upgraded",
            ));
        };
        let (mut parts, _empty) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::set_websocket_upgrade(&mut parts.headers);
        parts.headers.remove(CONTENT_LENGTH);
        parts.extensions.insert(Tunnel {
            client: self.client,
            upstream: upstream_io,
            limits,
            request_id: request_id.clone(),
            target,
            metrics,
        });
        Ok(Response::from_parts(parts, Body::Empty))
    }
}

/// What a `101` leaves for the transport to run once hyper has handed the connection
/// over: a proxied [`Tunnel`] or a WebSocket API's [`api::Session`].
#[derive(Debug)]
pub enum Switched {
    Tunnel(Tunnel),
    Api(api::Session),
}

impl Switched {
    /// Takes what `response` carries, if anything.
    pub fn take<B>(response: &mut Response<B>) -> Option<Switched> {
        let extensions = response.extensions_mut();
        if let Some(tunnel) = extensions.remove::<Tunnel>() {
            return Some(Switched::Tunnel(tunnel));
        }
        extensions.remove::<api::Session>().map(Switched::Api)
    }

    /// Runs it until the connection ends or `shutdown` completes. Each kind's future is
    /// boxed at its own size: inline, every tunnel's task would be as large as a
    /// WebSocket API session's, which is larger.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        match self {
            Switched::Tunnel(tunnel) => Box::pin(tunnel.run(shutdown)).await,
            Switched::Api(session) => Box::pin(session.run(shutdown)).await,
        }
    }
}

/// A switched connection, waiting for hyper to hand over both sides: what the transport
/// runs after sending the `101` that carried it.
#[derive(Clone)]
pub struct Tunnel {
    client: OnUpgrade,
    upstream: OnUpgrade,
    limits: WebSocketProxy,
    request_id: HeaderValue,
    /// The upstream target, for the log.
    target: Option<Arc<str>>,
    /// The route's tunnel metrics.
    metrics: Option<Arc<TunnelMetrics>>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("request_id", &self.request_id)
            .field("target", &self.target)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Tunnel {
    /// Pipes bytes between client and upstream until the tunnel ends: either side closes,
    /// the route's idle timeout or maximum duration passes, or `shutdown` completes (the
    /// gateway drains). Both connections are closed on return.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let request_id = self.request_id.to_str().unwrap_or("");
        let target = self.target.as_deref().unwrap_or("");
        let (client, upstream) = match tokio::try_join!(self.client, self.upstream) {
            Ok(both) => both,
            Err(error) => {
                tracing::debug!(request_id, target, %error, "websocket upgrade not completed");
                return;
            }
        };
        let started = Instant::now();
        if let Some(metrics) = &self.metrics {
            metrics.opened();
        }
        let outcome = tunnel::pipe(
            TokioIo::new(client),
            TokioIo::new(upstream),
            self.limits,
            shutdown,
        )
        .await;
        if let Some(metrics) = &self.metrics {
            metrics.closed(
                outcome.metric_reason(),
                outcome.from_client,
                outcome.from_upstream,
            );
        }
        tracing::debug!(
            request_id,
            target,
            end = outcome.end.as_str(),
            error = outcome.error.as_ref().map(tracing::field::display),
            from_client = outcome.from_client,
            from_upstream = outcome.from_upstream,
            duration = ?started.elapsed(),
            "websocket closed"
        );
    }
}
