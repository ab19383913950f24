//! The request lifecycle, as one function per phase.
//!
//! [`Gateway::handle`] is the whole life of a request, in the order of
//! `docs/request-lifecycle.md`:
//!
//! ```text
//! accept → route → cors → throttle → authorize → api_key → cache_lookup
//!        → request_filters → integrate → response_filters → cache_store → log
//! ```
//!
//! Phases that are not built yet (cors … request_filters, response_filters, cache_store)
//! have no code here; they slot in between `route` and `integrate` as named functions.
//! `handle` takes a plain `http::Request` and returns a `Response`, so it can be driven
//! without sockets; the listener in [`crate::server`] is only a transport.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderValue, Request, Response};

use crate::body::Body;
use crate::config::{Config, Integration, Route};
use crate::error::GatewayError;
use crate::headers::{self, X_REQUEST_ID};
use crate::mock;
use crate::path::{self, CanonicalPath};
use crate::router::{Lookup, Params};
use crate::tls::TlsError;
use crate::upstream::{Forward, UpstreamPool};

/// Where a request came from (one per client connection).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the connection is TLS (sets `X-Forwarded-Proto`).
    pub tls: bool,
}

/// The running gateway: a validated config plus the live state built from it
/// (connection pools). Immutable; a reload builds a new one.
#[derive(Debug)]
pub struct Gateway {
    config: Arc<Config>,
    upstreams: Vec<UpstreamPool>,
}

/// The result of the `route` phase.
#[derive(Debug)]
pub struct Routed<'g> {
    pub route: &'g Route,
    pub path: CanonicalPath,
    pub params: Params,
}

impl Gateway {
    /// Builds the live state for `config` (no connection is opened yet).
    pub fn new(config: Config) -> Result<Gateway, TlsError> {
        let upstreams = config
            .upstreams
            .iter()
            .map(UpstreamPool::new)
            .collect::<Result<_, _>>()?;
        Ok(Gateway {
            config: Arc::new(config),
            upstreams,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves one request. Never fails: errors become gateway responses here.
    pub async fn handle(&self, request: Request<Body>, conn: &ConnInfo) -> Response<Body> {
        let request_id = headers::request_id(request.headers());
        let timeout = self.config.server.request_timeout;
        let method = request.method().clone();
        let outcome = tokio::time::timeout(timeout, self.process(request, conn, &request_id)).await;
        let mut response = match outcome {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => self.rescue(error, &request_id, &method),
            Err(_) => self.rescue(GatewayError::RequestTimeout(timeout), &request_id, &method),
        };
        response.headers_mut().insert(&X_REQUEST_ID, request_id);
        response
    }

    /// The phases, in order, with early returns.
    async fn process(
        &self,
        mut request: Request<Body>,
        conn: &ConnInfo,
        request_id: &HeaderValue,
    ) -> Result<Response<Body>, GatewayError> {
        self.accept(&request)?;
        let routed = self.route(&request)?;
        request
            .headers_mut()
            .insert(&X_REQUEST_ID, request_id.clone());
        self.integrate(request, &routed, conn).await
    }

    /// Turns an error into the client's answer, and logs it.
    fn rescue(
        &self,
        error: GatewayError,
        request_id: &HeaderValue,
        method: &http::Method,
    ) -> Response<Body> {
        let id = request_id.to_str().unwrap_or("");
        match error.side() {
            crate::error::Side::Downstream => {
                tracing::debug!(request_id = id, %method, phase = error.phase().as_str(), status = error.status().as_u16(), error = %error, "request refused");
            }
            _ => {
                tracing::warn!(request_id = id, %method, phase = error.phase().as_str(), status = error.status().as_u16(), error = %error, "request failed");
            }
        }
        error.into_response(id)
    }

    /// `accept`: the request head is within the configured limits.
    fn accept(&self, request: &Request<Body>) -> Result<(), GatewayError> {
        let server = &self.config.server;
        let count = request.headers().len();
        if count > server.max_headers {
            return Err(GatewayError::TooManyHeaders {
                count,
                limit: server.max_headers,
            });
        }
        let bytes: usize = request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>()
            + request
                .uri()
                .path_and_query()
                .map_or(0, |p| p.as_str().len());
        if bytes > server.max_header_bytes {
            return Err(GatewayError::HeadTooLarge {
                bytes,
                limit: server.max_header_bytes,
            });
        }
        Ok(())
    }

    /// `route`: canonical path, then host + method + path → route.
    pub fn route(&self, request: &Request<Body>) -> Result<Routed<'_>, GatewayError> {
        let path = path::canonicalize(request.uri().path(), &self.config.server.paths)?;
        let host = request_host(request)?;
        match self
            .config
            .router
            .lookup(host.as_deref(), request.method(), &path)
        {
            Lookup::Found { route, params } => match self.config.routes.get(route) {
                Some(route) => Ok(Routed {
                    route,
                    path,
                    params,
                }),
                None => Err(GatewayError::NoRoute),
            },
            Lookup::MethodNotAllowed { allow } => Err(GatewayError::MethodNotAllowed {
                allow: HeaderValue::from_str(&allow)
                    .unwrap_or_else(|_| HeaderValue::from_static("")),
            }),
            Lookup::NotFound => Err(GatewayError::NoRoute),
        }
    }

    /// `integrate`: the route's upstream or mock produces the response.
    async fn integrate(
        &self,
        request: Request<Body>,
        routed: &Routed<'_>,
        conn: &ConnInfo,
    ) -> Result<Response<Body>, GatewayError> {
        match &routed.route.integration {
            Integration::Mock(mock) => Ok(mock::respond(mock)),
            Integration::Upstream(index) => {
                let Some(upstream) = self.upstreams.get(*index) else {
                    return Err(GatewayError::NoRoute);
                };
                self.proxy(request, routed, conn, upstream).await
            }
        }
    }

    /// The upstream integration: headers for the upstream, body limit, forward, and the
    /// response's headers cleaned on the way back.
    async fn proxy(
        &self,
        request: Request<Body>,
        routed: &Routed<'_>,
        conn: &ConnInfo,
        upstream: &UpstreamPool,
    ) -> Result<Response<Body>, GatewayError> {
        let limit = routed.route.max_body.unwrap_or(self.config.server.max_body);
        let (mut parts, mut body) = request.into_parts();
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        body.set_limit(limit);

        // The host routing matched (see `request_host`): the URI's authority first (HTTP/2,
        // absolute form, where it overrides `Host`), then `Host`.
        let host = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .or_else(|| parts.headers.get(HOST).cloned());
        headers::strip_hop_by_hop(&mut parts.headers);
        let proto = if conn.tls { "https" } else { "http" };
        let trusted = &self.config.server.trusted_proxies;
        headers::set_forwarded(
            &mut parts.headers,
            conn.peer.ip(),
            trusted,
            proto,
            host.as_ref(),
        );

        let path_and_query = match parts.uri.query() {
            Some(query) => format!("{}?{}", routed.path.as_str(), query),
            None => routed.path.as_str().to_owned(),
        };
        let request = Request::from_parts(parts, body);
        let mut response = upstream
            .forward(
                request,
                Forward {
                    path_and_query: &path_and_query,
                },
            )
            .await?;
        headers::strip_hop_by_hop(response.headers_mut());
        Ok(response)
    }
}

/// The request's host, lower-case and without port: the URI authority (HTTP/2,
/// absolute-form) or the `Host` header. `Ok(None)` when there is none (HTTP/1.0).
fn request_host(request: &Request<Body>) -> Result<Option<String>, GatewayError> {
    let raw = match request.uri().host() {
        Some(host) => host,
        None => match request.headers().get(HOST) {
            Some(value) => {
                let text = value.to_str().map_err(|_| GatewayError::BadHost)?;
                let authority =
                    http::uri::Authority::try_from(text).map_err(|_| GatewayError::BadHost)?;
                return Ok(Some(authority.host().to_ascii_lowercase()));
            }
            None => return Ok(None),
        },
    };
    Ok(Some(raw.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    //! The pipeline driven without sockets: a plain `http::Request` in, a `Response` out.

    use std::path::Path;

    use http::{Method, StatusCode};
    use http_body_util::BodyExt;

    use super::*;

    const ROUTES: &str = r#"
[server]
listen = "127.0.0.1:0"

[[routes]]
path = "/users/{id}"
methods = ["GET"]
mock = { status = 200, body = "user", headers = { x-route = "user" } }

[[routes]]
path = "/users/me"
methods = ["PUT"]
mock = { status = 204 }
"#;

    fn gateway() -> Gateway {
        let config = crate::config::parse(ROUTES, Path::new("test.toml"), &|_| None)
            .expect("test config is valid");
        Gateway::new(config).expect("gateway")
    }

    fn conn() -> ConnInfo {
        ConnInfo {
            peer: "127.0.0.1:40000".parse().expect("addr"),
            tls: false,
        }
    }

    async fn send(
        gateway: &Gateway,
        method: Method,
        uri: &str,
    ) -> (StatusCode, http::HeaderMap, String) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST, "localhost")
            .body(Body::Empty)
            .expect("request");
        let response = gateway.handle(request, &conn()).await;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    #[tokio::test]
    async fn mock_route_answers() {
        let (status, headers, body) = send(&gateway(), Method::GET, "/users/7").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-route"], "user");
        assert_eq!(body, "user");
        assert!(headers.contains_key(&X_REQUEST_ID));
    }

    #[tokio::test]
    async fn every_gateway_error_is_json_with_the_request_id() {
        let gateway = gateway();
        for (method, uri, expected) in [
            (Method::GET, "/nowhere", StatusCode::NOT_FOUND),
            (Method::DELETE, "/users/7", StatusCode::METHOD_NOT_ALLOWED),
            (Method::GET, "/users/%2e%2e", StatusCode::BAD_REQUEST),
            (Method::GET, "/../users/7", StatusCode::BAD_REQUEST),
        ] {
            let (status, headers, body) = send(&gateway, method, uri).await;
            assert_eq!(status, expected, "{uri}");
            let json: serde_json::Value = serde_json::from_str(&body).expect("json body");
            assert_eq!(
                json["request_id"],
                headers[&X_REQUEST_ID].to_str().expect("id")
            );
            assert!(json["message"].is_string());
        }
    }

    #[tokio::test]
    async fn method_not_allowed_lists_every_matching_route() {
        let (status, headers, _) = send(&gateway(), Method::POST, "/users/me").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[http::header::ALLOW], "GET, HEAD, PUT");
    }
}
