//! The obvious reverse proxy in hyper: a current-thread runtime (weir's `workers = 1`),
//! hyper's HTTP/1 server, hyper-util's pooled client, the request passed on with only
//! its URI rewritten. No routing, no added headers, no timeouts, no limits: the cost of
//! the design weir is built on, before weir adds anything.
//!
//! Usage: `hyper-floor LISTEN_ADDR UPSTREAM_ADDR [raw]`, e.g. `hyper-floor
//! 127.0.0.1:18085 127.0.0.1:18081`. bench/run starts it with `FLOOR=1`.
//!
//! With `raw`, an experiment (`FLOOR=raw`): hyper's client is replaced by a hand-written
//! HTTP/1.1 one (`raw.rs`): each client connection gets its own upstream connection, the
//! request head is written straight into a buffer, the response head parsed with
//! `httparse`, bodies only by `Content-Length`. It measures what leaving hyper's client
//! would buy, not something to deploy.

mod raw;

use std::convert::Infallible;
use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::http::uri::Authority;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = http_body_util::Either<Incoming, http_body_util::Full<bytes::Bytes>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: hyper-floor LISTEN_ADDR UPSTREAM_ADDR [raw]".into());
    };
    let raw = match args.next().as_deref() {
        None => false,
        Some("raw") => true,
        Some(other) => return Err(format!("unknown mode {other:?} (expected `raw`)").into()),
    };
    let listen: SocketAddr = listen.parse()?;
    let upstream: SocketAddr = upstream.parse()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            if raw {
                raw::serve(listen, upstream).await
            } else {
                serve(listen, upstream).await
            }
        })
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(listen).await?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build(connector);
    let authority = Authority::try_from(upstream.to_string())?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let client = client.clone();
        let authority = authority.clone();
        tokio::spawn(async move {
            let service =
                service_fn(move |request| forward(client.clone(), authority.clone(), request));
            // A connection's end (the client closing, a protocol error) ends only it.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    client: Client<HttpConnector, Incoming>,
    authority: Authority,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build();
    let Ok(uri) = uri else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    *request.uri_mut() = uri;
    Ok(match client.request(request).await {
        Ok(response) => response.map(Body::Left),
        Err(_) => status(StatusCode::BAD_GATEWAY),
    })
}

fn status(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::Right(http_body_util::Full::default()));
    *response.status_mut() = status;
    response
}
