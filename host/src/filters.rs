//! The `request_filters` and `response_filters` phases: a route's Wasm filters, in order
//! on the request and in reverse order on the response.
//!
//! Each filter's `on-request` runs in a fresh instance (or a kept one, with
//! `requests_per_instance`); when it answers `continue`, that instance is kept
//! ([`FilterInstance`]) and runs the same filter's `on-response` for this request, so a
//! filter can carry state from one to the other. A filter that answers
//! `continue-without-response` is done: its `on-response` is not called. A use's `phases`
//! can leave out either call: with `["request"]` the instance is done after `on-request`;
//! with `["response"]` no `on-request` runs and `on-response` gets an instance of its own
//! when the response is there.
//! When a filter answers (`respond`), the filters before it still see that response on
//! its way out (Envoy's local replies work the same way); the ones after it never ran.
//!
//! Bodies reach a filter only when its use says `body = true`: the request body is then
//! buffered up to the use's `max_body` (else the route's, else the server's; `413` past
//! it), and so is the response body for `on-response` (`502` past it). Otherwise the
//! filter sees heads only and the body streams past it untouched.
//!
//! **Invariant:** what a filter returns is checked before it goes on: a valid method, a
//! path that canonicalizes like a client's, a query that fits a URI, valid header fields,
//! a status from 100 to 599. Framing is the gateway's: `content-length` and
//! `transfer-encoding` follow the body, whatever the filter said about them.
//!
//! A failed call (trap, deadline, memory, malformed output, busy) fails the request
//! (`on_error = "fail"`, `500`/`503`/`504`) or is skipped (`"skip"`: logged and counted,
//! the request or response goes on unchanged, and that filter's `on-response` is not
//! called).

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, Request, Response};

use crate::body::Body;
use crate::config::{OnError, PluginUse};
use crate::error::{GatewayError, Phase};
use crate::path::PathOptions;
use crate::plugin::{self, CallInfo, FilterInstance, PluginError, Plugins, RequestOutcome};
use crate::router::Params;
use crate::state::State;

/// What every filter call of one request needs to know.
pub struct FilterContext<'a> {
    pub plugins: &'a Plugins,
    pub state: &'a Arc<State>,
    pub upstreams: &'a Arc<[crate::upstream::UpstreamPool]>,
    pub request_id: &'a HeaderValue,
    pub client: IpAddr,
    pub params: &'a Params,
    /// The body limit of a use without its own `max_body`: the route's, else the
    /// server's.
    pub max_body: u64,
    pub paths: &'a PathOptions,
}

/// A filter whose `on-response` is due: in the instance that ran its `on-request`, or,
/// for a use with `phases = ["response"]`, in one taken when the response is there.
pub struct Pending<'u> {
    instance: Option<FilterInstance>,
    use_: &'u PluginUse,
}

/// What one filter's `on-request` decided, checked.
enum Step {
    /// Go on with this path (`None`: unchanged) and body (and this instance for
    /// `on-response`).
    Go((Option<String>, Option<Bytes>), Option<FilterInstance>),
    /// The filter answered.
    Answer(Response<Body>),
}

/// The end of the `request_filters` phase.
pub enum Inbound<'u, 'p> {
    /// Go on to the integration with this request and path.
    Continue {
        request: Request<Body>,
        path: Cow<'p, str>,
        pending: Vec<Pending<'u>>,
    },
    /// A filter answered: this response goes through `pending` on its way out.
    Respond {
        response: Response<Body>,
        pending: Vec<Pending<'u>>,
    },
}

impl FilterContext<'_> {
    fn call_info(&self, plugin: &plugin::Plugin, use_: &PluginUse) -> CallInfo {
        CallInfo {
            plugin: plugin.name().clone(),
            request_id: Arc::from(self.request_id.to_str().unwrap_or("")),
            config: use_.config.clone(),
            state: self.state.clone(),
            outbound: plugin::Outbound {
                pools: self.upstreams.clone(),
                allowed: use_.upstreams.clone(),
            },
        }
    }

    fn limit(&self, use_: &PluginUse) -> u64 {
        use_.max_body.unwrap_or(self.max_body)
    }

    /// `request_filters`: each use's `on-request`, in order.
    pub async fn on_request<'u, 'p>(
        &self,
        uses: &'u [PluginUse],
        mut request: Request<Body>,
        mut path: Cow<'p, str>,
    ) -> Result<Inbound<'u, 'p>, GatewayError> {
        let mut pending = Vec::with_capacity(uses.len());
        for use_ in uses {
            let Some(plugin) = self.plugins.get(use_.plugin) else {
                return Err(GatewayError::NoRoute);
            };
            if !use_.phases.request {
                // `phases = ["response"]`: nothing to do on the way in.
                pending.push(Pending {
                    instance: None,
                    use_,
                });
                continue;
            }
            let (mut parts, body) = request.into_parts();
            let (body, given) = if use_.body {
                let bytes =
                    crate::pipeline::buffer_body(&parts.headers, body, self.limit(use_)).await?;
                (Body::full(bytes.clone()), Some(bytes))
            } else {
                (body, None)
            };
            let wit =
                plugin::convert::request(&parts, &path, self.params, self.client, given.clone());
            let outcome = plugin
                .on_request(self.call_info(plugin, use_), wit, use_.phases.response)
                .await
                .and_then(|(outcome, instance)| {
                    match outcome {
                        RequestOutcome::Continue(changed)
                        | RequestOutcome::ContinueWithoutResponse(changed) => self
                            .apply_request(changed, &mut parts, &path, given)
                            .map(|applied| Step::Go(applied, instance)),
                        RequestOutcome::Respond(response) => {
                            plugin::convert::response(response).map(Step::Answer)
                        }
                    }
                    // The call went well; what it returned did not.
                    .inspect_err(|error| plugin.stats().output_refused(error))
                });
            match outcome {
                Ok(Step::Go((new_path, new_body), instance)) => {
                    if let Some(new_path) = new_path {
                        path = Cow::Owned(new_path);
                    }
                    let body = new_body.map_or(body, Body::full);
                    request = Request::from_parts(parts, body);
                    if let Some(instance) = instance {
                        pending.push(Pending {
                            instance: Some(instance),
                            use_,
                        });
                    }
                }
                Ok(Step::Answer(response)) => return Ok(Inbound::Respond { response, pending }),
                Err(error) => {
                    self.failed(plugin.name(), use_, Phase::RequestFilters, error)?;
                    request = Request::from_parts(parts, body);
                }
            }
        }
        Ok(Inbound::Continue {
            request,
            path,
            pending,
        })
    }

    /// `response_filters`: the pending filters' `on-response`, last first.
    pub async fn on_response(
        &self,
        pending: Vec<Pending<'_>>,
        mut response: Response<Body>,
    ) -> Result<Response<Body>, GatewayError> {
        // A `101` carries the WebSocket tunnel it opens; there is no response to filter.
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(response);
        }
        for Pending { instance, use_ } in pending.into_iter().rev() {
            let Some(plugin) = self.plugins.get(use_.plugin) else {
                return Err(GatewayError::NoRoute);
            };
            let (mut parts, body) = response.into_parts();
            let (body, given) = if use_.body {
                let bytes = buffer_response(&parts.headers, body, self.limit(use_)).await?;
                (Body::full(bytes.clone()), Some(bytes))
            } else {
                (body, None)
            };
            let wit = plugin::Response {
                status: parts.status.as_u16(),
                headers: plugin::convert::headers(&parts.headers),
                body: given.as_ref().map(|bytes| bytes.to_vec()),
            };
            let called = match instance {
                Some(instance) => instance.on_response(wit).await,
                None => plugin.on_response(self.call_info(plugin, use_), wit).await,
            };
            let outcome = called.and_then(|changed| {
                apply_response(changed, &mut parts)
                    .inspect_err(|error| plugin.stats().output_refused(error))
            });
            let body = match outcome {
                Ok(Some(new_body)) => Body::full(new_body),
                Ok(None) => body,
                Err(error) => {
                    self.failed(plugin.name(), use_, Phase::ResponseFilters, error)?;
                    body
                }
            };
            response = Response::from_parts(parts, body);
            set_framing(&mut response);
        }
        Ok(response)
    }

    /// A failed call: the request's error (`on_error = "fail"`), or logged and skipped.
    fn failed(
        &self,
        plugin: &Arc<str>,
        use_: &PluginUse,
        phase: Phase,
        error: PluginError,
    ) -> Result<(), GatewayError> {
        match use_.on_error {
            OnError::Fail => Err(GatewayError::Plugin {
                phase,
                plugin: plugin.clone(),
                error,
            }),
            OnError::Skip => {
                tracing::warn!(
                    request_id = self.request_id.to_str().unwrap_or(""),
                    plugin = &**plugin,
                    phase = phase.as_str(),
                    reason = error.reason(),
                    error = %error,
                    "filter failed; skipped (on_error = \"skip\")"
                );
                Ok(())
            }
        }
    }

    /// Applies a filter's `continue` to the request head. Returns the (canonical) path,
    /// when the filter changed it, and the new body, if the filter was given one and
    /// changed it.
    fn apply_request(
        &self,
        changed: plugin::Request,
        parts: &mut http::request::Parts,
        given_path: &str,
        given: Option<Bytes>,
    ) -> Result<(Option<String>, Option<Bytes>), PluginError> {
        let bad = |what: String| PluginError::BadOutput(what);
        let body = match (given, changed.body) {
            (None, Some(_)) => {
                return Err(bad(
                    "a body for a request it was not given the body of (`body = true`)".to_owned(),
                ));
            }
            (Some(_), Some(body)) => Some(Bytes::from(body)),
            (Some(_), None) | (None, None) => None,
        };
        let method = if changed.method == parts.method.as_str() {
            None
        } else {
            Some(
                Method::from_bytes(changed.method.as_bytes())
                    .map_err(|_| bad(format!("invalid method {:?}", changed.method)))?,
            )
        };
        // Path and query as given: nothing to check or rebuild.
        let target =
            if changed.path == given_path && changed.query == parts.uri.query().unwrap_or("") {
                None
            } else {
                let path = crate::path::canonicalize(&changed.path, self.paths)
                    .map_err(|error| bad(format!("invalid path {:?}: {error}", changed.path)))?;
                let uri = if changed.query.is_empty() {
                    http::Uri::try_from(path.as_str())
                } else {
                    http::Uri::try_from(format!("{}?{}", path.as_str(), changed.query))
                }
                .map_err(|_| bad(format!("invalid query {:?}", changed.query)))?;
                Some((path, uri))
            };
        // Headers left alone, or only added to (most filters): appended in place.
        let in_place = body.is_none()
            && plugin::convert::append_added(
                &mut parts.headers,
                &changed.headers,
                plugin::convert::reserved_in_request,
            )?;
        if !in_place {
            let framing = take_framing(&mut parts.headers);
            let mut headers = plugin::convert::header_map(changed.headers)?;
            take_framing(&mut headers);
            match &body {
                Some(bytes) => {
                    headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                }
                None => restore_framing(&mut headers, framing),
            }
            parts.headers = headers;
        }
        if let Some(method) = method {
            parts.method = method;
        }
        let Some((path, uri)) = target else {
            return Ok((None, body));
        };
        // The URI keeps the client's authority (HTTP/2, absolute form) when it had one.
        let mut uri_parts = std::mem::take(&mut parts.uri).into_parts();
        uri_parts.path_and_query = uri.into_parts().path_and_query;
        parts.uri = http::Uri::from_parts(uri_parts).map_err(|_| bad("invalid URI".to_owned()))?;
        Ok((Some(path.as_str().to_owned()), body))
    }
}

/// Applies a filter's `on-response` to the response head; returns the new body, if the
/// filter gave one.
fn apply_response(
    changed: plugin::Response,
    parts: &mut http::response::Parts,
) -> Result<Option<Bytes>, PluginError> {
    let status = http::StatusCode::from_u16(changed.status)
        .ok()
        .filter(|status| plugin::convert::STATUS_RANGE.contains(&status.as_u16()))
        .ok_or_else(|| PluginError::BadOutput(format!("status {}", changed.status)))?;
    let body = changed.body.map(Bytes::from);
    // Headers left alone, or only added to (most filters): appended in place.
    let in_place = body.is_none()
        && plugin::convert::append_added(
            &mut parts.headers,
            &changed.headers,
            plugin::convert::reserved_in_response,
        )?;
    if !in_place {
        let framing = take_framing(&mut parts.headers);
        let mut headers = plugin::convert::header_map(changed.headers)?;
        crate::headers::strip_hop_by_hop(&mut headers);
        take_framing(&mut headers);
        if body.is_none() {
            restore_framing(&mut headers, framing);
        }
        parts.headers = headers;
    }
    parts.status = status;
    Ok(body)
}

/// `content-length` for a buffered body; a streamed one keeps its framing.
fn set_framing(response: &mut Response<Body>) {
    if let Body::Full(bytes) = response.body() {
        let len = bytes.as_ref().map_or(0, Bytes::len);
        let headers = response.headers_mut();
        headers.remove(TRANSFER_ENCODING);
        headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    } else if let Body::Empty = response.body() {
        let headers = response.headers_mut();
        headers.remove(TRANSFER_ENCODING);
        headers.insert(CONTENT_LENGTH, HeaderValue::from(0));
    }
}

/// The framing fields of a head, taken out of it.
struct Framing {
    content_length: Option<HeaderValue>,
    transfer_encoding: Vec<HeaderValue>,
}

fn take_framing(headers: &mut HeaderMap) -> Framing {
    let content_length = headers.remove(CONTENT_LENGTH);
    let transfer_encoding = match headers.entry(TRANSFER_ENCODING) {
        http::header::Entry::Occupied(entry) => entry.remove_entry_mult().1.collect(),
        http::header::Entry::Vacant(_) => Vec::new(),
    };
    Framing {
        content_length,
        transfer_encoding,
    }
}

fn restore_framing(headers: &mut HeaderMap, framing: Framing) {
    if let Some(length) = framing.content_length {
        headers.insert(CONTENT_LENGTH, length);
    }
    for value in framing.transfer_encoding {
        headers.append(TRANSFER_ENCODING, value);
    }
}

/// Reads a whole response body of at most `limit` bytes for a filter.
async fn buffer_response(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<Bytes, GatewayError> {
    crate::pipeline::buffer_body(headers, body, limit)
        .await
        .map_err(|error| match error {
            GatewayError::BodyTooLarge { limit } => GatewayError::ResponseTooLarge { limit },
            GatewayError::ClientBody(reason) => GatewayError::ResponseBody(reason),
            other => other,
        })
}
