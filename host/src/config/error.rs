//! What is wrong with a route file: every problem tied to the file, the position and the
//! dotted key at fault, in the one format `weir validate` and a refused reload print.

use std::fmt;
use std::path::PathBuf;

/// One problem in a route file.
///
/// Displays as `{file}:{line}:{column}: {key}: {message}`; `:{line}:{column}` is left out
/// when the position is unknown (an unreadable file), `{key}: ` when the problem is not
/// tied to a key (a TOML syntax error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file as it was given to [`super::load`] or [`super::parse`].
    pub file: PathBuf,
    /// 1-based line, if the problem has a place in the file.
    pub line: Option<usize>,
    /// 1-based column in characters, if the problem has a place in the file.
    pub column: Option<usize>,
    /// Dotted key path, e.g. `routes[2].mock.status`; empty when not tied to a key.
    pub key: String,
    /// What is wrong and what was expected: lower-case, no trailing period.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a route file, in file order; never empty when returned as an
/// error. Displays one problem per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self(vec![error])
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: Option<usize>, key: &str) -> ConfigError {
        ConfigError {
            file: PathBuf::from("weir.toml"),
            line,
            column: line.map(|_| 1),
            key: key.to_owned(),
            message: "unknown key".to_owned(),
        }
    }

    #[test]
    fn display_with_position_and_key() {
        let e = error(Some(3), "server.lisen");
        assert_eq!(e.to_string(), "weir.toml:3:1: server.lisen: unknown key");
    }

    #[test]
    fn display_omits_unknown_position_and_empty_key() {
        assert_eq!(error(None, "").to_string(), "weir.toml: unknown key");
    }

    #[test]
    fn errors_print_one_per_line() {
        let all = ConfigErrors(vec![error(Some(1), "a"), error(Some(2), "b")]);
        assert_eq!(
            all.to_string(),
            "weir.toml:1:1: a: unknown key\nweir.toml:2:1: b: unknown key"
        );
    }
}
