//! The `upstream` integration: pools of targets, connections to them, and forwarding.
//!
//! Each target keeps its own pool of idle HTTP/1.1 connections (a plain `Vec` behind a
//! mutex, no hashing on the hot path) or one shared HTTP/2 connection. HTTP/1.1 requests
//! go through weir's own client ([`h1`]), driven by the request's task; HTTP/2 and
//! WebSocket handshakes through hyper's. A request takes a target by smooth weighted
//! round-robin, skipping ejected ones, gets a connection (reused or new, bounded by
//! `connect_timeout`), and only then hands over its body. So a failed
//! connect can always be retried on another target, even for a `POST` with a streamed
//! body; a failure after sending is retried only for idempotent methods without a body.
//! Such a request whose reused HTTP/1.1 connection ends before any byte of an answer (the
//! server closed it, idle, as it was taken) goes once more to the same target on a new
//! connection, outside the `retries` count and without a mark against the target.
//!
//! **Invariant:** an HTTP/1.1 connection goes back to its pool only when the response body
//! was read to its end; a response dropped half-read closes its connection.
//!
//! A WebSocket handshake ([`Forward::upgrade`]) goes on a new HTTP/1.1 connection of its
//! own (also to an `http2` upstream; for `https` targets ALPN then offers only
//! `http/1.1`), made with upgrades enabled and never pooled: on `101` the connection
//! becomes the upstream half of the tunnel (`crate::websocket`), on any other answer it
//! closes after the response.
//!
//! Passive health: consecutive failures (connect errors, timeouts, `502`/`503`/`504`
//! answers) eject a target for `eject.duration`. When every target is ejected, requests
//! get `503` until one comes back. A request body that fails on the client's side (past
//! `max_body`, or the client hung up mid-upload) is the client's error (`413`, `400`) and
//! no mark against the target.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::body::{Body, BodyFault, BoxError, FaultWatch};
use crate::config::{self, Eject, Scheme};
use crate::error::GatewayError;
use crate::headers::Forwarding;
use crate::metrics::{Metrics, TargetMetrics, UpstreamOutcome};
use crate::tls::{TlsError, client_config};

pub mod h1;

/// The longest weighted round-robin schedule kept; weights are scaled down past it.
const MAX_SCHEDULE_LEN: usize = 1024;

/// Milliseconds since the first call: a cheap monotonic clock for ejection deadlines.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A running upstream: its targets, their pools and health.
pub struct UpstreamPool {
    name: String,
    targets: Vec<Arc<TargetPool>>,
    /// Target indices in smooth weighted round-robin order.
    schedule: Box<[usize]>,
    next: AtomicUsize,
    connect_timeout: Duration,
    timeout: Duration,
    retries: u32,
    http2: bool,
    preserve_host: bool,
    eject: Eject,
    tls: Option<TlsConnector>,
    /// For WebSocket handshakes to `https` targets of an `http2` upstream: ALPN offers
    /// only `http/1.1` (`None` when `tls` already does).
    upgrade_tls: Option<TlsConnector>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("name", &self.name)
            .field("targets", &self.targets.len())
            .finish()
    }
}

/// One target with its idle connections and health counters.
struct TargetPool {
    target: config::Target,
    /// The target URL, shared with the access log.
    url: Arc<str>,
    metrics: TargetMetrics,
    host_header: HeaderValue,
    idle: Mutex<Vec<IdleConn>>,
    h2: Mutex<Option<http2::SendRequest<Body>>>,
    max_idle: usize,
    idle_timeout: Duration,
    failures: AtomicU32,
    ejected_until_ms: AtomicU64,
}

struct IdleConn {
    conn: h1::Connection,
    since: Instant,
}

enum Conn {
    /// HTTP/1.1 through [`h1`].
    H1(h1::Connection),
    /// HTTP/1.1 through hyper, for a WebSocket handshake (upgrades enabled).
    Upgrade(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl h1::Recycle for TargetPool {
    fn recycle(&self, connection: h1::Connection) {
        self.put_idle(connection);
    }
}

/// What [`UpstreamPool::forward`] tells the `log` phase about a request.
#[derive(Debug, Default)]
pub struct UpstreamReport {
    /// The target of the last attempt.
    pub target: Option<Arc<str>>,
    /// From sending the request to its response head, on the last attempt.
    pub elapsed: Option<Duration>,
    /// A view of the request body as it streams (bytes read), when it has one.
    pub request_body: Option<FaultWatch>,
}

/// What a request attempt needs besides the request itself.
#[derive(Debug, Clone, Copy)]
pub struct Forward<'a> {
    /// Canonical path plus `?query` when there is one.
    pub path_and_query: &'a str,
    /// A WebSocket handshake: sent on a new HTTP/1.1 connection that is never pooled, so
    /// that a `101` answer leaves the connection to the tunnel (`hyper::upgrade::on`).
    pub upgrade: bool,
    /// `X-Forwarded-*` and `traceparent` for a client's request (none for the gateway's
    /// own calls): written by [`h1`] into the request head, put into the request's map
    /// for the other connections.
    pub forwarding: Option<&'a Forwarding>,
}

impl TargetPool {
    /// Whether the target is ejected at `now` (ms, read on first need).
    fn is_ejected(&self, now: &mut Option<u64>) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && until > *now.get_or_insert_with(now_ms)
    }

    fn record_success(&self) {
        self.metrics.attempt(UpstreamOutcome::ok);
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        self.metrics.healthy();
    }

    fn record_failure(&self, upstream: &str, eject: Eject, outcome: UpstreamOutcome) {
        self.metrics.attempt(outcome);
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= eject.failures {
            self.failures.store(0, Ordering::Relaxed);
            let until = now_ms() + eject.duration.as_millis() as u64;
            self.ejected_until_ms.store(until, Ordering::Relaxed);
            self.metrics.ejected();
            tracing::warn!(
                upstream,
                target = %self.target.url,
                failures,
                duration = ?eject.duration,
                "target ejected after consecutive failures"
            );
        }
    }

    /// The most recently used idle connection that is still open and not idle past
    /// `idle_timeout` at `now`; the others met on the way are closed.
    fn take_idle(&self, now: Instant) -> Option<h1::Connection> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .pop();
            let mut idle = idle?;
            if now.saturating_duration_since(idle.since) <= self.idle_timeout && idle.conn.is_open()
            {
                return Some(idle.conn);
            }
        }
    }

    fn put_idle(&self, conn: h1::Connection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < self.max_idle {
            idle.push(IdleConn {
                conn,
                since: Instant::now(),
            });
        }
    }

    fn shared_h2(&self) -> Option<http2::SendRequest<Body>> {
        let h2 = self
            .h2
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        h2.as_ref().filter(|s| !s.is_closed()).cloned()
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("handshake: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad server name for tls: {0}")]
    ServerName(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// The smooth weighted round-robin order (as nginx does it) of targets with `weights`.
fn schedule(weights: &[u32]) -> Box<[usize]> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    let scale = total.div_ceil(MAX_SCHEDULE_LEN as u64).max(1);
    let weights: Vec<i64> = weights
        .iter()
        .map(|w| (u64::from(*w) / scale).max(1) as i64)
        .collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        order.push(best);
    }
    order.into_boxed_slice()
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl UpstreamPool {
    /// Prepares an upstream's pools (no connection is made until a request needs one).
    pub fn new(upstream: &config::Upstream, metrics: &Metrics) -> Result<UpstreamPool, TlsError> {
        let (tls, upgrade_tls) = if upstream.targets.iter().any(|t| t.scheme == Scheme::Https) {
            let config = client_config(upstream.ca.as_deref(), upstream.http2)?;
            // A copy sharing the roots, with ALPN for HTTP/1.1 only (WebSocket over
            // HTTP/2, RFC 8441, is not spoken).
            let upgrade = upstream.http2.then(|| {
                let mut http1 = (*config).clone();
                http1.alpn_protocols = vec![b"http/1.1".to_vec()];
                TlsConnector::from(Arc::new(http1))
            });
            (Some(TlsConnector::from(config)), upgrade)
        } else {
            (None, None)
        };
        let targets = upstream
            .targets
            .iter()
            .map(|target| {
                Arc::new(TargetPool {
                    host_header: HeaderValue::from_str(target.authority.as_str())
                        // An Authority is always a valid header value.
                        .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
                    target: target.clone(),
                    url: Arc::from(target.url.as_str()),
                    metrics: metrics.target(&upstream.name, &target.url),
                    idle: Mutex::new(Vec::new()),
                    h2: Mutex::new(None),
                    max_idle: upstream.pool.max_idle,
                    idle_timeout: upstream.pool.idle_timeout,
                    failures: AtomicU32::new(0),
                    ejected_until_ms: AtomicU64::new(0),
                })
            })
            .collect();
        let weights: Vec<u32> = upstream.targets.iter().map(|t| t.weight).collect();
        Ok(UpstreamPool {
            name: upstream.name.clone(),
            targets,
            schedule: schedule(&weights),
            next: AtomicUsize::new(0),
            connect_timeout: upstream.connect_timeout,
            timeout: upstream.timeout,
            retries: upstream.retries,
            http2: upstream.http2,
            preserve_host: upstream.preserve_host,
            eject: upstream.eject,
            tls,
            upgrade_tls,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next target in round-robin order that is neither ejected nor already tried
    /// (`tried` is a bit set over the first 64 targets).
    fn pick(&self, tried: u64) -> Option<usize> {
        // The clock is read only if a target was ever ejected.
        let mut now = None;
        let len = self.schedule.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|i| self.schedule[(start + i) % len])
            .find(|&idx| {
                let untried = idx >= 64 || tried & (1 << idx) == 0;
                untried && !self.targets[idx].is_ejected(&mut now)
            })
    }

    /// Sends `request` to one of the targets, retrying per the rules in the module docs.
    /// `request` must already carry the headers meant for the upstream; this sets the URI
    /// and `Host` per target.
    pub async fn forward(
        &self,
        request: Request<Body>,
        forward: Forward<'_>,
        report: &mut UpstreamReport,
    ) -> Result<Response<Body>, GatewayError> {
        let (mut parts, mut body) = request.into_parts();
        let replayable = is_idempotent(&parts.method) && http_body::Body::is_end_stream(&body);
        // A body already at its end cannot fail; skip the watch (and its allocation).
        let faults = if http_body::Body::is_end_stream(&body) {
            None
        } else {
            body.watch_faults()
        };
        report.request_body = faults.clone();
        let mut body = Some(body);
        let mut tried: u64 = 0;
        let mut last_error = None;
        for attempt in 0..=self.retries {
            let Some(idx) = self.pick(tried) else {
                break;
            };
            if idx < 64 {
                tried |= 1 << idx;
            }
            let target = &self.targets[idx];
            if attempt > 0 {
                target.metrics.retry();
            }
            report.target = Some(target.url.clone());
            // One clock reading for the pooled connection's idle check, the attempt's
            // timeout and its elapsed time (each reading costs ~30 ns here); a new
            // connection's attempt starts once it is made.
            let now = Instant::now();
            let pooled = self.pooled(target, forward.upgrade, now);
            let reused = matches!(pooled, Some(Conn::H1(_)));
            let (conn, sent_at) = match pooled {
                Some(conn) => (conn, now),
                None => match self.connect_timed(target, forward.upgrade).await {
                    Ok(conn) => (conn, Instant::now()),
                    Err(e) => {
                        last_error = Some(e);
                        continue;
                    }
                },
            };
            // No attempt follows the last one allowed, nor one made on the only target
            // left untried (a retry goes to another target): the usual single-target
            // upstream then sends the client's headers themselves instead of a copy.
            let is_last = attempt == self.retries || attempt as usize + 1 >= self.targets.len();
            let attempt_body = if replayable && !is_last {
                Body::Empty
            } else {
                match body.take() {
                    Some(body) => body,
                    // The body went out with an earlier attempt and cannot be replayed.
                    None => break,
                }
            };
            let headers = if is_last {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };
            let host = self.host(&parts, target);
            let request = self.upstream_request(
                &parts,
                headers,
                target,
                forward,
                attempt_body,
                &conn,
                host.as_ref(),
            )?;
            let added = h1::Added {
                host: host.as_ref(),
                forwarding: forward.forwarding,
            };
            let sent = self
                .send(
                    conn,
                    target,
                    request,
                    added,
                    sent_at,
                    faults.as_ref(),
                    reused && replayable,
                )
                .await;
            report.elapsed = Some(sent_at.elapsed());
            match sent {
                Ok(response) => return Ok(response),
                Err(e) => {
                    let retry = replayable && !matches!(e, GatewayError::UpstreamTimeout { .. });
                    last_error = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| GatewayError::NoHealthyTarget {
            upstream: self.name.clone(),
        }))
    }

    /// A new connection to `target` within `connect_timeout`; a failure is marked
    /// against the target. The connect path (TCP, TLS, HTTP/1 or HTTP/2 handshake) is
    /// boxed: cold but large, inline it made every request's future kilobytes bigger, and
    /// futures are moved several times per request (measured: 6-9% less CPU per proxied
    /// request).
    async fn connect_timed(
        &self,
        target: &Arc<TargetPool>,
        upgrade: bool,
    ) -> Result<Conn, GatewayError> {
        let connect = Box::pin(self.connect(target, upgrade));
        let e = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => e,
            Err(_) => ConnectError::Timeout(self.connect_timeout),
        };
        target.record_failure(&self.name, self.eject, UpstreamOutcome::connect_error);
        Err(self.connect_error(target, e))
    }

    fn connect_error(&self, target: &TargetPool, e: ConnectError) -> GatewayError {
        GatewayError::UpstreamConnect {
            upstream: self.name.clone(),
            target: target.target.url.clone(),
            reason: e.to_string(),
        }
    }

    /// The `Host` the request goes to `target` with: the target's, or with
    /// `preserve_host` the host the client asked for ([`crate::headers::requested_host`];
    /// an HTTP/1.1 upstream needs an HTTP/2 client's `:authority` as `Host`).
    fn host(&self, parts: &http::request::Parts, target: &TargetPool) -> Option<HeaderValue> {
        if !self.preserve_host {
            return Some(target.host_header.clone());
        }
        crate::headers::requested_host(parts)
    }

    /// The request for `target` over `conn`. `headers` are the client request's
    /// (`parts.headers` itself, or a copy of it). Over [`h1`] they go as they are: the
    /// client writes `host` and the forwarding fields into the head itself (see
    /// [`h1::Added`]); the other connections get them in the map.
    #[allow(clippy::too_many_arguments)]
    fn upstream_request(
        &self,
        parts: &http::request::Parts,
        headers: HeaderMap,
        target: &TargetPool,
        forward: Forward<'_>,
        body: Body,
        conn: &Conn,
        host: Option<&HeaderValue>,
    ) -> Result<Request<Body>, GatewayError> {
        let t = &target.target;
        // The client's own `PathAndQuery` when it is what goes upstream (no base path, a
        // canonical path): a reference-counted clone instead of a new string.
        let same = parts
            .uri
            .path_and_query()
            .filter(|pq| t.base_path.is_empty() && pq.as_str() == forward.path_and_query);
        let path = match same {
            Some(same) => Ok(same.clone()),
            None if t.base_path.is_empty() => PathAndQuery::try_from(forward.path_and_query),
            None => PathAndQuery::try_from(format!("{}{}", t.base_path, forward.path_and_query)),
        };
        let path = path.map_err(|e| GatewayError::UpstreamProtocol {
            upstream: self.name.clone(),
            target: t.url.clone(),
            reason: format!("cannot build request path: {e}"),
        })?;
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.headers_mut() = headers;
        // Decided by the connection, not by `http2`: an `https` target whose ALPN chose
        // HTTP/1.1 must get an origin-form target, not an absolute URI.
        match conn {
            Conn::H1(_) => {
                *request.uri_mut() = Uri::from(path);
                return Ok(request);
            }
            Conn::Upgrade(_) => *request.uri_mut() = Uri::from(path),
            Conn::H2(_) => {
                // HTTP/2 carries the target in :scheme and :authority, so the URI is
                // absolute.
                let scheme = match t.scheme {
                    Scheme::Http => http::uri::Scheme::HTTP,
                    Scheme::Https => http::uri::Scheme::HTTPS,
                };
                let authority = host
                    .filter(|_| self.preserve_host)
                    .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
                    .unwrap_or_else(|| t.authority.clone());
                let uri = Uri::builder()
                    .scheme(scheme)
                    .authority(authority)
                    .path_and_query(path)
                    .build();
                *request.uri_mut() = uri.map_err(|e| GatewayError::UpstreamProtocol {
                    upstream: self.name.clone(),
                    target: t.url.clone(),
                    reason: format!("cannot build request uri: {e}"),
                })?;
            }
        }
        if let Some(host) = host {
            request.headers_mut().insert(HOST, host.clone());
        }
        if let Some(forwarding) = forward.forwarding {
            forwarding.apply(request.headers_mut());
        }
        Ok(request)
    }

    /// Sends `request` on `conn` (over [`h1`], with the fields `added` to its head), timed
    /// from `sent_at`. `faults` tells whether the request body failed on the client's side,
    /// which is then the client's error and no mark against the target. An [`h1`]
    /// connection returns to its pool after the response if it may; a WebSocket
    /// handshake's closes after it (or, on `101`, is handed over through
    /// `hyper::upgrade::on`).
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        mut conn: Conn,
        target: &Arc<TargetPool>,
        mut request: Request<Body>,
        added: h1::Added<'_>,
        mut sent_at: Instant,
        faults: Option<&FaultWatch>,
        mut replay: bool,
    ) -> Result<Response<Body>, GatewayError> {
        let sent: Result<Response<Body>, BoxError> = loop {
            break match conn {
                Conn::H1(h1) => {
                    let recycle = Some(target.clone() as Arc<dyn h1::Recycle>);
                    let deadline = tokio::time::Instant::from_std(sent_at) + self.timeout;
                    match h1.send(request, added, recycle, deadline).await {
                        Ok(response) => Ok(response.map(Body::upstream)),
                        Err(h1::Error::Timeout) => return Err(self.timed_out(target)),
                        // An idle connection the server closed as it was taken: it never
                        // saw the request. Once more to the same target on a new
                        // connection (as nginx does with its cached keep-alive
                        // connections), and no mark against the target.
                        Err(h1::Error::Unanswered(h1::Unanswered {
                            request: Some(head),
                            ..
                        })) if replay => {
                            replay = false;
                            target.metrics.retry();
                            conn = self.connect_timed(target, false).await?;
                            sent_at = Instant::now();
                            request = Request::from_parts(*head, Body::Empty);
                            continue;
                        }
                        Err(e) => Err(e.into()),
                    }
                }
                Conn::Upgrade(mut sender) => {
                    match tokio::time::timeout(self.timeout, sender.send_request(request)).await {
                        Ok(Ok(response)) => Ok(response.map(Body::stream)),
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => return Err(self.timed_out(target)),
                    }
                }
                Conn::H2(mut sender) => {
                    match tokio::time::timeout(self.timeout, sender.send_request(request)).await {
                        Ok(Ok(response)) => Ok(response.map(Body::stream)),
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => return Err(self.timed_out(target)),
                    }
                }
            };
        };
        match sent {
            Ok(response) => {
                if matches!(
                    response.status(),
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ) {
                    target.record_failure(&self.name, self.eject, UpstreamOutcome::unavailable);
                } else {
                    target.record_success();
                }
                Ok(response)
            }
            // The request body failed: the client's fault, not the target's. Asked of the
            // body, not of `e`: over HTTP/2 the body's error is lost in a stream reset.
            Err(_) if let Some(fault) = faults.and_then(FaultWatch::fault) => match fault {
                BodyFault::TooLarge(too_large) => Err(GatewayError::BodyTooLarge {
                    limit: too_large.limit,
                }),
                BodyFault::Peer(reason) => Err(GatewayError::ClientBody(reason.clone())),
            },
            Err(e) => {
                target.record_failure(&self.name, self.eject, UpstreamOutcome::error);
                Err(GatewayError::UpstreamProtocol {
                    upstream: self.name.clone(),
                    target: target.target.url.clone(),
                    reason: format!("{e:#}"),
                })
            }
        }
    }

    fn timed_out(&self, target: &TargetPool) -> GatewayError {
        target.record_failure(&self.name, self.eject, UpstreamOutcome::timeout);
        GatewayError::UpstreamTimeout {
            upstream: self.name.clone(),
            target: target.target.url.clone(),
            timeout: self.timeout,
        }
    }

    /// A ready connection to `target` from its pool (the shared HTTP/2 one, or an idle
    /// HTTP/1.1 one still open); `None` when a new one must be made. An `upgrade` always
    /// gets a new HTTP/1.1 connection.
    fn pooled(&self, target: &TargetPool, upgrade: bool, now: Instant) -> Option<Conn> {
        if upgrade {
            return None;
        }
        if self.http2
            && let Some(sender) = target.shared_h2()
        {
            return Some(Conn::H2(sender));
        }
        target.take_idle(now).map(Conn::H1)
    }

    /// A new connection to `target`; HTTP/1.1 whatever `http2` says when `upgrade`.
    async fn connect(&self, target: &Arc<TargetPool>, upgrade: bool) -> Result<Conn, ConnectError> {
        let t = &target.target;
        let tcp = TcpStream::connect((t.host.as_str(), t.port)).await?;
        tcp.set_nodelay(true)?;
        let tls = match &self.upgrade_tls {
            Some(http1_only) if upgrade => Some(http1_only),
            _ => self.tls.as_ref(),
        };
        match (t.scheme, tls) {
            (Scheme::Https, Some(tls)) => {
                let name = ServerName::try_from(t.host.clone())
                    .map_err(|e| ConnectError::ServerName(e.to_string()))?;
                let stream = tls.connect(name, tcp).await?;
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                self.handshake(target, stream, h2, upgrade).await
            }
            _ => self.handshake(target, tcp, self.http2, upgrade).await,
        }
    }

    /// The connection over `io`: HTTP/2 when `h2` (unless for an `upgrade`), else
    /// HTTP/1.1, through hyper's client for an `upgrade`, else through [`h1`].
    async fn handshake<I>(
        &self,
        target: &Arc<TargetPool>,
        io: I,
        h2: bool,
        upgrade: bool,
    ) -> Result<Conn, ConnectError>
    where
        I: h1::Io + 'static,
    {
        if !h2 && !upgrade {
            return Ok(Conn::H1(h1::Connection::new(Box::new(io))));
        }
        let io = TokioIo::new(io);
        let url = target.target.url.clone();
        if h2 && !upgrade {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(target = %url, error = %e, "upstream h2 connection ended");
                }
            });
            let mut shared = target
                .h2
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *shared = Some(sender.clone());
            Ok(Conn::H2(sender))
        } else {
            let (sender, conn) = http1::Builder::new().handshake(io).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(target = %url, error = %e, "upstream connection ended");
                }
            });
            Ok(Conn::Upgrade(sender))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_smooth_and_weighted() {
        assert_eq!(&*schedule(&[1, 1]), &[0, 1]);
        assert_eq!(&*schedule(&[5, 1, 1]), &[0, 0, 1, 0, 2, 0, 0]);
        let s = schedule(&[3, 1]);
        assert_eq!(s.iter().filter(|&&i| i == 0).count(), 3);
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn schedule_is_bounded() {
        let s = schedule(&[100_000, 1]);
        assert!(s.len() <= MAX_SCHEDULE_LEN + 1);
        assert!(s.contains(&1));
    }

    #[test]
    fn idempotent_methods() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
