//! Every route file under `examples/` validates, and the quick start serves what its README
//! promises (with its fixed ports swapped for free ones).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{TestUpstream, client, weir_bin};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Where the examples' route files find the plugins (`quickstart.sh` builds them there).
const EXAMPLE_PLUGINS: &str = "../../target/wasm-guests/wasm32-wasip2/release/";

/// The directory the tests built the plugins in (another one under another
/// `CARGO_TARGET_DIR`).
fn built_plugins() -> String {
    let hello = &crate::guests::guests().hello;
    format!("{}/", hello.parent().expect("plugin dir").display())
}

#[test]
fn every_example_route_file_validates() {
    // The examples name plugins where quickstart.sh builds them: the tests build them there.
    let built = built_plugins();
    let mut checked = 0;
    for entry in std::fs::read_dir(examples_dir()).expect("examples dir") {
        let config = entry.expect("entry").path().join("weir.toml");
        if !config.exists() {
            continue;
        }
        let dir = config.parent().expect("example dir");
        let text = std::fs::read_to_string(&config).expect("read example");
        // Under another CARGO_TARGET_DIR the plugins are elsewhere: validate a copy (beside
        // the original, so its other relative paths still resolve) that names them there.
        let elsewhere = text.contains(EXAMPLE_PLUGINS)
            && dir.join(EXAMPLE_PLUGINS).canonicalize().ok()
                != Path::new(&built).canonicalize().ok();
        let checked_file = if elsewhere {
            let copy = dir.join(format!(".validate-{}.toml", std::process::id()));
            let text = text.replace(EXAMPLE_PLUGINS, &built);
            std::fs::write(&copy, text).expect("write copy");
            copy
        } else {
            config.clone()
        };
        let out = Command::new(weir_bin())
            .args(["validate", "-c"])
            .arg(&checked_file)
            .output()
            .expect("run weir");
        if elsewhere {
            let _ = std::fs::remove_file(&checked_file);
        }
        assert!(
            out.status.success(),
            "{}: {}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 1, "no example route files found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_serves_mock_proxied_and_not_found() {
    let backend = TestUpstream::start(|req, _| async move {
        let body = match req.uri().path() {
            "/users/2" => r#"{"id":"2","name":"Grace Hopper"}"#,
            _ => "unexpected",
        };
        http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)))
    })
    .await;
    let text = std::fs::read_to_string(examples_dir().join("quickstart/weir.toml"))
        .expect("quickstart config");
    let text = text
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("http://127.0.0.1:9000", &backend.url())
        .replace(EXAMPLE_PLUGINS, &built_plugins());
    let gateway = crate::plugins::start(&text);
    let http = client();

    let status = http.get(gateway.url("/status")).send().await.expect("send");
    assert_eq!(status.status(), 200);
    assert_eq!(status.text().await.expect("body"), r#"{"ok":true}"#);

    let user = http
        .get(gateway.url("/users/2"))
        .send()
        .await
        .expect("send");
    assert_eq!(user.status(), 200);
    assert!(user.text().await.expect("body").contains("Grace Hopper"));

    let missing = http
        .get(gateway.url("/nowhere"))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), 404);

    // The secured route: no key, then the demo key printed by quickstart.sh.
    let refused = http
        .get(gateway.url("/echo/secure"))
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), 403);
    let secured = http
        .get(gateway.url("/echo/secure"))
        .header("x-api-key", "weir-demo-key")
        .send()
        .await
        .expect("send");
    assert_eq!(secured.status(), 200);
    assert_eq!(secured.headers()["ratelimit-limit"], "3");

    // The plugin route: the hello handler keeps its users in its KV store.
    let created = http
        .post(gateway.url("/hello/users"))
        .body(r#"{"name":"Ada"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(created.status(), 201);
    let list = http
        .get(gateway.url("/hello/users"))
        .send()
        .await
        .expect("send");
    assert_eq!(list.headers()["x-greeting"], "hi from a wasm plugin");
    let users: serde_json::Value = list.json().await.expect("json");
    assert_eq!(users[0]["name"], "Ada");

    let health = http
        .get(gateway.admin_url("/healthz"))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status(), 200);
}
