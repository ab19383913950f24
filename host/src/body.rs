//! The one body type that flows through the gateway, in both directions.
//!
//! An enum rather than a boxed trait object: the common cases (a streamed client body, a
//! streamed upstream body, a small fixed body) cost no allocation and no dynamic dispatch.
//! Request bodies are capped as they stream ([`Body::limited`]), so `max_body` holds for
//! chunked uploads whose size nobody announced.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;

/// Errors from a body (boxed, as hyper wants them).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed request body went past its limit.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("body larger than {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// Why a streamed body failed: recorded where it failed, so that whoever passes the body
/// on can tell whose fault a failed send was. hyper's HTTP/1 client hands a request body's
/// error back from `send_request`, but its HTTP/2 client only resets the stream, and the
/// error (a `413`, or a client that hung up mid-upload) would otherwise look like the
/// upstream's failure.
#[derive(Debug, Clone)]
pub enum BodyFault {
    /// More than the limit came.
    TooLarge(BodyTooLarge),
    /// The peer sending the body failed (hung up mid-body, broke the framing…).
    Peer(String),
}

/// A shared view of a streamed body as it is read: its [`BodyFault`], if it has one, and
/// the bytes read so far (see [`Body::watch_faults`]).
#[derive(Debug, Clone, Default)]
pub struct FaultWatch(Arc<Watched>);

#[derive(Debug, Default)]
struct Watched {
    fault: OnceLock<BodyFault>,
    bytes: AtomicU64,
}

impl FaultWatch {
    /// The fault, once the body failed.
    pub fn fault(&self) -> Option<&BodyFault> {
        self.0.fault.get()
    }

    /// Data bytes read from the body so far.
    pub fn bytes(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }

    fn record(&self, fault: BodyFault) {
        // Only the first fault counts; a body that failed yields nothing after.
        let _ = self.0.fault.set(fault);
    }

    fn count(&self, len: u64) {
        self.0.bytes.fetch_add(len, Ordering::Relaxed);
    }
}

/// A request or response body.
pub enum Body {
    /// Nothing.
    Empty,
    /// A fixed body, handed out as one frame.
    Full(Option<Bytes>),
    /// A body streamed from a peer, with an optional byte limit.
    Stream(Stream),
    /// Bytes already read from a body, then the rest of it (the response cache gives back
    /// a body it started to buffer and found too large to store).
    Chain(Box<Chain>),
    /// A body made by someone else, boxed: the streamed response of a `wasi:http` handler
    /// (`plugin/wasi_http.rs`), which bounds it and ends it with an error if the guest
    /// fails mid-body.
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

/// See [`Body::Chain`].
#[derive(Debug)]
pub struct Chain {
    pub head: Option<Bytes>,
    pub rest: Body,
}

/// A streamed body, capped at `limit` bytes.
pub struct Stream {
    inner: Source,
    remaining: u64,
    limit: u64,
    /// Told why the body failed, when someone asked ([`Body::watch_faults`]).
    faults: Option<FaultWatch>,
}

/// Where a streamed body comes from.
enum Source {
    /// hyper: a client's request body, or a response from hyper's client (HTTP/2 and
    /// WebSocket handshakes).
    Hyper(Incoming),
    /// A response read by weir's own HTTP/1.1 client, which returns its connection to
    /// the pool when read to the end.
    Upstream(crate::upstream::h1::ResponseBody),
}

impl Source {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            Source::Hyper(incoming) => Pin::new(incoming)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
            Source::Upstream(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Source::Hyper(incoming) => incoming.is_end_stream(),
            Source::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Source::Hyper(incoming) => incoming.size_hint(),
            Source::Upstream(body) => body.size_hint(),
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Empty => f.write_str("Body::Empty"),
            Body::Full(b) => write!(f, "Body::Full({} bytes)", b.as_ref().map_or(0, Bytes::len)),
            Body::Stream(s) => write!(f, "Body::Stream(limit {})", s.limit),
            Body::Chain(c) => write!(f, "Body::Chain({:?})", c.rest),
            Body::Boxed(_) => f.write_str("Body::Boxed"),
        }
    }
}

impl Body {
    /// A fixed body.
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Body::Empty
        } else {
            Body::Full(Some(bytes))
        }
    }

    /// A streamed body with no limit.
    pub fn stream(inner: Incoming) -> Body {
        Body::limited(inner, u64::MAX)
    }

    /// A streamed body that fails with [`BodyTooLarge`] once more than `limit` bytes came.
    pub fn limited(inner: Incoming, limit: u64) -> Body {
        Body::Stream(Stream {
            inner: Source::Hyper(inner),
            remaining: limit,
            limit,
            faults: None,
        })
    }

    /// A response body read by weir's HTTP/1.1 client, with no limit.
    pub fn upstream(inner: crate::upstream::h1::ResponseBody) -> Body {
        Body::Stream(Stream {
            inner: Source::Upstream(inner),
            remaining: u64::MAX,
            limit: u64::MAX,
            faults: None,
        })
    }
}

impl Body {
    /// Caps a streamed body at `limit` bytes from here on (no effect on fixed bodies, whose
    /// size the caller checks up front).
    pub fn set_limit(&mut self, limit: u64) {
        if let Body::Stream(stream) = self {
            stream.limit = limit;
            stream.remaining = limit;
        }
    }
}

impl Body {
    /// A handle that learns why this body fails, if it does. `None` for fixed bodies,
    /// which cannot fail.
    pub fn watch_faults(&mut self) -> Option<FaultWatch> {
        match self {
            Body::Stream(stream) => Some(stream.faults.get_or_insert_default().clone()),
            Body::Chain(chain) => chain.rest.watch_faults(),
            Body::Empty | Body::Full(_) | Body::Boxed(_) => None,
        }
    }
}

impl Stream {
    fn fail(&self, fault: BodyFault) {
        if let Some(faults) = &self.faults {
            faults.record(fault);
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Chain(chain) => match chain.head.take() {
                Some(head) => Poll::Ready(Some(Ok(Frame::data(head)))),
                None => Pin::new(&mut chain.rest).poll_frame(cx),
            },
            Body::Boxed(body) => Pin::new(body).poll_frame(cx),
            Body::Stream(stream) => {
                let polled = stream.inner.poll_frame(cx);
                match polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            let len = data.len() as u64;
                            if len > stream.remaining {
                                stream.remaining = 0;
                                let too_large = BodyTooLarge {
                                    limit: stream.limit,
                                };
                                stream.fail(BodyFault::TooLarge(too_large));
                                return Poll::Ready(Some(Err(Box::new(too_large))));
                            }
                            stream.remaining -= len;
                            if let Some(watch) = &stream.faults {
                                watch.count(len);
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        stream.fail(BodyFault::Peer(e.to_string()));
                        Poll::Ready(Some(Err(e)))
                    }
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(bytes) => bytes.is_none(),
            Body::Stream(stream) => stream.inner.is_end_stream(),
            Body::Chain(chain) => chain.head.is_none() && chain.rest.is_end_stream(),
            Body::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(stream) => stream.inner.size_hint(),
            Body::Boxed(body) => body.size_hint(),
            Body::Chain(chain) => {
                let head = chain.head.as_ref().map_or(0, |b| b.len() as u64);
                let rest = chain.rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + head);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + head);
                }
                hint
            }
        }
    }
}

/// Whether `err` (or anything in its source chain) is a [`BodyTooLarge`].
pub fn is_body_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if e.is::<BodyTooLarge>() {
            return true;
        }
        current = e.source();
    }
    false
}
