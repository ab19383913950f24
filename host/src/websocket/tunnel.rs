//! The tunnel: once both sides switched protocols, bytes are copied both ways until either
//! side closes, the idle timeout or the maximum duration passes, or the gateway shuts down.
//!
//! Copying works as `tokio::io::copy_bidirectional` does, with one difference: a tunnel
//! holds no buffer while it is idle (see [`Flow`]). An end of stream on one side is passed on
//! as a write shutdown (TCP FIN, or TLS `close_notify`) to the other, so the WebSocket
//! closing handshake of the peers goes through untouched. A TLS peer that hangs up without
//! `close_notify` counts as an end of stream too (WebSocket has its own closing handshake,
//! which tells a cut connection from a closed one); after any other failure (a reset) both
//! sides are still shut down properly, so the other peer sees a clean end of stream, not
//! a truncated TLS session.
//!
//! A WebSocket is over once a peer has ended its stream, or Close frames went both ways;
//! the tunnel then gives the rest of the closing (the other Close, the other end of stream)
//! at most [`CLOSE_TIMEOUT`] and closes both connections. So a client that waits for its
//! server to hang up after the closing handshake (RFC 6455 §7.1.1; the gateway is its
//! server) is not left holding a connection until the idle timeout. When the gateway ends the
//! connection itself, each peer gets a Close frame (status 1001, "going away") if it may
//! (between two frames, and none sent yet; see [`super::frame`]), then the gateway waits
//! up to [`CLOSE_TIMEOUT`] for that peer's Close in reply or its end of stream before
//! closing the connection.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::frame::{CLOSE_GOING_AWAY, FrameFollower, close_frame};
use crate::config::WebSocketProxy;

/// How long a peer gets to answer the gateway's Close (or hang up) before the connection
/// is closed anyway.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The read buffer for what a peer still sends after the gateway's Close (discarded).
const DRAIN_BUFFER_BYTES: usize = 1024;
/// How much one read of a tunnel takes at most (into the thread's scratch buffer).
const READ_BYTES: usize = 16 * 1024;

thread_local! {
    /// What every tunnel on this thread reads into (see [`Flow`]).
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BYTES].into_boxed_slice());
}

/// The client sent a Close frame.
const CLIENT_SENT_CLOSE: u8 = 1;
/// The upstream sent a Close frame.
const UPSTREAM_SENT_CLOSE: u8 = 2;
/// Close frames went both ways.
const BOTH_SENT_CLOSE: u8 = CLIENT_SENT_CLOSE | UPSTREAM_SENT_CLOSE;
/// A peer ended its stream.
const STREAM_ENDED: u8 = 4;

/// What the two sides of a tunnel tell its timers.
struct Shared {
    started: Instant,
    /// The last read or write on either side, ms after `started`.
    last_ms: AtomicU64,
    /// `*_SENT_CLOSE` and `STREAM_ENDED` bits.
    events: AtomicU8,
    /// Woken when `events` gains a bit.
    changed: Notify,
}

impl Shared {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn set(&self, event: u8) {
        if self.events.fetch_or(event, Ordering::Relaxed) & event == 0 {
            self.changed.notify_one();
        }
    }

    /// Completes once `events` holds all of `all` or any of `any`.
    async fn until(&self, all: u8, any: u8) {
        loop {
            let events = self.events.load(Ordering::Relaxed);
            if events & all == all || events & any != 0 {
                return;
            }
            // One waiter, so a `notify_one` between the load and here leaves a permit.
            self.changed.notified().await;
        }
    }
}

/// Completes when the WebSocket is over though bytes may still flow: a peer ended its
/// stream or Close frames went both ways, and then the rest of the closing came or
/// [`CLOSE_TIMEOUT`] passed.
async fn closing_done(shared: &Shared) {
    shared.until(BOTH_SENT_CLOSE, STREAM_ENDED).await;
    let _ = tokio::time::timeout(
        CLOSE_TIMEOUT,
        shared.until(BOTH_SENT_CLOSE | STREAM_ENDED, 0),
    )
    .await;
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The peers closed (or one failed: reset, TLS error).
    Closed,
    /// No bytes either way for `websocket_idle_timeout`.
    IdleTimeout,
    /// `websocket_max_duration` since the handshake.
    MaxDuration,
    /// The gateway is shutting down.
    Shutdown,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::IdleTimeout => "idle timeout",
            End::MaxDuration => "maximum duration",
            End::Shutdown => "shutdown",
        }
    }
}

impl Outcome {
    /// The `reason` label of the tunnel close metrics ([`crate::metrics::TUNNEL_ENDS`]).
    pub fn metric_reason(&self) -> &'static str {
        match (self.end, &self.error) {
            (End::Closed, None) => "closed",
            (End::Closed, Some(_)) => "error",
            (End::IdleTimeout, _) => "idle_timeout",
            (End::MaxDuration, _) => "max_duration",
            (End::Shutdown, _) => "shutdown",
        }
    }
}

/// What a finished tunnel reports to the log.
#[derive(Debug)]
pub struct Outcome {
    pub end: End,
    /// Bytes read from the client and from the upstream.
    pub from_client: u64,
    pub from_upstream: u64,
    /// The copy failed (reset, TLS error) rather than both sides closing.
    pub error: Option<io::Error>,
}

/// Pipes `client` and `upstream` until the tunnel ends (see the module docs); `shutdown`
/// completes when the gateway begins to drain. Both are closed on return.
pub async fn pipe<C, U>(
    client: C,
    upstream: U,
    limits: WebSocketProxy,
    shutdown: impl Future<Output = ()>,
) -> Outcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let shared = Shared {
        started,
        last_ms: AtomicU64::new(0),
        events: AtomicU8::new(0),
        changed: Notify::new(),
    };
    let mut client = Side::new(client, &shared, CLIENT_SENT_CLOSE);
    let mut upstream = Side::new(upstream, &shared, UPSTREAM_SENT_CLOSE);
    // `copied`: both directions ran to their end and were shut down by the copy.
    let (end, error, copied) = tokio::select! {
        copied = copy_both(&mut client, &mut upstream) => match copied {
            Ok(_) => (End::Closed, None, true),
            Err(error) => (End::Closed, Some(error), false),
        },
        () = closing_done(&shared) => (End::Closed, None, false),
        () = idle(&shared, limits.idle_timeout) => (End::IdleTimeout, None, false),
        () = tokio::time::sleep_until(deadline(started, limits.max_duration)) => {
            (End::MaxDuration, None, false)
        }
        () = shutdown => (End::Shutdown, None, false),
    };
    if end == End::Closed {
        if !copied {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                tokio::join!(client.io.shutdown(), upstream.io.shutdown())
            })
            .await;
        }
    } else {
        let reason = end.as_str();
        let to_client = close_frame(CLOSE_GOING_AWAY, reason, None);
        let to_upstream = close_frame(CLOSE_GOING_AWAY, reason, Some(mask_key()));
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            tokio::join!(client.close(&to_client), upstream.close(&to_upstream))
        })
        .await;
    }
    Outcome {
        end,
        from_client: client.bytes_read,
        from_upstream: upstream.bytes_read,
        error,
    }
}

/// Copies both ways between `a` and `b` until both directions ended, each end of stream
/// passed on as a write shutdown; the first error ends it.
async fn copy_both<A, B>(a: &mut A, b: &mut B) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_to_b, mut b_to_a) = (Flow::default(), Flow::default());
    std::future::poll_fn(|cx| {
        let there = a_to_b.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let back = b_to_a.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        ready!(there);
        ready!(back);
        Poll::Ready(Ok(()))
    })
    .await
}

/// One direction of a tunnel. Idle WebSockets are the common case of a WebSocket proxy,
/// so a direction keeps no buffer of its own while its reader has nothing: it reads into
/// the thread's scratch buffer and writes on at once, and only bytes its writer could not
/// take yet are kept (in a buffer freed once they are written). `copy_bidirectional` keeps
/// a buffer per direction for the tunnel's whole life: 4 KiB per idle tunnel even at 2 KiB
/// each, 40 MB for 10,000.
#[derive(Default)]
struct Flow {
    /// Read, not yet taken by the writer: empty and unallocated while it keeps up.
    unsent: Vec<u8>,
    /// How much of `unsent` the writer took.
    sent: usize,
    /// Written since the writer was last flushed.
    need_flush: bool,
    state: FlowState,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum FlowState {
    #[default]
    Copying,
    /// The reader ended: flush, then shut the writer down.
    Ending,
    Done,
}

impl Flow {
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            match self.state {
                FlowState::Done => return Poll::Ready(Ok(())),
                FlowState::Ending => {
                    ready!(writer.as_mut().poll_flush(cx))?;
                    ready!(writer.as_mut().poll_shutdown(cx))?;
                    self.state = FlowState::Done;
                }
                FlowState::Copying => {
                    // What the writer could not take goes first (and holds the reader back).
                    while self.sent < self.unsent.len() {
                        let n = ready!(writer.as_mut().poll_write(cx, &self.unsent[self.sent..]))?;
                        if n == 0 {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        self.sent += n;
                        self.need_flush = true;
                    }
                    if self.unsent.capacity() > 0 {
                        self.unsent = Vec::new();
                        self.sent = 0;
                    }
                    match self.read_and_write(cx, reader.as_mut(), writer.as_mut()) {
                        Poll::Pending => {
                            if self.need_flush {
                                ready!(writer.as_mut().poll_flush(cx))?;
                                self.need_flush = false;
                            }
                            return Poll::Pending;
                        }
                        Poll::Ready(Ok(0)) => self.state = FlowState::Ending,
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    }
                }
            }
        }
    }

    /// Reads once (`Ok(0)`: the reader's end) and writes what was read as far as the writer
    /// takes it at once, keeping the rest in `unsent`.
    fn read_and_write<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<usize>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        SCRATCH.with(|scratch| {
            // Only a reader or writer that ran a tunnel of its own from inside its poll
            // could find the scratch buffer taken; it then gets a buffer of its own.
            let mut own;
            let mut shared = scratch.try_borrow_mut();
            let space: &mut [u8] = match &mut shared {
                Ok(shared) => shared,
                Err(_) => {
                    own = vec![0u8; READ_BYTES];
                    &mut own
                }
            };
            let mut buf = ReadBuf::new(space);
            ready!(reader.as_mut().poll_read(cx, &mut buf))?;
            let read = buf.filled();
            let mut written = 0;
            while written < read.len() {
                match writer.as_mut().poll_write(cx, &read[written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        written += n;
                        self.need_flush = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            self.unsent.extend_from_slice(&read[written..]);
            Poll::Ready(Ok(read.len()))
        })
    }
}

/// `started + after`, or far in the future when that overflows.
fn deadline(started: Instant, after: Duration) -> Instant {
    started
        .checked_add(after)
        .unwrap_or_else(|| started + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Completes once no byte went either way for `timeout`. Wakes at most once per `timeout`
/// while there is traffic.
async fn idle(shared: &Shared, timeout: Duration) {
    loop {
        let last = shared.started + Duration::from_millis(shared.last_ms.load(Ordering::Relaxed));
        let until = deadline(last, timeout);
        if Instant::now() >= until {
            return;
        }
        tokio::time::sleep_until(until).await;
    }
}

/// A random masking key for the Close frame sent upstream (RFC 6455 §5.3).
fn mask_key() -> [u8; 4] {
    use ring::rand::SecureRandom;
    let mut key = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut key).is_err() {
        key = fastrand::u32(..).to_be_bytes();
    }
    key
}

/// One side of the tunnel: its stream, the frames read from and written to it, and what
/// it tells the tunnel's timers.
struct Side<'a, I> {
    io: I,
    shared: &'a Shared,
    /// The event of this peer sending a Close.
    sent_close: u8,
    /// Frames from this peer.
    read: FrameFollower,
    /// Frames to this peer.
    written: FrameFollower,
    bytes_read: u64,
}

impl<'a, I> Side<'a, I> {
    fn new(io: I, shared: &'a Shared, sent_close: u8) -> Self {
        Side {
            io,
            shared,
            sent_close,
            read: FrameFollower::default(),
            written: FrameFollower::default(),
            bytes_read: 0,
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> Side<'_, I> {
    /// Ends this side's connection: `frame` (a Close) if it may be sent, then whatever the
    /// peer still sends is read until its own Close or its end of stream, then the write
    /// side is shut down. Errors only end it sooner.
    async fn close(&mut self, frame: &[u8]) {
        if self.written.may_send_close() {
            self.written.feed(frame);
            if self.io.write_all(frame).await.is_err() || self.io.flush().await.is_err() {
                return;
            }
        }
        // On the heap, and only now: in the future's state, two of them (one per side)
        // would be in every tunnel's task for its whole life.
        let mut buf = vec![0u8; DRAIN_BUFFER_BYTES];
        while !self.read.saw_close() {
            match self.io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => self.read.feed(&buf[..n]),
            }
        }
        let _ = self.io.shutdown().await;
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Side<'_, I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let room = buf.remaining();
        let polled = match Pin::new(&mut this.io).poll_read(cx, buf) {
            // A TLS peer gone without `close_notify`: an end of stream (module docs).
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            polled => polled,
        };
        if let Poll::Ready(Ok(())) = polled {
            let new = &buf.filled()[before..];
            if new.is_empty() {
                if room > 0 {
                    this.shared.set(STREAM_ENDED);
                }
            } else {
                let had_close = this.read.saw_close();
                this.read.feed(new);
                if !had_close && this.read.saw_close() {
                    this.shared.set(this.sent_close);
                }
                this.bytes_read += new.len() as u64;
                this.shared.touch();
            }
        }
        polled
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Side<'_, I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            this.written.feed(&buf[..n]);
            this.shared.touch();
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    //! The tunnel over in-memory pipes, with short timeouts on the real clock (the peers
    //! answer, so no test waits for [`CLOSE_TIMEOUT`]).

    use tokio::io::{DuplexStream, duplex};

    use super::*;

    fn limits(idle_ms: u64, max_ms: u64) -> WebSocketProxy {
        WebSocketProxy {
            idle_timeout: Duration::from_millis(idle_ms),
            max_duration: Duration::from_millis(max_ms),
        }
    }

    /// An unmasked text frame (as a server sends).
    fn text(payload: &str) -> Vec<u8> {
        let mut frame = vec![0x81, payload.len() as u8];
        frame.extend_from_slice(payload.as_bytes());
        frame
    }

    /// A tunnel between two in-memory pipes of 1 KiB: the client's and the upstream's
    /// far ends, and the tunnel's task.
    fn start(
        limits: WebSocketProxy,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> (DuplexStream, DuplexStream, tokio::task::JoinHandle<Outcome>) {
        let (client_io, client) = duplex(1024);
        let (upstream_io, upstream) = duplex(1024);
        let tunnel = tokio::spawn(pipe(client_io, upstream_io, limits, shutdown));
        (client, upstream, tunnel)
    }

    async fn read_some(peer: &mut DuplexStream) -> Vec<u8> {
        let mut buf = vec![0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), peer.read(&mut buf))
            .await
            .expect("bytes within 5s")
            .expect("read");
        buf.truncate(n);
        buf
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_and_an_end_of_stream_is_passed_on() {
        let (mut client, mut upstream, tunnel) =
            start(limits(10_000, 10_000), std::future::pending());
        client.write_all(b"ping").await.expect("write");
        assert_eq!(read_some(&mut upstream).await, b"ping");
        upstream.write_all(b"pong").await.expect("write");
        assert_eq!(read_some(&mut client).await, b"pong");
        drop(client);
        assert_eq!(
            read_some(&mut upstream).await,
            b"",
            "end of stream passed on"
        );
        drop(upstream);
        let outcome = tunnel.await.expect("tunnel");
        assert_eq!(outcome.end, End::Closed);
        assert_eq!((outcome.from_client, outcome.from_upstream), (4, 4));
    }

    #[tokio::test]
    async fn a_slow_reader_gets_every_byte_in_order() {
        // Pipes of 1 KiB: the tunnel's writes stall over and over, so what it read and
        // could not pass on yet is kept and written later.
        let (mut client, mut upstream, tunnel) =
            start(limits(10_000, 10_000), std::future::pending());
        // Three 64 KiB binary frames from the server, each byte its offset's.
        let mut frames = Vec::new();
        for n in 0..3u8 {
            frames.extend_from_slice(&[0x82, 127]);
            frames.extend_from_slice(&(64u64 * 1024).to_be_bytes());
            frames.extend((0..64 * 1024).map(|i: u32| (i % 251) as u8 ^ n));
        }
        let sent = frames.clone();
        let writer = tokio::spawn(async move {
            upstream.write_all(&sent).await.expect("write");
            upstream
        });
        let mut received = Vec::new();
        let mut buf = [0u8; 700];
        while received.len() < frames.len() {
            let read = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf));
            let n = read
                .await
                .unwrap_or_else(|_| panic!("stuck after {} bytes", received.len()))
                .expect("read");
            assert!(n > 0, "ended after {} bytes", received.len());
            received.extend_from_slice(&buf[..n]);
            tokio::task::yield_now().await;
        }
        assert!(received == frames, "bytes changed on the way");
        let upstream = writer.await.expect("writer");
        drop((client, upstream));
        let outcome = tunnel.await.expect("tunnel");
        assert_eq!(outcome.from_upstream, frames.len() as u64);
    }

    #[tokio::test]
    async fn idle_timeout_sends_going_away_both_ways() {
        let started = Instant::now();
        let (mut client, mut upstream, tunnel) = start(limits(300, 10_000), std::future::pending());
        // Traffic after 150 ms pushes the timeout past 450 ms.
        tokio::time::sleep(Duration::from_millis(150)).await;
        upstream.write_all(&text("hi")).await.expect("write");
        assert_eq!(read_some(&mut client).await, text("hi"));
        let to_client = read_some(&mut client).await;
        assert_eq!(
            to_client,
            close_frame(CLOSE_GOING_AWAY, "idle timeout", None)
        );
        assert!(started.elapsed() >= Duration::from_millis(450));
        let to_upstream = read_some(&mut upstream).await;
        assert_eq!(to_upstream[..2], [0x88, 0x80 | 14], "masked close");
        // Each peer answers with its Close; the tunnel then closes both.
        client
            .write_all(&close_frame(CLOSE_GOING_AWAY, "", Some([1, 2, 3, 4])))
            .await
            .expect("write");
        upstream
            .write_all(&close_frame(CLOSE_GOING_AWAY, "", None))
            .await
            .expect("write");
        let outcome = tunnel.await.expect("tunnel");
        assert_eq!(outcome.end, End::IdleTimeout);
        assert_eq!(read_some(&mut client).await, b"");
        assert_eq!(read_some(&mut upstream).await, b"");
    }

    #[tokio::test]
    async fn no_close_frame_in_the_middle_of_a_frame() {
        let started = Instant::now();
        let (mut client, mut upstream, tunnel) = start(limits(10_000, 10_000), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        // Half a frame to the client: a 10-byte payload, 3 bytes of it.
        upstream
            .write_all(&[0x82, 10, 1, 2, 3])
            .await
            .expect("write");
        assert_eq!(read_some(&mut client).await, [0x82, 10, 1, 2, 3]);
        // On shutdown the upstream (sent nothing yet) gets a Close; the client does not.
        assert_eq!(read_some(&mut upstream).await[0], 0x88);
        // Both hang up (the upstream, itself mid-frame, could not send a Close either).
        client.shutdown().await.expect("shutdown");
        drop(upstream);
        let outcome = tunnel.await.expect("tunnel");
        assert_eq!(outcome.end, End::Shutdown);
        assert!(
            started.elapsed() < CLOSE_TIMEOUT,
            "no wait for a Close that cannot come"
        );
        assert_eq!(read_some(&mut client).await, b"", "only an end of stream");
    }

    #[tokio::test]
    async fn a_finished_closing_handshake_ends_the_tunnel_though_the_client_stays() {
        let started = Instant::now();
        let (mut client, mut upstream, tunnel) =
            start(limits(10_000, 10_000), std::future::pending());
        let from_client = close_frame(1000, "bye", Some([1, 2, 3, 4]));
        client.write_all(&from_client).await.expect("write");
        assert_eq!(read_some(&mut upstream).await, from_client);
        let from_upstream = close_frame(1000, "bye", None);
        upstream.write_all(&from_upstream).await.expect("write");
        drop(upstream);
        // The client keeps its connection open, waiting for its server to hang up.
        assert_eq!(read_some(&mut client).await, from_upstream);
        assert_eq!(read_some(&mut client).await, b"");
        let outcome = tunnel.await.expect("tunnel");
        assert_eq!(outcome.end, End::Closed);
        assert!(
            started.elapsed() < CLOSE_TIMEOUT,
            "at once, not after a timeout"
        );
    }

    #[tokio::test]
    async fn max_duration_ends_a_busy_tunnel() {
        let started = Instant::now();
        let (mut client, mut upstream, tunnel) = start(limits(300, 600), std::future::pending());
        let chatter = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if upstream.write_all(&text("tick")).await.is_err() {
                    return;
                }
            }
        });
        let close = close_frame(CLOSE_GOING_AWAY, "maximum duration", None);
        let mut seen = Vec::new();
        while !seen.ends_with(&close) {
            let bytes = read_some(&mut client).await;
            assert!(!bytes.is_empty(), "closed without a close frame");
            seen.extend_from_slice(&bytes);
        }
        assert!(started.elapsed() >= Duration::from_millis(600));
        // The peers hang up instead of answering.
        drop(client);
        chatter.abort();
        let outcome = tunnel.await.expect("tunnel");
        assert_eq!(outcome.end, End::MaxDuration);
    }
}
