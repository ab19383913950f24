//! Validation and validated form of the plugin keys: `[plugins.NAME]` (a component file,
//! its pinned digest, its limits) and a route's `handler = { plugin, config, body,
//! max_body }`.
//!
//! The file is read and hashed here, so a wrong path, a digest that does not match its
//! pin, or a file that is not a WebAssembly component is refused by `weir validate` like
//! any other configuration error. Whether the component exports what its role needs is
//! checked when the gateway compiles it ([`crate::plugin`]), which `weir validate` runs
//! too. Nothing here imports wasmtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::document::{Document, Report};
use super::keypath::KeyPath;
use super::names::{did_you_mean, is_upstream_name};
use super::pem;
use super::raw::{RawPlugin, RawPluginLimits, RawPluginUse};
use super::traffic::size;
use super::units::parse_duration;

/// Default `limits.memory`: the most linear memory one instance of a plugin may use.
pub const DEFAULT_PLUGIN_MEMORY_BYTES: u64 = 64 * 1024 * 1024;
/// The smallest `limits.memory` accepted (one 64 KiB page is not enough for any
/// toolchain's runtime).
pub const MIN_PLUGIN_MEMORY_BYTES: u64 = 1024 * 1024;
/// The largest `limits.memory` accepted.
pub const MAX_PLUGIN_MEMORY_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Default `limits.timeout`: the deadline of one plugin call.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `limits.timeout` accepted.
pub const MAX_PLUGIN_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Default `limits.concurrency`: calls of one plugin in flight at once; past it, `503`.
pub const DEFAULT_PLUGIN_CONCURRENCY: usize = 100;
/// The largest `limits.concurrency` accepted (the instance pool has room for 1000).
pub const MAX_PLUGIN_CONCURRENCY: usize = 1000;
/// The largest `requests_per_instance` accepted.
pub const MAX_REQUESTS_PER_INSTANCE: u32 = 1_000_000;
/// The first bytes of every WebAssembly binary.
const WASM_MAGIC: [u8; 4] = *b"\0asm";
/// Version and layer of a component (a core module has `[1, 0, 0, 0]`).
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];

/// `[plugins.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    pub name: String,
    /// `path`, resolved against the route file's directory.
    pub path: PathBuf,
    /// SHA-256 of the file as read at validation (equal to `sha256` when pinned). The
    /// runtime reads the file again and refuses it if the digest changed.
    pub sha256: [u8; 32],
    pub limits: PluginLimits,
    /// `requests_per_instance` (default 1: a fresh instance for every request). Above 1,
    /// an instance that served a request successfully is kept and serves later requests
    /// of the same use, up to this many in all; state it keeps in memory carries over.
    pub requests_per_instance: u32,
}

/// `limits = { memory, timeout, concurrency }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// `memory`: bytes of linear memory per instance.
    pub memory: u64,
    /// `timeout`: deadline of one call (epoch interruption plus a wall-clock bound).
    pub timeout: Duration,
    /// `concurrency`: calls in flight at once.
    pub concurrency: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory: DEFAULT_PLUGIN_MEMORY_BYTES,
            timeout: DEFAULT_PLUGIN_TIMEOUT,
            concurrency: DEFAULT_PLUGIN_CONCURRENCY,
        }
    }
}

/// A use of a plugin: a route's `handler = { ... }`, one of its `filters`, or a plugin
/// authorizer.
#[derive(Debug, Clone)]
pub struct PluginUse {
    /// Index into [`super::Config::plugins`].
    pub plugin: usize,
    /// `config`, as the JSON object the plugin's `config.get` returns.
    pub config: Arc<str>,
    /// `body = true`: the request body is buffered and given to the plugin.
    pub body: bool,
    /// `max_body`: the largest body buffered for it (else the route's, else the
    /// server's `max_body`).
    pub max_body: Option<u64>,
    /// `on_error` (filters only): what a failed call does to the request.
    pub on_error: OnError,
    /// `phases` (filters only): which of the filter's calls run.
    pub phases: Phases,
    /// `config.upstreams`: the `[upstreams.NAME]` the plugin may send requests to
    /// (`outbound`), as (name, index into [`super::Config::upstreams`]).
    pub upstreams: Arc<[(String, usize)]>,
}

/// What a use of a plugin may name.
#[derive(Debug, Clone, Copy)]
pub struct UseNames<'a> {
    /// `[plugins]`, in order.
    pub plugins: &'a [&'a str],
    /// `[upstreams]`, in order.
    pub upstreams: &'a [&'a str],
}

/// A filter's `phases`: which of its exports the gateway calls. Both by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases {
    /// `"request"`: `on-request` runs (in `request_filters`).
    pub request: bool,
    /// `"response"`: `on-response` runs (in `response_filters`), unless `on-request`
    /// answered `continue-without-response` or `respond`.
    pub response: bool,
}

impl Default for Phases {
    fn default() -> Self {
        Phases {
            request: true,
            response: true,
        }
    }
}

/// A filter's `on_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// `"fail"` (default): the request fails (`500`, `503` when busy, `504` on timeout).
    #[default]
    Fail,
    /// `"skip"`: the failed call is logged and counted, and the request goes on as if
    /// the filter were not there (its request or response unchanged).
    Skip,
}

/// Where a plugin is used; decides which keys of the use apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseKind {
    Handler,
    Filter,
    Authorizer,
}

/// Lower-case hex of a digest.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Validates `[plugins]`, in file order.
pub fn plugins(
    report: &mut Report<'_>,
    document: &Document<'_>,
    base_dir: &Path,
    raw: BTreeMap<String, RawPlugin>,
) -> Vec<Plugin> {
    let root = KeyPath::root().key("plugins");
    let mut raw: Vec<(String, RawPlugin)> = raw.into_iter().collect();
    raw.sort_by_key(|(name, _)| document.key_offset(&root.key(name)));
    raw.into_iter()
        .map(|(name, raw)| plugin(report, base_dir, &root.key(&name), name, raw))
        .collect()
}

fn plugin(
    report: &mut Report<'_>,
    base_dir: &Path,
    path: &KeyPath,
    name: String,
    raw: RawPlugin,
) -> Plugin {
    if !is_upstream_name(&name) {
        report.at_key(
            path,
            format!("invalid plugin name {name:?}, expected letters, digits, '-' and '_'"),
        );
    }
    let pinned = raw.sha256.and_then(|text| {
        let digest = parse_sha256(&text);
        if digest.is_none() {
            report.at(
                &path.key("sha256"),
                format!("invalid sha256 {text:?}, expected 64 hexadecimal digits"),
            );
        }
        digest
    });
    let limits = limits(report, &path.key("limits"), raw.limits);
    let requests_per_instance = match raw.requests_per_instance {
        None => 1,
        Some(count) => match u32::try_from(count) {
            Ok(count) if (1..=MAX_REQUESTS_PER_INSTANCE).contains(&count) => count,
            _ => {
                report.at(
                    &path.key("requests_per_instance"),
                    format!(
                        "expected an integer from 1 (a fresh instance per request) to \
                         {MAX_REQUESTS_PER_INSTANCE}, got {count}"
                    ),
                );
                1
            }
        },
    };
    let Some(file) = raw.path else {
        report.at(
            &path.key("path"),
            "missing required key, expected the path of a .wasm component",
        );
        return Plugin {
            name,
            path: PathBuf::new(),
            sha256: [0; 32],
            limits,
            requests_per_instance,
        };
    };
    let resolved = base_dir.join(&file);
    let sha256 = match std::fs::read(&resolved) {
        Ok(bytes) => {
            if let Err(message) = check_component(&bytes) {
                report.at(&path.key("path"), format!("{file}: {message}"));
            }
            let actual = self::sha256(&bytes);
            if let Some(pinned) = pinned
                && pinned != actual
            {
                report.at(
                    &path.key("sha256"),
                    format!(
                        "digest mismatch: {file} has sha256 {}, the pin is {}",
                        hex(&actual),
                        hex(&pinned)
                    ),
                );
            }
            actual
        }
        Err(error) => {
            report.at(
                &path.key("path"),
                format!("cannot read {file}: {}", pem::io_reason(&error)),
            );
            [0; 32]
        }
    };
    Plugin {
        name,
        path: resolved,
        sha256,
        limits,
        requests_per_instance,
    }
}

/// The header of a WebAssembly component, or why this is not one.
pub fn check_component(bytes: &[u8]) -> Result<(), &'static str> {
    match (bytes.get(..4), bytes.get(4..8)) {
        (Some(magic), Some(version)) if magic == WASM_MAGIC => {
            if version == COMPONENT_VERSION {
                Ok(())
            } else if version == [1, 0, 0, 0] {
                Err("a core WebAssembly module, expected a component \
                     (build for wasm32-wasip2, or wrap it with `wasm-tools component new`)")
            } else {
                Err("an unknown WebAssembly version, expected a component")
            }
        }
        _ => Err("not a WebAssembly file"),
    }
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let text = text.strip_prefix("sha256:").unwrap_or(text);
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn limits(report: &mut Report<'_>, path: &KeyPath, raw: Option<RawPluginLimits>) -> PluginLimits {
    let mut limits = PluginLimits::default();
    let Some(raw) = raw else { return limits };
    if let Some(bytes) = size(report, &path.key("memory"), raw.memory) {
        if (MIN_PLUGIN_MEMORY_BYTES..=MAX_PLUGIN_MEMORY_BYTES).contains(&bytes) {
            limits.memory = bytes;
        } else {
            report.at(
                &path.key("memory"),
                format!("expected a size from 1MiB to 4GiB, got {bytes} bytes"),
            );
        }
    }
    if let Some(text) = raw.timeout {
        match parse_duration(&text) {
            Ok(timeout) if !timeout.is_zero() && timeout <= MAX_PLUGIN_TIMEOUT => {
                limits.timeout = timeout;
            }
            Ok(_) => report.at(
                &path.key("timeout"),
                format!("expected a duration above 0 and at most 5m, got {text:?}"),
            ),
            Err(error) => report.at(&path.key("timeout"), error.to_string()),
        }
    }
    if let Some(count) = raw.concurrency {
        match usize::try_from(count) {
            Ok(count) if (1..=MAX_PLUGIN_CONCURRENCY).contains(&count) => {
                limits.concurrency = count;
            }
            _ => report.at(
                &path.key("concurrency"),
                format!("expected an integer from 1 to {MAX_PLUGIN_CONCURRENCY}, got {count}"),
            ),
        }
    }
    limits
}

/// Validates a use of a plugin (`handler = { ... }`, a `filters` entry, or the keys of a
/// plugin authorizer); `plugins` are the names of `[plugins]` in order.
pub fn plugin_use(
    report: &mut Report<'_>,
    path: &KeyPath,
    raw: RawPluginUse,
    names: UseNames<'_>,
    kind: UseKind,
) -> PluginUse {
    let plugins = names.plugins;
    let plugin = match raw.plugin {
        None => {
            report.at(
                &path.key("plugin"),
                "missing required key, expected the name of a `[plugins.NAME]` table",
            );
            0
        }
        Some(name) => match plugins.iter().position(|known| *known == name) {
            Some(index) => index,
            None => {
                let message = if plugins.is_empty() {
                    format!("unknown plugin {name:?}, no `[plugins]` are defined")
                } else {
                    format!(
                        "unknown plugin {name:?}{}",
                        did_you_mean(&name, plugins.iter().copied())
                    )
                };
                report.at(&path.key("plugin"), message);
                0
            }
        },
    };
    let config = raw.config.unwrap_or_default();
    let upstreams = outbound_upstreams(report, &path.key("config"), &config, names.upstreams);
    let config = serde_json::Value::Object(config).to_string();
    let on_error = match (kind, raw.on_error.as_deref()) {
        (_, None) => OnError::Fail,
        (UseKind::Filter, Some("fail")) => OnError::Fail,
        (UseKind::Filter, Some("skip")) => OnError::Skip,
        (UseKind::Filter, Some(other)) => {
            report.at(
                &path.key("on_error"),
                format!("invalid value {other:?}, expected \"fail\" or \"skip\""),
            );
            OnError::Fail
        }
        (_, Some(_)) => {
            report.at(
                &path.key("on_error"),
                "only filters have `on_error` (a failed handler always fails the request)",
            );
            OnError::Fail
        }
    };
    let phases = match (kind, raw.phases) {
        (_, None) => Phases::default(),
        (UseKind::Filter, Some(list)) => phases(report, &path.key("phases"), &list),
        (_, Some(_)) => {
            report.at(
                &path.key("phases"),
                "only filters have `phases` (a handler or authorizer has one call)",
            );
            Phases::default()
        }
    };
    PluginUse {
        plugin,
        config: Arc::from(config),
        body: raw.body.unwrap_or(false),
        max_body: size(report, &path.key("max_body"), raw.max_body),
        on_error,
        phases,
        upstreams,
    }
}

/// A filter's `phases = ["request", "response"]`: at least one of the two, each once.
fn phases(report: &mut Report<'_>, path: &KeyPath, list: &[String]) -> Phases {
    const NAMES: [&str; 2] = ["request", "response"];
    let mut phases = Phases {
        request: false,
        response: false,
    };
    for (index, name) in list.iter().enumerate() {
        let seen = match name.as_str() {
            "request" => &mut phases.request,
            "response" => &mut phases.response,
            other => {
                report.at(
                    &path.index(index),
                    format!(
                        "invalid value {other:?}, expected \"request\" or \"response\"{}",
                        did_you_mean(other, NAMES)
                    ),
                );
                continue;
            }
        };
        if *seen {
            report.at(&path.index(index), format!("{name:?} is listed twice"));
        }
        *seen = true;
    }
    if list.is_empty() {
        report.at(
            path,
            "expected at least one of \"request\" and \"response\" (a filter that runs in no phase is no filter)",
        );
        return Phases::default();
    }
    phases
}

/// `config.upstreams = ["NAME", ...]`: the upstreams a plugin's `outbound` may reach.
pub(super) fn outbound_upstreams(
    report: &mut Report<'_>,
    path: &KeyPath,
    config: &serde_json::Map<String, serde_json::Value>,
    known: &[&str],
) -> Arc<[(String, usize)]> {
    let Some(value) = config.get("upstreams") else {
        return Arc::from([]);
    };
    let path = path.key("upstreams");
    let Some(list) = value.as_array() else {
        report.at(&path, "expected a list of `[upstreams.NAME]` names");
        return Arc::from([]);
    };
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let Some(name) = item.as_str() else {
            report.at(
                &path.index(i),
                "expected the name of an `[upstreams.NAME]` table",
            );
            continue;
        };
        match known.iter().position(|known| *known == name) {
            Some(index) => out.push((name.to_owned(), index)),
            None => report.at(
                &path.index(i),
                format!(
                    "unknown upstream {name:?}{}",
                    did_you_mean(name, known.iter().copied())
                ),
            ),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_pins_parse_with_or_without_prefix() {
        let hex64 = "00".repeat(31) + "ff";
        assert_eq!(parse_sha256(&hex64).map(|d| d[31]), Some(0xff));
        assert!(parse_sha256(&format!("sha256:{hex64}")).is_some());
        assert!(parse_sha256("abc").is_none());
        assert!(parse_sha256(&"zz".repeat(32)).is_none());
    }

    #[test]
    fn component_headers() {
        assert!(check_component(b"\0asm\x0d\x00\x01\x00rest").is_ok());
        assert!(
            check_component(b"\0asm\x01\x00\x00\x00")
                .err()
                .is_some_and(|m| m.contains("core WebAssembly module"))
        );
        assert_eq!(check_component(b"hello"), Err("not a WebAssembly file"));
    }
}
