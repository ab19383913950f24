//! HTTP requests from the plugin to the upstreams its use's configuration names
//! (`upstreams = ["NAME", ...]` in `config`). Nothing else is reachable: another upstream
//! is [`Error::NotAllowed`].
//!
//! `upstreams` is a key of the plugin's own configuration too, so a plugin type with
//! `#[serde(deny_unknown_fields)]` declares it:
//!
//! ```
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Enricher {
//!     /// Read by the gateway (what `outbound::send` may reach); named here so the
//!     /// configuration fits.
//!     #[serde(default)]
//!     upstreams: Vec<String>,
//!     profile_upstream: String,
//! }
//! ```

use crate::Response;
use crate::headers;

pub use crate::bindings::weir::plugin::outbound::{Error, OutboundRequest};

impl OutboundRequest {
    /// A request to `[upstreams.UPSTREAM]` with no headers and no body.
    pub fn new(upstream: &str, method: &str, path_and_query: &str) -> Self {
        Self {
            upstream: upstream.to_owned(),
            method: method.to_owned(),
            path_and_query: path_and_query.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// This request with one more header field (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        headers::append(&mut self.headers, name, value);
        self
    }

    /// This request with a body (builder style).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// This request with a JSON body and `content-type: application/json`.
    pub fn with_json(self, value: serde_json::Value) -> Self {
        self.with_header("content-type", "application/json")
            .with_body(value.to_string().into_bytes())
    }
}

/// Sends the request and returns the whole response.
pub fn send(request: &OutboundRequest) -> Result<Response, Error> {
    crate::host::outbound_send(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn requests_go_to_the_mock_and_are_refused_without_one() {
        testing::reset();
        let request = OutboundRequest::new("profiles", "POST", "/lookup?x=1")
            .with_header("X-Trace", "t")
            .with_json(serde_json::json!({ "id": 7 }));
        assert_eq!(send(&request), Err(Error::NotAllowed));

        testing::mock_outbound(|request| {
            assert_eq!(request.upstream, "profiles");
            assert_eq!(request.path_and_query, "/lookup?x=1");
            assert_eq!(
                headers::get(&request.headers, "content-type"),
                Some("application/json")
            );
            assert_eq!(headers::get(&request.headers, "x-trace"), Some("t"));
            Ok(Response::json(200, &serde_json::json!({ "name": "ada" })))
        });
        let response = send(&request).expect("the mock answers");
        assert_eq!(
            response.json_body::<serde_json::Value>().ok(),
            Some(serde_json::json!({ "name": "ada" }))
        );
        // The responder stays for the next request.
        assert!(send(&request).is_ok());
    }
}
