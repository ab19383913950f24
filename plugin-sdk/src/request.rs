//! Reading and changing the [`Request`] a plugin is given: headers, query and route
//! parameters, the caller's identity and a JSON body; and building one in tests.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::body::{self, BodyError};
use crate::headers;
use crate::{AuthContext, Request};

impl Request {
    /// A request with no headers, parameters or body, as a test would build it.
    /// `path_and_query` is split at the first `?` into [`path`](Request::path) and
    /// [`query`](Request::query).
    ///
    /// ```
    /// let request = weir_plugin::Request::new("GET", "/users?limit=2");
    /// assert_eq!(request.path, "/users");
    /// assert_eq!(request.query_param("limit").as_deref(), Some("2"));
    /// ```
    pub fn new(method: &str, path_and_query: &str) -> Self {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            ..Self::default()
        }
    }

    /// This request with one more header field (builder style, for tests).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.append_header(name, value);
        self
    }

    /// This request with one more route parameter (builder style, for tests).
    pub fn with_param(mut self, name: &str, value: &str) -> Self {
        self.params.push((name.to_owned(), value.to_owned()));
        self
    }

    /// This request with a body, as a use with `body = true` gives it (builder style).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// This request with a JSON body and `content-type: application/json` (builder
    /// style, for tests).
    pub fn with_json(mut self, value: serde_json::Value) -> Self {
        self.set_header("content-type", body::JSON_CONTENT_TYPE);
        self.body = Some(value.to_string().into_bytes());
        self
    }

    /// This request as an authorizer let it in (builder style, for tests).
    pub fn with_auth(
        mut self,
        authorizer: &str,
        principal: &str,
        context: &[(&str, &str)],
    ) -> Self {
        self.auth = Some(AuthContext {
            authorizer: authorizer.to_owned(),
            principal: principal.to_owned(),
            context: context
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        });
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        headers::get(&self.headers, name)
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        headers::get_all(&self.headers, name)
    }

    /// Replaces every value of header `name` with `value`.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        headers::set(&mut self.headers, name, value);
    }

    /// Adds a value of header `name` after the existing ones.
    pub fn append_header(&mut self, name: &str, value: impl Into<String>) {
        headers::append(&mut self.headers, name, value);
    }

    /// Removes header `name`; says whether it was there.
    pub fn remove_header(&mut self, name: &str) -> bool {
        headers::remove(&mut self.headers, name)
    }

    /// The route parameter `name` (`/users/{id}` → `param("id")`), percent-decoded.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The query string's pairs in order, decoded as a form (`+` is a space, `%XX` a
    /// byte; invalid UTF-8 becomes U+FFFD). A key without `=` has an empty value.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        parse_query(&self.query)
    }

    /// The first value of query parameter `name`, decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// Who the route's authorizer said the caller is, once one let the request in.
    pub fn principal(&self) -> Option<&str> {
        self.auth.as_ref().map(|auth| auth.principal.as_str())
    }

    /// The value of `key` in the authorizer's context (a plugin authorizer's context, a
    /// JWT's claims), once one let the request in.
    pub fn auth_value(&self, key: &str) -> Option<&str> {
        let auth = self.auth.as_ref()?;
        auth.context
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON. [`BodyError::Missing`] when the use gave no body (it
    /// needs `body = true`).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, BodyError> {
        body::parse_json(self.body.as_deref())
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, BodyError> {
        body::text(self.body.as_deref())
    }

    /// Replaces the body; drops `content-length`, as the gateway frames the new body.
    /// Only a filter given the body (`body = true`) may return one.
    pub fn set_body(&mut self, body: impl Into<Vec<u8>>) {
        self.remove_header("content-length");
        self.body = Some(body.into());
    }

    /// Replaces the body with `value` as JSON and sets `content-type: application/json`.
    pub fn set_json(&mut self, value: &impl Serialize) -> Result<(), serde_json::Error> {
        let bytes = serde_json::to_vec(value)?;
        self.set_header("content-type", body::JSON_CONTENT_TYPE);
        self.set_body(bytes);
        Ok(())
    }
}

/// Decodes an `application/x-www-form-urlencoded` string (a query string) into pairs.
pub(crate) fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(key), decode_component(value))
        })
        .collect()
}

/// Decodes one form component: `+` is a space, `%XX` a byte; a `%` not followed by two
/// hex digits stays as it is.
fn decode_component(component: &str) -> String {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(index + 1..index + 3).and_then(|pair| {
                    let text = std::str::from_utf8(pair).ok()?;
                    u8::from_str_radix(text, 16).ok()
                });
                if let Some(byte) = hex {
                    out.push(byte);
                    index += 2;
                } else {
                    out.push(b'%');
                }
            }
            other => out.push(other),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_form_decoded() {
        let request = Request::new("GET", "/s?q=caf%C3%A9+au+lait&flag&empty=&q=2&bad=%zz%4");
        assert_eq!(
            request.query_pairs(),
            [
                ("q".to_owned(), "café au lait".to_owned()),
                ("flag".to_owned(), String::new()),
                ("empty".to_owned(), String::new()),
                ("q".to_owned(), "2".to_owned()),
                ("bad".to_owned(), "%zz%4".to_owned()),
            ]
        );
        assert_eq!(request.query_param("q").as_deref(), Some("café au lait"));
        assert_eq!(request.query_param("none"), None);
        assert!(Request::new("GET", "/").query_pairs().is_empty());
    }

    #[test]
    fn params_headers_and_auth() {
        let request = Request::new("GET", "/users/7")
            .with_param("id", "7")
            .with_header("X-Token", "t")
            .with_auth("partners", "partner-a", &[("tenant", "a")]);
        assert_eq!(request.param("id"), Some("7"));
        assert_eq!(request.param("ID"), None);
        assert_eq!(request.header("x-token"), Some("t"));
        assert_eq!(request.headers, [("x-token".to_owned(), "t".to_owned())]);
        assert_eq!(request.principal(), Some("partner-a"));
        assert_eq!(request.auth_value("tenant"), Some("a"));
        assert_eq!(request.auth_value("other"), None);
    }

    #[test]
    fn json_bodies() {
        #[derive(Debug, serde::Deserialize, PartialEq)]
        struct Named {
            name: String,
        }
        let mut request =
            Request::new("POST", "/users").with_json(serde_json::json!({ "name": "ada" }));
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(
            request.json::<Named>().ok(),
            Some(Named { name: "ada".into() })
        );

        request.set_header("content-length", "14");
        assert!(
            request
                .set_json(&serde_json::json!({ "name": "grace" }))
                .is_ok()
        );
        assert_eq!(request.header("content-length"), None);
        assert_eq!(request.text().ok(), Some(r#"{"name":"grace"}"#));

        let without = Request::new("POST", "/users");
        assert!(matches!(without.json::<Named>(), Err(BodyError::Missing)));
        let garbage = Request::new("POST", "/users").with_body("nope");
        assert!(matches!(garbage.json::<Named>(), Err(BodyError::Json(_))));
    }
}
