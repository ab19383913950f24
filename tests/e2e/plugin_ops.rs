//! Operating plugins: their calls, failures by kind, call times and instances in flight in
//! `/metrics`, plugin authorizers' decision-cache lookups, the admin API's `/plugins`, and
//! counters that keep counting across a reload that keeps one plugin and replaces another.

use std::time::{Duration, Instant};

use crate::guests::{guests, sha256_hex};
use crate::harness::{TestGateway, TestUpstream, client};
use crate::ops::sample;
use crate::plugins::start;

pub const TOKEN: &str = "ops-token";

/// The route file: every test guest in its role. `admin` is the admin listener's address
/// (`127.0.0.1:0` at first), `hostile_timeout` the hostile plugin's `timeout`.
fn config(listen: &str, admin: &str, upstream: &TestUpstream, hostile_timeout: &str) -> String {
    let g = guests();
    format!(
        r#"
[server]
listen = "{listen}"
admin = "{admin}"
admin_token = "{TOKEN}"

[plugins.hello]
path = "{hello}"

[plugins.hostile]
path = "{hostile}"
limits = {{ timeout = "{hostile_timeout}", concurrency = 1 }}

[plugins.probe-filter]
path = "{filter}"

[plugins.probe]
path = "{authorizer}"

[authorizers.partners]
type = "plugin"
plugin = "probe"
identity = ["header:x-token"]
cache_ttl = "1m"

[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
name = "users"
path = "/users"
handler = {{ plugin = "hello" }}

[[routes]]
name = "filtered"
path = "/filtered"
upstream = "backend"
filters = [{{ plugin = "probe-filter" }}]

[[routes]]
name = "trapped"
path = "/trapped"
upstream = "backend"
filters = [{{ plugin = "probe-filter", config = {{ mode = "trap-request" }} }}]

[[routes]]
name = "private"
path = "/private"
upstream = "backend"
authorizer = "partners"

[[routes]]
name = "panic"
path = "/panic"
handler = {{ plugin = "hostile", config = {{ mode = "panic" }} }}

[[routes]]
name = "bad-status"
path = "/bad-status"
handler = {{ plugin = "hostile", config = {{ mode = "bad-status" }} }}

[[routes]]
name = "loop"
path = "/loop"
handler = {{ plugin = "hostile", config = {{ mode = "loop" }} }}

[[routes]]
name = "counter"
path = "/counter"
handler = {{ plugin = "hostile", config = {{ mode = "counter" }} }}
"#,
        hello = g.hello.display(),
        hostile = g.hostile.display(),
        filter = g.probe_filter.display(),
        authorizer = g.probe_authorizer.display(),
        upstream = upstream.url(),
    )
}

fn start_gateway(upstream: &TestUpstream, hostile_timeout: &str) -> TestGateway {
    start(&config(
        "127.0.0.1:0",
        "127.0.0.1:0",
        upstream,
        hostile_timeout,
    ))
}

/// `GET path` on the public listener (with `x-token` when given); the status.
async fn get(gateway: &TestGateway, path: &str, token: Option<&str>) -> u16 {
    let mut request = client().get(gateway.url(path));
    if let Some(token) = token {
        request = request.header("x-token", token);
    }
    request.send().await.expect("request").status().as_u16()
}

/// `GET path` on the admin listener with the admin token.
pub async fn admin(gateway: &TestGateway, path: &str) -> reqwest::Response {
    client()
        .get(gateway.admin_url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("admin request")
}

pub async fn metrics(gateway: &TestGateway) -> String {
    let response = admin(gateway, "/metrics").await;
    assert_eq!(response.status(), 200);
    response.text().await.expect("exposition")
}

/// The entry of `/plugins` named `name`.
pub async fn plugin(gateway: &TestGateway, name: &str) -> serde_json::Value {
    let list: serde_json::Value = admin(gateway, "/plugins").await.json().await.expect("json");
    list["plugins"]
        .as_array()
        .expect("plugins array")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin {name} in {list}"))
        .clone()
}

fn calls(plugin: &str, export: &str) -> String {
    format!(r#"weir_plugin_calls_total{{plugin="{plugin}",export="{export}"}}"#)
}

fn failures(plugin: &str, reason: &str) -> String {
    format!(r#"weir_plugin_failures_total{{plugin="{plugin}",reason="{reason}"}}"#)
}

fn call_time(plugin: &str, export: &str, part: &str) -> String {
    format!(r#"weir_plugin_call_duration_seconds_{part}{{plugin="{plugin}",export="{export}"}}"#)
}

fn decisions(result: &str) -> String {
    format!(r#"weir_authorizer_cache_lookups_total{{authorizer="partners",result="{result}"}}"#)
}

fn in_flight(plugin: &str) -> String {
    format!(r#"weir_plugin_instances_in_flight{{plugin="{plugin}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_calls_failures_times_and_decision_cache_show_in_metrics_and_plugins() {
    let upstream = TestUpstream::echo().await;
    let gateway = start_gateway(&upstream, "500ms");

    // Before any traffic, every series of a plugin's exports and failure reasons exists.
    let text = metrics(&gateway).await;
    for series in [
        calls("hello", "handle"),
        calls("probe-filter", "on-request"),
        calls("probe-filter", "on-response"),
        calls("probe", "authorize"),
        failures("hostile", "plugin_trap"),
        call_time("hostile", "handle", "count"),
        decisions("hit"),
        in_flight("hostile"),
    ] {
        assert_eq!(sample(&text, &series), Some(0.0), "{series} in {text}");
    }
    assert!(
        sample(&text, &calls("hello", "authorize")).is_none(),
        "no series for exports a plugin does not have: {text}"
    );
    assert!(text.contains("# TYPE weir_plugin_call_duration_seconds histogram"));

    assert_eq!(get(&gateway, "/users", None).await, 200);
    assert_eq!(get(&gateway, "/filtered", None).await, 200);
    assert!(get(&gateway, "/trapped", None).await >= 500);
    for _ in 0..3 {
        assert_eq!(get(&gateway, "/private", Some("allow-ada")).await, 200);
    }
    // An allow with an empty principal: the call ran, the host refuses its output.
    assert!(get(&gateway, "/private", Some("empty")).await >= 500);
    assert_eq!(get(&gateway, "/panic", None).await, 502);
    assert_eq!(get(&gateway, "/bad-status", None).await, 502);

    // An endless loop holds hostile's only instance until its deadline: it shows in
    // flight, and another call of hostile is refused as busy meanwhile.
    let looping = tokio::spawn(client().get(gateway.url("/loop")).send());
    let waiting = Instant::now();
    while sample(&metrics(&gateway).await, &in_flight("hostile")) != Some(1.0) {
        assert!(
            waiting.elapsed() < Duration::from_secs(5),
            "the loop never showed in flight"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&gateway, "/counter", None).await, 503);
    let timed_out = looping.await.expect("join").expect("loop response");
    assert_eq!(timed_out.status(), 504);

    // Counted before the responses left: no wait needed.
    let text = metrics(&gateway).await;
    let expect = |series: String, value: f64| {
        assert_eq!(sample(&text, &series), Some(value), "{series} in {text}");
    };
    expect(calls("hello", "handle"), 1.0);
    expect(call_time("hello", "handle", "count"), 1.0);
    expect(failures("hello", "plugin_trap"), 0.0);
    // The trapping filter never got to `on-response`; the other ran both.
    expect(calls("probe-filter", "on-request"), 2.0);
    expect(calls("probe-filter", "on-response"), 1.0);
    expect(failures("probe-filter", "plugin_trap"), 1.0);
    // Two decisions asked the plugin (one answer was refused); two came from the cache.
    expect(calls("probe", "authorize"), 2.0);
    expect(decisions("miss"), 2.0);
    expect(decisions("hit"), 2.0);
    expect(failures("probe", "plugin_bad_output"), 1.0);
    expect(call_time("probe", "authorize", "count"), 2.0);
    // panic, bad-status, loop and the refused call.
    expect(calls("hostile", "handle"), 4.0);
    expect(failures("hostile", "plugin_trap"), 1.0);
    expect(failures("hostile", "plugin_timeout"), 1.0);
    expect(failures("hostile", "plugin_busy"), 1.0);
    expect(failures("hostile", "plugin_memory"), 0.0);
    expect(in_flight("hostile"), 0.0);
    // A refused call got no instance and has no time; the loop ran to its deadline.
    expect(call_time("hostile", "handle", "count"), 3.0);
    let sum = sample(&text, &call_time("hostile", "handle", "sum")).expect("sum");
    assert!((0.5..5.0).contains(&sum), "{sum}");
    let bucket = |le: &str| {
        let series =
            format!(r#"weir_plugin_call_duration_seconds_bucket{{le="{le}",plugin="hostile""#);
        sample(&text, &series)
    };
    assert_eq!(bucket("+Inf"), Some(3.0), "{text}");
    assert!(
        bucket("0.25").is_some_and(|n| n <= 2.0),
        "the loop took 500 ms: {text}"
    );
    assert_eq!(bucket("5.0"), Some(3.0), "{text}");

    // `/plugins` describes each one, with the same counts.
    let hostile = plugin(&gateway, "hostile").await;
    assert_eq!(hostile["path"], guests().hostile.display().to_string());
    assert_eq!(hostile["sha256"], sha256_hex(&guests().hostile));
    let size = std::fs::metadata(&guests().hostile).expect("guest").len();
    assert_eq!(hostile["size"], size);
    assert_eq!(hostile["exports"], serde_json::json!(["handle"]));
    assert_eq!(hostile["can_play"], serde_json::json!(["handler"]));
    assert_eq!(hostile["used_as"], serde_json::json!(["handler"]));
    assert_eq!(
        hostile["routes"],
        serde_json::json!(["panic", "bad-status", "loop", "counter"])
    );
    assert_eq!(hostile["limits"]["timeout"], "500ms");
    assert_eq!(hostile["limits"]["concurrency"], 1);
    assert!(hostile["limits"]["memory"].as_u64().is_some_and(|m| m > 0));
    assert!(
        ["hit", "miss", "off"].contains(&hostile["compiled"].as_str().unwrap_or("")),
        "{hostile}"
    );
    assert_eq!(hostile["in_flight"], 0);
    assert_eq!(hostile["calls"], serde_json::json!({ "handle": 4 }));
    assert_eq!(hostile["failures"]["plugin_trap"], 1);
    assert_eq!(hostile["failures"]["plugin_busy"], 1);
    assert_eq!(hostile["failures"]["plugin_instantiate"], 0);
    assert_eq!(hostile["call_seconds"]["handle"]["count"], 3);

    let filter = plugin(&gateway, "probe-filter").await;
    assert_eq!(filter["can_play"], serde_json::json!(["filter"]));
    assert_eq!(filter["routes"], serde_json::json!(["filtered", "trapped"]));
    assert_eq!(
        filter["calls"],
        serde_json::json!({ "on-request": 2, "on-response": 1 })
    );
    let probe = plugin(&gateway, "probe").await;
    assert_eq!(probe["used_as"], serde_json::json!(["authorizer"]));
    assert_eq!(probe["authorizers"], serde_json::json!(["partners"]));
    assert_eq!(probe["routes"], serde_json::json!([]));

    // Behind the admin token like the rest.
    let refused = client()
        .get(gateway.admin_url("/plugins"))
        .send()
        .await
        .expect("plugins");
    assert_eq!(refused.status(), 401);
    let post = client()
        .post(gateway.admin_url("/plugins"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("plugins");
    assert_eq!(post.status(), 405);
}

#[tokio::test]
async fn plugin_and_decision_counters_never_go_back_across_a_reload() {
    let upstream = TestUpstream::echo().await;
    let gateway = start_gateway(&upstream, "1s");
    let traffic = async || {
        assert_eq!(get(&gateway, "/users", None).await, 200);
        assert_eq!(get(&gateway, "/counter", None).await, 200);
        assert_eq!(get(&gateway, "/private", Some("allow-ada")).await, 200);
    };
    traffic().await; // authorizer: a miss
    traffic().await; // a hit
    let text = metrics(&gateway).await;
    assert_eq!(sample(&text, &calls("hostile", "handle")), Some(2.0));
    // Counted, but not scraped before the reload.
    traffic().await; // a hit

    // hostile's limits change (a new load, counting from zero); hello and probe stay as
    // they were; the authorizer, and its decision cache, are built anew.
    let listen = gateway.http.expect("http").to_string();
    let admin_addr = gateway.admin.expect("admin").to_string();
    std::fs::write(
        &gateway.config_path,
        config(&listen, &admin_addr, &upstream, "2s"),
    )
    .expect("rewrite");
    let reloaded = gateway.reload(Some(TOKEN)).await;
    assert_eq!(reloaded.status(), 200);
    traffic().await; // a miss: the new cache is empty

    let text = metrics(&gateway).await;
    let expect = |series: String, value: f64| {
        assert_eq!(sample(&text, &series), Some(value), "{series} in {text}");
    };
    expect(calls("hello", "handle"), 4.0);
    expect(calls("hostile", "handle"), 4.0);
    expect(call_time("hostile", "handle", "count"), 4.0);
    expect(calls("probe", "authorize"), 2.0);
    expect(decisions("hit"), 2.0);
    expect(decisions("miss"), 2.0);

    // `/plugins` counts per loaded plugin: the kept one goes on, the new one starts over.
    let hello = plugin(&gateway, "hello").await;
    assert_eq!(hello["calls"]["handle"], 4);
    let hostile = plugin(&gateway, "hostile").await;
    assert_eq!(hostile["calls"]["handle"], 1);
    assert_eq!(hostile["limits"]["timeout"], "2s");
    let logs = gateway.logs().join("\n");
    assert!(logs.contains("plugin unchanged, kept as loaded"), "{logs}");
}
