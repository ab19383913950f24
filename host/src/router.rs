//! The route table: host, method and path template → route index.
//!
//! [`Router::new`] compiles the `[[routes]]` of a config into one segment trie per host
//! entry, once per load or reload; [`Router::lookup`] runs in the `route` phase of every
//! request, on the [`CanonicalPath`] made by [`crate::path::canonicalize`]. A lookup walks
//! the trie segment by segment (no scan over the routes) and allocates only the captured
//! parameter values (and, for a `405`, the `Allow` value).
//!
//! # Path templates
//!
//! A template is `/` followed by segments separated by `/`. Each segment is one of:
//!
//! - a **literal**, matched exactly and case-sensitively against the request's canonical
//!   segment (e.g. `users`);
//! - a **parameter** `{name}`, matching one whole, non-empty segment (e.g. `{id}`);
//! - a **greedy parameter** `{name+}`, only as the last segment, matching one or more
//!   remaining segments; its value is the rest of the path, slashes included
//!   (`/files/{path+}` matches `/files/a/b.txt` with `path` = `a/b.txt`, but neither
//!   `/files` nor `/files/`).
//!
//! Names are `[A-Za-z_][A-Za-z0-9_]*` and unique within a template. A `{` or `}` anywhere
//! else, an empty segment (`//`), or a dot-segment (`.`, `..`) is an error; a trailing `/`
//! is allowed and significant (`/a/` and `/a` are different templates and match different
//! paths, just as the canonical paths differ).
//!
//! Literal segments are **canonicalised** the way request paths are (unreserved escapes
//! decoded, other escapes upper-cased, characters that may not appear raw in a path
//! encoded), so `/caf%c3%a9/%7eme` and `/café/~me` are the same template. Encoded
//! separators (`%2F`, `%5C`, `%2E`) are kept in a literal; they can only match when
//! `escaped_separators = "keep"`, since otherwise such requests are refused before routing.
//!
//! Parameter values are percent-decoded; a value that is not valid UTF-8 once decoded has
//! each bad sequence replaced by U+FFFD. With `escaped_separators = "keep"`, a `%2F` in a
//! `{name}` segment decodes to `/` in the value (it never splits the segment).
//!
//! # Precedence
//!
//! 1. **Host.** The request host (lower-case, without port; one trailing `.` is ignored) is
//!    tried against routes listing that exact host, then routes listing the wildcard
//!    `*.parent` (which matches exactly one more label: `*.example.com` matches
//!    `a.example.com`, not `example.com` nor `a.b.example.com`), then routes that list no
//!    host. The first of these tables that finds a route wins. A request with no host only
//!    sees routes that list no host.
//! 2. **Path**, segment by segment from the left: a literal beats `{param}`, which beats
//!    `{greedy+}`. If the preferred branch fails further right, the next one is tried
//!    (backtracking): with `/a/b/c`, `/a/{x}/d` and `/a/{rest+}`, the path `/a/b/d` goes to
//!    `/a/{x}/d` and `/a/b/e` to `/a/{rest+}`.
//! 3. **Method.** The path matches are taken in the order above; the first whose route
//!    allows the request method wins. Among routes with the same template (names ignored),
//!    a route listing the method beats a route reached because `HEAD` is served by any route
//!    that allows `GET`, which beats a route that allows any method (so an any-method
//!    route can be the fallback beside routes for specific methods).
//!
//! If some route's path matched but none allows the method, the answer is `405` with an
//! `Allow` header listing, sorted and without repeats, every method of every route whose
//! path matched in any of the host tables (with `HEAD` wherever `GET` is). Otherwise it is
//! `404`.
//!
//! # Conflicts
//!
//! Two routes are duplicates when they share a host entry (or both list no host), have the
//! same template once parameter names are ignored (`/users/{id}` and `/users/{uid}`), and
//! either list a method in common or both allow any method. The later one is an error that
//! names the earlier. Routes that differ only in how specific they are (`/users/me` beside
//! `/users/{id}`, or `GET /a` beside any-method `/a`) are not conflicts: precedence decides.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

use crate::path::{self, CanonicalPath, EscapedSeparators};

/// One route as the router needs to see it.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec<'a> {
    /// Lower-case host names; `*.example.com` matches one label; empty = any host.
    pub hosts: &'a [String],
    /// `None` = any method.
    pub methods: Option<&'a [Method]>,
    /// The path template, e.g. `/users/{id}` or `/files/{path+}`.
    pub path: &'a str,
}

/// A template or table problem, tied to the route (index into the specs) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RouterError {
    pub route: usize,
    pub message: String,
}

/// The compiled route table.
#[derive(Debug, Default)]
pub struct Router {
    /// Routes listing an exact host, by host.
    exact_hosts: HashMap<Box<str>, Node>,
    /// Routes listing `*.parent`, by `parent`.
    wildcard_hosts: HashMap<Box<str>, Node>,
    /// Routes listing no host.
    any_host: Node,
}

/// Captured path parameters, in template order, percent-decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(std::sync::Arc<str>, String)>,
}

impl Params {
    /// The decoded value of the parameter `name`, if the route's template has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `(name, decoded value)` pairs in template order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (&**n, v.as_str()))
    }

    /// How many parameters were captured.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the route's template has no parameters.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// The result of a lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found {
        route: usize,
        params: Params,
    },
    /// Some route's path matched but none allows the method; the `Allow` header value.
    MethodNotAllowed {
        allow: String,
    },
    NotFound,
}

impl Router {
    /// Compiles the table; reports every bad template and every duplicate.
    ///
    /// A route with a bad template or host reports its first problem and is left out, so
    /// it is never reported as a duplicate too.
    pub fn new(routes: &[RouteSpec<'_>]) -> Result<Router, Vec<RouterError>> {
        let mut router = Router::default();
        let mut errors = Vec::new();
        for (index, spec) in routes.iter().enumerate() {
            let route = match CompiledRoute::new(index, spec) {
                Ok(route) => route,
                Err(message) => {
                    errors.push(RouterError {
                        route: index,
                        message,
                    });
                    continue;
                }
            };
            let mut reported = Vec::new();
            for host in &route.hosts {
                let table = router.table_mut(host);
                let endpoints = table.endpoints_mut(&route.template);
                let conflicts = endpoints
                    .iter()
                    .filter_map(|earlier| {
                        Some((earlier.route, earlier.methods.overlap(&route.methods)?))
                    })
                    .collect::<Vec<_>>();
                if conflicts.is_empty() {
                    endpoints.push(route.endpoint.clone());
                }
                for (earlier, method) in conflicts {
                    if !reported.contains(&earlier) {
                        reported.push(earlier);
                        errors.push(RouterError {
                            route: index,
                            message: route.duplicate_message(earlier, host, &method),
                        });
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(router)
        } else {
            Err(errors)
        }
    }

    /// Finds the route for a request. `host` is lower-case without port, if known.
    pub fn lookup(&self, host: Option<&str>, method: &Method, path: &CanonicalPath) -> Lookup {
        let method = MethodQuery::new(method);
        let segments = path_body(path);
        let mut matched = PathMatches::default();
        for table in self.tables_for(host).into_iter().flatten() {
            if let Some(endpoint) = table.find(segments, &method, &mut matched) {
                return Lookup::Found {
                    route: endpoint.route,
                    params: endpoint.capture(path),
                };
            }
        }
        if matched.any {
            Lookup::MethodNotAllowed {
                allow: matched.allow_header(),
            }
        } else {
            Lookup::NotFound
        }
    }

    /// The tables to try for `host`, in precedence order.
    fn tables_for(&self, host: Option<&str>) -> [Option<&Node>; 3] {
        let host = host.map(|host| host.strip_suffix('.').unwrap_or(host));
        let exact = host
            .filter(|_| !self.exact_hosts.is_empty())
            .and_then(|host| self.exact_hosts.get(host));
        let wildcard = host
            .filter(|_| !self.wildcard_hosts.is_empty())
            .and_then(|host| host.split_once('.'))
            .filter(|(label, parent)| !label.is_empty() && !parent.is_empty())
            .and_then(|(_, parent)| self.wildcard_hosts.get(parent));
        [exact, wildcard, Some(&self.any_host)]
    }

    fn table_mut(&mut self, host: &HostEntry) -> &mut Node {
        match host {
            HostEntry::Exact(name) => self.exact_hosts.entry(name.as_str().into()).or_default(),
            HostEntry::Wildcard(parent) => self
                .wildcard_hosts
                .entry(parent.as_str().into())
                .or_default(),
            HostEntry::Any => &mut self.any_host,
        }
    }
}

/// The segments of a canonical path joined by `/`, or `None` for `/` (no segments).
fn path_body(path: &CanonicalPath) -> Option<&str> {
    path.as_str()
        .strip_prefix('/')
        .filter(|body| !body.is_empty())
}

/// Splits the first segment off `rest` (segments joined by `/`).
fn next_segment(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('/') {
        Some((segment, more)) => (segment, Some(more)),
        None => (rest, None),
    }
}

/// One node of a host's segment trie: the routes whose template ends here, and the ways
/// on to longer templates.
#[derive(Debug, Default)]
struct Node {
    /// Literal children, sorted by segment text for binary search.
    literals: Vec<(Box<str>, Node)>,
    /// The `{param}` child.
    param: Option<Box<Node>>,
    /// Routes whose template ends in `{greedy+}` here.
    greedy: Vec<Endpoint>,
    /// Routes whose template ends here.
    endpoints: Vec<Endpoint>,
}

impl Node {
    /// The endpoint list a template ends in, creating the nodes on the way.
    fn endpoints_mut(&mut self, template: &[Piece]) -> &mut Vec<Endpoint> {
        let mut node = self;
        for piece in template {
            node = match piece {
                Piece::Literal(text) => node.literal_mut(text),
                Piece::Param(_) => node.param.get_or_insert_with(Box::default),
                Piece::Greedy(_) => return &mut node.greedy,
            };
        }
        &mut node.endpoints
    }

    fn literal_mut(&mut self, text: &str) -> &mut Node {
        let index = match self.literals.binary_search_by(|(key, _)| (**key).cmp(text)) {
            Ok(index) => index,
            Err(index) => {
                self.literals.insert(index, (text.into(), Node::default()));
                index
            }
        };
        // Cannot panic: `index` is where the key was found or has just been inserted.
        &mut self.literals[index].1
    }

    fn literal(&self, segment: &str) -> Option<&Node> {
        let index = self
            .literals
            .binary_search_by(|(key, _)| (**key).cmp(segment))
            .ok()?;
        self.literals.get(index).map(|(_, node)| node)
    }

    /// Depth-first search in precedence order (literal, then param, then greedy) for the
    /// first path match whose route allows the method. `rest` is the unmatched segments
    /// joined by `/` (`None` once all are matched). Every path match passed over is
    /// recorded in `matched`, for the `Allow` header.
    ///
    /// Each node is visited at most once per lookup (a node stands for one template prefix
    /// at one depth), so backtracking costs at most the size of the trie, and recursion is
    /// no deeper than the longest template.
    fn find<'r>(
        &'r self,
        rest: Option<&str>,
        method: &MethodQuery<'_>,
        matched: &mut PathMatches<'r>,
    ) -> Option<&'r Endpoint> {
        let Some(rest) = rest else {
            return matched.choose(&self.endpoints, method);
        };
        let (segment, more) = next_segment(rest);
        if let Some(child) = self.literal(segment)
            && let found @ Some(_) = child.find(more, method, matched)
        {
            return found;
        }
        if let Some(child) = self.param.as_deref()
            && !segment.is_empty()
            && let found @ Some(_) = child.find(more, method, matched)
        {
            return found;
        }
        if rest.is_empty() {
            return None;
        }
        matched.choose(&self.greedy, method)
    }
}

/// A route at the end of a template in one host's trie.
#[derive(Debug, Clone)]
struct Endpoint {
    /// Index into the specs given to [`Router::new`].
    route: usize,
    methods: Methods,
    /// Where the template's parameters sit, in template order.
    params: Arc<[ParamSlot]>,
}

impl Endpoint {
    /// Takes the parameter values out of the path this endpoint matched.
    fn capture(&self, path: &CanonicalPath) -> Params {
        if self.params.is_empty() {
            return Params::default();
        }
        let mut pairs = Vec::with_capacity(self.params.len());
        let mut slots = self.params.iter().peekable();
        let mut rest = path_body(path);
        let mut index = 0;
        while let (Some(slot), Some(text)) = (slots.peek(), rest) {
            let (segment, more) = next_segment(text);
            if slot.segment == index {
                let raw = if slot.greedy { text } else { segment };
                let value = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
                pairs.push((Arc::clone(&slot.name), value.into_owned()));
                slots.next();
            }
            rest = more;
            index += 1;
        }
        Params { pairs }
    }
}

/// A parameter of a template: its name and the index of the segment it captures (for a
/// greedy parameter, the first of the segments).
#[derive(Debug)]
struct ParamSlot {
    name: Arc<str>,
    segment: usize,
    greedy: bool,
}

/// One parsed template segment.
#[derive(Debug)]
enum Piece {
    /// Canonical segment text.
    Literal(String),
    Param(Arc<str>),
    Greedy(Arc<str>),
}

/// A host entry of a route: which table it goes into.
#[derive(Debug, PartialEq, Eq)]
enum HostEntry {
    Exact(String),
    /// `*.parent`, holding `parent`.
    Wildcard(String),
    Any,
}

/// A route checked and ready to insert into its host tables.
struct CompiledRoute<'s> {
    source: &'s str,
    template: Vec<Piece>,
    hosts: Vec<HostEntry>,
    methods: Methods,
    endpoint: Endpoint,
}

impl<'s> CompiledRoute<'s> {
    fn new(index: usize, spec: &RouteSpec<'s>) -> Result<Self, String> {
        let template = parse_template(spec.path)?;
        let hosts = parse_hosts(spec.hosts)?;
        let methods = Methods::new(spec.methods)?;
        let params = template
            .iter()
            .enumerate()
            .filter_map(|(segment, piece)| match piece {
                Piece::Literal(_) => None,
                Piece::Param(name) | Piece::Greedy(name) => Some(ParamSlot {
                    name: Arc::clone(name),
                    segment,
                    greedy: matches!(piece, Piece::Greedy(_)),
                }),
            })
            .collect();
        Ok(CompiledRoute {
            source: spec.path,
            template,
            hosts,
            endpoint: Endpoint {
                route: index,
                methods: methods.clone(),
                params,
            },
            methods,
        })
    }

    /// The template with parameter names left out: `/users/{}`, `/files/{+}`.
    fn shape(&self) -> String {
        if self.template.is_empty() {
            return "/".to_owned();
        }
        let mut shape = String::with_capacity(self.source.len());
        for piece in &self.template {
            shape.push('/');
            match piece {
                Piece::Literal(text) => shape.push_str(text),
                Piece::Param(_) => shape.push_str("{}"),
                Piece::Greedy(_) => shape.push_str("{+}"),
            }
        }
        shape
    }

    fn duplicate_message(
        &self,
        earlier: usize,
        host: &HostEntry,
        method: &MethodOverlap,
    ) -> String {
        let host = match host {
            HostEntry::Exact(name) => format!("host \"{name}\""),
            HostEntry::Wildcard(parent) => format!("host \"*.{parent}\""),
            HostEntry::Any => "no host".to_owned(),
        };
        let method = match method {
            MethodOverlap::Any => "any method".to_owned(),
            MethodOverlap::Method(name) => format!("method {name}"),
        };
        format!(
            "duplicate of route {earlier}: both have {host}, path \"{}\" (parameter names \
             ignored) and {method}; expected each host, path and method to lead to one route",
            self.shape()
        )
    }
}

/// Parses and checks a path template, canonicalising its literal segments.
fn parse_template(template: &str) -> Result<Vec<Piece>, String> {
    let fail = |problem: String| Err(format!("path template \"{template}\": {problem}"));
    let Some(body) = template.strip_prefix('/') else {
        return fail("expected it to start with '/'".to_owned());
    };
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let mut pieces: Vec<Piece> = Vec::new();
    let mut segments = body.split('/').peekable();
    while let Some(segment) = segments.next() {
        let is_last = segments.peek().is_none();
        if let Some(Piece::Greedy(name)) = pieces.last() {
            return fail(format!(
                "greedy parameter \"{{{name}+}}\" must be the last segment"
            ));
        }
        let piece = if segment.contains(['{', '}']) {
            let Some(inner) = segment
                .strip_prefix('{')
                .and_then(|inner| inner.strip_suffix('}'))
                .filter(|inner| !inner.contains(['{', '}']))
            else {
                return fail(format!(
                    "segment \"{segment}\" is not a parameter; expected \"{{name}}\" or \
                     \"{{name+}}\" as a whole segment, or a literal without '{{' and '}}'"
                ));
            };
            let (name, greedy) = match inner.strip_suffix('+') {
                Some(name) => (name, true),
                None => (inner, false),
            };
            if let Err(problem) = check_param_name(name) {
                return fail(format!("parameter \"{segment}\" {problem}"));
            }
            let taken = pieces.iter().any(|piece| {
                matches!(piece, Piece::Param(other) | Piece::Greedy(other) if &**other == name)
            });
            if taken {
                return fail(format!(
                    "parameter name \"{name}\" is used twice; expected unique names"
                ));
            }
            if greedy {
                Piece::Greedy(name.into())
            } else {
                Piece::Param(name.into())
            }
        } else if segment == "." || segment == ".." {
            return fail(format!(
                "dot-segment \"{segment}\" never matches, since request paths are resolved \
                 before routing; expected it written out"
            ));
        } else if segment.is_empty() && !is_last {
            return fail(
                "empty segment (\"//\"); expected one '/' between segments (a trailing '/' \
                 is allowed)"
                    .to_owned(),
            );
        } else {
            let mut text = String::with_capacity(segment.len());
            if let Err(error) =
                path::push_canonical_segment(&mut text, segment, EscapedSeparators::Keep)
            {
                return fail(format!("segment \"{segment}\" is not valid: {error}"));
            }
            Piece::Literal(text)
        };
        pieces.push(piece);
    }
    Ok(pieces)
}

fn check_param_name(name: &str) -> Result<(), &'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => Err("has an empty name; expected a name such as \"{id}\""),
        Some(first) if !(first.is_ascii_alphabetic() || first == '_') => {
            Err("has a bad name; expected a letter or '_' followed by letters, digits or '_'")
        }
        Some(_) if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            Err("has a bad name; expected a letter or '_' followed by letters, digits or '_'")
        }
        Some(_) => Ok(()),
    }
}

/// Checks a route's hosts, lower-cases them and drops repeats. No hosts = any host.
fn parse_hosts(hosts: &[String]) -> Result<Vec<HostEntry>, String> {
    if hosts.is_empty() {
        return Ok(vec![HostEntry::Any]);
    }
    let mut entries = Vec::with_capacity(hosts.len());
    for host in hosts {
        let host = host.to_ascii_lowercase();
        let entry = match host.strip_prefix("*.") {
            Some(parent) if !parent.is_empty() && !parent.contains('*') => {
                HostEntry::Wildcard(parent.to_owned())
            }
            None if !host.is_empty() && !host.contains('*') => HostEntry::Exact(host),
            _ => {
                return Err(format!(
                    "host \"{host}\": expected a host name, or \"*.\" followed by a host name"
                ));
            }
        };
        if !entries.contains(&entry) {
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// The methods a route allows.
#[derive(Debug, Clone)]
enum Methods {
    Any,
    Only(MethodSet),
}

/// How two routes' methods overlap, for the duplicate message.
enum MethodOverlap {
    Any,
    Method(String),
}

impl Methods {
    fn new(methods: Option<&[Method]>) -> Result<Self, String> {
        let Some(methods) = methods else {
            return Ok(Methods::Any);
        };
        if methods.is_empty() {
            return Err(
                "methods is empty; expected at least one method, or no list to allow any method"
                    .to_owned(),
            );
        }
        let mut set = MethodSet::default();
        let mut extensions = Vec::new();
        for method in methods {
            match known_bit(method) {
                Some(bit) => set.known |= bit,
                None if !extensions.contains(method) => extensions.push(method.clone()),
                None => {}
            }
        }
        set.extensions = extensions.into();
        Ok(Methods::Only(set))
    }

    /// A method both allow, if any. An any-method route does not overlap one for listed
    /// methods: it is their fallback.
    fn overlap(&self, other: &Methods) -> Option<MethodOverlap> {
        match (self, other) {
            (Methods::Any, Methods::Any) => Some(MethodOverlap::Any),
            (Methods::Only(a), Methods::Only(b)) => {
                let common = a.known & b.known;
                if common != 0 {
                    let first = KNOWN_METHODS.get(common.trailing_zeros() as usize)?;
                    return Some(MethodOverlap::Method(first.as_str().to_owned()));
                }
                a.extensions
                    .iter()
                    .find(|method| b.extensions.contains(method))
                    .map(|method| MethodOverlap::Method(method.as_str().to_owned()))
            }
            _ => None,
        }
    }
}

/// The standard methods, in the (alphabetical) order of their bits in [`MethodSet::known`].
static KNOWN_METHODS: [Method; 10] = [
    Method::CONNECT,
    Method::DELETE,
    Method::GET,
    Method::HEAD,
    Method::OPTIONS,
    Method::PATCH,
    Method::POST,
    Method::PUT,
    Method::QUERY,
    Method::TRACE,
];
const GET_BIT: u16 = 1 << 2;
const HEAD_BIT: u16 = 1 << 3;

fn known_bit(method: &Method) -> Option<u16> {
    KNOWN_METHODS
        .iter()
        .position(|known| known == method)
        .map(|index| 1 << index)
}

/// A set of methods: a bit per standard method, extension methods listed.
#[derive(Debug, Clone, Default)]
struct MethodSet {
    known: u16,
    extensions: Box<[Method]>,
}

/// The request method, looked up once per request.
struct MethodQuery<'m> {
    method: &'m Method,
    /// `None` for extension methods.
    bit: Option<u16>,
}

impl<'m> MethodQuery<'m> {
    fn new(method: &'m Method) -> Self {
        MethodQuery {
            method,
            bit: known_bit(method),
        }
    }

    /// Whether a route listing `set` allows this method by name.
    fn listed_in(&self, set: &MethodSet) -> bool {
        match self.bit {
            Some(bit) => set.known & bit != 0,
            None => set.extensions.contains(self.method),
        }
    }

    /// Whether this is `HEAD` and `set` allows `GET`.
    fn head_via_get(&self, set: &MethodSet) -> bool {
        self.bit == Some(HEAD_BIT) && set.known & GET_BIT != 0
    }
}

/// What a lookup learned from path matches whose routes did not allow the method.
#[derive(Default)]
struct PathMatches<'r> {
    /// Whether any route's path matched.
    any: bool,
    known: u16,
    extensions: Vec<&'r Method>,
}

impl<'r> PathMatches<'r> {
    /// Picks, among routes with the same template, the one for the method: listed, then
    /// `HEAD` via `GET`, then any-method. Records the path match either way.
    fn choose(
        &mut self,
        endpoints: &'r [Endpoint],
        method: &MethodQuery<'_>,
    ) -> Option<&'r Endpoint> {
        if endpoints.is_empty() {
            return None;
        }
        self.any = true;
        let only = |endpoint: &'r Endpoint| match &endpoint.methods {
            Methods::Only(set) => Some((endpoint, set)),
            Methods::Any => None,
        };
        let chosen = (endpoints.iter().filter_map(only))
            .find(|(_, set)| method.listed_in(set))
            .or_else(|| {
                endpoints
                    .iter()
                    .filter_map(only)
                    .find(|(_, set)| method.head_via_get(set))
            })
            .map(|(endpoint, _)| endpoint)
            .or_else(|| endpoints.iter().find(|e| matches!(e.methods, Methods::Any)));
        if chosen.is_none() {
            for (_, set) in endpoints.iter().filter_map(only) {
                self.known |= set.known;
                self.extensions.extend(set.extensions.iter());
            }
        }
        chosen
    }

    /// The `Allow` value: every method seen, sorted, without repeats, `HEAD` with `GET`.
    fn allow_header(&self) -> String {
        let mut known = self.known;
        if known & GET_BIT != 0 {
            known |= HEAD_BIT;
        }
        let mut names: Vec<&str> = KNOWN_METHODS
            .iter()
            .enumerate()
            .filter(|(index, _)| known & (1 << index) != 0)
            .map(|(_, method)| method.as_str())
            .chain(self.extensions.iter().map(|method| method.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::{PathOptions, canonicalize};

    /// An owned route, for building [`RouteSpec`]s in tests.
    struct TestRoute {
        hosts: Vec<String>,
        methods: Option<Vec<Method>>,
        path: String,
    }

    /// `methods` is `"*"` for any method, else names separated by `,`.
    fn route(methods: &str, path: &str) -> TestRoute {
        let methods = (methods != "*").then(|| {
            methods
                .split(',')
                .map(|name| Method::from_bytes(name.as_bytes()).expect("valid test method"))
                .collect()
        });
        TestRoute {
            hosts: Vec::new(),
            methods,
            path: path.to_owned(),
        }
    }

    impl TestRoute {
        fn hosts(mut self, hosts: &[&str]) -> Self {
            self.hosts = hosts.iter().map(|host| (*host).to_owned()).collect();
            self
        }
    }

    fn compile(routes: &[TestRoute]) -> Result<Router, Vec<RouterError>> {
        let specs: Vec<RouteSpec<'_>> = routes
            .iter()
            .map(|route| RouteSpec {
                hosts: &route.hosts,
                methods: route.methods.as_deref(),
                path: &route.path,
            })
            .collect();
        Router::new(&specs)
    }

    fn router(routes: &[TestRoute]) -> Router {
        compile(routes).expect("test routes compile")
    }

    fn errors(routes: &[TestRoute]) -> Vec<(usize, String)> {
        match compile(routes) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| (e.route, e.message)).collect(),
        }
    }

    fn lookup_with(
        router: &Router,
        options: &PathOptions,
        host: Option<&str>,
        method: &str,
        raw_path: &str,
    ) -> Lookup {
        let path = canonicalize(raw_path, options).expect("valid test path");
        let method = Method::from_bytes(method.as_bytes()).expect("valid test method");
        router.lookup(host, &method, &path)
    }

    fn lookup(router: &Router, method: &str, raw_path: &str) -> Lookup {
        lookup_with(router, &PathOptions::default(), None, method, raw_path)
    }

    fn found(route: usize, params: &[(&str, &str)]) -> Lookup {
        Lookup::Found {
            route,
            params: Params {
                pairs: params
                    .iter()
                    .map(|(name, value)| (Arc::from(*name), (*value).to_owned()))
                    .collect(),
            },
        }
    }

    fn not_allowed(allow: &str) -> Lookup {
        Lookup::MethodNotAllowed {
            allow: allow.to_owned(),
        }
    }

    #[test]
    fn literal_beats_param_beats_greedy() {
        let router = router(&[
            route("GET", "/files/{path+}"),
            route("GET", "/files/{name}"),
            route("GET", "/files/readme"),
        ]);
        assert_eq!(lookup(&router, "GET", "/files/readme"), found(2, &[]));
        assert_eq!(
            lookup(&router, "GET", "/files/other"),
            found(1, &[("name", "other")])
        );
        assert_eq!(
            lookup(&router, "GET", "/files/a/b"),
            found(0, &[("path", "a/b")])
        );
        assert_eq!(
            lookup(&router, "GET", "/files/readme/x"),
            found(0, &[("path", "readme/x")])
        );
    }

    #[test]
    fn backtracks_when_the_preferred_branch_fails_deeper() {
        let router = router(&[
            route("GET", "/a/b/c"),
            route("GET", "/a/{x}/d"),
            route("GET", "/a/{rest+}"),
        ]);
        assert_eq!(lookup(&router, "GET", "/a/b/c"), found(0, &[]));
        assert_eq!(lookup(&router, "GET", "/a/b/d"), found(1, &[("x", "b")]));
        assert_eq!(
            lookup(&router, "GET", "/a/b/e"),
            found(2, &[("rest", "b/e")])
        );
        assert_eq!(lookup(&router, "GET", "/a/b"), found(2, &[("rest", "b")]));
        assert_eq!(lookup(&router, "GET", "/a"), Lookup::NotFound);
    }

    #[test]
    fn backtracks_past_a_path_match_with_the_wrong_method() {
        let router = router(&[route("POST", "/a/b"), route("GET", "/a/{x}")]);
        assert_eq!(lookup(&router, "POST", "/a/b"), found(0, &[]));
        assert_eq!(lookup(&router, "GET", "/a/b"), found(1, &[("x", "b")]));
        assert_eq!(
            lookup(&router, "DELETE", "/a/b"),
            not_allowed("GET, HEAD, POST")
        );
        assert_eq!(lookup(&router, "DELETE", "/a/c"), not_allowed("GET, HEAD"));
    }

    #[test]
    fn greedy_captures_one_or_more_segments_never_zero() {
        let router = router(&[route("GET", "/files/{path+}")]);
        assert_eq!(
            lookup(&router, "GET", "/files/a"),
            found(0, &[("path", "a")])
        );
        assert_eq!(
            lookup(&router, "GET", "/files/a/b/c.txt"),
            found(0, &[("path", "a/b/c.txt")])
        );
        assert_eq!(
            lookup(&router, "GET", "/files/a/"),
            found(0, &[("path", "a/")])
        );
        assert_eq!(lookup(&router, "GET", "/files"), Lookup::NotFound);
        assert_eq!(lookup(&router, "GET", "/files/"), Lookup::NotFound);
        assert_eq!(lookup(&router, "GET", "/other/a"), Lookup::NotFound);
    }

    #[test]
    fn params_capture_whole_non_empty_segments() {
        let router = router(&[route("GET", "/users/{id}/posts/{post}"), route("GET", "/")]);
        assert_eq!(
            lookup(&router, "GET", "/users/7/posts/hello"),
            found(0, &[("id", "7"), ("post", "hello")])
        );
        assert_eq!(lookup(&router, "GET", "/users/7/posts/"), Lookup::NotFound);
        assert_eq!(lookup(&router, "GET", "/users/7/posts"), Lookup::NotFound);
        assert_eq!(
            lookup(&router, "GET", "/users/7/posts/x/y"),
            Lookup::NotFound
        );
        assert_eq!(lookup(&router, "GET", "/"), found(1, &[]));
    }

    #[test]
    fn trailing_slash_is_significant() {
        let router = router(&[route("GET", "/a"), route("GET", "/b/")]);
        assert_eq!(lookup(&router, "GET", "/a"), found(0, &[]));
        assert_eq!(lookup(&router, "GET", "/a/"), Lookup::NotFound);
        assert_eq!(lookup(&router, "GET", "/b/"), found(1, &[]));
        assert_eq!(lookup(&router, "GET", "/b/."), found(1, &[]));
        assert_eq!(lookup(&router, "GET", "/b"), Lookup::NotFound);
    }

    #[test]
    fn not_found_versus_method_not_allowed() {
        let router = router(&[
            route("POST,GET", "/users"),
            route("DELETE", "/users/{id}"),
            route("PUT,PATCH", "/users/{id}/{rest+}"),
            route("PURGE", "/cache"),
        ]);
        assert_eq!(
            lookup(&router, "PUT", "/users"),
            not_allowed("GET, HEAD, POST")
        );
        assert_eq!(lookup(&router, "GET", "/users/1"), not_allowed("DELETE"));
        assert_eq!(
            lookup(&router, "GET", "/users/1/x"),
            not_allowed("PATCH, PUT")
        );
        assert_eq!(lookup(&router, "GET", "/cache"), not_allowed("PURGE"));
        assert_eq!(lookup(&router, "PURGE", "/cache"), found(3, &[]));
        assert_eq!(lookup(&router, "GET", "/nothing"), Lookup::NotFound);
        assert_eq!(lookup(&router, "GET", "/users/"), Lookup::NotFound);
    }

    #[test]
    fn allow_is_the_union_of_every_path_match() {
        let router = router(&[
            route("GET", "/a/b"),
            route("POST,GET", "/a/{x}"),
            route("PUT", "/a/{x+}"),
            route("DELETE", "/a/{x+}").hosts(&["api.example.com"]),
        ]);
        assert_eq!(
            lookup(&router, "PATCH", "/a/b"),
            not_allowed("GET, HEAD, POST, PUT")
        );
        assert_eq!(
            lookup_with(
                &router,
                &PathOptions::default(),
                Some("api.example.com"),
                "PATCH",
                "/a/b"
            ),
            not_allowed("DELETE, GET, HEAD, POST, PUT")
        );
    }

    #[test]
    fn head_is_served_by_get_routes() {
        let router = router(&[route("GET", "/a"), route("POST", "/b")]);
        assert_eq!(lookup(&router, "HEAD", "/a"), found(0, &[]));
        assert_eq!(lookup(&router, "HEAD", "/b"), not_allowed("POST"));
    }

    #[test]
    fn listed_method_beats_head_via_get_beats_any_method() {
        let router = router(&[
            route("GET", "/a"),
            route("*", "/a"),
            route("HEAD", "/a"),
            route("GET", "/b"),
            route("*", "/b"),
        ]);
        assert_eq!(lookup(&router, "HEAD", "/a"), found(2, &[]));
        assert_eq!(lookup(&router, "GET", "/a"), found(0, &[]));
        assert_eq!(lookup(&router, "POST", "/a"), found(1, &[]));
        assert_eq!(lookup(&router, "HEAD", "/b"), found(3, &[]));
        assert_eq!(lookup(&router, "BREW", "/b"), found(4, &[]));
    }

    #[test]
    fn any_method_routes_match_every_method() {
        let router = router(&[route("*", "/any/{x}"), route("GET", "/any/special")]);
        for method in ["GET", "HEAD", "POST", "DELETE", "OPTIONS", "PURGE"] {
            assert_eq!(
                lookup(&router, method, "/any/thing"),
                found(0, &[("x", "thing")])
            );
        }
        assert_eq!(lookup(&router, "GET", "/any/special"), found(1, &[]));
        // The literal's route does not allow POST, so the param's any-method route does.
        assert_eq!(
            lookup(&router, "POST", "/any/special"),
            found(0, &[("x", "special")])
        );
    }

    #[test]
    fn hosts_exact_then_wildcard_then_none() {
        let router = router(&[
            route("GET", "/x").hosts(&["a.example.com"]),
            route("GET", "/x").hosts(&["*.example.com"]),
            route("GET", "/x"),
            route("POST", "/y").hosts(&["a.example.com"]),
            route("GET", "/y"),
            route("GET", "/z").hosts(&["a.example.com", "B.Example.com"]),
        ]);
        let at = |host: Option<&str>, method: &str, path: &str| {
            lookup_with(&router, &PathOptions::default(), host, method, path)
        };
        assert_eq!(at(Some("a.example.com"), "GET", "/x"), found(0, &[]));
        assert_eq!(at(Some("a.example.com."), "GET", "/x"), found(0, &[]));
        assert_eq!(at(Some("b.example.com"), "GET", "/x"), found(1, &[]));
        assert_eq!(at(Some("example.com"), "GET", "/x"), found(2, &[]));
        assert_eq!(at(Some("a.b.example.com"), "GET", "/x"), found(2, &[]));
        assert_eq!(at(Some(".example.com"), "GET", "/x"), found(2, &[]));
        assert_eq!(at(Some("other.org"), "GET", "/x"), found(2, &[]));
        assert_eq!(at(None, "GET", "/x"), found(2, &[]));
        // A later table wins when an earlier one matched the path but not the method.
        assert_eq!(at(Some("a.example.com"), "POST", "/y"), found(3, &[]));
        assert_eq!(at(Some("a.example.com"), "GET", "/y"), found(4, &[]));
        assert_eq!(
            at(Some("a.example.com"), "PUT", "/y"),
            not_allowed("GET, HEAD, POST")
        );
        assert_eq!(at(None, "PUT", "/y"), not_allowed("GET, HEAD"));
        // Host-only routes are invisible to other hosts; host names are lower-cased.
        assert_eq!(at(Some("b.example.com"), "GET", "/z"), found(5, &[]));
        assert_eq!(at(Some("c.example.com"), "GET", "/z"), Lookup::NotFound);
        assert_eq!(at(None, "GET", "/z"), Lookup::NotFound);
    }

    #[test]
    fn params_are_percent_decoded() {
        let router = router(&[route("GET", "/u/{name}"), route("GET", "/f/{path+}")]);
        let keep = PathOptions {
            escaped_separators: EscapedSeparators::Keep,
            ..PathOptions::default()
        };
        assert_eq!(
            lookup(&router, "GET", "/u/a%20b"),
            found(0, &[("name", "a b")])
        );
        assert_eq!(
            lookup(&router, "GET", "/u/caf%c3%a9"),
            found(0, &[("name", "café")])
        );
        assert_eq!(
            lookup(&router, "GET", "/u/%41%3a"),
            found(0, &[("name", "A:")])
        );
        assert_eq!(lookup(&router, "GET", "/u/%25"), found(0, &[("name", "%")]));
        assert_eq!(
            lookup(&router, "GET", "/u/%FF"),
            found(0, &[("name", "\u{fffd}")])
        );
        assert_eq!(
            lookup_with(&router, &keep, None, "GET", "/u/a%2Fb"),
            found(0, &[("name", "a/b")])
        );
        assert_eq!(
            lookup(&router, "GET", "/f/a%20b/c%3F"),
            found(1, &[("path", "a b/c?")])
        );
    }

    #[test]
    fn template_literals_are_canonicalised() {
        let router = router(&[
            route("GET", "/caf%c3%a9/%7eme"),
            route("GET", "/a%3ab/{x}"),
            route("GET", "/sp ace"),
            route("GET", "/enc%2fsep"),
        ]);
        assert_eq!(lookup(&router, "GET", "/café/~me"), found(0, &[]));
        assert_eq!(lookup(&router, "GET", "/caf%C3%A9/%7Eme"), found(0, &[]));
        assert_eq!(lookup(&router, "GET", "/a%3Ab/1"), found(1, &[("x", "1")]));
        assert_eq!(lookup(&router, "GET", "/a:b/1"), Lookup::NotFound);
        assert_eq!(lookup(&router, "GET", "/sp%20ace"), found(2, &[]));
        let keep = PathOptions {
            escaped_separators: EscapedSeparators::Keep,
            ..PathOptions::default()
        };
        assert_eq!(
            lookup_with(&router, &keep, None, "GET", "/enc%2Fsep"),
            found(3, &[])
        );
    }

    #[test]
    fn duplicates_name_the_earlier_route() {
        let errors = errors(&[
            route("GET", "/users/{id}"),
            route("POST,GET", "/users/{uid}"),
            route("*", "/users/{id}"),
            route("*", "/users/{x}"),
            route("GET", "/files/{p+}").hosts(&["a.example.com", "*.example.com"]),
            route("GET", "/files/{q+}").hosts(&["*.Example.com"]),
            route("GET", "/"),
            route("GET", "/"),
        ]);
        assert_eq!(
            errors,
            [
                (
                    1,
                    "duplicate of route 0: both have no host, path \"/users/{}\" (parameter \
                     names ignored) and method GET; expected each host, path and method to lead \
                     to one route"
                        .to_owned()
                ),
                (
                    3,
                    "duplicate of route 2: both have no host, path \"/users/{}\" (parameter \
                     names ignored) and any method; expected each host, path and method to lead \
                     to one route"
                        .to_owned()
                ),
                (
                    5,
                    "duplicate of route 4: both have host \"*.example.com\", path \"/files/{+}\" \
                     (parameter names ignored) and method GET; expected each host, path and \
                     method to lead to one route"
                        .to_owned()
                ),
                (
                    7,
                    "duplicate of route 6: both have no host, path \"/\" (parameter names \
                     ignored) and method GET; expected each host, path and method to lead to \
                     one route"
                        .to_owned()
                ),
            ]
        );
    }

    #[test]
    fn different_hosts_methods_or_shapes_are_not_duplicates() {
        let routes = [
            route("GET", "/users/{id}"),
            route("POST", "/users/{id}"),
            route("*", "/users/{id}"),
            route("GET", "/users/{id}").hosts(&["a.example.com"]),
            route("GET", "/users/{id}").hosts(&["*.example.com"]),
            route("GET", "/users/{id+}"),
            route("GET", "/users/me"),
            route("GET", "/users/{id}/"),
            route("HEAD", "/users/{id}"),
            route("PURGE", "/users/{id}"),
            route("GET", "/x").hosts(&["a.example.com", "a.example.com"]),
        ];
        assert_eq!(errors(&routes), []);
    }

    #[test]
    fn extension_methods_can_be_duplicates() {
        let errors = errors(&[route("PURGE", "/c"), route("PURGE,GET", "/c")]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].1.contains("method PURGE"), "{}", errors[0].1);
    }

    #[test]
    fn bad_templates_say_what_was_expected() {
        let cases = [
            ("users/{id}", "expected it to start with '/'"),
            ("", "expected it to start with '/'"),
            (
                "/users/x{id}",
                "segment \"x{id}\" is not a parameter; expected \"{name}\" or \"{name+}\" as a \
                 whole segment, or a literal without '{' and '}'",
            ),
            (
                "/users/{id",
                "segment \"{id\" is not a parameter; expected \"{name}\" or \"{name+}\" as a \
                 whole segment, or a literal without '{' and '}'",
            ),
            (
                "/users/{{id}}",
                "segment \"{{id}}\" is not a parameter; expected \"{name}\" or \"{name+}\" as a \
                 whole segment, or a literal without '{' and '}'",
            ),
            (
                "/files/{path+}/raw",
                "greedy parameter \"{path+}\" must be the last segment",
            ),
            (
                "/files/{path+}/",
                "greedy parameter \"{path+}\" must be the last segment",
            ),
            (
                "/a/{id}/b/{id}",
                "parameter name \"id\" is used twice; expected unique names",
            ),
            (
                "/a/{id}/{id+}",
                "parameter name \"id\" is used twice; expected unique names",
            ),
            (
                "/a/{}",
                "parameter \"{}\" has an empty name; expected a name such as \"{id}\"",
            ),
            (
                "/a/{+}",
                "parameter \"{+}\" has an empty name; expected a name such as \"{id}\"",
            ),
            (
                "/a/{1x}",
                "parameter \"{1x}\" has a bad name; expected a letter or '_' followed by \
                 letters, digits or '_'",
            ),
            (
                "/a/{x-y}",
                "parameter \"{x-y}\" has a bad name; expected a letter or '_' followed by \
                 letters, digits or '_'",
            ),
            (
                "/a//b",
                "empty segment (\"//\"); expected one '/' between segments (a trailing '/' is \
                 allowed)",
            ),
            (
                "/a/../b",
                "dot-segment \"..\" never matches, since request paths are resolved before \
                 routing; expected it written out",
            ),
            (
                "/a/%zz",
                "segment \"%zz\" is not valid: path has an invalid percent-encoding",
            ),
            (
                "/a\\b",
                "segment \"a\\b\" is not valid: path has a backslash",
            ),
        ];
        for (template, problem) in cases {
            assert_eq!(
                errors(&[route("GET", "/ok"), route("GET", template)]),
                [(1, format!("path template \"{template}\": {problem}"))],
                "template {template:?}"
            );
        }
    }

    #[test]
    fn good_templates_compile() {
        for template in [
            "/",
            "/a",
            "/a/",
            "/{a}",
            "/{_a1}/{B_2+}",
            "/a+b/{x}",
            "/v1.0/{id}",
        ] {
            assert_eq!(
                errors(&[route("GET", template)]),
                [],
                "template {template:?}"
            );
        }
    }

    #[test]
    fn bad_hosts_and_methods_are_reported() {
        let errors = errors(&[
            route("GET", "/a").hosts(&[""]),
            route("GET", "/a").hosts(&["*"]),
            route("GET", "/a").hosts(&["a.*.com"]),
            route("GET", "/a").hosts(&["*."]),
            TestRoute {
                hosts: Vec::new(),
                methods: Some(Vec::new()),
                path: "/a".to_owned(),
            },
        ]);
        let expected_host = "expected a host name, or \"*.\" followed by a host name";
        assert_eq!(
            errors,
            [
                (0, format!("host \"\": {expected_host}")),
                (1, format!("host \"*\": {expected_host}")),
                (2, format!("host \"a.*.com\": {expected_host}")),
                (3, format!("host \"*.\": {expected_host}")),
                (
                    4,
                    "methods is empty; expected at least one method, or no list to allow any \
                     method"
                        .to_owned()
                ),
            ]
        );
    }

    #[test]
    fn every_error_is_reported() {
        let errors = errors(&[
            route("GET", "/a/{"),
            route("GET", "/b"),
            route("GET", "/b"),
            route("GET", "b"),
        ]);
        let routes: Vec<usize> = errors.iter().map(|(route, _)| *route).collect();
        assert_eq!(routes, [0, 2, 3]);
    }

    #[test]
    fn a_thousand_routes() {
        const SERVICES: usize = 250;
        let mut routes = Vec::with_capacity(SERVICES * 4);
        for service in 0..SERVICES {
            let host = format!("s{service}.example.com");
            let with_host = |route: TestRoute| {
                if service % 5 == 0 {
                    route.hosts(&[host.as_str()])
                } else {
                    route
                }
            };
            routes.push(with_host(route("GET", &format!("/svc{service}/items"))));
            routes.push(with_host(route(
                "GET,PUT",
                &format!("/svc{service}/items/{{id}}"),
            )));
            routes.push(with_host(route(
                "GET",
                &format!("/svc{service}/items/special"),
            )));
            routes.push(with_host(route(
                "*",
                &format!("/svc{service}/files/{{path+}}"),
            )));
        }
        assert_eq!(routes.len(), 1000);
        let router = router(&routes);
        for service in 0..SERVICES {
            let host_name = format!("s{service}.example.com");
            let host = (service % 5 == 0).then_some(host_name.as_str());
            let at = |method: &str, path: &str| {
                lookup_with(&router, &PathOptions::default(), host, method, path)
            };
            let base = service * 4;
            let svc = format!("/svc{service}");
            assert_eq!(at("GET", &format!("{svc}/items")), found(base, &[]));
            assert_eq!(at("HEAD", &format!("{svc}/items")), found(base, &[]));
            assert_eq!(
                at("POST", &format!("{svc}/items")),
                not_allowed("GET, HEAD")
            );
            assert_eq!(
                at("PUT", &format!("{svc}/items/x{service}")),
                found(base + 1, &[("id", &format!("x{service}"))])
            );
            assert_eq!(
                at("GET", &format!("{svc}/items/special")),
                found(base + 2, &[])
            );
            assert_eq!(
                at("PUT", &format!("{svc}/items/special")),
                found(base + 1, &[("id", "special")])
            );
            assert_eq!(
                at("POST", &format!("{svc}/items/special")),
                not_allowed("GET, HEAD, PUT")
            );
            assert_eq!(
                at("DELETE", &format!("{svc}/files/a/b{service}")),
                found(base + 3, &[("path", &format!("a/b{service}"))])
            );
            assert_eq!(at("GET", &format!("{svc}/items/a/b")), Lookup::NotFound);
            assert_eq!(at("GET", &format!("{svc}/nothing")), Lookup::NotFound);
            if service % 5 == 0 {
                // Host-only routes are invisible without their host.
                let path = canonicalize(&format!("{svc}/items"), &PathOptions::default())
                    .expect("valid test path");
                assert_eq!(router.lookup(None, &Method::GET, &path), Lookup::NotFound);
            }
        }
        assert_eq!(lookup(&router, "GET", "/svc250/items"), Lookup::NotFound);
    }
}
