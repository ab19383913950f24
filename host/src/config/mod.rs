//! The route file: a raw serde mirror ([`raw`]), a validation pass ([`validate`]) that
//! resolves references and reports every error with file, line and key, and the validated
//! form ([`model`]) the gateway runs on.

pub mod model;

pub use model::*;
