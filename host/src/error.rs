//! What can go wrong on a request, and the one place that turns it into a response.
//!
//! Every response the gateway produces itself (as opposed to relaying an upstream's) comes
//! from [`GatewayError::into_response`]: a JSON body `{"message", "request_id"}` with the
//! status that fits. Messages are fixed strings chosen here; details (upstream errors,
//! guest output) go to the logs, never to the client.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use serde::Serialize;

use crate::body::Body;
use crate::path::PathError;

/// The lifecycle phase an error came from (used in logs and, later, metrics labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Accept,
    Route,
    Throttle,
    Authorize,
    ApiKey,
    RequestFilters,
    Integrate,
    ResponseFilters,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Accept => "accept",
            Phase::Route => "route",
            Phase::Throttle => "throttle",
            Phase::Authorize => "authorize",
            Phase::ApiKey => "api_key",
            Phase::RequestFilters => "request_filters",
            Phase::Integrate => "integrate",
            Phase::ResponseFilters => "response_filters",
        }
    }
}

/// Which side was at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something we refuse.
    Downstream,
    /// The upstream failed or was unreachable.
    Upstream,
    /// The gateway itself failed.
    Internal,
}

/// Everything that can end a request with a gateway-made response.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("request path refused: {0}")]
    BadPath(#[from] PathError),
    /// A request to a WebSocket API route (`websocket = { ... }`) that is not a
    /// WebSocket handshake.
    #[error("not a websocket handshake")]
    UpgradeRequired,
    #[error("request has no usable host")]
    BadHost,
    /// A request head that is not HTTP/1.1 (a bad method or target token, a field
    /// without a colon, a folded line, a name or value `http` refuses). The connection
    /// is closed after the answer: where the next request starts is unknown.
    #[error("malformed request head")]
    MalformedHead,
    #[error("too many request header fields ({count}, limit {limit})")]
    TooManyHeaders { count: usize, limit: usize },
    #[error("request head too large ({bytes} bytes, limit {limit})")]
    HeadTooLarge { bytes: usize, limit: usize },
    #[error("no route for this path")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed { allow: HeaderValue },
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("request not answered within {0:?}")]
    RequestTimeout(std::time::Duration),
    #[error("no healthy target in upstream {upstream}")]
    NoHealthyTarget { upstream: String },
    #[error("could not connect to upstream {upstream} ({target}): {reason}")]
    UpstreamConnect {
        upstream: String,
        target: String,
        reason: String,
    },
    #[error("upstream {upstream} ({target}) did not answer within {timeout:?}")]
    UpstreamTimeout {
        upstream: String,
        target: String,
        timeout: std::time::Duration,
    },
    #[error("upstream {upstream} ({target}) failed: {reason}")]
    UpstreamProtocol {
        upstream: String,
        target: String,
        reason: String,
    },
    #[error("client request body failed: {0}")]
    ClientBody(String),
    /// A token bucket or quota refused the request (`429`). `decision` fills
    /// `Retry-After` and `RateLimit-*`; `level` says which limit (`server`, `route`, …).
    #[error("{level} rate limit exceeded")]
    Throttled {
        phase: Phase,
        level: &'static str,
        decision: crate::state::Decision,
    },
    /// A limit could not be checked (shared state unreachable) and the route fails closed.
    #[error("state backend unreachable and the route fails closed (on_state_error = \"closed\")")]
    StateUnavailable { phase: Phase },
    /// The route's authorizer found no usable token (`401`, `WWW-Authenticate: Bearer`).
    #[error("not authenticated: {0}")]
    Unauthenticated(crate::jwt::AuthError),
    /// A valid token without any of the route's scopes (`403`).
    #[error("token lacks the route's scopes")]
    InsufficientScope,
    /// The authorizer cannot check tokens (its JWKS was never fetched).
    #[error("authorizer {0} has no keys")]
    AuthorizerUnavailable(std::sync::Arc<str>),
    /// The client address is outside the route's `allow_cidrs` or inside `deny_cidrs`.
    #[error("client address {0} refused by the route's address rules")]
    AddressDenied(std::net::IpAddr),
    /// No API key on a route that needs one (`403`).
    #[error("no api key")]
    ApiKeyMissing,
    /// An API key that is not one of ours (`403`).
    #[error("unknown api key")]
    ApiKeyInvalid,
    /// A plugin authorizer's `identity` source is missing from the request (`401`, no
    /// plugin call).
    #[error("authorizer {authorizer}: identity source missing")]
    IdentityMissing { authorizer: std::sync::Arc<str> },
    /// A plugin authorizer denied the request; its response is the answer.
    #[error("authorizer {authorizer} denied the request")]
    AuthorizerDenied {
        authorizer: std::sync::Arc<str>,
        response: Box<Response<Body>>,
    },
    /// A response filter asked for the response body and it is larger than its limit.
    #[error("response body larger than {limit} bytes, the limit of a filter that reads it")]
    ResponseTooLarge { limit: u64 },
    /// The response body a filter reads could not be read from the upstream.
    #[error("response body failed: {0}")]
    ResponseBody(String),
    /// A Wasm plugin call failed (trap, deadline, memory, bad output, busy). The guest's
    /// own words stay in the log.
    #[error("plugin {plugin}: {error}")]
    Plugin {
        phase: Phase,
        plugin: std::sync::Arc<str>,
        error: crate::plugin::PluginError,
    },
}

/// `WWW-Authenticate` when no token was sent (RFC 6750 §3).
const WWW_AUTHENTICATE_MISSING: &str = "Bearer";
/// `WWW-Authenticate` for a token that does not pass.
const WWW_AUTHENTICATE_INVALID: &str = "Bearer error=\"invalid_token\"";
/// `WWW-Authenticate` for a token without the route's scopes.
const WWW_AUTHENTICATE_SCOPE: &str = "Bearer error=\"insufficient_scope\"";

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    request_id: &'a str,
}

impl GatewayError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadPath(_)
            | GatewayError::BadHost
            | GatewayError::MalformedHead
            | GatewayError::ClientBody(_) => StatusCode::BAD_REQUEST,
            GatewayError::TooManyHeaders { .. } | GatewayError::HeadTooLarge { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            GatewayError::NoRoute => StatusCode::NOT_FOUND,
            GatewayError::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            GatewayError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::StateUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            GatewayError::InsufficientScope
            | GatewayError::AddressDenied(_)
            | GatewayError::ApiKeyMissing
            | GatewayError::ApiKeyInvalid => StatusCode::FORBIDDEN,
            GatewayError::IdentityMissing { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::AuthorizerDenied { response, .. } => response.status(),
            GatewayError::ResponseTooLarge { .. } | GatewayError::ResponseBody(_) => {
                StatusCode::BAD_GATEWAY
            }
            // A handler stands where a backend would (502 like one); an authorizer or a
            // filter failing is the gateway's own failure (500; authorizers fail closed).
            GatewayError::Plugin { error, phase, .. } => match error {
                crate::plugin::PluginError::Busy => StatusCode::SERVICE_UNAVAILABLE,
                crate::plugin::PluginError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                _ if *phase == Phase::Integrate => StatusCode::BAD_GATEWAY,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            GatewayError::AuthorizerUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::RequestTimeout(_) | GatewayError::UpstreamTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            GatewayError::NoHealthyTarget { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamConnect { .. } | GatewayError::UpstreamProtocol { .. } => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    /// The phase the error belongs to.
    pub fn phase(&self) -> Phase {
        match self {
            GatewayError::TooManyHeaders { .. }
            | GatewayError::HeadTooLarge { .. }
            | GatewayError::MalformedHead => Phase::Accept,
            GatewayError::BadPath(_)
            | GatewayError::BadHost
            | GatewayError::NoRoute
            | GatewayError::MethodNotAllowed { .. } => Phase::Route,
            GatewayError::Throttled { phase, .. } | GatewayError::StateUnavailable { phase } => {
                *phase
            }
            GatewayError::Unauthenticated(_)
            | GatewayError::InsufficientScope
            | GatewayError::AuthorizerUnavailable(_)
            | GatewayError::IdentityMissing { .. }
            | GatewayError::AuthorizerDenied { .. }
            | GatewayError::AddressDenied(_) => Phase::Authorize,
            GatewayError::ResponseTooLarge { .. } | GatewayError::ResponseBody(_) => {
                Phase::ResponseFilters
            }
            GatewayError::ApiKeyMissing | GatewayError::ApiKeyInvalid => Phase::ApiKey,
            GatewayError::Plugin { phase, .. } => *phase,
            GatewayError::BodyTooLarge { .. }
            | GatewayError::ClientBody(_)
            | GatewayError::UpgradeRequired
            | GatewayError::RequestTimeout(_)
            | GatewayError::NoHealthyTarget { .. }
            | GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamTimeout { .. }
            | GatewayError::UpstreamProtocol { .. } => Phase::Integrate,
        }
    }

    /// Who was at fault.
    pub fn side(&self) -> Side {
        match self {
            GatewayError::BadPath(_)
            | GatewayError::BadHost
            | GatewayError::MalformedHead
            | GatewayError::TooManyHeaders { .. }
            | GatewayError::HeadTooLarge { .. }
            | GatewayError::NoRoute
            | GatewayError::MethodNotAllowed { .. }
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::ClientBody(_)
            | GatewayError::UpgradeRequired
            | GatewayError::Throttled { .. } => Side::Downstream,
            GatewayError::StateUnavailable { .. } => Side::Internal,
            GatewayError::Unauthenticated(_)
            | GatewayError::InsufficientScope
            | GatewayError::AddressDenied(_)
            | GatewayError::IdentityMissing { .. }
            | GatewayError::AuthorizerDenied { .. }
            | GatewayError::ApiKeyMissing
            | GatewayError::ApiKeyInvalid => Side::Downstream,
            GatewayError::ResponseTooLarge { .. } | GatewayError::ResponseBody(_) => Side::Upstream,
            GatewayError::Plugin { .. } => Side::Upstream,
            GatewayError::AuthorizerUnavailable(_) => Side::Upstream,
            GatewayError::NoHealthyTarget { .. }
            | GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamTimeout { .. }
            | GatewayError::UpstreamProtocol { .. } => Side::Upstream,
            GatewayError::RequestTimeout(_) => Side::Internal,
        }
    }

    /// A short, fixed name for the kind of error: the `reason` of metrics and the
    /// `refused` field of the access log.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::BadPath(_) => "bad_path",
            GatewayError::BadHost => "bad_host",
            GatewayError::MalformedHead => "malformed_head",
            GatewayError::TooManyHeaders { .. } => "too_many_headers",
            GatewayError::HeadTooLarge { .. } => "head_too_large",
            GatewayError::NoRoute => "no_route",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::BodyTooLarge { .. } => "body_too_large",
            GatewayError::ClientBody(_) => "client_body",
            GatewayError::UpgradeRequired => "upgrade_required",
            GatewayError::Throttled { .. } => "throttled",
            GatewayError::StateUnavailable { .. } => "state_unavailable",
            GatewayError::Unauthenticated(_) => "unauthenticated",
            GatewayError::InsufficientScope => "insufficient_scope",
            GatewayError::AuthorizerUnavailable(_) => "authorizer_unavailable",
            GatewayError::AddressDenied(_) => "address_denied",
            GatewayError::ApiKeyMissing => "api_key_missing",
            GatewayError::ApiKeyInvalid => "api_key_invalid",
            GatewayError::IdentityMissing { .. } => "identity_missing",
            GatewayError::AuthorizerDenied { .. } => "authorizer_denied",
            GatewayError::ResponseTooLarge { .. } => "response_too_large",
            GatewayError::ResponseBody(_) => "response_body",
            GatewayError::Plugin { error, .. } => error.reason(),
            GatewayError::RequestTimeout(_) => "request_timeout",
            GatewayError::NoHealthyTarget { .. } => "no_healthy_target",
            GatewayError::UpstreamConnect { .. } => "upstream_connect",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
            GatewayError::UpstreamProtocol { .. } => "upstream_error",
        }
    }

    /// The message the client sees: fixed per kind, no internal detail.
    pub fn client_message(&self) -> &'static str {
        match self {
            GatewayError::BadPath(PathError::NotAbsolute) => "request path must start with '/'",
            GatewayError::BadPath(PathError::InvalidEncoding) => {
                "request path has an invalid percent-encoding"
            }
            GatewayError::BadPath(PathError::EncodedSeparator) => {
                "request path has an encoded '/', '\\' or '.'"
            }
            GatewayError::BadPath(PathError::Backslash) => "request path has a backslash",
            GatewayError::BadPath(PathError::ControlCharacter) => {
                "request path has a control character"
            }
            GatewayError::BadPath(PathError::EscapesRoot) => "request path climbs above the root",
            GatewayError::BadHost => "request has no valid host",
            GatewayError::MalformedHead => "malformed request",
            GatewayError::TooManyHeaders { .. } => "too many request header fields",
            GatewayError::HeadTooLarge { .. } => "request header fields too large",
            GatewayError::NoRoute => "no route matches this request",
            GatewayError::MethodNotAllowed { .. } => "method not allowed on this route",
            GatewayError::BodyTooLarge { .. } => "request body too large",
            GatewayError::ClientBody(_) => "request body could not be read",
            GatewayError::UpgradeRequired => "this route only accepts WebSocket handshakes",
            GatewayError::Throttled { .. } => "too many requests",
            GatewayError::StateUnavailable { .. } => "rate limit state unavailable",
            GatewayError::Unauthenticated(_) => "authentication required",
            GatewayError::InsufficientScope => "insufficient scope",
            GatewayError::AuthorizerUnavailable(_) => "authorizer unavailable",
            GatewayError::AddressDenied(_) => "client address not allowed",
            GatewayError::ApiKeyMissing => "api key required",
            GatewayError::ApiKeyInvalid => "invalid api key",
            GatewayError::IdentityMissing { .. } => "authentication required",
            GatewayError::AuthorizerDenied { .. } => "access denied",
            GatewayError::ResponseTooLarge { .. } => "upstream response too large",
            GatewayError::ResponseBody(_) => "upstream response failed",
            GatewayError::Plugin { error, .. } => match error {
                crate::plugin::PluginError::Busy => "plugin busy, try again",
                crate::plugin::PluginError::Timeout(_) => "plugin timed out",
                _ => "plugin failed",
            },
            GatewayError::RequestTimeout(_) => "request timed out",
            GatewayError::NoHealthyTarget { .. } => "no healthy upstream available",
            GatewayError::UpstreamConnect { .. } => "upstream unreachable",
            GatewayError::UpstreamTimeout { .. } => "upstream timed out",
            GatewayError::UpstreamProtocol { .. } => "upstream failed",
        }
    }

    /// The gateway's answer for this error.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        if let GatewayError::AuthorizerDenied { response, .. } = self {
            return *response;
        }
        let mut response = json_response(self.status(), self.client_message(), request_id);
        match self {
            GatewayError::MethodNotAllowed { allow } => {
                response.headers_mut().insert(ALLOW, allow);
            }
            GatewayError::Throttled { decision, .. } => {
                crate::throttle::refusal_headers(response.headers_mut(), &decision);
            }
            GatewayError::Unauthenticated(error) => {
                let challenge = match error {
                    crate::jwt::AuthError::Missing => WWW_AUTHENTICATE_MISSING,
                    _ => WWW_AUTHENTICATE_INVALID,
                };
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            }
            GatewayError::InsufficientScope => {
                response.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static(WWW_AUTHENTICATE_SCOPE),
                );
            }
            _ => {}
        }
        response
    }
}

/// A gateway-made JSON response `{"message", "request_id"}`.
pub fn json_response(status: StatusCode, message: &str, request_id: &str) -> Response<Body> {
    let body = serde_json::to_vec(&ErrorBody {
        message,
        request_id,
    })
    // Serializing two &str fields into a Vec cannot fail.
    .unwrap_or_default();
    let len = body.len();
    let mut response = Response::new(Body::full(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_json_with_request_id() {
        let response = GatewayError::NoRoute.into_response("abc");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            HeaderValue::from_static("application/json")
        );
    }

    #[test]
    fn method_not_allowed_carries_allow() {
        let response = GatewayError::MethodNotAllowed {
            allow: HeaderValue::from_static("GET, HEAD"),
        }
        .into_response("abc");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
    }
}
