//! The response cache end to end: hits skip the backend, key parts vary entries, TTLs
//! expire, errors / `POST` / `no-store` / `private` are not stored, the `Authorization`
//! rule, invalidation modes, request coalescing, the byte bounds, the admin purge, and
//! the cache's metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use crate::harness::{TestGateway, TestUpstream, client};
use crate::ops::{metrics, sample};

/// A backend whose answer depends on the path, numbered by how many requests it saw:
/// `/error` → 500, `/no-store`, `/private`, `/public`, `/max-age-1` set `Cache-Control`,
/// `/slow` waits 300 ms, `/big/N` answers N bytes; anything else 200 `n=COUNT`.
async fn backend() -> TestUpstream {
    let count = Arc::new(AtomicUsize::new(0));
    TestUpstream::start(move |req, _| {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let path = req.uri().path().to_owned();
            if path == "/slow" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let body = match path.strip_prefix("/big/") {
                Some(len) => "x".repeat(len.parse().unwrap_or(0)),
                None => format!("n={n}"),
            };
            let mut response = http::Response::new(Full::new(Bytes::from(body)));
            let cache_control = match path.as_str() {
                "/no-store" => Some("no-store"),
                "/private" => Some("private, max-age=60"),
                "/public" => Some("public, max-age=60"),
                "/max-age-1" => Some("max-age=1"),
                _ => None,
            };
            if let Some(value) = cache_control {
                response
                    .headers_mut()
                    .insert("cache-control", http::HeaderValue::from_static(value));
            }
            if path == "/error" {
                *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            }
            response
        }
    })
    .await
}

fn config(backend: &TestUpstream, extra: &str, cache: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
{extra}

[upstreams.app]
targets = ["{}"]

[[routes]]
name = "cached"
path = "/{{path+}}"
cache = {cache}
upstream = "app"
"#,
        backend.url()
    )
}

struct Answer {
    status: u16,
    x_cache: Option<String>,
    body: String,
}

async fn get(gateway: &TestGateway, path: &str, headers: &[(&str, &str)]) -> Answer {
    send(gateway, reqwest::Method::GET, path, headers).await
}

async fn send(
    gateway: &TestGateway,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = client().request(method, gateway.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("send");
    Answer {
        status: response.status().as_u16(),
        x_cache: response
            .headers()
            .get("x-cache")
            .map(|v| v.to_str().expect("ascii").to_owned()),
        body: response.text().await.expect("body"),
    }
}

#[tokio::test]
async fn a_hit_skips_the_backend_and_says_so() {
    let backend = backend().await;
    let gateway = TestGateway::start(&config(&backend, "", r#"{ ttl = "60s" }"#));
    let first = get(&gateway, "/users/1", &[]).await;
    assert_eq!(first.x_cache.as_deref(), Some("miss"));
    assert_eq!(first.body, "n=1");
    let response = client()
        .get(gateway.url("/users/1"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["x-cache"], "hit");
    assert!(response.headers().contains_key("age"));
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.text().await.expect("body"), "n=1");
    assert_eq!(backend.count(), 1);
    // The access log says which was which.
    let lines = gateway.access_log(2).await;
    let results: Vec<&str> = lines
        .iter()
        .map(|l| l["cache"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(results, ["miss", "hit"]);

    // HEAD has its own entry and no body.
    let head = send(&gateway, reqwest::Method::HEAD, "/users/1", &[]).await;
    assert_eq!((head.status, head.x_cache.as_deref()), (200, Some("miss")));
    let head = send(&gateway, reqwest::Method::HEAD, "/users/1", &[]).await;
    assert_eq!(
        (head.x_cache.as_deref(), head.body.as_str()),
        (Some("hit"), "")
    );
}

#[tokio::test]
async fn only_the_listed_key_parts_vary_the_entry() {
    let backend = backend().await;
    let gateway = TestGateway::start(&config(
        &backend,
        "",
        r#"{ key = ["query:page", "header:accept"] }"#,
    ));
    let page1 = get(&gateway, "/list?page=1", &[]).await.body;
    assert_eq!(get(&gateway, "/list?page=1&sort=x", &[]).await.body, page1);
    assert_eq!(get(&gateway, "/list?sort=y&page=1", &[]).await.body, page1);
    let page2 = get(&gateway, "/list?page=2", &[]).await.body;
    assert_ne!(page2, page1);
    let json = get(&gateway, "/list?page=1", &[("accept", "application/json")]).await;
    assert_eq!(json.x_cache.as_deref(), Some("miss"));
    assert_ne!(json.body, page1);
    assert_eq!(
        get(&gateway, "/list?page=1", &[("accept", "application/json")])
            .await
            .body,
        json.body
    );
    // The canonical path is the key: another spelling of the same path hits.
    assert_eq!(get(&gateway, "//list?page=1", &[]).await.body, page1);
    assert_eq!(get(&gateway, "/x/../list?page=1", &[]).await.body, page1);
    assert_eq!(backend.count(), 3);
}

#[tokio::test]
async fn entries_expire_after_the_ttl_and_upstream_max_age_caps_it() {
    let backend = backend().await;
    let gateway = TestGateway::start(&config(&backend, "", r#"{ ttl = "1s" }"#));
    assert_eq!(
        get(&gateway, "/t", &[]).await.x_cache.as_deref(),
        Some("miss")
    );
    assert_eq!(
        get(&gateway, "/t", &[]).await.x_cache.as_deref(),
        Some("hit")
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        get(&gateway, "/t", &[]).await.x_cache.as_deref(),
        Some("miss")
    );

    let capped = TestGateway::start(&config(&backend, "", r#"{ ttl = "60s" }"#));
    assert_eq!(
        get(&capped, "/max-age-1", &[]).await.x_cache.as_deref(),
        Some("miss")
    );
    assert_eq!(
        get(&capped, "/max-age-1", &[]).await.x_cache.as_deref(),
        Some("hit")
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        get(&capped, "/max-age-1", &[]).await.x_cache.as_deref(),
        Some("miss")
    );
}

#[tokio::test]
async fn errors_post_no_store_and_private_are_not_stored() {
    let backend = backend().await;
    let gateway = TestGateway::start(&config(&backend, "", "{}"));
    for path in ["/error", "/no-store", "/private"] {
        let first = get(&gateway, path, &[]).await;
        let second = get(&gateway, path, &[]).await;
        assert_eq!(second.x_cache.as_deref(), Some("miss"), "{path}");
        assert_ne!(first.body, second.body, "{path}");
    }
    let post1 = send(&gateway, reqwest::Method::POST, "/p", &[]).await;
    let post2 = send(&gateway, reqwest::Method::POST, "/p", &[]).await;
    assert_ne!(post1.body, post2.body);
    assert_eq!(post2.x_cache, None);
    assert_eq!(backend.count(), 8);
}

#[tokio::test]
async fn authorization_is_served_only_from_public_or_identity_keyed_entries() {
    let backend = backend().await;
    let gateway = TestGateway::start(&config(&backend, "", "{}"));
    let auth = [("authorization", "Bearer secret")];

    // An anonymous entry is not served to an authorized request, and the authorized
    // response is not stored for anyone.
    let anonymous = get(&gateway, "/doc", &[]).await;
    let authorized = get(&gateway, "/doc", &auth).await;
    assert_eq!(authorized.x_cache.as_deref(), Some("miss"));
    assert_ne!(authorized.body, anonymous.body);
    assert_eq!(
        get(&gateway, "/doc", &auth).await.x_cache.as_deref(),
        Some("miss")
    );
    assert_eq!(get(&gateway, "/doc", &[]).await.body, anonymous.body);

    // An upstream answer marked `public` is shared, authorized or not.
    let public = get(&gateway, "/public", &auth).await;
    assert_eq!(public.x_cache.as_deref(), Some("miss"));
    let again = get(&gateway, "/public", &auth).await;
    assert_eq!(
        (again.x_cache.as_deref(), again.body),
        (Some("hit"), public.body.clone())
    );
    assert_eq!(get(&gateway, "/public", &[]).await.body, public.body);
}

#[tokio::test]
async fn max_age_zero_refreshes_only_when_the_route_allows() {
    let backend = backend().await;
    let refresh = [("cache-control", "max-age=0")];
    for (invalidate, refreshed) in [("anyone", true), ("never", false), ("authorized", false)] {
        let gateway = TestGateway::start(&config(
            &backend,
            "",
            &format!(r#"{{ invalidate = "{invalidate}" }}"#),
        ));
        let first = get(&gateway, "/r", &[]).await.body;
        let refresh_answer = get(&gateway, "/r", &refresh).await;
        let after = get(&gateway, "/r", &[]).await;
        assert_eq!(after.x_cache.as_deref(), Some("hit"), "{invalidate}");
        if refreshed {
            assert_eq!(
                refresh_answer.x_cache.as_deref(),
                Some("miss"),
                "{invalidate}"
            );
            assert_ne!(refresh_answer.body, first, "{invalidate}");
            assert_eq!(
                after.body, refresh_answer.body,
                "{invalidate}: the entry was replaced"
            );
        } else {
            // "authorized" with no authorizer on the route: nobody passed it.
            assert_eq!(
                refresh_answer.x_cache.as_deref(),
                Some("hit"),
                "{invalidate}"
            );
            assert_eq!(after.body, first, "{invalidate}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_make_one_backend_request() {
    let backend = backend().await;
    let gateway = Arc::new(TestGateway::start(&config(&backend, "", "{}")));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let gateway = gateway.clone();
        tasks.push(tokio::spawn(
            async move { get(&gateway, "/slow", &[]).await },
        ));
    }
    let mut bodies = Vec::new();
    for task in tasks {
        let answer = task.await.expect("task");
        assert_eq!(answer.status, 200);
        bodies.push(answer.body);
    }
    assert_eq!(
        backend.count(),
        1,
        "20 concurrent misses, one backend request"
    );
    assert!(bodies.iter().all(|b| b == &bodies[0]));
}

#[tokio::test]
async fn the_cache_stays_within_its_byte_bound_and_per_entry_limit() {
    let backend = backend().await;
    let gateway = TestGateway::start(&config(
        &backend,
        "[cache]\nmax_bytes = \"5KiB\"\nmax_entries = 100",
        r#"{ max_entry = "1500" }"#,
    ));
    // Five entries of about 1100 bytes (body, head, key) into 5 KiB: the oldest goes.
    for i in 1..=5 {
        assert_eq!(
            get(&gateway, &format!("/big/100{i}"), &[])
                .await
                .x_cache
                .as_deref(),
            Some("miss")
        );
    }
    let state: serde_json::Value = client()
        .get(gateway.admin_url("/state"))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    let bytes = state["local_cache"]["bytes"].as_u64().expect("bytes");
    assert!((4000..=5120).contains(&bytes), "cache holds {bytes} bytes");
    assert_eq!(state["local_cache"]["entries"], 4);
    assert_eq!(
        get(&gateway, "/big/1005", &[]).await.x_cache.as_deref(),
        Some("hit")
    );
    assert_eq!(
        get(&gateway, "/big/1001", &[]).await.x_cache.as_deref(),
        Some("miss")
    );

    // Over the per-entry limit: passed through whole, never stored.
    let big = get(&gateway, "/big/2000", &[]).await;
    assert_eq!(big.body.len(), 2000);
    let again = get(&gateway, "/big/2000", &[]).await;
    assert_eq!(
        (again.x_cache.as_deref(), again.body.len()),
        (Some("miss"), 2000)
    );
}

#[tokio::test]
async fn the_admin_endpoint_purges_all_or_one_route() {
    let backend = backend().await;
    let gateway = TestGateway::start(&config(&backend, "", "{}"));
    get(&gateway, "/a", &[]).await;
    get(&gateway, "/b", &[]).await;
    assert_eq!(
        get(&gateway, "/a", &[]).await.x_cache.as_deref(),
        Some("hit")
    );

    let purge = |query: &'static str| {
        let url = gateway.admin_url(&format!("/cache/purge{query}"));
        async move { client().post(url).send().await.expect("purge") }
    };
    let unknown = purge("?route=nope").await;
    assert_eq!(unknown.status(), 404);
    let one: serde_json::Value = purge("?route=cached").await.json().await.expect("json");
    assert_eq!(one["purged"], 2);
    assert_eq!(
        get(&gateway, "/a", &[]).await.x_cache.as_deref(),
        Some("miss")
    );
    let all: serde_json::Value = purge("").await.json().await.expect("json");
    assert_eq!(all["purged"], 1);
    assert_eq!(
        get(&gateway, "/a", &[]).await.x_cache.as_deref(),
        Some("miss")
    );
    let wrong_method = client()
        .get(gateway.admin_url("/cache/purge"))
        .send()
        .await
        .expect("get");
    assert_eq!(wrong_method.status(), 405);
}

#[tokio::test]
async fn metrics_count_lookups_stores_and_evictions() {
    let backend = backend().await;
    let gateway = TestGateway::start(&config(
        &backend,
        "[cache]\nmax_entries = 2",
        r#"{ ttl = "60s" }"#,
    ));
    let x_cache = |path: &'static str| {
        let gateway = &gateway;
        async move { get(gateway, path, &[]).await.x_cache.unwrap_or_default() }
    };
    assert_eq!(x_cache("/a").await, "miss");
    assert_eq!(x_cache("/a").await, "hit");
    assert_eq!(x_cache("/b").await, "miss");
    // A 500 is looked up (a miss) but not stored.
    assert_eq!(x_cache("/error").await, "miss");
    // Two entries at most: `/c` pushes out the least recently used, `/a`; then
    // `/max-age-1` (stored for 1 s) pushes out `/b`.
    assert_eq!(x_cache("/c").await, "miss");
    assert_eq!(x_cache("/max-age-1").await, "miss");
    // A POST is not a lookup.
    send(&gateway, reqwest::Method::POST, "/a", &[]).await;
    let text = metrics(&gateway).await;
    let series = |name: &str| sample(&text, name).unwrap_or(-1.0);
    assert_eq!(
        series(r#"weir_cache_lookups_total{route="cached",result="hit"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        series(r#"weir_cache_lookups_total{route="cached",result="miss"}"#),
        5.0,
        "{text}"
    );
    assert_eq!(
        series(r#"weir_cache_stores_total{route="cached"}"#),
        4.0,
        "{text}"
    );
    assert_eq!(
        series(r#"weir_cache_local_evictions_total{reason="lru"}"#),
        2.0,
        "{text}"
    );
    assert_eq!(
        series(r#"weir_cache_local_evictions_total{reason="expired"}"#),
        0.0,
        "{text}"
    );
    assert_eq!(series("weir_cache_local_entries"), 2.0, "{text}");

    // Expired: found stale by the next lookup, removed, fetched and stored again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(x_cache("/max-age-1").await, "miss");
    let text = metrics(&gateway).await;
    assert_eq!(
        sample(
            &text,
            r#"weir_cache_local_evictions_total{reason="expired"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"weir_cache_lookups_total{route="cached",result="miss"}"#
        ),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"weir_cache_stores_total{route="cached"}"#),
        Some(5.0)
    );
    assert_eq!(sample(&text, "weir_cache_local_entries"), Some(2.0));
    let bytes = sample(&text, "weir_cache_local_bytes").expect("bytes");
    let state: serde_json::Value = client()
        .get(gateway.admin_url("/state"))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    assert_eq!(state["local_cache"]["bytes"].as_f64(), Some(bytes));
}
