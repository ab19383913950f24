//! The transport: listeners, connections, timeouts and shutdown. It knows nothing of
//! routes; each request goes to [`Gateway::handle`].
//!
//! `accept` phase: a connection needs a permit of the connection cap before it is served
//! (beyond the cap, one client per listener waits accepted but unserved, the others in the
//! kernel's backlog), then the TLS handshake (bounded by `header_read_timeout`), then hyper
//! serves HTTP/1.1 or HTTP/2 (by ALPN on TLS, by preface on plain TCP).
//!
//! Two timeouts watch every connection, both from [`Activity`]:
//! - `header_read_timeout`: once the first byte of a request head arrives on an HTTP/1
//!   connection, the whole head must follow within it (slow-loris defence);
//! - `idle_timeout`: a connection with no request in flight and no traffic is closed.
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
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
use tokio::sync::{Notify, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::Body;
use crate::error::json_response;
use crate::pipeline::{ConnInfo, Gateway};
use crate::tls::{self, TlsError};

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
    #[error(transparent)]
    Tls(#[from] TlsError),
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
    gateway: Arc<Gateway>,
    listeners: Vec<(ListenerKind, TcpListener)>,
    tls: Option<TlsAcceptor>,
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
        let tls = match &server.tls {
            Some(tls_config) => {
                wanted.push((ListenerKind::Https, tls_config.listen));
                Some(TlsAcceptor::from(tls::server_config(tls_config)?))
            }
            None => None,
        };
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
        Ok(Server {
            gateway: Arc::new(gateway),
            listeners,
            tls,
        })
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
        let server = &self.gateway.config().server;
        let limits = Arc::new(Limits {
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
            connections: Arc::new(Semaphore::new(server.max_connections)),
            http: http_builder(server.max_headers, server.max_header_bytes),
        });
        let grace = server.shutdown_grace;
        // Public listeners and their connections stop first; the admin listener only once
        // they are drained, so that `/readyz` can report the drain (with one token and
        // tracker for all, the admin listener closed at once and "draining" was never seen).
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let (admin_cancel, admin_tracker) = (CancellationToken::new(), TaskTracker::new());
        let ready = Arc::new(AtomicBool::new(true));

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
                gateway: self.gateway.clone(),
                tls: self.tls.clone(),
                limits: limits.clone(),
                cancel: cancel.clone(),
                tracker: tracker.clone(),
                ready: ready.clone(),
            };
            tracker.spawn(accept_loop(listener, ctx));
        }
        tracing::info!("ready");

        shutdown.await;
        tracing::info!(grace = ?grace, "shutting down: draining in-flight requests");
        ready.store(false, Ordering::SeqCst);
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

struct Limits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    connections: Arc<Semaphore>,
    http: auto::Builder<TokioExecutor>,
}

#[derive(Clone)]
struct AcceptCtx {
    kind: ListenerKind,
    gateway: Arc<Gateway>,
    tls: Option<TlsAcceptor>,
    limits: Arc<Limits>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    ready: Arc<AtomicBool>,
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
        .max_buf_size((max_header_bytes + HEAD_BUFFER_SLACK_BYTES).max(MIN_HTTP1_BUFFER_BYTES));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(max_header_bytes + HEAD_BUFFER_SLACK_BYTES).unwrap_or(u32::MAX),
        );
    builder
}

async fn accept_loop(listener: TcpListener, ctx: AcceptCtx) {
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
                permit = ctx.limits.connections.clone().acquire_owned() => match permit {
                    Ok(permit) => Some(permit),
                    Err(_) => return,
                },
                () = ctx.cancel.cancelled() => return,
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        ctx.tracker.clone().spawn(async move {
            let _permit = permit;
            serve_stream(stream, peer, ctx).await;
        });
    }
}

async fn serve_stream(stream: TcpStream, peer: SocketAddr, ctx: AcceptCtx) {
    match (ctx.kind, &ctx.tls) {
        (ListenerKind::Https, Some(acceptor)) => {
            let handshake = acceptor.accept(stream);
            let stream = match tokio::time::timeout(ctx.limits.header_read_timeout, handshake).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "tls handshake timed out");
                    return;
                }
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let info = ConnInfo { peer, tls: true };
            serve_connection(stream, info, !h2, ctx).await;
        }
        _ => {
            let info = ConnInfo { peer, tls: false };
            serve_connection(stream, info, true, ctx).await;
        }
    }
}

/// Serves HTTP on one connection until it ends, times out or is drained.
async fn serve_connection<I>(io: I, info: ConnInfo, may_be_http1: bool, ctx: AcceptCtx)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new(may_be_http1));
    let io = TokioIo::new(TrackedIo {
        inner: io,
        activity: activity.clone(),
    });
    let info = Arc::new(info);
    let service = {
        let activity = activity.clone();
        let gateway = ctx.gateway.clone();
        let ready = ctx.ready.clone();
        let kind = ctx.kind;
        service_fn(move |request: Request<Incoming>| {
            let guard = activity.request_started(request.version());
            let gateway = gateway.clone();
            let info = info.clone();
            let ready = ready.clone();
            async move {
                let response = match kind {
                    ListenerKind::Admin => crate::admin::handle(&request, &ready),
                    _ => gateway.handle(request.map(Body::stream), &info).await,
                };
                Ok::<_, Infallible>(response.map(|body| TrackedBody {
                    body,
                    _guard: guard,
                }))
            }
        })
    };
    let conn = ctx.limits.http.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let watchdog = activity.watchdog(ctx.limits.header_read_timeout, ctx.limits.idle_timeout);
    tokio::pin!(watchdog);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(peer = %info_peer(&activity), error = %e, "connection ended with error");
                }
                return;
            }
            () = ctx.cancel.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            reason = &mut watchdog => {
                tracing::debug!(reason, "closing connection");
                return;
            }
        }
    }
}

fn info_peer(_activity: &Activity) -> &'static str {
    "client"
}

/// Milliseconds since the first call: the clock of [`Activity`].
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
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
    /// Wakes [`Activity::watchdog`] when a head starts: it may be asleep for a whole
    /// `idle_timeout` and must not notice a stalled head only then.
    head_started: Notify,
}

impl Activity {
    fn new(track_heads: bool) -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(now_ms()),
            head_started_ms: AtomicU64::new(0),
            track_heads: AtomicBool::new(track_heads),
            head_started: Notify::new(),
        }
    }

    fn on_read(&self) {
        let now = now_ms().max(1);
        self.last_ms.store(now, Ordering::Relaxed);
        if self.track_heads.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started_ms.load(Ordering::Relaxed) == 0
        {
            self.head_started_ms.store(now, Ordering::Relaxed);
            self.head_started.notify_one();
        }
    }

    fn on_write(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn request_started(self: &Arc<Self>, version: Version) -> InFlight {
        if version == Version::HTTP_2 {
            // h2c: pings and window updates between requests are not request heads; left
            // tracked, they cut an idle connection after `header_read_timeout`.
            self.track_heads.store(false, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started_ms.store(0, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Completes when a timeout fires, with the reason.
    async fn watchdog(&self, header_read: Duration, idle: Duration) -> &'static str {
        let header_read_ms = header_read.as_millis() as u64;
        let idle_ms = idle.as_millis() as u64;
        loop {
            let now = now_ms();
            let head = self.head_started_ms.load(Ordering::Relaxed);
            let busy = self.in_flight.load(Ordering::Relaxed) > 0;
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
            // Re-evaluated when the wait is over or a head starts, whichever is first.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(wait_ms.max(1))) => {}
                () = self.head_started.notified() => {}
            }
        }
    }
}

/// Marks a request in flight until its response body has been sent (or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.last_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight.
struct TrackedBody {
    body: Body,
    _guard: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
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
