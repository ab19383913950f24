//! Golden tests: every `tests/golden/config/NAME.toml` must produce exactly the errors in
//! `NAME.err` beside it, one per line (an empty `.err` means the file must be valid).
//!
//! Run with `UPDATE_GOLDEN=1` to rewrite the `.err` files from the current output, then
//! review the diff.
//!
//! Files are parsed as `NAME.toml` (so messages do not depend on the checkout's path) with
//! a fixed environment: `CERTS` is the path of `certs/` beside them as seen from the crate
//! directory, where cargo runs unit tests (a file parsed as `NAME.toml` resolves relative
//! file names against the working directory, not the golden directory); `TOKEN` is
//! `s3cret`; nothing else is set.

use std::fs;
use std::path::{Path, PathBuf};

use super::keypath::KeyPath;
use super::parse;
use super::raw::Table;

/// `tests/golden/config/certs` as seen from the crate directory (the tests' working
/// directory).
const GOLDEN_CERTS_FROM_CRATE: &str = "../tests/golden/config/certs";
/// `tests/golden/config/plugins` (a minimal component header) likewise.
const GOLDEN_PLUGINS_FROM_CRATE: &str = "../tests/golden/config/plugins";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/config")
}

fn golden_env(name: &str) -> Option<String> {
    match name {
        // Relative to the crate directory, where cargo runs unit tests, so that messages
        // naming a certificate file do not depend on where the checkout is.
        "CERTS" => Some(GOLDEN_CERTS_FROM_CRATE.to_owned()),
        "PLUGINS" => Some(GOLDEN_PLUGINS_FROM_CRATE.to_owned()),
        "TOKEN" => Some("s3cret".to_owned()),
        "JWT_SECRET" => Some("a-golden-hmac-secret-of-32-bytes!".to_owned()),
        _ => None,
    }
}

/// What `parse` prints for one golden file: the errors, one per line, or nothing.
fn output(name: &str, source: &str) -> String {
    let file = PathBuf::from(format!("{name}.toml"));
    match parse(source, &file, &golden_env) {
        Ok(_) => String::new(),
        Err(errors) => format!("{errors}\n"),
    }
}

#[test]
fn golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<PathBuf> = fs::read_dir(golden_dir())
        .expect("read the golden directory")
        .map(|entry| entry.expect("read a golden directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no golden files in {:?}", golden_dir());

    let mut failures = Vec::new();
    for toml_path in &cases {
        let name = toml_path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .expect("a UTF-8 golden file name");
        let source = fs::read_to_string(toml_path).expect("read a golden file");
        let actual = output(name, &source);
        let err_path = toml_path.with_extension("err");
        if update {
            fs::write(&err_path, &actual).expect("write a golden .err file");
            continue;
        }
        let expected = fs::read_to_string(&err_path).unwrap_or_else(|_| {
            panic!("{err_path:?} is missing; run with UPDATE_GOLDEN=1 to create it")
        });
        if actual != expected {
            failures.push(format!(
                "{name}.toml\n--- expected\n{expected}--- actual\n{actual}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden file(s) differ (UPDATE_GOLDEN=1 rewrites them):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn ok_file_is_valid_and_uses_every_key() {
    let source = fs::read_to_string(golden_dir().join("ok.toml")).expect("read ok.toml");
    if let Err(errors) = parse(&source, Path::new("ok.toml"), &golden_env) {
        panic!("ok.toml must be valid:\n{errors}");
    }
    // Every key a raw table accepts appears in ok.toml.
    let tree = toml::de::DeTable::parse(&source).expect("ok.toml parses");
    let mut used = Vec::new();
    collect_keys(
        &toml::de::DeValue::Table(tree.into_inner()),
        &KeyPath::root(),
        &mut used,
    );
    for table in [
        Table::Root,
        Table::Server,
        Table::Tls,
        Table::Sni,
        Table::Upstream,
        Table::Target,
        Table::Eject,
        Table::Pool,
        Table::Route,
        Table::Mock,
        Table::Authorizer,
        Table::UsagePlan,
        Table::PlanLimits,
        Table::Quota,
        Table::ApiKey,
        Table::Cors,
        Table::State,
        Table::CacheLimits,
        Table::Throttle,
        Table::RouteCache,
        Table::Plugin,
        Table::PluginLimits,
        Table::PluginUse,
    ] {
        for key in table.keys() {
            assert!(
                used.contains(&(table, (*key).to_owned())),
                "ok.toml does not use {table:?}.{key}"
            );
        }
    }
}

/// Every (table kind, key) written in a tree.
fn collect_keys(value: &toml::de::DeValue<'_>, path: &KeyPath, used: &mut Vec<(Table, String)>) {
    match value {
        toml::de::DeValue::Table(table) => {
            for (key, value) in table.iter() {
                if let Some(kind) = Table::at(path) {
                    used.push((kind, key.get_ref().to_string()));
                }
                collect_keys(value.get_ref(), &path.key(key.get_ref()), used);
            }
        }
        toml::de::DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_keys(item.get_ref(), &path.index(i), used);
            }
        }
        _ => {}
    }
}
