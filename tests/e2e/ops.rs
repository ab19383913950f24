//! Operations: metrics, the admin API and its token, reloads (API, SIGHUP, `--watch`)
//! under load and with bad files, the access log and W3C trace propagation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::harness::{TestGateway, TestUpstream, client};

fn base(extra_server: &str, routes: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
{extra_server}

{routes}
"#
    )
}

const ONE_ROUTE: &str = r#"
[[routes]]
name = "hello"
path = "/hello"
mock = { status = 200, body = "hello" }
"#;

const TWO_ROUTES: &str = r#"
[[routes]]
name = "hello"
path = "/hello"
mock = { status = 200, body = "hello again" }

[[routes]]
name = "new"
path = "/new"
mock = { status = 200, body = "new" }
"#;

/// The value of the first exposition line that starts with `series` (labels included).
/// (Also used by the cache and Redis tests.)
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `GET /metrics` on the admin listener.
pub(crate) async fn metrics(gateway: &TestGateway) -> String {
    client()
        .get(gateway.admin_url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body")
}

#[tokio::test]
async fn metrics_move_with_traffic_and_label_by_route_and_status() {
    let gateway = TestGateway::start(&base("", ONE_ROUTE));
    let http = client();
    for _ in 0..3 {
        let r = http.get(gateway.url("/hello")).send().await.expect("send");
        assert_eq!(r.status(), 200);
        r.text().await.expect("body");
    }
    let r = http
        .get(gateway.url("/missing"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    r.text().await.expect("body");

    // The log phase runs once the response has been sent; give it a moment.
    let mut text = String::new();
    for _ in 0..50 {
        text = metrics(&gateway).await;
        if sample(
            &text,
            r#"weir_requests_total{route="",method="GET",status="4xx"}"#,
        ) == Some(1.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sample(
            &text,
            r#"weir_requests_total{route="hello",method="GET",status="2xx"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"weir_refused_requests_total{route="",phase="route",status="404",reason="no_route"}"#
        ),
        Some(1.0),
        "{text}"
    );
    // A histogram: its count matches and its +Inf bucket holds every observation.
    assert_eq!(
        sample(
            &text,
            r#"weir_request_duration_seconds_count{route="hello",phase="total"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"weir_request_duration_seconds_bucket{le="+Inf",route="hello",phase="total"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE weir_request_duration_seconds histogram"),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"weir_config_reloads_total{result="success"}"#),
        Some(1.0)
    );
    assert!(
        sample(&text, r#"weir_open_connections{listener="http"}"#).is_some(),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics exposition ends with # EOF"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_metrics_count_attempts_by_target_and_outcome() {
    let upstream = TestUpstream::named().await;
    let gateway = TestGateway::start(&base(
        "",
        &format!(
            r#"
[upstreams.app]
targets = ["{}"]

[[routes]]
name = "app"
path = "/app"
upstream = "app"
"#,
            upstream.url()
        ),
    ));
    let http = client();
    for _ in 0..2 {
        http.get(gateway.url("/app"))
            .send()
            .await
            .expect("send")
            .text()
            .await
            .expect("body");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = metrics(&gateway).await;
    let target = upstream.url();
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"weir_upstream_attempts_total{{upstream="app",target="{target}",outcome="ok"}}"#
            )
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"weir_request_duration_seconds_count{route="app",phase="upstream"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"weir_upstream_target_healthy{{upstream="app",target="{target}"}}"#)
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn admin_token_guards_everything_but_health() {
    let gateway = TestGateway::start(&base(r#"admin_token = "s3cret-token""#, ONE_ROUTE));
    let http = client();
    let r = http
        .get(gateway.admin_url("/metrics"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["message"], "admin token required");

    let r = http
        .get(gateway.admin_url("/metrics"))
        .bearer_auth("wrong-token!")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let r = http
        .post(gateway.admin_url("/reload"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);

    let r = http
        .get(gateway.admin_url("/metrics"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    for open in ["/healthz", "/readyz"] {
        let r = http
            .get(gateway.admin_url(open))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200, "{open}");
    }

    // The effective config never shows the token.
    let config: serde_json::Value = http
        .get(gateway.admin_url("/config"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(config["server"]["admin_token"], "<redacted>");
    assert_eq!(config["routes"][0]["name"], "hello");
    assert_eq!(config["server"]["max_connections"], 10000);
    assert!(!config.to_string().contains("s3cret-token"));
}

#[tokio::test]
async fn admin_endpoints_are_not_on_the_public_listener() {
    let gateway = TestGateway::start(&base("", ONE_ROUTE));
    let http = client();
    for path in ["/metrics", "/reload", "/config", "/healthz"] {
        let r = http.get(gateway.url(path)).send().await.expect("send");
        assert_eq!(r.status(), 404, "{path}");
        let r = http.post(gateway.url(path)).send().await.expect("send");
        assert_eq!(r.status(), 404, "{path}");
    }
}

const CACHED_ROUTE: &str = r#"
[[routes]]
name = "cached"
path = "/cached"
cache = { ttl = "60s" }
mock = { status = 200, body = "cached" }
"#;

async fn x_cache(gateway: &TestGateway) -> String {
    let r = client()
        .get(gateway.url("/cached"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    r.headers()["x-cache"].to_str().expect("ascii").to_owned()
}

#[tokio::test]
async fn cache_and_state_metrics_count_on_across_a_reload_that_replaces_the_state() {
    let gateway = TestGateway::start(&base("", CACHED_ROUTE));
    let text = metrics(&gateway).await;
    assert_eq!(
        sample(&text, r#"weir_state_backend_up{backend="memory"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "weir_cache_local_entries"), Some(0.0));
    assert!(
        !text.contains("weir_cache_lookups_total"),
        "no lookup yet: {text}"
    );

    assert_eq!(x_cache(&gateway).await, "miss");
    assert_eq!(x_cache(&gateway).await, "hit");
    // Lookups and stores are counted before the response leaves: no wait needed.
    let text = metrics(&gateway).await;
    let lookups = |text: &str, result: &str| {
        sample(
            text,
            &format!(r#"weir_cache_lookups_total{{route="cached",result="{result}"}}"#),
        )
    };
    assert_eq!(lookups(&text, "hit"), Some(1.0), "{text}");
    assert_eq!(lookups(&text, "miss"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, r#"weir_cache_stores_total{route="cached"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&text, "weir_cache_local_entries"), Some(1.0));
    assert!(sample(&text, "weir_cache_local_bytes").is_some_and(|b| b > 6.0));
    assert!(text.contains("# TYPE weir_cache_lookups counter"), "{text}");
    assert!(
        text.contains("# TYPE weir_cache_local_bytes gauge"),
        "{text}"
    );

    // One more hit, not scraped before the reload below replaces the state that counted it.
    assert_eq!(x_cache(&gateway).await, "hit");
    // A new `[cache]` bound: the reload builds a fresh state (and an empty cache).
    let bounded = format!("[cache]\nmax_entries = 50\n{CACHED_ROUTE}");
    rewrite(&gateway, &pinned(&gateway, &bounded));
    let r = gateway.reload(None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(x_cache(&gateway).await, "miss");
    assert_eq!(x_cache(&gateway).await, "hit");
    let text = metrics(&gateway).await;
    assert_eq!(
        lookups(&text, "hit"),
        Some(3.0),
        "the old state's last hit is kept: {text}"
    );
    assert_eq!(lookups(&text, "miss"), Some(2.0), "{text}");
    assert_eq!(
        sample(&text, r#"weir_cache_stores_total{route="cached"}"#),
        Some(2.0)
    );
    assert_eq!(sample(&text, "weir_cache_local_entries"), Some(1.0));
    // `/state` still describes the running state.
    let state: serde_json::Value = client()
        .get(gateway.admin_url("/state"))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    assert_eq!(state["backend"], "memory");
    assert_eq!(state["local_cache"]["entries"], 1);
}

fn rewrite(gateway: &TestGateway, toml: &str) {
    std::fs::write(&gateway.config_path, toml).expect("rewrite config");
}

/// The listen addresses the gateway bound, so a rewritten file keeps them.
fn pinned(gateway: &TestGateway, routes: &str) -> String {
    format!(
        "[server]\nlisten = \"{}\"\nadmin = \"{}\"\n\n{routes}",
        gateway.http.expect("http"),
        gateway.admin.expect("admin")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_drops_nothing_and_applies_new_routes() {
    let gateway = TestGateway::start(&base("", ONE_ROUTE));
    rewrite(&gateway, &pinned(&gateway, ONE_ROUTE));
    let http = client();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (http, url, stop) = (http.clone(), gateway.url("/hello"), stop.clone());
        let (ok, failed) = (ok.clone(), failed.clone());
        loops.push(tokio::spawn(async move {
            // Bounded: at most 20 000 requests per loop, and stops when told.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let good = match http.get(&url).send().await {
                    Ok(r) => r.status() == 200 && r.text().await.is_ok(),
                    Err(_) => false,
                };
                if good {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for round in 0..3 {
        let routes = if round % 2 == 0 {
            TWO_ROUTES
        } else {
            ONE_ROUTE
        };
        rewrite(&gateway, &pinned(&gateway, routes));
        let r = gateway.reload(None).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.expect("loop");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(ok.load(Ordering::Relaxed) > 50, "the load loop barely ran");

    // The last reload (round 2) installed TWO_ROUTES.
    let r = http.get(gateway.url("/new")).send().await.expect("send");
    assert_eq!(r.status(), 200);
    let r = http.get(gateway.url("/hello")).send().await.expect("send");
    assert_eq!(r.text().await.expect("body"), "hello again");
}

#[tokio::test]
async fn a_bad_reload_is_refused_with_its_errors_and_the_old_routes_keep_serving() {
    let gateway = TestGateway::start(&base("", ONE_ROUTE));
    let http = client();
    rewrite(
        &gateway,
        &pinned(
            &gateway,
            "[[routes]]\npath = \"/broken\"\nupstream = \"nowhere\"\n",
        ),
    );
    let r = gateway.reload(None).await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("json");
    let errors = body["errors"].as_array().expect("errors list");
    assert_eq!(errors.len(), 1, "{body}");
    assert!(
        errors[0]
            .as_str()
            .unwrap_or("")
            .contains("routes[0].upstream: unknown upstream \"nowhere\""),
        "{body}"
    );
    assert!(body["request_id"].is_string());

    // SIGHUP with the same bad file: refused too, and still serving.
    gateway.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = http.get(gateway.url("/hello")).send().await.expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "hello");
    let text = metrics(&gateway).await;
    assert_eq!(
        sample(&text, r#"weir_config_reloads_total{result="failure"}"#),
        Some(2.0),
        "{text}"
    );
    assert!(
        gateway.logs().iter().any(|l| l.contains("reload refused")),
        "the refusal is logged"
    );
}

#[tokio::test]
async fn a_reload_that_moves_a_listener_is_refused_by_name() {
    let gateway = TestGateway::start(&base("", ONE_ROUTE));
    let moved = format!(
        "[server]\nlisten = \"127.0.0.1:1\"\nadmin = \"{}\"\n\n{ONE_ROUTE}",
        gateway.admin.expect("admin")
    );
    rewrite(&gateway, &moved);
    let r = gateway.reload(None).await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap_or("")
            .starts_with("server.listen: changed from"),
        "{body}"
    );
}

#[tokio::test]
async fn sighup_reloads_the_route_file() {
    let gateway = TestGateway::start(&base("", ONE_ROUTE));
    rewrite(&gateway, &pinned(&gateway, TWO_ROUTES));
    gateway.signal("HUP");
    let http = client();
    let mut status = 0;
    for _ in 0..100 {
        status = http
            .get(gateway.url("/new"))
            .send()
            .await
            .expect("send")
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200, "the new route appeared after SIGHUP");
}

#[tokio::test]
async fn watch_reloads_when_the_file_changes() {
    let mut gateway = TestGateway::start_with_args(&base("", ONE_ROUTE), &["--watch"]);
    rewrite(&gateway, &pinned(&gateway, TWO_ROUTES));
    let http = client();
    let mut status = 0;
    // --watch checks every second.
    for _ in 0..60 {
        status = http
            .get(gateway.url("/new"))
            .send()
            .await
            .expect("send")
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the new route appeared after the file changed");
    gateway.signal("TERM");
    assert!(gateway.wait_exit(Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_carry_request_and_trace_ids_and_traceparent_reaches_upstream() {
    let upstream = TestUpstream::echo().await;
    let toml = base(
        "",
        &format!(
            r#"
[log]
access = "{{dir}}/access.log"

[upstreams.echo]
targets = ["{}"]

[[routes]]
name = "echo"
path = "/echo/{{rest+}}"
upstream = "echo"
"#,
            upstream.url()
        ),
    );
    let gateway = TestGateway::start(&toml);
    let http = client();
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = http
        .post(gateway.url("/echo/a/./b?x=1"))
        .header("x-request-id", "req-42")
        .header("traceparent", incoming)
        .header("tracestate", "vendor=1")
        .body("twelve bytes")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let echoed: serde_json::Value = r.json().await.expect("json");
    let sent = echoed["headers"]["traceparent"]
        .as_str()
        .expect("traceparent sent upstream");
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{sent}"
    );
    assert!(sent.ends_with("-01"), "{sent}");
    assert_ne!(sent, incoming, "the gateway's own span is the parent");
    assert_eq!(echoed["headers"]["tracestate"], "vendor=1");

    // No traceparent: a new trace is started and sent upstream.
    let r = http
        .get(gateway.url("/echo/fresh"))
        .send()
        .await
        .expect("send");
    let echoed: serde_json::Value = r.json().await.expect("json");
    let fresh = echoed["headers"]["traceparent"]
        .as_str()
        .expect("traceparent")
        .to_owned();
    assert_eq!(fresh.len(), 55, "{fresh}");

    let r = http
        .get(gateway.url("/nowhere"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    r.text().await.expect("body");

    let path = gateway.dir.path().join("access.log");
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("each line is JSON"))
            .collect();
        if lines.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lines.len(), 3, "{lines:?}");
    let first = &lines[0];
    assert_eq!(first["request_id"], "req-42");
    assert_eq!(first["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/echo/a/b");
    assert_eq!(first["route"], "echo");
    assert_eq!(first["status"], 200);
    assert_eq!(first["client"], "127.0.0.1");
    assert_eq!(first["upstream"], upstream.url());
    assert_eq!(first["bytes_in"], 12);
    assert!(first["bytes_out"].as_u64().unwrap_or(0) > 0);
    assert!(first["latency_ms"].as_f64().is_some());
    assert!(first["upstream_ms"].as_f64().is_some());
    assert!(first["time"].as_str().unwrap_or("").ends_with('Z'));
    assert_eq!(lines[1]["trace_id"], &fresh[3..35]);
    let missing = &lines[2];
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["route"], "");
    assert_eq!(missing["refused"], "no_route");
    assert_eq!(missing["request_id"].as_str().map(str::len), Some(32));
}

#[tokio::test]
async fn access_log_goes_to_stdout_by_default_and_can_be_switched_off() {
    let on = TestGateway::start(&base("", ONE_ROUTE));
    let off = TestGateway::start(&base("", &format!("[log]\naccess = \"off\"\n{ONE_ROUTE}")));
    for gateway in [&on, &off] {
        let r = client()
            .get(gateway.url("/hello"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        r.text().await.expect("body");
    }
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = on.stdout();
        if !lines.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line: serde_json::Value = serde_json::from_str(&lines[0]).expect("json line");
    assert_eq!(line["route"], "hello");
    // Same traffic, same wait: nothing from the gateway whose access log is off.
    assert!(off.stdout().is_empty(), "{:?}", off.stdout());
}
