//! An `authorizer` that counts its calls, to probe the authorize phase (decision cache,
//! context forwarding, usage-plan keys, failing closed) from the end-to-end tests.
//!
//! It decides on the request's `x-token` header:
//! - `allow-NAME`: allow with principal `NAME` and context `tenant = "acme"`,
//!   `calls = N`, where N counts the calls made for this token (kept in the plugin KV,
//!   so a cached decision shows the N of the call that made it);
//! - `plan-KEY`: allow with principal `planned` and usage-plan key `KEY`;
//! - `deny`: deny with `403`, header `x-denied-by: probe` and a JSON body;
//! - `trap`: panics;
//! - `empty`: allow with an empty principal (invalid output);
//! - anything else: deny with `401`.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "weir:plugin/authorizer",
});

use weir::plugin::kv;

struct Probe;

/// Counts a call for `token` in the KV store; returns the new count.
fn count(token: &str) -> u64 {
    let key = format!("calls:{token}");
    let previous = kv::get(&key)
        .ok()
        .flatten()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.parse::<u64>().ok())
        .unwrap_or(0);
    let next = previous + 1;
    let _ = kv::set(&key, next.to_string().as_bytes(), None);
    next
}

fn deny(status: u16, message: &str) -> Decision {
    Decision::Deny(Response {
        status,
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("x-denied-by".to_owned(), "probe".to_owned()),
        ],
        body: Some(format!("{{\"message\":\"{message}\"}}").into_bytes()),
    })
}

impl Guest for Probe {
    fn authorize(request: Request) -> Decision {
        let token = request
            .headers
            .iter()
            .find(|(name, _)| name == "x-token")
            .map(|(_, value)| value.clone())
            .unwrap_or_default();
        let calls = count(&token);
        if let Some(name) = token.strip_prefix("allow-") {
            return Decision::Allow(Allow {
                principal: name.to_owned(),
                context: vec![
                    ("tenant".to_owned(), "acme".to_owned()),
                    ("calls".to_owned(), calls.to_string()),
                ],
                usage_plan_key: None,
            });
        }
        if let Some(key) = token.strip_prefix("plan-") {
            return Decision::Allow(Allow {
                principal: "planned".to_owned(),
                context: Vec::new(),
                usage_plan_key: Some(key.to_owned()),
            });
        }
        match token.as_str() {
            "deny" => deny(403, "denied by probe"),
            "trap" => panic!("probe-authorizer: trap requested"),
            "empty" => Decision::Allow(Allow {
                principal: String::new(),
                context: Vec::new(),
                usage_plan_key: None,
            }),
            _ => deny(401, "unknown token"),
        }
    }
}

export!(Probe);
