//! A tiny HTTP backend for Weir's quick start and benchmarks.
//!
//! `weir-demo-backend [ADDR]` (default `127.0.0.1:9000`) serves:
//! - `GET /` — `ok` (the benchmark's small response);
//! - `GET /users`, `GET /users/{id}` — a fixed JSON user list and its entries;
//! - anything under `/echo` — the request as JSON (method, path, query, headers).
//!
//! One thread, so that it stays cheap beside the gateway under load.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;

const DEFAULT_ADDR: &str = "127.0.0.1:9000";

fn users() -> serde_json::Value {
    json!([
        { "id": "1", "name": "Ada Lovelace" },
        { "id": "2", "name": "Grace Hopper" },
        { "id": "3", "name": "Barbara Liskov" }
    ])
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let response = if path == "/" {
        Response::new(Full::new(Bytes::from_static(b"ok")))
    } else if path == "/users" {
        json_response(StatusCode::OK, &users())
    } else if let Some(id) = path.strip_prefix("/users/") {
        match users()
            .as_array()
            .and_then(|list| list.iter().find(|u| u["id"] == id).cloned())
        {
            Some(user) => json_response(StatusCode::OK, &user),
            None => json_response(StatusCode::NOT_FOUND, &json!({ "message": "no such user" })),
        }
    } else if path.starts_with("/echo") {
        let headers: serde_json::Map<String, serde_json::Value> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
            .collect();
        json_response(
            StatusCode::OK,
            &json!({
                "method": request.method().as_str(),
                "path": path,
                "query": request.uri().query(),
                "headers": headers,
            }),
        )
    } else {
        json_response(StatusCode::NOT_FOUND, &json!({ "message": "not found" }))
    };
    Ok(response)
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        println!(
            "demo backend listening on http://{}",
            listener.local_addr()?
        );
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let builder = builder.clone();
            tokio::spawn(async move {
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    })
}
