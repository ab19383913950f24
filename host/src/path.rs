//! Path canonicalisation: one canonical spelling per request path, computed once in the
//! `route` phase and used for routing and everything after it.
//!
//! INTERFACE STUB — the implementation is being written; signatures are fixed.

use serde::Serialize;

/// `[server] merge_slashes` and `[server] escaped_separators`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    /// Collapse runs of `/` into one (`//a///b` → `/a/b`). Default `true`.
    pub merge_slashes: bool,
    /// What to do with `%2F`, `%5C` and `%2E` in a segment. Default `Reject`.
    pub escaped_separators: EscapedSeparators,
}

impl Default for PathOptions {
    fn default() -> Self {
        Self {
            merge_slashes: true,
            escaped_separators: EscapedSeparators::Reject,
        }
    }
}

/// `escaped_separators = "reject" | "keep"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EscapedSeparators {
    /// Refuse the request with `400`.
    Reject,
    /// Leave the escape as it is: it is part of the segment's text, never a separator.
    Keep,
}

/// A request path in canonical form: starts with `/`, no dot-segments, (optionally) no
/// empty segments, unreserved characters decoded, other escapes upper-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath {
    text: String,
}

impl CanonicalPath {
    /// The canonical path, still percent-encoded where needed: safe to send upstream.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The segments between slashes, still encoded. `/` has no segments; `/a/` has `a`
    /// and an empty last segment.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        todo!();
        #[allow(unreachable_code)]
        std::iter::empty()
    }
}

/// Why a path was refused (every variant is a `400`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path has an invalid percent-encoding")]
    InvalidEncoding,
    #[error("path has an encoded '/', '\\' or '.'")]
    EncodedSeparator,
    #[error("path has a backslash")]
    Backslash,
    #[error("path has a NUL or control character")]
    ControlCharacter,
    #[error("path climbs above the root")]
    EscapesRoot,
}

/// Computes the canonical form of a raw request path (no query).
pub fn canonicalize(raw: &str, options: &PathOptions) -> Result<CanonicalPath, PathError> {
    let _ = (raw, options);
    todo!()
}
