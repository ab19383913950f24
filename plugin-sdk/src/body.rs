//! Bodies: the JSON and text views of the optional byte bodies requests and responses
//! carry, and why reading one can fail.

use std::fmt;

use serde::de::DeserializeOwned;

/// The `content-type` the JSON helpers set.
pub(crate) const JSON_CONTENT_TYPE: &str = "application/json";

/// Why a body could not be read as asked.
#[derive(Debug)]
#[non_exhaustive]
pub enum BodyError {
    /// There is no body: the plugin's use in the route file does not say `body = true`.
    Missing,
    /// The body is not valid JSON of the expected shape.
    Json(serde_json::Error),
    /// The body is not valid UTF-8.
    Utf8(std::str::Utf8Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no body was given (the route needs body = true)"),
            Self::Json(err) => write!(f, "invalid JSON body: {err}"),
            Self::Utf8(err) => write!(f, "body is not UTF-8: {err}"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Missing => None,
            Self::Json(err) => Some(err),
            Self::Utf8(err) => Some(err),
        }
    }
}

/// Parses an optional body as JSON.
pub(crate) fn parse_json<T: DeserializeOwned>(body: Option<&[u8]>) -> Result<T, BodyError> {
    let bytes = body.ok_or(BodyError::Missing)?;
    serde_json::from_slice(bytes).map_err(BodyError::Json)
}

/// Views an optional body as UTF-8 text.
pub(crate) fn text(body: Option<&[u8]>) -> Result<&str, BodyError> {
    let bytes = body.ok_or(BodyError::Missing)?;
    std::str::from_utf8(bytes).map_err(BodyError::Utf8)
}
