//! The plugin's configuration: the `config` table of its use in the route file, which
//! reaches the plugin as a JSON object, deserialized into a type of the plugin's own.
//!
//! The role traits ([`Handler`](crate::Handler), [`Filter`](crate::Filter),
//! [`Authorizer`](crate::Authorizer)) do this for the plugin type itself before an
//! instance's first call, and answer with [`misconfigured`] when it fails; [`get`] is for
//! code that wants the configuration some other way.

use std::fmt;

use serde::de::DeserializeOwned;

use crate::Response;

/// The status of the answer a misconfigured plugin gives ([`misconfigured`]).
pub const MISCONFIGURED_STATUS: u16 = 500;

/// Why the configuration does not fit the type asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where in the configuration the problem is (`tokens[0].sha256`), empty for the
    /// whole of it.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "invalid config: {}", self.message)
        } else {
            write!(f, "invalid config at `{}`: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The configuration as the gateway gives it: a JSON object, `{}` when the use gives none.
pub fn raw() -> String {
    crate::host::config_get()
}

/// The configuration deserialized as `T`.
pub fn get<T: DeserializeOwned>() -> Result<T, ConfigError> {
    parse(&raw())
}

/// Deserializes a configuration (a JSON document) as `T`, saying where it does not fit.
///
/// An empty object also deserializes into a unit struct (`struct Plugin;`), so a plugin
/// without settings needs no fields.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Settings {
///     limit: u32,
/// }
/// let err = weir_plugin::config::parse::<Settings>(r#"{"limit": "ten"}"#).err().unwrap();
/// assert_eq!(err.path, "limit");
/// assert!(err.to_string().starts_with("invalid config at `limit`: invalid type"));
/// ```
pub fn parse<T: DeserializeOwned>(json: &str) -> Result<T, ConfigError> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let value = match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => value,
        Err(err) => {
            // `{}` for a plugin whose type is a unit struct: take it as `null`.
            if json.trim() == "{}"
                && let Ok(value) = serde_json::from_str::<T>("null")
            {
                return Ok(value);
            }
            let path = err.path().to_string();
            return Err(ConfigError {
                path: if path == "." { String::new() } else { path },
                message: err.into_inner().to_string(),
            });
        }
    };
    deserializer.end().map_err(|err| ConfigError {
        path: String::new(),
        message: err.to_string(),
    })?;
    Ok(value)
}

/// The answer of a plugin whose configuration is invalid: logs `err` (an operator's
/// problem, so it goes to the gateway log, not to the client) and gives a 500 JSON
/// error that tells the client nothing more.
pub fn misconfigured(err: &ConfigError) -> Response {
    crate::log::error(&err.to_string());
    Response::error(MISCONFIGURED_STATUS, "plugin misconfigured")
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        name: String,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Item {
        weight: u8,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Unit;

    #[test]
    fn errors_say_where() {
        let err =
            parse::<Settings>(r#"{"name": "a", "items": [{"weight": 1}, {"weight": 300}]}"#).err();
        let err = err.expect("300 does not fit a u8");
        assert_eq!(err.path, "items[1].weight");
        assert!(err.message.contains("300"), "{}", err.message);

        let err = parse::<Settings>(r#"{"nme": "a"}"#).expect_err("unknown field");
        assert!(
            err.message.contains("unknown field `nme`"),
            "{}",
            err.message
        );

        let err = parse::<Settings>("{} x").expect_err("trailing characters");
        assert_eq!(err.path, "");
        assert_eq!(err.to_string(), format!("invalid config: {}", err.message));
    }

    #[test]
    fn good_configs_and_unit_structs() {
        assert_eq!(
            parse::<Settings>(r#"{"name": "a"}"#),
            Ok(Settings {
                name: "a".into(),
                items: vec![]
            })
        );
        assert_eq!(parse::<Unit>("{}"), Ok(Unit));
        assert!(parse::<Unit>(r#"{"x": 1}"#).is_err());
    }

    #[test]
    fn misconfigured_is_a_500_that_logs_the_detail() {
        crate::testing::reset();
        let err = ConfigError {
            path: "header".into(),
            message: "bad".into(),
        };
        let response = misconfigured(&err);
        assert_eq!(response.status, 500);
        assert_eq!(
            response.text_body().ok(),
            Some(r#"{"message":"plugin misconfigured"}"#)
        );
        assert_eq!(
            crate::testing::logs(),
            [(
                crate::log::Level::Error,
                "invalid config at `header`: bad".to_owned()
            )]
        );
    }
}
