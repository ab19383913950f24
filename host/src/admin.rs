//! The admin listener: health, readiness, metrics, reload, the effective config and the
//! loaded plugins. It is
//! never served on a public listener (the transport routes by listener, not by path).
//!
//! With `[server] admin_token`, every endpoint but `/healthz` and `/readyz` (which load
//! balancers probe without credentials) needs `Authorization: Bearer <token>`.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::body::Body;
use crate::config::{AuthorizerKind, Config, Integration, Scheme};
use crate::error::json_response;
use crate::headers;
use crate::pipeline::Gateway;
use crate::plugin::Role;
use crate::server::Shared;

/// The content type of the Prometheus exposition written by `prometheus-client`.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Answers one admin request, reading its body where an endpoint needs one (`POST
/// /connections/{id}`, see `crate::websocket::api::admin`).
pub async fn handle_owned(
    request: Request<hyper::body::Incoming>,
    shared: &Arc<Shared>,
) -> Response<Body> {
    if request.method() == Method::POST
        && request.uri().path().starts_with("/connections/")
        && authorized(&request, shared)
    {
        return crate::websocket::api::admin::post(request, shared).await;
    }
    handle(&request, shared).await
}

/// Answers one admin request.
pub async fn handle<B>(request: &Request<B>, shared: &Arc<Shared>) -> Response<Body> {
    let request_id = headers::request_id(request.headers());
    let id = request_id.to_str().unwrap_or("").to_owned();
    let path = request.uri().path();
    let open = matches!(path, "/healthz" | "/readyz");
    let mut response = if !open && !authorized(request, shared) {
        let mut r = json_response(StatusCode::UNAUTHORIZED, "admin token required", &id);
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    } else if let Some(connection) = path.strip_prefix("/connections/") {
        let query = request.uri().query();
        crate::websocket::api::admin::handle(request.method(), connection, query, shared, &id).await
    } else if matches!(path, "/cache/purge" | "/state") {
        traffic(request.method(), path, request.uri().query(), shared, &id).await
    } else {
        route(request.method(), path, shared, &id).await
    };
    response
        .headers_mut()
        .insert(&headers::X_REQUEST_ID, request_id);
    response
}

async fn route(method: &Method, path: &str, shared: &Arc<Shared>, id: &str) -> Response<Body> {
    match (method, path) {
        (&Method::GET, "/healthz") => json(StatusCode::OK, &json!({ "status": "ok" })),
        (&Method::GET, "/readyz") => {
            if shared.is_ready() {
                json(StatusCode::OK, &json!({ "status": "ready" }))
            } else {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({ "status": "draining" }),
                )
            }
        }
        (&Method::GET, "/metrics") => {
            let text = shared.metrics().scrape(&shared.gateway());
            let mut response = Response::new(Body::full(Bytes::from(text)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            response
        }
        (&Method::POST, "/reload") => match shared.reload().await {
            Ok(gateway) => json(
                StatusCode::OK,
                &json!({
                    "status": "reloaded",
                    "config": gateway.config().source.display().to_string(),
                    "routes": gateway.config().routes.len(),
                }),
            ),
            Err(error) => json(
                StatusCode::BAD_REQUEST,
                &json!({
                    "message": "route file refused; the running config stays",
                    "errors": error.messages(),
                    "request_id": id,
                }),
            ),
        },
        (&Method::GET, "/config") => {
            json(StatusCode::OK, &effective_config(shared.gateway().config()))
        }
        (&Method::GET, "/plugins") => json(StatusCode::OK, &plugins(&shared.gateway())),
        (_, "/healthz" | "/readyz" | "/metrics" | "/config" | "/plugins") => not_allowed("GET", id),
        (_, "/reload") => not_allowed("POST", id),
        _ => json_response(StatusCode::NOT_FOUND, "no such admin endpoint", id),
    }
}

/// `POST /cache/purge[?route=NAME]` (the response cache, all routes or one) and
/// `GET /state` (the state backend: health, degraded decisions, local cache usage).
async fn traffic(
    method: &Method,
    path: &str,
    query: Option<&str>,
    shared: &Arc<Shared>,
    id: &str,
) -> Response<Body> {
    let gateway = shared.gateway();
    match (method, path) {
        (&Method::POST, "/cache/purge") => {
            match crate::cache::admin_purge(gateway.state(), &gateway.config().routes, query).await
            {
                Ok(purged) => json(StatusCode::OK, &json!({ "purged": purged })),
                Err(crate::cache::PurgeError::NoSuchRoute) => {
                    json_response(StatusCode::NOT_FOUND, "no route with that name", id)
                }
                Err(error) => {
                    tracing::warn!(request_id = id, error = %error, "cache purge failed");
                    json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "state backend unavailable",
                        id,
                    )
                }
            }
        }
        (&Method::GET, "/state") => {
            let state = gateway.state();
            let (entries, bytes) = state.local().cache_usage();
            json(
                StatusCode::OK,
                &json!({
                    "backend": state.backend_name(),
                    "healthy": state.is_healthy(),
                    "degraded": state.degraded(),
                    "local_cache": { "entries": entries, "bytes": bytes },
                }),
            )
        }
        (_, "/cache/purge") => not_allowed("POST", id),
        _ => not_allowed("GET", id),
    }
}

/// Whether the request carries the admin token (or none is configured). Compared in
/// constant time, so the answer's timing says nothing about how much of a guess was right.
fn authorized<B>(request: &Request<B>, shared: &Shared) -> bool {
    let gateway = shared.gateway();
    let Some(expected) = gateway.config().server.admin_token.as_deref() else {
        return true;
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(presented.as_bytes(), expected.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // The length is not secret enough to hide (and hiding it would need padding); the
    // contents are compared without an early exit.
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn not_allowed(allow: &'static str, id: &str) -> Response<Body> {
    let mut r = json_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed", id);
    r.headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn json(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Body::full(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The running config with every default filled in. Built from an allow-list of fields, so
/// secrets (the admin token, keys) never appear: a set secret shows as `"<redacted>"`.
pub fn effective_config(config: &Config) -> Value {
    let server = &config.server;
    let duration = |d: std::time::Duration| humantime::format_duration(d).to_string();
    let upstreams: Vec<Value> = config
        .upstreams
        .iter()
        .map(|u| {
            json!({
                "name": u.name,
                "targets": u.targets.iter().map(|t| json!({
                    "url": redact_userinfo(&t.url),
                    "weight": t.weight,
                    "tls": t.scheme == Scheme::Https,
                })).collect::<Vec<_>>(),
                "connect_timeout": duration(u.connect_timeout),
                "timeout": duration(u.timeout),
                "retries": u.retries,
                "http2": u.http2,
                "custom_ca": u.ca.is_some(),
                "preserve_host": u.preserve_host,
                "eject": { "failures": u.eject.failures, "duration": duration(u.eject.duration) },
                "pool": { "max_idle": u.pool.max_idle, "idle_timeout": duration(u.pool.idle_timeout) },
            })
        })
        .collect();
    let routes: Vec<Value> = config
        .routes
        .iter()
        .map(|r| {
            let integration = match &r.integration {
                Integration::Upstream(i) => json!({
                    "upstream": config.upstreams.get(*i).map(|u| u.name.as_str())
                }),
                Integration::Mock(m) => json!({ "mock": { "status": m.status.as_u16() } }),
                Integration::Handler(h) => json!({
                    "handler": {
                        "plugin": config.plugins.get(h.plugin).map(|p| p.name.as_str()),
                        "body": h.body,
                        "max_body": h.max_body,
                    }
                }),
                Integration::WebSocket(api) => crate::websocket::api::admin::effective(api, config),
            };
            json!({
                "name": r.name,
                "path": r.path,
                "methods": r.methods.as_ref().map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
                "hosts": r.hosts,
                "max_body": r.max_body,
                "integration": integration,
            })
        })
        .collect();
    json!({
        "source": config.source.display().to_string(),
        "server": {
            "listen": server.listen.map(|a| a.to_string()),
            "admin": server.admin.map(|a| a.to_string()),
            "admin_token": server.admin_token.as_ref().map(|_| "<redacted>"),
            "tls": server.tls.as_ref().map(|t| json!({
                "listen": t.listen.to_string(),
                "cert": t.default_cert.cert_path.display().to_string(),
                "sni": t.sni.iter().map(|s| json!({
                    "names": s.names,
                    "cert": s.cert.cert_path.display().to_string(),
                })).collect::<Vec<_>>(),
                "client_ca": t.client_ca.is_some(),
                "client_auth": format!("{:?}", t.client_auth).to_lowercase(),
            })),
            "workers": server.workers,
            "max_body": server.max_body,
            "request_timeout": duration(server.request_timeout),
            "header_read_timeout": duration(server.header_read_timeout),
            "idle_timeout": duration(server.idle_timeout),
            "shutdown_grace": duration(server.shutdown_grace),
            "max_headers": server.max_headers,
            "max_header_bytes": server.max_header_bytes,
            "max_connections": server.max_connections,
            "trusted_proxies": server.trusted_proxies.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "merge_slashes": server.paths.merge_slashes,
            "escaped_separators": server.paths.escaped_separators,
        },
        "log": { "access": format!("{:?}", config.log.access) },
        "upstreams": upstreams,
        "routes": routes,
    })
}

/// `GET /plugins`: the running gateway's plugins, what they are, where they are used and
/// what their calls did since each was loaded (a reload that keeps a plugin keeps its
/// counts; `/metrics` has them summed over reloads).
pub fn plugins(gateway: &Gateway) -> Value {
    let config = gateway.config();
    let plugins: Vec<Value> = gateway
        .plugins()
        .iter()
        .enumerate()
        .map(|(index, plugin)| {
            let uses = Uses::of(config, index);
            let stats = plugin.stats().snapshot();
            let limits = plugin.limits();
            let calls: serde_json::Map<String, Value> = stats
                .calls()
                .filter(|&(_, has, n)| has || n > 0)
                .map(|(export, _, n)| (export.as_str().to_owned(), json!(n)))
                .collect();
            let call_seconds: serde_json::Map<String, Value> = stats
                .calls()
                .filter(|&(_, has, n)| has || n > 0)
                .map(|(export, ..)| {
                    let times = stats.times(export);
                    let value = json!({
                        "count": times.count(),
                        "sum": times.sum_nanos as f64 / 1e9,
                    });
                    (export.as_str().to_owned(), value)
                })
                .collect();
            let failures: serde_json::Map<String, Value> = stats
                .failures()
                .map(|(reason, n)| (reason.to_owned(), json!(n)))
                .collect();
            json!({
                "name": &**plugin.name(),
                "path": config.plugins.get(index).map(|p| p.path.display().to_string()),
                "sha256": crate::config::plugins::hex(plugin.sha256()),
                "size": plugin.size(),
                "compiled": plugin.compiled(),
                "exports": plugin.exports(),
                "can_play": Role::of(plugin.exports()).iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "used_as": uses.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "routes": uses.routes,
                "authorizers": uses.authorizers,
                "limits": {
                    "memory": limits.memory,
                    "timeout": humantime::format_duration(limits.timeout).to_string(),
                    "concurrency": limits.concurrency,
                },
                "requests_per_instance": plugin.requests_per_instance(),
                "in_flight": plugin.in_flight(),
                "idle": plugin.idle(),
                "instances_created": stats.instances(),
                "calls": calls,
                "failures": failures,
                "call_seconds": call_seconds,
            })
        })
        .collect();
    json!({ "plugins": plugins })
}

/// Where a config uses one plugin.
#[derive(Default)]
struct Uses<'c> {
    roles: Vec<Role>,
    /// Routes with it as handler, filter or WebSocket handler.
    routes: Vec<&'c str>,
    authorizers: Vec<&'c str>,
}

impl<'c> Uses<'c> {
    fn of(config: &'c Config, index: usize) -> Uses<'c> {
        let mut uses = Uses::default();
        for route in &config.routes {
            let handler =
                matches!(&route.integration, Integration::Handler(h) if h.plugin == index);
            let filter = route.filters.iter().any(|f| f.plugin == index);
            let websocket = matches!(&route.integration, Integration::WebSocket(api)
                if crate::websocket::api::plugins_of(api).any(|plugin| plugin == index));
            if handler {
                uses.used_as(Role::Handler);
            }
            if filter {
                uses.used_as(Role::Filter);
            }
            if websocket {
                uses.used_as(Role::WebSocket);
            }
            if handler || filter || websocket {
                uses.routes.push(&route.name);
            }
        }
        for authorizer in &config.access.authorizers {
            if let AuthorizerKind::Plugin(p) = &authorizer.kind
                && p.plugin.plugin == index
            {
                uses.used_as(Role::Authorizer);
                uses.authorizers.push(&authorizer.name);
            }
        }
        uses
    }

    fn used_as(&mut self, role: Role) {
        if !self.roles.contains(&role) {
            self.roles.push(role);
        }
    }
}

/// A URL with any `user:password@` replaced by `<redacted>@`.
fn redact_userinfo(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}<redacted>{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
    }

    #[test]
    fn userinfo_is_redacted() {
        assert_eq!(
            redact_userinfo("https://u:p@api.example:8443/x"),
            "https://<redacted>@api.example:8443/x"
        );
        assert_eq!(
            redact_userinfo("http://127.0.0.1:9000"),
            "http://127.0.0.1:9000"
        );
    }
}
