//! Fields of a JSON object addressed by dotted paths (`user.name`), and the body rules
//! that rename, remove and set them.

use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

/// A path to a field: object keys from the body's top level down, written `a.b.c`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct FieldPath(Vec<String>);

impl TryFrom<String> for FieldPath {
    type Error = String;

    fn try_from(path: String) -> Result<Self, String> {
        let keys: Vec<String> = path.split('.').map(str::to_owned).collect();
        if keys.iter().any(String::is_empty) {
            return Err(format!("`{path}` is not a field path (keys joined by `.`)"));
        }
        Ok(Self(keys))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

impl FieldPath {
    /// Whether `self` is `other` or lies inside it.
    pub(crate) fn is_within(&self, other: &Self) -> bool {
        self.0.starts_with(&other.0)
    }

    /// Removes the field and returns its value; `None` when it is not there.
    pub(crate) fn take(&self, object: &mut Map<String, Value>) -> Option<Value> {
        let (last, parents) = self.0.split_last()?;
        let mut current = object;
        for key in parents {
            current = current.get_mut(key)?.as_object_mut()?;
        }
        current.remove(last)
    }

    /// Sets the field to `value`, creating the objects on the way that are missing. A key
    /// on the way that holds something other than an object stops it: the value comes
    /// back.
    pub(crate) fn put(&self, object: &mut Map<String, Value>, value: Value) -> Result<(), Value> {
        let Some((last, parents)) = self.0.split_last() else {
            return Err(value);
        };
        let mut current = object;
        for key in parents {
            let next = current
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            let Some(next) = next.as_object_mut() else {
                return Err(value);
            };
            current = next;
        }
        current.insert(last.clone(), value);
        Ok(())
    }
}

/// What to do to the fields of a JSON body: rename, then remove, then set.
#[derive(Debug, Default, Deserialize)]
#[serde(try_from = "RawBodyRules")]
pub(crate) struct BodyRules {
    rename: Vec<(FieldPath, FieldPath)>,
    remove: Vec<FieldPath>,
    set: Vec<(FieldPath, Value)>,
}

/// `body = { rename = {..}, remove = [..], set = {..} }` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBodyRules {
    #[serde(default)]
    rename: std::collections::BTreeMap<FieldPath, FieldPath>,
    #[serde(default)]
    remove: Vec<FieldPath>,
    #[serde(default)]
    set: std::collections::BTreeMap<FieldPath, Value>,
}

impl TryFrom<RawBodyRules> for BodyRules {
    type Error = String;

    fn try_from(raw: RawBodyRules) -> Result<Self, String> {
        // Renames apply together, so one may not feed or take from another: the result
        // would depend on an order the configuration does not have.
        for (from, to) in &raw.rename {
            for other in raw.rename.keys().filter(|other| *other != from) {
                if to.is_within(other) || from.is_within(other) {
                    return Err(format!(
                        "rename of `{from}` to `{to}` overlaps `{other}`, which is renamed too"
                    ));
                }
            }
        }
        Ok(Self {
            rename: raw.rename.into_iter().collect(),
            remove: raw.remove,
            set: raw.set.into_iter().collect(),
        })
    }
}

/// Why a body could not be transformed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NotAnObject;

impl BodyRules {
    /// Whether there is nothing to do.
    pub(crate) fn is_empty(&self) -> bool {
        self.rename.is_empty() && self.remove.is_empty() && self.set.is_empty()
    }

    /// The body with the rules applied: `Ok(None)` when it stays as it is (no rules, or an
    /// empty body), [`NotAnObject`] when it is not a JSON object.
    pub(crate) fn apply(&self, body: &[u8]) -> Result<Option<Vec<u8>>, NotAnObject> {
        if self.is_empty() || body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) else {
            return Err(NotAnObject);
        };
        for (from, to) in &self.rename {
            if let Some(value) = from.take(&mut object)
                && let Err(value) = to.put(&mut object, value)
            {
                // Nowhere to put it: leave it where it was.
                let _ = from.put(&mut object, value);
            }
        }
        for path in &self.remove {
            path.take(&mut object);
        }
        for (path, value) in &self.set {
            // A path through a non-object sets nothing.
            let _ = path.put(&mut object, value.clone());
        }
        Ok(Some(Value::Object(object).to_string().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules(config: Value) -> BodyRules {
        serde_json::from_value(config).expect("valid rules")
    }

    fn apply(rules: &BodyRules, body: Value) -> Value {
        let out = rules
            .apply(body.to_string().as_bytes())
            .expect("an object")
            .expect("changed");
        serde_json::from_slice(&out).expect("json")
    }

    #[test]
    fn rename_remove_set_in_that_order_at_any_depth() {
        let rules = rules(json!({
            "rename": { "userName": "user.name", "meta.v": "version" },
            "remove": ["password", "meta", "absent.field"],
            "set": { "source": "gateway", "user.verified": true },
        }));
        let body = json!({
            "userName": "ada",
            "password": "hunter2",
            "meta": { "v": 2, "trace": "x" },
            "keep": [1, 2],
        });
        assert_eq!(
            apply(&rules, body),
            json!({
                "user": { "name": "ada", "verified": true },
                "version": 2,
                "keep": [1, 2],
                "source": "gateway",
            })
        );
    }

    #[test]
    fn paths_through_non_objects_change_nothing() {
        let rules = rules(json!({ "rename": { "a": "b.c" }, "set": { "n.x": 1 } }));
        assert_eq!(
            apply(&rules, json!({ "a": 1, "b": "text", "n": [0] })),
            json!({ "a": 1, "b": "text", "n": [0] })
        );
    }

    #[test]
    fn bodies_that_are_not_objects() {
        let rules = rules(json!({ "remove": ["x"] }));
        assert_eq!(rules.apply(b"[1]"), Err(NotAnObject));
        assert_eq!(rules.apply(b"not json"), Err(NotAnObject));
        assert_eq!(rules.apply(b""), Ok(None));
        assert_eq!(rules.apply(b" \n"), Ok(None));
        assert_eq!(BodyRules::default().apply(b"not json"), Ok(None));
    }

    #[test]
    fn invalid_rules_are_refused() {
        let chain =
            serde_json::from_value::<BodyRules>(json!({ "rename": { "a": "b", "b": "c" } }));
        assert!(
            chain
                .expect_err("a chain")
                .to_string()
                .contains("renamed too")
        );
        let nested =
            serde_json::from_value::<BodyRules>(json!({ "rename": { "a": "x", "a.b": "y" } }));
        assert!(nested.is_err());
        let empty_key = serde_json::from_value::<BodyRules>(json!({ "remove": ["a..b"] }));
        assert!(
            empty_key
                .expect_err("bad path")
                .to_string()
                .contains("not a field path")
        );
        let unknown = serde_json::from_value::<BodyRules>(json!({ "drop": ["a"] }));
        assert!(unknown.is_err());
    }
}
