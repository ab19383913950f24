//! Path canonicalisation: one canonical spelling per request path, computed once in the
//! `route` phase and used for routing and everything after it.
//!
//! The canonical path is what routing, authorization, rate limits, cache keys and the
//! upstream request all see, so two spellings of the same resource can never be treated
//! differently (a route cannot be reached, or its checks skipped, by spelling).
//!
//! # Rules
//!
//! [`canonicalize`] takes the raw path from the request URI (no query) and:
//!
//! 1. requires a leading `/` ([`PathError::NotAbsolute`]);
//! 2. refuses control characters, raw or percent-encoded (`%00`–`%1F`, `%7F`), with
//!    [`PathError::ControlCharacter`], and a raw `\` with [`PathError::Backslash`];
//! 3. refuses malformed escapes (`%zz`, a `%` with fewer than two hex digits after it) with
//!    [`PathError::InvalidEncoding`];
//! 4. treats the encoded separators `%2F` (`/`), `%5C` (`\`) and `%2E` (`.`) as
//!    [`EscapedSeparators`] says: `reject` refuses them ([`PathError::EncodedSeparator`]);
//!    `keep` leaves them encoded, as ordinary segment text — they never split a segment, and
//!    `%2E%2E` is not a dot-segment;
//! 5. decodes escapes of the unreserved characters `A`–`Z`, `a`–`z`, `0`–`9`, `-`, `_`,
//!    `~` (`%41` → `A`, `%7e` → `~`) and writes every other escape with upper-case hex
//!    (`%3a` → `%3A`, `%25` stays `%25`);
//! 6. percent-encodes raw bytes that may not appear unencoded in a path (space, `"`, `<`,
//!    `>`, `[`, `]`, `^`, `` ` ``, `{`, `|`, `}`, `#`, `?` and every non-ASCII byte), so
//!    that `/café` and `/caf%C3%A9` are one path; raw reserved characters that are allowed
//!    (`:`, `@`, `!`, `$`, `&`, `'`, `(`, `)`, `*`, `+`, `,`, `;`, `=`) stay raw and are
//!    *not* the same as their escapes (RFC 3986 6.2.2);
//! 7. collapses empty segments (`//a///b` → `/a/b`) when `merge_slashes` is on (the
//!    default), and keeps them otherwise;
//! 8. resolves the dot-segments `.` and `..` (RFC 3986 5.2.4), except that a `..` that
//!    would climb above `/` is refused ([`PathError::EscapesRoot`]) rather than dropped;
//! 9. keeps a trailing slash (`/a/` stays `/a/`, `/a/.` → `/a/`, `/a/..` → `/`) and the
//!    case of every character.
//!
//! The result is therefore ASCII, starts with `/`, and contains only unreserved
//! characters, the allowed reserved characters above, `/` and upper-case `%XX` escapes.
//!
//! A path with no `%`, no `//`, no `/.` and nothing to encode or refuse is already
//! canonical: it costs one scan and one copy.

use std::fmt;

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
///
/// Only [`canonicalize`] makes one, so holding a `CanonicalPath` proves the rules in the
/// module docs hold.
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
        // `text` starts with `/`, so everything after it is the segments joined by `/`;
        // for `/` itself that is empty and there are no segments at all.
        self.text
            .strip_prefix('/')
            .filter(|body| !body.is_empty())
            .into_iter()
            .flat_map(|body| body.split('/'))
    }

    /// The canonical path as an owned string.
    pub fn into_string(self) -> String {
        self.text
    }
}

impl fmt::Display for CanonicalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
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
    let Some(body) = raw.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    if is_already_canonical(raw.as_bytes()) {
        return Ok(CanonicalPath {
            text: raw.to_owned(),
        });
    }

    // Each kept segment is written as `/` + its canonical text, so removing the last one
    // (for `..`) is truncating at the last `/`, and a trailing slash is an empty segment.
    let mut text = String::with_capacity(raw.len());
    let mut segments = body.split('/').peekable();
    while let Some(segment) = segments.next() {
        let is_last = segments.peek().is_none();
        match segment {
            "." => {}
            ".." => {
                let Some(parent_end) = text.rfind('/') else {
                    return Err(PathError::EscapesRoot);
                };
                text.truncate(parent_end);
            }
            "" if options.merge_slashes && !is_last => {}
            _ => {
                text.push('/');
                push_canonical_segment(&mut text, segment, options.escaped_separators)?;
                continue;
            }
        }
        // A dot-segment at the end leaves the path ending in a slash: `/a/.` → `/a/`.
        if is_last && (segment == "." || segment == "..") {
            text.push('/');
        }
    }
    Ok(CanonicalPath { text })
}

/// Writes the canonical text of one segment (no `/` in it) to `out`.
///
/// Shared with the router, which canonicalises template literals with
/// [`EscapedSeparators::Keep`] so they compare equal to canonical request segments.
pub(crate) fn push_canonical_segment(
    out: &mut String,
    segment: &str,
    escaped_separators: EscapedSeparators,
) -> Result<(), PathError> {
    let mut bytes = segment.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let high = bytes.next().and_then(hex_value);
            let low = bytes.next().and_then(hex_value);
            let (Some(high), Some(low)) = (high, low) else {
                return Err(PathError::InvalidEncoding);
            };
            let decoded = (high << 4) | low;
            if is_control(decoded) {
                return Err(PathError::ControlCharacter);
            }
            if matches!(decoded, b'/' | b'\\' | b'.') {
                match escaped_separators {
                    EscapedSeparators::Reject => return Err(PathError::EncodedSeparator),
                    EscapedSeparators::Keep => push_escape(out, decoded),
                }
            } else if is_decodable_unreserved(decoded) {
                out.push(char::from(decoded));
            } else {
                push_escape(out, decoded);
            }
        } else if is_control(byte) {
            return Err(PathError::ControlCharacter);
        } else if byte == b'\\' {
            return Err(PathError::Backslash);
        } else if is_raw_path_byte(byte) {
            out.push(char::from(byte));
        } else {
            push_escape(out, byte);
        }
    }
    Ok(())
}

/// Whether `raw` (which starts with `/`) is its own canonical form: only raw path
/// characters, no `%`, no empty segment and nothing starting with `.` after a `/`
/// (this also sends `/.hidden` down the slow path, which is harmless).
fn is_already_canonical(raw: &[u8]) -> bool {
    let mut previous = 0u8;
    for &byte in raw {
        let after_slash = previous == b'/';
        if (after_slash && (byte == b'/' || byte == b'.'))
            || (byte != b'/' && !is_raw_path_byte(byte))
        {
            return false;
        }
        previous = byte;
    }
    true
}

/// Characters that stand for themselves in a canonical segment: RFC 3986 `pchar` minus
/// `%` (unreserved, sub-delims, `:` and `@`).
const RAW_PATH_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            );
        byte += 1;
    }
    table
};

fn is_raw_path_byte(byte: u8) -> bool {
    // Cannot panic: the table has an entry for every `u8`.
    RAW_PATH_BYTES[usize::from(byte)]
}

fn is_control(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7f
}

/// Unreserved characters whose escapes are decoded. `.` is unreserved too, but `%2E` is
/// governed by [`EscapedSeparators`] so that it can never form a dot-segment.
fn is_decodable_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn push_escape(out: &mut String, byte: u8) {
    const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    // Cannot panic: both indices are 4-bit values.
    out.push(char::from(HEX_UPPER[usize::from(byte >> 4)]));
    out.push(char::from(HEX_UPPER[usize::from(byte & 0x0f)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    const MERGE_REJECT: PathOptions = PathOptions {
        merge_slashes: true,
        escaped_separators: EscapedSeparators::Reject,
    };
    const MERGE_KEEP: PathOptions = PathOptions {
        merge_slashes: true,
        escaped_separators: EscapedSeparators::Keep,
    };
    const NO_MERGE: PathOptions = PathOptions {
        merge_slashes: false,
        escaped_separators: EscapedSeparators::Reject,
    };

    fn check(options: &PathOptions, cases: &[(&str, Result<&str, PathError>)]) {
        for (raw, expected) in cases {
            let actual = canonicalize(raw, options);
            let actual = actual
                .as_ref()
                .map(CanonicalPath::as_str)
                .map_err(Clone::clone);
            assert_eq!(actual, *expected, "canonicalize({raw:?}) with {options:?}");
            // Canonical form is a fixed point, and takes the fast path where it can.
            if let Ok(canonical) = actual {
                assert_eq!(
                    canonicalize(canonical, options)
                        .as_ref()
                        .map(CanonicalPath::as_str),
                    Ok(canonical),
                    "canonical form of {raw:?} is not stable"
                );
            }
        }
    }

    #[test]
    fn plain_paths_are_unchanged() {
        check(
            &MERGE_REJECT,
            &[
                ("/", Ok("/")),
                ("/users/42", Ok("/users/42")),
                ("/Users/AbC", Ok("/Users/AbC")),
                ("/a:b@c!$&'()*+,;=", Ok("/a:b@c!$&'()*+,;=")),
                ("/file.tar.gz", Ok("/file.tar.gz")),
                ("/a/", Ok("/a/")),
                ("/.well-known/x", Ok("/.well-known/x")),
                ("/a/..b/c.", Ok("/a/..b/c.")),
            ],
        );
    }

    #[test]
    fn must_be_absolute() {
        check(
            &MERGE_REJECT,
            &[
                ("", Err(PathError::NotAbsolute)),
                ("*", Err(PathError::NotAbsolute)),
                ("a/b", Err(PathError::NotAbsolute)),
                ("%2Fa", Err(PathError::NotAbsolute)),
            ],
        );
    }

    #[test]
    fn dot_segments_are_resolved() {
        check(
            &MERGE_REJECT,
            &[
                ("/a/./b", Ok("/a/b")),
                ("/a/b/../c", Ok("/a/c")),
                ("/a/b/c/../../d", Ok("/a/d")),
                ("/./a", Ok("/a")),
                ("/.", Ok("/")),
                ("/a/.", Ok("/a/")),
                ("/a/..", Ok("/")),
                ("/a/b/..", Ok("/a/")),
                ("/a/b/../", Ok("/a/")),
                ("/a/./", Ok("/a/")),
                ("/a/../../b", Err(PathError::EscapesRoot)),
                ("/..", Err(PathError::EscapesRoot)),
                ("/../a", Err(PathError::EscapesRoot)),
                ("/a/../..", Err(PathError::EscapesRoot)),
                ("/./..", Err(PathError::EscapesRoot)),
            ],
        );
    }

    #[test]
    fn trailing_slashes_are_kept() {
        check(
            &MERGE_REJECT,
            &[
                ("/a/", Ok("/a/")),
                ("/a//", Ok("/a/")),
                ("/a/b/", Ok("/a/b/")),
                ("//", Ok("/")),
            ],
        );
    }

    #[test]
    fn double_slashes_merged() {
        check(
            &MERGE_REJECT,
            &[
                ("//a", Ok("/a")),
                ("/a//b", Ok("/a/b")),
                ("/a///b//", Ok("/a/b/")),
                ("//..", Err(PathError::EscapesRoot)),
                ("/a//../b", Ok("/b")),
            ],
        );
    }

    #[test]
    fn double_slashes_kept_without_merge() {
        check(
            &NO_MERGE,
            &[
                ("//a", Ok("//a")),
                ("/a//b", Ok("/a//b")),
                ("/a///", Ok("/a///")),
                ("/a//..", Ok("/a/")),
                ("/a//../b", Ok("/a/b")),
                ("//..", Ok("/")),
                ("/a/./b", Ok("/a/b")),
            ],
        );
    }

    #[test]
    fn unreserved_escapes_are_decoded() {
        check(
            &MERGE_REJECT,
            &[
                ("/%41", Ok("/A")),
                ("/%61%62c", Ok("/abc")),
                ("/%7e", Ok("/~")),
                ("/%7E%2d%5F%30", Ok("/~-_0")),
                ("/us%65rs/%34%32", Ok("/users/42")),
            ],
        );
    }

    #[test]
    fn other_escapes_are_upper_cased() {
        check(
            &MERGE_REJECT,
            &[
                ("/a%3ab", Ok("/a%3Ab")),
                ("/a%3Ab", Ok("/a%3Ab")),
                ("/%25", Ok("/%25")),
                ("/%2541", Ok("/%2541")),
                ("/%c3%a9", Ok("/%C3%A9")),
                ("/%20", Ok("/%20")),
                ("/%3f%23", Ok("/%3F%23")),
            ],
        );
    }

    #[test]
    fn raw_characters_not_allowed_in_a_path_are_encoded() {
        check(
            &MERGE_REJECT,
            &[
                ("/caf\u{e9}", Ok("/caf%C3%A9")),
                ("/a b", Ok("/a%20b")),
                ("/{x}|\"<>^`[]", Ok("/%7Bx%7D%7C%22%3C%3E%5E%60%5B%5D")),
            ],
        );
    }

    #[test]
    fn invalid_escapes_are_refused() {
        check(
            &MERGE_REJECT,
            &[
                ("/%zz", Err(PathError::InvalidEncoding)),
                ("/%4", Err(PathError::InvalidEncoding)),
                ("/a%", Err(PathError::InvalidEncoding)),
                ("/%4g", Err(PathError::InvalidEncoding)),
                ("/%%41", Err(PathError::InvalidEncoding)),
                ("/%4/b", Err(PathError::InvalidEncoding)),
                ("/%\u{e9}", Err(PathError::InvalidEncoding)),
            ],
        );
    }

    #[test]
    fn control_characters_are_refused() {
        check(
            &MERGE_REJECT,
            &[
                ("/a%00", Err(PathError::ControlCharacter)),
                ("/a\0b", Err(PathError::ControlCharacter)),
                ("/a%0A", Err(PathError::ControlCharacter)),
                ("/a\r\n", Err(PathError::ControlCharacter)),
                ("/a\tb", Err(PathError::ControlCharacter)),
                ("/%1f", Err(PathError::ControlCharacter)),
                ("/%7F", Err(PathError::ControlCharacter)),
                ("/\u{7f}", Err(PathError::ControlCharacter)),
            ],
        );
    }

    #[test]
    fn backslash_is_always_refused() {
        for options in [MERGE_REJECT, MERGE_KEEP, NO_MERGE] {
            check(
                &options,
                &[
                    ("/a\\b", Err(PathError::Backslash)),
                    ("/\\", Err(PathError::Backslash)),
                    ("/..\\..\\etc", Err(PathError::Backslash)),
                ],
            );
        }
    }

    #[test]
    fn escaped_separators_rejected() {
        check(
            &MERGE_REJECT,
            &[
                ("/a%2Fb", Err(PathError::EncodedSeparator)),
                ("/a%2fb", Err(PathError::EncodedSeparator)),
                ("/a%5Cb", Err(PathError::EncodedSeparator)),
                ("/a%5cb", Err(PathError::EncodedSeparator)),
                ("/a/%2E%2E/b", Err(PathError::EncodedSeparator)),
                ("/a/%2e", Err(PathError::EncodedSeparator)),
                ("/file%2Etxt", Err(PathError::EncodedSeparator)),
            ],
        );
    }

    #[test]
    fn escaped_separators_kept_as_text() {
        check(
            &MERGE_KEEP,
            &[
                ("/a%2fb", Ok("/a%2Fb")),
                ("/a%5cb", Ok("/a%5Cb")),
                ("/a/%2e%2e/b", Ok("/a/%2E%2E/b")),
                ("/a/%2E", Ok("/a/%2E")),
                ("/%2E%2E", Ok("/%2E%2E")),
                ("/a/%2E./b", Ok("/a/%2E./b")),
                ("/a/%2F/..", Ok("/a/")),
                ("/a\\b", Err(PathError::Backslash)),
            ],
        );
    }

    #[test]
    fn segments_are_split_on_raw_slashes_only() {
        let segments = |raw: &str| -> Vec<String> {
            let path = canonicalize(raw, &MERGE_KEEP).expect("valid test path");
            path.segments().map(str::to_owned).collect()
        };
        assert_eq!(segments("/"), Vec::<String>::new());
        assert_eq!(segments("/a"), ["a"]);
        assert_eq!(segments("/a/"), ["a", ""]);
        assert_eq!(segments("/a/b%2Fc/d"), ["a", "b%2Fc", "d"]);
        let unmerged = canonicalize("//a", &NO_MERGE).expect("valid test path");
        assert_eq!(unmerged.segments().collect::<Vec<_>>(), ["", "a"]);
    }

    #[test]
    fn display_and_into_string_give_the_canonical_text() {
        let path = canonicalize("/a/./%62", &MERGE_REJECT).expect("valid test path");
        assert_eq!(path.to_string(), "/a/b");
        assert_eq!(path.into_string(), "/a/b");
    }
}
