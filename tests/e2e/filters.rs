//! Wasm filters through the real gateway (`tests/guests/probe-filter`): order on the
//! request and reverse order on the response, one instance for both calls of a request
//! and none shared between requests, answering early, rewriting the path, the body
//! opt-in and its limits, heads-only filters leaving bodies streaming, and
//! `on_error = "fail" | "skip"` for every kind of failure.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;

use crate::guests::guests;
use crate::harness::{TestGateway, TestUpstream, client};
use crate::plugins::start;

/// A route file with the probe filter as `[plugins.probe]`, the echo upstream and
/// `routes` appended.
fn config(upstream: &TestUpstream, routes: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
# One thread (a current-thread runtime): a looping filter must not stall the others.
workers = 1

[plugins.probe]
path = "{probe}"
limits = {{ timeout = "300ms" }}

[upstreams.backend]
targets = ["{upstream}"]

{routes}
"#,
        probe = guests().probe_filter.display(),
        upstream = upstream.url(),
    )
}

fn filter(name: &str, mode: &str) -> String {
    format!(r#"{{ plugin = "probe", config = {{ name = "{name}", mode = "{mode}" }} }}"#)
}

/// A gateway whose route `path` proxies to `upstream` through `filters` (entries like
/// [`filter`]'s), in order.
fn chain(upstream: &TestUpstream, path: &str, filters: &[String]) -> TestGateway {
    start(&config(
        upstream,
        &format!(
            "[[routes]]\npath = \"{path}\"\nupstream = \"backend\"\nfilters = [{}]\n",
            filters.join(", ")
        ),
    ))
}

#[tokio::test]
async fn filters_run_in_order_in_and_in_reverse_out_with_one_instance_per_request() {
    let upstream = TestUpstream::echo().await;
    let gateway = chain(&upstream, "/things", &[filter("a", ""), filter("b", "")]);
    let client = client();
    for tag in ["first", "second"] {
        let response = client
            .get(gateway.url("/things"))
            .header("x-tag", tag)
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        // Reverse order on the way out.
        assert_eq!(headers["x-chain-out"], "b,a");
        // Each filter's on-response saw what its on-request saw: one instance.
        assert_eq!(headers["x-saw-a"], tag);
        assert_eq!(headers["x-saw-b"], tag);
        // A fresh instance per request: the counters never pass 1.
        assert_eq!(headers["x-count-a"], "1");
        assert_eq!(headers["x-count-b"], "1");
        let echo: serde_json::Value = response.json().await.expect("json");
        // In order on the way in.
        assert_eq!(echo["headers"]["x-chain"], "a,b");
    }
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn a_filter_that_answers_continue_without_response_is_not_called_on_the_way_out() {
    let upstream = TestUpstream::echo().await;
    let filters = [
        filter("a", ""),
        filter("b", "request-only"),
        filter("c", ""),
    ];
    let gateway = chain(&upstream, "/things", &filters);
    let response = client()
        .get(gateway.url("/things"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    // `b` changed the request, then was done: only `c` and `a` ran on the way out.
    assert_eq!(headers["x-chain-out"], "c,a");
    assert!(!headers.contains_key("x-count-b"));
    let echo: serde_json::Value = response.json().await.expect("json");
    assert_eq!(echo["headers"]["x-chain"], "a,b,c");
    assert_eq!(echo["headers"]["x-requests-b"], "1");
}

#[tokio::test]
async fn phases_leave_out_a_filters_on_request_or_its_on_response() {
    let upstream = TestUpstream::echo().await;
    let filters = [
        r#"{ plugin = "probe", phases = ["response"], config = { name = "a" } }"#.to_owned(),
        r#"{ plugin = "probe", phases = ["request"], config = { name = "b" } }"#.to_owned(),
    ];
    let gateway = chain(&upstream, "/things", &filters);
    let response = client()
        .get(gateway.url("/things"))
        .header("x-tag", "t")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    // Only `a` on the way out, in an instance that never saw the request.
    assert_eq!(headers["x-chain-out"], "a");
    assert_eq!(headers["x-saw-a"], "");
    assert_eq!(headers["x-count-a"], "1");
    assert!(!headers.contains_key("x-count-b"));
    // Only `b` on the way in.
    let echo: serde_json::Value = response.json().await.expect("json");
    assert_eq!(echo["headers"]["x-chain"], "b");
}

#[tokio::test]
async fn a_filter_can_answer_and_earlier_filters_see_its_response() {
    let upstream = TestUpstream::echo().await;
    let filters = [filter("a", ""), filter("b", "respond"), filter("c", "")];
    let gateway = chain(&upstream, "/early", &filters);
    let response = client()
        .get(gateway.url("/early"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 418);
    let headers = response.headers().clone();
    assert_eq!(headers["x-answered-by"], "b");
    assert_eq!(headers["x-chain-out"], "a");
    assert!(!headers.contains_key("x-count-c"));
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(response.text().await.expect("body"), "answered by b");
    assert_eq!(upstream.count(), 0, "the upstream was not called");
}

#[tokio::test]
async fn a_filter_rewrites_the_path_and_query_sent_upstream() {
    let upstream = TestUpstream::echo().await;
    let gateway = start(&config(
        &upstream,
        r#"
[[routes]]
path = "/old/{id}"
upstream = "backend"
filters = [{ plugin = "probe", config = { mode = "rewrite", to = "/new/./place" } }]
"#,
    ));
    let echo: serde_json::Value = client()
        .get(gateway.url("/old/7?x=1"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    // The filter's path is canonicalized like a client's.
    assert_eq!(echo["uri"], "/new/place?rewritten=1");
}

/// A backend answering with its request body twice.
async fn doubling_upstream() -> TestUpstream {
    TestUpstream::start(|request: http::Request<Bytes>, _| async move {
        let body = request.into_body();
        let mut doubled = body.to_vec();
        doubled.extend_from_slice(&body);
        http::Response::new(Full::new(Bytes::from(doubled)))
    })
    .await
}

#[tokio::test]
async fn bodies_reach_a_filter_only_when_asked_and_within_its_limit() {
    let upstream = doubling_upstream().await;
    let gateway = start(&config(
        &upstream,
        r#"
[[routes]]
path = "/upper"
upstream = "backend"
filters = [{ plugin = "probe", config = { mode = "upper" }, body = true, max_body = "16B" }]

[[routes]]
path = "/heads"
upstream = "backend"
max_body = "4MiB"
filters = [{ plugin = "probe", config = { mode = "upper" } }]
"#,
    ));
    let client = client();

    // Both ways: the upstream gets the upper-cased body, the client its upper-cased echo.
    let response = client
        .post(gateway.url("/upper"))
        .body("hello")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "10");
    assert_eq!(response.text().await.expect("body"), "HELLOHELLO");

    // Over the use's limit on the way in: 413 before the plugin or the upstream.
    let seen = upstream.count();
    let response = client
        .post(gateway.url("/upper"))
        .body("x".repeat(17))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 413);
    assert_eq!(upstream.count(), seen);

    // Within it on the way in (12 bytes), over it on the way out (24): 502.
    let response = client
        .post(gateway.url("/upper"))
        .body("abcdefghijkl")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 502);
    let json: serde_json::Value = response.json().await.expect("json");
    assert_eq!(json["message"], "upstream response too large");

    // A heads-only filter leaves the body alone, however large, both ways.
    let big = "a".repeat(3 * 1024 * 1024);
    let response = client
        .post(gateway.url("/heads"))
        .body(big.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("body");
    assert_eq!(body.len(), 2 * big.len());
    assert!(body.bytes().all(|b| b == b'a'), "bodies were not touched");
}

#[tokio::test]
async fn failing_filters_fail_the_request_or_are_skipped_as_configured() {
    let upstream = TestUpstream::echo().await;
    let mut routes = String::new();
    for mode in [
        "trap-request",
        "trap-response",
        "bad-header",
        "loop-request",
        "body-without-asking",
    ] {
        for on_error in ["fail", "skip"] {
            routes.push_str(&format!(
                r#"
[[routes]]
path = "/{mode}/{on_error}"
upstream = "backend"
filters = [{{ plugin = "probe", config = {{ name = "x", mode = "{mode}" }}, on_error = "{on_error}" }}]
"#
            ));
        }
    }
    routes.push_str(
        r#"
[[routes]]
path = "/fine"
upstream = "backend"
filters = [{ plugin = "probe" }]
"#,
    );
    let gateway = start(&config(&upstream, &routes));
    let client = client();
    for (mode, failed) in [
        ("trap-request", 500),
        ("trap-response", 500),
        ("bad-header", 500),
        ("loop-request", 504),
        ("body-without-asking", 500),
    ] {
        let started = Instant::now();
        let response = client
            .get(gateway.url(&format!("/{mode}/fail")))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), failed, "{mode} with on_error = fail");
        assert!(started.elapsed() < Duration::from_secs(5), "{mode} bounded");
        let json: serde_json::Value = response.json().await.expect("json body");
        assert!(json["request_id"].is_string(), "{mode}: {json}");

        let response = client
            .get(gateway.url(&format!("/{mode}/skip")))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 200, "{mode} with on_error = skip");
        let echo: serde_json::Value = response.json().await.expect("json");
        assert_eq!(echo["uri"], format!("/{mode}/skip"));

        // The gateway keeps serving.
        let fine = client.get(gateway.url("/fine")).send().await.expect("get");
        assert_eq!(fine.status(), 200);
        assert_eq!(fine.headers()["x-count-probe"], "1");
    }
    // A skipped on-request failure skips that filter's on-response too; a skipped
    // on-response failure leaves the upstream's response as it was.
    let skipped = client
        .get(gateway.url("/trap-response/skip"))
        .send()
        .await
        .expect("get");
    assert!(!skipped.headers().contains_key("x-chain-out"));
    let logs = gateway.logs().join("\n");
    assert!(logs.contains("filter failed; skipped"), "{logs}");
}
