//! The route file: a raw serde mirror (`raw`), a validation pass (`validate`) that
//! resolves references and reports every error with file, line and key, and the validated
//! form ([`model`]) the gateway runs on.
//!
//! [`load`] and [`parse`] run the whole pass, in this order:
//!
//! 1. parse the TOML text into a span-carrying tree (`document`); a syntax error stops here;
//! 2. replace `${env:NAME}` in every string value (`interpolate`);
//! 3. deserialize the tree into `raw::RawConfig`, collecting unknown keys; a value of the
//!    wrong TOML type stops here;
//! 4. validate raw → model (`validate`), reporting every problem;
//! 5. compile the route table ([`crate::router::Router::new`]) once all else is clean.
//!
//! Every error is a [`ConfigError`] placed at the file, line, column and dotted key at fault.

mod access;
mod document;
pub mod error;
mod interpolate;
mod keypath;
pub mod model;
mod names;
mod pem;
pub mod plugins;
mod raw;
mod target_url;
pub mod traffic;
pub mod units;
mod validate;
pub mod websocket;

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;

use crate::router::{RouteSpec, Router};
use document::{Document, Report};
use keypath::KeyPath;

/// Reads and validates the route file at `path`, taking `${env:NAME}` from the process
/// environment. Relative file names in it resolve against its directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let source = std::fs::read_to_string(path).map_err(|error| {
        let reason = match error.kind() {
            std::io::ErrorKind::InvalidData => "not valid UTF-8".to_owned(),
            _ => pem::io_reason(&error),
        };
        ConfigError {
            file: path.to_owned(),
            line: None,
            column: None,
            key: String::new(),
            message: format!("cannot read the route file: {reason}"),
        }
    })?;
    parse(&source, path, &|name| std::env::var(name).ok())
}

/// Validates a route file's text. `file` is the name errors show and the base for
/// relative file names in it; `env` looks up `${env:NAME}`.
pub fn parse(
    source: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let (document, mut tree) = Document::parse(source).map_err(|error| {
        let position = error
            .span()
            .map(|span| document::line_column(source, span.start));
        ConfigError {
            file: file.to_owned(),
            line: position.map(|(line, _)| line),
            column: position.map(|(_, column)| column),
            key: String::new(),
            message: error.message().to_owned(),
        }
    })?;
    let mut report = Report::new(&document, file);

    for (path, error) in document::interpolate_tree(&mut tree, env) {
        report.at(&path, error.to_string());
        report.silence(&path);
    }

    let deserialized = raw::deserialize(tree);
    for path in &deserialized.unknown_keys {
        validate::unknown_key(&mut report, path);
    }
    let raw = match deserialized.config {
        Ok(raw) => raw,
        Err(error) => {
            // serde sees a TOML datetime as a table; say what the file says.
            let message = if document.value_kind(&error.path) == Some("datetime") {
                error
                    .message
                    .replacen("invalid type: table,", "invalid type: datetime,", 1)
            } else {
                error.message
            };
            report.at_offset(error.offset, &error.path, message);
            return Err(ConfigErrors(report.into_errors()));
        }
    };

    let base_dir = file.parent().unwrap_or(Path::new(""));
    let validated = validate::validate(raw, &document, &mut report, base_dir);
    if report.has_errors() {
        return Err(ConfigErrors(report.into_errors()));
    }

    let specs: Vec<RouteSpec<'_>> = validated
        .routes
        .iter()
        .map(|route| RouteSpec {
            hosts: &route.hosts,
            methods: route.methods.as_deref(),
            path: &route.path,
        })
        .collect();
    let router = match Router::new(&specs) {
        Ok(router) => router,
        Err(errors) => {
            let routes = KeyPath::root().key("routes");
            for error in errors {
                report.at(&routes.index(error.route).key("path"), error.message);
            }
            // An `Err` is never empty, even if the router returned no reason.
            if !report.has_errors() {
                report.at(&routes, "the route table could not be built");
            }
            return Err(ConfigErrors(report.into_errors()));
        }
    };

    Ok(Config {
        source: file.to_owned(),
        server: validated.server,
        upstreams: validated.upstreams,
        routes: validated.routes,
        router,
        log: validated.log,
        traffic: validated.traffic,
        access: validated.access,
        plugins: validated.plugins,
    })
}
