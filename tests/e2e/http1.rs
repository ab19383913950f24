//! weir's own HTTP/1.1 server (decision 0008) over raw sockets: pipelined requests answered
//! in order, heads split anywhere, response framing (length, chunked, none) for bodies the
//! gateway streams, `Connection: close`, and the hand-over to hyper's server of the
//! requests it does not serve (bodies, `HEAD`, HTTP/1.0, `Expect`) in the middle of a
//! kept-alive connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{RawConn, TestGateway, TestUpstream};

/// A backend answering `GET /raw/NAME` on kept-alive connections with the parts of
/// [`raw_answer`]`(NAME)`, written one by one with `PAUSE` between them.
async fn raw_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    let path = head.split_whitespace().nth(1).unwrap_or("");
                    let name = path.rsplit('/').next().unwrap_or("");
                    for (i, part) in raw_answer(name).iter().enumerate() {
                        if i > 0 {
                            tokio::time::sleep(PAUSE).await;
                        }
                        if stream.write_all(part.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    if name == "short" {
                        return; // ends the connection mid-body
                    }
                }
            });
        }
    });
    addr
}

const PAUSE: Duration = Duration::from_millis(400);

fn raw_answer(name: &str) -> Vec<&'static str> {
    match name {
        "chunked" => vec![
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n",
            "6\r\nsecond\r\n0\r\n\r\n",
        ],
        "no-content" => vec!["HTTP/1.1 204 No Content\r\n\r\n"],
        "not-modified" => vec!["HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\n\r\n"],
        "short" => vec!["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"],
        "own-id" => {
            vec!["HTTP/1.1 200 OK\r\nx-request-id: from-upstream\r\ncontent-length: 2\r\n\r\nok"]
        }
        _ => vec!["HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"],
    }
}

/// A gateway with `/mock` (a mock), `/echo/...` (an echo backend) and `/raw/...` (the raw
/// backend above).
async fn gateway() -> (TestGateway, TestUpstream) {
    let echo = TestUpstream::echo().await;
    let raw = raw_backend().await;
    let gateway = TestGateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[upstreams.echo]
targets = ["http://{echo}"]

[upstreams.raw]
targets = ["http://{raw}"]

[[routes]]
path = "/mock"
mock = {{ status = 200, body = "mocked" }}

[[routes]]
path = "/echo/{{rest+}}"
upstream = "echo"

[[routes]]
path = "/raw/{{rest+}}"
upstream = "raw"
"#,
        echo = echo.addr,
    ));
    (gateway, echo)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_with_length_date_and_request_id() {
    let (gateway, _echo) = gateway().await;
    let mut conn = RawConn::connect(gateway.http_addr()).await;
    conn.send(&format!(
        "{}{}{}",
        get("/mock"),
        get("/echo/one"),
        get("/nowhere")
    ))
    .await;
    let mock = conn.read_response().await;
    let echoed = conn.read_response().await;
    let missing = conn.read_response().await;
    assert_eq!((mock.status, mock.body.as_str()), (200, "mocked"));
    assert_eq!(mock.header("content-length"), Some("6"));
    assert_eq!(echoed.status, 200);
    assert_eq!(echoed.json()["uri"], "/echo/one");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["message"], "no route matches this request");
    for response in [&mock, &echoed, &missing] {
        assert!(response.header("x-request-id").is_some(), "{response:?}");
        let date = response.header("date").expect("date");
        assert!(date.ends_with(" GMT"), "{date}");
    }
    // Still open: a fourth on the same connection.
    assert_eq!(conn.get("/mock").await.body, "mocked");
}

/// The values of `name` in `response`, in order.
fn all<'r>(response: &'r crate::harness::RawResponse, name: &str) -> Vec<&'r str> {
    response
        .headers
        .iter()
        .filter(|(field, _)| field.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
        .collect()
}

#[tokio::test]
async fn the_request_id_replaces_the_upstreams_in_either_server() {
    let (gateway, _echo) = gateway().await;
    let mut conn = RawConn::connect(gateway.http_addr()).await;
    // weir's server: the client's id, or a new one, written into the head once.
    conn.send("GET /raw/own-id HTTP/1.1\r\nHost: localhost\r\nx-request-id: client-7\r\n\r\n")
        .await;
    let kept = conn.read_response().await;
    assert_eq!((kept.status, kept.body.as_str()), (200, "ok"));
    assert_eq!(all(&kept, "x-request-id"), ["client-7"], "{kept:?}");
    let new = conn.get("/raw/own-id").await;
    let ids = all(&new, "x-request-id");
    assert_eq!(ids.len(), 1, "{new:?}");
    assert!(
        ids[0].len() == 32 && ids[0].bytes().all(|b| b.is_ascii_hexdigit()),
        "{new:?}"
    );
    // hyper's server (HTTP/1.0 is handed to it): the id put into the map, replacing.
    let mut old = RawConn::connect(gateway.http_addr()).await;
    old.send("GET /raw/own-id HTTP/1.0\r\nHost: localhost\r\nx-request-id: client-8\r\n\r\n")
        .await;
    let handed = old.read_response().await;
    assert_eq!((handed.status, handed.body.as_str()), (200, "ok"));
    assert_eq!(all(&handed, "x-request-id"), ["client-8"], "{handed:?}");
}

#[tokio::test]
async fn a_head_split_into_single_bytes_is_served() {
    let (gateway, _echo) = gateway().await;
    let mut stream = TcpStream::connect(gateway.http_addr())
        .await
        .expect("connect");
    for byte in get("/echo/split").bytes() {
        stream.write_all(&[byte]).await.expect("write");
        stream.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut conn = RawConn::from_stream(stream);
    let response = conn.read_response().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["uri"], "/echo/split");
}

#[tokio::test]
async fn requests_it_does_not_serve_go_to_hyper_mid_connection_and_are_answered_in_order() {
    let (gateway, echo) = gateway().await;
    let mut conn = RawConn::connect(gateway.http_addr()).await;
    // Served here first, then a body (hyper's from then on), all in one write.
    conn.send(&format!(
        "{}POST /echo/upload HTTP/1.1\r\nHost: localhost\r\ncontent-length: 5\r\n\r\nhello{}",
        get("/echo/before"),
        get("/echo/after")
    ))
    .await;
    let before = conn.read_response().await;
    let upload = conn.read_response().await;
    let after = conn.read_response().await;
    assert_eq!(before.json()["uri"], "/echo/before");
    assert_eq!(upload.json()["method"], "POST");
    assert_eq!(upload.json()["body_len"], 5);
    assert_eq!(after.json()["uri"], "/echo/after");
    let seen: Vec<String> = echo.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(seen, ["/echo/before", "/echo/upload", "/echo/after"]);

    // HEAD: a length and no body; HTTP/1.0 and `Expect` are answered too.
    let mut conn = RawConn::connect(gateway.http_addr()).await;
    assert_eq!(conn.get("/mock").await.body, "mocked");
    conn.send("HEAD /mock HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let head = conn.read_head_only().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("6"));
    assert_eq!(
        conn.get("/mock").await.body,
        "mocked",
        "framing kept after HEAD"
    );
    conn.send(
        "PUT /echo/continue HTTP/1.1\r\nHost: localhost\r\ncontent-length: 3\r\nexpect: 100-continue\r\n\r\n",
    )
    .await;
    let interim = conn.read_head_only().await;
    assert_eq!(interim.status, 100);
    conn.send("abc").await;
    assert_eq!(conn.read_response().await.json()["body_len"], 3);
    conn.send("GET /mock HTTP/1.0\r\n\r\n").await;
    let old = conn.read_response().await;
    assert_eq!(old.body, "mocked");
    assert!(
        conn.closed_within(Duration::from_secs(3)).await,
        "HTTP/1.0 closes"
    );
}

#[tokio::test]
async fn connection_close_is_answered_in_kind_and_the_connection_ends() {
    let (gateway, _echo) = gateway().await;
    let mut conn = RawConn::connect(gateway.http_addr()).await;
    conn.send("GET /mock HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive, close\r\n\r\n")
        .await;
    let response = conn.read_response().await;
    assert_eq!(response.body, "mocked");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(conn.closed_within(Duration::from_secs(3)).await);
}

#[tokio::test]
async fn a_streamed_response_is_chunked_and_its_head_sent_before_its_body_is_complete() {
    let (gateway, _echo) = gateway().await;
    let mut conn = RawConn::connect(gateway.http_addr()).await;
    let started = Instant::now();
    conn.send(&get("/raw/chunked")).await;
    let head = conn.read_head_only().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert!(
        started.elapsed() < PAUSE,
        "head after {:?}: held back until the body ended",
        started.elapsed()
    );
    let body = conn.read_chunked_body().await;
    assert_eq!(body, "firstsecond");
    assert!(started.elapsed() >= PAUSE);
    assert_eq!(conn.get("/mock").await.body, "mocked");
}

#[tokio::test]
async fn responses_without_a_body_carry_no_framing_and_the_connection_goes_on() {
    let (gateway, _echo) = gateway().await;
    let mut conn = RawConn::connect(gateway.http_addr()).await;
    conn.send(&format!(
        "{}{}{}",
        get("/raw/no-content"),
        get("/raw/not-modified"),
        get("/mock")
    ))
    .await;
    let no_content = conn.read_head_only().await;
    assert_eq!(no_content.status, 204);
    assert_eq!(no_content.header("content-length"), None);
    assert_eq!(no_content.header("transfer-encoding"), None);
    let not_modified = conn.read_head_only().await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("etag"), Some("\"v1\""));
    assert_eq!(not_modified.header("transfer-encoding"), None);
    assert_eq!(conn.read_response().await.body, "mocked");
}

#[tokio::test]
async fn an_upstream_body_cut_short_ends_the_client_connection_after_what_came() {
    let (gateway, _echo) = gateway().await;
    let mut conn = RawConn::connect(gateway.http_addr()).await;
    conn.send(&get("/raw/short")).await;
    let head = conn.read_head_only().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("10"));
    assert!(conn.closed_within(Duration::from_secs(3)).await);
    assert_eq!(conn.unread(), "abc", "what the upstream sent, and no more");
}

#[tokio::test]
async fn a_malformed_head_gets_a_json_400_and_the_connection_ends() {
    let (gateway, echo) = gateway().await;
    for head in [
        "GET /echo/x HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n",
        "GET /echo/x HTTP/1.1\r\nHost: localhost\r\nContent-Length : 5\r\n\r\nhello",
        "G@T /echo/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ] {
        let mut conn = RawConn::connect(gateway.http_addr()).await;
        // Served first: the malformed head is the connection's second.
        conn.send(&format!("{}{head}", get("/mock"))).await;
        assert_eq!(conn.read_response().await.body, "mocked");
        let refused = conn.read_response().await;
        assert_eq!(refused.status, 400, "{head:?}: {refused:?}");
        let id = refused.header("x-request-id").expect("x-request-id");
        assert_eq!(refused.json()["message"], "malformed request");
        assert_eq!(refused.json()["request_id"], id);
        assert_eq!(refused.header("connection"), Some("close"));
        assert!(conn.closed_within(Duration::from_secs(3)).await, "{head:?}");
    }
    assert_eq!(echo.count(), 0, "nothing reached the upstream");
}
