//! `transform`: a Weir `filter` plugin that maps requests and responses as its
//! configuration declares, with no code.
//!
//! On the request, in this order: rename, remove and set header fields; copy query and
//! route parameters into headers; rename, remove and set fields of a JSON body. On the
//! response: remap the status, then the same header and body rules. Bodies are only
//! touched when the use gives them (`body = true`); a use with body rules that does not
//! is a configuration error, answered with a 500 so it cannot go unnoticed.
//!
//! The configuration is documented in README.md; [`rules`] validates it.

mod fields;
mod rules;

use weir_plugin::{Filter, Request, RequestOutcome, Response, headers, log};

use crate::rules::{Rules, Status};

/// The plugin: its rules, built from the use's `config`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(transparent)]
struct Transform {
    rules: Rules,
}

impl Filter for Transform {
    fn on_request(&mut self, mut request: Request) -> RequestOutcome {
        let rules = &self.rules.request;
        rules.headers.apply(&mut request.headers);
        for (param, header) in &rules.params_to_headers {
            let value = request.param(param).map(str::to_owned);
            copy_to_header(&mut request, value, &header.0, "route parameter", param);
        }
        for (key, header) in &rules.query_to_headers {
            let value = request.query_param(key);
            copy_to_header(&mut request, value, &header.0, "query parameter", key);
        }
        if rules.body.is_empty() {
            return RequestOutcome::Continue(request);
        }
        let Some(body) = &request.body else {
            return RequestOutcome::Respond(needs_body("request"));
        };
        match rules.body.apply(body) {
            Ok(Some(changed)) => request.set_body(changed),
            Ok(None) => {}
            Err(_) => {
                return RequestOutcome::Respond(Response::error(
                    400,
                    "expected a JSON object body",
                ));
            }
        }
        RequestOutcome::Continue(request)
    }

    fn on_response(&mut self, mut response: Response) -> Response {
        let rules = &self.rules.response;
        if let Ok(status) = Status::try_from(response.status)
            && let Some(mapped) = rules.status_map.get(&status)
        {
            response.status = mapped.0;
            if mapped.forbids_body() {
                // The new status carries no body: replace whatever came with nothing.
                response.remove_header("content-type");
                response.set_body(Vec::new());
            }
        }
        rules.headers.apply(&mut response.headers);
        if rules.body.is_empty() || Status(response.status).forbids_body() {
            return response;
        }
        let Some(body) = &response.body else {
            return needs_body("response");
        };
        match rules.body.apply(body) {
            Ok(Some(changed)) => response.set_body(changed),
            Ok(None) => {}
            Err(_) => log::debug("response body is not a JSON object: left as it is"),
        }
        response
    }

    /// A use with no response rules costs one call per request, not two.
    fn wants_response(&self) -> bool {
        !self.rules.response.is_empty()
    }
}

weir_plugin::export_filter!(Transform);

/// Sets `header` to a parameter's value, when the parameter is there and its value can be
/// a header value (a decoded query value may hold control characters: it is skipped).
fn copy_to_header(
    request: &mut Request,
    value: Option<String>,
    header: &str,
    kind: &str,
    name: &str,
) {
    let Some(value) = value else {
        return;
    };
    if headers::is_valid_value(&value) {
        request.set_header(header, value);
    } else {
        log::debug(&format!(
            "{kind} `{name}` is not a valid header value: not copied"
        ));
    }
}

/// The answer when body rules meet a use that gives no body.
fn needs_body(side: &str) -> Response {
    log::error(&format!(
        "transform has {side} body rules but its use does not give bodies: set body = true"
    ));
    Response::error(500, "plugin misconfigured")
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use weir_plugin::testing;

    use super::*;

    fn transform(config: Value) -> Transform {
        weir_plugin::config::parse(&config.to_string()).expect("a valid config")
    }

    fn continued(outcome: RequestOutcome) -> Request {
        match outcome {
            RequestOutcome::Continue(request)
            | RequestOutcome::ContinueWithoutResponse(request) => request,
            RequestOutcome::Respond(response) => panic!("answered {}", response.status),
        }
    }

    fn responded(outcome: RequestOutcome) -> Response {
        match outcome {
            RequestOutcome::Respond(response) => response,
            RequestOutcome::Continue(request)
            | RequestOutcome::ContinueWithoutResponse(request) => {
                panic!("let {} through", request.path)
            }
        }
    }

    #[test]
    fn an_empty_config_changes_nothing() {
        let mut filter = transform(json!({}));
        let request = Request::new("POST", "/a?b=c")
            .with_header("x", "y")
            .with_body("not even json");
        assert_eq!(continued(filter.on_request(request.clone())), request);
        let response = Response::text(404, "no");
        assert_eq!(filter.on_response(response.clone()), response);
    }

    #[test]
    fn request_headers_params_and_query() {
        let mut filter = transform(json!({ "request": {
            "headers": { "rename": { "x-api-version": "x-version" }, "remove": ["cookie"], "set": { "x-source": "weir" } },
            "params_to_headers": { "id": "x-user-id" },
            "query_to_headers": { "lang": "x-lang", "absent": "x-absent", "evil": "x-evil" },
        } }));
        let request = Request::new("GET", "/users/7?lang=fr+CA&evil=a%0Ab")
            .with_param("id", "7")
            .with_header("X-API-Version", "2")
            .with_header("cookie", "session=1")
            .with_header("x-source", "client");
        let out = continued(filter.on_request(request));
        assert_eq!(out.header("x-version"), Some("2"));
        assert_eq!(out.header("x-api-version"), None);
        assert_eq!(out.header("cookie"), None);
        assert_eq!(out.header("x-source"), Some("weir"));
        assert_eq!(out.header("x-user-id"), Some("7"));
        assert_eq!(out.header("x-lang"), Some("fr CA"));
        assert_eq!(out.header("x-absent"), None);
        assert_eq!(out.header("x-evil"), None);
        assert_eq!(out.body, None);
    }

    #[test]
    fn request_bodies_are_mapped_when_given() {
        let mut filter = transform(json!({ "request": { "body": {
            "rename": { "userName": "user_name" },
            "remove": ["debug"],
            "set": { "source": "gateway" },
        } } }));
        let request = Request::new("POST", "/users")
            .with_json(json!({ "userName": "ada", "debug": true }))
            .with_header("content-length", "31");
        let out = continued(filter.on_request(request));
        assert_eq!(out.header("content-length"), None);
        assert_eq!(
            out.json::<Value>().expect("json"),
            json!({ "user_name": "ada", "source": "gateway" })
        );

        let empty = continued(filter.on_request(Request::new("GET", "/users").with_body("")));
        assert_eq!(empty.body.as_deref(), Some(&b""[..]));

        let bad = responded(filter.on_request(Request::new("POST", "/users").with_body("[1]")));
        assert_eq!(bad.status, 400);
        assert_eq!(
            bad.json_body::<Value>().ok(),
            Some(json!({ "message": "expected a JSON object body" }))
        );
    }

    #[test]
    fn body_rules_without_bodies_are_a_misconfiguration() {
        testing::reset();
        let mut filter = transform(json!({
            "request": { "body": { "remove": ["password"] } },
            "response": { "body": { "remove": ["internal"] } },
        }));
        let refused = responded(filter.on_request(Request::new("POST", "/login")));
        assert_eq!(refused.status, 500);
        assert_eq!(filter.on_response(Response::new(200)).status, 500);
        assert!(testing::logs()[0].1.contains("set body = true"));
    }

    #[test]
    fn responses_status_headers_and_bodies() {
        let mut filter = transform(json!({ "response": {
            "status_map": { "404": 204, "500": 502 },
            "headers": { "remove": ["server"], "set": { "cache-control": "no-store" } },
            "body": { "remove": ["internal"], "set": { "api": "v2" } },
        } }));
        let ok = Response::json(200, &json!({ "id": 1, "internal": "x" }))
            .with_header("server", "backend/1.0");
        let out = filter.on_response(ok);
        assert_eq!(out.status, 200);
        assert_eq!(out.header("server"), None);
        assert_eq!(out.header("cache-control"), Some("no-store"));
        assert_eq!(
            out.json_body::<Value>().ok(),
            Some(json!({ "id": 1, "api": "v2" }))
        );

        let missing = Response::json(404, &json!({ "message": "no such user" }))
            .with_header("content-length", "28");
        let out = filter.on_response(missing);
        assert_eq!(out.status, 204);
        assert_eq!(out.body.as_deref(), Some(&b""[..]));
        assert_eq!(out.header("content-type"), None);
        assert_eq!(out.header("content-length"), None);

        // Without `body = true` a mapped status still empties the body it cannot see.
        let mut heads_only = transform(json!({ "response": { "status_map": { "404": 204 } } }));
        let out = heads_only.on_response(Response::new(404));
        assert_eq!((out.status, out.body), (204, Some(Vec::new())));

        let failed = filter.on_response(Response::text(500, "boom"));
        assert_eq!(failed.status, 502);
        assert_eq!(
            failed.text_body().ok(),
            Some("boom"),
            "not JSON: left as it is"
        );
    }

    #[test]
    fn runs_through_the_export_with_the_use_config() {
        testing::reset();
        testing::set_config(&json!({ "request": { "headers": { "set": { "x-a": "1" } } } }));
        let outcome = testing::on_request::<Transform>(Request::new("GET", "/"));
        // No response rules: the gateway need not call `on-response`.
        assert!(matches!(
            outcome,
            RequestOutcome::ContinueWithoutResponse(_)
        ));
        assert_eq!(continued(outcome).header("x-a"), Some("1"));

        testing::set_config(&json!({ "response": { "headers": { "set": { "x-b": "2" } } } }));
        let outcome = testing::on_request::<Transform>(Request::new("GET", "/"));
        assert!(matches!(outcome, RequestOutcome::Continue(_)));
        let response = testing::on_response::<Transform>(Response::new(200));
        assert_eq!(response.header("x-b"), Some("2"));

        testing::set_config(&json!({ "request": { "headers": { "sett": {} } } }));
        let refused = responded(testing::on_request::<Transform>(Request::new("GET", "/")));
        assert_eq!(refused.status, 500);
    }
}
