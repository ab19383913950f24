//! `weir plugin inspect FILE.wasm`: what a component is, as Weir sees it — the roles it
//! can play, its exports and imports, its size and digest.

use std::path::Path;

use wasmtime::component::types::ComponentItem;

use super::Runtime;
use super::bindings::exports;
use crate::config::plugins::{check_component, hex, sha256};

/// The prefix of the export a standard `wasi:http/proxy` component has.
const WASI_HTTP_HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// What a component file holds.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub size: u64,
    pub sha256: String,
    /// Roles it can play on a route (`handler`, `filter`, `authorizer`).
    pub roles: Vec<&'static str>,
    /// Export names; interfaces are marked `(interface)`.
    pub exports: Vec<String>,
    /// Import names.
    pub imports: Vec<String>,
}

impl std::fmt::Display for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |items: &[String]| {
            if items.is_empty() {
                "none".to_owned()
            } else {
                items.join("\n    ")
            }
        };
        let roles = if self.roles.is_empty() {
            "none".to_owned()
        } else {
            self.roles.join(", ")
        };
        writeln!(f, "size: {} bytes", self.size)?;
        writeln!(f, "sha256: {}", self.sha256)?;
        writeln!(f, "roles: {roles}")?;
        writeln!(f, "exports:\n    {}", list(&self.exports))?;
        write!(f, "imports:\n    {}", list(&self.imports))
    }
}

/// Reads, compiles (through the cache) and describes the component at `path`.
pub fn inspect(path: &Path) -> Result<Inspection, String> {
    let bytes =
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    check_component(&bytes).map_err(|reason| format!("{}: {reason}", path.display()))?;
    let runtime = Runtime::shared()?;
    let digest = sha256(&bytes);
    let (component, _) = super::cache::load(
        &runtime.engine,
        runtime.cache_dir.as_deref(),
        &bytes,
        &digest,
    )
    .map_err(|error| format!("{} is not a valid component: {error:#}", path.display()))?;
    let ty = component.component_type();
    let describe = |name: &str, item: ComponentItem| match item {
        ComponentItem::ComponentFunc(_) => name.to_owned(),
        ComponentItem::ComponentInstance(_) => format!("{name} (interface)"),
        _ => format!("{name} (other)"),
    };
    let export_list: Vec<(String, bool)> = ty
        .exports(&runtime.engine)
        .map(|(name, item)| {
            let is_func = matches!(item.ty, ComponentItem::ComponentFunc(_));
            (describe(name, item.ty), is_func)
        })
        .collect();
    let has = |name: &str| export_list.iter().any(|(n, f)| *f && n == name);
    let mut roles = Vec::new();
    if has(exports::HANDLE) {
        roles.push("handler");
    }
    if has("on-request") && has("on-response") {
        roles.push("filter");
    }
    if has("authorize") {
        roles.push("authorizer");
    }
    if export_list
        .iter()
        .any(|(n, _)| n.starts_with(WASI_HTTP_HANDLER))
    {
        roles.push("wasi:http handler (not supported yet)");
    }
    let imports = ty
        .imports(&runtime.engine)
        .map(|(name, item)| describe(name, item.ty))
        .collect();
    Ok(Inspection {
        size: bytes.len() as u64,
        sha256: hex(&digest),
        roles,
        exports: export_list.into_iter().map(|(n, _)| n).collect(),
        imports,
    })
}
