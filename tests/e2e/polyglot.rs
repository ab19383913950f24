//! Plugins written in JavaScript and Python, through the real gateway as route filters:
//! `plugins/js/xml-response` (componentize-js) turns JSON responses into XML, and
//! `plugins/python/validate` (componentize-py) refuses request bodies that break the
//! rules in its config.
//!
//! Both are built from source on first use with their pinned toolchains
//! ([`crate::polyglot_build`]), and compiled once into the tests' component cache, so the
//! gateways below load them as cache hits.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

use crate::harness::{TestGateway, TestUpstream, client, wait_until};
use crate::polyglot_build::{plugin_cache_dir, polyglot};

fn start(toml: &str) -> TestGateway {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = plugin_cache_dir();
    TestGateway::start_in_env(
        dir,
        toml,
        &[("WEIR_PLUGIN_CACHE", cache.to_str().expect("utf-8 path"))],
    )
}

/// `[server]`, `[upstreams.backend]` and the two plugins; routes follow.
fn preamble(backend: &TestUpstream) -> String {
    let plugins = polyglot();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[upstreams.backend]
targets = ["{}"]

[plugins.xml]
path = "{}"

[plugins.validate]
path = "{}"
"#,
        backend.url(),
        plugins.xml_response.display(),
        plugins.validate.display(),
    )
}

/// A backend answering `/plain` with text and every other path with `json`.
async fn json_backend(json: &'static str) -> TestUpstream {
    TestUpstream::start(move |request, _| async move {
        let (content_type, body) = if request.uri().path() == "/plain" {
            ("text/plain", "just text")
        } else {
            ("application/json; charset=utf-8", json)
        };
        Response::builder()
            .header("content-type", content_type)
            .header("etag", "\"v1\"")
            .body(Full::new(Bytes::from(body)))
            .expect("response")
    })
    .await
}

/// Both plugins were compiled before the gateway started: loading them was a cache hit.
fn assert_loaded_from_cache(gateway: &TestGateway, plugins: &[&str]) {
    let logs = gateway.logs();
    for plugin in plugins {
        let line = logs
            .iter()
            .find(|l| l.contains("plugin loaded") && l.contains(&format!("plugin=\"{plugin}\"")))
            .unwrap_or_else(|| panic!("no `plugin loaded` line for {plugin}: {logs:#?}"));
        assert!(line.contains("cache=\"hit\""), "{line}");
    }
}

#[tokio::test]
async fn the_javascript_filter_turns_json_responses_into_xml() {
    let backend = json_backend(
        r#"[{"id":1,"name":"Ada & <co>","admin":true,"manager":null,"first name":"Ada"},
            {"id":2,"name":"Grace","admin":false,"manager":1,"first name":"Grace"}]"#,
    )
    .await;
    let gateway = start(&format!(
        r#"{}
[[routes]]
path = "/users"
upstream = "backend"
filters = [{{ plugin = "xml", config = {{ root = "users", item = "user" }}, body = true, max_body = "1MiB", on_error = "fail" }}]

[[routes]]
path = "/plain"
upstream = "backend"
filters = [{{ plugin = "xml", config = {{ root = "users" }}, body = true }}]
"#,
        preamble(&backend)
    ));
    assert_loaded_from_cache(&gateway, &["xml", "validate"]);
    let client = client();

    let users = client.get(gateway.url("/users")).send().await.expect("get");
    assert_eq!(users.status(), 200);
    assert_eq!(users.headers()["content-type"], "application/xml");
    // The body changed: the upstream's entity tag no longer applies.
    assert!(!users.headers().contains_key("etag"));
    let length: usize = users.headers()["content-length"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("a number");
    let body = users.text().await.expect("body");
    assert_eq!(length, body.len());
    assert_eq!(
        body,
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            "<users>",
            "<user><id>1</id><name>Ada &amp; &lt;co&gt;</name><admin>true</admin>",
            "<manager/><first_name>Ada</first_name></user>",
            "<user><id>2</id><name>Grace</name><admin>false</admin>",
            "<manager>1</manager><first_name>Grace</first_name></user>",
            "</users>",
        )
    );

    // Not JSON: passed as it came.
    let plain = client.get(gateway.url("/plain")).send().await.expect("get");
    assert_eq!(plain.status(), 200);
    assert_eq!(plain.headers()["content-type"], "text/plain");
    assert_eq!(plain.headers()["etag"], "\"v1\"");
    assert_eq!(plain.text().await.expect("body"), "just text");
}

/// With `negotiate = true`, `on-request` remembers whether the client asked for XML and
/// `on-response` (same instance, same request) acts on it; the next request starts over.
#[tokio::test]
async fn the_javascript_filter_carries_the_clients_accept_from_request_to_response() {
    let backend = TestUpstream::echo().await;
    let gateway = start(&format!(
        r#"{}
[[routes]]
path = "/echo"
upstream = "backend"
filters = [{{ plugin = "xml", config = {{ root = "echo", negotiate = true }}, body = true }}]
"#,
        preamble(&backend)
    ));
    let client = client();

    for round in 0..2 {
        let xml = client
            .get(gateway.url("/echo"))
            .header("accept", "text/html, application/xml;q=0.9")
            .send()
            .await
            .expect("get");
        assert_eq!(xml.status(), 200, "round {round}");
        assert_eq!(xml.headers()["content-type"], "application/xml");
        assert_eq!(xml.headers()["vary"], "accept");
        let body = xml.text().await.expect("body");
        assert!(
            body.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><echo>"#)
                && body.ends_with("</echo>")
                && body.contains("<method>GET</method><uri>/echo</uri>"),
            "{body}"
        );
        // The upstream was asked for the JSON the filter converts.
        assert!(body.contains("<accept>application/json</accept>"), "{body}");

        // A client that does not ask for XML gets the upstream's JSON: nothing of the
        // previous request's decision is left in the (fresh) instance.
        let json = client.get(gateway.url("/echo")).send().await.expect("get");
        assert_eq!(json.status(), 200, "round {round}");
        assert_eq!(json.headers()["content-type"], "application/json");
        assert_eq!(json.headers()["vary"], "accept");
        let echoed: serde_json::Value = json.json().await.expect("json");
        assert_eq!(echoed["method"], "GET");
    }
    let accepts: Vec<_> = backend
        .seen()
        .iter()
        .map(|seen| {
            seen.headers
                .get("accept")
                .map(|v| v.to_str().expect("ascii").to_owned())
        })
        .collect();
    // reqwest asks for `*/*` unless told otherwise.
    assert_eq!(
        accepts.iter().map(Option::as_deref).collect::<Vec<_>>(),
        [Some("application/json"), Some("*/*")].repeat(2)
    );
}

/// The validation rules of the tests, in a route's `filters` entry.
const RULES: &str = r#"{ plugin = "validate", body = true, max_body = "64KiB", config = { allow_unknown = false, fields = { name = { type = "string", required = true, min_length = 1, max_length = 20 }, age = { type = "integer", minimum = 0, maximum = 150 }, role = { one_of = ["admin", "member"] }, email = { type = "string", pattern = "[^@ ]+@[^@ ]+" } } } }"#;

#[tokio::test]
async fn the_python_filter_refuses_bad_bodies_with_the_problems_and_passes_good_ones() {
    let backend = TestUpstream::echo().await;
    let gateway = start(&format!(
        r#"{}
[[routes]]
path = "/users"
methods = ["GET", "POST"]
upstream = "backend"
filters = [{RULES}]
"#,
        preamble(&backend)
    ));
    assert_loaded_from_cache(&gateway, &["xml", "validate"]);
    let client = client();

    // Written out (serde_json would sort the keys): problems come in the body's order.
    let bad = client
        .post(gateway.url("/users"))
        .header("content-type", "application/json")
        .body(
            r#"{"name": "a name much longer than twenty", "age": 7.5, "role": "owner",
                "email": "nobody", "extra": true}"#,
        )
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.headers()["content-type"], "application/json");
    let problems: serde_json::Value = bad.json().await.expect("json");
    assert_eq!(
        problems,
        serde_json::json!({
            "message": "invalid request body",
            "problems": [
                { "field": "name", "message": "must have at most 20 characters" },
                { "field": "age", "message": "must be an integer" },
                { "field": "role", "message": "must be one of \"admin\", \"member\"" },
                { "field": "email", "message": "must match the pattern [^@ ]+@[^@ ]+" },
                { "field": "extra", "message": "is not an allowed field" },
            ]
        })
    );

    let missing = client
        .post(gateway.url("/users"))
        .json(&serde_json::json!({ "age": -1 }))
        .send()
        .await
        .expect("post");
    assert_eq!(missing.status(), 400);
    let problems: serde_json::Value = missing.json().await.expect("json");
    assert_eq!(
        problems["problems"],
        serde_json::json!([
            { "field": "name", "message": "is required" },
            { "field": "age", "message": "must be at least 0" },
        ])
    );

    for (body, problem) in [
        ("{\"name\": ", "the body is not valid JSON"),
        ("", "the body is not valid JSON"),
        ("[1, 2]", "the body must be a JSON object"),
    ] {
        let response = client
            .post(gateway.url("/users"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 400, "{body:?}");
        let problems: serde_json::Value = response.json().await.expect("json");
        assert_eq!(
            problems["problems"],
            serde_json::json!([{ "field": "", "message": problem }]),
            "{body:?}"
        );
    }
    assert_eq!(backend.count(), 0, "a refused request reached the upstream");

    let good = serde_json::json!({ "name": "ada", "age": 36, "role": "admin", "email": "ada@example.com" });
    let good_body = good.to_string();
    let created = client
        .post(gateway.url("/users"))
        .json(&good)
        .send()
        .await
        .expect("post");
    assert_eq!(created.status(), 200);
    let echoed: serde_json::Value = created.json().await.expect("json");
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["body_len"], good_body.len());

    // `methods` defaults to POST, PUT and PATCH: a GET is not checked.
    let list = client.get(gateway.url("/users")).send().await.expect("get");
    assert_eq!(list.status(), 200);
    assert_eq!(backend.count(), 2);

    let logs = gateway.logs().join("\n");
    assert!(logs.contains("refused POST /users: 5 problem(s)"), "{logs}");
}

/// Both languages on one route: the validator runs first on the way in, the XML filter
/// last on the way out — and, having run on the way in, it also sees the validator's
/// refusal on its way out (filters.rs: the filters before one that answers see its
/// response).
#[tokio::test]
async fn javascript_and_python_filters_chain_on_one_route() {
    let backend = TestUpstream::echo().await;
    let gateway = start(&format!(
        r#"{}
[[routes]]
path = "/users"
upstream = "backend"
filters = [
    {{ plugin = "xml", body = true, config = {{ root = "result" }} }},
    {RULES},
]
"#,
        preamble(&backend)
    ));
    let client = client();

    let created = client
        .post(gateway.url("/users"))
        .json(&serde_json::json!({ "name": "grace" }))
        .send()
        .await
        .expect("post");
    assert_eq!(created.status(), 200);
    assert_eq!(created.headers()["content-type"], "application/xml");
    let body = created.text().await.expect("body");
    assert!(
        body.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><result>"#)
            && body.contains("<method>POST</method>"),
        "{body}"
    );

    let refused = client
        .post(gateway.url("/users"))
        .json(&serde_json::json!({ "name": 7 }))
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.headers()["content-type"], "application/xml");
    assert_eq!(
        refused.text().await.expect("body"),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            "<result><message>invalid request body</message><problems>",
            "<item><field>name</field><message>must be a string</message></item>",
            "</problems></result>",
        )
    );
    assert_eq!(backend.count(), 1);
}

/// An operator's mistake in a use is logged and answered as the Rust SDK answers it.
#[tokio::test]
async fn a_bad_config_is_answered_plugin_misconfigured() {
    let backend = TestUpstream::echo().await;
    let gateway = start(&format!(
        r#"{}
[[routes]]
path = "/bad-root"
upstream = "backend"
filters = [{{ plugin = "xml", body = true, config = {{ root = "1 users" }} }}]

[[routes]]
path = "/bad-rule"
upstream = "backend"
filters = [{{ plugin = "validate", body = true, config = {{ fields = {{ name = {{ type = "text" }} }} }} }}]

[[routes]]
path = "/no-body"
upstream = "backend"
filters = [{{ plugin = "validate" }}]
"#,
        preamble(&backend)
    ));
    let client = client();
    for path in ["/bad-root", "/bad-rule", "/no-body"] {
        let response = client
            .post(gateway.url(path))
            .body("{}")
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 500, "{path}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(
            body,
            serde_json::json!({ "message": "plugin misconfigured" })
        );
    }
    assert_eq!(backend.count(), 0);
    // The gateway's stderr is read by a thread of its own: a line may follow the response.
    for needle in [
        "invalid config: `root` must be an XML element name",
        "invalid config: fields.name.type: 'text' is not one of",
        "no request body: the use needs `body = true`",
    ] {
        wait_until(Duration::from_secs(5), needle, || {
            gateway.logs().iter().any(|line| line.contains(needle))
        })
        .await;
    }
}

/// The plugin sources are where the docs say, with their pinned toolchains.
#[test]
fn the_polyglot_plugins_pin_their_toolchains() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let package: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo.join("plugins/js/xml-response/package.json")).expect("package.json"),
    )
    .expect("json");
    let pinned = package["devDependencies"]["@bytecodealliance/componentize-js"]
        .as_str()
        .expect("componentize-js pinned");
    assert!(
        pinned.chars().all(|c| c.is_ascii_digit() || c == '.'),
        "not an exact version: {pinned}"
    );
    let lock: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo.join("plugins/js/xml-response/package-lock.json"))
            .expect("package-lock.json"),
    )
    .expect("json");
    assert_eq!(
        lock["packages"]["node_modules/@bytecodealliance/componentize-js"]["version"],
        pinned
    );
    let requirements =
        std::fs::read_to_string(repo.join("plugins/python/validate/requirements.txt"))
            .expect("requirements.txt");
    assert!(
        requirements
            .lines()
            .any(|l| l.trim().starts_with("componentize-py==")),
        "{requirements}"
    );
}
