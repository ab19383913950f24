//! The request lifecycle, as one function per phase.
//!
//! [`Gateway::serve`] is the whole life of a request, in the order of
//! `docs/request-lifecycle.md`:
//!
//! ```text
//! accept → route → cors → throttle → authorize → api_key → cache_lookup
//!        → request_filters → integrate → response_filters → cache_store → log
//! ```
//!
//! Phases that are not built yet have no code here; they slot in between `route` and
//! `integrate` as named functions. `serve` takes a plain `http::Request` and returns a
//! `Response`, so it can be driven without sockets; the listener in [`crate::server`] is
//! only a transport. The `log` phase runs when the response has been sent: `serve` hands
//! back an [`Exchange`] (what the request was and what happened to it) that the transport
//! [`finish`](Exchange::finish)es with the number of bytes it sent.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use tokio_rustls::TlsAcceptor;

use crate::access_log::{self, AccessLog, Entry};
use crate::apikey::{self, ApiKeyName, ApiKeyTable, UnixClock};
use crate::authorize::{Authorizer, PluginAuthorizer, Subject, UsagePlanKey};
use crate::body::Body;
use crate::cache::{Head, Lookup, ResponseCache};
use crate::config::{AuthorizerKind, Config, Integration, Route};
use crate::cors::{self, CorsReply};
use crate::error::GatewayError;
use crate::filters::{FilterContext, Inbound};
use crate::headers::{self, X_REQUEST_ID};
use crate::identity::Principal;
use crate::jwt::{AuthError, JwtAuthorizer};
use crate::metrics::{Metrics, NO_ROUTE, RouteMetrics};
use crate::mock;
use crate::path::{self, CanonicalPath};
use crate::plugin::{self, Plugins};
use crate::router::{self, Params};
use crate::state::{CacheBounds, Decision, State, StateError};
use crate::throttle::{self, Throttles};
use crate::timer::{self, TimerSlot};
use crate::tls::{self, TlsError};
use crate::trace::TraceContext;
use crate::upstream::{Forward, UpstreamPool, UpstreamReport};
use crate::websocket;

/// Where a request came from (one per client connection).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the connection is TLS (sets `X-Forwarded-Proto`).
    pub tls: bool,
    /// The certificate the client presented (mutual TLS), read once per connection.
    pub client_cert: Option<Arc<crate::identity::ClientCert>>,
    /// `peer`'s address as a header value, made once per connection for
    /// `X-Forwarded-For`.
    peer_ip: HeaderValue,
    /// The connection's request timer, re-armed for each request (see [`crate::timer`]).
    request_timer: TimerSlot,
}

impl ConnInfo {
    pub fn new(
        peer: SocketAddr,
        tls: bool,
        client_cert: Option<Arc<crate::identity::ClientCert>>,
    ) -> ConnInfo {
        ConnInfo {
            peer,
            tls,
            client_cert,
            peer_ip: headers::ip_header_value(peer.ip()),
            request_timer: TimerSlot::default(),
        }
    }
}

/// A config could not be turned into a running gateway.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("server.tls: {0}")]
    ServerTls(#[source] TlsError),
    #[error("upstreams.{upstream}: {source}")]
    UpstreamTls {
        upstream: String,
        #[source]
        source: TlsError,
    },
    #[error("state: {0}")]
    State(#[source] StateError),
    #[error("authorizers.{authorizer}.ca: {source}")]
    Authorizer {
        authorizer: String,
        #[source]
        source: TlsError,
    },
    #[error("plugins.{plugin}: {source}")]
    Plugin {
        plugin: String,
        #[source]
        source: plugin::LoadError,
    },
    #[error("log.access: cannot open {path}: {source}")]
    AccessLog {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The running gateway: a validated config plus the live state built from it
/// (connection pools, TLS acceptor, metric handles, access log). Immutable; a reload
/// builds a new one and swaps it in whole.
pub struct Gateway {
    config: Arc<Config>,
    /// `[upstreams]`, same order as `config.upstreams` (shared with plugins' `outbound`).
    upstreams: Arc<[UpstreamPool]>,
    tls: Option<TlsAcceptor>,
    metrics: Arc<Metrics>,
    /// Per route, same order as `config.routes`.
    route_metrics: Vec<RouteMetrics>,
    unrouted: RouteMetrics,
    access_log: Arc<AccessLog>,
    /// Buckets, quotas, cache entries: kept across reloads that leave `[state]` and
    /// `[cache]` unchanged (see [`Gateway::keep_state_of`]).
    state: Arc<State>,
    throttles: Throttles,
    cache: ResponseCache,
    /// `[authorizers]`, same order as `config.access.authorizers`.
    authorizers: Vec<Authorizer>,
    /// `[[api_keys]]` and their usage plans.
    api_keys: ApiKeyTable,
    /// `[plugins]`, compiled and linked, same order as `config.plugins`.
    plugins: Plugins,
    /// The open connections of WebSocket API routes (kept across reloads).
    connections: Arc<websocket::api::Connections>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("source", &self.config.source)
            .field("routes", &self.config.routes.len())
            .field("upstreams", &self.upstreams)
            .finish()
    }
}

/// The result of the `route` phase.
#[derive(Debug)]
pub struct Routed<'g> {
    pub index: usize,
    pub route: &'g Route,
    pub path: CanonicalPath,
    pub params: Params,
    /// A CORS preflight for a route with CORS, routed as the request it announces.
    pub preflight: bool,
}

/// One request as the `log` phase sees it: filled in by the phases as they run, finished
/// by the transport once the response has been sent.
#[derive(Debug)]
pub struct Exchange {
    start: Instant,
    request_id: HeaderValue,
    trace: TraceContext,
    client: IpAddr,
    method: Method,
    /// The canonical path (raw when refused before canonicalisation); kept only when the
    /// access log is on.
    path: Option<String>,
    route: Option<usize>,
    status: u16,
    refused: Option<&'static str>,
    upstream: UpstreamReport,
    /// Set by the `cors` phase on routes with CORS: the headers every response gets.
    cors: Option<CorsReply>,
    /// Who the route's authorizer said the caller is.
    principal: Option<Principal>,
    /// The name of the API key the request presented.
    api_key: Option<Arc<str>>,
    /// `hit` or `miss`, when the route has a cache.
    cache: Option<&'static str>,
}

impl Exchange {
    pub fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }

    /// Puts the request id on `response` (`x-request-id`, replacing an upstream's).
    pub fn stamp<B>(&self, response: &mut Response<B>) {
        response
            .headers_mut()
            .insert(&X_REQUEST_ID, self.request_id.clone());
    }

    /// The `log` phase: metrics and the access log line, once `bytes_out` body bytes
    /// were sent.
    pub fn finish(&self, gateway: &Gateway, bytes_out: u64) {
        self.finish_at(gateway, bytes_out, Instant::now());
    }

    /// [`Exchange::finish`] for a response sent by `now` (a clock reading the caller
    /// shares).
    pub fn finish_at(&self, gateway: &Gateway, bytes_out: u64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.start);
        let metrics = self
            .route
            .and_then(|i| gateway.route_metrics.get(i))
            .unwrap_or(&gateway.unrouted);
        metrics.record_request(&self.method, self.status, elapsed);
        if let Some(upstream) = self.upstream.elapsed {
            metrics.record_upstream(upstream);
        }
        if !gateway.access_log.enabled() {
            return;
        }
        let route = self
            .route
            .and_then(|i| gateway.config.routes.get(i))
            .map_or(NO_ROUTE, |r| r.name.as_str());
        let millis = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        gateway.access_log.write(&Entry {
            time: access_log::now_rfc3339(),
            request_id: self.request_id.to_str().unwrap_or(""),
            trace_id: self.trace.trace_id_hex(),
            client: self.client,
            method: self.method.as_str(),
            path: self.path.as_deref().unwrap_or(""),
            route,
            status: self.status,
            latency_ms: millis(elapsed),
            upstream: self.upstream.target.as_deref(),
            upstream_ms: self.upstream.elapsed.map(millis),
            bytes_in: self.upstream.request_body.as_ref().map_or(0, |b| b.bytes()),
            bytes_out,
            principal: self.principal.as_ref().map(Principal::as_str),
            api_key: self.api_key.as_deref(),
            cache: self.cache,
            refused: self.refused,
        });
    }
}

impl Gateway {
    /// Builds the live state for `config` with metrics of its own and no access log
    /// (tests, tools). No connection is opened yet.
    pub fn new(config: Config) -> Result<Gateway, BuildError> {
        let metrics = Arc::new(Metrics::new());
        let access_log = Arc::new(
            AccessLog::open(access_log::AccessLogTarget::Off, &metrics).map_err(|source| {
                BuildError::AccessLog {
                    path: String::new(),
                    source,
                }
            })?,
        );
        Self::build(config, metrics, access_log)
    }

    /// Builds the live state for `config`, counting into `metrics` and logging into
    /// `access_log` (both outlive reloads).
    pub fn build(
        config: Config,
        metrics: Arc<Metrics>,
        access_log: Arc<AccessLog>,
    ) -> Result<Gateway, BuildError> {
        Self::build_after(config, metrics, access_log, None)
    }

    /// [`build`](Self::build) for a reload: what can be kept of `previous` is kept
    /// (plugins whose file and limits did not change are not compiled again).
    pub fn build_after(
        config: Config,
        metrics: Arc<Metrics>,
        access_log: Arc<AccessLog>,
        previous: Option<&Gateway>,
    ) -> Result<Gateway, BuildError> {
        let upstreams: Arc<[UpstreamPool]> = config
            .upstreams
            .iter()
            .map(|u| {
                UpstreamPool::new(u, &metrics).map_err(|source| BuildError::UpstreamTls {
                    upstream: u.name.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?
            .into();
        let tls = match &config.server.tls {
            Some(settings) => Some(TlsAcceptor::from(
                tls::server_config(settings).map_err(BuildError::ServerTls)?,
            )),
            None => None,
        };
        let route_metrics = config
            .routes
            .iter()
            .map(|r| metrics.route(&r.name))
            .collect();
        let limits = &config.traffic.cache;
        let bounds = CacheBounds {
            max_entries: limits.max_entries,
            max_bytes: limits.max_bytes,
        };
        let state = Arc::new(State::new(&config.traffic.state, bounds).map_err(BuildError::State)?);
        let throttles = Throttles::new(&config);
        let cache = ResponseCache::new(limits);
        let plugins = Plugins::build(&config, previous.map(|p| &p.plugins))
            .map_err(|(plugin, source)| BuildError::Plugin { plugin, source })?;
        let authorizers = config
            .access
            .authorizers
            .iter()
            .map(|a| match &a.kind {
                AuthorizerKind::Jwt(jwt) => JwtAuthorizer::new(&a.name, jwt)
                    .map(Authorizer::Jwt)
                    .map_err(|source| BuildError::Authorizer {
                        authorizer: a.name.clone(),
                        source,
                    }),
                AuthorizerKind::Plugin(settings) => {
                    // Validation resolved the name; `Plugins::build` loaded every plugin.
                    let plugin = plugins
                        .get(settings.plugin.plugin)
                        .cloned()
                        .ok_or_else(|| BuildError::Plugin {
                            plugin: a.name.clone(),
                            source: plugin::LoadError::Runtime("plugin not loaded".to_owned()),
                        })?;
                    let outbound = plugin::Outbound {
                        pools: upstreams.clone(),
                        allowed: settings.plugin.upstreams.clone(),
                    };
                    Ok(Authorizer::Plugin(PluginAuthorizer::new(
                        &a.name, settings, plugin, outbound,
                    )))
                }
            })
            .collect::<Result<_, _>>()?;
        let api_keys = ApiKeyTable::new(&config.access, apikey::system_clock());
        let connections = match previous {
            Some(previous) => previous.connections.clone(),
            None => websocket::api::Connections::new(state.clone()),
        };
        Ok(Gateway {
            connections,
            plugins,
            state,
            throttles,
            cache,
            authorizers,
            api_keys,
            unrouted: metrics.route(NO_ROUTE),
            route_metrics,
            upstreams,
            tls,
            metrics,
            access_log,
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Fetches the key sets of authorizers whose `jwks` is a URL (at start and after a
    /// reload, before serving). A failed fetch is logged; requests retry it.
    pub async fn load_keys(&self) {
        futures_util::future::join_all(self.authorizers.iter().filter_map(|a| match a {
            Authorizer::Jwt(jwt) => Some(jwt.load()),
            Authorizer::Plugin(_) => None,
        }))
        .await;
    }

    /// Replaces the clock usage-plan quotas are counted on (tests crossing a period).
    pub fn set_quota_clock(&mut self, clock: UnixClock) {
        self.api_keys.set_clock(clock);
    }

    /// The state backend (buckets, quotas, cache entries, plugin data).
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Takes over `previous`'s state when `[state]` and `[cache]` did not change, so that
    /// a reload keeps limits, quotas and cached entries (and the Redis connection).
    pub fn keep_state_of(mut self, previous: &Gateway) -> Gateway {
        if self.config.traffic == previous.config.traffic {
            self.state = previous.state.clone();
        }
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The open connections of WebSocket API routes (the connections API).
    pub fn connections(&self) -> &Arc<websocket::api::Connections> {
        &self.connections
    }

    /// `[plugins]`, compiled and linked, in `config.plugins` order.
    pub fn plugins(&self) -> &Plugins {
        &self.plugins
    }

    /// `[authorizers]`, in `config.access.authorizers` order.
    pub fn authorizers(&self) -> &[Authorizer] {
        &self.authorizers
    }

    pub fn access_log(&self) -> &Arc<AccessLog> {
        &self.access_log
    }

    /// The TLS acceptor of the public TLS listener, when configured.
    pub fn tls_acceptor(&self) -> Option<&TlsAcceptor> {
        self.tls.as_ref()
    }

    /// Serves one request and runs the `log` phase at once (for callers that do not
    /// stream the response themselves). Never fails: errors become gateway responses.
    pub async fn handle(&self, request: Request<Body>, conn: &ConnInfo) -> Response<Body> {
        let (mut response, exchange) = self.serve(request, conn).await;
        exchange.stamp(&mut response);
        let bytes = http_body::Body::size_hint(response.body())
            .exact()
            .unwrap_or(0);
        exchange.finish(self, bytes);
        response
    }

    /// Serves one request: every phase up to the response head. The caller sends the
    /// response with its `x-request-id` ([`Exchange::stamp`], or written with the head
    /// as weir's HTTP/1.1 server does, which spares the header map a hashed insert) and
    /// then [`Exchange::finish`]es it.
    pub async fn serve(
        &self,
        request: Request<Body>,
        conn: &ConnInfo,
    ) -> (Response<Body>, Box<Exchange>) {
        let server = &self.config.server;
        // Boxed: it goes from here to the connection's response body, which keeps it until
        // the response is sent, 320 bytes copied at every move.
        let mut exchange = Box::new(Exchange {
            start: Instant::now(),
            request_id: headers::request_id(request.headers()),
            trace: TraceContext::from_headers(request.headers(), &mut || fastrand::u128(..)),
            client: headers::client_ip(request.headers(), conn.peer.ip(), &server.trusted_proxies),
            method: request.method().clone(),
            path: self
                .access_log
                .enabled()
                .then(|| request.uri().path().to_owned()),
            route: None,
            status: 0,
            refused: None,
            upstream: UpstreamReport::default(),
            principal: None,
            api_key: None,
            cache: None,
            cors: None,
        });
        let timeout = server.request_timeout;
        let mut timer = conn
            .request_timer
            .take(tokio::time::Instant::from_std(exchange.start) + timeout);
        // Pinned in place and timed through a reference: the phases' future is kilobytes,
        // and moving it into the timeout's future copied it once more per request.
        let outcome = {
            let process = std::pin::pin!(self.process(request, conn, &mut exchange));
            timer::within(&mut timer, process).await
        };
        conn.request_timer.put(timer);
        let mut response = match outcome {
            Some(Ok(response)) => response,
            Some(Err(error)) => self.rescue(error, &mut exchange),
            None => self.rescue(GatewayError::RequestTimeout(timeout), &mut exchange),
        };
        if let Some(cors) = &exchange.cors {
            cors.apply(response.headers_mut());
        }
        exchange.status = response.status().as_u16();
        (response, exchange)
    }

    /// The phases, in order, with early returns.
    async fn process(
        &self,
        mut request: Request<Body>,
        conn: &ConnInfo,
        exchange: &mut Exchange,
    ) -> Result<Response<Body>, GatewayError> {
        self.accept(&request)?;
        if let Some(cert) = &conn.client_cert {
            request.extensions_mut().insert(cert.clone());
        }
        let routed = self.route(&request)?;
        exchange.route = Some(routed.index);
        if exchange.path.is_some() {
            exchange.path = Some(routed.path.as_str().to_owned());
        }
        request
            .headers_mut()
            .insert(&X_REQUEST_ID, exchange.request_id.clone());
        if let Some(preflight) = self.cors(&request, &routed, exchange) {
            return Ok(preflight);
        }
        let rate_limit = self
            .throttle(request.headers(), &routed, exchange.client)
            .await?;
        self.authorize(&mut request, &routed, exchange).await?;
        exchange.principal = request.extensions().get::<Principal>().cloned();
        let rate_limit = match self.api_key(&mut request, &routed).await? {
            Some(usage) => throttle::tightest(rate_limit, usage),
            None => rate_limit,
        };
        exchange.api_key = request
            .extensions()
            .get::<ApiKeyName>()
            .map(|key| key.0.clone());
        // A stored response is no answer to a WebSocket handshake.
        let lookup = if routed.route.traffic.cache.is_some() && !websocket::is_handshake(&request) {
            self.cache_lookup(Head::of(&request), &routed).await
        } else {
            Lookup::Off
        };
        let fill = match lookup {
            Lookup::Hit(response) => {
                exchange.cache = Some("hit");
                return Ok(rate_limited(response, rate_limit));
            }
            Lookup::Off => None,
            Lookup::Miss(fill) => {
                exchange.cache = Some("miss");
                Some(fill)
            }
        };
        // A route without filters goes straight to `integrate`, not through `filtered`:
        // one future fewer to copy the request into and to walk down at every poll.
        let response = if routed.route.filters.is_empty() {
            let path = routed.path.as_str();
            self.integrate(request, &routed, path, conn, exchange)
                .await?
        } else {
            self.filtered(request, &routed, conn, exchange).await?
        };
        let response = match fill {
            Some(fill) => self.cache.store(&self.state, response, fill).await?,
            None => response,
        };
        Ok(rate_limited(response, rate_limit))
    }

    /// `cors`: a preflight for a route with CORS is answered here; an actual request
    /// leaves the CORS headers its response will get (see [`crate::cors`]).
    fn cors(
        &self,
        request: &Request<Body>,
        routed: &Routed<'_>,
        exchange: &mut Exchange,
    ) -> Option<Response<Body>> {
        let policy = routed.route.access.cors.as_ref()?;
        if routed.preflight {
            return Some(policy.preflight(request));
        }
        exchange.cors = Some(CorsReply::new(policy, request.headers()));
        None
    }

    /// `authorize`: the route's client address rules, then its authorizer, which puts
    /// the caller's identity into the request's extensions.
    async fn authorize(
        &self,
        request: &mut Request<Body>,
        routed: &Routed<'_>,
        exchange: &Exchange,
    ) -> Result<(), GatewayError> {
        let access = &routed.route.access;
        if let Some(rules) = &access.addresses
            && !rules.admits(exchange.client)
        {
            return Err(GatewayError::AddressDenied(exchange.client));
        }
        let Some(index) = access.authorizer else {
            return Ok(());
        };
        let authorizer = match self.authorizers.get(index) {
            Some(Authorizer::Jwt(jwt)) => jwt,
            Some(Authorizer::Plugin(authorizer)) => {
                let subject = Subject {
                    path: routed.path.as_str(),
                    params: &routed.params,
                    client: exchange.client,
                    request_id: &exchange.request_id,
                    state: &self.state,
                };
                return Box::pin(authorizer.authorize(request, subject)).await;
            }
            None => return Err(GatewayError::AuthorizerUnavailable(Arc::from("?"))),
        };
        Box::pin(authorizer.authorize(request, &access.scopes))
            .await
            .map_err(|error| match error {
                AuthError::InsufficientScope => GatewayError::InsufficientScope,
                AuthError::Unavailable => {
                    GatewayError::AuthorizerUnavailable(Arc::from(authorizer.name()))
                }
                other => GatewayError::Unauthenticated(other),
            })
    }

    /// `api_key`: on routes with `api_key = true`, the key must be known and within its
    /// usage plan. Its decision joins the throttle's for the `RateLimit-*` headers.
    async fn api_key(
        &self,
        request: &mut Request<Body>,
        routed: &Routed<'_>,
    ) -> Result<Option<Decision>, GatewayError> {
        if !routed.route.access.api_key {
            return Ok(None);
        }
        // A plugin authorizer may have chosen the key (its usage-plan key).
        let chosen = request
            .extensions()
            .get::<UsagePlanKey>()
            .map(|key| key.0.clone());
        let (name, decision) = self
            .api_keys
            .check(
                &self.state,
                routed.index,
                routed.route,
                request.headers(),
                chosen.as_deref(),
            )
            .await?;
        // The backend needs to know who called, not the caller's secret.
        request.headers_mut().remove(self.api_keys.header());
        request.extensions_mut().insert(name);
        Ok(decision)
    }

    /// `throttle`: the server's and the route's token buckets, cheapest first. The tightest
    /// decision comes back for the `RateLimit-*` headers of the response.
    /// (Request parts are passed rather than `&Request<Body>`: a body is not `Sync`, and
    /// a borrowed request held across an `.await` would make the future not `Send`.)
    async fn throttle(
        &self,
        headers: &HeaderMap,
        routed: &Routed<'_>,
        client: IpAddr,
    ) -> Result<Option<Decision>, GatewayError> {
        self.throttles
            .check(&self.state, routed.index, routed.route, headers, client)
            .await
    }

    /// `cache_lookup`: a stored response for this request, or the ticket to store one
    /// (`cache_store` is [`ResponseCache::store`], run on the integration's response).
    async fn cache_lookup(&self, request: Head<'_>, routed: &Routed<'_>) -> Lookup {
        self.cache
            .lookup(&self.state, routed.route, request, routed.path.as_str())
            .await
    }

    /// Turns an error into the client's answer, and logs and counts it.
    fn rescue(&self, error: GatewayError, exchange: &mut Exchange) -> Response<Body> {
        let id = exchange.request_id.to_str().unwrap_or("");
        let (phase, status, reason) = (error.phase().as_str(), error.status(), error.reason());
        let method = &exchange.method;
        match error.side() {
            crate::error::Side::Downstream => {
                tracing::debug!(request_id = id, %method, phase, status = status.as_u16(), error = %error, "request refused");
            }
            _ => {
                tracing::warn!(request_id = id, %method, phase, status = status.as_u16(), error = %error, "request failed");
            }
        }
        exchange.refused = Some(reason);
        exchange
            .route
            .and_then(|i| self.route_metrics.get(i))
            .unwrap_or(&self.unrouted)
            .record_refused(phase, status.as_u16(), reason);
        error.into_response(id)
    }

    /// `accept`: the request head is within the configured limits.
    fn accept(&self, request: &Request<Body>) -> Result<(), GatewayError> {
        let server = &self.config.server;
        let count = request.headers().len();
        if count > server.max_headers {
            return Err(GatewayError::TooManyHeaders {
                count,
                limit: server.max_headers,
            });
        }
        let bytes: usize = request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>()
            + request
                .uri()
                .path_and_query()
                .map_or(0, |p| p.as_str().len());
        if bytes > server.max_header_bytes {
            return Err(GatewayError::HeadTooLarge {
                bytes,
                limit: server.max_header_bytes,
            });
        }
        Ok(())
    }

    /// `route`: canonical path, then host + method + path → route.
    pub fn route(&self, request: &Request<Body>) -> Result<Routed<'_>, GatewayError> {
        let path = path::canonicalize(request.uri().path(), &self.config.server.paths)?;
        let host = request_host(request)?;
        // A CORS preflight is routed as the request it announces; when that route has
        // CORS, the `cors` phase answers it. Otherwise it is a plain `OPTIONS` request.
        if let Some(method) = cors::preflight_method(request)
            && let router::Lookup::Found {
                route: index,
                params,
            } = self.config.router.lookup(host.as_deref(), &method, &path)
            && let Some(route) = self.config.routes.get(index)
            && route.access.cors.is_some()
        {
            return Ok(Routed {
                index,
                route,
                path,
                params,
                preflight: true,
            });
        }
        match self
            .config
            .router
            .lookup(host.as_deref(), request.method(), &path)
        {
            router::Lookup::Found {
                route: index,
                params,
            } => match self.config.routes.get(index) {
                Some(route) => Ok(Routed {
                    index,
                    route,
                    path,
                    params,
                    preflight: false,
                }),
                None => Err(GatewayError::NoRoute),
            },
            router::Lookup::MethodNotAllowed { allow } => Err(GatewayError::MethodNotAllowed {
                allow: HeaderValue::from_str(&allow)
                    .unwrap_or_else(|_| HeaderValue::from_static("")),
            }),
            router::Lookup::NotFound => Err(GatewayError::NoRoute),
        }
    }

    /// `request_filters` → `integrate` → `response_filters`, for a route with filters
    /// (`process` calls `integrate` itself for one without). The filter phases are boxed,
    /// so that routes without them do not carry their state in every request's future.
    async fn filtered(
        &self,
        request: Request<Body>,
        routed: &Routed<'_>,
        conn: &ConnInfo,
        exchange: &mut Exchange,
    ) -> Result<Response<Body>, GatewayError> {
        let path = routed.path.as_str();
        Box::pin(async move {
            // `integrate` needs the exchange mutably; the filters read a copy of the id.
            let request_id = exchange.request_id.clone();
            let context = FilterContext {
                plugins: &self.plugins,
                state: &self.state,
                upstreams: &self.upstreams,
                request_id: &request_id,
                client: exchange.client,
                params: &routed.params,
                max_body: routed.route.max_body.unwrap_or(self.config.server.max_body),
                paths: &self.config.server.paths,
            };
            let filters = &routed.route.filters;
            match context
                .on_request(filters, request, Cow::Borrowed(path))
                .await?
            {
                Inbound::Respond { response, pending } => {
                    context.on_response(pending, response).await
                }
                Inbound::Continue {
                    request,
                    path,
                    pending,
                } => {
                    let response = self
                        .integrate(request, routed, &path, conn, exchange)
                        .await?;
                    context.on_response(pending, response).await
                }
            }
        })
        .await
    }

    /// `integrate`: the route's upstream, mock or handler produces the response. `path`
    /// is the canonical path, as the request filters left it.
    async fn integrate(
        &self,
        request: Request<Body>,
        routed: &Routed<'_>,
        path: &str,
        conn: &ConnInfo,
        exchange: &mut Exchange,
    ) -> Result<Response<Body>, GatewayError> {
        match &routed.route.integration {
            Integration::Mock(mock) => Ok(mock::respond(mock)),
            Integration::Upstream(index) => {
                let Some(upstream) = self.upstreams.get(*index) else {
                    return Err(GatewayError::NoRoute);
                };
                self.proxy(request, routed, path, conn, upstream, exchange)
                    .await
            }
            // Boxed, as the WebSocket API below and the authorizers' calls in `authorize`:
            // each is kilobytes of state, which unboxed would be in every request's
            // future, proxied ones included (`serve`'s future: 8.1 KB → 5.6 KB), held for
            // the request's whole life and copied when it moves. One allocation per
            // request that takes them is small beside the plugin call or token check.
            Integration::Handler(use_) => {
                Box::pin(self.handler(request, routed, path, use_, conn, exchange)).await
            }
            // The gateway is the WebSocket server; see `crate::websocket::api`.
            Integration::WebSocket(api) => {
                let upgrade = websocket::api::Upgrade {
                    api,
                    route: &routed.route.name,
                    path,
                    params: &routed.params,
                    client: exchange.client,
                    request_id: &exchange.request_id,
                    plugins: &self.plugins,
                    upstreams: &self.upstreams,
                    state: &self.state,
                    registry: &self.connections,
                };
                Box::pin(websocket::api::accept(request, upgrade)).await
            }
        }
    }

    /// The `handler` integration: a Wasm plugin answers, in a fresh instance. The body is
    /// buffered for it only when its use says `body = true`. A standard `wasi:http/proxy`
    /// component gets the request as an upstream would (hop-by-hop fields dropped,
    /// `X-Forwarded-*` and `traceparent` set), its body streamed up to `max_body`, and
    /// streams its response back.
    async fn handler(
        &self,
        request: Request<Body>,
        routed: &Routed<'_>,
        path: &str,
        use_: &crate::config::PluginUse,
        conn: &ConnInfo,
        exchange: &Exchange,
    ) -> Result<Response<Body>, GatewayError> {
        let Some(plugin) = self.plugins.get(use_.plugin) else {
            return Err(GatewayError::NoRoute);
        };
        let limit = use_
            .max_body
            .or(routed.route.max_body)
            .unwrap_or(self.config.server.max_body);
        let call = plugin::CallInfo {
            plugin: plugin.name().clone(),
            request_id: Arc::from(exchange.request_id.to_str().unwrap_or("")),
            config: use_.config.clone(),
            state: self.state.clone(),
            outbound: plugin::Outbound {
                pools: self.upstreams.clone(),
                allowed: use_.upstreams.clone(),
            },
        };
        let failed = |error| GatewayError::Plugin {
            phase: crate::error::Phase::Integrate,
            plugin: plugin.name().clone(),
            error,
        };
        let (mut parts, mut body) = request.into_parts();
        if plugin.speaks_wasi_http() {
            limit_body(&parts.headers, &mut body, limit)?;
            let faults = body.watch_faults();
            headers::strip_hop_by_hop(&mut parts.headers);
            self.forwarding(&parts, conn, exchange.trace)
                .apply(&mut parts.headers);
            let request = Request::from_parts(parts, body);
            let response = plugin.handle_wasi_http(call, request, path, conn.tls).await;
            // A body past `max_body` is the client's fault, whatever the guest made of it.
            let too_large = faults
                .as_ref()
                .and_then(|faults| faults.fault())
                .is_some_and(|fault| matches!(fault, crate::body::BodyFault::TooLarge(_)));
            if too_large {
                return Err(GatewayError::BodyTooLarge { limit });
            }
            return response.map_err(failed);
        }
        let body = if use_.body {
            Some(buffer_body(&parts.headers, body, limit).await?)
        } else {
            None
        };
        let wit_request =
            plugin::convert::request(&parts, path, &routed.params, exchange.client, body);
        let response = plugin.handle(call, wit_request).await.map_err(failed)?;
        plugin::convert::response(response)
            .inspect_err(|error| plugin.stats().output_refused(error))
            .map_err(failed)
    }

    /// The upstream integration: headers for the upstream, body limit, forward, and the
    /// response's headers cleaned on the way back.
    async fn proxy(
        &self,
        request: Request<Body>,
        routed: &Routed<'_>,
        path: &str,
        conn: &ConnInfo,
        upstream: &UpstreamPool,
        exchange: &mut Exchange,
    ) -> Result<Response<Body>, GatewayError> {
        let limit = routed.route.max_body.unwrap_or(self.config.server.max_body);
        let (mut parts, mut body) = request.into_parts();
        limit_body(&parts.headers, &mut body, limit)?;

        // A WebSocket handshake keeps its upgrade headers; see `crate::websocket`.
        let handshake = crate::websocket::Handshake::take(&mut parts);
        headers::strip_hop_by_hop(&mut parts.headers);
        if handshake.is_some() {
            headers::set_websocket_upgrade(&mut parts.headers);
        }
        // Set by `upstream` as the connection it gets speaks: written into an HTTP/1.1
        // request head, else put into the map.
        let forwarding = self.forwarding(&parts, conn, exchange.trace);

        // The request's own path and query when the path was canonical already (nearly
        // always): no string is built, and `upstream` reuses the parsed `PathAndQuery`.
        let original = parts
            .uri
            .path_and_query()
            .filter(|pq| pq.path() == path)
            .cloned();
        let built;
        let path_and_query = match &original {
            Some(original) => original.as_str(),
            None => {
                built = match parts.uri.query() {
                    Some(query) => format!("{path}?{query}"),
                    None => path.to_owned(),
                };
                built.as_str()
            }
        };
        let request = Request::from_parts(parts, body);
        let mut response = upstream
            .forward(
                request,
                Forward {
                    path_and_query,
                    upgrade: handshake.is_some(),
                    forwarding: Some(&forwarding),
                },
                &mut exchange.upstream,
            )
            .await?;
        if let Some(handshake) = handshake {
            let limits = routed.route.websocket;
            let target = exchange.upstream.target.clone();
            let metrics = exchange
                .route
                .and_then(|i| self.route_metrics.get(i))
                .map(RouteMetrics::tunnel);
            return handshake.answer(
                response,
                limits,
                upstream.name(),
                exchange.request_id(),
                target,
                metrics,
            );
        }
        headers::strip_hop_by_hop(response.headers_mut());
        Ok(response)
    }

    /// What the next hop is told of a request (hop-by-hop fields already gone), for the
    /// host it asked for ([`headers::requested_host`]).
    fn forwarding(
        &self,
        parts: &http::request::Parts,
        conn: &ConnInfo,
        trace: TraceContext,
    ) -> headers::Forwarding {
        headers::Forwarding::new(
            &parts.headers,
            conn.peer.ip(),
            &conn.peer_ip,
            &self.config.server.trusted_proxies,
            if conn.tls { "https" } else { "http" },
            headers::requested_host(parts),
            trace,
        )
    }
}

/// `response` with the rate-limit headers of the tightest limit the request was counted
/// against, if any.
fn rate_limited(
    mut response: Response<Body>,
    rate_limit: Option<crate::state::Decision>,
) -> Response<Body> {
    if let Some(decision) = rate_limit {
        throttle::rate_limit_headers(response.headers_mut(), &decision);
    }
    response
}

/// Reads a whole request body of at most `limit` bytes (`413` past it, before reading
/// when `Content-Length` says so).
pub(crate) async fn buffer_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: u64,
) -> Result<bytes::Bytes, GatewayError> {
    limit_body(headers, &mut body, limit)?;
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .map_err(|error| {
            if crate::body::is_body_too_large(&*error) {
                GatewayError::BodyTooLarge { limit }
            } else {
                GatewayError::ClientBody(error.to_string())
            }
        })?
        .to_bytes();
    if bytes.len() as u64 > limit {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    Ok(bytes)
}

/// Enforces `max_body` on a request body: a declared `Content-Length` over `limit` is
/// refused at once (`413` before anything is read or sent); otherwise the body is capped
/// as it streams, so chunked bodies cannot slip past.
fn limit_body(headers: &HeaderMap, body: &mut Body, limit: u64) -> Result<(), GatewayError> {
    let declared = headers::find(headers, &CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    body.set_limit(limit);
    Ok(())
}

/// The request's host, lower-case and without port: the URI authority (HTTP/2,
/// absolute-form) or the `Host` header. `Ok(None)` when there is none (HTTP/1.0).
fn request_host(request: &Request<Body>) -> Result<Option<Cow<'_, str>>, GatewayError> {
    let raw = match request.uri().host() {
        Some(host) => host,
        None => match headers::find(request.headers(), &HOST) {
            Some(value) => {
                let text = value.to_str().map_err(|_| GatewayError::BadHost)?;
                // Nearly every `Host` is a name or IPv4 address and maybe a port: split off
                // without parsing it into an `Authority` (which copies it, ~400
                // instructions per request); anything else goes through that parser.
                if let Some(host) = plain_host(text) {
                    return Ok(Some(lower_case(host)));
                }
                let authority =
                    http::uri::Authority::try_from(text).map_err(|_| GatewayError::BadHost)?;
                // The host is the start of `text` (an authority has no userinfo in `Host`
                // that parsed; `host()` is a prefix of it, brackets kept for IPv6).
                let host = authority.host();
                let host = text.get(..host.len()).filter(|h| *h == host);
                return Ok(Some(match host {
                    Some(host) => lower_case(host),
                    None => Cow::Owned(authority.host().to_ascii_lowercase()),
                }));
            }
            None => return Ok(None),
        },
    };
    Ok(Some(lower_case(raw)))
}

/// The host of a `Host` value made only of letters, digits, dots and hyphens, with an
/// optional port (decimal, at most 65535); `None` for anything else (IPv6 literals,
/// percent-encoding, userinfo, bad ports), which the caller parses in full.
fn plain_host(text: &str) -> Option<&str> {
    let (host, port) = match text.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok());
    plain.then_some(host)
}

/// `text` in lower case, borrowed when it already is (nearly always: no allocation).
fn lower_case(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    //! The pipeline driven without sockets: a plain `http::Request` in, a `Response` out.

    use std::path::Path;

    use http::{Method, StatusCode};
    use http_body_util::BodyExt;

    use super::*;

    const ROUTES: &str = r#"
[server]
listen = "127.0.0.1:0"

[[routes]]
path = "/users/{id}"
methods = ["GET"]
mock = { status = 200, body = "user", headers = { x-route = "user" } }

[[routes]]
path = "/users/me"
methods = ["PUT"]
mock = { status = 204 }
"#;

    fn gateway() -> Gateway {
        let config = crate::config::parse(ROUTES, Path::new("test.toml"), &|_| None)
            .expect("test config is valid");
        Gateway::new(config).expect("gateway")
    }

    fn conn() -> ConnInfo {
        ConnInfo::new("127.0.0.1:40000".parse().expect("addr"), false, None)
    }

    async fn send(
        gateway: &Gateway,
        method: Method,
        uri: &str,
    ) -> (StatusCode, http::HeaderMap, String) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST, "localhost")
            .body(Body::Empty)
            .expect("request");
        let response = gateway.handle(request, &conn()).await;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    #[test]
    fn plain_hosts_split_as_the_authority_parser_does() {
        for text in [
            "example.com",
            "Example.COM:8080",
            "a-b.c:1",
            "10.0.0.1:443",
            "x:0",
        ] {
            let parsed = http::uri::Authority::try_from(text).expect(text);
            assert_eq!(plain_host(text), Some(parsed.host()), "{text}");
        }
        for text in [
            "[::1]:80",
            "user@host",
            "",
            ":80",
            "host:",
            "host:abc",
            "ho st",
            "h:65536",
            "a%41",
        ] {
            assert_eq!(plain_host(text), None, "{text}");
        }
    }

    #[tokio::test]
    async fn mock_route_answers() {
        let (status, headers, body) = send(&gateway(), Method::GET, "/users/7").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-route"], "user");
        assert_eq!(body, "user");
        assert!(headers.contains_key(&X_REQUEST_ID));
    }

    #[tokio::test]
    async fn every_gateway_error_is_json_with_the_request_id() {
        let gateway = gateway();
        for (method, uri, expected) in [
            (Method::GET, "/nowhere", StatusCode::NOT_FOUND),
            (Method::DELETE, "/users/7", StatusCode::METHOD_NOT_ALLOWED),
            (Method::GET, "/users/%2e%2e", StatusCode::BAD_REQUEST),
            (Method::GET, "/../users/7", StatusCode::BAD_REQUEST),
        ] {
            let (status, headers, body) = send(&gateway, method, uri).await;
            assert_eq!(status, expected, "{uri}");
            let json: serde_json::Value = serde_json::from_str(&body).expect("json body");
            assert_eq!(
                json["request_id"],
                headers[&X_REQUEST_ID].to_str().expect("id")
            );
            assert!(json["message"].is_string());
        }
    }

    #[tokio::test]
    async fn method_not_allowed_lists_every_matching_route() {
        let (status, headers, _) = send(&gateway(), Method::POST, "/users/me").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[http::header::ALLOW], "GET, HEAD, PUT");
    }
}
