//! Throttling end to end: server-wide, per-route, per-client and per-header token buckets,
//! `429` with a JSON body, `Retry-After` and `RateLimit-*` headers, refill, and a refused
//! request never reaching the backend.

use std::time::Duration;

use crate::harness::{TestGateway, TestUpstream, client};

async fn get(gateway: &TestGateway, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().get(gateway.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("send")
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii").to_owned())
}

#[tokio::test]
async fn route_throttle_admits_the_burst_then_answers_429_with_headers() {
    let gateway = TestGateway::start(
        r#"
[server]
listen = "127.0.0.1:0"

[[routes]]
path = "/limited"
throttle = { rate = 0.1, burst = 3 }
mock = { body = "ok" }

[[routes]]
path = "/free"
mock = { body = "ok" }
"#,
    );
    for remaining in ["2", "1", "0"] {
        let response = get(&gateway, "/limited", &[]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(
            header(&response, "ratelimit-remaining").as_deref(),
            Some(remaining)
        );
        assert!(header(&response, "ratelimit-reset").is_some());
    }
    let refused = get(&gateway, "/limited", &[]).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = header(&refused, "retry-after")
        .expect("retry-after")
        .parse()
        .expect("seconds");
    // One token every 10 s.
    assert!((9..=10).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(
        header(&refused, "ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(header(&refused, "ratelimit-limit").as_deref(), Some("3"));
    assert_eq!(
        header(&refused, "content-type").as_deref(),
        Some("application/json")
    );
    let request_id = header(&refused, "x-request-id").expect("request id");
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["message"], "too many requests");
    assert_eq!(body["request_id"], request_id.as_str());

    // A route without a throttle is untouched and says nothing about limits.
    let free = get(&gateway, "/free", &[]).await;
    assert_eq!(free.status(), 200);
    assert!(header(&free, "ratelimit-limit").is_none());
}

#[tokio::test]
async fn server_throttle_is_shared_by_every_route_and_checked_before_the_route() {
    let gateway = TestGateway::start(
        r#"
[server]
listen = "127.0.0.1:0"
throttle = { rate = 0.1, burst = 2 }

[[routes]]
path = "/a"
mock = { body = "a" }

[[routes]]
path = "/b"
throttle = { rate = 100, burst = 100 }
mock = { body = "b" }
"#,
    );
    assert_eq!(get(&gateway, "/a", &[]).await.status(), 200);
    let b = get(&gateway, "/b", &[]).await;
    assert_eq!(b.status(), 200);
    // The tightest bucket is reported: the server's, with nothing left.
    assert_eq!(header(&b, "ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(header(&b, "ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(get(&gateway, "/a", &[]).await.status(), 429);
    assert_eq!(get(&gateway, "/b", &[]).await.status(), 429);
}

#[tokio::test]
async fn per_client_buckets_follow_the_trusted_proxy_rules() {
    let gateway = TestGateway::start(
        r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1"]

[[routes]]
path = "/per-client"
throttle = { rate = 0.1, burst = 1, per_client = true }
mock = { body = "ok" }

[[routes]]
path = "/by-key"
throttle = { rate = 0.1, burst = 1, key = "client" }
mock = { body = "ok" }
"#,
    );
    for path in ["/per-client", "/by-key"] {
        let one = [("x-forwarded-for", "203.0.113.1")];
        let two = [("x-forwarded-for", "203.0.113.2")];
        assert_eq!(get(&gateway, path, &one).await.status(), 200, "{path}");
        assert_eq!(get(&gateway, path, &one).await.status(), 429, "{path}");
        assert_eq!(get(&gateway, path, &two).await.status(), 200, "{path}");
        assert_eq!(get(&gateway, path, &two).await.status(), 429, "{path}");
    }
}

#[tokio::test]
async fn header_keyed_buckets_and_a_route_with_several_buckets() {
    let gateway = TestGateway::start(
        r#"
[server]
listen = "127.0.0.1:0"

[[routes]]
path = "/tenant"
throttle = [
    { rate = 0.1, burst = 3 },
    { rate = 0.1, burst = 1, key = "header:x-tenant" },
]
mock = { body = "ok" }
"#,
    );
    let a = [("x-tenant", "a")];
    let b = [("x-tenant", "b")];
    assert_eq!(get(&gateway, "/tenant", &a).await.status(), 200);
    assert_eq!(get(&gateway, "/tenant", &a).await.status(), 429);
    assert_eq!(get(&gateway, "/tenant", &b).await.status(), 200);
    // The route-wide bucket (3) is spent by now: a, a (refused by the tenant bucket, but
    // the cheaper shared bucket was taken first), b.
    assert_eq!(
        get(&gateway, "/tenant", &[("x-tenant", "c")])
            .await
            .status(),
        429
    );
}

#[tokio::test]
async fn a_bucket_refills_at_its_rate() {
    let gateway = TestGateway::start(
        r#"
[server]
listen = "127.0.0.1:0"

[[routes]]
path = "/fast"
throttle = { rate = 5, burst = 1 }
mock = { body = "ok" }
"#,
    );
    assert_eq!(get(&gateway, "/fast", &[]).await.status(), 200);
    assert_eq!(get(&gateway, "/fast", &[]).await.status(), 429);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(get(&gateway, "/fast", &[]).await.status(), 200);
    assert_eq!(get(&gateway, "/fast", &[]).await.status(), 429);
}

#[tokio::test]
async fn a_refused_request_never_reaches_the_backend() {
    let backend = TestUpstream::named().await;
    let gateway = TestGateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[upstreams.app]
targets = ["{}"]

[[routes]]
path = "/app"
throttle = {{ rate = 0.1, burst = 2 }}
upstream = "app"
"#,
        backend.url()
    ));
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get(&gateway, "/app", &[]).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    assert_eq!(backend.count(), 2);
}

#[test]
fn throttle_keys_are_validated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        r#"
[server]
listen = "127.0.0.1:0"
throttle = { rate = 0, burst = 0 }

[[routes]]
path = "/a"
throttle = { rate = 1, key = "cookie:x", brust = 2 }
on_state_error = "sometimes"
mock = {}
"#,
    )
    .expect("write");
    let out = std::process::Command::new(crate::harness::weir_bin())
        .args(["validate", "-c"])
        .arg(&config)
        .output()
        .expect("run weir");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "server.throttle.rate: expected a rate of at least 0.001",
        "server.throttle.burst: expected an integer of at least 1, got 0",
        "routes[0].throttle.key: invalid value \"cookie:x\"",
        "routes[0].throttle.brust: unknown key (did you mean \"burst\"?)",
        "routes[0].on_state_error: invalid value \"sometimes\"",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}
