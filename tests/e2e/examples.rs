//! Every route file under `examples/` validates, and the quick start serves what its README
//! promises (with its fixed ports swapped for free ones).

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{TestGateway, TestUpstream, client, weir_bin};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn every_example_route_file_validates() {
    let mut checked = 0;
    for entry in std::fs::read_dir(examples_dir()).expect("examples dir") {
        let config = entry.expect("entry").path().join("weir.toml");
        if !config.exists() {
            continue;
        }
        let out = Command::new(weir_bin())
            .args(["validate", "-c"])
            .arg(&config)
            .output()
            .expect("run weir");
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
        .replace("http://127.0.0.1:9000", &backend.url());
    let gateway = TestGateway::start(&text);
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

    let health = http
        .get(gateway.admin_url("/healthz"))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status(), 200);
}
