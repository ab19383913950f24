//! The configuration: what to do to requests and to responses, validated as it is
//! deserialized (header names and values, field paths, statuses), so that a rule that
//! cannot work is a configuration error rather than a surprise on a request.

use std::collections::BTreeMap;

use serde::Deserialize;
use weir_plugin::headers::{self, Headers};

use crate::fields::BodyRules;

/// The whole configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rules {
    /// Applied by `on_request`.
    #[serde(default)]
    pub(crate) request: RequestRules,
    /// Applied by `on_response`.
    #[serde(default)]
    pub(crate) response: ResponseRules,
}

/// `request = { headers, query_to_headers, params_to_headers, body }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestRules {
    #[serde(default)]
    pub(crate) headers: HeaderRules,
    /// Query parameter → header that gets its (decoded) value.
    #[serde(default)]
    pub(crate) query_to_headers: BTreeMap<String, HeaderName>,
    /// Route parameter → header that gets its value.
    #[serde(default)]
    pub(crate) params_to_headers: BTreeMap<String, HeaderName>,
    #[serde(default)]
    pub(crate) body: BodyRules,
}

/// `response = { status_map, headers, body }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResponseRules {
    /// Status → status it becomes.
    #[serde(default)]
    pub(crate) status_map: BTreeMap<Status, Status>,
    #[serde(default)]
    pub(crate) headers: HeaderRules,
    #[serde(default)]
    pub(crate) body: BodyRules,
}

impl ResponseRules {
    /// Whether there is nothing to do to a response.
    pub(crate) fn is_empty(&self) -> bool {
        self.status_map.is_empty() && self.headers.is_empty() && self.body.is_empty()
    }
}

/// What to do to header fields: rename, then remove, then set.
#[derive(Debug, Default, Deserialize)]
#[serde(try_from = "RawHeaderRules")]
pub(crate) struct HeaderRules {
    rename: Vec<(HeaderName, HeaderName)>,
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
}

/// `headers = { rename = {..}, remove = [..], set = {..} }` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderRules {
    #[serde(default)]
    rename: BTreeMap<HeaderName, HeaderName>,
    #[serde(default)]
    remove: Vec<HeaderName>,
    #[serde(default)]
    set: BTreeMap<HeaderName, HeaderValue>,
}

impl TryFrom<RawHeaderRules> for HeaderRules {
    type Error = String;

    fn try_from(raw: RawHeaderRules) -> Result<Self, String> {
        // Renames apply together: one may not rename into another's source.
        for (from, to) in &raw.rename {
            if from != to && raw.rename.contains_key(to) {
                return Err(format!(
                    "rename of `{}` to `{}` lands on a header that is renamed too",
                    from.0, to.0
                ));
            }
        }
        Ok(Self {
            rename: raw.rename.into_iter().collect(),
            remove: raw.remove,
            set: raw.set.into_iter().collect(),
        })
    }
}

impl HeaderRules {
    /// Whether there are no rules.
    pub(crate) fn is_empty(&self) -> bool {
        self.rename.is_empty() && self.remove.is_empty() && self.set.is_empty()
    }

    /// Applies the rules to a header list.
    pub(crate) fn apply(&self, list: &mut Headers) {
        for (from, to) in &self.rename {
            headers::rename(list, &from.0, &to.0);
        }
        for name in &self.remove {
            headers::remove(list, &name.0);
        }
        for (name, value) in &self.set {
            headers::set(list, &name.0, value.0.as_str());
        }
    }
}

/// A valid header name, lower-case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct HeaderName(pub(crate) String);

impl TryFrom<String> for HeaderName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        if headers::is_valid_name(&name) {
            Ok(Self(name.to_ascii_lowercase()))
        } else {
            Err(format!("`{name}` is not a valid header name"))
        }
    }
}

/// A valid header value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct HeaderValue(String);

impl TryFrom<String> for HeaderValue {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        if headers::is_valid_value(&value) {
            Ok(Self(value))
        } else {
            Err(format!("{value:?} is not a valid header value"))
        }
    }
}

/// An HTTP status code, 100 to 599. In `status_map` keys it is written as a string
/// (`"404" = 204`), as TOML and JSON keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "u16")]
pub(crate) struct Status(pub(crate) u16);

impl TryFrom<u16> for Status {
    type Error = String;

    fn try_from(status: u16) -> Result<Self, String> {
        if (100..=599).contains(&status) {
            Ok(Self(status))
        } else {
            Err(format!("{status} is not an HTTP status (100 to 599)"))
        }
    }
}

impl Status {
    /// Whether a response with this status has no body (RFC 9110: 1xx, 204, 304).
    pub(crate) fn forbids_body(self) -> bool {
        self.0 < 200 || self.0 == 204 || self.0 == 304
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weir_plugin::config;

    use super::*;

    fn error(config: serde_json::Value) -> String {
        config::parse::<Rules>(&config.to_string())
            .expect_err("an invalid config")
            .to_string()
    }

    fn list(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn header_rules_rename_then_remove_then_set() {
        let rules: HeaderRules = serde_json::from_value(json!({
            "rename": { "X-Old": "x-new" },
            "remove": ["cookie", "x-new-gone"],
            "set": { "X-Source": "weir", "x-new": "overridden?" },
        }))
        .expect("valid rules");
        let mut headers = list(&[("x-old", "1"), ("cookie", "c"), ("x-source", "client")]);
        rules.apply(&mut headers);
        assert_eq!(
            headers,
            list(&[("x-new", "overridden?"), ("x-source", "weir")])
        );
    }

    #[test]
    fn every_bad_value_is_named_with_its_place() {
        let bad_name = error(json!({ "request": { "headers": { "remove": ["bad name"] } } }));
        assert!(bad_name.contains("request.headers.remove[0]"), "{bad_name}");
        let bad_value = error(json!({ "response": { "headers": { "set": { "x": "a\nb" } } } }));
        assert!(
            bad_value.contains("not a valid header value"),
            "{bad_value}"
        );
        let bad_status = error(json!({ "response": { "status_map": { "404": 700 } } }));
        assert!(
            bad_status.contains("response.status_map.404"),
            "{bad_status}"
        );
        let bad_key = error(json!({ "response": { "status_map": { "four": 204 } } }));
        assert!(bad_key.contains("status_map"), "{bad_key}");
        let chain =
            error(json!({ "request": { "headers": { "rename": { "a": "b", "b": "c" } } } }));
        assert!(chain.contains("renamed too"), "{chain}");
        let unknown = error(json!({ "request": { "status_map": {} } }));
        assert!(unknown.contains("unknown field"), "{unknown}");
        let param = error(json!({ "request": { "params_to_headers": { "id": "x id" } } }));
        assert!(param.contains("request.params_to_headers.id"), "{param}");
    }

    #[test]
    fn statuses_that_carry_no_body() {
        assert!(Status(204).forbids_body());
        assert!(Status(304).forbids_body());
        assert!(Status(101).forbids_body());
        assert!(!Status(200).forbids_body());
        assert!(!Status(404).forbids_body());
    }
}
