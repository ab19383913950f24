//! The transport: listeners, connections, timeouts, reloads and shutdown. It knows
//! nothing of routes; each request goes to [`Gateway::serve`] of the gateway live at that
//! moment, and its [`Exchange`] is finished (the `log` phase) once the response body has
//! been sent.
//!
//! Reloads build a whole new [`Gateway`] and swap it in ([`Shared::reload`]): a request
//! runs entirely on the gateway it started with; the next request on the same keep-alive
//! or HTTP/2 connection sees the new one. Listener addresses and `workers` cannot change
//! on reload (such a reload is refused, naming the key); everything else can.
//!
//! `accept` phase: a connection needs a permit of the connection cap before it is served
//! (beyond the cap, one client per listener waits accepted but unserved, the others in the
//! kernel's backlog), then the TLS handshake (bounded by `header_read_timeout`), then
//! HTTP: a connection that may speak HTTP/1 starts on weir's own HTTP/1.1 server
//! ([`h1`]), which hands it to hyper's server at the first request it does not take;
//! hyper serves HTTP/2 (by ALPN on TLS, by preface on plain TCP) and the admin listener.
//!
//! Two timeouts watch every connection, both from [`Activity`]:
//! - `header_read_timeout`: once the first byte of a request head arrives on an HTTP/1
//!   connection, the whole head must follow within it (slow-loris defence);
//! - `idle_timeout`: a connection with no request in flight and no traffic is closed.
//!
//! A proxied WebSocket handshake answered `101` carries a tunnel (a WebSocket API's, a
//! session; see [`Switched`]) in the response's
//! extensions: once hyper has sent the `101` and handed the connection over, the
//! connection's task runs the tunnel (with its own timeouts, see [`crate::websocket`]),
//! so that it keeps its permit of the connection cap and its place in the drain.
//!
//! On shutdown, the public listeners close, every public connection is asked to finish
//! its in-flight requests and close, and [`Server::run`] returns when all are done or
//! `shutdown_grace` has passed. The admin listener stays up until then, answering
//! `/readyz` with `503` so that load balancers see the drain.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use arc_swap::ArcSwap;

use crate::access_log::AccessLog;
use crate::body::Body;
use crate::config::{self, Config, ConfigErrors};
use crate::error::json_response;
use crate::gate::Gated;
use crate::metrics::Metrics;
use crate::pipeline::{BuildError, ConnInfo, Exchange, Gateway};
use crate::websocket::Switched;

mod h1;

/// Room hyper's own HTTP/1 read buffer leaves above `max_header_bytes`, so that the
/// gateway's JSON `431` answers before hyper's bare one.
const HEAD_BUFFER_SLACK_BYTES: usize = 16 * 1024;
/// Room hyper's own HTTP/1 header-count limit leaves above `max_headers`, for the same
/// reason: past its limit hyper answers a bare `431` (no JSON, no `x-request-id`) itself.
/// With room of one, any head two fields over the limit got hyper's answer. hyper parses
/// into this many slots (64 bytes each) per attempt, so the room stays modest.
const HEADER_COUNT_SLACK: usize = 100;
/// How long admin connections get to finish once the public drain is over (admin
/// answers are immediate).
const ADMIN_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// hyper's smallest allowed HTTP/1 read buffer.
const MIN_HTTP1_BUFFER_BYTES: usize = 8192;

/// A listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({kind}): {source}")]
    Bind {
        addr: SocketAddr,
        kind: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Why a reload was refused (the running config stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(ConfigErrors),
    #[error("{}", .0.join("\n"))]
    Unchangeable(Vec<String>),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("the reload task failed: {0}")]
    Task(String),
}

impl ReloadError {
    /// One message per problem (for the admin API).
    pub fn messages(&self) -> Vec<String> {
        match self {
            ReloadError::Config(errors) => errors.iter().map(|e| e.to_string()).collect(),
            ReloadError::Unchangeable(problems) => problems.clone(),
            ReloadError::Build(e) => vec![e.to_string()],
            ReloadError::Task(e) => vec![e.clone()],
        }
    }
}

/// What the listeners share: the live gateway (swapped whole by reloads) and what outlives
/// reloads.
pub struct Shared {
    live: ArcSwap<Gateway>,
    metrics: Arc<Metrics>,
    ready: AtomicBool,
    connections: Arc<Semaphore>,
    /// The connection cap the semaphore currently stands for.
    connection_cap: AtomicUsize,
    /// Reloads run one at a time.
    reload_lock: tokio::sync::Mutex<()>,
    /// The addresses the listeners really bound (differ from the config's for port 0).
    bound: Vec<(ListenerKind, SocketAddr)>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("live", &self.live.load())
            .finish()
    }
}

impl Shared {
    /// The gateway live now.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.live.load_full()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether the gateway takes traffic (false once shutdown began).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Re-reads the route file the live gateway came from, and swaps in a gateway built
    /// from it; on any error the running gateway stays. Counted and logged either way.
    pub async fn reload(&self) -> Result<Arc<Gateway>, ReloadError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let result = self.try_reload().await;
        self.metrics.record_reload(result.is_ok());
        match &result {
            Ok(gateway) => tracing::info!(
                config = %gateway.config().source.display(),
                routes = gateway.config().routes.len(),
                "reloaded"
            ),
            Err(e) => tracing::error!("reload refused, the running config stays:\n{e}"),
        }
        result
    }

    async fn try_reload(&self) -> Result<Arc<Gateway>, ReloadError> {
        let current = self.live.load_full();
        let path = current.config().source.clone();
        let config = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(|e| ReloadError::Task(e.to_string()))?
            .map_err(ReloadError::Config)?;
        let unchangeable = unchangeable_differences(current.config(), &config, &self.bound);
        if !unchangeable.is_empty() {
            return Err(ReloadError::Unchangeable(unchangeable));
        }
        let access_log = if config.log.access == *current.access_log().target() {
            current.access_log().clone()
        } else {
            let target = config.log.access.clone();
            Arc::new(AccessLog::open(target, &self.metrics).map_err(|source| {
                BuildError::AccessLog {
                    path: format!("{:?}", config.log.access),
                    source,
                }
            })?)
        };
        let max_connections = config.server.max_connections;
        // Off the serving threads: building compiles the plugins whose files changed (a
        // cache miss of a JavaScript or Python component takes seconds), which on a
        // current-thread runtime (`workers = 1`) would stop all serving meanwhile.
        let metrics = self.metrics.clone();
        let previous = current.clone();
        let gateway = tokio::task::spawn_blocking(move || {
            Gateway::build_after(config, metrics, access_log, Some(&previous))
                .map(|gateway| gateway.keep_state_of(&previous))
        })
        .await
        .map_err(|e| ReloadError::Task(e.to_string()))??;
        let gateway = Arc::new(gateway);
        gateway.load_keys().await;
        self.set_connection_cap(max_connections);
        self.live.store(gateway.clone());
        // Plugins kept from the old gateway go on, but not their idle instances: those
        // hold the old config's state and pools, and may serve uses that are gone. (A
        // request of the old config still in flight may put one back; it is reused or
        // evicted like any other.)
        gateway.plugins().drop_idle();
        Ok(gateway)
    }

    fn set_connection_cap(&self, cap: usize) {
        let old = self.connection_cap.swap(cap, Ordering::SeqCst);
        if cap > old {
            self.connections.add_permits(cap - old);
        } else if cap < old {
            // Permits held by open connections come back later and are then forgotten.
            let mut excess = old - cap;
            excess -= self.connections.forget_permits(excess);
            if excess > 0 {
                let connections = self.connections.clone();
                tokio::spawn(async move {
                    if let Ok(permits) = connections.acquire_many_owned(excess as u32).await {
                        permits.forget();
                    }
                });
            }
        }
    }
}

/// The settings a reload cannot change, as messages naming the key. A listener address is
/// unchanged when the new file names the old configured address or the one really bound
/// (a file that said port 0 may name the port it got).
fn unchangeable_differences(
    old: &Config,
    new: &Config,
    bound: &[(ListenerKind, SocketAddr)],
) -> Vec<String> {
    let mut problems = Vec::new();
    let (a, b) = (&old.server, &new.server);
    let bound_of = |kind: ListenerKind| {
        bound
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, addr)| addr.to_string())
    };
    let mut check = |key: &str, before: String, after: String, actual: Option<String>| {
        if before != after && actual.as_ref() != Some(&after) {
            problems.push(format!(
                "server.{key}: changed from {before} to {after}, which needs a restart \
                 (listener addresses and workers cannot change on reload)"
            ));
        }
    };
    let show = |addr: Option<SocketAddr>| addr.map_or("none".to_owned(), |a| a.to_string());
    check(
        "listen",
        show(a.listen),
        show(b.listen),
        bound_of(ListenerKind::Http),
    );
    check(
        "tls.listen",
        show(a.tls.as_ref().map(|t| t.listen)),
        show(b.tls.as_ref().map(|t| t.listen)),
        bound_of(ListenerKind::Https),
    );
    check(
        "admin",
        show(a.admin),
        show(b.admin),
        bound_of(ListenerKind::Admin),
    );
    check(
        "workers",
        format!("{:?}", a.workers),
        format!("{:?}", b.workers),
        None,
    );
    problems
}

/// The kinds of listener, as they appear in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Http,
    Https,
    Admin,
}

impl ListenerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Http => "http",
            ListenerKind::Https => "https",
            ListenerKind::Admin => "admin",
        }
    }
}

/// A gateway with its listeners bound, ready to [`run`](Server::run).
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<(ListenerKind, TcpListener)>,
}

impl Server {
    /// Binds every configured listener (before serving anything, so a bad address fails
    /// the start, not the first request).
    pub async fn bind(gateway: Gateway) -> Result<Server, ServeError> {
        let server = &gateway.config().server;
        let mut wanted = Vec::new();
        if let Some(addr) = server.listen {
            wanted.push((ListenerKind::Http, addr));
        }
        if let Some(tls) = &server.tls {
            wanted.push((ListenerKind::Https, tls.listen));
        }
        if let Some(addr) = server.admin {
            wanted.push((ListenerKind::Admin, addr));
        }
        let mut listeners = Vec::new();
        for (kind, addr) in wanted {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind {
                    addr,
                    kind: kind.as_str(),
                    source,
                })?;
            listeners.push((kind, listener));
        }
        let cap = server.max_connections;
        let bound = listeners
            .iter()
            .filter_map(|(kind, l): &(ListenerKind, TcpListener)| {
                l.local_addr().ok().map(|a| (*kind, a))
            })
            .collect();
        Ok(Server {
            shared: Arc::new(Shared {
                metrics: gateway.metrics().clone(),
                live: ArcSwap::from_pointee(gateway),
                ready: AtomicBool::new(true),
                connections: Arc::new(Semaphore::new(cap)),
                connection_cap: AtomicUsize::new(cap),
                reload_lock: tokio::sync::Mutex::new(()),
                bound,
            }),
            listeners,
        })
    }

    /// What reloads and the admin API work on.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The bound addresses (useful when the config asked for port 0).
    pub fn local_addrs(&self) -> Vec<(ListenerKind, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(kind, l)| l.local_addr().ok().map(|a| (*kind, a)))
            .collect()
    }

    /// Serves until `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let shared = self.shared;
        // Public listeners and their connections stop first; the admin listener only once
        // they are drained, so that `/readyz` can report the drain (with one token and
        // tracker for all, the admin listener closed at once and "draining" was never seen).
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let (admin_cancel, admin_tracker) = (CancellationToken::new(), TaskTracker::new());
        for (kind, listener) in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(kind = kind.as_str(), %addr, "listening");
            }
            let (cancel, tracker) = match kind {
                ListenerKind::Admin => (&admin_cancel, &admin_tracker),
                ListenerKind::Http | ListenerKind::Https => (&cancel, &tracker),
            };
            let ctx = AcceptCtx {
                kind,
                shared: shared.clone(),
                cancel: cancel.clone(),
                tracker: tracker.clone(),
            };
            tracker.spawn(accept_loop(listener, ctx));
        }
        tracing::info!("ready");

        shutdown.await;
        // The config live at shutdown decides the grace period.
        let grace = shared.gateway().config().server.shutdown_grace;
        tracing::info!(grace = ?grace, "shutting down: draining in-flight requests");
        shared.ready.store(false, Ordering::SeqCst);
        cancel.cancel();
        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(grace = ?grace, "shutdown grace period over; closing remaining connections");
        } else {
            tracing::info!("drained; bye");
        }
        admin_cancel.cancel();
        admin_tracker.close();
        let _ = tokio::time::timeout(ADMIN_DRAIN_TIMEOUT, admin_tracker.wait()).await;
    }
}

#[derive(Clone)]
struct AcceptCtx {
    kind: ListenerKind,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

fn http_builder(max_headers: usize, max_header_bytes: usize) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Activity enforces header_read_timeout; hyper's own would also cut idle
        // keep-alive connections.
        .header_read_timeout(None)
        // Above the limit, so the gateway answers with its JSON 431 first.
        .max_headers(max_headers.saturating_add(HEADER_COUNT_SLACK))
        .max_buf_size(http1_buffer_bytes(max_header_bytes));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(max_header_bytes + HEAD_BUFFER_SLACK_BYTES).unwrap_or(u32::MAX),
        );
    builder
}

/// The HTTP/1 read buffer's limit: above `max_header_bytes`, so that the gateway answers a
/// head over it with its JSON `431` before hyper's bare one.
fn http1_buffer_bytes(max_header_bytes: usize) -> usize {
    (max_header_bytes + HEAD_BUFFER_SLACK_BYTES).max(MIN_HTTP1_BUFFER_BYTES)
}

async fn accept_loop(listener: TcpListener, ctx: AcceptCtx) {
    let (open, accepted) = ctx.shared.metrics.listener(ctx.kind.as_str());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(kind = ctx.kind.as_str(), error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = ctx.cancel.cancelled() => return,
        };
        // Admin connections do not count against the public connection cap. The permit is
        // taken after `accept`, not before: a loop that held a permit while waiting for a
        // client would keep it from the other public listener, so a gateway with both
        // `listen` and `tls.listen` served one connection fewer per listener than the cap.
        // While this waits, the listener accepts nothing more (the kernel's backlog holds
        // later clients).
        let permit = if ctx.kind == ListenerKind::Admin {
            None
        } else {
            tokio::select! {
                permit = ctx.shared.connections.clone().acquire_owned() => match permit {
                    Ok(permit) => Some(permit),
                    Err(_) => return,
                },
                () = ctx.cancel.cancelled() => return,
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        accepted.inc();
        let open = open.clone();
        open.inc();
        ctx.tracker.clone().spawn(async move {
            let Some(tunnel) = serve_stream(stream, peer, &ctx).await else {
                drop(permit);
                open.dec();
                return;
            };
            // A connection that switched protocols lives on in a task of its own, which
            // holds only the tunnel: this one is sized for the whole HTTP pipeline, which
            // every idle WebSocket would otherwise keep (kilobytes each). It keeps the
            // connection's permit and is drained on shutdown like any connection.
            let cancel = ctx.cancel.clone();
            ctx.tracker.spawn(async move {
                let _permit = permit;
                tunnel.run(cancel.cancelled()).await;
                open.dec();
            });
        });
    }
}

/// Serves one accepted connection; a connection that switched protocols (WebSocket) is
/// handed back as the tunnel to run.
async fn serve_stream(stream: TcpStream, peer: SocketAddr, ctx: &AcceptCtx) -> Option<Switched> {
    // Connection-level settings come from the gateway live when the connection arrives.
    let gateway = ctx.shared.gateway();
    let server = &gateway.config().server;
    let limits = Limits {
        header_read_timeout: server.header_read_timeout,
        idle_timeout: server.idle_timeout,
        head_limit: http1_buffer_bytes(server.max_header_bytes),
        http: http_builder(server.max_headers, server.max_header_bytes),
    };
    let acceptor = gateway.tls_acceptor().cloned();
    drop(gateway);
    match (ctx.kind, acceptor) {
        (ListenerKind::Https, Some(acceptor)) => {
            let handshake = acceptor.accept(stream);
            let stream = match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "tls handshake failed");
                    return None;
                }
                Err(_) => {
                    tracing::debug!(%peer, "tls handshake timed out");
                    return None;
                }
            };
            let session = stream.get_ref().1;
            let h2 = session.alpn_protocol() == Some(b"h2");
            // Verified by the handshake already; read once for every request's plugins.
            let client_cert = session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| crate::identity::ClientCert::from_der(cert))
                .map(Arc::new);
            let info = ConnInfo::new(peer, true, client_cert);
            serve_connection(stream, info, !h2, &limits, ctx).await
        }
        _ => {
            let info = ConnInfo::new(peer, false, None);
            serve_connection(stream, info, true, &limits, ctx).await
        }
    }
}

/// The settings of one connection.
struct Limits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    /// Buffered bytes of an incomplete head past which weir's HTTP/1 server hands the
    /// connection to hyper's (whose read buffer is this large).
    head_limit: usize,
    http: auto::Builder<TokioExecutor>,
}

/// Serves HTTP on one connection until it ends, times out or is drained; when it switched
/// protocols, returns the tunnel it became.
async fn serve_connection<I>(
    io: I,
    info: ConnInfo,
    may_be_http1: bool,
    limits: &Limits,
    ctx: &AcceptCtx,
) -> Option<Switched>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new(may_be_http1));
    let mut io = TrackedIo {
        inner: io,
        activity: activity.clone(),
    };
    let info = Arc::new(info);
    let mut watchdog =
        Gated::new(activity.watchdog(limits.header_read_timeout, limits.idle_timeout));
    let mut draining = false;
    let mut shutdown = drain_signal(&ctx.cancel);
    // HTTP/1 starts on weir's own server; what it does not serve goes to hyper's.
    let mut unread = Bytes::new();
    if may_be_http1 && ctx.kind != ListenerKind::Admin {
        let own = h1::Connection {
            io: &mut io,
            conn: &info,
            shared: &ctx.shared,
            activity: &activity,
            head_limit: limits.head_limit,
            watchdog: &mut watchdog,
            shutdown: &mut shutdown,
            draining: &mut draining,
        };
        match own.serve().await {
            h1::Ended::Closed => return None,
            h1::Ended::Handover(bytes) => unread = bytes,
        }
    }
    let io = TokioIo::new(h1::Prefixed::new(unread, io));
    // Where a `101` leaves its tunnel, to run once the connection is handed over.
    let switched: Arc<Mutex<Option<Switched>>> = Arc::default();
    let service = {
        let activity = activity.clone();
        let shared = ctx.shared.clone();
        let kind = ctx.kind;
        let switched = switched.clone();
        service_fn(move |request: Request<Incoming>| {
            let guard = activity.request_started(request.version());
            let shared = shared.clone();
            let info = info.clone();
            let switched = switched.clone();
            async move {
                let response = match kind {
                    ListenerKind::Admin => crate::admin::handle_owned(request, &shared)
                        .await
                        .map(|body| TrackedBody::new(body, guard, None)),
                    ListenerKind::Http | ListenerKind::Https => {
                        yield_once().await;
                        let gateway = shared.gateway();
                        let serve = gateway.serve(request.map(Body::stream), &info);
                        let (mut response, exchange) = std::pin::pin!(serve).await;
                        exchange.stamp(&mut response);
                        if let Some(tunnel) = Switched::take(&mut response) {
                            *lock(&switched) = Some(tunnel);
                        }
                        response
                            .map(|body| TrackedBody::new(body, guard, Some((gateway, exchange))))
                    }
                };
                Ok::<_, Infallible>(response)
            }
        })
    };
    let conn = limits.http.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(peer = %info_peer(&activity), error = %e, "connection ended with error");
                }
                // Switched protocols: the connection lives on as a tunnel, drained
                // (closed with a WebSocket Close) on shutdown.
                return lock(&switched).take();
            }
            () = &mut shutdown, if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            reason = &mut watchdog => {
                tracing::debug!(reason, "closing connection");
                return None;
            }
        }
    }
}

/// Returns `Pending` once, rescheduling the task behind those already runnable (unlike
/// `tokio::task::yield_now`, which waits for the runtime's next I/O poll).
///
/// Each server yields so before serving a request: the other connections with a request
/// ready on this thread then read theirs first, and their upstream writes go out together.
/// A write wakes the upstream, which, on the same core, may then run at once for a single
/// request (measured proxying a small `GET` with the backend on the gateway's core: 0.57
/// backend wake-ups per request when each request wrote as soon as it could, 0.2–0.3
/// yielding first). Yielding here rather than just before the upstream write spares the
/// task's next poll the walk down every phase's future to where it stopped.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

/// Resolves once the drain begins (gated: see [`Gated`]).
type Shutdown = Gated<WaitForCancellationFutureOwned>;

fn drain_signal(token: &CancellationToken) -> Shutdown {
    Gated::new(token.clone().cancelled_owned())
}

/// Locks `mutex`, whether or not a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn info_peer(_activity: &Activity) -> &'static str {
    "client"
}

/// Milliseconds since the first call: the clock of [`Activity`].
fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// `at` on the clock of [`Activity`].
fn ms_at(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    at.saturating_duration_since(*EPOCH.get_or_init(Instant::now))
        .as_millis() as u64
}

/// What a connection is doing, for its timeouts. Updated by [`TrackedIo`] on every read
/// and write and by the service on every request.
struct Activity {
    /// Requests whose response has not been fully sent.
    in_flight: AtomicUsize,
    /// Last read or write, ms.
    last_ms: AtomicU64,
    /// When the first byte of a pending request head arrived, ms; 0 = none pending.
    head_started_ms: AtomicU64,
    /// Whether head tracking applies (HTTP/1; HTTP/2 reads pings and settings too).
    /// Starts `false` for TLS with ALPN `h2`; turned off by the first HTTP/2 request on a
    /// plain connection (h2c), which could not be told from HTTP/1 before.
    track_heads: AtomicBool,
}

impl Activity {
    fn new(track_heads: bool) -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(now_ms()),
            head_started_ms: AtomicU64::new(0),
            track_heads: AtomicBool::new(track_heads),
        }
    }

    // While a request is in flight the watchdog looks at neither time, and the request's
    // end sets `last_ms` ([`InFlight`]): traffic then costs no clock reading (~30 ns each).

    fn on_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return;
        }
        let now = now_ms().max(1);
        self.last_ms.store(now, Ordering::Relaxed);
        if self.track_heads.load(Ordering::Relaxed)
            && self.head_started_ms.load(Ordering::Relaxed) == 0
        {
            self.head_started_ms.store(now, Ordering::Relaxed);
        }
    }

    fn on_write(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            self.last_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    fn request_started(self: &Arc<Self>, version: Version) -> InFlight {
        if version == Version::HTTP_2 {
            // h2c: pings and window updates between requests are not request heads; left
            // tracked, they cut an idle connection after `header_read_timeout`.
            self.track_heads.store(false, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started_ms.store(0, Ordering::Relaxed);
        InFlight {
            activity: self.clone(),
            ended_at: None,
        }
    }

    /// Completes when a timeout fires, with the reason.
    async fn watchdog(&self, header_read: Duration, idle: Duration) -> &'static str {
        let header_read_ms = header_read.as_millis() as u64;
        let idle_ms = idle.as_millis() as u64;
        loop {
            let now = now_ms();
            let head = self.head_started_ms.load(Ordering::Relaxed);
            let busy = self.in_flight.load(Ordering::Relaxed) > 0;
            // While heads are tracked, no wait is longer than `header_read`: a head that
            // starts during a wait is then seen before its deadline, and the next wait
            // ends exactly at it. So nothing has to wake the watchdog when a head starts
            // (a wake-up and a timer reset per request, on the hot path, before).
            let cap_ms = if self.track_heads.load(Ordering::Relaxed) {
                header_read_ms
            } else {
                idle_ms
            };
            let wait_ms = if busy {
                idle_ms
            } else if head != 0 {
                if now >= head + header_read_ms {
                    return "header read timeout";
                }
                (head + header_read_ms - now).min(idle_ms)
            } else {
                let last = self.last_ms.load(Ordering::Relaxed);
                if now >= last + idle_ms {
                    return "idle timeout";
                }
                last + idle_ms - now
            };
            tokio::time::sleep(Duration::from_millis(wait_ms.min(cap_ms).max(1))).await;
        }
    }
}

/// Marks a request in flight until its response body has been sent (or dropped).
struct InFlight {
    activity: Arc<Activity>,
    /// When the request ended, if the clock was read for it already.
    ended_at: Option<Instant>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.activity;
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        let ended = self.ended_at.map_or_else(now_ms, ms_at);
        activity.last_ms.store(ended, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight.
///
/// It also counts the bytes sent and, when dropped (sent or abandoned), finishes the
/// request's [`Exchange`]: the `log` phase.
struct TrackedBody {
    body: Body,
    guard: InFlight,
    bytes_out: u64,
    exchange: Option<(Arc<Gateway>, Box<Exchange>)>,
}

impl TrackedBody {
    fn new(body: Body, guard: InFlight, exchange: Option<(Arc<Gateway>, Box<Exchange>)>) -> Self {
        TrackedBody {
            body,
            guard,
            bytes_out: 0,
            exchange,
        }
    }

    /// The id of the request this body answers, when it went through the gateway.
    fn request_id(&self) -> Option<&http::HeaderValue> {
        self.exchange
            .as_ref()
            .map(|(_, exchange)| exchange.request_id())
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        // One clock reading for the request's latency and the connection's activity.
        let now = Instant::now();
        if let Some((gateway, exchange)) = self.exchange.take() {
            exchange.finish_at(&gateway, self.bytes_out, now);
        }
        self.guard.ended_at = Some(now);
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.bytes_out += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// An IO stream that reports reads and writes to its connection's [`Activity`].
struct TrackedIo<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for TrackedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TrackedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.on_write();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.on_write();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A gateway-made response for requests that never reach the pipeline.
pub fn plain_status(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, message, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::tests::poll_once;

    #[tokio::test]
    async fn shutdown_resolves_once_its_token_is_cancelled() {
        let token = CancellationToken::new();
        let mut shutdown = drain_signal(&token);
        for _ in 0..3 {
            assert!(poll_once(&mut shutdown).await.is_pending());
        }
        let cancel = token.clone();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            cancel.cancel();
        });
        // Woken by the cancellation itself: nothing else polls this task.
        tokio::time::timeout(Duration::from_secs(10), &mut shutdown)
            .await
            .expect("the cancellation wakes and resolves it");

        let token = CancellationToken::new();
        token.cancel();
        let mut shutdown = drain_signal(&token);
        assert!(poll_once(&mut shutdown).await.is_ready());
    }
}
