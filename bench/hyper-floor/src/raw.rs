//! The `raw` experiment: hyper's HTTP/1 server in front, a hand-written HTTP/1.1 client
//! behind (see the crate docs). Enough for bench/run's `GET /` and nothing more: request
//! bodies are refused, response bodies must have a `Content-Length`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, HOST, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use crate::{Body, status};

/// One upstream connection, kept for the client connection it serves.
struct Upstream {
    stream: TcpStream,
    /// Read buffer; what follows a response stays for the next one.
    read: BytesMut,
    /// The request head being written, reused.
    write: Vec<u8>,
}

pub async fn serve(
    listen: SocketAddr,
    upstream: SocketAddr,
) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(listen).await?;
    let host: Arc<str> = Arc::from(upstream.to_string());
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let host = host.clone();
        // HTTP/1 serves a connection's requests one at a time: the lock is never contended.
        let conn: Arc<Mutex<Option<Upstream>>> = Arc::new(Mutex::new(None));
        tokio::spawn(async move {
            let service =
                service_fn(move |request| forward(conn.clone(), upstream, host.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    conn: Arc<Mutex<Option<Upstream>>>,
    upstream: SocketAddr,
    host: Arc<str>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if !hyper::body::Body::is_end_stream(request.body()) {
        return Ok(status(StatusCode::NOT_IMPLEMENTED));
    }
    let mut slot = conn.lock().await;
    let up = match slot.as_mut() {
        Some(up) => up,
        None => {
            let Ok(stream) = TcpStream::connect(upstream).await else {
                return Ok(status(StatusCode::BAD_GATEWAY));
            };
            if stream.set_nodelay(true).is_err() {
                return Ok(status(StatusCode::BAD_GATEWAY));
            }
            slot.insert(Upstream {
                stream,
                read: BytesMut::with_capacity(8192),
                write: Vec::with_capacity(512),
            })
        }
    };
    match exchange(up, &host, &request).await {
        Some(response) => Ok(response.map(Body::Right)),
        None => {
            // Broken or unparsable: drop the connection, the next request opens another.
            *slot = None;
            Ok(status(StatusCode::BAD_GATEWAY))
        }
    }
}

/// Writes `request`'s head, reads one response. `None` when the connection failed.
async fn exchange(
    up: &mut Upstream,
    host: &str,
    request: &Request<Incoming>,
) -> Option<Response<Full<Bytes>>> {
    let head = &mut up.write;
    head.clear();
    head.extend_from_slice(request.method().as_str().as_bytes());
    head.push(b' ');
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    head.extend_from_slice(host.as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in request.headers() {
        if name == HOST {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    up.stream.write_all(head).await.ok()?;

    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&up.read).ok()? {
            httparse::Status::Complete(head_len) => {
                let code = StatusCode::from_u16(parsed.code?).ok()?;
                let mut response = Response::new(Full::default());
                *response.status_mut() = code;
                let mut body_len = None;
                for header in parsed.headers.iter() {
                    let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
                    if name == CONTENT_LENGTH {
                        body_len = std::str::from_utf8(header.value)
                            .ok()?
                            .parse::<usize>()
                            .ok();
                    }
                    let value = HeaderValue::from_bytes(header.value).ok()?;
                    response.headers_mut().append(name, value);
                }
                let total = head_len + body_len?;
                while up.read.len() < total {
                    read_more(up).await?;
                }
                let mut message = up.read.split_to(total);
                let body = message.split_off(head_len).freeze();
                *response.body_mut() = Full::new(body);
                return Some(response);
            }
            httparse::Status::Partial => read_more(up).await?,
        }
    }
}

async fn read_more(up: &mut Upstream) -> Option<()> {
    if up.read.capacity() - up.read.len() < 4096 {
        up.read.reserve(8192);
    }
    let n = up.stream.read_buf(&mut up.read).await.ok()?;
    (n > 0).then_some(())
}
