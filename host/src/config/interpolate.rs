//! `${env:NAME}` in string values: the value of an environment variable, so secrets stay
//! out of the file.
//!
//! Rules: `${env:NAME}` is replaced by the variable's value (an undefined variable is an
//! error); `$${` is a literal `${`; any other `$` is literal. `NAME` is
//! `[A-Za-z_][A-Za-z0-9_]*`. A replaced value is not scanned again. Keys are never
//! interpolated, only string values.

use std::borrow::Cow;

/// What opens an interpolation.
const OPEN: &str = "${";
/// What writes a literal `${`.
const ESCAPED_OPEN: &str = "$${";
/// The only source of values so far.
const ENV_PREFIX: &str = "env:";

/// An interpolation that cannot be done. Displays as the message of a config error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    #[error("environment variable {0:?} is not set")]
    Undefined(String),
    #[error(
        "unterminated \"${{\", expected \"${{env:NAME}}\" (write \"$${{\" for a literal \"${{\")"
    )]
    Unterminated,
    #[error(
        "unknown interpolation \"${{{0}}}\", expected \"${{env:NAME}}\" \
         (write \"$${{\" for a literal \"${{\")"
    )]
    UnknownSource(String),
    #[error("invalid environment variable name {0:?}, expected letters, digits and `_`")]
    InvalidName(String),
}

/// Replaces every `${env:NAME}` in `text`. Borrows when there is nothing to replace.
pub fn interpolate<'a>(
    text: &'a str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Cow<'a, str>, InterpolateError> {
    if !text.contains(OPEN) {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix(ESCAPED_OPEN) {
            out.push_str(OPEN);
            rest = after;
        } else if let Some(after) = rest.strip_prefix(OPEN) {
            let end = after.find('}').ok_or(InterpolateError::Unterminated)?;
            let inner = &after[..end];
            let name = inner
                .strip_prefix(ENV_PREFIX)
                .ok_or_else(|| InterpolateError::UnknownSource(inner.to_owned()))?;
            if !is_env_name(name) {
                return Err(InterpolateError::InvalidName(name.to_owned()));
            }
            let value = env(name).ok_or_else(|| InterpolateError::Undefined(name.to_owned()))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".to_owned()),
            "EMPTY" => Some(String::new()),
            "LOOP" => Some("${env:TOKEN}".to_owned()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<String, InterpolateError> {
        interpolate(text, &env).map(Cow::into_owned)
    }

    #[test]
    fn replaces_variables() {
        assert_eq!(run("${env:TOKEN}").as_deref(), Ok("s3cret"));
        assert_eq!(run("Bearer ${env:TOKEN}!").as_deref(), Ok("Bearer s3cret!"));
        assert_eq!(
            run("${env:TOKEN}${env:EMPTY}-${env:TOKEN}").as_deref(),
            Ok("s3cret-s3cret")
        );
    }

    #[test]
    fn leaves_plain_text_alone() {
        assert!(matches!(
            interpolate("plain $5 {x}", &env),
            Ok(Cow::Borrowed(_))
        ));
        assert_eq!(run("cost: $5, ${"), Err(InterpolateError::Unterminated));
        assert_eq!(run("$").as_deref(), Ok("$"));
        assert_eq!(run("a$b$").as_deref(), Ok("a$b$"));
    }

    #[test]
    fn escape_writes_a_literal_open() {
        assert_eq!(run("$${env:TOKEN}").as_deref(), Ok("${env:TOKEN}"));
        assert_eq!(run("$$${env:TOKEN}").as_deref(), Ok("$${env:TOKEN}"));
    }

    #[test]
    fn values_are_not_rescanned() {
        assert_eq!(run("${env:LOOP}").as_deref(), Ok("${env:TOKEN}"));
    }

    #[test]
    fn errors() {
        assert_eq!(
            run("x ${env:NOPE} y"),
            Err(InterpolateError::Undefined("NOPE".into()))
        );
        assert_eq!(run("${env:TOKEN"), Err(InterpolateError::Unterminated));
        assert_eq!(
            run("${TOKEN}"),
            Err(InterpolateError::UnknownSource("TOKEN".into()))
        );
        assert_eq!(
            run("${env:A-B}"),
            Err(InterpolateError::InvalidName("A-B".into()))
        );
        assert_eq!(
            run("${env:}"),
            Err(InterpolateError::InvalidName("".into()))
        );
        assert_eq!(
            InterpolateError::Undefined("NOPE".into()).to_string(),
            r#"environment variable "NOPE" is not set"#
        );
        assert_eq!(
            InterpolateError::UnknownSource("TOKEN".into()).to_string(),
            r#"unknown interpolation "${TOKEN}", expected "${env:NAME}" (write "$${" for a literal "${")"#
        );
    }
}
