//! Proxied WebSocket routes through the real gateway, with a real WebSocket client and
//! backend (tokio-tungstenite): echo of text, binary, ping/pong and close both ways; a
//! handshake refused by the route's authorizer or API key before the upstream sees it; an
//! upgrade refused by the upstream, whose answer reaches the client; idle timeout, maximum
//! duration and shutdown closing both sides with status 1001; `wss` on the TLS listener
//! to an `https` upstream that also speaks HTTP/2.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::Response;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as HandshakeRequest, Response as HandshakeResponse,
};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, accept_hdr_async, client_async};

use crate::harness::{
    TestGateway, TestPki, TestUpstream, tls_client_config, tls_connect, wait_until,
};
use crate::tokens::{AUDIENCE, ISSUER, good_claims, hs256};

/// How long a test waits for one message or close.
const STEP: Duration = Duration::from_secs(5);

/// What a [`WsBackend`] saw.
#[derive(Debug, Default)]
struct Seen {
    /// Each handshake's request target and headers.
    handshakes: Vec<(String, http::HeaderMap)>,
    /// How each connection ended: the peer's Close (code, reason), and the error that
    /// ended it instead of a clean close.
    ends: Vec<Ended>,
    /// The protocol ALPN chose on each TLS connection.
    alpn: Vec<Option<Vec<u8>>>,
}

#[derive(Debug, Clone)]
struct Ended {
    close: Option<(u16, String)>,
    error: Option<String>,
}

/// A WebSocket backend: echoes text and binary messages (tungstenite answers pings), ends
/// the connection itself on the text `"close-me"` (1000, `"server bye"`).
struct WsBackend {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl WsBackend {
    async fn start() -> WsBackend {
        Self::serve(None).await
    }

    /// Over TLS with `config` (its ALPN decides what the gateway may speak).
    async fn start_tls(config: Arc<rustls::ServerConfig>) -> WsBackend {
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> WsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let seen = seen.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        match tls {
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    let alpn = stream.get_ref().1.alpn_protocol();
                                    seen.lock()
                                        .expect("seen")
                                        .alpn
                                        .push(alpn.map(<[u8]>::to_vec));
                                    echo(stream, seen).await;
                                }
                            }
                            None => echo(stream, seen).await,
                        }
                    });
                }
            })
        };
        WsBackend { addr, seen, task }
    }

    fn handshakes(&self) -> Vec<(String, http::HeaderMap)> {
        self.seen.lock().expect("seen").handshakes.clone()
    }

    /// The first connection's end, waiting for it.
    async fn ended(&self) -> Ended {
        wait_until(STEP, "the backend's connection ends", || {
            !self.seen.lock().expect("seen").ends.is_empty()
        })
        .await;
        self.seen.lock().expect("seen").ends[0].clone()
    }
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S, seen: Arc<Mutex<Seen>>) {
    let record = seen.clone();
    // The signature is tungstenite's (its error type is a whole HTTP response).
    #[allow(clippy::result_large_err)]
    let callback = move |request: &HandshakeRequest, response: HandshakeResponse| {
        record
            .lock()
            .expect("seen")
            .handshakes
            .push((request.uri().to_string(), request.headers().clone()));
        Ok(response)
    };
    let Ok(mut ws) = accept_hdr_async(stream, callback).await else {
        return;
    };
    let (mut close, mut error) = (None, None);
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Text(text)) if text.as_str() == "close-me" => {
                let bye = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "server bye".into(),
                };
                if let Err(e) = ws.close(Some(bye)).await {
                    error = Some(e.to_string());
                    break;
                }
            }
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                if let Err(e) = ws.send(message).await {
                    error = Some(e.to_string());
                    break;
                }
            }
            Ok(Message::Close(frame)) => {
                close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
            }
            Ok(_) => {}
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    seen.lock().expect("seen").ends.push(Ended { close, error });
}

/// Opens a WebSocket to `path` over `stream` (plain or TLS) with extra `headers`.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<WebSocketStream<S>, WsError> {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    let (ws, response) = tokio::time::timeout(STEP, client_async(request, stream))
        .await
        .expect("handshake within 5s")?;
    assert_eq!(response.status(), 101);
    Ok(ws)
}

/// A plain `ws://` connection through the gateway's listener.
async fn connect(
    gateway: &TestGateway,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<WebSocketStream<TcpStream>, WsError> {
    let addr = gateway.http_addr();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    handshake(tcp, addr, path, headers).await
}

/// The status and body of a refused handshake.
fn refused(result: Result<WebSocketStream<TcpStream>, WsError>) -> (u16, String) {
    match result {
        Err(WsError::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(other) => panic!("expected an HTTP answer, got {other}"),
        Ok(_) => panic!("expected the handshake to be refused"),
    }
}

/// The next message, within [`STEP`].
async fn next<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Option<Message> {
    tokio::time::timeout(STEP, ws.next())
        .await
        .expect("a message within 5s")
        .map(|message| message.expect("a good message"))
}

/// The next message is a Close with `code` and `reason`, then the connection ends cleanly.
async fn expect_close<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    code: u16,
    reason: &str,
) {
    match next(ws).await {
        Some(Message::Close(Some(frame))) => {
            assert_eq!(
                (u16::from(frame.code), frame.reason.as_str()),
                (code, reason)
            );
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert_eq!(next(ws).await, None, "the connection ends after the close");
}

/// A gateway with the WebSocket backend behind `/chat/{room}` (`extra` follows that route:
/// more keys, more tables) and `env` for `${env:NAME}`.
fn gateway_env(backend: &WsBackend, extra: &str, env: &[(&str, &str)]) -> TestGateway {
    let dir = tempfile::tempdir().expect("tempdir");
    TestGateway::start_in_env(
        dir,
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "20s"

[upstreams.chat]
targets = ["http://{backend}"]

[[routes]]
path = "/chat/{{room}}"
upstream = "chat"
{extra}
"#,
            backend = backend.addr
        ),
        env,
    )
}

/// [`gateway_env`] with no environment.
fn gateway(backend: &WsBackend, extra: &str) -> TestGateway {
    gateway_env(backend, extra, &[])
}

#[tokio::test]
async fn proxied_echo_of_text_binary_ping_and_close() {
    let backend = WsBackend::start().await;
    let gateway = gateway(&backend, "");
    let mut ws = connect(&gateway, "/chat/lobby?since=7", &[("x-request-id", "ws-1")])
        .await
        .expect("upgrade");

    ws.send(Message::text("hello")).await.expect("send");
    assert_eq!(next(&mut ws).await, Some(Message::text("hello")));
    let binary = Bytes::from_static(&[0, 1, 2, 255]);
    ws.send(Message::Binary(binary.clone()))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await, Some(Message::Binary(binary)));
    // A message larger than the gateway's copy buffer, in one frame.
    let big = "x".repeat(100_000);
    ws.send(Message::text(big.clone())).await.expect("send");
    assert_eq!(next(&mut ws).await, Some(Message::text(big)));
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .expect("send");
    assert_eq!(
        next(&mut ws).await,
        Some(Message::Pong(Bytes::from_static(b"are you there")))
    );

    // The client closes: its Close reaches the backend, whose reply comes back.
    let bye = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    ws.close(Some(bye)).await.expect("close");
    expect_close(&mut ws, 1000, "bye").await;
    let ended = backend.ended().await;
    assert_eq!(ended.close, Some((1000, "bye".to_owned())));
    assert_eq!(ended.error, None, "the backend saw a clean close");

    // The handshake went through like any proxied request, upgrade headers kept.
    let handshakes = backend.handshakes();
    let (target, headers) = &handshakes[0];
    assert_eq!(target, "/chat/lobby?since=7");
    assert_eq!(headers["upgrade"], "websocket");
    assert_eq!(headers["connection"], "upgrade");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-request-id"], "ws-1");
    assert!(headers.contains_key("sec-websocket-key"));
}

#[tokio::test]
async fn the_upstream_closing_first_is_passed_on_cleanly() {
    let backend = WsBackend::start().await;
    let gateway = gateway(&backend, "");
    let mut ws = connect(&gateway, "/chat/lobby", &[])
        .await
        .expect("upgrade");
    ws.send(Message::text("close-me")).await.expect("send");
    expect_close(&mut ws, 1000, "server bye").await;
    let ended = backend.ended().await;
    assert_eq!(
        ended.close,
        Some((1000, "server bye".to_owned())),
        "our reply"
    );
    assert_eq!(ended.error, None);
}

#[tokio::test]
async fn handshakes_refused_by_authorizer_or_api_key_never_reach_the_upstream() {
    let backend = WsBackend::start().await;
    let secret = "a-websocket-test-secret-of-32-bytes!";
    let key_sha256: String = ring::digest::digest(&ring::digest::SHA256, b"ws-key")
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let gateway = gateway_env(
        &backend,
        &format!(
            r#"authorizer = "main"

[[routes]]
path = "/keyed"
upstream = "chat"
api_key = true

[authorizers.main]
type = "jwt"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
secret = "${{env:WS_JWT_SECRET}}"
algorithms = ["HS256"]
forward_claims = {{ sub = "x-user-id" }}

[[api_keys]]
name = "ws-client"
key_sha256 = "{key_sha256}"
"#
        ),
        &[("WS_JWT_SECRET", secret)],
    );

    let (status, body) = refused(connect(&gateway, "/chat/lobby", &[]).await);
    assert_eq!(status, 401);
    assert!(body.contains("request_id"), "a gateway error: {body}");
    let forged = hs256(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &good_claims("mallory"),
        b"not-the-secret-not-the-secret-not!",
    );
    let bearer = format!("Bearer {forged}");
    let (status, _) =
        refused(connect(&gateway, "/chat/lobby", &[("authorization", &bearer)]).await);
    assert_eq!(status, 401);
    let (status, _) = refused(connect(&gateway, "/keyed", &[]).await);
    assert_eq!(status, 403);
    assert!(
        backend.handshakes().is_empty(),
        "refused before the upstream"
    );

    let token = hs256(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &good_claims("alice"),
        secret.as_bytes(),
    );
    let bearer = format!("Bearer {token}");
    let mut ws = connect(&gateway, "/chat/lobby", &[("authorization", &bearer)])
        .await
        .expect("upgrade with a token");
    ws.send(Message::text("hi")).await.expect("send");
    assert_eq!(next(&mut ws).await, Some(Message::text("hi")));
    let mut ws = connect(&gateway, "/keyed", &[("x-api-key", "ws-key")])
        .await
        .expect("upgrade with a key");
    ws.send(Message::text("hi")).await.expect("send");
    assert_eq!(next(&mut ws).await, Some(Message::text("hi")));

    let handshakes = backend.handshakes();
    assert_eq!(handshakes.len(), 2);
    assert_eq!(handshakes[0].1["x-user-id"], "alice");
    assert!(!handshakes[1].1.contains_key("x-api-key"), "the key stays");
}

#[tokio::test]
async fn an_upgrade_refused_upstream_passes_its_status_and_body() {
    let upstream = TestUpstream::start(|_, _| async {
        let mut response = Response::new(Full::new(Bytes::from_static(b"no sockets here")));
        *response.status_mut() = http::StatusCode::FORBIDDEN;
        response
    })
    .await;
    let gateway = TestGateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[upstreams.plain]
targets = ["{upstream}"]

[[routes]]
path = "/ws"
upstream = "plain"
"#,
        upstream = upstream.url()
    ));
    let (status, body) = refused(connect(&gateway, "/ws", &[]).await);
    assert_eq!((status, body.as_str()), (403, "no sockets here"));
    let seen = upstream.seen();
    assert_eq!(
        seen[0].headers["upgrade"], "websocket",
        "sent as an upgrade"
    );
    // A plain request on the same route is still an ordinary, pooled request.
    let response = crate::harness::client()
        .get(gateway.url("/ws"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 403);
    assert!(!upstream.seen()[1].headers.contains_key("upgrade"));
}

#[tokio::test]
async fn idle_timeout_closes_both_sides_and_traffic_keeps_it_open() {
    let backend = WsBackend::start().await;
    let gateway = gateway(&backend, "websocket_idle_timeout = \"1s\"");
    let mut ws = connect(&gateway, "/chat/lobby", &[])
        .await
        .expect("upgrade");
    // Pings every 200 ms for 2 s keep the connection open past its idle timeout.
    let opened = Instant::now();
    while opened.elapsed() < Duration::from_secs(2) {
        ws.send(Message::Ping(Bytes::from_static(b"k")))
            .await
            .expect("send");
        assert_eq!(
            next(&mut ws).await,
            Some(Message::Pong(Bytes::from_static(b"k")))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let quiet = Instant::now();
    expect_close(&mut ws, 1001, "idle timeout").await;
    assert!(
        quiet.elapsed() >= Duration::from_millis(700),
        "closed after {:?} of silence",
        quiet.elapsed()
    );
    let ended = backend.ended().await;
    assert_eq!(ended.close, Some((1001, "idle timeout".to_owned())));
    assert_eq!(ended.error, None, "the backend saw a clean close");
}

#[tokio::test]
async fn max_duration_closes_a_busy_connection() {
    let backend = WsBackend::start().await;
    let gateway = gateway(&backend, "websocket_max_duration = \"1500ms\"");
    let mut ws = connect(&gateway, "/chat/lobby", &[])
        .await
        .expect("upgrade");
    let opened = Instant::now();
    let close = loop {
        ws.send(Message::text("busy")).await.expect("send");
        match next(&mut ws).await {
            Some(Message::Text(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            other => break other,
        }
    };
    let Some(Message::Close(Some(frame))) = close else {
        panic!("expected a close frame, got {close:?}");
    };
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (1001, "maximum duration")
    );
    assert!(opened.elapsed() >= Duration::from_millis(1400));
    assert_eq!(next(&mut ws).await, None);
    let ended = backend.ended().await;
    assert_eq!(ended.close, Some((1001, "maximum duration".to_owned())));
}

#[tokio::test]
async fn shutdown_closes_open_websockets_with_going_away() {
    let backend = WsBackend::start().await;
    let mut gateway = gateway(&backend, "");
    let mut ws = connect(&gateway, "/chat/lobby", &[])
        .await
        .expect("upgrade");
    ws.send(Message::text("before")).await.expect("send");
    assert_eq!(next(&mut ws).await, Some(Message::text("before")));
    let asked = Instant::now();
    gateway.signal("TERM");
    expect_close(&mut ws, 1001, "shutdown").await;
    assert_eq!(
        backend.ended().await.close,
        Some((1001, "shutdown".to_owned()))
    );
    // Closed at once, not at the end of the 20 s grace period.
    let status = gateway.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(asked.elapsed() < Duration::from_secs(10));
}

/// `wss://` on the TLS listener (ALPN `http/1.1`), to an `https` upstream with
/// `http2 = true` whose server also offers `h2`: the handshake must still go over HTTP/1.1.
#[tokio::test]
async fn wss_over_tls_to_an_https_upstream_that_speaks_http2() {
    let pki = TestPki::new("weir websocket test ca");
    let backend_cert = pki.server_cert(&["localhost"]);
    let backend =
        WsBackend::start_tls(backend_cert.rustls_server_config(&[b"h2", b"http/1.1"])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    pki.server_cert(&["localhost", "127.0.0.1"])
        .write(dir.path(), "server");
    std::fs::write(dir.path().join("ca.crt"), pki.ca_pem()).expect("write ca");
    let gateway = TestGateway::start_in(
        dir,
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"

[server.tls]
listen = "127.0.0.1:0"
cert = "{{dir}}/server.crt"
key = "{{dir}}/server.key"

[upstreams.secure]
targets = ["https://localhost:{port}"]
ca = "{{dir}}/ca.crt"
http2 = true

[[routes]]
path = "/secure"
upstream = "secure"
"#,
            port = backend.addr.port()
        ),
    );
    let addr = gateway.https.expect("tls listener");
    let config = tls_client_config(&[pki.ca_der()], &[b"http/1.1"], None);
    let tls = tls_connect(addr, config, "localhost").await.expect("tls");
    let mut ws = handshake(tls, addr, "/secure", &[]).await.expect("upgrade");
    ws.send(Message::text("over tls")).await.expect("send");
    assert_eq!(next(&mut ws).await, Some(Message::text("over tls")));
    ws.send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .expect("send");
    assert_eq!(
        next(&mut ws).await,
        Some(Message::Pong(Bytes::from_static(b"p")))
    );
    ws.close(None).await.expect("close");
    match next(&mut ws).await {
        Some(Message::Close(_)) => {}
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert_eq!(next(&mut ws).await, None);
    let ended = backend.ended().await;
    assert_eq!(ended.error, None, "the backend saw a clean close");
    assert_eq!(backend.handshakes()[0].1["x-forwarded-proto"], "https");
    let alpn = backend.seen.lock().expect("seen").alpn.clone();
    assert_eq!(
        alpn,
        [Some(b"http/1.1".to_vec())],
        "the handshake went over HTTP/1.1"
    );
}

#[tokio::test]
async fn an_open_websocket_keeps_its_place_under_max_connections() {
    let backend = WsBackend::start().await;
    let gateway = TestGateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_connections = 1

[upstreams.chat]
targets = ["http://{backend}"]

[[routes]]
path = "/chat"
upstream = "chat"

[[routes]]
path = "/ping"
mock = {{ status = 200, body = "pong" }}
"#,
        backend = backend.addr
    ));
    let mut ws = connect(&gateway, "/chat", &[]).await.expect("upgrade");
    let waiting = crate::harness::client().get(gateway.url("/ping")).send();
    tokio::pin!(waiting);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "a second connection is not served while the websocket is open"
    );
    ws.close(None).await.expect("close");
    while next(&mut ws).await.is_some() {}
    let response = tokio::time::timeout(STEP, waiting)
        .await
        .expect("served once the websocket closed")
        .expect("response");
    assert_eq!(response.text().await.expect("body"), "pong");
}

/// Scrapes the admin `/metrics` until every `(series, value)` holds (or fails after
/// [`STEP`]); returns the last scrape.
pub(crate) async fn metrics_until(gateway: &TestGateway, expected: &[(&str, f64)]) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        let text = crate::ops::metrics(gateway).await;
        let missing: Vec<_> = expected
            .iter()
            .filter(|(series, value)| crate::ops::sample(&text, series) != Some(*value))
            .collect();
        if missing.is_empty() {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "not within {STEP:?}: {missing:?} in {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn tunnels_are_counted_in_the_metrics_by_route_and_close_reason() {
    let backend = WsBackend::start().await;
    let gateway = TestGateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[upstreams.chat]
targets = ["http://{backend}"]

[[routes]]
name = "chat"
path = "/chat"
upstream = "chat"
websocket_idle_timeout = "1s"
"#,
        backend = backend.addr
    ));
    let mut ws = connect(&gateway, "/chat", &[]).await.expect("upgrade");
    ws.send(Message::text("hello")).await.expect("send");
    assert_eq!(next(&mut ws).await, Some(Message::text("hello")));
    metrics_until(
        &gateway,
        &[
            (r#"weir_websocket_open_tunnels{route="chat"}"#, 1.0),
            (r#"weir_websocket_tunnels_total{route="chat"}"#, 1.0),
            (
                r#"weir_websocket_tunnel_closes_total{route="chat",reason="closed"}"#,
                0.0,
            ),
            (
                r#"weir_websocket_tunnel_bytes_total{route="chat",direction="in"}"#,
                0.0,
            ),
        ],
    )
    .await;

    // The client closes; the tunnel's bytes are counted as it ends.
    ws.close(None).await.expect("close");
    while next(&mut ws).await.is_some() {}
    let text = metrics_until(
        &gateway,
        &[
            (r#"weir_websocket_open_tunnels{route="chat"}"#, 0.0),
            (
                r#"weir_websocket_tunnel_closes_total{route="chat",reason="closed"}"#,
                1.0,
            ),
        ],
    )
    .await;
    // In: the masked "hello" (6 + 5) and the client's Close (6); out: the echo (2 + 5) and
    // the backend's Close reply (2).
    let bytes = |direction: &str| {
        crate::ops::sample(
            &text,
            &format!(
                r#"weir_websocket_tunnel_bytes_total{{route="chat",direction="{direction}"}}"#
            ),
        )
    };
    assert_eq!(bytes("in"), Some(17.0), "{text}");
    assert_eq!(bytes("out"), Some(9.0), "{text}");

    // A second tunnel left idle is closed by the gateway: counted by its reason.
    let mut idle = connect(&gateway, "/chat", &[]).await.expect("upgrade");
    expect_close(&mut idle, 1001, "idle timeout").await;
    metrics_until(
        &gateway,
        &[
            (r#"weir_websocket_open_tunnels{route="chat"}"#, 0.0),
            (r#"weir_websocket_tunnels_total{route="chat"}"#, 2.0),
            (
                r#"weir_websocket_tunnel_closes_total{route="chat",reason="idle_timeout"}"#,
                1.0,
            ),
            (
                r#"weir_websocket_tunnel_closes_total{route="chat",reason="closed"}"#,
                1.0,
            ),
        ],
    )
    .await;
}
