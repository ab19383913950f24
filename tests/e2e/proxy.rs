//! The `upstream` integration, end to end: a real `weir` process proxying to backends in
//! the test process over real sockets.
//!
//! Stories, in the order a user meets them: requests arrive intact, headers are cleaned and
//! forwarded, load is balanced, failures are retried and failing targets ejected, timeouts
//! and broken upstreams become JSON errors, HTTP/2 and TLS upstreams work, connections are
//! reused, `max_body` holds, and big bodies stream without being buffered.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream;
use http::Version;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::harness::{TestGateway, TestPki, TestUpstream, client, dead_addr, raw_request};

// ---- route files and assertions ----

/// A route file with one upstream `app` (its keys in `upstream`) serving every path, plus
/// extra keys for `[server]` and for the route.
fn route_file(server: &str, upstream: &str, route: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{server}

[upstreams.app]
{upstream}

[[routes]]
path = "/{{rest+}}"
upstream = "app"
{route}
"#
    )
}

/// A gateway proxying every path to the upstream described by `upstream`.
fn proxy(upstream: &str) -> TestGateway {
    TestGateway::start(&route_file("", upstream, ""))
}

/// `targets = ["URL", ...]`.
fn targets(urls: &[String]) -> String {
    let quoted: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!("targets = [{}]", quoted.join(", "))
}

fn http_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// Asserts that `response` is a gateway-made error: `status`, JSON `message`, and the
/// `request_id` of its `x-request-id` header.
async fn assert_gateway_error(response: reqwest::Response, status: u16, message: &str) {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii request id")
        .to_owned();
    let body: serde_json::Value = response.json().await.expect("json error body");
    assert_eq!(body["message"], message, "body: {body}");
    assert_eq!(body["request_id"], request_id.as_str());
}

fn header<'a>(seen: &'a crate::harness::Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).map(|v| v.to_str().expect("ascii"))
}

fn is_generated_request_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

// ---- 1. requests arrive intact ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_post_arrive_with_method_path_query_and_body_intact() {
    let upstream = TestUpstream::echo().await;
    let gateway = proxy(&targets(&[upstream.url()]));
    let client = client();

    let got = client
        .get(gateway.url("/items/42?page=2&sort=asc"))
        .send()
        .await
        .expect("get");
    assert_eq!(got.status(), 200);
    let echoed: serde_json::Value = got.json().await.expect("echo json");
    assert_eq!(echoed["method"], "GET");
    assert_eq!(echoed["uri"], "/items/42?page=2&sort=asc");

    let posted = client
        .post(gateway.url("/items?dry_run=1"))
        .body("x".repeat(5000))
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), 200);
    let echoed: serde_json::Value = posted.json().await.expect("echo json");
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["uri"], "/items?dry_run=1");
    assert_eq!(echoed["body_len"], 5000);

    let deleted = client
        .delete(gateway.url("/items/42"))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);

    let seen = upstream.seen();
    let methods: Vec<&str> = seen.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(methods, ["GET", "POST", "DELETE"]);
    assert_eq!(seen[1].body_len, 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sees_the_canonical_path() {
    let upstream = TestUpstream::echo().await;
    let gateway = proxy(&targets(&[upstream.url()]));

    // Raw, because a client library would tidy the path up before sending it.
    let response = raw_request(
        gateway.http_addr(),
        "GET /a//b/./c/%7Euser/x/../y?q=%2F HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(upstream.seen()[0].uri, "/a/b/c/~user/y?q=%2F");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_base_path_is_prepended() {
    let upstream = TestUpstream::echo().await;
    let gateway = proxy(&targets(&[format!("{}/api/v1", upstream.url())]));

    let response = client()
        .get(gateway.url("/users/7?full=true"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.seen()[0].uri, "/api/v1/users/7?full=true");
}

// ---- 2. headers ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_do_not_reach_the_upstream() {
    let upstream = TestUpstream::echo().await;
    let gateway = proxy(&targets(&[upstream.url()]));

    // Two `Connection` lines: the headers named in either are hop-by-hop.
    let response = raw_request(
        gateway.http_addr(),
        "GET /hop HTTP/1.1\r\n\
         Host: localhost\r\n\
         Connection: close, x-foo\r\n\
         Connection: x-bar\r\n\
         x-foo: named-in-connection\r\n\
         x-bar: named-in-second-connection\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Proxy-Authorization: Basic c2VjcmV0\r\n\
         Proxy-Connection: keep-alive\r\n\
         x-kept: yes\r\n\
         \r\n",
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");

    let seen = &upstream.seen()[0];
    for hop in [
        "x-foo",
        "x-bar",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert_eq!(header(seen, hop), None, "{hop} reached the upstream");
    }
    if let Some(connection) = header(seen, "connection") {
        assert!(
            !connection.contains("x-foo") && !connection.contains("x-bar"),
            "client's Connection reached the upstream: {connection}"
        );
    }
    assert_eq!(header(seen, "x-kept"), Some("yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_do_not_reach_the_client() {
    let upstream = TestUpstream::start(|_req, _| async {
        Response::builder()
            .header("connection", "x-upstream-secret")
            .header("keep-alive", "timeout=5, max=100")
            .header("x-upstream-secret", "internal")
            .header("x-kept", "yes")
            .body(Full::new(Bytes::from_static(b"ok")))
            .expect("response")
    })
    .await;
    let gateway = proxy(&targets(&[upstream.url()]));

    let response = client().get(gateway.url("/hop")).send().await.expect("get");
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert!(!headers.contains_key("x-upstream-secret"));
    assert!(!headers.contains_key("keep-alive"));
    if let Some(connection) = headers.get("connection") {
        assert_ne!(connection, "x-upstream-secret");
    }
    assert_eq!(headers["x-kept"], "yes");
    assert_eq!(response.text().await.expect("body"), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_kept_when_well_formed_and_made_otherwise() {
    let upstream = TestUpstream::echo().await;
    let gateway = proxy(&targets(&[upstream.url()]));
    let client = client();

    let kept = client
        .get(gateway.url("/id"))
        .header("x-request-id", "trace-42.abc:def")
        .send()
        .await
        .expect("get");
    assert_eq!(kept.headers()["x-request-id"], "trace-42.abc:def");
    assert_eq!(
        header(&upstream.seen()[0], "x-request-id"),
        Some("trace-42.abc:def")
    );

    let malformed = client
        .get(gateway.url("/id"))
        .header("x-request-id", "has spaces; and more")
        .send()
        .await
        .expect("get");
    let made = malformed.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(is_generated_request_id(&made), "{made}");
    assert_eq!(header(&upstream.seen()[1], "x-request-id"), Some(&*made));

    let missing = client.get(gateway.url("/id")).send().await.expect("get");
    let made = missing.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(is_generated_request_id(&made), "{made}");
    assert_eq!(header(&upstream.seen()[2], "x-request-id"), Some(&*made));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_an_untrusted_client_are_replaced() {
    let upstream = TestUpstream::echo().await;
    let gateway = proxy(&targets(&[upstream.url()]));

    let response = client()
        .get(gateway.url("/who"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=6.6.6.6")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);

    let seen = &upstream.seen()[0];
    let gateway_authority = gateway.http_addr().to_string();
    assert_eq!(header(seen, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(seen, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        header(seen, "x-forwarded-host"),
        Some(gateway_authority.as_str())
    );
    assert_eq!(header(seen, "forwarded"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_a_trusted_proxy_is_appended_to() {
    let upstream = TestUpstream::echo().await;
    let gateway = TestGateway::start(&route_file(
        r#"trusted_proxies = ["127.0.0.1/32"]"#,
        &targets(&[upstream.url()]),
        "",
    ));

    let response = client()
        .get(gateway.url("/who"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);

    let seen = &upstream.seen()[0];
    assert_eq!(
        header(seen, "x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(header(seen, "x-forwarded-proto"), Some("https"));

    // A chain split over several header lines is one list (RFC 9110 §5.3).
    let response = raw_request(
        gateway.http_addr(),
        "GET /who HTTP/1.1\r\n\
         Host: localhost\r\n\
         Connection: close\r\n\
         X-Forwarded-For: 198.51.100.1\r\n\
         X-Forwarded-For: 203.0.113.7\r\n\
         \r\n",
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        header(&upstream.seen()[1], "x-forwarded-for"),
        Some("198.51.100.1, 203.0.113.7, 127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_host_is_the_targets_authority_by_default() {
    let upstream = TestUpstream::echo().await;
    let gateway = proxy(&targets(&[upstream.url()]));

    client()
        .get(gateway.url("/host"))
        .header("host", "api.example")
        .send()
        .await
        .expect("get");
    let seen = &upstream.seen()[0];
    assert_eq!(header(seen, "host"), Some(&*upstream.addr.to_string()));
    assert_eq!(header(seen, "x-forwarded-host"), Some("api.example"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserve_host_sends_the_clients_host() {
    let upstream = TestUpstream::echo().await;
    let gateway = proxy(&format!(
        "{}\npreserve_host = true",
        targets(&[upstream.url()])
    ));

    client()
        .get(gateway.url("/host"))
        .header("host", "api.example")
        .send()
        .await
        .expect("get");
    assert_eq!(header(&upstream.seen()[0], "host"), Some("api.example"));

    // An HTTP/2 client names the host in `:authority`, not in a `Host` header; the
    // HTTP/1.1 upstream must still get it as `Host`.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("h2 client");
    let response = h2.get(gateway.url("/host")).send().await.expect("h2 get");
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&upstream.seen()[1], "host"),
        Some(&*gateway.http_addr().to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserve_host_follows_the_host_that_routing_saw() {
    let upstream = TestUpstream::echo().await;
    let gateway = TestGateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[upstreams.app]
targets = ["{}"]
preserve_host = true

[[routes]]
path = "/{{rest+}}"
hosts = ["api.example"]
upstream = "app"
"#,
        upstream.url()
    ));

    // In absolute form the request target names the host and `Host` is ignored (RFC
    // 9112 §3.2.2): routing matched `api.example`, so that is what the upstream gets.
    let response = raw_request(
        gateway.http_addr(),
        "GET http://api.example/x HTTP/1.1\r\n\
         Host: internal.example\r\n\
         Connection: close\r\n\
         \r\n",
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    let seen = &upstream.seen()[0];
    assert_eq!(header(seen, "host"), Some("api.example"));
    assert_eq!(header(seen, "x-forwarded-host"), Some("api.example"));
}

// ---- 3. load balancing ----

/// The bodies of `n` sequential GETs (the `named` upstreams answer `from PORT`).
async fn bodies_of(gateway: &TestGateway, n: usize) -> Vec<String> {
    let client = client();
    let mut bodies = Vec::with_capacity(n);
    for _ in 0..n {
        let response = client.get(gateway.url("/lb")).send().await.expect("get");
        assert_eq!(response.status(), 200);
        bodies.push(response.text().await.expect("body"));
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates_between_targets() {
    let a = TestUpstream::named().await;
    let b = TestUpstream::named().await;
    let gateway = proxy(&targets(&[a.url(), b.url()]));

    let bodies = bodies_of(&gateway, 10).await;
    assert_eq!(a.count(), 5);
    assert_eq!(b.count(), 5);
    for pair in bodies.windows(2) {
        assert_ne!(pair[0], pair[1], "two in a row on one target: {bodies:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_requests_in_proportion() {
    let heavy = TestUpstream::named().await;
    let light = TestUpstream::named().await;
    let gateway = proxy(&format!(
        r#"targets = [{{ url = "{}", weight = 3 }}, {{ url = "{}", weight = 1 }}]"#,
        heavy.url(),
        light.url()
    ));

    // The smooth weighted schedule is deterministic per pool: every 4 requests hold
    // exactly 3 for the heavy target and 1 for the light one.
    let bodies = bodies_of(&gateway, 40).await;
    assert_eq!(heavy.count(), 30);
    assert_eq!(light.count(), 10);
    let light_body = format!("from {}", light.addr.port());
    for window in bodies.chunks(4) {
        assert_eq!(
            window.iter().filter(|b| **b == light_body).count(),
            1,
            "{bodies:?}"
        );
    }
}

// ---- 4. retries ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_connect_failure_on_another_target() {
    let live = TestUpstream::echo().await;
    // No ejection, so every other request really meets the dead target first.
    let gateway = proxy(&format!(
        "{}\nretries = 1\neject = {{ failures = 1000, duration = \"30s\" }}",
        targets(&[http_url(dead_addr()), live.url()])
    ));
    let client = client();

    for _ in 0..6 {
        let response = client.get(gateway.url("/r")).send().await.expect("get");
        assert_eq!(response.status(), 200);
    }
    // The body is handed over only once a connection exists, so even a POST is retried
    // after a failed connect.
    for _ in 0..4 {
        let response = client
            .post(gateway.url("/r"))
            .body("payload")
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 200);
        let echoed: serde_json::Value = response.json().await.expect("echo");
        assert_eq!(echoed["body_len"], 7);
    }
    assert_eq!(live.count(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_a_dead_target_fails_with_502() {
    let live = TestUpstream::named().await;
    let gateway = proxy(&format!(
        "{}\nretries = 0\neject = {{ failures = 1000, duration = \"30s\" }}",
        targets(&[http_url(dead_addr()), live.url()])
    ));
    let client = client();

    let mut failed = 0;
    for _ in 0..4 {
        let response = client.get(gateway.url("/r")).send().await.expect("get");
        if response.status() == 200 {
            continue;
        }
        failed += 1;
        assert_gateway_error(response, 502, "upstream unreachable").await;
    }
    // Round robin over two targets: every second request goes to the dead one.
    assert_eq!(failed, 2);
}

// ---- 5. passive ejection ----

/// A target that accepts TCP connections and closes them at once, counting them.
struct SlammingTarget {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SlammingTarget {
    async fn start() -> SlammingTarget {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        SlammingTarget {
            addr,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for SlammingTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_target_is_ejected_and_skipped() {
    let bad = SlammingTarget::start().await;
    let live = TestUpstream::named().await;
    let gateway = proxy(&format!(
        "{}\nretries = 1\neject = {{ failures = 2, duration = \"30s\" }}",
        targets(&[http_url(bad.addr), live.url()])
    ));
    let client = client();

    // A GET without a body is retried on the live target after the bad one hangs up.
    for _ in 0..6 {
        let response = client.get(gateway.url("/e")).send().await.expect("get");
        assert_eq!(response.status(), 200);
    }
    let accepted = bad.accepted();
    assert_eq!(accepted, 2, "ejected after exactly `failures` failures");

    for _ in 0..20 {
        let response = client.get(gateway.url("/e")).send().await.expect("get");
        assert_eq!(response.status(), 200);
    }
    assert_eq!(bad.accepted(), accepted, "an ejected target got traffic");
    assert_eq!(live.count(), 26);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejected_target_comes_back_after_its_duration() {
    let live = TestUpstream::named().await;
    let returning = dead_addr();
    let gateway = proxy(&format!(
        "{}\nretries = 1\neject = {{ failures = 1, duration = \"1s\" }}",
        targets(&[http_url(returning), live.url()])
    ));
    let client = client();

    for _ in 0..4 {
        let response = client.get(gateway.url("/e")).send().await.expect("get");
        assert_eq!(response.status(), 200);
    }
    // The target comes up while ejected; once the ejection is over it gets traffic again.
    let listener = TcpListener::bind(returning).await.expect("rebind");
    let (_, task) = misbehaving_upstream_on(listener);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let bodies = bodies_of(&gateway, 4).await;
    assert_eq!(
        bodies.iter().filter(|b| *b == "ok").count(),
        2,
        "{bodies:?}"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_ejected_answers_503() {
    let gateway = proxy(&format!(
        "{}\nretries = 1\neject = {{ failures = 1, duration = \"30s\" }}",
        targets(&[http_url(dead_addr()), http_url(dead_addr())])
    ));
    let client = client();

    // Both targets fail once (and are ejected) on the first request.
    let first = client.get(gateway.url("/e")).send().await.expect("get");
    assert_gateway_error(first, 502, "upstream unreachable").await;
    for _ in 0..3 {
        let response = client.get(gateway.url("/e")).send().await.expect("get");
        assert_gateway_error(response, 503, "no healthy upstream available").await;
    }
}

// ---- 6. timeouts and broken upstreams ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_times_out_with_504() {
    let slow = TestUpstream::start(|_req, _| async {
        tokio::time::sleep(Duration::from_secs(20)).await;
        Response::new(Full::new(Bytes::from_static(b"too late")))
    })
    .await;
    let gateway = proxy(&format!("{}\ntimeout = \"300ms\"", targets(&[slow.url()])));

    let started = Instant::now();
    let response = client()
        .get(gateway.url("/slow"))
        .send()
        .await
        .expect("get");
    assert_gateway_error(response, 504, "upstream timed out").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// `[server] request_timeout` bounds the whole exchange up to the response head, whatever
/// the upstream's own `timeout` allows; the request's upstream attempt is abandoned, and
/// the connection it was on is not reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_shorter_than_the_upstreams_answers_504() {
    let upstream = TestUpstream::start(|req, _| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
        Response::new(Full::new(Bytes::from_static(b"ok")))
    })
    .await;
    let gateway = TestGateway::start(&route_file(
        "request_timeout = \"300ms\"",
        &format!("{}\ntimeout = \"10s\"", targets(&[upstream.url()])),
        "",
    ));
    let client = client();

    let started = Instant::now();
    let response = client.get(gateway.url("/slow")).send().await.expect("get");
    assert_gateway_error(response, 504, "request timed out").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    let response = client.get(gateway.url("/fast")).send().await.expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "ok");
}

/// The request's and the upstream attempt's timers are kept by their connections and
/// re-armed for each request (`host/src/timer.rs`): on a kept-alive client connection and
/// a pooled upstream one, each request still gets its own full timeouts, whether the
/// previous timers fired meanwhile or are still pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_hold_per_request_on_kept_alive_connections() {
    let upstream = TestUpstream::start(|req, _| async move {
        match req.uri().path() {
            "/slow" => tokio::time::sleep(Duration::from_secs(20)).await,
            "/wait" => tokio::time::sleep(Duration::from_millis(200)).await,
            _ => {}
        }
        Response::new(Full::new(Bytes::from_static(b"ok")))
    })
    .await;
    let gateway = TestGateway::start(&route_file(
        "request_timeout = \"800ms\"",
        &format!("{}\ntimeout = \"400ms\"", targets(&[upstream.url()])),
        "",
    ));
    let client = client();
    let ok = |path: &'static str| {
        let request = client.get(gateway.url(path)).send();
        async move {
            let response = request.await.expect("get");
            assert_eq!(response.status(), 200, "{path}");
            assert_eq!(response.text().await.expect("body"), "ok");
        }
    };

    ok("/fast").await;
    // Past both deadlines of that request: both timers have fired.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Re-armed after firing: a 200 ms answer is in time.
    ok("/wait").await;
    // Re-armed while still pending (a later deadline).
    ok("/fast").await;
    let started = Instant::now();
    let response = client.get(gateway.url("/slow")).send().await.expect("get");
    assert_gateway_error(response, 504, "upstream timed out").await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "timed out after {took:?}, not after 400 ms"
    );
    ok("/fast").await;
    assert_eq!(upstream.count(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_502() {
    let gateway = proxy(&targets(&[http_url(dead_addr())]));

    let response = client().get(gateway.url("/x")).send().await.expect("get");
    assert_gateway_error(response, 502, "upstream unreachable").await;
}

/// Reads a request head (and whatever came with it) off `stream`, as text; `None` when
/// the connection ends first.
async fn read_request_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A raw HTTP/1.1 backend that misbehaves by path: `/truncate` announces 1000 bytes,
/// sends 100 and hangs up; `/hangup` hangs up without answering; anything else gets
/// `ok` and `Connection: close`.
async fn misbehaving_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    misbehaving_upstream_on(listener)
}

/// [`misbehaving_upstream`] on a listener the test bound.
fn misbehaving_upstream_on(listener: TcpListener) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Some(head) = read_request_head(&mut stream).await else {
                    return;
                };
                let path = head.split_whitespace().nth(1).unwrap_or("");
                let answer: Vec<u8> = match path {
                    "/truncate" => {
                        let mut a = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
                        a.extend_from_slice(&[b'x'; 100]);
                        a
                    }
                    "/hangup" => Vec::new(),
                    _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        .to_vec(),
                };
                let _ = stream.write_all(&answer).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_mid_response_truncates_and_the_gateway_keeps_serving() {
    let (addr, task) = misbehaving_upstream().await;
    let gateway = proxy(&format!(
        "{}\nretries = 0\neject = {{ failures = 1000, duration = \"30s\" }}",
        targets(&[http_url(addr)])
    ));
    let client = client();

    // The head already went out as 200 when the body broke, so the client sees a 200
    // whose body ends early: the gateway aborts the connection rather than pretend the
    // body was whole.
    let truncated = client
        .get(gateway.url("/truncate"))
        .send()
        .await
        .expect("head");
    assert_eq!(truncated.status(), 200);
    assert_eq!(truncated.headers()["content-length"], "1000");
    assert!(
        truncated.bytes().await.is_err(),
        "a truncated body read whole"
    );

    // Hanging up before any response is a 502.
    let hangup = client
        .get(gateway.url("/hangup"))
        .send()
        .await
        .expect("get");
    assert_gateway_error(hangup, 502, "upstream failed").await;

    // And the gateway goes on serving.
    for _ in 0..3 {
        let ok = client.get(gateway.url("/fine")).send().await.expect("get");
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.text().await.expect("body"), "ok");
    }
    task.abort();
}

// ---- 7. HTTP/2 and TLS upstreams ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstream_sees_http2_and_serves_concurrent_requests() {
    let upstream = TestUpstream::echo().await;
    let gateway = proxy(&format!("{}\nhttp2 = true", targets(&[upstream.url()])));
    let client = client();

    let first = client.get(gateway.url("/h2/0")).send().await.expect("get");
    assert_eq!(first.status(), 200);
    let requests = (1..=20).map(|i| {
        let request = client.get(gateway.url(&format!("/h2/{i}?n={i}"))).send();
        async move {
            let response = request.await.expect("get");
            assert_eq!(response.status(), 200);
            let echoed: serde_json::Value = response.json().await.expect("echo");
            assert!(
                echoed["uri"]
                    .as_str()
                    .is_some_and(|uri| uri.ends_with(&format!("/h2/{i}?n={i}"))),
                "{echoed}"
            );
        }
    });
    futures_util::future::join_all(requests).await;

    let seen = upstream.seen();
    assert_eq!(seen.len(), 21);
    assert!(seen.iter().all(|s| s.version == Version::HTTP_2));
    // All multiplexed over one shared connection.
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);
}

/// A temp dir holding `ca.crt` of a fresh test CA, and a TLS upstream with a certificate
/// for 127.0.0.1 from that CA, offering `alpn`.
async fn tls_upstream(alpn: &[&[u8]]) -> (tempfile::TempDir, TestUpstream) {
    let pki = TestPki::new("weir upstream test ca");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.crt"), pki.ca_pem()).expect("write ca");
    let cert = pki.server_cert(&["127.0.0.1"]);
    let upstream = TestUpstream::start_tls(cert.rustls_server_config(alpn), |req, _| async move {
        Response::new(Full::new(Bytes::from(format!("tls {}", req.uri().path()))))
    })
    .await;
    (dir, upstream)
}

fn https_target(upstream: &TestUpstream) -> String {
    format!("https://{}", upstream.addr)
}

/// A gateway proxying to the TLS `upstream`, trusting the CA in `dir` (the upstream's),
/// with `extra` upstream keys (each line starting with a newline).
fn https_gateway(dir: tempfile::TempDir, upstream: &TestUpstream, extra: &str) -> TestGateway {
    let keys = format!(
        "{}\nca = \"{{dir}}/ca.crt\"{extra}",
        targets(&[https_target(upstream)])
    );
    TestGateway::start_in(dir, &route_file("", &keys, ""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_trusted_by_its_ca_works() {
    let (dir, upstream) = tls_upstream(&[b"http/1.1"]).await;
    let gateway = https_gateway(dir, &upstream, "");

    let response = client()
        .get(gateway.url("/secure?x=1"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "tls /secure");
    let seen = &upstream.seen()[0];
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.uri, "/secure?x=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_with_an_untrusted_certificate_is_502() {
    let (dir, upstream) = tls_upstream(&[b"http/1.1"]).await;
    // No `ca`: the built-in web roots, which do not know the test CA.
    let gateway = TestGateway::start_in(
        dir,
        &route_file("", &targets(&[https_target(&upstream)]), ""),
    );

    let response = client()
        .get(gateway.url("/secure"))
        .send()
        .await
        .expect("get");
    assert_gateway_error(response, 502, "upstream unreachable").await;
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_speaks_http2_when_alpn_agrees() {
    let (dir, upstream) = tls_upstream(&[b"h2", b"http/1.1"]).await;
    let gateway = https_gateway(dir, &upstream, "\nhttp2 = true");

    let response = client()
        .get(gateway.url("/secure"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "tls /secure");
    assert_eq!(upstream.seen()[0].version, Version::HTTP_2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_without_h2_gets_plain_http1_requests() {
    let (dir, upstream) = tls_upstream(&[b"http/1.1"]).await;
    let gateway = https_gateway(dir, &upstream, "\nhttp2 = true");

    let response = client()
        .get(gateway.url("/secure?x=1"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    let seen = &upstream.seen()[0];
    assert_eq!(seen.version, Version::HTTP_11);
    // ALPN chose HTTP/1.1, so the request target is in origin form, as for any origin
    // server, not the absolute form meant for HTTP/2's pseudo-headers.
    assert_eq!(seen.uri, "/secure?x=1");
    assert_eq!(header(seen, "host"), Some(&*upstream.addr.to_string()));
}

// ---- 8. connection reuse ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_upstream_connections() {
    let upstream = TestUpstream::named().await;
    let gateway = proxy(&targets(&[upstream.url()]));
    let client = client();

    // Every fourth is a HEAD: a `Content-Length` with no body after it, which must not
    // leave the pooled connection expecting one.
    let expected = format!("from {}", upstream.addr.port());
    for i in 0..20 {
        if i % 4 == 3 {
            let response = client
                .head(gateway.url("/reuse"))
                .send()
                .await
                .expect("head");
            assert_eq!(response.status(), 200);
            assert_eq!(response.text().await.expect("body"), "");
        } else {
            let response = client.get(gateway.url("/reuse")).send().await.expect("get");
            assert_eq!(response.status(), 200);
            assert_eq!(response.text().await.expect("body"), expected);
        }
    }
    assert_eq!(upstream.count(), 20);
    let opened = upstream.connections.load(Ordering::SeqCst);
    assert!(opened <= 2, "{opened} upstream connections for 20 requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_dropped_half_read_does_not_poison_the_pool() {
    const BIG_BYTES: usize = 4 * 1024 * 1024;
    let upstream = TestUpstream::start(|req, _| async move {
        let body = if req.uri().path() == "/big" {
            Bytes::from(vec![b'b'; BIG_BYTES])
        } else {
            Bytes::from_static(b"small")
        };
        Response::new(Full::new(body))
    })
    .await;
    let gateway = proxy(&targets(&[upstream.url()]));
    let client = client();

    let mut big = client.get(gateway.url("/big")).send().await.expect("get");
    assert_eq!(big.status(), 200);
    let first = big.chunk().await.expect("first chunk").expect("some bytes");
    assert!(first.len() < BIG_BYTES);
    drop(big);

    for _ in 0..5 {
        let response = client.get(gateway.url("/small")).send().await.expect("get");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), "small");
    }
    let whole = client.get(gateway.url("/big")).send().await.expect("get");
    assert_eq!(whole.bytes().await.expect("body").len(), BIG_BYTES);
}

/// A keep-alive HTTP/1.1 backend that answers the first request on each connection
/// (`Content-Length`, kept alive) and closes the connection, unanswered, when a second
/// comes: as a server does that drops an idle connection just as the gateway reuses it.
/// Returns the request lines it read, in order, and how many connections it accepted.
async fn one_request_per_connection_upstream() -> (
    SocketAddr,
    Arc<std::sync::Mutex<Vec<String>>>,
    Arc<AtomicUsize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (log, count) = (seen.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let log = log.clone();
            tokio::spawn(async move {
                for answered in [true, false] {
                    let Some(head) = read_request_head(&mut stream).await else {
                        return;
                    };
                    let line = head.lines().next().unwrap_or("").to_owned();
                    log.lock().expect("log").push(line);
                    if answered {
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
                // Dropped: closed, the second request unanswered.
            });
        }
    });
    (addr, seen, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_connection_closed_unanswered_is_retried_on_a_new_one_for_idempotent_requests() {
    let (addr, seen, accepted) = one_request_per_connection_upstream().await;
    // No retries to other targets, and ejected at the first failure: the new connection
    // is neither, and the target's standing is untouched.
    let gateway = proxy(&format!(
        "{}\nretries = 0\neject = {{ failures = 1, duration = \"30s\" }}",
        targets(&[http_url(addr)])
    ));
    let client = client();

    for path in ["/first", "/second", "/third"] {
        let response = client.get(gateway.url(path)).send().await.expect("get");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.text().await.expect("body"), "ok");
    }
    // Each request after the first met a pooled connection that the backend then closed,
    // and went again on a new one.
    let lines = seen.lock().expect("log").clone();
    assert_eq!(
        lines,
        [
            "GET /first HTTP/1.1",
            "GET /second HTTP/1.1",
            "GET /second HTTP/1.1",
            "GET /third HTTP/1.1",
            "GET /third HTTP/1.1",
        ]
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 3);

    // A `POST` is not sent twice: the backend may have acted on it.
    let post = client
        .post(gateway.url("/once"))
        .body("x")
        .send()
        .await
        .expect("post");
    assert_gateway_error(post, 502, "upstream failed").await;
    let posts = seen
        .lock()
        .expect("log")
        .iter()
        .filter(|l| l.starts_with("POST"))
        .count();
    assert_eq!(posts, 1);
}

// ---- 9. max_body ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_body_over_max_body_is_413_before_the_upstream() {
    let upstream = TestUpstream::echo().await;
    let gateway = TestGateway::start(&route_file(
        r#"max_body = "1KiB""#,
        &targets(&[upstream.url()]),
        "",
    ));

    let response = client()
        .post(gateway.url("/upload"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .expect("post");
    assert_gateway_error(response, 413, "request body too large").await;
    assert_eq!(upstream.count(), 0);
}

/// A body of `chunks` × `chunk_bytes` bytes with no `Content-Length` (sent chunked).
fn unannounced_body(chunks: usize, chunk_bytes: usize) -> reqwest::Body {
    let chunk = Bytes::from(vec![b'u'; chunk_bytes]);
    reqwest::Body::wrap_stream(stream::iter(
        (0..chunks).map(move |_| Ok::<_, Infallible>(chunk.clone())),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_max_body_is_413() {
    let upstream = TestUpstream::echo().await;
    let gateway = TestGateway::start(&route_file(
        r#"max_body = "4KiB""#,
        &targets(&[upstream.url()]),
        "",
    ));
    let client = client();

    let within = client
        .post(gateway.url("/upload"))
        .body(unannounced_body(4, 1024))
        .send()
        .await
        .expect("post within limit");
    assert_eq!(within.status(), 200);
    let echoed: serde_json::Value = within.json().await.expect("echo");
    assert_eq!(echoed["body_len"], 4096);

    let over = client
        .post(gateway.url("/upload"))
        .body(unannounced_body(8, 1024))
        .send()
        .await
        .expect("post over limit");
    assert_gateway_error(over, 413, "request body too large").await;
    // The upstream may have seen the start of it, never more than the limit.
    assert!(upstream.seen().iter().all(|s| s.body_len <= 4096));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_max_body_is_413_with_an_http2_upstream_too() {
    let upstream = TestUpstream::echo().await;
    let gateway = TestGateway::start(&route_file(
        r#"max_body = "4KiB""#,
        &format!(
            "{}\nhttp2 = true\neject = {{ failures = 1, duration = \"30s\" }}",
            targets(&[upstream.url()])
        ),
        "",
    ));
    let client = client();

    let over = client
        .post(gateway.url("/upload"))
        .body(unannounced_body(8, 1024))
        .send()
        .await
        .expect("post over limit");
    assert_gateway_error(over, 413, "request body too large").await;
    // The client's fault: the target is not ejected for it.
    let next = client.get(gateway.url("/after")).send().await.expect("get");
    assert_eq!(next.status(), 200);
}

/// Sends a chunked upload's head and first chunk, then hangs up.
async fn abandon_upload(gateway: &TestGateway) {
    let mut stream = tokio::net::TcpStream::connect(gateway.http_addr())
        .await
        .expect("connect");
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n",
        )
        .await
        .expect("write");
    stream.flush().await.expect("flush");
}

async fn client_aborting_an_upload_does_not_eject_the_target(http2: bool) {
    let upstream = TestUpstream::echo().await;
    let gateway = proxy(&format!(
        "{}\nhttp2 = {http2}\nretries = 0\neject = {{ failures = 1, duration = \"30s\" }}",
        targets(&[upstream.url()])
    ));

    abandon_upload(&gateway).await;
    // Wait until the gateway has given up on the upload (the upstream saw it end).
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the upload never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let next = client()
        .get(gateway.url("/after"))
        .send()
        .await
        .expect("get");
    assert_eq!(next.status(), 200, "the target was blamed for the client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_aborting_an_upload_does_not_eject_an_http1_target() {
    client_aborting_an_upload_does_not_eject_the_target(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_aborting_an_upload_does_not_eject_an_http2_target() {
    client_aborting_an_upload_does_not_eject_the_target(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_max_body_overrides_the_servers() {
    let upstream = TestUpstream::echo().await;
    let gateway = TestGateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body = "1KiB"

[upstreams.app]
targets = ["{}"]

[[routes]]
path = "/uploads/{{rest+}}"
upstream = "app"
max_body = "16KiB"

[[routes]]
path = "/tiny/{{rest+}}"
upstream = "app"
max_body = "16B"

[[routes]]
path = "/{{rest+}}"
upstream = "app"
"#,
        upstream.url()
    ));
    let client = client();
    let post = |path: &str, len: usize| client.post(gateway.url(path)).body(vec![b'x'; len]);

    let raised = post("/uploads/a", 8 * 1024).send().await.expect("post");
    assert_eq!(raised.status(), 200);
    let over_raised = post("/uploads/a", 17 * 1024).send().await.expect("post");
    assert_gateway_error(over_raised, 413, "request body too large").await;

    let lowered = post("/tiny/a", 100).send().await.expect("post");
    assert_gateway_error(lowered, 413, "request body too large").await;

    let server_default = post("/other", 2048).send().await.expect("post");
    assert_gateway_error(server_default, 413, "request body too large").await;

    assert_eq!(upstream.count(), 1);
}

// ---- 10. streaming without buffering ----

const STREAM_BYTES: usize = 64 * 1024 * 1024;
const STREAM_CHUNK_BYTES: usize = 64 * 1024;
/// How much the gateway's peak RSS may grow while 64 MiB pass through it.
const MAX_RSS_GROWTH_KIB: u64 = 24 * 1024;

/// A backend that never holds a body: `POST` answers with the number of bytes it read
/// (frame by frame), `GET /download` streams [`STREAM_BYTES`] bytes.
async fn streaming_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|req: Request<Incoming>| async move {
                let body: BoxBody<Bytes, Infallible> = if req.method() == http::Method::POST {
                    let mut body = req.into_body();
                    let mut count = 0usize;
                    while let Some(Ok(frame)) = body.frame().await {
                        count += frame.data_ref().map_or(0, Bytes::len);
                    }
                    Full::new(Bytes::from(count.to_string())).boxed()
                } else {
                    let chunk = Bytes::from(vec![b'd'; STREAM_CHUNK_BYTES]);
                    let frames = (0..STREAM_BYTES / STREAM_CHUNK_BYTES)
                        .map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone())));
                    StreamBody::new(stream::iter(frames)).boxed()
                };
                Ok::<_, Infallible>(Response::new(body))
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// A gateway in front of [`streaming_upstream`], warmed up by one request, and its peak
/// RSS after the warm-up.
async fn streaming_gateway(addr: SocketAddr) -> (TestGateway, u64) {
    let gateway = TestGateway::start(&route_file(
        r#"max_body = "100MiB""#,
        &targets(&[http_url(addr)]),
        "",
    ));
    let warm_up = client()
        .post(gateway.url("/upload"))
        .body("warm")
        .send()
        .await
        .expect("warm-up");
    assert_eq!(warm_up.text().await.expect("body"), "4");
    let baseline = gateway.peak_rss_kib();
    (gateway, baseline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_streams_through_without_buffering() {
    let (addr, task) = streaming_upstream().await;
    let (gateway, baseline_kib) = streaming_gateway(addr).await;

    let response = client()
        .post(gateway.url("/upload"))
        .body(unannounced_body(
            STREAM_BYTES / STREAM_CHUNK_BYTES,
            STREAM_CHUNK_BYTES,
        ))
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.expect("body"),
        STREAM_BYTES.to_string()
    );

    let growth_kib = gateway.peak_rss_kib().saturating_sub(baseline_kib);
    assert!(
        growth_kib < MAX_RSS_GROWTH_KIB,
        "gateway peak RSS grew by {growth_kib} KiB for a 64 MiB upload"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_streams_through_without_buffering() {
    let (addr, task) = streaming_upstream().await;
    let (gateway, baseline_kib) = streaming_gateway(addr).await;

    let mut response = client()
        .get(gateway.url("/download"))
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), 200);
    let mut received = 0usize;
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        received += chunk.len();
    }
    assert_eq!(received, STREAM_BYTES);

    let growth_kib = gateway.peak_rss_kib().saturating_sub(baseline_kib);
    assert!(
        growth_kib < MAX_RSS_GROWTH_KIB,
        "gateway peak RSS grew by {growth_kib} KiB for a 64 MiB download"
    );
    task.abort();
}
