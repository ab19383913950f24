//! A `filter` whose behaviour its use's `config` chooses, to probe the filter phases from
//! the end-to-end tests.
//!
//! Config: `name` (default `"probe"`) and `mode`:
//! - none: appends `name` to the request's `x-chain` header and to the response's
//!   `x-chain-out` header (so the tests see the order of both passes), remembers the
//!   request's `x-tag` in instance memory and sends it back as `x-saw-NAME` (so the tests
//!   see that both calls of one request share an instance), and counts its
//!   `on-response` calls in instance memory as `x-count-NAME` (always 1 unless instance
//!   state leaks from one request to the next);
//! - always: when an authorizer let the request in, sets the request header
//!   `x-auth-seen: AUTHORIZER/PRINCIPAL/TENANT` from what the filter was given;
//! - always: on a mutual-TLS connection, sets `x-tls-client: SUBJECT;SAN,SAN` and
//!   `x-tls-fingerprint` from the client certificate it was given;
//! - `"respond"`: answers `418` from `on-request`;
//! - `"rewrite"`: sets the path to config `to` and the query to `rewritten=1`;
//! - `"upper"`: upper-cases the request body and the response body (needs `body = true`);
//! - `"trap-request"` / `"trap-response"`: panics in that call (and, in any mode, a
//!   request with an `x-probe-trap` header panics in `on-request`);
//! - `"loop-request"`: never returns from `on-request`;
//! - `"bad-header"`: returns an invalid header name from `on-request`;
//! - `"body-without-asking"`: returns a request body although it was given none;
//! - `"request-only"`: answers `continue-without-response` (its `on-response` must not
//!   run: it would show in `x-chain-out`), after setting the request header
//!   `x-requests-NAME` to the number of `on-request` calls this instance has served.

use std::cell::RefCell;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "weir:plugin/filter",
});

use weir::plugin::config;

thread_local! {
    /// What `on-request` saw, for `on-response` of the same request.
    static SAW: RefCell<Option<String>> = const { RefCell::new(None) };
    /// `on-response` calls in this instance.
    static COUNT: RefCell<u32> = const { RefCell::new(0) };
    /// `on-request` calls in this instance (mode `request-only`).
    static REQUESTS: RefCell<u32> = const { RefCell::new(0) };
}

/// The string value of `"key":"..."` in a flat JSON object (test configs only).
fn field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let end = json[start..].find('"')?;
    Some(json[start..start + end].to_owned())
}

fn append(headers: &mut Vec<(String, String)>, name: &str, item: &str) {
    match headers.iter_mut().find(|(n, _)| n == name) {
        Some((_, value)) => {
            value.push(',');
            value.push_str(item);
        }
        None => headers.push((name.to_owned(), item.to_owned())),
    }
}

struct Probe;

impl Guest for Probe {
    fn on_request(mut request: Request) -> RequestOutcome {
        let config = config::get();
        let name = field(&config, "name").unwrap_or_else(|| "probe".to_owned());
        let mode = field(&config, "mode").unwrap_or_default();
        let tag = request
            .headers
            .iter()
            .find(|(n, _)| n == "x-tag")
            .map(|(_, v)| v.clone());
        SAW.with(|saw| *saw.borrow_mut() = tag);
        if request.headers.iter().any(|(n, _)| n == "x-probe-trap") {
            panic!("probe-filter: trap requested by the request");
        }
        append(&mut request.headers, "x-chain", &name);
        if let Some(auth) = &request.auth {
            let tenant = auth
                .context
                .iter()
                .find(|(k, _)| k == "tenant")
                .map_or("", |(_, v)| v.as_str());
            let seen = format!("{}/{}/{tenant}", auth.authorizer, auth.principal);
            request.headers.push(("x-auth-seen".to_owned(), seen));
        }
        if let Some(cert) = &request.tls_client {
            let seen = format!("{};{}", cert.subject, cert.sans.join(","));
            request.headers.push(("x-tls-client".to_owned(), seen));
            let fingerprint = cert.fingerprint_sha256.clone();
            request
                .headers
                .push(("x-tls-fingerprint".to_owned(), fingerprint));
        }
        match mode.as_str() {
            "respond" => {
                return RequestOutcome::Respond(Response {
                    status: 418,
                    headers: vec![("x-answered-by".to_owned(), name.clone())],
                    body: Some(format!("answered by {name}").into_bytes()),
                });
            }
            "rewrite" => {
                request.path = field(&config, "to").unwrap_or_else(|| "/".to_owned());
                request.query = "rewritten=1".to_owned();
            }
            "upper" => {
                if let Some(body) = &mut request.body {
                    body.make_ascii_uppercase();
                }
            }
            "trap-request" => panic!("probe-filter: trap requested"),
            "loop-request" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "bad-header" => request
                .headers
                .push(("bad header".to_owned(), "x".to_owned())),
            "body-without-asking" => request.body = Some(b"sneaky".to_vec()),
            "request-only" => {
                let served = REQUESTS.with(|requests| {
                    *requests.borrow_mut() += 1;
                    *requests.borrow()
                });
                request
                    .headers
                    .push((format!("x-requests-{name}"), served.to_string()));
                return RequestOutcome::ContinueWithoutResponse(request);
            }
            _ => {}
        }
        RequestOutcome::Continue(request)
    }

    fn on_response(mut response: Response) -> Response {
        let config = config::get();
        let name = field(&config, "name").unwrap_or_else(|| "probe".to_owned());
        let mode = field(&config, "mode").unwrap_or_default();
        if mode == "trap-response" {
            panic!("probe-filter: trap requested");
        }
        let count = COUNT.with(|count| {
            *count.borrow_mut() += 1;
            *count.borrow()
        });
        let saw = SAW.with(|saw| saw.borrow().clone()).unwrap_or_default();
        append(&mut response.headers, "x-chain-out", &name);
        response.headers.push((format!("x-saw-{name}"), saw));
        response
            .headers
            .push((format!("x-count-{name}"), count.to_string()));
        if mode == "upper"
            && let Some(body) = &mut response.body
        {
            body.make_ascii_uppercase();
        }
        response
    }
}

export!(Probe);
