//! Wasm plugins through the real gateway: the `handler` role with the first-party `hello`
//! plugin, hostile guests that must each get a bounded error within a bounded time while
//! the gateway keeps serving, fresh instances per request, the concurrency bound, and
//! components refused at load (wrong role, corrupt file, digest mismatch).
//!
//! Guests are built from source on first use ([`crate::guests`]).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::guests::{guests, sha256_hex};
use crate::harness::{TestGateway, client, weir_bin};

/// Where these tests' gateways cache compiled components (shared by the tests, so most
/// starts are cache hits).
fn cache_dir() -> String {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("plugin-cache-tests");
    dir.display().to_string()
}

pub fn start(toml: &str) -> TestGateway {
    let dir = tempfile::tempdir().expect("tempdir");
    TestGateway::start_in_env(dir, toml, &[("WEIR_PLUGIN_CACHE", &cache_dir())])
}

#[tokio::test]
async fn hello_handler_lists_and_adds_users_in_its_kv_store() {
    let hello = &guests().hello;
    let gateway = start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[plugins.hello]
path = "{}"
sha256 = "{}"

[[routes]]
path = "/users"
methods = ["GET", "POST"]
handler = {{ plugin = "hello", body = true, config = {{ greeting = "hi there" }} }}
"#,
        hello.display(),
        sha256_hex(hello)
    ));
    let client = client();

    let empty = client.get(gateway.url("/users")).send().await.expect("get");
    assert_eq!(empty.status(), 200);
    assert_eq!(empty.headers()["x-greeting"], "hi there");
    assert_eq!(empty.headers()["content-type"], "application/json");
    assert!(empty.headers().contains_key("x-request-id"));
    assert_eq!(empty.text().await.expect("body"), "[]");

    for name in ["ada", "grace"] {
        let created = client
            .post(gateway.url("/users"))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .expect("post");
        assert_eq!(created.status(), 201);
        let user: serde_json::Value = created.json().await.expect("json");
        assert_eq!(user["name"], name);
    }

    let list: serde_json::Value = client
        .get(gateway.url("/users"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(
        list,
        serde_json::json!([{ "id": 1, "name": "ada" }, { "id": 2, "name": "grace" }])
    );

    let bad = client
        .post(gateway.url("/users"))
        .body("not json")
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), 400);
}

/// One route per misdeed of the hostile guest, plus a mock route that must keep
/// answering.
fn hostile_routes(hostile: &Path, timeout: &str, concurrency: u32) -> String {
    let mut toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[plugins.hostile]
path = "{}"
limits = {{ memory = "16MiB", timeout = "{timeout}", concurrency = {concurrency} }}

[[routes]]
path = "/ok"
mock = {{ status = 200, body = "still here" }}
"#,
        hostile.display()
    );
    for mode in [
        "loop",
        "sleep",
        "hog",
        "recurse",
        "panic",
        "bad-header",
        "bad-status",
        "huge",
        "counter",
        "echo",
    ] {
        toml.push_str(&format!(
            r#"
[[routes]]
path = "/{mode}/{{id}}"
handler = {{ plugin = "hostile", config = {{ mode = "{mode}" }} }}
"#
        ));
    }
    toml.push_str(
        r#"
[[routes]]
path = "/echo-body"
handler = { plugin = "hostile", body = true, max_body = 16, config = { mode = "echo" } }
"#,
    );
    toml
}

#[tokio::test]
async fn hostile_guests_get_bounded_errors_while_other_routes_answer() {
    let gateway = start(&hostile_routes(&guests().hostile, "300ms", 8));
    let client = client();
    for (mode, status, message) in [
        ("loop", 504, "plugin timed out"),
        ("sleep", 504, "plugin timed out"),
        ("hog", 502, "plugin failed"),
        ("recurse", 502, "plugin failed"),
        ("panic", 502, "plugin failed"),
        ("bad-header", 502, "plugin failed"),
        ("bad-status", 502, "plugin failed"),
        ("huge", 502, "plugin failed"),
    ] {
        let started = Instant::now();
        let response = client
            .get(gateway.url(&format!("/{mode}/1")))
            .send()
            .await
            .expect("request");
        let elapsed = started.elapsed();
        assert_eq!(response.status(), status, "{mode}");
        assert!(elapsed < Duration::from_secs(3), "{mode} took {elapsed:?}");
        let body: serde_json::Value = response.json().await.expect("json error");
        assert_eq!(body["message"], message, "{mode}");

        let ok = client.get(gateway.url("/ok")).send().await.expect("ok");
        assert_eq!(ok.status(), 200, "after {mode}");
    }
    // The log names the plugin, the request and what went wrong; the client never sees it.
    let logs = gateway.logs().join("\n");
    for needle in [
        "plugin hostile: plugin ran past its deadline",
        "plugin hostile: plugin exceeded its memory limit",
        "plugin hostile: plugin returned invalid output: invalid header name",
        "plugin hostile: plugin returned invalid output: status 42",
    ] {
        assert!(logs.contains(needle), "missing {needle:?} in:\n{logs}");
    }
    assert!(logs.contains("request_id"), "{logs}");
}

#[tokio::test]
async fn a_looping_guest_does_not_stall_other_requests() {
    let gateway = start(&hostile_routes(&guests().hostile, "1s", 8));
    let client = client();
    // Two endless loops, as many as this machine has cores, run while we ask for `/ok`.
    let loops: Vec<_> = (0..2)
        .map(|i| {
            let request = client.get(gateway.url(&format!("/loop/{i}"))).send();
            tokio::spawn(request)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let started = Instant::now();
        let ok = client.get(gateway.url("/ok")).send().await.expect("ok");
        assert_eq!(ok.status(), 200);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "/ok took {:?} beside looping guests",
            started.elapsed()
        );
    }
    for request in loops {
        let response = request.await.expect("join").expect("loop request");
        assert_eq!(response.status(), 504);
    }
}

#[tokio::test]
async fn every_request_gets_a_fresh_instance() {
    let gateway = start(&hostile_routes(&guests().hostile, "1s", 8));
    let client = client();
    for _ in 0..5 {
        let response = client
            .get(gateway.url("/counter/1"))
            .send()
            .await
            .expect("counter");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), "1");
    }
}

#[tokio::test]
async fn a_plugin_at_its_concurrency_limit_answers_503_at_once() {
    let gateway = start(&hostile_routes(&guests().hostile, "1s", 1));
    let client = client();
    let busy = tokio::spawn(client.get(gateway.url("/loop/1")).send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let refused = client
        .get(gateway.url("/counter/1"))
        .send()
        .await
        .expect("second");
    assert_eq!(refused.status(), 503);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(busy.await.expect("join").expect("first").status(), 504);
    // The permit came back.
    let after = client
        .get(gateway.url("/counter/1"))
        .send()
        .await
        .expect("third");
    assert_eq!(after.status(), 200);
}

#[tokio::test]
async fn the_plugin_sees_the_request_and_the_body_only_when_asked() {
    let gateway = start(&hostile_routes(&guests().hostile, "1s", 8));
    let client = client();
    let head_only = client
        .post(gateway.url("/echo/42?x=1"))
        .body("secret")
        .send()
        .await
        .expect("echo");
    assert_eq!(head_only.status(), 200);
    assert_eq!(
        head_only.text().await.expect("body"),
        r#"method=POST path=/echo/42 query=x=1 params=[("id", "42")] body=None client=127.0.0.1"#
    );

    let with_body = client
        .post(gateway.url("/echo-body"))
        .body("hello")
        .send()
        .await
        .expect("echo");
    assert!(
        with_body
            .text()
            .await
            .expect("body")
            .contains(r#"body=Some("hello")"#)
    );

    let too_large = client
        .post(gateway.url("/echo-body"))
        .body("x".repeat(17))
        .send()
        .await
        .expect("echo");
    assert_eq!(too_large.status(), 413);
}

#[tokio::test]
async fn compiled_components_are_cached_on_disk() {
    let cache = tempfile::tempdir().expect("tempdir");
    let cache_path = cache.path().join("cache");
    let toml = hostile_routes(&guests().hostile, "1s", 8);
    let env = [("WEIR_PLUGIN_CACHE", cache_path.to_str().expect("utf-8"))];

    let first = TestGateway::start_in_env(tempfile::tempdir().expect("tempdir"), &toml, &env);
    assert!(
        first.logs().iter().any(|l| l.contains("cache=\"miss\"")),
        "{:?}",
        first.logs()
    );
    drop(first);
    let entries: Vec<_> = std::fs::read_dir(&cache_path)
        .expect("cache dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].starts_with(&sha256_hex(&guests().hostile)));
    assert!(entries[0].ends_with(".cwasm"));

    let second = TestGateway::start_in_env(tempfile::tempdir().expect("tempdir"), &toml, &env);
    assert!(
        second.logs().iter().any(|l| l.contains("cache=\"hit\"")),
        "{:?}",
        second.logs()
    );
    let client = client();
    let response = client
        .get(second.url("/counter/1"))
        .send()
        .await
        .expect("counter");
    assert_eq!(response.status(), 200);
}

/// `weir validate` on a route file using `plugin_toml` as `[plugins.p]` for a handler.
fn validate(dir: &Path, plugin_toml: &str) -> (bool, String) {
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[plugins.p]
{plugin_toml}

[[routes]]
path = "/p"
handler = {{ plugin = "p" }}
"#
    );
    std::fs::write(dir.join("weir.toml"), toml).expect("write");
    let output = Command::new(weir_bin())
        .args(["validate", "-c", "weir.toml"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env("WEIR_PLUGIN_CACHE", cache_dir())
        .output()
        .expect("run weir validate");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_component_for_the_wrong_role_is_refused_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let filter = &guests().noop_filter;
    let (ok, stderr) = validate(
        dir.path(),
        &format!("path = {:?}", filter.display().to_string()),
    );
    assert!(!ok);
    assert!(
        stderr.contains("plugins.p: used as a handler but does not export `handle`")
            && stderr.contains("on-request"),
        "{stderr}"
    );
}

#[test]
fn a_digest_mismatch_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hello = &guests().hello;
    let wrong = "ab".repeat(32);
    let (ok, stderr) = validate(
        dir.path(),
        &format!(
            "path = {:?}\nsha256 = \"{wrong}\"",
            hello.display().to_string()
        ),
    );
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "plugins.p.sha256: digest mismatch: {} has sha256 {}, the pin is {wrong}",
            hello.display(),
            sha256_hex(hello)
        )),
        "{stderr}"
    );
}

#[test]
fn corrupt_files_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("text.wasm"), "hello").expect("write");
    let (ok, stderr) = validate(dir.path(), r#"path = "text.wasm""#);
    assert!(!ok);
    assert!(
        stderr.contains("plugins.p.path: text.wasm: not a WebAssembly file"),
        "{stderr}"
    );

    // A component header followed by garbage passes the header check, not the compiler.
    let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
    bytes.extend_from_slice(&[0xff; 64]);
    std::fs::write(dir.path().join("broken.wasm"), bytes).expect("write");
    let (ok, stderr) = validate(dir.path(), r#"path = "broken.wasm""#);
    assert!(!ok);
    assert!(
        stderr.contains("plugins.p: ") && stderr.contains("is not a valid component"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("is not a valid component").count(),
        1,
        "said once: {stderr}"
    );

    let (ok, stderr) = validate(dir.path(), r#"path = "missing.wasm""#);
    assert!(!ok);
    assert!(
        stderr.contains("plugins.p.path: cannot read missing.wasm"),
        "{stderr}"
    );
}

#[test]
fn plugin_inspect_shows_roles_exports_imports_and_digest() {
    let hello = &guests().hello;
    let output = Command::new(weir_bin())
        .args(["plugin", "inspect"])
        .arg(hello)
        .env("WEIR_PLUGIN_CACHE", cache_dir())
        .output()
        .expect("run weir plugin inspect");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("roles: handler\n"), "{stdout}");
    assert!(
        stdout.contains(&format!("sha256: {}\n", sha256_hex(hello))),
        "{stdout}"
    );
    assert!(stdout.contains("exports:\n    handle\n"), "{stdout}");
    assert!(
        stdout.contains("weir:plugin/kv@0.2.0 (interface)"),
        "{stdout}"
    );
    let size = std::fs::metadata(hello).expect("size").len();
    assert!(stdout.contains(&format!("size: {size} bytes")), "{stdout}");

    let filter = Command::new(weir_bin())
        .args(["plugin", "inspect"])
        .arg(&guests().noop_filter)
        .env("WEIR_PLUGIN_CACHE", cache_dir())
        .output()
        .expect("run weir plugin inspect");
    assert!(String::from_utf8_lossy(&filter.stdout).contains("roles: filter\n"));
}

#[tokio::test]
async fn a_reload_that_changes_one_plugin_does_not_recompile_the_others() {
    let (hello, probe) = (&guests().hello, &guests().probe_filter);
    let file = |timeout: &str, listen: &str, admin: &str| {
        format!(
            r#"
[server]
listen = "{listen}"
admin = "{admin}"

[plugins.hello]
path = "{}"

[plugins.probe]
path = "{}"
limits = {{ timeout = "{timeout}" }}

[[routes]]
path = "/users"
handler = {{ plugin = "hello" }}
filters = [{{ plugin = "probe" }}]
"#,
            hello.display(),
            probe.display(),
        )
    };
    let gateway = start(&file("1s", "127.0.0.1:0", "127.0.0.1:0"));
    let loaded = |gateway: &TestGateway, name: &str| {
        gateway
            .logs()
            .iter()
            .filter(|line| line.contains("plugin loaded") && line.contains(name))
            .count()
    };
    assert_eq!(loaded(&gateway, "hello"), 1, "{:?}", gateway.logs());
    assert_eq!(loaded(&gateway, "probe"), 1);

    let (listen, admin) = (
        gateway.http.expect("http").to_string(),
        gateway.admin.expect("admin").to_string(),
    );
    std::fs::write(&gateway.config_path, file("2s", &listen, &admin)).expect("rewrite");
    let reload = gateway.reload(None).await;
    assert_eq!(reload.status(), 200);
    // `probe` changed (its limits): loaded again; `hello` did not: kept as it was. (The
    // log lines are read from the child's output as they come: wait for them.)
    crate::harness::wait_until(Duration::from_secs(10), "probe loaded again", || {
        loaded(&gateway, "probe") == 2
    })
    .await;
    assert_eq!(loaded(&gateway, "hello"), 1);
    assert!(
        gateway
            .logs()
            .iter()
            .any(|line| line.contains("plugin unchanged") && line.contains("hello")),
        "{:?}",
        gateway.logs()
    );
    let response = client()
        .get(gateway.url("/users"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-count-probe"], "1");
}

#[tokio::test]
async fn outbound_requests_reach_only_the_upstreams_the_config_names() {
    let backend = crate::harness::TestUpstream::echo().await;
    let other = crate::harness::TestUpstream::echo().await;
    let fetcher = &guests().fetcher;
    let gateway = start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[plugins.fetcher]
path = "{}"

[upstreams.backend]
targets = ["{}"]

[upstreams.other]
targets = ["{}"]

[upstreams.dead]
targets = ["http://{}"]
connect_timeout = "200ms"

[[routes]]
path = "/{{path+}}"
handler = {{ plugin = "fetcher", body = true, config = {{ upstream = "backend", upstreams = ["backend", "dead"] }} }}
"#,
        fetcher.display(),
        backend.url(),
        other.url(),
        crate::harness::dead_addr(),
    ));
    let client = client();

    let response = client
        .post(gateway.url("/items/7"))
        .body("payload")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = response.json().await.expect("json");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["uri"], "/items/7");
    assert_eq!(echo["headers"]["x-fetched-by"], "fetcher");
    assert_eq!(echo["body_len"], 7);
    // The plugin's request carries the request id of the request it serves.
    assert!(echo["headers"]["x-request-id"].is_string());

    // An upstream the config does not name is refused; a named one that is down fails.
    for (upstream, error) in [("other", "not-allowed"), ("dead", "unreachable")] {
        let response = client
            .get(gateway.url(&format!("/x?upstream={upstream}")))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 599, "{upstream}");
        assert_eq!(response.text().await.expect("body"), error);
    }
    assert_eq!(other.count(), 0);
}
