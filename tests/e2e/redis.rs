//! State in a real `redis-server` (started by the harness): two `weir` processes share
//! one token bucket and one cache; Redis killed mid-test → each route's fallback, no
//! panic, the fallbacks and errors in the metrics, and recovery once it is back.

use std::time::{Duration, Instant};

use crate::harness::{TestGateway, TestRedis, TestUpstream, client};
use crate::ops::{metrics, sample};

/// The sum of every exposition line starting with `series` (e.g. all `kind`s of an `op`).
fn sum(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn config(redis: &TestRedis, backend: &TestUpstream, prefix: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[state]
backend = "redis"
url = "{}"
prefix = "{prefix}"
timeout = "100ms"
connect_timeout = "100ms"
retry_interval = "200ms"

[upstreams.app]
targets = ["{}"]

[[routes]]
path = "/limited"
throttle = {{ rate = 0.01, burst = 4 }}
mock = {{ body = "ok" }}

[[routes]]
path = "/local"
throttle = {{ rate = 0.01, burst = 2 }}
mock = {{ body = "ok" }}

[[routes]]
path = "/open"
throttle = {{ rate = 0.01, burst = 1 }}
on_state_error = "open"
mock = {{ body = "ok" }}

[[routes]]
path = "/closed"
throttle = {{ rate = 1000, burst = 1000 }}
on_state_error = "closed"
mock = {{ body = "ok" }}

[[routes]]
name = "cached"
path = "/cached/{{id}}"
cache = {{ ttl = "60s" }}
upstream = "app"
"#,
        redis.url(),
        backend.url()
    )
}

async fn status(gateway: &TestGateway, path: &str) -> u16 {
    client()
        .get(gateway.url(path))
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

async fn x_cache(gateway: &TestGateway, path: &str) -> (String, String) {
    let response = client().get(gateway.url(path)).send().await.expect("send");
    assert_eq!(response.status(), 200);
    let x_cache = response.headers()["x-cache"]
        .to_str()
        .expect("ascii")
        .to_owned();
    (x_cache, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_bucket_and_one_cache() {
    let redis = TestRedis::start();
    let backend = TestUpstream::named().await;
    let text = config(&redis, &backend, "shared:");
    let (a, b) = (TestGateway::start(&text), TestGateway::start(&text));

    // One bucket of 4 across both: whichever gateway is asked, the fifth is refused.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let gateway = if i % 2 == 0 { &a } else { &b };
        statuses.push(status(gateway, "/limited").await);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);

    // One cache: filled through one gateway, served by the other.
    assert_eq!(x_cache(&a, "/cached/1").await.0, "miss");
    assert_eq!(x_cache(&b, "/cached/1").await.0, "hit");
    assert_eq!(backend.count(), 1);
    // Each gateway counts its own lookups; the store happened on the first.
    let (text_a, text_b) = (metrics(&a).await, metrics(&b).await);
    let hits = r#"weir_cache_lookups_total{route="cached",result="hit"}"#;
    let misses = r#"weir_cache_lookups_total{route="cached",result="miss"}"#;
    let stores = r#"weir_cache_stores_total{route="cached"}"#;
    assert_eq!(
        (sample(&text_a, misses), sample(&text_a, hits)),
        (Some(1.0), Some(0.0)),
        "{text_a}"
    );
    assert_eq!(
        (sample(&text_b, misses), sample(&text_b, hits)),
        (Some(0.0), Some(1.0)),
        "{text_b}"
    );
    assert_eq!(
        (sample(&text_a, stores), sample(&text_b, stores)),
        (Some(1.0), Some(0.0))
    );
    // Entries live in Redis, not in the local fallback cache.
    assert_eq!(sample(&text_a, "weir_cache_local_entries"), Some(0.0));
    assert!(
        redis
            .cli(&["--scan", "--pattern", "shared:cache:*"])
            .contains("GET /cached/1")
    );

    // A purge on one gateway empties the shared cache for both.
    let purged: serde_json::Value = client()
        .post(a.admin_url("/cache/purge?route=cached"))
        .send()
        .await
        .expect("purge")
        .json()
        .await
        .expect("json");
    assert_eq!(purged["purged"], 1);
    assert_eq!(x_cache(&b, "/cached/1").await.0, "miss");
    assert_eq!(backend.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_applies_each_routes_choice_and_recovers() {
    let mut redis = TestRedis::start();
    let backend = TestUpstream::named().await;
    let gateway = TestGateway::start(&config(&redis, &backend, "outage:"));

    // Healthy: the cache is shared through Redis.
    assert_eq!(x_cache(&gateway, "/cached/1").await.0, "miss");
    assert_eq!(x_cache(&gateway, "/cached/1").await.0, "hit");
    assert_eq!(status(&gateway, "/closed").await, 200);
    let text = metrics(&gateway).await;
    assert_eq!(
        sample(&text, r#"weir_state_backend_up{backend="redis"}"#),
        Some(1.0),
        "{text}"
    );
    // Every error and fallback series is there from the start, at zero.
    assert_eq!(sum(&text, "weir_state_errors_total{"), 0.0, "{text}");
    assert_eq!(
        sample(
            &text,
            r#"weir_state_fallbacks_total{use="quota",on_state_error="closed"}"#
        ),
        Some(0.0),
        "{text}"
    );

    redis.stop();
    let started = Instant::now();
    // closed: refused with 503 while the limit cannot be checked.
    assert_eq!(status(&gateway, "/closed").await, 503);
    // open: always allowed, even past the burst of 1.
    for _ in 0..3 {
        assert_eq!(status(&gateway, "/open").await, 200);
    }
    // local (the default for limits): this gateway's own bucket of 2.
    assert_eq!(status(&gateway, "/local").await, 200);
    assert_eq!(status(&gateway, "/local").await, 200);
    assert_eq!(status(&gateway, "/local").await, 429);
    // The cache is bypassed: the backend answers.
    let seen = backend.count();
    assert_eq!(x_cache(&gateway, "/cached/1").await.0, "miss");
    assert_eq!(x_cache(&gateway, "/cached/1").await.0, "miss");
    assert_eq!(backend.count(), seen + 2);
    // Degraded answers are fast: no request waited on the dead server for long.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let state: serde_json::Value = client()
        .get(gateway.admin_url("/state"))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    assert_eq!(state["backend"], "redis");
    assert_eq!(state["healthy"], false);
    assert_eq!(state["degraded"]["limit"], 7);
    assert_eq!(state["degraded"]["cache"], 4);

    // The same in the metrics: one fallback per state call, by use and route choice, and
    // as many failed operations (the first found the server gone, most others did not
    // try while it was considered down).
    let text = metrics(&gateway).await;
    let fallbacks = |what: &str, choice: &str| {
        sample(
            &text,
            &format!(r#"weir_state_fallbacks_total{{use="{what}",on_state_error="{choice}"}}"#),
        )
    };
    assert_eq!(fallbacks("limit", "closed"), Some(1.0), "{text}");
    assert_eq!(fallbacks("limit", "open"), Some(3.0), "{text}");
    assert_eq!(fallbacks("limit", "local"), Some(3.0), "{text}");
    // Cache lookups and stores, bypassed (the cache's default choice is "open").
    assert_eq!(fallbacks("cache", "open"), Some(4.0), "{text}");
    assert_eq!(sum(&text, r#"weir_state_errors_total{op="take","#), 7.0);
    assert_eq!(
        sum(&text, r#"weir_state_errors_total{op="cache_get","#),
        2.0
    );
    assert_eq!(
        sum(&text, r#"weir_state_errors_total{op="cache_put","#),
        2.0
    );
    assert!(
        sum(&text, r#"weir_state_errors_total{op="take",kind="down"}"#) >= 1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"weir_state_backend_up{backend="redis"}"#),
        Some(0.0)
    );
    // The fail-closed refusal is a 503 of the throttle phase.
    assert_eq!(
        sample(
            &text,
            r#"weir_refused_requests_total{route="/closed",phase="throttle",status="503",reason="state_unavailable"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        gateway
            .logs()
            .iter()
            .any(|l| l.contains("degraded decision")),
        "degraded decisions are logged"
    );

    // Redis returns: the gateway recovers by itself.
    redis.start_again();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&gateway, "/closed").await != 200 {
        assert!(
            Instant::now() < deadline,
            "no recovery after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(x_cache(&gateway, "/cached/2").await.0, "miss");
    assert_eq!(x_cache(&gateway, "/cached/2").await.0, "hit");
    assert!(
        gateway
            .logs()
            .iter()
            .any(|l| l.contains("state backend recovered"))
    );
    let state: serde_json::Value = client()
        .get(gateway.admin_url("/state"))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    assert_eq!(state["healthy"], true);
    let text = metrics(&gateway).await;
    assert_eq!(
        sample(&text, r#"weir_state_backend_up{backend="redis"}"#),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_starts_while_redis_is_down_and_connects_when_it_comes() {
    let mut redis = TestRedis::start();
    redis.stop();
    let backend = TestUpstream::named().await;
    let gateway = TestGateway::start(&config(&redis, &backend, "late:"));
    assert_eq!(status(&gateway, "/closed").await, 503);
    redis.start_again();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&gateway, "/closed").await != 200 {
        assert!(Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
