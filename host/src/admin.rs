//! The admin listener: health and readiness, never on a public listener.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::Body;
use crate::error::json_response;
use crate::headers;

/// Answers one admin request.
pub fn handle<B>(request: &Request<B>, ready: &AtomicBool) -> Response<Body> {
    let request_id = headers::request_id(request.headers());
    let id = request_id.to_str().unwrap_or("");
    let mut response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => status_json(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") => {
            if ready.load(Ordering::SeqCst) {
                status_json(StatusCode::OK, "ready")
            } else {
                status_json(StatusCode::SERVICE_UNAVAILABLE, "draining")
            }
        }
        (_, "/healthz" | "/readyz") => {
            let mut r = json_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed", id);
            r.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static("GET"));
            r
        }
        _ => json_response(StatusCode::NOT_FOUND, "no such admin endpoint", id),
    };
    response
        .headers_mut()
        .insert(&headers::X_REQUEST_ID, request_id);
    response
}

fn status_json(status: StatusCode, text: &'static str) -> Response<Body> {
    let body = format!("{{\"status\":\"{text}\"}}");
    let mut response = Response::new(Body::full(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
