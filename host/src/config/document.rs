//! The route file as TOML text: parsed once into a span-carrying tree, `${env:NAME}`
//! interpolated in its string values, and indexed so that any [`KeyPath`] maps back to a
//! line and column. [`Report`] collects errors against it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::ConfigError;
use super::interpolate::{InterpolateError, interpolate};
use super::keypath::KeyPath;

/// The parsed tree, ready to be deserialized by `toml::de::Deserializer::from`.
pub type Tree<'i> = Spanned<DeTable<'i>>;

/// Where a key and its value sit in the source (byte ranges).
#[derive(Debug, Clone)]
struct Spans {
    key: Option<Range<usize>>,
    value: Range<usize>,
    /// The value's TOML type: `"string"`, `"datetime"`, `"table"`, ...
    kind: &'static str,
}

/// The source text and where every key path sits in it.
#[derive(Debug)]
pub struct Document<'s> {
    source: &'s str,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
    /// Spans by the `Display` form of a [`KeyPath`].
    spans: HashMap<String, Spans>,
}

impl<'s> Document<'s> {
    /// Parses `source`; the error is TOML's first syntax error.
    pub fn parse(source: &'s str) -> Result<(Self, Tree<'s>), toml::de::Error> {
        let tree = DeTable::parse(source)?;
        let mut spans = HashMap::new();
        index_table(tree.get_ref(), &KeyPath::root(), &mut spans);
        let line_starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        Ok((
            Self {
                source,
                line_starts,
                spans,
            },
            tree,
        ))
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = self.line_starts.partition_point(|start| *start <= offset);
        // `line_starts[0] == 0 <= offset`, so `line >= 1`.
        let start = self.line_starts[line - 1];
        (line, column_of(self.source, start, offset))
    }

    /// The TOML type of the value at `path` (`"datetime"`, `"table"`, ...), if written.
    pub fn value_kind(&self, path: &KeyPath) -> Option<&'static str> {
        self.spans.get(&path.to_string()).map(|spans| spans.kind)
    }

    /// Whether `path` is written in the file.
    pub fn contains(&self, path: &KeyPath) -> bool {
        self.spans.contains_key(&path.to_string())
    }

    /// The source text of the value at `path` as written (before `${env:NAME}` was
    /// replaced), if it is in the file.
    pub fn value_text(&self, path: &KeyPath) -> Option<&'s str> {
        let spans = self.spans.get(&path.to_string())?;
        self.source.get(spans.value.clone())
    }

    /// Byte offset of the value at `path`, or of its nearest ancestor present in the file;
    /// `None` when not even the first step is in the file.
    pub fn value_offset(&self, path: &KeyPath) -> Option<usize> {
        let mut path = path.clone();
        loop {
            if path.is_root() {
                return None;
            }
            if let Some(spans) = self.spans.get(&path.to_string()) {
                return Some(spans.value.start);
            }
            path = path.parent()?;
        }
    }

    /// Byte offset of the key at `path` (its value's, for array elements), else as
    /// [`Document::value_offset`].
    pub fn key_offset(&self, path: &KeyPath) -> Option<usize> {
        match self.spans.get(&path.to_string()) {
            Some(Spans { key: Some(key), .. }) => Some(key.start),
            _ => self.value_offset(path),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset, without an index: for the
/// one syntax error of a file that did not parse.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |at| at + 1);
    (line, column_of(source, start, offset))
}

/// 1 + the number of characters between `start` and `offset`.
fn column_of(source: &str, start: usize, offset: usize) -> usize {
    source
        .get(start..offset)
        .map_or(1, |text| text.chars().count() + 1)
}

fn index_table(table: &DeTable<'_>, path: &KeyPath, spans: &mut HashMap<String, Spans>) {
    for (key, value) in table.iter() {
        let path = path.key(key.get_ref());
        spans.insert(
            path.to_string(),
            Spans {
                key: Some(key.span()),
                value: value.span(),
                kind: value.get_ref().type_str(),
            },
        );
        index_value(value.get_ref(), &path, spans);
    }
}

fn index_value(value: &DeValue<'_>, path: &KeyPath, spans: &mut HashMap<String, Spans>) {
    match value {
        DeValue::Table(table) => index_table(table, path, spans),
        DeValue::Array(array) => {
            for (i, item) in array.iter().enumerate() {
                let path = path.index(i);
                spans.insert(
                    path.to_string(),
                    Spans {
                        key: None,
                        value: item.span(),
                        kind: item.get_ref().type_str(),
                    },
                );
                index_value(item.get_ref(), &path, spans);
            }
        }
        _ => {}
    }
}

/// Replaces `${env:NAME}` in every string value of the tree; returns the failures with
/// the path of the value at fault. A value that fails keeps its text.
pub fn interpolate_tree(
    tree: &mut Tree<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<(KeyPath, InterpolateError)> {
    let mut failures = Vec::new();
    interpolate_table(tree.get_mut(), &KeyPath::root(), env, &mut failures);
    failures
}

fn interpolate_table(
    table: &mut DeTable<'_>,
    path: &KeyPath,
    env: &dyn Fn(&str) -> Option<String>,
    failures: &mut Vec<(KeyPath, InterpolateError)>,
) {
    for (key, value) in table.iter_mut() {
        let path = path.key(key.get_ref());
        interpolate_value(value.get_mut(), &path, env, failures);
    }
}

fn interpolate_value(
    value: &mut DeValue<'_>,
    path: &KeyPath,
    env: &dyn Fn(&str) -> Option<String>,
    failures: &mut Vec<(KeyPath, InterpolateError)>,
) {
    match value {
        DeValue::String(text) => match interpolate(text, env) {
            Ok(Cow::Borrowed(_)) => {}
            Ok(Cow::Owned(replaced)) => *text = Cow::Owned(replaced),
            Err(error) => failures.push((path.clone(), error)),
        },
        DeValue::Table(table) => interpolate_table(table, path, env, failures),
        DeValue::Array(array) => {
            for (i, item) in array.iter_mut().enumerate() {
                interpolate_value(item.get_mut(), &path.index(i), env, failures);
            }
        }
        _ => {}
    }
}

/// Collects errors against a [`Document`], each placed at a key path.
#[derive(Debug)]
pub struct Report<'d> {
    document: &'d Document<'d>,
    file: PathBuf,
    /// Errors with the byte offset they are sorted by.
    errors: Vec<(Option<usize>, ConfigError)>,
    /// Keys whose problems are already explained by another error, so later ones would be
    /// noise: a failed interpolation leaves the raw `${env:...}` text for validation to
    /// trip over; a misspelt key makes the key it was meant to be look missing.
    silenced: Vec<String>,
}

impl<'d> Report<'d> {
    pub fn new(document: &'d Document<'d>, file: &Path) -> Self {
        Self {
            document,
            file: file.to_owned(),
            errors: Vec::new(),
            silenced: Vec::new(),
        }
    }

    /// An error about the value at `path` (placed at the nearest ancestor that is in the
    /// file when the key itself is missing).
    pub fn at(&mut self, path: &KeyPath, message: impl Into<String>) {
        let offset = self.document.value_offset(path);
        self.push(offset, path, message.into());
    }

    /// An error about the key at `path` itself (unknown keys).
    pub fn at_key(&mut self, path: &KeyPath, message: impl Into<String>) {
        let offset = self.document.key_offset(path);
        self.push(offset, path, message.into());
    }

    /// An error at a byte offset the parser reported, falling back to `path`'s value.
    pub fn at_offset(&mut self, offset: Option<usize>, path: &KeyPath, message: String) {
        let offset = offset.or_else(|| self.document.value_offset(path));
        self.push(offset, path, message);
    }

    /// Drops any later error at `path`, which counts as having one: the problem there is
    /// already explained by another error.
    pub fn silence(&mut self, path: &KeyPath) {
        self.silenced.push(path.to_string());
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Whether an error was reported (or silenced) at `path` or at a key below it.
    pub fn has_errors_at_or_under(&self, path: &KeyPath) -> bool {
        let key = path.to_string();
        let at_or_under = |other: &str| {
            other
                .strip_prefix(&key)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        };
        self.errors.iter().any(|(_, error)| at_or_under(&error.key))
            || self.silenced.iter().any(|silenced| at_or_under(silenced))
    }

    /// Whether `path` is written in the file.
    pub fn is_in_file(&self, path: &KeyPath) -> bool {
        self.document.contains(path)
    }

    /// The value at `path` as written in the file (see [`Document::value_text`]).
    pub fn value_text(&self, path: &KeyPath) -> Option<&'d str> {
        self.document.value_text(path)
    }

    /// The errors in file order (those without a position first).
    pub fn into_errors(mut self) -> Vec<ConfigError> {
        self.errors.sort_by_key(|(offset, _)| *offset);
        self.errors.into_iter().map(|(_, error)| error).collect()
    }

    fn push(&mut self, offset: Option<usize>, path: &KeyPath, message: String) {
        let key = path.to_string();
        if self.silenced.contains(&key) {
            return;
        }
        let (line, column) = match offset.map(|at| self.document.line_column(at)) {
            Some((line, column)) => (Some(line), Some(column)),
            None => (None, None),
        };
        self.errors.push((
            offset,
            ConfigError {
                file: self.file.clone(),
                line,
                column,
                key,
                message,
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str =
        "[server]\nlisen = 1\n\n[[routes]]\npath = \"/é\"\nmock = { status = 2 }\n";

    #[test]
    fn positions_of_keys_and_values() {
        let (doc, _) = Document::parse(SOURCE).expect("valid TOML");
        let at = |offset: Option<usize>| offset.map(|o| doc.line_column(o));
        let server = KeyPath::root().key("server");
        assert_eq!(at(doc.key_offset(&server.key("lisen"))), Some((2, 1)));
        assert_eq!(at(doc.value_offset(&server.key("lisen"))), Some((2, 9)));
        let route = KeyPath::root().key("routes").index(0);
        assert_eq!(at(doc.value_offset(&route)), Some((4, 1)));
        assert_eq!(
            at(doc.value_offset(&route.key("mock").key("status"))),
            Some((6, 19))
        );
        // A missing key is placed at its nearest ancestor.
        assert_eq!(at(doc.value_offset(&route.key("name"))), Some((4, 1)));
        assert_eq!(doc.value_offset(&KeyPath::root().key("upstreams")), None);
    }

    #[test]
    fn columns_count_characters() {
        let source = "a = \"é\"\nc = 1";
        let (doc, _) = Document::parse(source).expect("valid TOML");
        let c = doc
            .value_offset(&KeyPath::root().key("c"))
            .expect("c is in the file");
        assert_eq!(doc.line_column(c), (2, 5));
        let closing_quote = source.rfind('"').expect("a quote");
        assert_eq!(doc.line_column(closing_quote), (1, 7));
    }

    #[test]
    fn interpolates_string_values_only() {
        let (_, mut tree) =
            Document::parse("\"${env:K}\" = \"${env:V}\"\nlist = [\"${env:NOPE}\"]")
                .expect("valid TOML");
        let env = |name: &str| (name == "V").then(|| "value".to_owned());
        let failures = interpolate_tree(&mut tree, &env);
        assert_eq!(
            failures,
            vec![(
                KeyPath::root().key("list").index(0),
                InterpolateError::Undefined("NOPE".into())
            )]
        );
        let value = tree
            .get_ref()
            .get("${env:K}")
            .expect("the key is not interpolated");
        assert_eq!(value.get_ref().as_str(), Some("value"));
    }

    #[test]
    fn report_sorts_and_silences() {
        let (doc, _) = Document::parse(SOURCE).expect("valid TOML");
        let mut report = Report::new(&doc, Path::new("weir.toml"));
        let route = KeyPath::root().key("routes").index(0);
        report.at(&route.key("path"), "second");
        report.at_key(&KeyPath::root().key("server").key("lisen"), "first");
        report.silence(&route.key("mock"));
        report.at(&route.key("mock"), "silenced");
        report.at(&KeyPath::root().key("upstreams"), "no position");
        let errors: Vec<String> = report.into_errors().iter().map(|e| e.to_string()).collect();
        assert_eq!(
            errors,
            [
                "weir.toml: upstreams: no position",
                "weir.toml:2:1: server.lisen: first",
                "weir.toml:5:8: routes[0].path: second",
            ]
        );
    }
}
