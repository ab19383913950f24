//! The connections API on the admin listener, like API Gateway's `@connections`:
//!
//! - `POST /connections/{id}`: the request body is sent to the client (a text message
//!   when it is UTF-8, else binary); `200`, or `410` when no open connection has the id,
//!   `413` past the route's `max_message`, `503` when the connection cannot be reached;
//! - `GET /connections/{id}`: the connection described as JSON;
//! - `DELETE /connections/{id}`: closes it (Close 1000, or `?code=` 3000–4999 and
//!   `?reason=`); `204`.
//!
//! Connections held by another `weir` process sharing the Redis state backend are
//! reached as well ([`super::registry`]).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::registry::{ConnectionError, Outgoing};
use super::{Described, WsHandler};
use crate::body::Body;
use crate::config::{Config, WebSocketApi};
use crate::error::json_response;
use crate::headers;
use crate::server::Shared;

/// `GET` and `DELETE /connections/{id}` (and `405` for other methods; `POST` comes
/// through [`post`], which has the body).
pub async fn handle(
    method: &Method,
    id: &str,
    query: Option<&str>,
    shared: &Arc<Shared>,
    request_id: &str,
) -> Response<Body> {
    let registry = shared.gateway().connections().clone();
    match *method {
        Method::GET => match registry.describe(id).await {
            Ok(described) => json(StatusCode::OK, &describe(&described)),
            Err(error) => failed(error, request_id),
        },
        Method::DELETE => {
            let mut code = 1000;
            let mut reason = String::new();
            for (name, value) in form_pairs(query.unwrap_or("")) {
                match name.as_str() {
                    "code" => code = value.parse().unwrap_or(1000),
                    "reason" => reason = value,
                    _ => {}
                }
            }
            match registry.close(id, code, &reason).await {
                Ok(()) => {
                    let mut response = Response::new(Body::Empty);
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    response
                }
                Err(error) => failed(error, request_id),
            }
        }
        _ => {
            let mut response = json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
                request_id,
            );
            response.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, POST, DELETE"),
            );
            response
        }
    }
}

/// `POST /connections/{id}`: sends the body to the client.
pub async fn post(request: Request<hyper::body::Incoming>, shared: &Arc<Shared>) -> Response<Body> {
    let request_id = headers::request_id(request.headers());
    let id_text = request_id.to_str().unwrap_or("").to_owned();
    let gateway = shared.gateway();
    let registry = gateway.connections().clone();
    let id = request
        .uri()
        .path()
        .strip_prefix("/connections/")
        .unwrap_or("")
        .to_owned();
    // Nothing larger than the largest `max_message` could be sent anyway.
    let limit = crate::config::websocket::MAX_WEBSOCKET_MESSAGE_BYTES as usize;
    let body = match http_body_util::Limited::new(request.into_body(), limit)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return with_id(
                json_response(StatusCode::PAYLOAD_TOO_LARGE, "message too large", &id_text),
                request_id,
            );
        }
    };
    let message = match String::from_utf8(body.to_vec()) {
        Ok(text) => Outgoing::Text(text),
        Err(_) => Outgoing::Binary(body),
    };
    let response = match registry.send(&id, message).await {
        Ok(()) => json(StatusCode::OK, &json!({ "status": "sent" })),
        Err(error) => failed(error, &id_text),
    };
    with_id(response, request_id)
}

fn with_id(mut response: Response<Body>, request_id: http::HeaderValue) -> Response<Body> {
    response
        .headers_mut()
        .insert(&headers::X_REQUEST_ID, request_id);
    response
}

fn describe(described: &Described) -> Value {
    json!({
        "connection_id": described.connection_id,
        "route": described.route,
        "path": described.path,
        "client": described.client,
        "principal": described.principal,
        "connected_at_ms": described.connected_at_ms,
        "last_active_ms": described.last_active_ms,
        "instance": described.instance,
    })
}

fn failed(error: ConnectionError, request_id: &str) -> Response<Body> {
    let status = match error {
        ConnectionError::Gone => StatusCode::GONE,
        ConnectionError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ConnectionError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    };
    json_response(status, &error.to_string(), request_id)
}

fn json(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Body::full(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// `a=b&c=d`, percent-decoded (`+` is a space).
fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(&text.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (decode(name), decode(value))
    })
}

/// A WebSocket API route in `GET /config`.
pub fn effective(api: &WebSocketApi, config: &Config) -> Value {
    let name = |handler: &WsHandler| match handler {
        WsHandler::Plugin(index) => config
            .plugins
            .get(*index)
            .map_or_else(|| "?".to_owned(), |p| p.name.clone()),
        WsHandler::Upstream(index) => format!(
            "upstream:{}",
            config
                .upstreams
                .get(*index)
                .map_or("?", |u| u.name.as_str())
        ),
    };
    json!({
        "websocket": {
            "selection": api.selection.expression,
            "connect": api.connect.as_ref().map(name),
            "disconnect": api.disconnect.as_ref().map(name),
            "default": api.default.as_ref().map(name),
            "routes": api.routes.iter().map(|(key, handler)| (key.clone(), Value::from(name(handler)))).collect::<serde_json::Map<_, _>>(),
            "max_frame": api.max_frame,
            "max_message": api.max_message,
            "rate": api.rate.map(|rate| rate.per_second),
            "burst": api.rate.map(|rate| rate.burst),
            "idle_timeout_ms": api.idle_timeout.as_millis() as u64,
            "max_duration_ms": api.max_duration.as_millis() as u64,
        }
    })
}
