//! weir's own HTTP/1.1 server, for the requests most of a gateway's traffic is: HTTP/1.1,
//! no request body, no upgrade ([decision 0008](../../../docs/decisions/0008-own-http1-server.md)).
//!
//! A client connection that may speak HTTP/1 starts here. Each request head is read into
//! a buffer the connection keeps, parsed with `httparse` into the header map the previous
//! response left (its allocation reused), served by [`Gateway::serve`] and answered by
//! writing the response head and body straight to the connection, coalesced into one
//! write when the body is at hand. A head that is not HTTP/1.1 gets the gateway's JSON
//! `400` and the connection ends. The first request this server does not take (a body, an
//! upgrade, `Expect`, `HEAD`, HTTP/1.0, a head with too many fields or too large, or not
//! HTTP/1 at all: h2c) hands the connection over: hyper's server serves it from there,
//! starting with the bytes read and not consumed ([`Ended::Handover`]), so every answer
//! to those is hyper's as before.
//!
//! What hyper's server cost per request here (≈ 10 k instructions of a proxied request's
//! 27 k; `bench/RESULTS.md`) is the reason this exists.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::{Activity, Shared, Shutdown, TrackedBody, TrackedIo};
use crate::body::{Body, BoxError};
use crate::error::GatewayError;
use crate::headers::X_REQUEST_ID;
use crate::http1::{MAX_FIELDS, Offsets, Table, has_close};
use crate::pipeline::ConnInfo;

/// Bytes read from the connection at a time, at most.
const READ_SIZE: usize = 8 * 1024;
/// The least room a read is given.
const MIN_READ: usize = 1024;
/// Body bytes copied behind the response head to go out in the same write; larger bodies
/// are written from their own buffers.
const COALESCE_BYTES: usize = 16 * 1024;

/// How this server left a connection.
pub(super) enum Ended {
    /// Closed: by the client, a timeout, an error or the drain.
    Closed,
    /// A request this server does not take: hyper's server serves the connection from
    /// here, reading these bytes first.
    Handover(Bytes),
}

/// What a connection's server loop works with.
pub(super) struct Connection<'a, I, W> {
    pub io: &'a mut TrackedIo<I>,
    pub conn: &'a Arc<ConnInfo>,
    pub shared: &'a Arc<Shared>,
    pub activity: &'a Arc<Activity>,
    /// Buffered head bytes past which a head still incomplete goes to hyper's server
    /// (which answers `431` as before).
    pub head_limit: usize,
    /// The connection's timeouts ([`Activity::watchdog`]).
    pub watchdog: &'a mut W,
    pub shutdown: &'a mut Shutdown,
    /// Set once the drain began (also for hyper's server after a handover).
    pub draining: &'a mut bool,
}

impl<I, W> Connection<'_, I, W>
where
    I: AsyncRead + AsyncWrite + Unpin,
    W: Future<Output = &'static str> + Unpin,
{
    /// Serves requests until the connection ends or one goes to hyper's server.
    pub async fn serve(mut self) -> Ended {
        let mut read = BytesMut::with_capacity(READ_SIZE);
        let mut write = Vec::new();
        // A response's map, emptied, holds the next request's fields.
        let mut fields = HeaderMap::new();
        let mut table = Table::new();
        loop {
            let (request, close) = loop {
                // (An empty buffer, the usual one after a response, is not parsed.)
                if !read.is_empty() {
                    match parse_request(&mut read, &mut fields, &mut table) {
                        Parsed::Request(request, close) => break (request, close),
                        Parsed::Handover => return Ended::Handover(read.freeze()),
                        Parsed::Malformed => return self.refuse(&mut write).await,
                        Parsed::Partial if read.len() >= self.head_limit => {
                            return Ended::Handover(read.freeze());
                        }
                        Parsed::Partial => {}
                    }
                }
                if *self.draining && read.is_empty() {
                    return Ended::Closed;
                }
                // Room for a read. Served heads stay referenced by their requests' fields
                // (slices of the buffer), so only a buffer with no room left is replaced,
                // not one per request.
                if read.capacity() - read.len() < MIN_READ {
                    read.reserve(READ_SIZE);
                }
                tokio::select! {
                    biased;
                    result = self.io.read_buf(&mut read) => match result {
                        Ok(0) => return Ended::Closed,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "connection read failed");
                            return Ended::Closed;
                        }
                    },
                    () = &mut *self.shutdown, if !*self.draining => *self.draining = true,
                    reason = &mut *self.watchdog => {
                        tracing::debug!(reason, "closing connection");
                        return Ended::Closed;
                    }
                }
            };
            super::yield_once().await;
            let guard = self.activity.request_started(Version::HTTP_11);
            let gateway = self.shared.gateway();
            let (response, exchange) = {
                let mut serve = std::pin::pin!(gateway.serve(request, self.conn));
                loop {
                    tokio::select! {
                        biased;
                        served = serve.as_mut() => break served,
                        () = &mut *self.shutdown, if !*self.draining => *self.draining = true,
                        reason = &mut *self.watchdog => {
                            tracing::debug!(reason, "closing connection");
                            return Ended::Closed;
                        }
                    }
                }
            };
            let (mut parts, body) = response.into_parts();
            let mut body = TrackedBody::new(body, guard, Some((gateway, exchange)));
            let close = close || *self.draining;
            let written = tokio::select! {
                biased;
                written = write_response(self.io, &mut write, &parts, &mut body, close) => written,
                reason = &mut *self.watchdog => {
                    tracing::debug!(reason, "closing connection");
                    return Ended::Closed;
                }
            };
            // Sent: the `log` phase runs now, with the bytes counted.
            drop(body);
            match written {
                Ok(true) => {}
                Ok(false) => return self.end().await,
                Err(e) => {
                    tracing::debug!(error = %e, "connection write failed");
                    return Ended::Closed;
                }
            }
            // (Swapped, not taken: the empty map goes with `parts`, none made or dropped.)
            std::mem::swap(&mut fields, &mut parts.headers);
            fields.clear();
        }
    }

    /// Answers a malformed head with the gateway's JSON `400` and ends the connection (in
    /// order): where a next request would start is unknown. The request never reached a
    /// gateway, so only the debug log sees it.
    async fn refuse(mut self, out: &mut Vec<u8>) -> Ended {
        let request_id = crate::headers::new_request_id();
        let error = GatewayError::MalformedHead;
        tracing::debug!(
            request_id = request_id.to_str().unwrap_or(""),
            error = %error,
            "request refused"
        );
        let mut response = error.into_response(request_id.to_str().unwrap_or(""));
        response.headers_mut().insert(&X_REQUEST_ID, request_id);
        let (parts, body) = response.into_parts();
        let guard = self.activity.request_started(Version::HTTP_11);
        let mut body = TrackedBody::new(body, guard, None);
        tokio::select! {
            biased;
            written = write_response(self.io, out, &parts, &mut body, true) => {
                if written.is_ok() {
                    return self.end().await;
                }
            }
            _ = &mut *self.watchdog => {}
        }
        Ended::Closed
    }

    /// Ends the connection in order (a TCP FIN, a TLS close_notify), as hyper's server
    /// does, bounded by the timeouts like any write.
    async fn end(&mut self) -> Ended {
        tokio::select! {
            biased;
            _ = self.io.shutdown() => {}
            _ = &mut *self.watchdog => {}
        }
        Ended::Closed
    }
}

/// What [`parse_request`] found at the front of the buffer.
// Matched at once where it is returned: boxing the request would cost an allocation per
// request for nothing.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// A head not yet complete.
    Partial,
    /// A request this server takes, and whether its client asked to close after it.
    Request(Request<Body>, bool),
    /// A request for hyper's server (left in the buffer).
    Handover,
    /// Not an HTTP/1.1 head: answered `400` ([`GatewayError::MalformedHead`]).
    Malformed,
}

/// Takes a request head this server serves off the front of `buf`, its fields in
/// `fields` (emptied; the request then owns the map). Field values are slices of the
/// head's bytes, shared, not copied; `table` is the connection's room for their offsets.
fn parse_request(buf: &mut BytesMut, fields: &mut HeaderMap, table: &mut Table) -> Parsed {
    // A head with more fields than these slots is handed to hyper's server, whose limit
    // leaves room for the gateway's JSON `431`.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // Not HTTP/1 (h2c's preface, other versions), or more fields than the slots
        // (hyper's limit leaves room for the gateway's JSON `431`): hyper's server.
        Err(httparse::Error::Version | httparse::Error::TooManyHeaders) => {
            return Parsed::Handover;
        }
        Err(_) => return Parsed::Malformed,
    };
    if parsed.version != Some(1) {
        return Parsed::Handover;
    }
    let Ok(method) = Method::from_bytes(parsed.method.unwrap_or("").as_bytes()) else {
        return Parsed::Malformed;
    };
    if method == Method::HEAD || method == Method::CONNECT {
        return Parsed::Handover;
    }
    let mut close = false;
    for field in parsed.headers.iter() {
        let name = field.name.as_bytes();
        let is = |expected: &[u8]| name.eq_ignore_ascii_case(expected);
        match name.len() {
            // A body (a length of 0 is none), an upgrade, or a `100 Continue` to send.
            17 if is(b"transfer-encoding") => return Parsed::Handover,
            14 if is(b"content-length") && field.value != b"0" => return Parsed::Handover,
            7 if is(b"upgrade") => return Parsed::Handover,
            6 if is(b"expect") => return Parsed::Handover,
            10 if is(b"connection") => close |= has_close(field.value),
            _ => {}
        }
    }
    let offsets = Offsets::new(buf, parsed.headers, table);
    let target = offsets.of(parsed.path.unwrap_or("").as_bytes());
    let head = buf.split_to(len).freeze();
    let Some(request) = build_request(&head, method, target, &offsets, fields) else {
        // A target or field `httparse` passed and `http` does not take.
        return Parsed::Malformed;
    };
    Parsed::Request(request, close)
}

fn build_request(
    head: &Bytes,
    method: Method,
    (target_from, target_to): (u32, u32),
    offsets: &Offsets<'_>,
    fields: &mut HeaderMap,
) -> Option<Request<Body>> {
    let uri = Uri::from_maybe_shared(head.slice(target_from as usize..target_to as usize)).ok()?;
    offsets.fill(head, fields).ok()?;
    let mut request = Request::new(Body::Empty);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    std::mem::swap(request.headers_mut(), fields);
    Some(request)
}

/// How a response body is framed (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body: `1xx`, `204`, `304`.
    None,
    Length(u64),
    Chunked,
}

/// Writes a response; `Ok(true)` when the connection can carry the next request.
async fn write_response<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: &mut TrackedBody,
    close: bool,
) -> io::Result<bool> {
    out.clear();
    let (framing, close) = write_head(
        out,
        parts,
        body.size_hint().exact(),
        body.request_id(),
        close,
    );
    let mut remaining = match framing {
        Framing::None => return finish(io, out, !close).await,
        Framing::Length(len) => len,
        Framing::Chunked => 0,
    };
    loop {
        // Polled once before anything is written: a body at hand (a small upstream
        // response, a fixed one) goes out with the head in one write; a body that is
        // not sends the head first, as a streamed response must.
        let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx)));
        let frame = match polled.await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                send(io, out).await?;
                io.flush().await?;
                body.frame().await
            }
        };
        let data = match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers are not sent
            },
            Some(Err(e)) => return failed(io, out, &e).await,
        };
        match framing {
            Framing::Length(_) => {
                if data.len() as u64 > remaining {
                    // More than the length the head promised: the rest is not sent, and
                    // the connection ends here.
                    tracing::debug!("response body longer than its content-length");
                    let data = data.slice(..remaining as usize);
                    append(io, out, &data).await?;
                    return finish(io, out, false).await;
                }
                remaining -= data.len() as u64;
                append(io, out, &data).await?;
            }
            Framing::Chunked if !data.is_empty() => {
                // Writing into a `Vec` cannot fail.
                let _ = std::io::Write::write_fmt(out, format_args!("{:x}\r\n", data.len()));
                append(io, out, &data).await?;
                out.extend_from_slice(b"\r\n");
            }
            Framing::Chunked | Framing::None => {}
        }
    }
    match framing {
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        Framing::Length(_) if remaining > 0 => {
            // Shorter than the head said: the client sees the connection end early.
            tracing::debug!(
                missing = remaining,
                "response body shorter than its content-length"
            );
            return finish(io, out, false).await;
        }
        _ => {}
    }
    finish(io, out, !close).await
}

/// A body that failed mid-response: what was sent stays sent, and the connection ends
/// so the client sees a truncated response (for a chunked one, no last chunk).
async fn failed<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    error: &BoxError,
) -> io::Result<bool> {
    tracing::debug!(error = %error, "response body failed");
    finish(io, out, false).await
}

/// Sends what is buffered and flushes; `keep_alive` is the answer.
async fn finish<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    keep_alive: bool,
) -> io::Result<bool> {
    send(io, out).await?;
    io.flush().await?;
    Ok(keep_alive)
}

async fn send<I: AsyncWrite + Unpin>(io: &mut I, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        io.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

/// Queues `data` behind what is buffered, or writes both when it is large.
async fn append<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    data: &Bytes,
) -> io::Result<()> {
    if out.len() + data.len() <= COALESCE_BYTES {
        out.extend_from_slice(data);
        return Ok(());
    }
    send(io, out).await?;
    io.write_all(data).await
}

/// Writes the response head: the response's fields but its framing ones, then the framing
/// of what is sent (`Content-Length` from the response's single valid field, else from
/// the body's exact length; chunked otherwise; none for `1xx`, `204`, `304`), `Connection:
/// close` when the connection ends after it (`close`, or the response's own field says
/// so), and a `Date` when the response has none. `request_id`, when there is one, goes out
/// as `x-request-id` in place of any the response has (what [`Exchange::stamp`] does to a
/// map, without its hashed insert). One pass over the fields; returns the framing and
/// whether the connection ends.
///
/// [`Exchange::stamp`]: crate::pipeline::Exchange::stamp
fn write_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body_len: Option<u64>,
    request_id: Option<&HeaderValue>,
    close: bool,
) -> (Framing, bool) {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // A 304 describes the representation it stands for: its length field stays.
    let not_modified = status == StatusCode::NOT_MODIFIED;
    // The first `Content-Length` field's value; `Some(None)` if not one valid number.
    let mut declared: Option<Option<u64>> = None;
    let mut says_close = false;
    let mut dated = false;
    for (name, value) in &parts.headers {
        if *name == CONTENT_LENGTH {
            declared = Some(match declared {
                None => value.to_str().ok().and_then(|text| text.parse().ok()),
                Some(_) => None,
            });
            if !not_modified {
                continue;
            }
        } else if *name == TRANSFER_ENCODING {
            continue;
        } else if *name == CONNECTION {
            says_close |= has_close(value.as_bytes());
        } else if *name == DATE {
            dated = true;
        } else if request_id.is_some() && *name == X_REQUEST_ID {
            continue;
        }
        crate::headers::write_field(out, name, value.as_bytes());
    }
    let framing = if status.is_informational() || status == StatusCode::NO_CONTENT || not_modified {
        Framing::None
    } else if let Some(len) = declared.flatten().or(body_len) {
        Framing::Length(len)
    } else {
        Framing::Chunked
    };
    match framing {
        Framing::None => {}
        Framing::Length(len) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if close && !says_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if let Some(id) = request_id {
        crate::headers::write_field(out, &X_REQUEST_ID, id.as_bytes());
    }
    if !dated {
        write_date(out);
    }
    out.extend_from_slice(b"\r\n");
    (framing, close || says_close)
}

/// Writes a `Date` field for now, formatted once per second per thread.
fn write_date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, String)> = const {
            std::cell::RefCell::new((0, String::new()))
        };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != second || text.is_empty() {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// An I/O stream that yields `prefix` before its own bytes: how hyper's server gets the
/// bytes this server read but did not serve.
pub(super) struct Prefixed<I> {
    prefix: Bytes,
    inner: I,
}

impl<I> Prefixed<I> {
    pub fn new(prefix: Bytes, inner: I) -> Prefixed<I> {
        Prefixed { prefix, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(text.as_bytes());
        let parsed = parse_request(&mut buf, &mut HeaderMap::new(), &mut Table::new());
        (parsed, buf)
    }

    #[test]
    fn a_bodiless_http11_request_is_taken_off_the_buffer_with_its_fields() {
        let (parsed, rest) = parse(
            "GET /a/b?q=1 HTTP/1.1\r\nHost: example.com\r\nX-Two: 1\r\nx-two: 2\r\nContent-Length: 0\r\n\r\nGET /next",
        );
        let Parsed::Request(request, close) = parsed else {
            panic!("not taken");
        };
        assert!(!close);
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "/a/b?q=1");
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()["host"], "example.com");
        assert_eq!(request.headers().get_all("x-two").iter().count(), 2);
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn connection_close_is_seen_in_any_case_and_place() {
        for value in ["close", "Keep-Alive, CLOSE", " foo ,close "] {
            let (parsed, _) = parse(&format!("GET / HTTP/1.1\r\nConnection: {value}\r\n\r\n"));
            assert!(matches!(parsed, Parsed::Request(_, true)), "{value}");
        }
        let (parsed, _) = parse("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n");
        assert!(matches!(parsed, Parsed::Request(_, false)));
    }

    #[test]
    fn what_this_server_does_not_take_stays_in_the_buffer_for_hyper() {
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_FIELDS {
            many.push_str(&format!("x-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        for head in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "HEAD / HTTP/1.1\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            // Smuggling shapes: a length beside chunked, two lengths, a bare LF before a
            // length, a signed length.
            "GET / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 7\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A: 1\nContent-Length: 5\r\n\r\nhello",
            "GET / HTTP/1.1\r\nContent-Length: +0\r\n\r\n",
            &many,
        ] {
            let (parsed, rest) = parse(head);
            assert!(matches!(parsed, Parsed::Handover), "{head:?} taken");
            assert_eq!(&rest[..], head.as_bytes(), "{head:?} not left as it was");
        }
    }

    #[test]
    fn heads_that_are_not_http11_are_malformed() {
        for head in [
            "GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            "G@T / HTTP/1.1\r\n\r\n",
            "GET /\0 HTTP/1.1\r\n\r\n",
            // A space before the colon, a folded line: smuggling shapes.
            "GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello",
            "GET / HTTP/1.1\r\nX-A: 1\r\n Content-Length: 5\r\n\r\nhello",
            // httparse takes this target, `http::Uri` does not.
            "GET http:// HTTP/1.1\r\n\r\n",
        ] {
            assert!(matches!(parse(head).0, Parsed::Malformed), "{head:?}");
        }
    }

    #[test]
    fn an_incomplete_head_waits_for_more() {
        let (parsed, rest) = parse("GET / HTTP/1.1\r\nHost: a\r\n");
        assert!(matches!(parsed, Parsed::Partial));
        assert_eq!(rest.len(), 25);
    }

    fn head(
        status: u16,
        fields: &[(&str, &str)],
        body_len: Option<u64>,
        close: bool,
    ) -> (String, Framing, bool) {
        let mut response = http::Response::new(());
        *response.status_mut() = StatusCode::from_u16(status).expect("status");
        *response.headers_mut() = crate::headers::header_map(fields);
        let (parts, ()) = response.into_parts();
        let mut out = Vec::new();
        let (framing, closes) = write_head(&mut out, &parts, body_len, None, close);
        (String::from_utf8(out).expect("ascii"), framing, closes)
    }

    #[test]
    fn response_heads_carry_the_framing_of_what_is_sent_and_no_other() {
        let date = "date: Sat, 05 Dec 2026 08:00:00 GMT";
        let fields = [
            ("date", "Sat, 05 Dec 2026 08:00:00 GMT"),
            ("content-length", "5"),
            ("transfer-encoding", "chunked"),
            ("x-a", "1"),
        ];
        // The response's own length first, the body's otherwise.
        assert_eq!(
            head(200, &fields, Some(7), false),
            (
                format!("HTTP/1.1 200 OK\r\n{date}\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n"),
                Framing::Length(5),
                false
            )
        );
        assert_eq!(
            head(200, &fields[..1], Some(7), false).1,
            Framing::Length(7)
        );
        // Unknown length: chunked. Closing: said once.
        assert_eq!(
            head(200, &fields[..1], None, true),
            (
                format!(
                    "HTTP/1.1 200 OK\r\n{date}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                ),
                Framing::Chunked,
                true
            )
        );
        assert_eq!(
            head(204, &fields, Some(0), false),
            (
                format!("HTTP/1.1 204 No Content\r\n{date}\r\nx-a: 1\r\n\r\n"),
                Framing::None,
                false
            )
        );
        // A 304 describes the representation it stands for: its length stays.
        assert_eq!(
            head(304, &fields, None, false).0,
            format!("HTTP/1.1 304 Not Modified\r\n{date}\r\ncontent-length: 5\r\nx-a: 1\r\n\r\n")
        );
        // The response's own `Connection: close` ends the connection, written once; a
        // `Date` is added when there was none.
        let (closing, _, closes) = head(599, &[("connection", "close")], Some(0), true);
        assert!(closes);
        assert!(
            closing
                .starts_with("HTTP/1.1 599 \r\nconnection: close\r\ncontent-length: 0\r\ndate: "),
            "{closing}"
        );
        assert_eq!(closing.matches("connection").count(), 1, "{closing}");
        assert!(closing.ends_with(" GMT\r\n\r\n"), "{closing}");
        assert!(head(200, &[("connection", "Keep-Alive, Close")], None, false).2);
    }

    #[test]
    fn the_request_id_replaces_the_responses_own() {
        let mut response = http::Response::new(());
        *response.headers_mut() = crate::headers::header_map(&[
            ("date", "Sat, 05 Dec 2026 08:00:00 GMT"),
            ("x-request-id", "from-upstream"),
            ("x-request-id", "twice"),
            ("x-a", "1"),
        ]);
        let (parts, ()) = response.into_parts();
        let id = HeaderValue::from_static("0123abcd");
        let mut out = Vec::new();
        write_head(&mut out, &parts, Some(0), Some(&id), false);
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "HTTP/1.1 200 OK\r\ndate: Sat, 05 Dec 2026 08:00:00 GMT\r\nx-a: 1\r\n\
             content-length: 0\r\nx-request-id: 0123abcd\r\n\r\n"
        );
    }

    #[test]
    fn a_length_field_counts_only_when_single_and_numeric() {
        for fields in [
            &[("content-length", "x")][..],
            &[("content-length", "1"), ("content-length", "1")][..],
        ] {
            assert_eq!(
                head(200, fields, Some(9), false).1,
                Framing::Length(9),
                "{fields:?}"
            );
            assert_eq!(
                head(200, fields, None, false).1,
                Framing::Chunked,
                "{fields:?}"
            );
        }
    }
}
