//! CORS through the real gateway (preflights answered by the host, actual requests,
//! refused origins), client address rules, and the access checks against path spellings:
//! no authorizer, API key or CORS check can be skipped by spelling a path differently.

use serde_json::json;

use crate::harness::{TestGateway, TestUpstream, client, raw_request};
use crate::tokens::{Signer, good_claims};

fn cors_gateway(upstream: &TestUpstream) -> TestGateway {
    TestGateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
cors = {{ allow_origins = ["https://app.example"] }}

[upstreams.echo]
targets = ["{}"]

[[routes]]
path = "/items/{{id}}"
methods = ["GET", "PUT"]
upstream = "echo"
cors = {{ allow_origins = ["https://app.example", "https://*.example.com"], allow_methods = ["GET", "PUT"], allow_headers = ["content-type", "authorization"], expose_headers = ["x-total"], allow_credentials = true, max_age = "10m" }}

[[routes]]
path = "/server-wide"
upstream = "echo"
"#,
        upstream.url()
    ))
}

async fn preflight(
    gateway: &TestGateway,
    path: &str,
    origin: &str,
    method: &str,
) -> reqwest::Response {
    client()
        .request(reqwest::Method::OPTIONS, gateway.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("preflight")
}

#[tokio::test]
async fn preflight_is_answered_by_the_host() {
    let upstream = TestUpstream::echo().await;
    let gateway = cors_gateway(&upstream);
    // The route has no OPTIONS method: the preflight is routed as the PUT it announces.
    let response = preflight(&gateway, "/items/1", "https://shop.example.com", "PUT").await;
    assert_eq!(response.status(), 204);
    let h = response.headers();
    assert_eq!(h["access-control-allow-origin"], "https://shop.example.com");
    assert_eq!(h["access-control-allow-methods"], "GET, PUT");
    assert_eq!(
        h["access-control-allow-headers"],
        "content-type, authorization"
    );
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");
    assert!(h["vary"].to_str().expect("vary").contains("origin"));
    // A method the policy does not allow gets no permission.
    let response = preflight(&gateway, "/items/1", "https://app.example", "DELETE").await;
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
    assert_eq!(upstream.count(), 0, "no preflight reached the backend");
}

#[tokio::test]
async fn actual_request_gets_cors_headers_and_vary() {
    let upstream = TestUpstream::echo().await;
    let gateway = cors_gateway(&upstream);
    let response = client()
        .get(gateway.url("/items/1"))
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let h = response.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-expose-headers"], "x-total");
    assert_eq!(h["vary"], "origin");
    // Gateway-made errors on a CORS route carry the headers too.
    let response = client()
        .delete(gateway.url("/items/1"))
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 405);
    // 405 is decided by routing, before the route's CORS: nothing to add there.
    let server_wide = client()
        .get(gateway.url("/server-wide"))
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("request");
    assert_eq!(
        server_wide.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}

#[tokio::test]
async fn a_refused_origin_gets_no_cors_headers() {
    let upstream = TestUpstream::echo().await;
    let gateway = cors_gateway(&upstream);
    for origin in [
        "https://evil.example",
        "https://example.com",
        "http://app.example",
        "null",
    ] {
        let response = preflight(&gateway, "/items/1", origin, "GET").await;
        assert_eq!(response.status(), 204, "{origin}");
        assert!(
            !response
                .headers()
                .contains_key("access-control-allow-origin"),
            "{origin}"
        );
        let response = client()
            .get(gateway.url("/items/1"))
            .header("origin", origin)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        assert!(
            !response
                .headers()
                .contains_key("access-control-allow-origin"),
            "{origin}"
        );
        assert!(
            !response
                .headers()
                .contains_key("access-control-allow-credentials")
        );
        assert_eq!(response.headers()["vary"], "origin");
    }
}

/// Routes behind each kind of check, plus an open greedy route to climb out of.
fn guarded_gateway(upstream: &TestUpstream, dir: tempfile::TempDir) -> TestGateway {
    TestGateway::start_in(
        dir,
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"

[upstreams.echo]
targets = ["{}"]

[authorizers.main]
type = "jwt"
issuer = "https://issuer.test"
audience = "weir-tests"
jwks = "jwks.json"

[[api_keys]]
name = "k"
key_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

[[routes]]
path = "/admin/secret"
authorizer = "main"
upstream = "echo"

[[routes]]
path = "/keyed/secret"
api_key = true
upstream = "echo"

[[routes]]
path = "/local/secret"
allow_cidrs = ["10.0.0.0/8"]
upstream = "echo"

[[routes]]
path = "/cors/secret"
methods = ["GET"]
cors = {{ allow_origins = ["https://app.example"] }}
upstream = "echo"

[[routes]]
path = "/public/{{path+}}"
mock = {{ status = 200, body = "public" }}
"#,
            upstream.url()
        ),
    )
}

/// Every way of spelling a guarded path, and the canonical path it must count as.
const SPELLINGS: &[&str] = &[
    "/{p}/secret",
    "/{p}/./secret",
    "//{p}/secret",
    "/{p}//secret",
    "/public/../{p}/secret",
    "/public/x/../../{p}/secret",
    "/{p}/secret?x=1",
    "/{p}/sec%72et",
    "/{p}/x/../secret",
];

async fn statuses(gateway: &TestGateway, prefix: &str, extra_header: &str) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for spelling in SPELLINGS {
        let path = spelling.replace("{p}", prefix);
        let response = raw_request(
            gateway.http_addr(),
            &format!(
                "GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra_header}Connection: close\r\n\r\n"
            ),
        )
        .await;
        out.push((path, response.status));
    }
    // Percent-encoding the first letter of the prefix.
    let first = prefix.as_bytes()[0];
    let path = format!("/%{first:02X}{}/secret", &prefix[1..]);
    let response = raw_request(
        gateway.http_addr(),
        &format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra_header}Connection: close\r\n\r\n"
        ),
    )
    .await;
    out.push((path, response.status));
    out
}

#[tokio::test]
async fn no_access_check_can_be_skipped_by_spelling_the_path_differently() {
    let upstream = TestUpstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Signer::ed("k");
    std::fs::write(
        dir.path().join("jwks.json"),
        crate::tokens::jwks(&[&signer]),
    )
    .expect("jwks");
    let gateway = guarded_gateway(&upstream, dir);
    let mut failures = Vec::new();
    for (prefix, expected) in [("admin", 401), ("keyed", 403), ("local", 403)] {
        for (path, status) in statuses(&gateway, prefix, "").await {
            if status != expected {
                failures.push(format!("{path}: expected {expected}, got {status}"));
            }
        }
    }
    // CORS: every spelling of a preflight is answered by the host, with the policy.
    for spelling in SPELLINGS {
        let path = spelling.replace("{p}", "cors");
        let response = raw_request(
            gateway.http_addr(),
            &format!(
                "OPTIONS {path} HTTP/1.1\r\nHost: localhost\r\nOrigin: https://app.example\r\n\
                 Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        if response.status != 204
            || response.header("access-control-allow-origin") != Some("https://app.example")
        {
            failures.push(format!(
                "preflight {path}: {} {:?}",
                response.status, response.headers
            ));
        }
        let response = raw_request(
            gateway.http_addr(),
            &format!(
                "GET {path} HTTP/1.1\r\nHost: localhost\r\nOrigin: https://evil.example\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
        .await;
        if response.header("access-control-allow-origin").is_some()
            || response.header("vary") != Some("origin")
        {
            failures.push(format!("actual {path}: {:?}", response.headers));
        }
    }
    assert!(
        failures.is_empty(),
        "checks skipped:\n{}",
        failures.join("\n")
    );
    // Only the CORS route's actual requests reached the backend.
    assert_eq!(upstream.count(), SPELLINGS.len());
    // And the guarded routes do work for a good caller.
    let token = signer.token(&good_claims("a"));
    let ok = client()
        .get(gateway.url("/public/../admin/secret"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn client_address_rules_use_the_real_client_address() {
    let upstream = TestUpstream::echo().await;
    let gateway = TestGateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1"]

[upstreams.echo]
targets = ["{}"]

[[routes]]
path = "/internal"
allow_cidrs = ["10.0.0.0/8"]
deny_cidrs = ["10.6.6.0/24"]
upstream = "echo"

[[routes]]
path = "/blocked"
deny_cidrs = ["127.0.0.0/8"]
upstream = "echo"
"#,
        upstream.url()
    ));
    let send = |path: &'static str, xff: Option<&'static str>| {
        let url = gateway.url(path);
        async move {
            let mut request = client().get(url);
            if let Some(xff) = xff {
                request = request.header("x-forwarded-for", xff);
            }
            request.send().await.expect("request").status().as_u16()
        }
    };
    // The peer (127.0.0.1) is a trusted proxy: the client is the address it forwards for.
    assert_eq!(send("/internal", Some("10.1.2.3")).await, 200);
    assert_eq!(
        send("/internal", Some("10.6.6.9")).await,
        403,
        "deny wins over allow"
    );
    assert_eq!(send("/internal", Some("192.0.2.1")).await, 403);
    assert_eq!(
        send("/internal", None).await,
        403,
        "127.0.0.1 itself is not allowed"
    );
    assert_eq!(send("/blocked", None).await, 403);
    assert_eq!(send("/blocked", Some("192.0.2.1")).await, 200);
    let body: serde_json::Value = client()
        .get(gateway.url("/blocked"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(body["message"], json!("client address not allowed"));
}
