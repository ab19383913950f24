//! The Rust plugin SDK (`plugin-sdk/`, crate `weir-plugin`) and the first-party plugins
//! written with it: their native unit tests (the plugins workspace is not part of this
//! one, so `cargo test --workspace` runs them from here), and `header-auth` and
//! `transform` doing their job in the real gateway. (`hello`, also on the SDK, is
//! covered by `plugins.rs` and `examples.rs`.)

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use http_body_util::Full;

use crate::guests::guests;
use crate::harness::{TestUpstream, client};
use crate::plugins::start;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

/// `cargo test` of the plugins workspace for the machine's own target: the SDK's tests
/// (its glue, helpers and host-function stand-ins) and every plugin's. A private target
/// dir, as for the guests: the outer build holds the lock of its own.
#[test]
fn sdk_and_plugins_pass_their_native_unit_tests() {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        .join("guest-native");
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(["test", "--quiet", "--manifest-path"])
        .arg(repo().join("plugins/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // What the outer build set for itself must not leak into this one.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("run cargo test for plugins/");
    assert!(
        output.status.success(),
        "the plugins' native tests failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Lower-case hex SHA-256 of `token`, as `header-auth`'s config lists tokens.
fn sha256_hex(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn header_auth_lets_listed_tokens_in_with_their_principal_and_context() {
    let upstream = TestUpstream::echo().await;
    let plugin = &guests().header_auth;
    let gateway = start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[plugins.header-auth]
path = "{plugin}"

[authorizers.partners]
type = "plugin"
plugin = "header-auth"
identity = ["header:x-partner-token"]
cache_ttl = "60s"
forward_context = {{ tenant = "x-tenant", principal = "x-principal" }}
config = {{ header = "x-partner-token", tokens = [{{ sha256 = "{a}", principal = "partner-a", context = {{ tenant = "a" }} }}], tokens_sha256 = ["{b}"] }}

[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/partners"
upstream = "backend"
authorizer = "partners"
"#,
        plugin = plugin.display(),
        a = sha256_hex("secret-a"),
        b = sha256_hex("secret-b"),
        upstream = upstream.url(),
    ));
    let client = client();
    let get = |token: Option<&'static str>| {
        let mut request = client.get(gateway.url("/partners"));
        if let Some(token) = token {
            request = request.header("x-partner-token", token);
        }
        request.send()
    };

    let allowed = get(Some("secret-a")).await.expect("get");
    assert_eq!(allowed.status(), 200);
    let echo: serde_json::Value = allowed.json().await.expect("json");
    assert_eq!(echo["headers"]["x-tenant"], "a");
    assert_eq!(echo["headers"]["x-principal"], "partner-a");

    let plain = get(Some("secret-b")).await.expect("get");
    assert_eq!(plain.status(), 200);
    let echo: serde_json::Value = plain.json().await.expect("json");
    let principal = format!("sha256:{}", &sha256_hex("secret-b")[..16]);
    assert_eq!(echo["headers"]["x-principal"], principal.as_str());

    let unknown = get(Some("guess")).await.expect("get");
    assert_eq!(unknown.status(), 401);
    let json: serde_json::Value = unknown.json().await.expect("json");
    assert_eq!(json["message"], "invalid token");

    // No identity at all: the gateway answers without asking the plugin.
    let missing = get(None).await.expect("get");
    assert_eq!(missing.status(), 401);
    assert_eq!(
        upstream.count(),
        2,
        "only the two listed tokens got through"
    );
}

#[tokio::test]
async fn header_auth_with_a_bad_config_fails_closed() {
    let upstream = TestUpstream::echo().await;
    let gateway = start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[plugins.header-auth]
path = "{plugin}"

[authorizers.partners]
type = "plugin"
plugin = "header-auth"
identity = ["header:x-api-token"]
config = {{ tokens_sha256 = ["not-a-digest"] }}

[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/partners"
upstream = "backend"
authorizer = "partners"
"#,
        plugin = guests().header_auth.display(),
        upstream = upstream.url(),
    ));
    let response = client()
        .get(gateway.url("/partners"))
        .header("x-api-token", "anything")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 500);
    assert_eq!(upstream.count(), 0);
}

/// An upstream that answers the request as JSON (headers, query, body parsed), `404` with
/// a JSON body under `/missing`, and a `server` header.
async fn body_echo() -> TestUpstream {
    TestUpstream::start(|req: http::Request<Bytes>, _| async move {
        if req.uri().path() == "/missing" {
            let body = serde_json::json!({ "message": "no such user" }).to_string();
            return http::Response::builder()
                .status(404)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("response");
        }
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v.to_str().unwrap_or(""))))
            .collect();
        let body: serde_json::Value =
            serde_json::from_slice(req.body()).unwrap_or(serde_json::Value::Null);
        let echo = serde_json::json!({
            "headers": headers,
            "body": body,
            "internal": "upstream detail",
        });
        http::Response::builder()
            .header("content-type", "application/json")
            .header("server", "backend/1.0")
            .body(Full::new(Bytes::from(echo.to_string())))
            .expect("response")
    })
    .await
}

#[tokio::test]
async fn transform_maps_headers_params_bodies_and_statuses() {
    let upstream = body_echo().await;
    let gateway = start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[plugins.transform]
path = "{plugin}"

[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/users/{{id}}"
upstream = "backend"

[[routes.filters]]
plugin = "transform"
body = true

[routes.filters.config.request]
headers = {{ rename = {{ "x-api-version" = "x-version" }}, remove = ["x-debug"], set = {{ "x-source" = "weir" }} }}
params_to_headers = {{ id = "x-user-id" }}
query_to_headers = {{ lang = "x-lang" }}
body = {{ rename = {{ userName = "user.name" }}, remove = ["password"], set = {{ source = "gateway" }} }}

[routes.filters.config.response]
status_map = {{ "404" = 204 }}
headers = {{ remove = ["server"], set = {{ "cache-control" = "no-store" }} }}
body = {{ remove = ["internal"] }}

[[routes]]
path = "/missing"
upstream = "backend"
filters = [{{ plugin = "transform", config = {{ response = {{ status_map = {{ "404" = 204 }} }} }} }}]
"#,
        plugin = guests().transform.display(),
        upstream = upstream.url(),
    ));
    let client = client();

    let response = client
        .post(gateway.url("/users/7?lang=fr"))
        .header("x-api-version", "2")
        .header("x-debug", "1")
        .json(&serde_json::json!({ "userName": "ada", "password": "hunter2" }))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(!response.headers().contains_key("server"));
    let echo: serde_json::Value = response.json().await.expect("json");
    let seen = &echo["headers"];
    assert_eq!(seen["x-version"], "2");
    assert!(seen.get("x-api-version").is_none());
    assert!(seen.get("x-debug").is_none());
    assert_eq!(seen["x-source"], "weir");
    assert_eq!(seen["x-user-id"], "7");
    assert_eq!(seen["x-lang"], "fr");
    assert_eq!(
        echo["body"],
        serde_json::json!({ "user": { "name": "ada" }, "source": "gateway" })
    );
    assert!(echo.get("internal").is_none(), "removed from the response");

    // A body that is not a JSON object is refused before the upstream.
    let before = upstream.count();
    let refused = client
        .post(gateway.url("/users/7"))
        .body("[1, 2]")
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 400);
    assert_eq!(upstream.count(), before);

    // Heads only (no `body = true`): the status is remapped and the body dropped.
    let mapped = client
        .get(gateway.url("/missing"))
        .send()
        .await
        .expect("get");
    assert_eq!(mapped.status(), 204);
    assert!(mapped.bytes().await.expect("body").is_empty());
}
