//! The route table: host, method and path template → route index.
//!
//! INTERFACE STUB — the implementation is being written; signatures are fixed.

use http::Method;

use crate::path::CanonicalPath;

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
#[derive(Debug)]
pub struct Router {}

/// Captured path parameters, in template order, percent-decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(std::sync::Arc<str>, String)>,
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (&**n, v.as_str()))
    }
}

/// The result of a lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found { route: usize, params: Params },
    /// Some route's path matched but none allows the method; the `Allow` header value.
    MethodNotAllowed { allow: String },
    NotFound,
}

impl Router {
    /// Compiles the table; reports every bad template and every duplicate.
    pub fn new(routes: &[RouteSpec<'_>]) -> Result<Router, Vec<RouterError>> {
        let _ = routes;
        todo!()
    }

    /// Finds the route for a request. `host` is lower-case without port, if known.
    pub fn lookup(&self, host: Option<&str>, method: &Method, path: &CanonicalPath) -> Lookup {
        let _ = (host, method, path);
        todo!()
    }
}
