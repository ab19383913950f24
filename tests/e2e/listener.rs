//! The `accept` phase and the life of a connection: header-read and idle timeouts,
//! header limits, the connection cap, draining on `SIGTERM`/`SIGINT`, and the admin
//! listener kept apart from the public one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{Empty, Full};
use hyper::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::harness::{
    RawConn, RawResponse, TestGateway, TestPki, TestUpstream, client, tls_client_config,
    tls_connect, wait_until,
};

/// A generous bound for "the gateway reacts to a 300 ms timeout".
const CUT_WITHIN: Duration = Duration::from_secs(3);

/// A gateway on a plain and an admin listener with `server_extra` added to `[server]`.
/// Routes: `GET /hello` answers `hello`.
fn gateway(server_extra: &str) -> TestGateway {
    TestGateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
{server_extra}

[[routes]]
path = "/hello"
methods = ["GET"]
mock = {{ status = 200, body = "hello" }}
"#
    ))
}

/// A `GET /hello` head with `count` header fields in all (`Host` included), the others
/// with values of `value_bytes` bytes.
fn head_with_headers(count: usize, value_bytes: usize) -> String {
    let mut head = String::from("GET /hello HTTP/1.1\r\nHost: localhost\r\n");
    let value = "v".repeat(value_bytes);
    for i in 1..count {
        head.push_str(&format!("x-filler-{i}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// One keep-alive `GET` on a fresh connection.
async fn raw_conn_get(addr: std::net::SocketAddr, path: &str) -> RawResponse {
    RawConn::connect(addr).await.get(path).await
}

/// Asserts `response` is a gateway-made JSON error with `status`, whose `request_id`
/// matches its `x-request-id` header.
fn assert_json_error(response: &RawResponse, status: u16) {
    assert_eq!(response.status, status, "{response:?}");
    let id = response
        .header("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on {response:?}"));
    let body = response.json();
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(body["request_id"], id, "{body}");
}

// ---- header_read_timeout ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_request_head_is_cut_after_header_read_timeout() {
    let gateway = gateway(r#"header_read_timeout = "300ms""#);
    let mut slow = RawConn::connect(gateway.http_addr()).await;
    slow.send("GET /hello HTTP/1.1\r\nHost: loc").await;

    // Meanwhile, a normal client on another connection is served.
    let mut normal = RawConn::connect(gateway.http_addr()).await;
    assert_eq!(normal.get("/hello").await.status, 200);

    assert!(
        slow.closed_within(CUT_WITHIN).await,
        "a stalled request head is cut"
    );
    assert!(
        !slow.unread().contains("200"),
        "and never answered: {}",
        slow.unread()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_request_head_is_cut_even_while_bytes_keep_coming() {
    let gateway = gateway(r#"header_read_timeout = "300ms""#);
    let mut slowloris = RawConn::connect(gateway.http_addr()).await;
    slowloris.send("GET /hello HTTP/1.1\r\n").await;

    // One more header byte every 50 ms: never idle, never done.
    let cut = tokio::time::timeout(CUT_WITHIN, async {
        loop {
            if slowloris.closed_within(Duration::from_millis(50)).await {
                return;
            }
            // A write after the server closed may fail; the next read then sees it.
            let _ = slowloris.try_send("x").await;
        }
    })
    .await;
    assert!(cut.is_ok(), "the head timer runs from its first byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connection_idle_between_requests_outlives_header_read_timeout() {
    let gateway = gateway(
        r#"header_read_timeout = "300ms"
idle_timeout = "5s""#,
    );
    let mut conn = RawConn::connect(gateway.http_addr()).await;
    assert_eq!(conn.get("/hello").await.status, 200);

    // Between requests only idle_timeout applies.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let second = conn.get("/hello").await;
    assert_eq!((second.status, second.body.as_str()), (200, "hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_connection_pinging_between_requests_outlives_header_read_timeout() {
    let gateway = gateway(
        r#"header_read_timeout = "300ms"
idle_timeout = "5s""#,
    );
    let tcp = TcpStream::connect(gateway.http_addr())
        .await
        .expect("connect");
    // HTTP/2 with prior knowledge; the client pings every 100 ms while idle.
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(100))
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(tcp))
        .await
        .expect("h2c handshake");
    let conn = tokio::spawn(conn);
    let get = || {
        Request::get(format!("http://{}/hello", gateway.http_addr()))
            .body(Empty::<Bytes>::new())
            .expect("request")
    };
    let first = sender.send_request(get()).await.expect("first request");
    assert_eq!(first.status(), 200);

    tokio::time::sleep(Duration::from_secs(1)).await;

    assert!(!conn.is_finished(), "the h2c connection is still open");
    let second = sender.send_request(get()).await.expect("second request");
    assert_eq!(second.status(), 200);
}

// ---- idle_timeout ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let gateway = gateway(r#"idle_timeout = "300ms""#);
    let mut conn = RawConn::connect(gateway.http_addr()).await;
    assert_eq!(conn.get("/hello").await.status, 200);

    assert!(
        conn.closed_within(CUT_WITHIN).await,
        "an idle keep-alive connection is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_that_never_sends_a_byte_is_closed_after_idle_timeout() {
    let gateway = gateway(r#"idle_timeout = "300ms""#);
    let mut silent = RawConn::connect(gateway.http_addr()).await;
    assert!(silent.closed_within(CUT_WITHIN).await);
}

// ---- header limits ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_header_fields_get_a_json_431() {
    let gateway = gateway("max_headers = 10");

    let mut conn = RawConn::connect(gateway.http_addr()).await;
    conn.send(&head_with_headers(10, 8)).await;
    assert_eq!(conn.read_response().await.status, 200, "ten are fine");

    // Well past the limit too: hyper's own (bare) 431 must not answer first.
    for count in [11, 12, 100] {
        let mut conn = RawConn::connect(gateway.http_addr()).await;
        conn.send(&head_with_headers(count, 8)).await;
        assert_json_error(&conn.read_response().await, 431);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_head_gets_a_json_431() {
    let gateway = gateway(r#"max_header_bytes = "1KiB""#);

    let mut conn = RawConn::connect(gateway.http_addr()).await;
    conn.send(&head_with_headers(2, 700)).await;
    assert_eq!(conn.read_response().await.status, 200, "700 bytes are fine");

    for value_bytes in [2 * 1024, 12 * 1024] {
        let mut conn = RawConn::connect(gateway.http_addr()).await;
        conn.send(&head_with_headers(2, value_bytes)).await;
        assert_json_error(&conn.read_response().await, 431);
    }
}

// ---- max_connections ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    // Both public listeners share one cap of two connections.
    let pki = TestPki::new("weir test ca");
    let dir = tempfile::tempdir().expect("tempdir");
    pki.server_cert(&["localhost"]).write(dir.path(), "server");
    let gateway = TestGateway::start_in(
        dir,
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
max_connections = 2

[server.tls]
listen = "127.0.0.1:0"
cert = "{dir}/server.crt"
key = "{dir}/server.key"

[[routes]]
path = "/hello"
mock = { status = 200, body = "hello" }
"#,
    );
    let addr = gateway.http_addr();

    // Two clients are served and stay connected.
    let mut first = RawConn::connect(addr).await;
    assert_eq!(first.get("/hello").await.status, 200);
    let mut second = RawConn::connect(addr).await;
    assert_eq!(second.get("/hello").await.status, 200);

    // A third waits: the kernel may take it, the gateway does not serve it.
    let mut third = RawConn::connect(addr).await;
    third
        .send("GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    assert!(
        third
            .try_read_response(Duration::from_millis(500))
            .await
            .is_none(),
        "a third connection is not served while two are open"
    );
    // The admin listener is not behind the cap.
    let health = client()
        .get(gateway.admin_url("/healthz"))
        .send()
        .await
        .expect("admin request");
    assert_eq!(health.status(), 200);

    // Once one of the two closes, the third is served.
    drop(first);
    let answer = third.read_response().await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "hello"));

    // The cap spans listeners: with two plain connections open, a TLS client waits too.
    let https = gateway.https.expect("tls listener");
    let config = tls_client_config(&[pki.ca_der()], &[b"http/1.1"], None);
    let tls_client = tokio::spawn(async move {
        let stream = tls_connect(https, config, "localhost").await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        let request = Request::get("/hello")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .map_err(std::io::Error::other)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(std::io::Error::other)?;
        std::io::Result::Ok(response.status())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!tls_client.is_finished(), "the TLS client waits for a slot");
    drop(second);
    let status = tokio::time::timeout(Duration::from_secs(5), tls_client)
        .await
        .expect("TLS client served once a slot is free")
        .expect("task")
        .expect("TLS request");
    assert_eq!(status, 200);
}

// ---- draining on SIGTERM / SIGINT ----

/// The drain story for one signal: a request is in flight at a slow upstream (held until
/// the test releases it) and another connection sits idle; on `signal` the gateway stops
/// accepting, closes the idle connection, says it is draining on `/readyz`, finishes the
/// request, and exits with 0.
async fn signal_drains_in_flight_requests_then_exits_cleanly(signal: &str) {
    let release = Arc::new(Notify::new());
    let upstream = {
        let release = release.clone();
        TestUpstream::start(move |_request, _addr| {
            let release = release.clone();
            async move {
                release.notified().await;
                Response::new(Full::new(Bytes::from("worth the wait")))
            }
        })
        .await
    };
    let mut gateway = TestGateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[upstreams.slow]
targets = ["{}"]

[[routes]]
path = "/slow"
upstream = "slow"

[[routes]]
path = "/hello"
mock = {{ status = 200, body = "hello" }}
"#,
        upstream.url()
    ));
    let addr = gateway.http_addr();
    let mut idle = RawConn::connect(addr).await;
    assert_eq!(idle.get("/hello").await.status, 200);
    let in_flight = tokio::spawn(client().get(gateway.url("/slow")).send());
    wait_until(
        Duration::from_secs(5),
        "the upstream got the request",
        || upstream.count() == 1,
    )
    .await;

    gateway.signal(signal);

    // New connections are refused while the request is still held at the upstream.
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "the listener closes once draining begins");
    assert!(
        idle.closed_within(CUT_WITHIN).await,
        "an idle keep-alive connection is closed by the drain"
    );
    assert!(!in_flight.is_finished(), "the slow request is still held");
    // Load balancers can see the drain: the admin listener stays up and is not ready.
    let readyz = client()
        .get(gateway.admin_url("/readyz"))
        .send()
        .await
        .expect("admin listener up while draining");
    assert_eq!(readyz.status(), 503);
    let body: serde_json::Value = readyz.json().await.expect("json");
    assert_eq!(body["status"], "draining");
    let healthz = client()
        .get(gateway.admin_url("/healthz"))
        .send()
        .await
        .expect("healthz while draining");
    assert_eq!(healthz.status(), 200);

    release.notify_one();
    let response = in_flight
        .await
        .expect("task")
        .expect("in-flight request completes");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "worth the wait");

    let status = tokio::task::block_in_place(|| gateway.wait_exit(Duration::from_secs(5)));
    assert_eq!(status.code(), Some(0), "weir exits cleanly after {signal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_cleanly() {
    signal_drains_in_flight_requests_then_exits_cleanly("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_in_flight_requests_then_exits_cleanly() {
    signal_drains_in_flight_requests_then_exits_cleanly("INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_outlasting_shutdown_grace_is_cut_and_weir_still_exits() {
    // An upstream that never answers.
    let upstream = TestUpstream::start(|_request, _addr| async {
        std::future::pending::<()>().await;
        Response::new(Full::new(Bytes::new()))
    })
    .await;
    let mut gateway = TestGateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "300ms"

[upstreams.stuck]
targets = ["{}"]

[[routes]]
path = "/stuck"
upstream = "stuck"
"#,
        upstream.url()
    ));
    let in_flight = tokio::spawn(client().get(gateway.url("/stuck")).send());
    wait_until(
        Duration::from_secs(5),
        "the upstream got the request",
        || upstream.count() == 1,
    )
    .await;

    gateway.signal("TERM");

    let status = tokio::task::block_in_place(|| gateway.wait_exit(CUT_WITHIN));
    assert_eq!(status.code(), Some(0));
    let outcome = tokio::time::timeout(CUT_WITHIN, in_flight)
        .await
        .expect("the client learns its request was cut")
        .expect("task");
    assert!(outcome.is_err(), "no answer was made up: {outcome:?}");
}

// ---- the admin listener ----

#[tokio::test]
async fn admin_listener_answers_health_and_readiness() {
    let gateway = gateway("");
    for (path, status_text) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let response = client()
            .get(gateway.admin_url(path))
            .send()
            .await
            .expect("admin request");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert!(response.headers().contains_key("x-request-id"), "{path}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["status"], status_text, "{path}");
    }

    let unknown = raw_conn_get(gateway.admin.expect("admin"), "/nope").await;
    assert_json_error(&unknown, 404);
    let mut conn = RawConn::connect(gateway.admin.expect("admin")).await;
    conn.send("POST /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
        .await;
    let post = conn.read_response().await;
    assert_json_error(&post, 405);
    assert_eq!(post.header("allow"), Some("GET"));
}

#[tokio::test]
async fn admin_paths_on_the_public_listener_are_plain_404s() {
    let gateway = gateway("");
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = raw_conn_get(gateway.http_addr(), path).await;
        assert_json_error(&response, 404);
        assert!(
            !response.body.contains("ready") && !response.body.contains("\"ok\""),
            "{path}: {}",
            response.body
        );
    }
}

#[tokio::test]
async fn every_gateway_response_carries_x_request_id() {
    let gateway = gateway("max_headers = 10");
    let addr = gateway.http_addr();

    let ok = raw_conn_get(addr, "/hello").await;
    assert_eq!(ok.status, 200);
    assert!(ok.header("x-request-id").is_some_and(|id| !id.is_empty()));

    assert_json_error(&raw_conn_get(addr, "/nowhere").await, 404);

    let mut conn = RawConn::connect(addr).await;
    conn.send("DELETE /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let not_allowed = conn.read_response().await;
    assert_json_error(&not_allowed, 405);
    assert!(
        not_allowed
            .header("allow")
            .is_some_and(|allow| allow.contains("GET"))
    );

    let mut conn = RawConn::connect(addr).await;
    conn.send(&head_with_headers(30, 8)).await;
    assert_json_error(&conn.read_response().await, 431);

    // A well-formed incoming id is kept.
    let mut conn = RawConn::connect(addr).await;
    conn.send("GET /nowhere HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: trace-42\r\n\r\n")
        .await;
    let kept = conn.read_response().await;
    assert_eq!(kept.header("x-request-id"), Some("trace-42"));
    assert_eq!(kept.json()["request_id"], "trace-42");
}
