//! Compiled components on disk, so that a restart or a reload does not recompile.
//!
//! An entry is named `<sha256 of the .wasm>-<engine fingerprint>.cwasm`: the digest says
//! which component, the fingerprint ([`Engine::precompile_compatibility_hash`]) which
//! engine build and settings compiled it. A miss compiles the component
//! ([`Component::new`]) and writes its serialized form atomically (a temporary file in
//! the same directory, then a rename). A hit is loaded with
//! [`Component::deserialize_file`]; if that fails (a stale or damaged entry) the entry is
//! removed and the component compiled again.
//!
//! The directory is `$WEIR_PLUGIN_CACHE` (empty = no cache), else
//! `$XDG_CACHE_HOME/weir/plugins`, else `~/.cache/weir/plugins`. It is only used when it
//! belongs to the user running weir and no one else may write to it: loading a compiled
//! artifact runs its machine code, so the cache must be exactly as trusted as the weir
//! binary itself.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::engine::CACHE_DIR_ENV;
use crate::config::plugins::hex;

/// Permissions of a cache directory weir creates.
const CACHE_DIR_MODE: u32 = 0o700;
/// Permission bits that make a directory writable by others than its owner.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// The cache directory from the environment, if any.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(CACHE_DIR_ENV) {
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("weir").join("plugins"))
}

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Loaded from the cache.
    Hit,
    /// Compiled, then written to the cache.
    Miss,
    /// Compiled; there is no (usable) cache.
    Off,
}

impl CacheUse {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
            CacheUse::Off => "off",
        }
    }
}

/// The compiled `bytes` (whose digest is `sha256`): from the cache when it has them,
/// else compiled now and cached.
pub fn load(
    engine: &Engine,
    dir: Option<&Path>,
    bytes: &[u8],
    sha256: &[u8; 32],
) -> wasmtime::Result<(Component, CacheUse)> {
    let Some(dir) = dir.filter(|dir| trusted(dir)) else {
        return Ok((Component::new(engine, bytes)?, CacheUse::Off));
    };
    let entry = dir.join(format!(
        "{}-{:016x}.cwasm",
        hex(sha256),
        fingerprint(engine)
    ));
    if entry.is_file() {
        match deserialize(engine, &entry) {
            Ok(component) => return Ok((component, CacheUse::Hit)),
            Err(error) => {
                tracing::warn!(entry = %entry.display(), error = format!("{error:#}"), "dropping a bad compiled-component cache entry");
                let _ = std::fs::remove_file(&entry);
            }
        }
    }
    let component = Component::new(engine, bytes)?;
    match component.serialize() {
        Ok(serialized) => {
            if let Err(error) = write_atomically(&entry, &serialized) {
                tracing::warn!(entry = %entry.display(), %error, "cannot write the compiled-component cache");
            }
        }
        Err(error) => {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot serialize a compiled component"
            );
        }
    }
    Ok((component, CacheUse::Miss))
}

/// Loads a compiled component from the cache.
///
/// SAFETY: `Component::deserialize_file` trusts the file to be the output of
/// `Component::serialize` by a compatible engine (it checks the engine's compatibility
/// itself, but not the machine code). That holds here because (1) `path` is inside a
/// cache directory that [`trusted`] checked belongs to this user and is writable by no
/// one else, (2) weir writes entries only through [`write_atomically`] with bytes from
/// `Component::serialize`, so no partially written file is ever visible under an entry's
/// name, and (3) the name binds the entry to the digest of the source component and to
/// the engine's fingerprint, so a hit is the compilation of this very component by this
/// very engine configuration.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: see the function's documentation.
    unsafe { Component::deserialize_file(engine, path) }
}

/// Whether `dir` (created when missing) is ours alone: a directory owned by this
/// process's user, writable by no one else.
fn trusted(dir: &Path) -> bool {
    if !dir.exists()
        && let Err(error) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(CACHE_DIR_MODE)
            .create(dir)
    {
        tracing::warn!(dir = %dir.display(), %error, "cannot create the compiled-component cache; compiling without it");
        return false;
    }
    let (Ok(meta), Some(uid)) = (std::fs::symlink_metadata(dir), current_uid()) else {
        return false;
    };
    let ok =
        meta.is_dir() && meta.uid() == uid && meta.permissions().mode() & WRITABLE_BY_OTHERS == 0;
    if !ok {
        tracing::warn!(dir = %dir.display(), "the compiled-component cache is not a directory of this user alone; compiling without it");
    }
    ok
}

/// The effective user id of this process (the owner of `/proc/self`).
fn current_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|meta| meta.uid())
}

/// The engine's fingerprint: equal for engines whose compiled code is interchangeable.
fn fingerprint(engine: &Engine) -> u64 {
    // `DefaultHasher::new` has fixed keys: stable across runs of one weir build, which is
    // all the cache needs (another build at worst misses and recompiles).
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

/// Writes `bytes` to `path` so that `path` is either absent or complete.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = dir.join(format!(
        ".{}.{}.{:x}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
        std::process::id(),
        fastrand::u64(..)
    ));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
