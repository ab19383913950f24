//! Standard `wasi:http/proxy` components as handlers (issue #3): `wasi-http-hello`, built
//! with the `wasip2` bindings and none of Weir's WIT, answers routes through the real
//! gateway with a streamed body; it gets the request body as a stream up to `max_body`;
//! its outgoing requests are refused; its failures, before or after the response head,
//! end in bounded errors while other routes answer.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::guests::{guests, sha256_hex};
use crate::harness::{TestGateway, client, weir_bin};
use crate::plugins::start;

/// The compiled-component cache of the plugin tests (as `crate::plugins` sets it for
/// the gateways it starts), for the `weir` commands run here.
fn cache_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("plugin-cache-tests")
}

/// A gateway with the `wasi-http-hello` component as `hi` on each of its paths, and a
/// mock route that must keep answering.
fn gateway(timeout: &str, concurrency: u32) -> TestGateway {
    let hi = &guests().wasi_http_hello;
    let mut toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[plugins.hi]
path = "{}"
sha256 = "{}"
limits = {{ timeout = "{timeout}", concurrency = {concurrency} }}

[[routes]]
path = "/ok"
mock = {{ status = 200, body = "still here" }}

[[routes]]
path = "/echo"
methods = ["POST"]
handler = {{ plugin = "hi", max_body = 16 }}
"#,
        hi.display(),
        sha256_hex(hi)
    );
    for path in [
        "/hi",
        "/fetch",
        "/trap-mid-body",
        "/stall-mid-body",
        "/loop",
        "/no-response",
    ] {
        toml.push_str(&format!(
            "\n[[routes]]\npath = \"{path}\"\nhandler = {{ plugin = \"hi\" }}\n"
        ));
    }
    start(&toml)
}

#[tokio::test]
async fn a_wasi_http_component_answers_a_route_with_a_streamed_body() {
    let gateway = gateway("5s", 8);
    let response = client()
        .get(gateway.url("/hi?name=ada"))
        .header("x-client", "e2e")
        .header("connection", "keep-alive, x-client")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(headers["x-hello"], "wasi-http");
    assert!(headers.contains_key("x-request-id"), "{headers:?}");
    // Streamed as the guest writes it: no length known up front.
    assert!(!headers.contains_key("content-length"), "{headers:?}");
    let body = response.text().await.expect("body");
    let addr = gateway.http_addr();
    assert_eq!(
        body,
        format!(
            "hello ada\nmethod: GET\npath: /hi?name=ada\nauthority: {addr}\n\
             x-client: -\nx-forwarded-for: 127.0.0.1\n"
        ),
        "the guest sees the request as an upstream would (hop-by-hop fields dropped)"
    );

    let plain = client()
        .get(gateway.url("/hi"))
        .header("x-client", "e2e")
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert!(plain.starts_with("hello world\n"), "{plain}");
    assert!(plain.contains("x-client: e2e\n"), "{plain}");
}

#[tokio::test]
async fn the_request_body_streams_to_the_guest_up_to_max_body() {
    let gateway = gateway("5s", 8);
    let client = client();
    let echoed = client
        .post(gateway.url("/echo"))
        .body("ping")
        .send()
        .await
        .expect("post");
    assert_eq!(echoed.status(), 200);
    assert_eq!(echoed.text().await.expect("body"), "got 4 bytes: ping");

    // A chunked body of unannounced size reaches the guest as a stream.
    let chunks: Vec<Result<&'static str, std::io::Error>> = vec![Ok("pi"), Ok("ng"), Ok("!")];
    let streamed = client
        .post(gateway.url("/echo"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("post");
    assert_eq!(streamed.status(), 200);
    assert_eq!(streamed.text().await.expect("body"), "got 5 bytes: ping!");

    // Past the use's `max_body`: announced, refused before the guest runs; chunked, cut
    // as it streams, and answered 413 whatever the guest made of it.
    let announced = client
        .post(gateway.url("/echo"))
        .body("x".repeat(100))
        .send()
        .await
        .expect("post");
    assert_eq!(announced.status(), 413);
    let chunks: Vec<Result<String, std::io::Error>> = (0..10).map(|_| Ok("x".repeat(10))).collect();
    let chunked = client
        .post(gateway.url("/echo"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("post");
    assert_eq!(chunked.status(), 413);
}

#[tokio::test]
async fn outgoing_requests_from_a_wasi_http_guest_are_refused() {
    let gateway = gateway("5s", 8);
    let response = client()
        .get(gateway.url("/fetch"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "outgoing: denied\n");
}

#[tokio::test]
async fn failing_wasi_http_guests_get_bounded_errors_while_other_routes_answer() {
    let gateway = gateway("300ms", 8);
    let client = client();
    // Failures before the response head: the usual plugin errors.
    for (path, status, message) in [
        ("/loop", 504, "plugin timed out"),
        ("/no-response", 502, "plugin failed"),
    ] {
        let started = Instant::now();
        let response = client.get(gateway.url(path)).send().await.expect("get");
        assert_eq!(response.status(), status, "{path}");
        assert!(started.elapsed() < Duration::from_secs(3), "{path}");
        let body: serde_json::Value = response.json().await.expect("json error");
        assert_eq!(body["message"], message, "{path}");
        let ok = client.get(gateway.url("/ok")).send().await.expect("ok");
        assert_eq!(ok.status(), 200, "after {path}");
    }
    // Failures after it (a trap, the deadline): the head is gone, the body ends with an
    // error, never cleanly and never late. (When the failure comes before hyper wrote
    // anything, the connection closes before the head: an error all the same.)
    for path in ["/trap-mid-body", "/stall-mid-body"] {
        let started = Instant::now();
        let body = match client.get(gateway.url(path)).send().await {
            Ok(response) => {
                assert_eq!(response.status(), 200, "{path}");
                response.bytes().await.map(drop)
            }
            Err(error) => Err(error),
        };
        assert!(body.is_err(), "{path}: a cut body must not look complete");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path} took {:?}",
            started.elapsed()
        );
        let ok = client.get(gateway.url("/ok")).send().await.expect("ok");
        assert_eq!(ok.status(), 200, "after {path}");
    }
    // Streamed, not buffered: the first chunk arrives while the guest still runs.
    let mut stalled = client
        .get(gateway.url("/stall-mid-body"))
        .send()
        .await
        .expect("the head comes before the deadline");
    assert_eq!(stalled.status(), 200);
    let first = stalled.chunk().await.expect("first chunk");
    assert_eq!(first.as_deref(), Some(&b"first chunk\n"[..]));
    assert!(
        stalled.chunk().await.is_err(),
        "then the deadline cuts the body"
    );

    let logs = gateway.logs().join("\n");
    for needle in [
        "plugin hi: plugin ran past its deadline",
        "plugin hi: plugin returned invalid output: returned without setting a response",
        "wasi:http handler failed mid-body",
    ] {
        assert!(logs.contains(needle), "missing {needle:?} in:\n{logs}");
    }
}

#[tokio::test]
async fn a_streaming_call_holds_its_concurrency_permit_until_handle_returns() {
    let gateway = gateway("1s", 1);
    let client = client();
    let mut stalled = client
        .get(gateway.url("/stall-mid-body"))
        .send()
        .await
        .expect("head");
    stalled.chunk().await.expect("first chunk");
    // The head is sent but the guest still runs: its one permit is taken.
    let busy = client.get(gateway.url("/hi")).send().await.expect("get");
    assert_eq!(busy.status(), 503);
    let body: serde_json::Value = busy.json().await.expect("json error");
    assert_eq!(body["message"], "plugin busy, try again");
    assert!(stalled.chunk().await.is_err(), "the deadline cuts the body");
    // Once `handle` is over, the permit is back.
    let started = Instant::now();
    loop {
        let hi = client.get(gateway.url("/hi")).send().await.expect("get");
        if hi.status() == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{}",
            hi.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn plugin_inspect_shows_a_wasi_http_component_as_a_handler() {
    let output = Command::new(weir_bin())
        .args(["plugin", "inspect"])
        .arg(&guests().wasi_http_hello)
        .env("WEIR_PLUGIN_CACHE", cache_dir())
        .output()
        .expect("run weir plugin inspect");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("roles: handler (wasi:http)\n"), "{stdout}");
    assert!(
        stdout.contains("wasi:http/incoming-handler@0.2"),
        "{stdout}"
    );
}

#[test]
fn a_handler_exporting_neither_kind_of_handle_is_refused_naming_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let filter = &guests().noop_filter;
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[plugins.p]
path = {:?}

[[routes]]
path = "/p"
handler = {{ plugin = "p" }}
"#,
        filter.display().to_string()
    );
    std::fs::write(dir.path().join("weir.toml"), toml).expect("write");
    let output = Command::new(weir_bin())
        .args(["validate", "-c", "weir.toml"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .env("WEIR_PLUGIN_CACHE", cache_dir())
        .output()
        .expect("run weir validate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(
            "plugins.p: used as a handler but does not export `handle` (weir:plugin/handler) \
             or `wasi:http/incoming-handler@0.2.x` (wasi:http/proxy)"
        ),
        "{stderr}"
    );
}
