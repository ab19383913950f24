//! API keys and usage plans through the real gateway: missing and wrong keys, two keys on
//! separate plans, a burst then `429` with `Retry-After`, the `RateLimit-*` headers, a
//! keys file. (Quota exhaustion across a period boundary needs a clock the test controls:
//! it is driven through the pipeline without sockets, in `host/src/apikey.rs`.)

use crate::harness::{TestGateway, TestUpstream, client};

/// What `printf %s KEY | sha256sum` prints: the form `key_sha256` takes.
fn sha256_hex(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn gateway(upstream: &TestUpstream, extra: &str) -> TestGateway {
    TestGateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
{extra}

[upstreams.echo]
targets = ["{upstream}"]

[usage_plans.bronze]
rate = 0.01
burst = 2

[usage_plans.gold]
rate = 100
burst = 100
quota = {{ limit = 1000, period = "month" }}

[[api_keys]]
name = "bronze-client"
key_sha256 = "{bronze}"
plan = "bronze"

[[api_keys]]
name = "gold-client"
key_sha256 = "{gold}"
plan = "gold"

[[routes]]
path = "/data/{{id}}"
api_key = true
upstream = "echo"

[[routes]]
path = "/open"
upstream = "echo"
"#,
        upstream = upstream.url(),
        bronze = sha256_hex("bronze-key"),
        gold = sha256_hex("gold-key"),
    ))
}

async fn get(gateway: &TestGateway, key: Option<&str>) -> reqwest::Response {
    let mut request = client().get(gateway.url("/data/1"));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    request.send().await.expect("request")
}

#[tokio::test]
async fn missing_and_wrong_keys_are_403() {
    let upstream = TestUpstream::echo().await;
    let gateway = gateway(&upstream, "");
    for key in [
        None,
        Some("wrong-key"),
        Some(""),
        Some("gold-key2"),
        Some("GOLD-KEY"),
    ] {
        let response = get(&gateway, key).await;
        assert_eq!(response.status(), 403, "{key:?}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert!(
            body["message"]
                .as_str()
                .expect("message")
                .contains("api key")
        );
    }
    assert_eq!(upstream.count(), 0);
    // A route without `api_key` needs none.
    let open = client()
        .get(gateway.url("/open"))
        .send()
        .await
        .expect("request");
    assert_eq!(open.status(), 200);
}

#[tokio::test]
async fn two_keys_with_separate_plans_burst_then_429_and_headers() {
    let upstream = TestUpstream::echo().await;
    let gateway = gateway(&upstream, "");
    // Bronze: a burst of 2, refilled one per 100 s.
    for remaining in ["1", "0"] {
        let response = get(&gateway, Some("bronze-key")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["ratelimit-limit"], "2");
        assert_eq!(response.headers()["ratelimit-remaining"], remaining);
        assert!(response.headers().contains_key("ratelimit-reset"));
    }
    let refused = get(&gateway, Some("bronze-key")).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("retry-after")
        .parse()
        .expect("seconds");
    assert!((1..=100).contains(&retry), "retry-after {retry}");
    assert_eq!(refused.headers()["ratelimit-remaining"], "0");
    // Gold is a plan of its own: unaffected, and its quota is the tighter figure.
    let response = get(&gateway, Some("gold-key")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["ratelimit-limit"], "100");
    // The backend sees neither the key nor anything from the refused request.
    assert_eq!(upstream.count(), 3);
    for seen in upstream.seen() {
        assert!(!seen.headers.contains_key("x-api-key"));
    }
}

#[tokio::test]
async fn a_route_override_has_its_own_limits_and_counters() {
    let upstream = TestUpstream::echo().await;
    let gateway = TestGateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
api_key_header = "x-partner-key"

[upstreams.echo]
targets = ["{upstream}"]

[usage_plans.plan]
rate = 100
burst = 100

[usage_plans.plan.routes.expensive]
rate = 0.01
burst = 1

[[api_keys]]
name = "partner"
key_sha256 = "{digest}"
plan = "plan"

[[routes]]
name = "expensive"
path = "/expensive"
api_key = true
upstream = "echo"

[[routes]]
name = "cheap"
path = "/cheap"
api_key = true
upstream = "echo"
"#,
        upstream = upstream.url(),
        digest = sha256_hex("partner-key"),
    ));
    let send = |path: &'static str, header: &'static str| {
        let url = gateway.url(path);
        async move {
            client()
                .get(url)
                .header(header, "partner-key")
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        send("/cheap", "x-api-key").await,
        403,
        "the header is configurable"
    );
    assert_eq!(send("/expensive", "x-partner-key").await, 200);
    assert_eq!(send("/expensive", "x-partner-key").await, 429);
    assert_eq!(send("/cheap", "x-partner-key").await, 200);
    assert_eq!(send("/cheap", "x-partner-key").await, 200);
}

#[tokio::test]
async fn keys_from_a_keys_file() {
    let upstream = TestUpstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("keys.txt"),
        format!(
            "# partners\npartner-a {}\n\npartner-b {}\n",
            sha256_hex("key-a"),
            sha256_hex("key-b")
        ),
    )
    .expect("keys file");
    let gateway = TestGateway::start_in(
        dir,
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"

[upstreams.echo]
targets = ["{}"]

[[api_keys]]
file = "keys.txt"

[[routes]]
path = "/data/{{id}}"
api_key = true
upstream = "echo"
"#,
            upstream.url()
        ),
    );
    assert_eq!(get(&gateway, Some("key-a")).await.status(), 200);
    assert_eq!(get(&gateway, Some("key-b")).await.status(), 200);
    assert_eq!(get(&gateway, Some("key-c")).await.status(), 403);
}

#[tokio::test]
async fn the_access_log_names_the_api_key_not_the_secret() {
    let upstream = TestUpstream::echo().await;
    let gateway = gateway(&upstream, "");
    assert_eq!(get(&gateway, Some("gold-key")).await.status(), 200);
    let line = &gateway.access_log(1).await[0];
    assert_eq!(line["api_key"], "gold-client");
    assert!(!line.to_string().contains("gold-key\""), "{line}");
}
