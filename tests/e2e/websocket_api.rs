//! WebSocket APIs (routes with `websocket = { ... }`): the gateway is the WebSocket server.
//! Real WebSocket clients (tokio-tungstenite) against real `weir` processes: the chat
//! example's plugin relaying between two clients through the connections API; `$default`
//! routing; an upstream handler getting messages as `POST`s; frame, message, rate and
//! idle limits closing with their codes; the admin connections API (send, describe,
//! close); two gateways sharing Redis delivering to each other's connections; a handshake
//! refused by the authorizer before any upgrade.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async};

use crate::guests::{guests, sha256_hex};
use crate::harness::{TestGateway, TestRedis, TestUpstream, client};
use crate::tokens::{good_claims, hs256};
use crate::websocket::metrics_until;

/// How long a test waits for one message or close.
const STEP: Duration = Duration::from_secs(5);

type Ws = WebSocketStream<TcpStream>;

/// The chat plugin's `[plugins.chat]` table.
fn chat_plugin() -> String {
    let chat = &guests().chat;
    format!(
        "[plugins.chat]\npath = \"{}\"\nsha256 = \"{}\"\n",
        chat.display(),
        sha256_hex(chat)
    )
}

/// A gateway with the chat example's route (`extra` added to its `websocket` table) and
/// `tail` appended to the file.
fn chat_gateway(extra: &str, head: &str, tail: &str) -> TestGateway {
    crate::plugins::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
{head}

{plugin}

[[routes]]
name = "chat"
path = "/chat"
websocket = {{ selection = "$.action", connect = "chat", disconnect = "chat", default = "chat", routes = {{ send = "chat", whoami = "chat" }}{extra} }}
{tail}
"#,
        plugin = chat_plugin()
    ))
}

async fn connect_to(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (ws, response) = tokio::time::timeout(STEP, client_async(request, tcp))
        .await
        .expect("handshake within 5s")?;
    assert_eq!(response.status(), 101);
    Ok(ws)
}

async fn connect(gateway: &TestGateway, path: &str) -> Ws {
    connect_to(gateway.http_addr(), path, &[])
        .await
        .expect("upgrade")
}

/// The next message, within [`STEP`].
async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(STEP, ws.next())
        .await
        .expect("a message within 5s")
        .expect("the connection is open")
        .expect("a good message")
}

/// The next message, as JSON.
async fn next_json(ws: &mut Ws) -> Value {
    match next(ws).await {
        Message::Text(text) => serde_json::from_str(text.as_str()).expect("json"),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Sends `value` as a text message.
async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("send");
}

/// The connection's id, from the chat plugin's `whoami`.
async fn whoami(ws: &mut Ws) -> String {
    send(ws, json!({ "action": "whoami" })).await;
    let answer = next_json(ws).await;
    answer["connection_id"].as_str().expect("an id").to_owned()
}

/// Reads until the gateway's Close: its code and reason.
async fn closed_with(ws: &mut Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(STEP, ws.next())
            .await
            .expect("a close within 5s")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.as_str().to_owned());
            }
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(error)) => panic!("connection failed instead of closing: {error}"),
            None => panic!("connection ended without a Close"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_relays_between_two_clients_and_unknown_actions_go_to_default() {
    let gateway = chat_gateway("", "", "");
    let mut ada = connect(&gateway, "/chat?name=ada").await;
    let ada_id = whoami(&mut ada).await;
    let mut grace = connect(&gateway, "/chat?name=grace").await;
    let grace_id = whoami(&mut grace).await;
    assert_ne!(ada_id, grace_id);
    assert_eq!(ada_id.len(), 22, "128 bits in base64url: {ada_id}");

    send(&mut ada, json!({ "action": "send", "text": "hello grace" })).await;
    assert_eq!(
        next_json(&mut grace).await,
        json!({ "from": "ada", "text": "hello grace" })
    );
    send(&mut grace, json!({ "action": "send", "text": "hi ada" })).await;
    assert_eq!(
        next_json(&mut ada).await,
        json!({ "from": "grace", "text": "hi ada" })
    );

    // Unknown keys, messages without the key, and non-JSON go to `$default`.
    for message in [
        json!({ "action": "dance" }).to_string(),
        json!({ "text": "no action" }).to_string(),
        "not json at all".to_owned(),
    ] {
        ada.send(Message::text(message)).await.expect("send");
        assert_eq!(
            next_json(&mut ada).await,
            json!({ "error": "unknown action", "route_key": "$default" })
        );
    }

    // `$disconnect` takes grace out of the room: ada's next message reaches nobody, and
    // grace's id is gone for the connections API.
    grace.close(None).await.expect("close");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gone = client()
        .get(gateway.admin_url(&format!("/connections/{grace_id}")))
        .send()
        .await
        .expect("describe");
    assert_eq!(gone.status(), 410);
    // A plain GET to the route is not a handshake.
    let plain = client()
        .get(gateway.url("/chat"))
        .send()
        .await
        .expect("get");
    assert_eq!(plain.status(), 426);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_api_sends_describes_and_closes() {
    let gateway = chat_gateway("", "", "");
    let mut ws = connect(&gateway, "/chat?name=ada").await;
    let id = whoami(&mut ws).await;
    let http = client();
    // The `whoami` question and its answer, counted by the route's metrics.
    metrics_until(
        &gateway,
        &[
            (r#"weir_websocket_open_connections{route="chat"}"#, 1.0),
            (r#"weir_websocket_connections_total{route="chat"}"#, 1.0),
            (
                r#"weir_websocket_messages_total{route="chat",direction="in"}"#,
                1.0,
            ),
            (
                r#"weir_websocket_messages_total{route="chat",direction="out"}"#,
                1.0,
            ),
            (
                r#"weir_websocket_closes_total{route="chat",reason="api"}"#,
                0.0,
            ),
        ],
    )
    .await;

    let sent = http
        .post(gateway.admin_url(&format!("/connections/{id}")))
        .body("a word from the operator")
        .send()
        .await
        .expect("post");
    assert_eq!(sent.status(), 200);
    assert_eq!(
        next(&mut ws).await,
        Message::text("a word from the operator")
    );

    let described: Value = http
        .get(gateway.admin_url(&format!("/connections/{id}")))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(described["connection_id"], id.as_str());
    assert_eq!(described["route"], "chat");
    assert_eq!(described["path"], "/chat");
    assert_eq!(described["client"], "127.0.0.1");
    assert!(described["connected_at_ms"].as_u64().expect("a time") > 0);

    let unknown = http
        .post(gateway.admin_url("/connections/AAAAAAAAAAAAAAAAAAAAAA"))
        .body("x")
        .send()
        .await
        .expect("post");
    assert_eq!(unknown.status(), 410);

    let deleted = http
        .delete(gateway.admin_url(&format!("/connections/{id}?code=4000&reason=bye")))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 204);
    assert_eq!(closed_with(&mut ws).await, (4000, "bye".to_owned()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = http
        .get(gateway.admin_url(&format!("/connections/{id}")))
        .send()
        .await
        .expect("get");
    assert_eq!(after.status(), 410);
    // The operator's message went out; the connection was closed through the API.
    metrics_until(
        &gateway,
        &[
            (r#"weir_websocket_open_connections{route="chat"}"#, 0.0),
            (r#"weir_websocket_connections_total{route="chat"}"#, 1.0),
            (
                r#"weir_websocket_messages_total{route="chat",direction="out"}"#,
                2.0,
            ),
            (
                r#"weir_websocket_closes_total{route="chat",reason="api"}"#,
                1.0,
            ),
            (
                r#"weir_websocket_closes_total{route="chat",reason="client"}"#,
                0.0,
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_rate_and_idle_limits_close_with_their_codes() {
    let gateway = crate::plugins::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

{plugin}

[[routes]]
path = "/small"
websocket = {{ default = "chat", max_frame = "1KiB", max_message = "2KiB" }}

[[routes]]
path = "/slow"
websocket = {{ default = "chat", rate = 1, burst = 2 }}

[[routes]]
path = "/idle"
websocket = {{ default = "chat", idle_timeout = "500ms" }}
"#,
        plugin = chat_plugin()
    ));

    // A message within the limits is handled; one past `max_frame` closes with 1009.
    let mut ws = connect(&gateway, "/small").await;
    ws.send(Message::text("x".repeat(900))).await.expect("send");
    assert_eq!(next_json(&mut ws).await["route_key"], "$default");
    ws.send(Message::text("x".repeat(1500)))
        .await
        .expect("send");
    assert_eq!(closed_with(&mut ws).await.0, 1009);
    // Two frames of 1000 bytes are within `max_frame`, their message (2000 bytes + …)
    // past `max_message` once a third frame follows.
    let mut ws = connect(&gateway, "/small").await;
    ws.send(Message::text("y".repeat(2100)))
        .await
        .expect("send");
    assert_eq!(closed_with(&mut ws).await.0, 1009);

    // `rate = 1, burst = 2`: the third message at once closes with 1008.
    let mut ws = connect(&gateway, "/slow").await;
    for _ in 0..3 {
        ws.send(Message::text("{}")).await.expect("send");
    }
    let mut closed = None;
    for _ in 0..3 {
        match tokio::time::timeout(STEP, ws.next())
            .await
            .expect("within 5s")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                closed = Some(u16::from(frame.code));
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(closed, Some(1008));

    // Nothing either way for `idle_timeout`: 1001.
    let mut ws = connect(&gateway, "/idle").await;
    let started = std::time::Instant::now();
    assert_eq!(closed_with(&mut ws).await.0, 1001);
    assert!(started.elapsed() >= Duration::from_millis(450));

    // Each close is counted by its route and reason.
    metrics_until(
        &gateway,
        &[
            (
                r#"weir_websocket_closes_total{route="/small",reason="too_large"}"#,
                2.0,
            ),
            (
                r#"weir_websocket_closes_total{route="/slow",reason="rate_limited"}"#,
                1.0,
            ),
            (
                r#"weir_websocket_closes_total{route="/idle",reason="idle_timeout"}"#,
                1.0,
            ),
            (r#"weir_websocket_open_connections{route="/small"}"#, 0.0),
            (r#"weir_websocket_connections_total{route="/small"}"#, 2.0),
            (
                r#"weir_websocket_messages_total{route="/small",direction="in"}"#,
                1.0,
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_handlers_get_messages_as_posts_and_their_answer_is_the_reply() {
    let backend = TestUpstream::start(|request: http::Request<Bytes>, _| async move {
        let id = request
            .headers()
            .get("x-weir-connection-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let key = request
            .headers()
            .get("x-weir-route-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = String::from_utf8_lossy(request.body()).into_owned();
        let answer = if key == "$connect" || key == "$disconnect" {
            String::new()
        } else {
            json!({ "method": request.method().as_str(), "id": id, "key": key, "body": body })
                .to_string()
        };
        hyper::Response::new(Full::new(Bytes::from(answer)))
    })
    .await;
    let gateway = TestGateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[upstreams.backend]
targets = ["{}"]

[[routes]]
path = "/api"
websocket = {{ connect = "upstream:backend", disconnect = "upstream:backend", default = "upstream:backend", routes = {{ echo = "upstream:backend" }} }}
"#,
        backend.url()
    ));
    let mut ws = connect(&gateway, "/api").await;
    send(&mut ws, json!({ "action": "echo", "n": 1 })).await;
    let answer = next_json(&mut ws).await;
    assert_eq!(answer["method"], "POST");
    assert_eq!(answer["key"], "echo");
    assert_eq!(answer["body"], r#"{"action":"echo","n":1}"#);
    let id = answer["id"].as_str().expect("id").to_owned();
    assert_eq!(id.len(), 22);
    ws.send(Message::text("plain")).await.expect("send");
    let answer = next_json(&mut ws).await;
    assert_eq!(
        (answer["key"].as_str(), answer["id"].as_str()),
        (Some("$default"), Some(id.as_str()))
    );
    ws.close(None).await.expect("close");
    // `$connect`, two messages, `$disconnect`, all at the handshake's path.
    crate::harness::wait_until(STEP, "four posts", || backend.count() == 4).await;
    let seen = backend.seen();
    let keys: Vec<&str> = seen
        .iter()
        .map(|s| s.headers["x-weir-route-key"].to_str().expect("ascii"))
        .collect();
    assert_eq!(keys, ["$connect", "echo", "$default", "$disconnect"]);
    assert!(seen.iter().all(|s| s.method == "POST" && s.uri == "/api"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorizer_refuses_the_handshake_before_any_upgrade() {
    let secret = "a-websocket-api-secret-of-32-bytes!!";
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"

{plugin}

[authorizers.main]
type = "jwt"
issuer = "{issuer}"
audience = "{audience}"
secret = "${{env:WS_API_SECRET}}"
algorithms = ["HS256"]

[[routes]]
path = "/chat"
authorizer = "main"
websocket = {{ connect = "chat", default = "chat", routes = {{ whoami = "chat" }} }}
"#,
        plugin = chat_plugin(),
        issuer = crate::tokens::ISSUER,
        audience = crate::tokens::AUDIENCE,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = TestGateway::start_in_env(dir, &toml, &[("WS_API_SECRET", secret)]);
    match connect_to(gateway.http_addr(), "/chat", &[]).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
        Err(other) => panic!("expected an HTTP answer, got {other}"),
        Ok(_) => panic!("expected the handshake to be refused"),
    }
    let token = hs256(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &good_claims("alice"),
        secret.as_bytes(),
    );
    let mut ws = connect_to(
        gateway.http_addr(),
        "/chat",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .expect("upgrade with a token");
    // The connect-time principal reaches the message handler.
    send(&mut ws, json!({ "action": "whoami" })).await;
    assert_eq!(next_json(&mut ws).await["name"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_deliver_to_each_others_connections() {
    let redis = TestRedis::start();
    let state = format!(
        "\n[state]\nbackend = \"redis\"\nurl = \"{}\"\nprefix = \"wsapi:\"\n",
        redis.url()
    );
    let a = chat_gateway("", &state, "");
    let b = chat_gateway("", &state, "");

    let mut ada = connect(&a, "/chat?name=ada").await;
    let ada_id = whoami(&mut ada).await;
    let mut grace = connect(&b, "/chat?name=grace").await;
    let _ = whoami(&mut grace).await;

    // The room is in Redis (plugin KV); the relay crosses gateways through pub/sub.
    send(&mut ada, json!({ "action": "send", "text": "across" })).await;
    assert_eq!(
        next_json(&mut grace).await,
        json!({ "from": "ada", "text": "across" })
    );
    send(&mut grace, json!({ "action": "send", "text": "and back" })).await;
    assert_eq!(
        next_json(&mut ada).await,
        json!({ "from": "grace", "text": "and back" })
    );

    // B's admin API reaches a connection A holds: send, describe, close.
    let http = client();
    let sent = http
        .post(b.admin_url(&format!("/connections/{ada_id}")))
        .body("via b")
        .send()
        .await
        .expect("post");
    assert_eq!(sent.status(), 200);
    assert_eq!(next(&mut ada).await, Message::text("via b"));
    let described: Value = http
        .get(b.admin_url(&format!("/connections/{ada_id}")))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(described["route"], "chat");
    let deleted = http
        .delete(b.admin_url(&format!("/connections/{ada_id}?code=4001&reason=moved")))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 204);
    assert_eq!(closed_with(&mut ada).await, (4001, "moved".to_owned()));
}
