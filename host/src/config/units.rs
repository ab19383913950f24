//! Durations and sizes as the route file writes them: `"250ms"`, `"5s"`, `"1h"`;
//! `"512KiB"`, `"1MiB"`, `"10MB"`, `"1024"`.
//!
//! Durations are parsed by `humantime`. Sizes are parsed here, strictly: a whole number,
//! an optional space, and an optional unit spelled exactly as in [`SIZE_UNITS`]
//! (no fractions, no lower-case `mb`, no silent saturation on overflow).

use std::time::Duration;

/// Size units, as written, and their factor in bytes. Binary (`KiB`) and decimal (`KB`).
pub const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// A duration or size that does not parse. Displays as the message of a config error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("invalid duration {0:?}, expected e.g. \"250ms\", \"5s\", \"1h\"")]
    Duration(String),
    #[error(
        "invalid size {0:?}, expected a number of bytes with an optional unit, \
         e.g. \"512KiB\", \"1MiB\", \"10MB\", \"1024\""
    )]
    Size(String),
    #[error("size {0:?} is too large, the most is {max} bytes", max = u64::MAX)]
    SizeTooLarge(String),
}

/// Parses a duration such as `"250ms"`, `"5s"`, `"1h 30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    humantime::parse_duration(text).map_err(|_| UnitError::Duration(text.to_owned()))
}

/// Parses a size in bytes: `"1024"`, `"512KiB"`, `"1 MiB"`, `"10MB"`.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let invalid = || UnitError::Size(text.to_owned());
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, rest) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(invalid());
    }
    let unit = rest.strip_prefix(' ').unwrap_or(rest);
    let factor = if unit.is_empty() {
        1
    } else {
        SIZE_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, factor)| *factor)
            .ok_or_else(invalid)?
    };
    // `digits` is non-empty and all ASCII digits, so the only failure is overflow.
    let number: u64 = digits
        .parse()
        .map_err(|_| UnitError::SizeTooLarge(text.to_owned()))?;
    number
        .checked_mul(factor)
        .ok_or_else(|| UnitError::SizeTooLarge(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn bad_durations() {
        for text in ["5 parsecs", "", "5", "s", "-1s", "1.5.5s"] {
            assert_eq!(
                parse_duration(text),
                Err(UnitError::Duration(text.to_owned())),
                "{text:?}"
            );
        }
        assert_eq!(
            UnitError::Duration("5 parsecs".into()).to_string(),
            r#"invalid duration "5 parsecs", expected e.g. "250ms", "5s", "1h""#
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1B"), Ok(1));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size("1 MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("3KB"), Ok(3_000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
    }

    #[test]
    fn bad_sizes() {
        for text in [
            "", "MiB", "1.5MiB", "1mib", "1 m", "1  MiB", " 1MiB", "1MiB ", "-1", "1 parsec",
            "0x10",
        ] {
            assert_eq!(
                parse_size(text),
                Err(UnitError::Size(text.to_owned())),
                "{text:?}"
            );
        }
    }

    #[test]
    fn sizes_that_overflow_are_refused() {
        for text in ["99999999999999999999", "16777216TiB"] {
            assert_eq!(
                parse_size(text),
                Err(UnitError::SizeTooLarge(text.to_owned())),
                "{text:?}"
            );
        }
        assert_eq!(parse_size("16777215TiB"), Ok(16_777_215 << 40));
    }
}
