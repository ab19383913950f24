//! A `handler` that answers with what an upstream answers, through `outbound`: the
//! end-to-end tests' probe of outbound HTTP.
//!
//! The request's query `upstream=NAME` picks the upstream (default: config `upstream`);
//! the request's path and method are sent on, with an `x-fetched-by: fetcher` header and
//! the request body. The answer is the upstream's status and body, or, when `outbound`
//! fails, `599` with the error's name as the body (`not-allowed`, `unreachable`,
//! `timeout`, `too-large`).

wit_bindgen::generate!({
    path: "../../../wit",
    world: "weir:plugin/handler",
});

use weir::plugin::config;
use weir::plugin::outbound::{self, OutboundRequest};

/// The string value of `"key":"..."` in a flat JSON object (test configs only).
fn field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let end = json[start..].find('"')?;
    Some(json[start..start + end].to_owned())
}

struct Fetcher;

impl Guest for Fetcher {
    fn handle(request: Request) -> Response {
        let upstream = request
            .query
            .split('&')
            .find_map(|pair| pair.strip_prefix("upstream="))
            .map(str::to_owned)
            .or_else(|| field(&config::get(), "upstream"))
            .unwrap_or_default();
        let sent = outbound::send(&OutboundRequest {
            upstream,
            method: request.method.clone(),
            path_and_query: request.path.clone(),
            headers: vec![("x-fetched-by".to_owned(), "fetcher".to_owned())],
            body: request.body.clone(),
        });
        match sent {
            Ok(response) => Response {
                status: response.status,
                headers: vec![("x-upstream-status".to_owned(), response.status.to_string())],
                body: response.body,
            },
            Err(error) => {
                let name = match error {
                    outbound::Error::NotAllowed => "not-allowed",
                    outbound::Error::Unreachable => "unreachable",
                    outbound::Error::Timeout => "timeout",
                    outbound::Error::TooLarge => "too-large",
                };
                Response {
                    status: 599,
                    headers: Vec::new(),
                    body: Some(name.as_bytes().to_vec()),
                }
            }
        }
    }
}

export!(Fetcher);
