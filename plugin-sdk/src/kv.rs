//! The plugin's own key-value store, kept by the gateway's state backend (memory or
//! Redis). Keys are namespaced per plugin name; every use and every instance of one
//! plugin shares them, so this is where state that must outlive a request goes.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::weir::plugin::kv as wit;

/// Why a store operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The state backend cannot be reached; try later.
    Unavailable,
    /// The key or value is larger than the gateway accepts.
    TooLarge,
    /// The stored value is not the JSON expected ([`get_json`]), or the value could not
    /// be serialized ([`set_json`]).
    Json(serde_json::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable => f.write_str("the key-value store is unavailable"),
            Self::TooLarge => f.write_str("the key or value is too large"),
            Self::Json(err) => write!(f, "stored value is not the expected JSON: {err}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Json(err) => Some(err),
            Self::Unavailable | Self::TooLarge => None,
        }
    }
}

impl From<wit::Error> for Error {
    fn from(err: wit::Error) -> Self {
        match err {
            wit::Error::Unavailable => Self::Unavailable,
            wit::Error::TooLarge => Self::TooLarge,
        }
    }
}

/// The value stored under `key`, if any.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    crate::host::kv_get(key).map_err(Error::from)
}

/// Stores `value` under `key`, for `ttl` (`None`: until deleted or evicted). A TTL is
/// counted in whole milliseconds.
pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), Error> {
    let ttl_ms = ttl.map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    crate::host::kv_set(key, value, ttl_ms).map_err(Error::from)
}

/// Removes `key`; removing a missing key is no error.
pub fn delete(key: &str) -> Result<(), Error> {
    crate::host::kv_delete(key).map_err(Error::from)
}

/// The value stored under `key`, parsed as JSON.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    match get(key)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(Error::Json),
        None => Ok(None),
    }
}

/// Stores `value` as JSON under `key`.
pub fn set_json(key: &str, value: &impl Serialize, ttl: Option<Duration>) -> Result<(), Error> {
    let bytes = serde_json::to_vec(value).map_err(Error::Json)?;
    set(key, &bytes, ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_expire() {
        crate::testing::reset();
        assert_eq!(get("k").ok(), Some(None));
        assert!(set_json("k", &[1, 2], None).is_ok());
        assert_eq!(get_json::<Vec<u8>>("k").ok(), Some(Some(vec![1, 2])));
        assert!(matches!(get_json::<String>("k"), Err(Error::Json(_))));
        assert!(delete("k").is_ok());
        assert!(delete("k").is_ok());
        assert_eq!(get("k").ok(), Some(None));

        assert!(set("short", b"v", Some(Duration::ZERO)).is_ok());
        assert_eq!(get("short").ok(), Some(None));
    }

    #[test]
    fn failures_can_be_simulated() {
        crate::testing::reset();
        crate::testing::set_kv_unavailable(true);
        assert!(matches!(get("k"), Err(Error::Unavailable)));
        assert!(matches!(set("k", b"v", None), Err(Error::Unavailable)));
        crate::testing::set_kv_unavailable(false);
        assert!(set("k", b"v", None).is_ok());
    }
}
