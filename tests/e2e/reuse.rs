//! `requests_per_instance`: the explicit opt-in to reuse a plugin's instances. An instance
//! serves up to that many requests of one use, carrying its memory from one to the next,
//! then a fresh one takes over; a failed call discards its instance; instances are kept
//! per use (role and config); a filter done after `on-request` is kept too, and a
//! response-only one reuses as well; authorizers and handlers reuse too; a reload drops
//! the idle instances. The counts come from the probe filter's in-memory counter and from
//! `/plugins` and `/metrics`.

use crate::guests::guests;
use crate::harness::{TestGateway, TestUpstream, client};
use crate::ops::sample;
use crate::plugin_ops::{TOKEN, metrics, plugin};
use crate::plugins::start;

/// A route file with the probe filter (`requests_per_instance = reuse`) on `/one` and
/// `/two` with different configs, the probe authorizer uncached on `/authorized`, and the
/// hello handler on `/users`, all three plugins reusing instances alike.
fn config(upstream: &TestUpstream, reuse: u32) -> String {
    let g = guests();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
admin_token = "{TOKEN}"
# One thread (a current-thread runtime): plugins run on the thread that serves.
workers = 1

[plugins.probe]
path = "{probe}"
requests_per_instance = {reuse}

[plugins.authz]
path = "{authorizer}"
requests_per_instance = {reuse}

[plugins.hello]
path = "{hello}"
requests_per_instance = {reuse}

[authorizers.uncached]
type = "plugin"
plugin = "authz"
identity = ["header:x-token"]
cache_ttl = "0s"

[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/one"
upstream = "backend"
filters = [{{ plugin = "probe", config = {{ name = "a" }} }}]

[[routes]]
path = "/two"
upstream = "backend"
filters = [{{ plugin = "probe", config = {{ name = "b" }} }}]

[[routes]]
path = "/three"
upstream = "backend"
filters = [{{ plugin = "probe", config = {{ name = "c", mode = "request-only" }} }}]

[[routes]]
path = "/four"
upstream = "backend"
filters = [{{ plugin = "probe", phases = ["response"], config = {{ name = "d" }} }}]

[[routes]]
path = "/authorized"
upstream = "backend"
authorizer = "uncached"

[[routes]]
path = "/users"
handler = {{ plugin = "hello" }}
"#,
        probe = g.probe_filter.display(),
        authorizer = g.probe_authorizer.display(),
        hello = g.hello.display(),
        upstream = upstream.url(),
    )
}

/// `GET path` with the probe's tag; returns the status and the probe's `x-count-NAME`.
async fn get(gateway: &TestGateway, path: &str, name: &str, tag: &str) -> (u16, Option<String>) {
    let response = client()
        .get(gateway.url(path))
        .header("x-tag", tag)
        .send()
        .await
        .expect("get");
    let status = response.status().as_u16();
    let headers = response.headers();
    if status == 200 {
        // The request's own calls still share one instance.
        assert_eq!(headers[format!("x-saw-{name}").as_str()], tag);
    }
    let count = headers
        .get(format!("x-count-{name}").as_str())
        .map(|v| v.to_str().expect("ascii").to_owned());
    (status, count)
}

#[tokio::test]
async fn an_instance_serves_requests_per_instance_requests_then_a_fresh_one_takes_over() {
    let upstream = TestUpstream::echo().await;
    let gateway = start(&config(&upstream, 3));
    let mut counts = Vec::new();
    for n in 0..7 {
        let (status, count) = get(&gateway, "/one", "a", &format!("tag-{n}")).await;
        assert_eq!(status, 200);
        counts.push(count.expect("x-count-a"));
    }
    // The in-memory counter carries over within an instance (the price of reuse), and
    // starts again in the next instance after three requests.
    assert_eq!(counts, ["1", "2", "3", "1", "2", "3", "1"]);

    let probe = plugin(&gateway, "probe").await;
    assert_eq!(probe["requests_per_instance"], 3);
    assert_eq!(probe["instances_created"], 3);
    assert_eq!(
        probe["idle"], 1,
        "the third instance has requests left: {probe}"
    );
    assert_eq!(probe["calls"]["on-request"], 7);
    let text = metrics(&gateway).await;
    assert_eq!(
        sample(
            &text,
            r#"weir_plugin_instances_created_total{plugin="probe"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, r#"weir_plugin_instances_idle{plugin="probe"}"#),
        Some(1.0)
    );
}

/// Three `GET path`s through to the echo upstream: each response's headers and the
/// request headers the upstream saw.
async fn three_gets(
    gateway: &TestGateway,
    path: &str,
) -> Vec<(reqwest::header::HeaderMap, serde_json::Value)> {
    let mut seen = Vec::new();
    for _ in 0..3 {
        let response = client().get(gateway.url(path)).send().await.expect("get");
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        let echo: serde_json::Value = response.json().await.expect("json");
        seen.push((headers, echo["headers"].clone()));
    }
    seen
}

#[tokio::test]
async fn a_filter_done_after_on_request_goes_back_to_the_idle_list() {
    let upstream = TestUpstream::echo().await;
    let gateway = start(&config(&upstream, 2));
    let mut counts = Vec::new();
    for (headers, upstream_saw) in three_gets(&gateway, "/three").await {
        assert!(!headers.contains_key("x-chain-out"));
        counts.push(upstream_saw["x-requests-c"].as_str().map(str::to_owned));
    }
    // `continue-without-response` ends the instance's request after one call; it is kept
    // for the next request all the same.
    assert_eq!(
        counts,
        [Some("1".into()), Some("2".into()), Some("1".into())]
    );
    let probe = plugin(&gateway, "probe").await;
    assert_eq!(probe["calls"]["on-request"], 3);
    assert_eq!(probe["calls"]["on-response"], 0);
    assert_eq!(probe["instances_created"], 2);
}

#[tokio::test]
async fn a_response_only_filter_reuses_its_instances_too() {
    let upstream = TestUpstream::echo().await;
    let gateway = start(&config(&upstream, 2));
    let counts: Vec<_> = three_gets(&gateway, "/four")
        .await
        .into_iter()
        .map(|(headers, _)| {
            let count = headers.get("x-count-d");
            count.map(|v| v.to_str().expect("ascii").to_owned())
        })
        .collect();
    assert_eq!(
        counts,
        [Some("1".into()), Some("2".into()), Some("1".into())]
    );
    let probe = plugin(&gateway, "probe").await;
    assert_eq!(probe["calls"]["on-request"], 0);
    assert_eq!(probe["calls"]["on-response"], 3);
    assert_eq!(probe["instances_created"], 2);
}

#[tokio::test]
async fn a_reload_drops_the_idle_instances_of_the_plugins_it_keeps() {
    let upstream = TestUpstream::echo().await;
    let gateway = start(&config(&upstream, 100));
    for expected in ["1", "2"] {
        let (status, count) = get(&gateway, "/one", "a", "x").await;
        assert_eq!((status, count.as_deref()), (200, Some(expected)));
    }
    assert_eq!(plugin(&gateway, "probe").await["idle"], 1);

    // The same file again: every plugin is kept as it was loaded ...
    let reload = gateway.reload(Some(TOKEN)).await;
    assert_eq!(reload.status(), 200);
    let probe = plugin(&gateway, "probe").await;
    assert_eq!(probe["idle"], 0, "{probe}");
    // ... but the next request gets a new instance, bound to the new config.
    let (status, count) = get(&gateway, "/one", "a", "y").await;
    assert_eq!((status, count.as_deref()), (200, Some("1")));
    assert_eq!(plugin(&gateway, "probe").await["instances_created"], 2);
}

#[tokio::test]
async fn a_failed_call_discards_the_instance_it_ran_in() {
    let upstream = TestUpstream::echo().await;
    let gateway = start(&config(&upstream, 100));
    assert_eq!(
        get(&gateway, "/one", "a", "x").await.1.as_deref(),
        Some("1")
    );
    assert_eq!(
        get(&gateway, "/one", "a", "y").await.1.as_deref(),
        Some("2")
    );
    let trapped = client()
        .get(gateway.url("/one"))
        .header("x-probe-trap", "1")
        .send()
        .await
        .expect("get");
    assert_eq!(trapped.status(), 500);
    // The instance that trapped is gone: the next request starts from a fresh one.
    assert_eq!(
        get(&gateway, "/one", "a", "z").await.1.as_deref(),
        Some("1")
    );
    assert_eq!(plugin(&gateway, "probe").await["instances_created"], 2);
}

#[tokio::test]
async fn instances_are_kept_per_use() {
    let upstream = TestUpstream::echo().await;
    let gateway = start(&config(&upstream, 100));
    // `/one` and `/two` use the same plugin with different configs: each use has its own
    // instance, so neither counter sees the other's requests.
    assert_eq!(
        get(&gateway, "/one", "a", "1").await.1.as_deref(),
        Some("1")
    );
    assert_eq!(
        get(&gateway, "/two", "b", "2").await.1.as_deref(),
        Some("1")
    );
    assert_eq!(
        get(&gateway, "/one", "a", "3").await.1.as_deref(),
        Some("2")
    );
    assert_eq!(
        get(&gateway, "/two", "b", "4").await.1.as_deref(),
        Some("2")
    );
    let probe = plugin(&gateway, "probe").await;
    assert_eq!(probe["instances_created"], 2);
    assert_eq!(probe["idle"], 2);
}

#[tokio::test]
async fn authorizers_and_handlers_reuse_their_instances_too() {
    let upstream = TestUpstream::echo().await;
    let gateway = start(&config(&upstream, 2));
    for _ in 0..4 {
        let response = client()
            .get(gateway.url("/authorized"))
            .header("x-token", "allow-someone")
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 200);
        let denied = client()
            .get(gateway.url("/authorized"))
            .header("x-token", "deny")
            .send()
            .await
            .expect("get");
        assert_eq!(denied.status(), 403, "a deny is a successful call too");
        let users = client()
            .get(gateway.url("/users"))
            .send()
            .await
            .expect("get");
        assert_eq!(users.status(), 200);
    }
    // 8 `authorize` calls in 4 instances, 4 `handle` calls in 2.
    let authz = plugin(&gateway, "authz").await;
    assert_eq!(authz["calls"]["authorize"], 8);
    assert_eq!(authz["instances_created"], 4);
    let hello = plugin(&gateway, "hello").await;
    assert_eq!(hello["calls"]["handle"], 4);
    assert_eq!(hello["instances_created"], 2);
}

#[tokio::test]
async fn without_the_opt_in_every_request_gets_a_fresh_instance() {
    let upstream = TestUpstream::echo().await;
    let gateway = start(&config(&upstream, 1));
    for n in 0..3 {
        assert_eq!(
            get(&gateway, "/one", "a", &n.to_string())
                .await
                .1
                .as_deref(),
            Some("1")
        );
    }
    let probe = plugin(&gateway, "probe").await;
    assert_eq!(probe["requests_per_instance"], 1);
    assert_eq!(probe["instances_created"], 3);
    assert_eq!(probe["idle"], 0);
}
