//! The WebAssembly plugin runtime: the only module that knows wasmtime.
//!
//! Life of a plugin:
//!
//! 1. **load** ([`Plugins::build`], from `Gateway::build` at start and on every reload):
//!    the `.wasm` file named by `[plugins.NAME]` is read, its SHA-256 checked against the
//!    digest validation saw, compiled (or loaded from the on-disk cache, [`cache`]) and
//!    linked once into an `InstancePre`. A component used in a role whose function it
//!    does not export is refused here, naming the plugin and the missing export.
//! 2. **call** ([`Plugin::handle`], from the pipeline): a concurrency permit (none free →
//!    [`PluginError::Busy`], `503`, never a wait), a fresh [`Store`] with the plugin's
//!    memory cap and deadline, instantiate, call, drop. Nothing survives the request.
//!
//! Every failure of a call — trap, deadline, memory overrun, malformed output — is a
//! [`PluginError`], never a panic; the caller logs it with the plugin and request id and
//! counts it (see `GatewayError::Plugin`). The store of a failed call is discarded.
//!
//! Deadlines: the engine's epoch advances every [`engine::EPOCH_TICK`]; each store yields
//! to the async runtime at every tick (so a busy guest never holds a worker thread for
//! long) and traps once its deadline has passed. A wall-clock timeout around the whole
//! call bounds time spent in host functions too.

pub mod bindings;
pub mod cache;
pub mod convert;
pub mod engine;
pub mod host;
pub mod inspect;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{Component, InstancePre, types::ComponentItem};
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::config::{Config, Integration};
use bindings::handler::HandlerPre;
pub use bindings::{Request, Response};
pub use engine::Runtime;
pub use host::CallInfo;
use host::Host;

/// Extra wall-clock time allowed past a plugin's `timeout` before the call is abandoned
/// (the epoch deadline normally stops it first).
pub const WALL_CLOCK_GRACE: Duration = Duration::from_millis(100);

/// A role a plugin is used in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Handler,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Handler => "handler",
        }
    }

    /// The export the role calls.
    fn export(self) -> &'static str {
        match self {
            Role::Handler => bindings::exports::HANDLE,
        }
    }
}

/// A plugin could not be loaded (at start or reload).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the wasm runtime is unavailable: {0}")]
    Runtime(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} changed since validation (sha256 is now {actual})")]
    Changed { path: String, actual: String },
    #[error("{path} is not a valid component: {reason}")]
    Compile { path: String, reason: String },
    #[error("cannot link {path}: {reason}")]
    Link { path: String, reason: String },
    #[error("used as a {role} but does not export `{export}` (its exports: {exports})")]
    MissingExport {
        role: &'static str,
        export: &'static str,
        exports: String,
    },
}

/// One call of a plugin failed. The client sees a fixed message; this goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// All of the plugin's `concurrency` permits (or the instance pool) are in use.
    #[error("plugin is at its concurrency limit")]
    Busy,
    /// The call ran past the plugin's `timeout`.
    #[error("plugin ran past its deadline of {0:?}")]
    Timeout(Duration),
    /// The guest wanted more memory than `limits.memory`.
    #[error("plugin exceeded its memory limit of {0} bytes")]
    Memory(u64),
    /// The guest trapped (panic, stack overflow, unreachable, ...).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The guest returned something that is not a valid answer.
    #[error("plugin returned invalid output: {0}")]
    BadOutput(String),
    /// Instantiation failed for another reason.
    #[error("plugin could not be instantiated: {0}")]
    Instantiate(String),
}

impl PluginError {
    /// A short fixed name (metrics reason, access log).
    pub fn reason(&self) -> &'static str {
        match self {
            PluginError::Busy => "plugin_busy",
            PluginError::Timeout(_) => "plugin_timeout",
            PluginError::Memory(_) => "plugin_memory",
            PluginError::Trap(_) => "plugin_trap",
            PluginError::BadOutput(_) => "plugin_bad_output",
            PluginError::Instantiate(_) => "plugin_instantiate",
        }
    }
}

/// The plugins of one config, compiled and linked, in `config.plugins` order.
#[derive(Debug, Default)]
pub struct Plugins {
    plugins: Vec<Arc<Plugin>>,
}

impl Plugins {
    /// Compiles and links every plugin of `config` and checks each use's role. No plugins,
    /// no engine: a config without `[plugins]` never starts wasmtime.
    pub fn build(config: &Config) -> Result<Plugins, (String, LoadError)> {
        if config.plugins.is_empty() {
            return Ok(Plugins::default());
        }
        let runtime = Runtime::shared().map_err(|reason| {
            let name = config.plugins[0].name.clone();
            (name, LoadError::Runtime(reason))
        })?;
        let mut plugins = Vec::with_capacity(config.plugins.len());
        for spec in &config.plugins {
            let roles: Vec<Role> = config
                .routes
                .iter()
                .filter_map(|route| match &route.integration {
                    Integration::Handler(use_) if use_.plugin == plugins.len() => {
                        Some(Role::Handler)
                    }
                    _ => None,
                })
                .collect();
            let plugin = Plugin::load(runtime, spec, &roles).map_err(|e| (spec.name.clone(), e))?;
            plugins.push(Arc::new(plugin));
        }
        Ok(Plugins { plugins })
    }

    /// The plugin at `index` of `config.plugins`.
    pub fn get(&self, index: usize) -> Option<&Arc<Plugin>> {
        self.plugins.get(index)
    }
}

/// One compiled, linked plugin.
pub struct Plugin {
    name: Arc<str>,
    limits: crate::config::PluginLimits,
    runtime: &'static Runtime,
    handler: Option<HandlerPre<Host>>,
    permits: Arc<Semaphore>,
    /// Calls started, and calls that failed.
    calls: AtomicU64,
    failures: AtomicU64,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Plugin {
    fn load(
        runtime: &'static Runtime,
        spec: &crate::config::Plugin,
        roles: &[Role],
    ) -> Result<Plugin, LoadError> {
        let path = spec.path.display().to_string();
        let bytes = std::fs::read(&spec.path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        let digest = crate::config::plugins::sha256(&bytes);
        if digest != spec.sha256 {
            return Err(LoadError::Changed {
                path,
                actual: crate::config::plugins::hex(&digest),
            });
        }
        let started = Instant::now();
        let (component, cached) = cache::load(
            &runtime.engine,
            runtime.cache_dir.as_deref(),
            &bytes,
            &digest,
        )
        .map_err(|error| LoadError::Compile {
            path: path.clone(),
            reason: format!("{error:#}"),
        })?;
        let exports = export_names(&runtime.engine, &component);
        for role in roles {
            if !exports.iter().any(|name| name == role.export()) {
                return Err(LoadError::MissingExport {
                    role: role.as_str(),
                    export: role.export(),
                    exports: if exports.is_empty() {
                        "none".to_owned()
                    } else {
                        exports.join(", ")
                    },
                });
            }
        }
        let pre: InstancePre<Host> =
            runtime
                .linker
                .instantiate_pre(&component)
                .map_err(|error| LoadError::Link {
                    path: path.clone(),
                    reason: format!("{error:#}"),
                })?;
        let handler = if exports.iter().any(|name| name == Role::Handler.export()) {
            Some(
                HandlerPre::new(pre.clone()).map_err(|error| LoadError::Link {
                    path: path.clone(),
                    reason: format!("{error:#}"),
                })?,
            )
        } else {
            None
        };
        tracing::info!(
            plugin = spec.name,
            path,
            elapsed_ms = started.elapsed().as_millis() as u64,
            pooling = runtime.pooling,
            cache = cached.as_str(),
            "plugin loaded"
        );
        Ok(Plugin {
            name: Arc::from(spec.name.as_str()),
            limits: spec.limits,
            runtime,
            handler,
            permits: Arc::new(Semaphore::new(spec.limits.concurrency)),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Calls started since load.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Calls that failed since load.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The `handler` role: `handle(request) -> response`, in a fresh instance.
    pub async fn handle(&self, call: CallInfo, request: Request) -> Result<Response, PluginError> {
        let Some(pre) = &self.handler else {
            // `Plugins::build` refused this config; kept as an error, not a panic.
            return Err(PluginError::Instantiate("no `handle` export".to_owned()));
        };
        self.run(call, async |store| {
            let instance = pre.instantiate_async(&mut *store).await?;
            instance.call_handle(&mut *store, &request).await
        })
        .await
    }

    /// Runs `body` in a fresh store under the plugin's limits, and classifies failures.
    async fn run<T>(
        &self,
        call: CallInfo,
        body: impl AsyncFnOnce(&mut Store<Host>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.run_inner(call, body).await;
        if result.is_err() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn run_inner<T>(
        &self,
        call: CallInfo,
        body: impl AsyncFnOnce(&mut Store<Host>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        let _permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| PluginError::Busy)?;
        let timeout = self.limits.timeout;
        let memory = usize::try_from(self.limits.memory).unwrap_or(usize::MAX);
        let mut store = Store::new(&self.runtime.engine, Host::new(call, memory));
        store.limiter(|host| &mut host.limiter);
        let deadline = Instant::now() + timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                // tokio's `yield_now` lets the I/O driver run before this task again;
                // a plain self-wake would leave two busy guests hogging both workers.
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        let outcome = tokio::time::timeout(timeout + WALL_CLOCK_GRACE, body(&mut store)).await;
        match outcome {
            Err(_) => Err(PluginError::Timeout(timeout)),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.classify(&error, store.data(), timeout)),
        }
    }

    fn classify(&self, error: &wasmtime::Error, host: &Host, timeout: Duration) -> PluginError {
        if host.memory_exceeded() {
            return PluginError::Memory(self.limits.memory);
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PluginError::Timeout(timeout),
            Some(trap) => PluginError::Trap(trap.to_string()),
            None => {
                let text = format!("{error:#}");
                if text.contains("maximum concurrent") {
                    PluginError::Busy
                } else {
                    PluginError::Trap(text)
                }
            }
        }
    }
}

/// The names of a component's top-level function exports.
fn export_names(engine: &wasmtime::Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .exports(engine)
        .map(|(name, item)| match item.ty {
            ComponentItem::ComponentFunc(_) => name.to_owned(),
            _ => format!("{name} (not a function)"),
        })
        .collect()
}
