//! Building and changing a [`Response`]: JSON, text and error answers, headers, bodies.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Response;
use crate::body::{self, BodyError};
use crate::headers;

/// The `content-type` of [`Response::text`].
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

impl Response {
    /// A response with this status, no headers and no body (an empty body from a handler
    /// or a deny; "keep the body" from a filter's `on_response`).
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
        }
    }

    /// A JSON response: `value` serialized, `content-type: application/json`. A value
    /// that cannot be serialized (a map with non-string keys, a failing `Serialize`
    /// impl) gives a 500 [`Response::error`] instead.
    ///
    /// ```
    /// let response = weir_plugin::Response::json(200, &serde_json::json!({ "ok": true }));
    /// assert_eq!(response.header("content-type"), Some("application/json"));
    /// assert_eq!(response.body.as_deref(), Some(&br#"{"ok":true}"#[..]));
    /// ```
    pub fn json(status: u16, value: &impl Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => Self::new(status)
                .with_header("content-type", body::JSON_CONTENT_TYPE)
                .with_body(bytes),
            Err(_) => Self::error(500, "response could not be serialized"),
        }
    }

    /// A plain text response (`content-type: text/plain; charset=utf-8`).
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Self::new(status)
            .with_header("content-type", TEXT_CONTENT_TYPE)
            .with_body(text.into().into_bytes())
    }

    /// A JSON error in the gateway's own shape: `{"message": "..."}`.
    ///
    /// ```
    /// let response = weir_plugin::Response::error(401, "missing token");
    /// assert_eq!(response.status, 401);
    /// assert_eq!(response.body.as_deref(), Some(&br#"{"message":"missing token"}"#[..]));
    /// ```
    pub fn error(status: u16, message: &str) -> Self {
        let body = serde_json::json!({ "message": message }).to_string();
        Self::new(status)
            .with_header("content-type", body::JSON_CONTENT_TYPE)
            .with_body(body.into_bytes())
    }

    /// This response with one more header field (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.append_header(name, value);
        self
    }

    /// This response with this body (builder style).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
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

    /// The body parsed as JSON. [`BodyError::Missing`] when there is none (in a filter's
    /// `on_response`: its use does not say `body = true`).
    pub fn json_body<T: DeserializeOwned>(&self) -> Result<T, BodyError> {
        body::parse_json(self.body.as_deref())
    }

    /// The body as UTF-8 text.
    pub fn text_body(&self) -> Result<&str, BodyError> {
        body::text(self.body.as_deref())
    }

    /// Replaces the body; drops `content-length`, as the gateway frames the new body.
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn constructors_set_content_type_and_body() {
        let text = Response::text(200, "hi");
        assert_eq!(text.header("Content-Type"), Some(TEXT_CONTENT_TYPE));
        assert_eq!(text.text_body().ok(), Some("hi"));

        let json = Response::json(201, &serde_json::json!({ "id": 1 }));
        assert_eq!(json.status, 201);
        assert_eq!(
            json.json_body::<serde_json::Value>().ok(),
            Some(serde_json::json!({ "id": 1 }))
        );

        assert_eq!(Response::new(204).body, None);
    }

    #[test]
    fn unserializable_values_become_a_500() {
        let mut bad = HashMap::new();
        bad.insert(vec![1u8], 1);
        let response = Response::json(200, &bad);
        assert_eq!(response.status, 500);
        assert_eq!(
            response.json_body::<serde_json::Value>().ok(),
            Some(serde_json::json!({ "message": "response could not be serialized" }))
        );
    }

    #[test]
    fn set_json_replaces_body_and_framing() {
        let mut response = Response::text(200, "old").with_header("content-length", "3");
        assert!(response.set_json(&[1, 2]).is_ok());
        assert_eq!(response.header("content-length"), None);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.text_body().ok(), Some("[1,2]"));
        assert!(response.remove_header("CONTENT-TYPE"));
        assert!(response.headers.is_empty());
    }
}
