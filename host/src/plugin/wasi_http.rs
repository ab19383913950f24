//! Standard `wasi:http/proxy` components as `handler`s: a component built by any
//! `wasi:http` toolchain, exporting `wasi:http/incoming-handler@0.2.x`, answers a route
//! unchanged (see docs/decisions/0003-wasi-http-handlers.md).
//!
//! One request, as [`handle`] runs it:
//!
//! 1. the plugin's concurrency permit and a fresh store with its memory cap
//!    ([`super::Plugin::start`], as for every role);
//! 2. a task is spawned holding the store and the permit. It builds the guest's
//!    `incoming-request` (method, canonical path and query, headers, authority, and the
//!    request body as a stream, already capped at `max_body` by the pipeline) and a
//!    `response-outparam`, then instantiates and calls `handle` under the plugin's
//!    deadline ([`super::Call::run`]: epoch deadline plus wall-clock bound);
//! 3. the caller waits for the response head the guest sets. A guest that fails first
//!    gets its failure (`504` timeout, `502` trap, `503` busy); one that returns without
//!    setting a response is `502` too;
//! 4. the head becomes the gateway's response (status 100–599, at most
//!    [`convert::MAX_RESPONSE_HEADERS`] fields, hop-by-hop fields dropped) and its body
//!    streams from the guest as the task keeps running it: the guest may go on writing
//!    after setting the head. The body is capped at [`MAX_RESPONSE_BODY_BYTES`], and ends
//!    with an error, never cleanly and never late, if the call fails mid-body (trap,
//!    deadline): the deadline covers the whole `handle` call, body writing included.
//!
//! **Invariant:** the task tells the outcome of `handle` before it drops the store, so the
//! response body, which ends when the store goes, always knows whether it was complete.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::host::Host;
use super::stats::{Export, PluginStats};
use super::{Call, PluginError, convert};
use crate::body::{Body, BodyTooLarge, BoxError};

/// The interface a `wasi:http/proxy` component exports, up to its minor version: any
/// `0.2.x` is accepted (wasmtime matches 0.2 patch versions when it links).
pub const HANDLER_INTERFACE: &str = "wasi:http/incoming-handler@0.2";

/// The largest response body a `wasi:http` handler may stream, in bytes. Past it the body
/// ends with an error (the client sees a cut response) and the guest's next write fails.
pub const MAX_RESPONSE_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// The authority the guest is told when the request named none (HTTP/1.0 without
/// `Host`): `wasi:http` 0.2 as wasmtime implements it always has one.
const FALLBACK_AUTHORITY: &str = "localhost";

/// Whether a component with these exports (as `export_names` lists them) exports
/// `wasi:http/incoming-handler@0.2.x`.
pub fn exported(exports: &[String]) -> bool {
    exports.iter().any(|name| {
        name.strip_prefix(HANDLER_INTERFACE)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// The request as the guest gets it: its URI rebuilt from the scheme, the authority
/// (`Host`, or the absolute URI's), the canonical `path` and the query; the body's
/// errors told in `wasi:http` terms (past `max_body`: `HTTP-request-body-size`). The
/// caller has already prepared the headers (hop-by-hop dropped, `X-Forwarded-*` set).
fn incoming(
    request: http::Request<Body>,
    path: &str,
    tls: bool,
) -> http::Request<impl http_body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + use<>> {
    let (mut parts, body) = request.into_parts();
    let scheme = if tls {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    };
    let authority = parts
        .uri
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .or_else(|| {
            let host = parts.headers.get(HOST)?.to_str().ok()?;
            http::uri::Authority::try_from(host).ok()?;
            Some(host.to_owned())
        })
        .unwrap_or_else(|| FALLBACK_AUTHORITY.to_owned());
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let uri = http::Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path_and_query)
        .build();
    // The canonical path comes from a URI that parsed; keep the original if it did not.
    if let Ok(uri) = uri {
        parts.uri = uri;
    }
    let body = body.map_err(
        |error: BoxError| match error.downcast_ref::<BodyTooLarge>() {
            Some(too_large) => {
                wasmtime_wasi_http::Error::HttpRequestBodySize(Some(too_large.limit))
            }
            None => wasmtime_wasi_http::Error::ConnectionTerminated,
        },
    );
    http::Request::from_parts(parts, body)
}

/// Runs `handle` of a `wasi:http/proxy` component for `request` in `call`'s fresh store
/// (see the module docs), and returns the response once the guest has set its head.
/// `path` is the canonical path; `tls` whether the client connection is TLS.
pub(super) async fn handle(
    mut call: Call,
    pre: ProxyPre<Host>,
    request_id: Arc<str>,
    request: http::Request<Body>,
    path: &str,
    tls: bool,
) -> Result<http::Response<Body>, PluginError> {
    let plugin = call.plugin.name().clone();
    let stats = call.plugin.stats().clone();
    let request = incoming(request, path, tls);
    let scheme = if tls { Scheme::Https } else { Scheme::Http };
    let (head_tx, head_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let (log_plugin, log_request_id) = (plugin.clone(), request_id.clone());
    tokio::spawn(async move {
        let outcome = call
            .run(Export::Handle, async move |store| {
                let mut http = store.data_mut().http();
                let request = http.new_incoming_request(scheme, request)?;
                let response = http.new_response_outparam(head_tx)?;
                let proxy = pre.instantiate_async(&mut *store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut *store, request, response)
                    .await
            })
            .await;
        if let Err(error) = &outcome {
            tracing::debug!(
                plugin = &*log_plugin,
                request_id = &*log_request_id,
                error = %error,
                "wasi:http handler failed"
            );
        }
        // Before the store (and with it the response body's sender) is dropped: see the
        // module's invariant.
        let _ = done_tx.send(outcome);
        drop(call);
    });
    // What is refused here, outside `Call::run`, is counted here.
    let refused = |error: PluginError| {
        stats.output_refused(&error);
        error
    };
    let head = match head_rx.await {
        Ok(Ok(head)) => head,
        Ok(Err(code)) => {
            return Err(refused(PluginError::BadOutput(format!(
                "answered with the wasi:http error {code:?}"
            ))));
        }
        // The response-outparam was dropped unset: the call failed, or returned without
        // answering.
        Err(_) => {
            return Err(match done_rx.await {
                Ok(Err(error)) => error,
                Ok(Ok(())) => refused(PluginError::BadOutput(
                    "returned without setting a response".to_owned(),
                )),
                Err(_) => refused(PluginError::Trap(
                    "the call ended without an outcome".to_owned(),
                )),
            });
        }
    };
    let (parts, body) = head.into_parts();
    let parts = response_head(parts).map_err(refused)?;
    let body = GuestBody {
        inner: Some(body),
        outcome: Some(done_rx),
        remaining: MAX_RESPONSE_BODY_BYTES,
        stats,
        plugin,
        request_id,
    };
    Ok(http::Response::from_parts(
        parts,
        Body::Boxed(body.boxed_unsync()),
    ))
}

/// The checks on the guest's response head (as for any handler: status 100–599, at most
/// [`convert::MAX_RESPONSE_HEADERS`] fields, hop-by-hop fields dropped), and a declared
/// length within [`MAX_RESPONSE_BODY_BYTES`].
fn response_head(mut parts: http::response::Parts) -> Result<http::response::Parts, PluginError> {
    if !convert::STATUS_RANGE.contains(&parts.status.as_u16()) {
        return Err(PluginError::BadOutput(format!("status {}", parts.status)));
    }
    if parts.headers.len() > convert::MAX_RESPONSE_HEADERS {
        return Err(PluginError::BadOutput(format!(
            "{} header fields (at most {})",
            parts.headers.len(),
            convert::MAX_RESPONSE_HEADERS
        )));
    }
    crate::headers::strip_hop_by_hop(&mut parts.headers);
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_RESPONSE_BODY_BYTES) {
        return Err(PluginError::BadOutput(format!(
            "content-length over {MAX_RESPONSE_BODY_BYTES} bytes"
        )));
    }
    Ok(parts)
}

/// The response body of a `wasi:http` handler: what the guest writes, capped, ending
/// with an error when the call failed before it was complete.
struct GuestBody {
    /// What the guest writes; `None` once ended (dropping it makes the guest's next write
    /// fail, so a guest writing past the cap or to a client gone is told so).
    inner: Option<HyperOutgoingBody>,
    /// How `handle` ended, sent by the task before it drops the store.
    outcome: Option<oneshot::Receiver<Result<(), PluginError>>>,
    /// Bytes the body may still carry.
    remaining: u64,
    /// Where failures found here (not by `Call::run`) are counted.
    stats: Arc<PluginStats>,
    plugin: Arc<str>,
    request_id: Arc<str>,
}

impl GuestBody {
    /// Ends the body with a failure found here (the guest's output refused), counted.
    fn refuse(&mut self, error: PluginError) -> BoxError {
        self.stats.output_refused(&error);
        self.fail(error)
    }

    /// Ends the body with `error`, logged with the plugin and request id (the client
    /// sees a cut response; the head is already gone).
    fn fail(&mut self, error: PluginError) -> BoxError {
        self.inner = None;
        self.outcome = None;
        tracing::warn!(
            plugin = &*self.plugin,
            request_id = &*self.request_id,
            reason = error.reason(),
            error = %error,
            "wasi:http handler failed mid-body, response cut"
        );
        Box::new(error)
    }
}

impl http_body::Body for GuestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        let error = PluginError::BadOutput(format!(
                            "response body over {MAX_RESPONSE_BODY_BYTES} bytes"
                        ));
                        return Poll::Ready(Some(Err(this.refuse(error))));
                    }
                    this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            // The guest's `finish` failed (fewer or more bytes than its `content-length`).
            Some(Err(error)) => {
                let error = PluginError::BadOutput(format!("response body: {error}"));
                Poll::Ready(Some(Err(this.refuse(error))))
            }
            // The guest finished the body, dropped it, or its store is gone: complete
            // unless the call is known to have failed.
            None => {
                this.inner = None;
                let outcome = this.outcome.take().map(|mut outcome| outcome.try_recv());
                match outcome {
                    Some(Ok(Err(error))) => Poll::Ready(Some(Err(this.fail(error)))),
                    Some(Err(oneshot::error::TryRecvError::Closed)) => {
                        let error = PluginError::Trap("the call ended without an outcome".into());
                        Poll::Ready(Some(Err(this.refuse(error))))
                    }
                    _ => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(inner) => {
                // Never more than the cap; the exact size when the guest declared one.
                let hint = inner.size_hint();
                let mut capped = SizeHint::new();
                capped.set_upper(hint.upper().unwrap_or(u64::MAX).min(self.remaining));
                capped.set_lower(hint.lower().min(self.remaining));
                capped
            }
            None => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static str]) -> HyperOutgoingBody {
        let frames: Vec<Result<Frame<Bytes>, wasmtime_wasi_http::Error>> = parts
            .iter()
            .map(|part| Ok(Frame::data(Bytes::from_static(part.as_bytes()))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    fn body(
        inner: HyperOutgoingBody,
        remaining: u64,
    ) -> (GuestBody, oneshot::Sender<Result<(), PluginError>>) {
        let (done_tx, done_rx) = oneshot::channel();
        let body = GuestBody {
            inner: Some(inner),
            outcome: Some(done_rx),
            remaining,
            stats: Arc::new(PluginStats::new(&[])),
            plugin: Arc::from("p"),
            request_id: Arc::from("r"),
        };
        (body, done_tx)
    }

    #[tokio::test]
    async fn a_finished_body_passes_whole() {
        let (body, done) = body(chunks(&["he", "llo"]), 100);
        done.send(Ok(())).expect("send");
        let bytes = body.collect().await.expect("complete").to_bytes();
        assert_eq!(bytes, "hello");
    }

    #[tokio::test]
    async fn a_body_still_running_when_finished_ends_cleanly() {
        let (body, _done) = body(chunks(&["hi"]), 100);
        let bytes = body.collect().await.expect("complete").to_bytes();
        assert_eq!(bytes, "hi");
    }

    #[tokio::test]
    async fn a_failed_call_ends_the_body_with_its_error() {
        let (body, done) = body(chunks(&["partial"]), 100);
        done.send(Err(PluginError::Timeout(std::time::Duration::from_millis(
            5,
        ))))
        .expect("send");
        let error = body.collect().await.expect_err("cut");
        let error = error.downcast::<PluginError>().expect("plugin error");
        assert!(matches!(*error, PluginError::Timeout(_)));
    }

    #[tokio::test]
    async fn a_task_gone_without_an_outcome_is_an_error() {
        let (body, done) = body(chunks(&["partial"]), 100);
        drop(done);
        assert!(body.collect().await.is_err());
    }

    #[tokio::test]
    async fn a_body_past_its_cap_is_cut() {
        let (body, done) = body(chunks(&["1234", "5678"]), 6);
        done.send(Ok(())).expect("send");
        let stats = body.stats.clone();
        let error = body.collect().await.expect_err("cut");
        let error = error.downcast::<PluginError>().expect("plugin error");
        assert!(matches!(*error, PluginError::BadOutput(_)));
        assert_eq!(stats.failures(), 1, "counted as refused output");
    }

    fn head(status: u16, headers: &[(&str, &str)]) -> http::response::Parts {
        let mut response = http::Response::new(());
        *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
        for (name, value) in headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).expect("name");
            let value = http::HeaderValue::from_str(value).expect("value");
            response.headers_mut().append(name, value);
        }
        response.into_parts().0
    }

    #[test]
    fn response_heads_are_checked_as_any_handler_s() {
        let ok =
            response_head(head(201, &[("x-a", "1"), ("connection", "x-a, close")])).expect("valid");
        assert_eq!(ok.status, 201);
        assert!(
            ok.headers.is_empty(),
            "hop-by-hop fields go: {:?}",
            ok.headers
        );

        let many: Vec<(String, String)> = (0..=convert::MAX_RESPONSE_HEADERS)
            .map(|i| (format!("x-{i}"), "v".to_owned()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let too_long = (MAX_RESPONSE_BODY_BYTES + 1).to_string();
        for bad in [
            head(600, &[]),
            head(200, &many),
            head(200, &[("content-length", too_long.as_str())]),
        ] {
            assert!(matches!(response_head(bad), Err(PluginError::BadOutput(_))));
        }
    }

    #[test]
    fn any_0_2_patch_of_incoming_handler_is_recognised() {
        let names = |name: &str| vec!["other".to_owned(), format!("{name} (not a function)")];
        assert!(exported(&names("wasi:http/incoming-handler@0.2.0")));
        assert!(exported(&names("wasi:http/incoming-handler@0.2.12")));
        assert!(!exported(&names("wasi:http/incoming-handler@0.20.0")));
        assert!(!exported(&names("wasi:http/incoming-handler@0.3.0")));
        assert!(!exported(&names("wasi:http/outgoing-handler@0.2.0")));
    }

    #[test]
    fn the_guest_sees_the_canonical_path_the_query_and_the_authority() {
        let mut request = http::Request::new(Body::Empty);
        *request.uri_mut() = "/a/../hi?name=x".parse().expect("uri");
        request
            .headers_mut()
            .insert(HOST, "example.test:8080".parse().expect("host"));
        let request = incoming(request, "/hi", true);
        assert_eq!(
            request.uri().to_string(),
            "https://example.test:8080/hi?name=x"
        );

        let bare = incoming(http::Request::new(Body::Empty), "/", false);
        assert_eq!(bare.uri().to_string(), "http://localhost/");
    }
}
