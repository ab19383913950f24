//! Dotted key paths such as `routes[2].mock.status` or `upstreams."a.b".targets[1]`:
//! how an error names the key at fault, and how the span index finds it in the file.

use std::fmt;

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A path from the root of the route file to one key or array element.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// The whole file.
    pub fn root() -> Self {
        Self::default()
    }

    /// This path extended by a table key.
    pub fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        Self(segments)
    }

    /// This path extended by an array index.
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        Self(segments)
    }

    /// Appends a segment in place.
    pub fn push(&mut self, segment: Segment) {
        self.0.push(segment);
    }

    /// The path one step up; `None` for the root.
    pub fn parent(&self) -> Option<Self> {
        let (_, parent) = self.0.split_last()?;
        Some(Self(parent.to_vec()))
    }

    /// The last key, if the path ends in a key.
    pub fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Segment::Key(key)) => Some(key),
            _ => None,
        }
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether TOML allows `key` unquoted (a "bare key").
fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_bare_key(key) {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        let root = KeyPath::root();
        assert_eq!(root.to_string(), "");
        assert_eq!(
            root.key("routes")
                .index(2)
                .key("mock")
                .key("status")
                .to_string(),
            "routes[2].mock.status"
        );
        assert_eq!(
            root.key("upstreams")
                .key("a.b")
                .key("targets")
                .index(1)
                .to_string(),
            r#"upstreams."a.b".targets[1]"#
        );
        assert_eq!(root.key("").to_string(), r#""""#);
    }

    #[test]
    fn parent_and_last_key() {
        let path = KeyPath::root().key("server").key("tls");
        assert_eq!(path.last_key(), Some("tls"));
        assert_eq!(path.parent(), Some(KeyPath::root().key("server")));
        assert_eq!(KeyPath::root().parent(), None);
    }
}
