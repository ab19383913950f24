//! Routing through the real gateway: path canonicalisation (no spelling reaches a route
//! other than the one its canonical path names), templates, 404/405, hosts, and mock
//! responses.

use crate::harness::{TestGateway, TestUpstream, client, raw_get, raw_request};

/// Routes whose mock bodies name them, so a response says which route answered.
const NAMED_ROUTES: &str = r#"
[server]
listen = "127.0.0.1:0"
{extra}

[[routes]]
name = "admin"
path = "/admin/secret"
mock = { status = 200, body = "admin" }

[[routes]]
name = "public"
path = "/public/{path+}"
mock = { status = 200, body = "public" }

[[routes]]
name = "user"
methods = ["GET"]
path = "/users/{id}"
mock = { status = 200, body = "user" }

[[routes]]
name = "me"
methods = ["GET", "PUT"]
path = "/users/me"
mock = { status = 200, body = "me" }
"#;

fn named_routes(extra: &str) -> TestGateway {
    TestGateway::start(&NAMED_ROUTES.replace("{extra}", extra))
}

/// What a spelling must lead to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Route(&'static str),
    Status(u16),
}
use Expect::{Route, Status};

async fn assert_spellings(gateway: &TestGateway, table: &[(&str, Expect)]) {
    let mut failures = Vec::new();
    for &(path, expect) in table {
        let response = raw_get(gateway.http_addr(), path).await;
        let got = if response.status == 200 {
            Route(Box::leak(response.body.clone().into_boxed_str()))
        } else {
            Status(response.status)
        };
        if got != expect {
            failures.push(format!(
                "{path}: expected {expect:?}, got {got:?} ({})",
                response.body
            ));
        }
        if response.status != 200 && response.header("content-type") == Some("application/json") {
            let json = response.json();
            assert!(json["message"].is_string(), "{path}: {json}");
            assert!(json["request_id"].is_string(), "{path}: {json}");
        }
    }
    assert!(
        failures.is_empty(),
        "spellings that went wrong:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn no_spelling_reaches_another_route_than_its_canonical_path_names() {
    let gateway = named_routes("");
    assert_spellings(
        &gateway,
        &[
            ("/admin/secret", Route("admin")),
            ("/admin/secret?x=1", Route("admin")),
            // Dot-segments resolve: the canonical path names admin, so admin answers.
            ("/admin/./secret", Route("admin")),
            ("/public/../admin/secret", Route("admin")),
            ("/public/x/../../admin/secret", Route("admin")),
            ("/public/x/..", Status(404)),
            // Duplicate slashes collapse.
            ("/admin//secret", Route("admin")),
            ("//admin/secret", Route("admin")),
            ("/public//x", Route("public")),
            // Unreserved characters are decoded; other escapes stay escapes.
            ("/%61dmin/secret", Route("admin")),
            ("/admin/sec%72et", Route("admin")),
            ("/admin/secret%3b", Status(404)),
            ("/admin/secret;x", Status(404)),
            // Paths are case-sensitive.
            ("/Admin/secret", Status(404)),
            ("/ADMIN/SECRET", Status(404)),
            // A trailing slash is a different path.
            ("/admin/secret/", Status(404)),
            // Ambiguous encodings are refused.
            ("/public/%2e%2e/admin/secret", Status(400)),
            ("/public/%2E%2E/admin/secret", Status(400)),
            ("/public/.%2e/admin/secret", Status(400)),
            ("/public/..%2fadmin/secret", Status(400)),
            ("/public%2fadmin", Status(400)),
            ("/public/x%2F..%2F..%2Fadmin%2Fsecret", Status(400)),
            ("/public/a%5c..%5cadmin", Status(400)),
            ("/admin/secret%00", Status(400)),
            ("/admin/%zz", Status(400)),
            ("/admin/%4", Status(400)),
            // Climbing above the root is refused.
            ("/../admin/secret", Status(400)),
            ("/public/../../admin/secret", Status(400)),
            // Greedy matches one or more segments.
            ("/public/a/b/c", Route("public")),
            ("/public", Status(404)),
            ("/public/", Status(404)),
            // Literal beats parameter.
            ("/users/me", Route("me")),
            ("/users/42", Route("user")),
            ("/users/%6De", Route("me")),
        ],
    )
    .await;
}

#[tokio::test]
async fn raw_backslash_is_refused() {
    let gateway = named_routes("");
    let response = raw_get(gateway.http_addr(), "/public\\..\\admin\\secret").await;
    assert_eq!(response.status, 400, "{}", response.body);
}

#[tokio::test]
async fn escaped_separators_kept_are_plain_text_never_separators() {
    let gateway = named_routes(r#"escaped_separators = "keep""#);
    assert_spellings(
        &gateway,
        &[
            ("/public/..%2fadmin/secret", Route("public")),
            ("/public/%2e%2e/admin/secret", Route("public")),
            ("/admin%2fsecret", Status(404)),
            ("/admin/secret", Route("admin")),
            // Unambiguous checks still apply.
            ("/admin/secret%00", Status(400)),
        ],
    )
    .await;
}

#[tokio::test]
async fn unmerged_slashes_are_distinct_paths() {
    let gateway = named_routes("merge_slashes = false");
    assert_spellings(
        &gateway,
        &[
            ("/admin/secret", Route("admin")),
            ("/admin//secret", Status(404)),
        ],
    )
    .await;
}

#[tokio::test]
async fn upstream_receives_the_canonical_path_and_params_are_decoded() {
    let upstream = TestUpstream::echo().await;
    let gateway = TestGateway::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[upstreams.echo]
targets = ["{}"]

[[routes]]
path = "/files/{{path+}}"
upstream = "echo"
"#,
        upstream.url()
    ));
    let response = raw_get(gateway.http_addr(), "/files/a/./b//c/%7e/%41%3a?q=%2e").await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["uri"], "/files/a/b/c/~/A%3A?q=%2e");
}

#[tokio::test]
async fn not_found_and_method_not_allowed_are_json_with_allow() {
    let gateway = named_routes("");
    let http = client();

    let response = http
        .get(gateway.url("/nowhere"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 404);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["message"], "no route matches this request");
    assert_eq!(body["request_id"], request_id.as_str());

    let response = http
        .delete(gateway.url("/users/me"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 405);
    // The union of the methods of every route whose path matched, HEAD with GET.
    assert_eq!(response.headers()["allow"], "GET, HEAD, PUT");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["message"], "method not allowed on this route");

    let response = http
        .post(gateway.url("/users/42"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");

    // HEAD is served by a GET route.
    let response = http
        .head(gateway.url("/users/42"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn hosts_select_routes_exact_then_wildcard_then_any() {
    let gateway = TestGateway::start(
        r#"
[server]
listen = "127.0.0.1:0"

[[routes]]
path = "/who"
hosts = ["api.test"]
mock = { body = "exact" }

[[routes]]
path = "/who"
hosts = ["*.test"]
mock = { body = "wildcard" }

[[routes]]
path = "/who"
mock = { body = "any" }

[[routes]]
path = "/only-api"
hosts = ["API.test"]
mock = { body = "only-api" }
"#,
    );
    let cases = [
        ("api.test", "/who", 200, "exact"),
        ("API.TEST:8080", "/who", 200, "exact"),
        ("www.test", "/who", 200, "wildcard"),
        ("a.b.test", "/who", 200, "any"),
        ("example.org", "/who", 200, "any"),
        ("api.test", "/only-api", 200, "only-api"),
        ("www.test", "/only-api", 404, ""),
    ];
    for (host, path, status, body) in cases {
        let response = raw_request(
            gateway.http_addr(),
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(response.status, status, "{host}{path}: {}", response.body);
        if status == 200 {
            assert_eq!(response.body, body, "{host}{path}");
        }
    }
}

#[tokio::test]
async fn mock_route_answers_with_its_status_headers_and_body() {
    let gateway = TestGateway::start(
        r#"
[server]
listen = "127.0.0.1:0"

[[routes]]
path = "/status"
mock = { status = 201, body = "{\"ok\":true}", headers = { content-type = "application/json", x-extra = "1" } }

[[routes]]
path = "/empty"
mock = { status = 204 }
"#,
    );
    let http = client();
    let response = http
        .get(gateway.url("/status"))
        .header("x-request-id", "client-chosen-1")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-extra"], "1");
    assert_eq!(response.headers()["x-request-id"], "client-chosen-1");
    assert_eq!(response.text().await.expect("body"), "{\"ok\":true}");

    let response = http.get(gateway.url("/empty")).send().await.expect("send");
    assert_eq!(response.status(), 204);
    assert_eq!(response.text().await.expect("body"), "");
}

#[tokio::test]
async fn hundreds_of_routes_each_reach_their_own() {
    let mut toml = String::from("[server]\nlisten = \"127.0.0.1:0\"\n");
    for i in 0..500 {
        toml.push_str(&format!(
            "\n[[routes]]\npath = \"/svc{i}/items/{{id}}\"\nmock = {{ body = \"svc{i}\" }}\n"
        ));
    }
    let gateway = TestGateway::start(&toml);
    let http = client();
    for i in [0, 1, 250, 499] {
        let response = http
            .get(gateway.url(&format!("/svc{i}/items/7")))
            .send()
            .await
            .expect("send");
        assert_eq!(response.text().await.expect("body"), format!("svc{i}"));
    }
    let response = http
        .get(gateway.url("/svc500/items/7"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 404);
}
