//! The one wasmtime [`Engine`] of the process, its epoch ticker, and the [`Linker`] every
//! plugin is linked against: WASI 0.2, `wasi:http` (types and outgoing-handler, whose
//! requests are refused, see [`super::host::HttpHooks`]) and the `weir:plugin` imports.
//!
//! Created on first use (the first config with a `[plugins]` table) and kept for the
//! life of the process: reloads compile new components with the same engine, so the
//! compiled-component cache stays valid. Engine settings: Cranelift, epoch interruption
//! (a background thread ticks every [`EPOCH_TICK`]), a bounded wasm stack, and the
//! pooling allocator when the address space allows it (else instances are allocated on
//! demand).
//!
//! With the pool, a slot whose instance is dropped is reset for the next one. By default
//! wasmtime gives its pages back to the kernel (`madvise`) and the next instance faults
//! them in again: for a small Rust guest that teardown and those faults cost more than
//! the guest's own work. Where Linux's `PAGEMAP_SCAN` ioctl exists (6.7+), the pool
//! instead finds the pages the guest wrote and copies them back to their initial
//! contents, up to [`KEEP_RESIDENT_BYTES`] per memory: no system call to give them back,
//! no page fault to take them again. Without the ioctl keep-resident would mean a
//! `memset` of that many bytes per instance, dearer than the `madvise`, so it is not
//! set.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::imports::Imports;
use super::host::Host;

/// How often the epoch advances: the resolution of plugin deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// The most wasm stack one call may use (deep recursion traps past it).
pub const MAX_WASM_STACK_BYTES: usize = 512 * 1024;
/// Component instances the pooling allocator has room for at once (all plugins).
pub const POOL_COMPONENT_INSTANCES: u32 = 1000;
/// Core instances in the pool (a component has several).
pub const POOL_CORE_INSTANCES: u32 = 4000;
/// Linear memories in the pool.
pub const POOL_MEMORIES: u32 = 2000;
/// Tables in the pool.
pub const POOL_TABLES: u32 = 4000;
/// The largest linear memory a pooled slot holds (the largest `limits.memory`).
pub const POOL_MAX_MEMORY_BYTES: usize = 4 * 1024 * 1024 * 1024;
/// The largest core instance (its `VMContext`) a pooled slot holds.
pub const POOL_MAX_CORE_INSTANCE_BYTES: usize = 4 * 1024 * 1024;
/// Written pages of a linear memory (and of a table) reset in place, and kept resident,
/// when an instance is dropped; past it, the rest is given back to the kernel. A Rust
/// guest writes a few pages per request, a JavaScript one ≈ 850 KiB. Idle pool slots
/// (up to wasmtime's default of 100 warm slots) hold at most this much each.
pub const KEEP_RESIDENT_BYTES: usize = 1024 * 1024;
/// Environment variable naming the compiled-component cache directory (empty = off).
pub const CACHE_DIR_ENV: &str = "WEIR_PLUGIN_CACHE";

/// The process's plugin engine.
pub struct Runtime {
    pub(super) engine: Engine,
    pub(super) linker: Linker<Host>,
    /// Where compiled components are cached, when there is such a place.
    pub(super) cache_dir: Option<PathBuf>,
    /// Whether instances come from the pooling allocator.
    pub pooling: bool,
    /// Whether pool slots are reset in place ([`KEEP_RESIDENT_BYTES`], `PAGEMAP_SCAN`).
    pub keep_resident: bool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache_dir", &self.cache_dir)
            .field("pooling", &self.pooling)
            .field("keep_resident", &self.keep_resident)
            .finish()
    }
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

impl Runtime {
    /// The process's runtime, created on first call.
    pub fn shared() -> Result<&'static Runtime, String> {
        RUNTIME
            .get_or_init(Runtime::new)
            .as_ref()
            .map_err(Clone::clone)
    }

    fn new() -> Result<Runtime, String> {
        let keep_resident = PoolingAllocationConfig::is_pagemap_scan_available();
        let (engine, pooling) = match Engine::new(&config(Some(keep_resident))) {
            Ok(engine) => (engine, true),
            Err(error) => {
                tracing::info!(
                    error = format!("{error:#}"),
                    "plugin instance pool unavailable, allocating on demand"
                );
                let engine = Engine::new(&config(None))
                    .map_err(|error| format!("cannot create the wasm engine: {error:#}"))?;
                (engine, false)
            }
        };
        let keep_resident = pooling && keep_resident;
        tracing::debug!(pooling, keep_resident, "wasm engine created");
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|error| format!("cannot link WASI: {error:#}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|error| format!("cannot link wasi:http: {error:#}"))?;
        Imports::add_to_linker::<Host, HasSelf<Host>>(&mut linker, |host| host)
            .map_err(|error| format!("cannot link the weir:plugin imports: {error:#}"))?;
        super::bindings::websocket::weir::plugin::connections::add_to_linker::<Host, HasSelf<Host>>(
            &mut linker,
            |host| host,
        )
        .map_err(|error| format!("cannot link weir:plugin/connections: {error:#}"))?;
        start_ticker(engine.clone())?;
        Ok(Runtime {
            engine,
            linker,
            cache_dir: super::cache::default_dir(),
            pooling,
            keep_resident,
        })
    }
}

/// The engine's settings: with the pooling allocator when `pooling` is `Some`, its value
/// saying whether slots are reset in place (see the module's documentation).
fn config(pooling: Option<bool>) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK_BYTES)
        .parallel_compilation(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    if let Some(keep_resident) = pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_COMPONENT_INSTANCES)
            .total_core_instances(POOL_CORE_INSTANCES)
            .total_memories(POOL_MEMORIES)
            .total_tables(POOL_TABLES)
            .total_stacks(POOL_COMPONENT_INSTANCES)
            .max_memory_size(POOL_MAX_MEMORY_BYTES)
            .max_core_instance_size(POOL_MAX_CORE_INSTANCE_BYTES);
        if keep_resident {
            pool.pagemap_scan(wasmtime::Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
                .table_keep_resident(KEEP_RESIDENT_BYTES);
        }
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Advances the engine's epoch every [`EPOCH_TICK`], for the life of the process.
fn start_ticker(engine: Engine) -> Result<(), String> {
    std::thread::Builder::new()
        .name("weir-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(drop)
        .map_err(|error| format!("cannot start the epoch thread: {error}"))
}
