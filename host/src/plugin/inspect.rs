//! `weir plugin inspect FILE.wasm`: what a component is, as Weir sees it — the roles it
//! can play, its exports and imports, its size and digest.

use std::path::Path;

use wasmtime::component::types::ComponentItem;

use super::bindings::exports;
use super::{Role, Runtime};
use crate::config::plugins::{check_component, hex, sha256};

/// What a component file holds.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub size: u64,
    pub sha256: String,
    /// Roles it can play on a route (`handler`, `filter`, `authorizer`); a standard
    /// `wasi:http/proxy` component's is `handler (wasi:http)`.
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
    let export_list = ty
        .exports(&runtime.engine)
        .map(|(name, item)| describe(name, item.ty))
        .collect();
    // The roles as loading decides them (`Plugins::build`).
    let names = super::export_names(&runtime.engine, &component);
    let roles = Role::of(&names)
        .into_iter()
        .map(|role| match role {
            Role::Handler if !names.iter().any(|name| name == exports::HANDLE) => {
                "handler (wasi:http)"
            }
            role => role.as_str(),
        })
        .collect();
    let imports = ty
        .imports(&runtime.engine)
        .map(|(name, item)| describe(name, item.ty))
        .collect();
    Ok(Inspection {
        size: bytes.len() as u64,
        sha256: hex(&digest),
        roles,
        exports: export_list,
        imports,
    })
}
