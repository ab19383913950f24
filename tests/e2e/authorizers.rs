//! Plugin authorizers through the real gateway (`tests/guests/probe-authorizer`, which
//! counts its calls per token in its KV store): identity sources, the decision cache and
//! its expiry, context forwarded upstream and to filters, denies, failing closed, and a
//! usage-plan key chosen by the authorizer.

use std::time::Duration;

use crate::guests::guests;
use crate::harness::{TestGateway, TestUpstream, client};
use crate::plugins::start;

fn config(upstream: &TestUpstream, authorizer: &str, routes: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[plugins.probe]
path = "{probe}"

[plugins.probe-filter]
path = "{filter}"

[authorizers.partners]
type = "plugin"
plugin = "probe"
identity = ["header:x-token"]
forward_context = {{ tenant = "x-tenant", calls = "x-calls", principal = "x-principal" }}
{authorizer}

[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/private"
upstream = "backend"
authorizer = "partners"

{routes}
"#,
        probe = guests().probe_authorizer.display(),
        filter = guests().probe_filter.display(),
        upstream = upstream.url(),
    )
}

/// `GET path` with `x-token: token`; the status and the echo's headers (or the body).
async fn get(gateway: &TestGateway, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut request = client().get(gateway.url(path));
    if let Some(token) = token {
        request = request.header("x-token", token);
    }
    let response = request.send().await.expect("get");
    let status = response.status().as_u16();
    let json: serde_json::Value = response.json().await.expect("json body");
    (status, json)
}

#[tokio::test]
async fn decisions_are_cached_per_identity_until_their_ttl() {
    let upstream = TestUpstream::echo().await;
    let gateway = start(&config(&upstream, r#"cache_ttl = "1s""#, ""));

    for _ in 0..3 {
        let (status, echo) = get(&gateway, "/private", Some("allow-ada")).await;
        assert_eq!(status, 200);
        // One plugin call made the decision; the next two reused it.
        assert_eq!(echo["headers"]["x-calls"], "1");
        assert_eq!(echo["headers"]["x-principal"], "ada");
        assert_eq!(echo["headers"]["x-tenant"], "acme");
    }
    // Another identity is another decision.
    let (_, echo) = get(&gateway, "/private", Some("allow-bob")).await;
    assert_eq!(echo["headers"]["x-calls"], "1");
    assert_eq!(echo["headers"]["x-principal"], "bob");

    // Past the TTL the plugin is asked again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, echo) = get(&gateway, "/private", Some("allow-ada")).await;
    assert_eq!(echo["headers"]["x-calls"], "2");
}

#[tokio::test]
async fn without_a_cache_every_request_calls_the_plugin() {
    let upstream = TestUpstream::echo().await;
    let gateway = start(&config(&upstream, r#"cache_ttl = "0s""#, ""));
    for expected in ["1", "2", "3"] {
        let (status, echo) = get(&gateway, "/private", Some("allow-cy")).await;
        assert_eq!(status, 200);
        assert_eq!(echo["headers"]["x-calls"], expected);
    }
}

#[tokio::test]
async fn missing_identity_denies_and_failures_refuse_the_request() {
    let upstream = TestUpstream::echo().await;
    let gateway = start(&config(&upstream, "", ""));

    // No identity: 401 from the gateway, the plugin is not called.
    let (status, json) = get(&gateway, "/private", None).await;
    assert_eq!(status, 401);
    assert_eq!(json["message"], "authentication required");
    assert!(json["request_id"].is_string());

    // A deny is the plugin's own response, and is cached like an allow.
    for _ in 0..2 {
        let response = client()
            .get(gateway.url("/private"))
            .header("x-token", "deny")
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 403);
        assert_eq!(response.headers()["x-denied-by"], "probe");
        assert!(response.headers().contains_key("x-request-id"));
        let json: serde_json::Value = response.json().await.expect("json");
        assert_eq!(json["message"], "denied by probe");
    }

    // Failures fail closed: a trap, an invalid allow.
    for token in ["trap", "empty"] {
        let (status, json) = get(&gateway, "/private", Some(token)).await;
        assert_eq!(status, 500, "{token}");
        assert_eq!(json["message"], "plugin failed");
    }
    assert_eq!(upstream.count(), 0, "nothing got through");

    // Forwarded context headers cannot be injected by the client.
    let response = client()
        .get(gateway.url("/private"))
        .header("x-token", "allow-eve")
        .header("x-tenant", "forged")
        .send()
        .await
        .expect("get");
    let echo: serde_json::Value = response.json().await.expect("json");
    assert_eq!(echo["headers"]["x-tenant"], "acme");
}

#[tokio::test]
async fn the_authorizer_context_reaches_filters() {
    let upstream = TestUpstream::echo().await;
    let gateway = start(&config(
        &upstream,
        "",
        r#"
[[routes]]
path = "/filtered"
upstream = "backend"
authorizer = "partners"
filters = [{ plugin = "probe-filter" }]
"#,
    ));
    let (status, echo) = get(&gateway, "/filtered", Some("allow-dee")).await;
    assert_eq!(status, 200);
    assert_eq!(echo["headers"]["x-auth-seen"], "partners/dee/acme");
}

#[tokio::test]
async fn an_authorizer_chooses_the_api_key_of_the_usage_plan() {
    let upstream = TestUpstream::echo().await;
    let key_sha256: String = ring::digest::digest(&ring::digest::SHA256, b"partner-key")
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let gateway = start(&config(
        &upstream,
        "",
        &format!(
            r#"
[[routes]]
path = "/metered"
upstream = "backend"
authorizer = "partners"
api_key = true

[usage_plans.small]
rate = 0.01
burst = 2

[[api_keys]]
name = "partner"
key_sha256 = "{key_sha256}"
plan = "small"
"#
        ),
    ));
    // The authorizer's usage-plan key counts against the plan: a burst of 2, then 429.
    for expected in [200, 200, 429] {
        let (status, _) = get(&gateway, "/metered", Some("plan-partner-key")).await;
        assert_eq!(status, expected);
    }
    // A usage-plan key that is no API key is refused like a wrong key.
    let (status, json) = get(&gateway, "/metered", Some("plan-nonsense")).await;
    assert_eq!(status, 403);
    assert_eq!(json["message"], "invalid api key");
}
