//! Weir's HTTP/1.1 client for upstream connections.
//!
//! hyper's client runs every connection as a task of its own and hands it each request
//! and response through channels; proxying a small `GET`, that cost more CPU than the
//! rest of the proxy together (measured with `bench/run FLOOR=raw`: the same hyper server
//! in front of a hand-written client spent 3.6 user-µs per request instead of 7.7, and
//! outran nginx). Here the request's own task does the work: it writes the request head
//! into a buffer the connection keeps, parses the response head with `httparse`, and the
//! response body reads the connection as it is polled. Nothing runs while a connection
//! sits idle in its pool; it is checked when taken ([`Connection::is_open`]).
//!
//! Used for every HTTP/1.1 upstream request but WebSocket handshakes, which stay on
//! hyper's client for its upgrade support (`super`). What it speaks:
//!
//! - **Request bodies** stream as they are read: with `Content-Length` when the request
//!   has one or the body's size is known, else `Transfer-Encoding: chunked`. The whole
//!   request is written before the response is read.
//! - **Responses**: interim `1xx` answers are skipped; the body is framed by
//!   `Transfer-Encoding: chunked` (trailers read and dropped), `Content-Length`, or the
//!   connection's end, and is empty for `HEAD`, `204` and `304` (RFC 9112 §6.3).
//! - **Reuse**: a connection goes back to its pool ([`Recycle`]) once its response body
//!   was read to the end, unless the response ended with the connection (no length, or
//!   `Connection: close`, or HTTP/1.0).
//! - **Bounds**: a response head is at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`]
//!   fields, a chunk-size line at most [`MAX_LINE`] bytes, a trailer section at most
//!   [`MAX_HEAD`] bytes.

use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::body::{Body, BoxError};
use crate::headers::{Forwarding, write_field};

/// The largest response head (status line and fields) read, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most fields a response head may have.
pub const MAX_HEADERS: usize = crate::http1::MAX_FIELDS;
/// The longest chunk-size line (size, extensions, CRLF), in bytes.
pub const MAX_LINE: usize = 4096;
/// What a read asks for at least.
const READ_SIZE: usize = 8 * 1024;

/// A transport an upstream connection runs on: plain TCP or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin {
    /// The TCP socket underneath, whose readiness tells whether an idle connection heard
    /// from its peer.
    fn tcp(&self) -> &TcpStream;
}

impl Io for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Io for TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// What [`Connection::send`] writes into a request head besides the request's own
/// fields, in place of theirs of the same names: the gateway's fields, written straight
/// into the head instead of inserted into the request's map first.
#[derive(Debug, Clone, Copy, Default)]
pub struct Added<'a> {
    /// `Host`; `None` leaves the request's.
    pub host: Option<&'a HeaderValue>,
    /// `X-Forwarded-*` and `traceparent`.
    pub forwarding: Option<&'a Forwarding>,
}

impl Added<'_> {
    /// Whether a request field named `name` gives way to one of these.
    fn replaces(&self, name: &HeaderName) -> bool {
        (self.host.is_some() && name == HOST)
            || self
                .forwarding
                .is_some_and(|forwarding| forwarding.replaces(name))
    }
}

/// Takes back a connection whose response was read to its end: the target's pool.
pub trait Recycle: Send + Sync {
    fn recycle(&self, connection: Connection);
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The connection ended before any byte of a response: the server may never have
    /// read the request. [`Connection::send`] hands the request's head back in it.
    #[error("{0}")]
    Unanswered(Unanswered),
    #[error("connection closed in the middle of a response head")]
    ClosedInHead,
    #[error("invalid response head: {0}")]
    Parse(httparse::Error),
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid Content-Length in response")]
    ContentLength,
    #[error("unexpected 101 Switching Protocols")]
    Switching,
    /// No response head within the timeout given to [`Connection::send`].
    #[error("no response head in time")]
    Timeout,
    /// The request body failed while it was being sent.
    #[error("request body: {0}")]
    Body(BoxError),
}

/// How a connection ended before it answered, and the request it did not answer.
#[derive(Debug)]
pub struct Unanswered {
    /// The reset, when it was not a plain close.
    cause: Option<io::Error>,
    /// The request's head (its body, if it had one, is spent), to send again; always
    /// there in what [`Connection::send`] returns.
    pub(super) request: Option<Box<http::request::Parts>>,
}

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.cause {
            None => f.write_str("connection closed before any response"),
            Some(cause) => write!(f, "connection reset before any response: {cause}"),
        }
    }
}

impl Error {
    /// `e` as [`Error::Unanswered`] when it is the peer resetting the connection.
    fn reset_or_io(e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Error::Unanswered(Unanswered {
                cause: Some(e),
                request: None,
            }),
            _ => Error::Io(e),
        }
    }
}

/// Why a response body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upstream connection: {0}")]
    Io(#[from] io::Error),
    #[error("upstream closed the connection mid-body")]
    Truncated,
    #[error("invalid chunked encoding in upstream response: {0}")]
    Chunked(&'static str),
}

/// An open HTTP/1.1 connection to an upstream, idle between exchanges. One pointer: a
/// response body holds it, and bodies are in every request's and connection's state.
pub struct Connection(Box<Inner>);

struct Inner {
    io: Box<dyn Io>,
    /// What was read and not yet used; what follows a response stays here.
    read: BytesMut,
    /// The request head being written, kept for the next one.
    write: Vec<u8>,
    /// Times each request's exchange, re-armed for the next (see [`crate::timer`]).
    timer: Option<crate::timer::Timer>,
    /// Where a response head's fields are while it is parsed, kept for the next.
    offsets: crate::http1::Table,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("buffered", &self.0.read.len())
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub fn new(io: Box<dyn Io>) -> Connection {
        Connection(Box::new(Inner {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
            timer: None,
            offsets: crate::http1::Table::new(),
        }))
    }

    /// Whether an idle connection can take a request: nothing came from the peer since
    /// its last response (neither its end nor stray bytes). Costs a system call only when
    /// the socket was seen readable.
    pub fn is_open(&mut self) -> bool {
        if !self.0.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.0.io.tcp().poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: the end, bytes, or a readiness the last read left set; only a
            // read can tell.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                let mut buf = ReadBuf::new(&mut probe);
                matches!(
                    Pin::new(&mut *self.0.io).poll_read(&mut cx, &mut buf),
                    Poll::Pending
                )
            }
        }
    }

    /// Sends `request` and reads the response head by `deadline`. The body reads the rest
    /// of the response; `recycle` gets the connection back when it is read to its end and the
    /// connection can take another request (`None`: close it then).
    pub async fn send(
        mut self,
        request: Request<Body>,
        added: Added<'_>,
        recycle: Option<Arc<dyn Recycle>>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<ResponseBody>, Error> {
        let (mut parts, body) = request.into_parts();
        let head_request = parts.method == Method::HEAD;
        let mut timer = crate::timer::arm(self.0.timer.take(), deadline);
        let exchange = async {
            self.write_request(&parts.method, &parts.uri, &parts.headers, added, body)
                .await?;
            // The request's header map, emptied, holds the response's: the client
            // connection's server (weir's `server/h1.rs`, or hyper's) keeps a response's map
            // for the next request it reads on that connection, so
            // one map, grown once to what the gateway adds, serves a client connection's
            // every request and response instead of two allocated (and regrown) per
            // request. It is emptied only once a response head is complete.
            self.read_head(head_request, &mut parts.headers).await
        };
        let exchanged = crate::timer::within(&mut timer, exchange).await;
        self.0.timer = Some(timer);
        let (mut response, framing, keep_alive) = match exchanged {
            None => return Err(Error::Timeout),
            Some(Ok(head)) => head,
            Some(Err(Error::Unanswered(mut unanswered))) => {
                unanswered.request = Some(Box::new(parts));
                return Err(Error::Unanswered(unanswered));
            }
            Some(Err(e)) => return Err(e),
        };
        let recycle = if keep_alive { recycle } else { None };
        let body = ResponseBody::new(self, framing, recycle);
        if framing == Framing::Chunked || framing == Framing::Close {
            // Framing is the connection's business, not the client's.
            response.headers_mut().remove(CONTENT_LENGTH);
        }
        Ok(response.map(|()| body))
    }

    async fn write_request(
        &mut self,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        added: Added<'_>,
        mut body: Body,
    ) -> Result<(), Error> {
        let head = &mut self.0.write;
        head.clear();
        head.extend_from_slice(method.as_str().as_bytes());
        head.push(b' ');
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        if let Some(host) = added.host {
            write_field(head, &HOST, host.as_bytes());
        }
        let mut declared = false;
        for (name, value) in headers {
            if name == TRANSFER_ENCODING || added.replaces(name) {
                continue;
            }
            declared |= name == CONTENT_LENGTH;
            write_field(head, name, value.as_bytes());
        }
        if let Some(forwarding) = added.forwarding {
            forwarding.write(head);
        }
        let chunked = if body.is_end_stream() {
            if !declared && matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
                head.extend_from_slice(b"content-length: 0\r\n");
            }
            false
        } else if declared {
            false
        } else if let Some(len) = body.size_hint().exact() {
            // Writing into a `Vec` cannot fail.
            let _ = write!(head, "content-length: {len}\r\n");
            false
        } else {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
            true
        };
        head.extend_from_slice(b"\r\n");
        self.0
            .io
            .write_all(&self.0.write)
            .await
            .map_err(Error::reset_or_io)?;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(Error::Body)?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers are not sent upstream
            };
            if data.is_empty() {
                continue;
            }
            if chunked {
                self.0.write.clear();
                // Writing into a `Vec` cannot fail.
                let _ = write!(self.0.write, "{:x}\r\n", data.len());
                self.0.io.write_all(&self.0.write).await?;
                self.0.io.write_all(&data).await?;
                self.0.io.write_all(b"\r\n").await?;
            } else {
                self.0.io.write_all(&data).await?;
            }
        }
        if chunked {
            self.0.io.write_all(b"0\r\n\r\n").await?;
        }
        self.0.io.flush().await.map_err(Error::reset_or_io)?;
        Ok(())
    }

    /// Reads up to the final response head, skipping `1xx` ones. `headers` (the request's,
    /// kept intact until then) is emptied for the fields of the first complete head and
    /// taken by the response.
    async fn read_head(
        &mut self,
        head_request: bool,
        headers: &mut HeaderMap,
    ) -> Result<(Response<()>, Framing, bool), Error> {
        let mut interim = false;
        loop {
            let head = loop {
                // (Nothing is read yet when the request was just sent.)
                if !self.0.read.is_empty()
                    && let Some(head) = parse_head(&mut self.0.read, headers, &mut self.0.offsets)?
                {
                    break head;
                }
                if self.0.read.len() >= MAX_HEAD {
                    return Err(Error::HeadTooLarge);
                }
                let answered = interim || !self.0.read.is_empty();
                match self.fill().await {
                    Ok(0) if answered => return Err(Error::ClosedInHead),
                    Ok(0) => {
                        return Err(Error::Unanswered(Unanswered {
                            cause: None,
                            request: None,
                        }));
                    }
                    Ok(_) => {}
                    Err(e) if answered => return Err(Error::Io(e)),
                    Err(e) => return Err(Error::reset_or_io(e)),
                }
            };
            if head.status() == StatusCode::SWITCHING_PROTOCOLS {
                return Err(Error::Switching);
            }
            if head.status().is_informational() {
                interim = true;
                *headers = head.into_parts().0.headers;
                continue;
            }
            let (framing, close) = framing(head.headers(), head.status(), head_request)?;
            let keep_alive =
                framing != Framing::Close && head.version() == Version::HTTP_11 && !close;
            return Ok((head, framing, keep_alive));
        }
    }

    /// Reads more into the buffer; 0 at the connection's end.
    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.0.read.reserve(READ_SIZE);
        tokio_util::io::poll_read_buf(Pin::new(&mut *self.0.io), cx, &mut self.0.read)
    }

    /// Reads more of a body that is not complete yet: its connection's end is a
    /// truncation.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BodyError>> {
        match ready!(self.poll_fill(cx))? {
            0 => Poll::Ready(Err(BodyError::Truncated)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// Takes a complete response head off the front of `buf`: `None` until it is complete.
/// Parsed once; the fields' values are then slices of the head's bytes (shared, not
/// copied), found again by their offsets. The fields go into `headers`, emptied first (its
/// allocation is reused), which the response then owns.
fn parse_head(
    buf: &mut BytesMut,
    headers: &mut HeaderMap,
    table: &mut crate::http1::Table,
) -> Result<Option<Response<()>>, Error> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut parsed, buf, &mut fields)
        .map_err(Error::Parse)?
    {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) => len,
    };
    let status = StatusCode::from_u16(parsed.code.unwrap_or(0))
        .map_err(|_| Error::Parse(httparse::Error::Status))?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let offsets = crate::http1::Offsets::new(buf, parsed.headers, table);
    let head = buf.split_to(len).freeze();
    offsets.fill(&head, headers).map_err(|bad| {
        Error::Parse(match bad {
            crate::http1::BadField::Name => httparse::Error::HeaderName,
            crate::http1::BadField::Value => httparse::Error::HeaderValue,
        })
    })?;
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    std::mem::swap(response.headers_mut(), headers);
    Ok(Some(response))
}

/// How a response body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes (0: no body).
    Length(u64),
    Chunked,
    /// At the connection's end.
    Close,
}

/// How the response's body ends (RFC 9112 §6.3), and whether its `Connection` field says
/// `close` (on any of its lines).
fn framing(
    headers: &HeaderMap,
    status: StatusCode,
    head_request: bool,
) -> Result<(Framing, bool), Error> {
    // One pass over the fields, names compared rather than hashed (three lookups cost
    // ~550 instructions per response); a name's values come in their order.
    let mut coding = None;
    let mut length: Result<Option<u64>, Error> = Ok(None);
    let mut close = false;
    for (name, value) in headers {
        if *name == TRANSFER_ENCODING {
            coding = Some(value);
        } else if *name == CONTENT_LENGTH {
            if let Ok(known) = length {
                length = content_length(value, known);
            }
        } else if *name == CONNECTION {
            close |= crate::http1::has_close(value.as_bytes());
        }
    }
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Length(0), close));
    }
    // Transfer-Encoding overrides Content-Length, even a bad one (RFC 9112 §6.3, 3).
    if let Some(coding) = coding {
        let last = coding
            .as_bytes()
            .rsplit(|b| *b == b',')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let framing = if last.eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            Framing::Close
        };
        return Ok((framing, close));
    }
    Ok((length?.map_or(Framing::Close, Framing::Length), close))
}

/// `known` (what earlier `Content-Length` values said) checked against `value`: every
/// comma-separated part must be the same decimal number.
fn content_length(value: &HeaderValue, mut known: Option<u64>) -> Result<Option<u64>, Error> {
    for part in value.as_bytes().split(|b| *b == b',') {
        let part = part.trim_ascii();
        // At most 19 digits: no `u64` overflow.
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) || part.len() > 19 {
            return Err(Error::ContentLength);
        }
        let n = part
            .iter()
            .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0'));
        if known.is_some_and(|l| l != n) {
            return Err(Error::ContentLength);
        }
        known = Some(n);
    }
    Ok(known)
}

/// A response body read from its connection as it is polled.
pub struct ResponseBody {
    conn: Option<Connection>,
    state: State,
    recycle: Option<Arc<dyn Recycle>>,
    /// Whether the failure about to be reported was held back once (see `poll_frame`).
    failure_deferred: bool,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes left.
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// This many bytes left in the current chunk, then its CRLF.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer fields after the last chunk, up to an empty line.
    Trailers,
    /// Until the connection ends.
    Close,
    Done,
}

impl ResponseBody {
    fn new(conn: Connection, framing: Framing, recycle: Option<Arc<dyn Recycle>>) -> ResponseBody {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        let mut body = ResponseBody {
            conn: Some(conn),
            state,
            recycle,
            failure_deferred: false,
        };
        if state == State::Done {
            body.finish();
        }
        body
    }

    /// The body was read to its end: the connection goes back to its pool, if it may.
    fn finish(&mut self) {
        self.state = State::Done;
        if let (Some(conn), Some(recycle)) = (self.conn.take(), self.recycle.take()) {
            recycle.recycle(conn);
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) | State::ChunkData(left) => {
                    if conn.0.read.is_empty() {
                        ready!(conn.poll_more(cx))?;
                    }
                    let take = conn
                        .0
                        .read
                        .len()
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    let data = conn.0.read.split_to(take).freeze();
                    let left = left - take as u64;
                    match self.state {
                        State::Length(_) if left == 0 => self.finish(),
                        State::Length(_) => self.state = State::Length(left),
                        _ if left == 0 => self.state = State::ChunkEnd,
                        _ => self.state = State::ChunkData(left),
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                State::Close => {
                    if conn.0.read.is_empty() && ready!(conn.poll_fill(cx))? == 0 {
                        self.state = State::Done;
                        self.conn = None;
                        return Poll::Ready(None);
                    }
                    let data = conn.0.read.split().freeze();
                    return Poll::Ready(Some(Ok(data)));
                }
                State::ChunkSize => match take_line(&mut conn.0.read)? {
                    Some(line) => {
                        let size = parse_chunk_size(&line)?;
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    None => ready!(conn.poll_more(cx))?,
                },
                State::ChunkEnd => {
                    if conn.0.read.len() < 2 {
                        ready!(conn.poll_more(cx))?;
                        continue;
                    }
                    if &conn.0.read[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(BodyError::Chunked("no CRLF after data"))));
                    }
                    conn.0.read.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => match find_crlf(&conn.0.read) {
                    // An empty line ends the trailer section (dropped: not forwarded).
                    Some(0) => {
                        conn.0.read.advance(2);
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Some(end) => conn.0.read.advance(end + 2),
                    None => {
                        if conn.0.read.len() > MAX_HEAD {
                            return Poll::Ready(Some(Err(BodyError::Chunked(
                                "trailers too large",
                            ))));
                        }
                        ready!(conn.poll_more(cx))?;
                    }
                },
            }
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match ready!(this.poll_data(cx)) {
            Some(Ok(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            // A failure found right after data (the upstream hung up mid-body, its last
            // bytes and its end read together) is held back for one poll, so that the
            // writer of this body (hyper's server) sends what it has first: the client
            // then sees the response head and a body that ends early, not a connection
            // closed before anything. Nothing is lost: the next poll reads the end again.
            Some(Err(_)) if !this.failure_deferred => {
                this.failure_deferred = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Err(e)) => {
                // A broken body leaves the connection in no known state.
                this.state = State::Done;
                this.conn = None;
                Poll::Ready(Some(Err(e)))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

/// The next CRLF-terminated line of `buf`, taken out without its CRLF; `None` until one
/// is complete.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, BodyError> {
    match find_crlf(buf) {
        Some(end) => {
            let line = buf.split_to(end);
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(BodyError::Chunked("chunk-size line too long")),
        None => Ok(None),
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// A chunk-size line's size (hex digits, then optional `;extensions`).
fn parse_chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(BodyError::Chunked("bad chunk size"));
    }
    digits.iter().try_fold(0u64, |size, &b| {
        let digit = (b as char)
            .to_digit(16)
            .ok_or(BodyError::Chunked("bad chunk size"))?;
        Ok(size * 16 + u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    //! The codec against real loopback sockets: a test server writes exactly the bytes
    //! under test (split where a real peer might split them) and records what it read.

    use std::sync::Mutex;
    use std::time::Duration;

    use http_body_util::{BodyExt, StreamBody};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    /// Longer than any of these exchanges takes.
    const TIMEOUT: Duration = Duration::from_secs(10);

    fn within(timeout: Duration) -> tokio::time::Instant {
        tokio::time::Instant::now() + timeout
    }

    /// Keeps what is recycled.
    #[derive(Default)]
    struct Pool(Mutex<Vec<Connection>>);

    impl Recycle for Pool {
        fn recycle(&self, connection: Connection) {
            self.0.lock().expect("pool").push(connection);
        }
    }

    impl Pool {
        fn len(&self) -> usize {
            self.0.lock().expect("pool").len()
        }
    }

    /// A server that reads one request head (and `body_len` more bytes), then writes
    /// `parts` one by one, pausing between them; it hands back what it read.
    async fn server(
        parts: Vec<&'static [u8]>,
        body_len: usize,
    ) -> (Connection, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).await.expect("read");
                seen.extend_from_slice(&buf[..n]);
                let head_end = seen.windows(4).position(|w| w == b"\r\n\r\n");
                if n == 0 || head_end.is_some_and(|end| seen.len() >= end + 4 + body_len) {
                    break;
                }
            }
            for part in parts {
                stream.write_all(part).await.expect("write");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        (Connection::new(Box::new(stream)), task)
    }

    fn get(path: &str) -> Request<Body> {
        Request::builder()
            .uri(path)
            .header("host", "upstream")
            .body(Body::Empty)
            .expect("request")
    }

    /// `GET path` on `conn`, with a pool to recycle it into.
    async fn get_pooled(conn: Connection, path: &str) -> (Response<ResponseBody>, Arc<Pool>) {
        let pool = Arc::new(Pool::default());
        let response = conn
            .send(
                get(path),
                Added::default(),
                Some(pool.clone()),
                within(TIMEOUT),
            )
            .await
            .expect("response");
        (response, pool)
    }

    async fn text(body: ResponseBody) -> Result<String, BoxError> {
        let bytes = Body::upstream(body).collect().await?.to_bytes();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn a_reused_connection_times_its_next_exchange_too() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Answers the first request, then reads the second and says nothing.
        let _server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await.expect("read");
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .expect("write");
            let _ = stream.read(&mut buf).await.expect("read");
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let conn = Connection::new(Box::new(TcpStream::connect(addr).await.expect("connect")));
        let (response, pool) = get_pooled(conn, "/").await;
        assert_eq!(text(response.into_body()).await.expect("body"), "ok");
        let conn = pool.0.lock().expect("pool").pop().expect("recycled");
        let started = std::time::Instant::now();
        let timeout = Duration::from_millis(200);
        let sent = conn
            .send(get("/"), Added::default(), None, within(timeout))
            .await;
        assert!(matches!(sent, Err(Error::Timeout)), "{sent:?}");
        assert!(started.elapsed() >= timeout);
    }

    #[tokio::test]
    async fn content_length_response_recycles_the_connection() {
        let (conn, server) = server(
            vec![
                b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nContent-Length: 5\r\nX-A: 1\r\nset-cookie: b=2\r\n\r\nhel",
                b"lo",
            ],
            0,
        )
        .await;
        let (response, pool) = get_pooled(conn, "/a?b=c").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-a"], "1");
        let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(response.headers()["content-length"], "5");
        assert_eq!(text(response.into_body()).await.expect("body"), "hello");
        assert_eq!(pool.len(), 1);
        let seen = String::from_utf8(server.await.expect("server")).expect("utf-8");
        assert!(seen.starts_with("GET /a?b=c HTTP/1.1\r\n"), "{seen}");
        assert!(seen.contains("host: upstream\r\n"), "{seen}");
    }

    #[tokio::test]
    async fn chunked_response_with_extensions_and_trailers_split_anywhere() {
        let (conn, _server) = server(
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=",
                b"1\r\nhel",
                b"lo\r\n1",
                b"1\r\n, wonderful world\r",
                b"\n0\r\nX-Trailer: t\r\n",
                b"\r\n",
            ],
            0,
        )
        .await;
        let (response, pool) = get_pooled(conn, "/").await;
        assert!(!response.headers().contains_key(CONTENT_LENGTH));
        assert_eq!(
            text(response.into_body()).await.expect("body"),
            "hello, wonderful world"
        );
        assert_eq!(
            pool.len(),
            1,
            "a chunked body read to its end frees the connection"
        );
    }

    #[tokio::test]
    async fn interim_responses_are_skipped() {
        let (conn, _server) = server(
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                b"HTTP/1.1 204 No Content\r\n\r\n",
            ],
            0,
        )
        .await;
        let response = conn
            .send(get("/"), Added::default(), None, within(TIMEOUT))
            .await
            .expect("response");
        assert_eq!(response.status(), 204);
        assert!(response.body().is_end_stream());
    }

    #[tokio::test]
    async fn a_response_that_ends_with_the_connection_is_read_to_it_and_not_recycled() {
        let (conn, _server) = server(vec![b"HTTP/1.1 200 OK\r\n\r\nuntil ", b"the end"], 0).await;
        let (response, pool) = get_pooled(conn, "/").await;
        assert_eq!(
            text(response.into_body()).await.expect("body"),
            "until the end"
        );
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn connection_close_is_not_recycled() {
        let (conn, _server) = server(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"],
            0,
        )
        .await;
        let (response, pool) = get_pooled(conn, "/").await;
        assert_eq!(text(response.into_body()).await.expect("body"), "ok");
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn a_truncated_body_fails() {
        let (conn, _server) = server(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"],
            0,
        )
        .await;
        let (response, pool) = get_pooled(conn, "/").await;
        assert!(text(response.into_body()).await.is_err());
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn bad_responses_are_errors() {
        for bytes in [
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n".as_slice(),
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"SMTP ready\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-",
        ] {
            let (conn, _server) = server(vec![bytes], 0).await;
            assert!(
                conn.send(get("/"), Added::default(), None, within(TIMEOUT))
                    .await
                    .is_err(),
                "{bytes:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_connection_closed_before_any_answer_hands_the_request_back() {
        let (conn, _server) = server(vec![], 0).await;
        match conn
            .send(get("/again?x=1"), Added::default(), None, within(TIMEOUT))
            .await
        {
            Err(Error::Unanswered(Unanswered {
                cause,
                request: Some(head),
            })) => {
                assert!(cause.is_none(), "a plain close: {cause:?}");
                assert_eq!(head.uri, "/again?x=1");
                assert_eq!(head.headers["host"], "upstream");
            }
            other => panic!("{other:?}"),
        }
        // Closed after part of a head: that was an answer, broken.
        let (conn, _server) = server(vec![b"HTTP/1.1 200 OK\r\nContent-"], 0).await;
        let sent = conn
            .send(get("/"), Added::default(), None, within(TIMEOUT))
            .await;
        assert!(matches!(sent, Err(Error::ClosedInHead)), "{sent:?}");
    }

    #[tokio::test]
    async fn added_fields_are_written_in_place_of_the_requests() {
        let (conn, seen) = server(vec![b"HTTP/1.1 204 No Content\r\n\r\n"], 0).await;
        let request = Request::get("/")
            .header("host", "client.example")
            .header("x-forwarded-for", "6.6.6.6")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .header("accept", "*/*")
            .body(Body::Empty)
            .expect("request");
        let peer = "10.1.2.3".parse().expect("ip");
        let trace = crate::trace::TraceContext::from_headers(request.headers(), &mut || 7);
        let forwarding = Forwarding::new(
            request.headers(),
            peer,
            &crate::headers::ip_header_value(peer),
            &[],
            "https",
            Some(HeaderValue::from_static("client.example")),
            trace,
        );
        let host = HeaderValue::from_static("upstream:8080");
        let added = Added {
            host: Some(&host),
            forwarding: Some(&forwarding),
        };
        conn.send(request, added, None, within(TIMEOUT))
            .await
            .expect("response");
        let seen = String::from_utf8(seen.await.expect("server")).expect("utf-8");
        let mut lines: Vec<&str> = seen.lines().collect();
        assert_eq!(lines.remove(0), "GET / HTTP/1.1");
        // `Host` first, as HTTP/1.1 asks (RFC 9112 §3.2).
        assert_eq!(lines.remove(0), "host: upstream:8080");
        lines.sort_unstable();
        let traceparent = format!(
            "traceparent: {}",
            std::str::from_utf8(&trace.traceparent_text()).expect("ascii")
        );
        let mut expected = vec![
            "",
            "accept: */*",
            traceparent.as_str(),
            "x-forwarded-for: 10.1.2.3",
            "x-forwarded-host: client.example",
            "x-forwarded-proto: https",
        ];
        expected.sort_unstable();
        assert_eq!(lines, expected, "{seen}");
    }

    #[tokio::test]
    async fn request_bodies_are_framed_by_length_or_chunked() {
        let (conn, seen) = server(vec![b"HTTP/1.1 204 No Content\r\n\r\n"], 5).await;
        let request = Request::post("/")
            .body(Body::full("hello"))
            .expect("request");
        conn.send(request, Added::default(), None, within(TIMEOUT))
            .await
            .expect("response");
        let seen = String::from_utf8(seen.await.expect("server")).expect("utf-8");
        assert!(seen.contains("content-length: 5\r\n\r\nhello"), "{seen}");

        let chunks = ["ab", "", "cde"].map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from(c))));
        let stream = StreamBody::new(futures_util::stream::iter(chunks));
        let body = Body::Boxed(http_body_util::BodyExt::boxed_unsync(stream));
        // "2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n" is 20 bytes.
        let (conn, seen) = server(vec![b"HTTP/1.1 204 No Content\r\n\r\n"], 20).await;
        let request = Request::post("/").body(body).expect("request");
        conn.send(request, Added::default(), None, within(TIMEOUT))
            .await
            .expect("response");
        let seen = String::from_utf8(seen.await.expect("server")).expect("utf-8");
        assert!(
            seen.contains("transfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"),
            "{seen}"
        );

        let (conn, seen) = server(vec![b"HTTP/1.1 204 No Content\r\n\r\n"], 0).await;
        conn.send(
            Request::post("/").body(Body::Empty).expect("request"),
            Added::default(),
            None,
            within(TIMEOUT),
        )
        .await
        .expect("response");
        let seen = String::from_utf8(seen.await.expect("server")).expect("utf-8");
        assert!(seen.contains("content-length: 0\r\n"), "{seen}");
    }

    #[tokio::test]
    async fn an_idle_connection_knows_when_its_peer_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut conn = Connection::new(Box::new(TcpStream::connect(addr).await.expect("connect")));
        let (peer, _) = listener.accept().await.expect("accept");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(conn.is_open());
        drop(peer);
        // The reactor must see the end before the check can.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while conn.is_open() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never saw the peer close"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a").ok(), Some(26));
        assert_eq!(parse_chunk_size(b"1A ;name=value").ok(), Some(26));
        assert_eq!(parse_chunk_size(b"0").ok(), Some(0));
        for bad in [b"".as_slice(), b"zz", b"-1", b"1234567890abcdef0"] {
            assert!(parse_chunk_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        use crate::headers::header_map as headers;
        let framing = |headers: &HeaderMap, status, head| {
            super::framing(headers, status, head).map(|(framing, _)| framing)
        };
        let ok = StatusCode::OK;
        let cl = headers(&[("content-length", "5")]);
        assert_eq!(framing(&cl, ok, false).ok(), Some(Framing::Length(5)));
        assert_eq!(framing(&cl, ok, true).ok(), Some(Framing::Length(0)));
        assert_eq!(
            framing(&cl, StatusCode::NOT_MODIFIED, false).ok(),
            Some(Framing::Length(0))
        );
        let both = headers(&[
            ("content-length", "5"),
            ("transfer-encoding", "gzip, chunked"),
        ]);
        assert_eq!(framing(&both, ok, false).ok(), Some(Framing::Chunked));
        let gzip = headers(&[("transfer-encoding", "chunked, gzip")]);
        assert_eq!(framing(&gzip, ok, false).ok(), Some(Framing::Close));
        assert_eq!(
            framing(&HeaderMap::new(), ok, false).ok(),
            Some(Framing::Close)
        );
        let same = headers(&[("content-length", "7, 7"), ("content-length", "7")]);
        assert_eq!(framing(&same, ok, false).ok(), Some(Framing::Length(7)));
        let differ = headers(&[("content-length", "7"), ("content-length", "8")]);
        assert!(framing(&differ, ok, false).is_err());
        let bad = headers(&[("content-length", "x"), ("transfer-encoding", "chunked")]);
        assert_eq!(framing(&bad, ok, false).ok(), Some(Framing::Chunked));
    }

    #[test]
    fn connection_close_on_any_line_ends_the_connection() {
        use crate::headers::header_map as headers;
        let close = |pairs: &[(&str, &str)]| {
            super::framing(&headers(pairs), StatusCode::OK, false).map(|(_, close)| close)
        };
        let length = ("content-length", "1");
        assert_eq!(close(&[length]).ok(), Some(false));
        assert_eq!(
            close(&[length, ("connection", "keep-alive")]).ok(),
            Some(false)
        );
        assert_eq!(close(&[length, ("connection", "Close")]).ok(), Some(true));
        assert_eq!(
            close(&[
                ("connection", "keep-alive"),
                length,
                ("connection", "x, close ")
            ])
            .ok(),
            Some(true)
        );
        // Also where the body's framing is fixed by the status.
        let no_content = super::framing(
            &headers(&[("connection", "close")]),
            StatusCode::NO_CONTENT,
            false,
        );
        assert_eq!(no_content.ok(), Some((Framing::Length(0), true)));
    }
}
