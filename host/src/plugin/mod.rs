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
//! 3. **reuse**, only for a plugin whose `requests_per_instance` is above 1 (an explicit
//!    opt-in, [`idle`]): after a successful request, the store and its instance are kept
//!    and the next request of the same use runs in them, until the instance has served
//!    that many requests. What the guest keeps in memory carries over from one request
//!    to the next; a failed call still discards the instance.
//!
//! Every failure of a call — trap, deadline, memory overrun, malformed output — is a
//! [`PluginError`], never a panic; the caller logs it with the plugin and request id and
//! counts it (see `GatewayError::Plugin`). The store of a failed call is discarded.
//!
//! Deadlines: the engine's epoch advances every [`engine::EPOCH_TICK`]; each store yields
//! to the async runtime at every tick (so a busy guest never holds a worker thread for
//! long) and traps once its deadline has passed. A wall-clock bound around the whole
//! call ([`within`]) bounds time spent in host functions too.

pub mod bindings;
pub mod cache;
pub mod convert;
pub mod engine;
pub mod host;
pub mod idle;
pub mod inspect;
pub mod stats;
pub mod wasi_http;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{Component, InstancePre, types::ComponentItem};
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::config::{AuthorizerKind, Config, Integration};
use bindings::authorizer::AuthorizerPre;
pub use bindings::authorizer::{Allow, Decision};
pub use bindings::filter::RequestOutcome;
use bindings::filter::{Filter, FilterPre};
use bindings::handler::HandlerPre;
pub use bindings::websocket::ConnectOutcome;
use bindings::websocket::WebsocketPre;
pub use bindings::websocket::weir::plugin::connections::{ConnectionInfo, Message};
pub use bindings::{Request, Response};
pub use engine::Runtime;
use host::Host;
pub use host::{CallInfo, Outbound};
use idle::{Bound, Idle};
use stats::{Export, PluginStats};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// Extra wall-clock time allowed past a plugin's `timeout` before the call is abandoned
/// (the epoch deadline normally stops it first).
pub const WALL_CLOCK_GRACE: Duration = Duration::from_millis(100);

/// A role a plugin is used in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Handler,
    Filter,
    Authorizer,
    WebSocket,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Handler => "handler",
            Role::Filter => "filter",
            Role::Authorizer => "authorizer",
            Role::WebSocket => "websocket",
        }
    }

    /// The exports the role calls.
    fn exports(self) -> &'static [&'static str] {
        use bindings::exports::*;
        match self {
            Role::Handler => &[HANDLE],
            Role::Filter => &[ON_REQUEST, ON_RESPONSE],
            Role::Authorizer => &[AUTHORIZE],
            Role::WebSocket => &[ON_CONNECT, ON_MESSAGE, ON_DISCONNECT],
        }
    }

    /// The roles a component with these exports can play. A standard `wasi:http/proxy`
    /// component (exporting `wasi:http/incoming-handler@0.2.x`) can be a handler too.
    pub fn of(exports: &[String]) -> Vec<Role> {
        let wasi_http = wasi_http::exported(exports);
        [
            Role::Handler,
            Role::Filter,
            Role::Authorizer,
            Role::WebSocket,
        ]
        .into_iter()
        .filter(|role| role.exported(exports) || (*role == Role::Handler && wasi_http))
        .collect()
    }

    /// Whether the role's `weir:plugin` functions are all among `exports`.
    fn exported(self, exports: &[String]) -> bool {
        self.exports()
            .iter()
            .all(|name| exports.iter().any(|e| e == name))
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
    #[error("used as a {role} but does not export {export} (its exports: {exports})")]
    MissingExport {
        role: &'static str,
        /// What is missing, quoted (for a handler, both ways to be one).
        export: String,
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
    ///
    /// On a reload, `previous` is the running gateway's plugins: a plugin whose name,
    /// digest and limits did not change is kept as it is (no compile, no link, and its
    /// counters and concurrency permits go on); once the new gateway is live, its idle
    /// instances are dropped ([`Plugins::drop_idle`]).
    pub fn build(
        config: &Config,
        previous: Option<&Plugins>,
    ) -> Result<Plugins, (String, LoadError)> {
        if config.plugins.is_empty() {
            return Ok(Plugins::default());
        }
        let runtime = Runtime::shared().map_err(|reason| {
            let name = config.plugins[0].name.clone();
            (name, LoadError::Runtime(reason))
        })?;
        let mut plugins = Vec::with_capacity(config.plugins.len());
        for (index, spec) in config.plugins.iter().enumerate() {
            let roles = roles_of(config, index);
            let kept = previous.and_then(|previous| {
                previous.plugins.iter().find(|p| {
                    *p.name == *spec.name
                        && p.sha256 == spec.sha256
                        && p.limits == spec.limits
                        && p.requests_per_instance == spec.requests_per_instance
                })
            });
            let plugin = match kept {
                Some(plugin) => {
                    check_roles(&plugin.exports, &roles).map_err(|e| (spec.name.clone(), e))?;
                    tracing::info!(plugin = spec.name, "plugin unchanged, kept as loaded");
                    plugin.clone()
                }
                None => Arc::new(
                    Plugin::load(runtime, spec, &roles).map_err(|e| (spec.name.clone(), e))?,
                ),
            };
            plugins.push(plugin);
        }
        Ok(Plugins { plugins })
    }

    /// Drops every plugin's idle instances (`requests_per_instance`): after a reload,
    /// those of plugins kept from the old gateway are bound to the old config (its state
    /// backend and upstream pools, and uses whose `config` may be gone).
    pub fn drop_idle(&self) {
        for plugin in &self.plugins {
            plugin.idle.clear();
        }
    }

    /// The plugin at `index` of `config.plugins`.
    pub fn get(&self, index: usize) -> Option<&Arc<Plugin>> {
        self.plugins.get(index)
    }

    /// Every plugin, in `config.plugins` order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.iter()
    }
}

/// Refuses a component used in a role whose functions it does not export.
fn check_roles(exports: &[String], roles: &[Role]) -> Result<(), LoadError> {
    let playable = Role::of(exports);
    for role in roles.iter().filter(|role| !playable.contains(role)) {
        if let Some(missing) = role
            .exports()
            .iter()
            .find(|name| !exports.iter().any(|e| e == *name))
        {
            return Err(LoadError::MissingExport {
                role: role.as_str(),
                export: match role {
                    Role::Handler => format!(
                        "`{missing}` (weir:plugin/handler) or `{}.x` (wasi:http/proxy)",
                        wasi_http::HANDLER_INTERFACE
                    ),
                    _ => format!("`{missing}`"),
                },
                exports: if exports.is_empty() {
                    "none".to_owned()
                } else {
                    exports.join(", ")
                },
            });
        }
    }
    Ok(())
}

/// The roles `config` uses plugin number `index` in.
fn roles_of(config: &Config, index: usize) -> Vec<Role> {
    let mut roles = Vec::new();
    let mut add = |role| {
        if !roles.contains(&role) {
            roles.push(role);
        }
    };
    for route in &config.routes {
        if let Integration::Handler(use_) = &route.integration
            && use_.plugin == index
        {
            add(Role::Handler);
        }
        if route.filters.iter().any(|use_| use_.plugin == index) {
            add(Role::Filter);
        }
        if let Integration::WebSocket(api) = &route.integration
            && crate::websocket::api::plugins_of(api).any(|plugin| plugin == index)
        {
            add(Role::WebSocket);
        }
    }
    for authorizer in &config.access.authorizers {
        if let AuthorizerKind::Plugin(plugin) = &authorizer.kind
            && plugin.plugin.plugin == index
        {
            add(Role::Authorizer);
        }
    }
    roles
}

/// One compiled, linked plugin.
pub struct Plugin {
    name: Arc<str>,
    /// SHA-256 of the component file.
    sha256: [u8; 32],
    /// Its top-level function exports.
    exports: Vec<String>,
    limits: crate::config::PluginLimits,
    /// `requests_per_instance`: 1 = a fresh instance per request.
    requests_per_instance: u32,
    /// Instances kept between requests (empty unless `requests_per_instance` > 1).
    idle: Idle,
    runtime: &'static Runtime,
    handler: Option<HandlerPre<Host>>,
    /// The handler role of a `wasi:http/proxy` component (when it has no `handle`).
    proxy: Option<ProxyPre<Host>>,
    filter: Option<FilterPre<Host>>,
    authorizer: Option<AuthorizerPre<Host>>,
    websocket: Option<WebsocketPre<Host>>,
    permits: Arc<Semaphore>,
    /// Bytes of the component file, and where its compiled form came from.
    size: u64,
    compiled: cache::CacheUse,
    /// Calls by export, failures by kind, call times (shared with the metrics).
    stats: Arc<PluginStats>,
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
        check_roles(&exports, roles)?;
        let pre: InstancePre<Host> =
            runtime
                .linker
                .instantiate_pre(&component)
                .map_err(|error| LoadError::Link {
                    path: path.clone(),
                    reason: format!("{error:#}"),
                })?;
        // Each role the component can play gets its typed `*Pre`, whether or not this
        // config uses it there (a type mismatch in an export is a link error).
        let playable = Role::of(&exports);
        let link = |error: wasmtime::Error| LoadError::Link {
            path: path.clone(),
            reason: format!("{error:#}"),
        };
        let handler = Role::Handler
            .exported(&exports)
            .then(|| HandlerPre::new(pre.clone()))
            .transpose()
            .map_err(link)?;
        let proxy = (handler.is_none() && wasi_http::exported(&exports))
            .then(|| ProxyPre::new(pre.clone()))
            .transpose()
            .map_err(link)?;
        let filter = playable
            .contains(&Role::Filter)
            .then(|| FilterPre::new(pre.clone()))
            .transpose()
            .map_err(link)?;
        let authorizer = playable
            .contains(&Role::Authorizer)
            .then(|| AuthorizerPre::new(pre.clone()))
            .transpose()
            .map_err(link)?;
        let websocket = playable
            .contains(&Role::WebSocket)
            .then(|| WebsocketPre::new(pre.clone()))
            .transpose()
            .map_err(link)?;
        tracing::info!(
            plugin = spec.name,
            path,
            elapsed_ms = started.elapsed().as_millis() as u64,
            pooling = runtime.pooling,
            requests_per_instance = spec.requests_per_instance,
            cache = cached.as_str(),
            "plugin loaded"
        );
        Ok(Plugin {
            name: Arc::from(spec.name.as_str()),
            sha256: digest,
            limits: spec.limits,
            requests_per_instance: spec.requests_per_instance,
            idle: Idle::new(spec.limits.concurrency),
            runtime,
            handler,
            proxy,
            filter,
            authorizer,
            websocket,
            permits: Arc::new(Semaphore::new(spec.limits.concurrency)),
            size: bytes.len() as u64,
            compiled: cached,
            stats: Arc::new(PluginStats::new(&playable)),
            exports,
        })
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Calls started since load.
    pub fn calls(&self) -> u64 {
        self.stats.calls()
    }

    /// Calls that failed since load.
    pub fn failures(&self) -> u64 {
        self.stats.failures()
    }

    /// Calls by export, failures by kind and call times since load.
    pub fn stats(&self) -> &Arc<PluginStats> {
        &self.stats
    }

    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }

    /// Bytes of the component file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Its top-level function exports.
    pub fn exports(&self) -> &[String] {
        &self.exports
    }

    pub fn limits(&self) -> &crate::config::PluginLimits {
        &self.limits
    }

    /// Whether its compiled form came from the on-disk cache (`hit`), was compiled and
    /// cached (`miss`) or compiled without a cache (`off`), when it was loaded.
    pub fn compiled(&self) -> &'static str {
        self.compiled.as_str()
    }

    /// Instances alive now (each holds one of the `concurrency` permits).
    pub fn in_flight(&self) -> usize {
        self.limits
            .concurrency
            .saturating_sub(self.permits.available_permits())
    }

    /// `requests_per_instance` (1: a fresh instance per request).
    pub fn requests_per_instance(&self) -> u32 {
        self.requests_per_instance
    }

    /// Instances kept for reuse, idle now.
    pub fn idle(&self) -> usize {
        self.idle.len()
    }

    /// The `handler` role: `handle(request) -> response`, in a fresh instance (or a kept
    /// one, see [`idle`]).
    pub async fn handle(
        self: &Arc<Self>,
        call: CallInfo,
        request: Request,
    ) -> Result<Response, PluginError> {
        let Some(pre) = &self.handler else {
            // `Plugins::build` refused this config; kept as an error, not a panic.
            return Err(PluginError::Instantiate("no `handle` export".to_owned()));
        };
        let (call, instance, response) = self
            .call_reusable(
                call,
                Export::Handle,
                Bound::handler,
                async |store| pre.instantiate_async(store).await,
                async |store, instance| instance.call_handle(store, &request).await,
            )
            .await?;
        call.done(Bound::Handler(instance));
        Ok(response)
    }

    /// Whether the `handler` role is played by a standard `wasi:http/proxy` component
    /// ([`Plugin::handle_wasi_http`]) rather than by `weir:plugin`'s `handle`.
    pub fn speaks_wasi_http(&self) -> bool {
        self.proxy.is_some()
    }

    /// The `handler` role of a `wasi:http/proxy` component: the request streamed in,
    /// the response streamed out, in a fresh instance ([`wasi_http`]). `request`'s body is
    /// already capped at `max_body`; `path` is the canonical path.
    pub async fn handle_wasi_http(
        self: &Arc<Self>,
        call: CallInfo,
        request: http::Request<crate::body::Body>,
        path: &str,
        tls: bool,
    ) -> Result<http::Response<crate::body::Body>, PluginError> {
        let Some(pre) = &self.proxy else {
            return Err(PluginError::Instantiate(format!(
                "no `{}` export",
                wasi_http::HANDLER_INTERFACE
            )));
        };
        let request_id = call.request_id.clone();
        // Always a fresh instance: `requests_per_instance` does not apply to `wasi:http`.
        let call = self.start_fresh(call, Export::Handle)?;
        wasi_http::handle(call, pre.clone(), request_id, request, path, tls).await
    }

    /// The `authorizer` role: `authorize(request) -> decision`, in a fresh instance (or a
    /// kept one, see [`idle`]).
    pub async fn authorize(
        self: &Arc<Self>,
        call: CallInfo,
        request: Request,
    ) -> Result<Decision, PluginError> {
        let Some(pre) = &self.authorizer else {
            return Err(PluginError::Instantiate("no `authorize` export".to_owned()));
        };
        let (call, instance, decision) = self
            .call_reusable(
                call,
                Export::Authorize,
                Bound::authorizer,
                async |store| pre.instantiate_async(store).await,
                async |store, instance| instance.call_authorize(store, &request).await,
            )
            .await?;
        call.done(Bound::Authorizer(instance));
        Ok(decision)
    }

    /// The `websocket` role on a handshake (`$connect`): `on-connect(info)`, in a fresh
    /// instance whose `connections` reach `registry`.
    pub async fn on_connect(
        self: &Arc<Self>,
        call: CallInfo,
        registry: Arc<crate::websocket::api::Connections>,
        info: ConnectionInfo,
    ) -> Result<ConnectOutcome, PluginError> {
        let Some(pre) = &self.websocket else {
            return Err(PluginError::Instantiate(
                "no `on-connect` export".to_owned(),
            ));
        };
        let mut call = self.start_fresh(call, Export::OnConnect)?;
        call.store.data_mut().connections = Some(registry);
        call.run(Export::OnConnect, async |store| {
            let instance = pre.instantiate_async(&mut *store).await?;
            instance.call_on_connect(&mut *store, &info).await
        })
        .await
    }

    /// The `websocket` role on a message: `on-message(info, route-key, message)` in a
    /// fresh instance; what it returns is the reply to the client.
    pub async fn on_message(
        self: &Arc<Self>,
        call: CallInfo,
        registry: Arc<crate::websocket::api::Connections>,
        info: ConnectionInfo,
        route_key: &str,
        message: Message,
    ) -> Result<Option<Message>, PluginError> {
        let Some(pre) = &self.websocket else {
            return Err(PluginError::Instantiate(
                "no `on-message` export".to_owned(),
            ));
        };
        let mut call = self.start_fresh(call, Export::OnMessage)?;
        call.store.data_mut().connections = Some(registry);
        call.run(Export::OnMessage, async |store| {
            let instance = pre.instantiate_async(&mut *store).await?;
            instance
                .call_on_message(&mut *store, &info, route_key, &message)
                .await
        })
        .await
    }

    /// The `websocket` role once a connection closed (`$disconnect`): `on-disconnect(info)`
    /// in a fresh instance.
    pub async fn on_disconnect(
        self: &Arc<Self>,
        call: CallInfo,
        registry: Arc<crate::websocket::api::Connections>,
        info: ConnectionInfo,
    ) -> Result<(), PluginError> {
        let Some(pre) = &self.websocket else {
            return Err(PluginError::Instantiate(
                "no `on-disconnect` export".to_owned(),
            ));
        };
        let mut call = self.start_fresh(call, Export::OnDisconnect)?;
        call.store.data_mut().connections = Some(registry);
        call.run(Export::OnDisconnect, async |store| {
            let instance = pre.instantiate_async(&mut *store).await?;
            instance.call_on_disconnect(&mut *store, &info).await
        })
        .await
    }

    /// The `filter` role on the way in: a fresh instance (or a kept one, see [`idle`])
    /// runs `on-request`. When the filter answered `continue` and the use has a response
    /// phase (`response_phase`, from its `phases`), the instance comes back to run
    /// `on-response` of the same request ([`FilterInstance::on_response`]); otherwise it
    /// is done with the request.
    pub async fn on_request(
        self: &Arc<Self>,
        call: CallInfo,
        request: Request,
        response_phase: bool,
    ) -> Result<(RequestOutcome, Option<FilterInstance>), PluginError> {
        let Some(pre) = &self.filter else {
            return Err(PluginError::Instantiate(
                "no `on-request` export".to_owned(),
            ));
        };
        let (call, instance, outcome) = self
            .call_reusable(
                call,
                Export::OnRequest,
                Bound::filter,
                async |store| pre.instantiate_async(store).await,
                async |store, instance| instance.call_on_request(store, &request).await,
            )
            .await?;
        let instance = match outcome {
            RequestOutcome::Continue(_) if response_phase => {
                Some(FilterInstance { call, instance })
            }
            _ => {
                // The request is over for this instance: no `on-response` call.
                call.done(Bound::Filter(instance));
                None
            }
        };
        Ok((outcome, instance))
    }

    /// The `filter` role on the way out, alone: for a use with `phases = ["response"]`, a
    /// fresh instance (or a kept one) runs `on-response` with no `on-request` before it.
    pub async fn on_response(
        self: &Arc<Self>,
        call: CallInfo,
        response: Response,
    ) -> Result<Response, PluginError> {
        let Some(pre) = &self.filter else {
            return Err(PluginError::Instantiate(
                "no `on-response` export".to_owned(),
            ));
        };
        let (call, instance, response) = self
            .call_reusable(
                call,
                Export::OnResponse,
                Bound::filter,
                async |store| pre.instantiate_async(store).await,
                async |store, instance| instance.call_on_response(store, &response).await,
            )
            .await?;
        call.done(Bound::Filter(instance));
        Ok(response)
    }

    /// One call of a role whose instances may be kept (handler, filter, authorizer), in
    /// this request's instance: a kept one when the plugin reuses instances and one is
    /// idle for this use (`kept_as` picks it out of its [`Bound`]), else a fresh one from
    /// `instantiate`. Gives back the store (for [`Call::done`], or a filter's second
    /// call), the instance, and what `body` returned.
    async fn call_reusable<I, T>(
        self: &Arc<Self>,
        call: CallInfo,
        export: Export,
        kept_as: fn(Bound) -> Option<I>,
        instantiate: impl AsyncFnOnce(&mut Store<Host>) -> wasmtime::Result<I>,
        body: impl AsyncFnOnce(&mut Store<Host>, &I) -> wasmtime::Result<T>,
    ) -> Result<(Call, I, T), PluginError> {
        let (mut call, kept) = self.start(call, export)?;
        let kept = kept.and_then(kept_as);
        let (value, instance) = call
            .run(export, async |store| {
                let instance = match kept {
                    Some(instance) => instance,
                    None => instantiate(&mut *store).await?,
                };
                let value = body(&mut *store, &instance).await?;
                Ok((value, instance))
            })
            .await?;
        Ok((call, instance, value))
    }

    /// A concurrency permit and a store for one request's calls: a kept one with its
    /// instance when this plugin reuses instances and one is idle for this use, else a
    /// fresh store (the caller instantiates).
    fn start(
        self: &Arc<Self>,
        call: CallInfo,
        export: Export,
    ) -> Result<(Call, Option<Bound>), PluginError> {
        if self.requests_per_instance <= 1 {
            return Ok((self.start_fresh(call, export)?, None));
        }
        let permit = self.permit(export)?;
        match self.idle.take(export.role(), &call.config) {
            Some(mut kept) => {
                kept.store.data_mut().rebind(call);
                let call = Call {
                    plugin: self.clone(),
                    store: kept.store,
                    served: kept.served + 1,
                    _permit: permit,
                };
                Ok((call, Some(kept.bound)))
            }
            None => Ok((self.new_call(call, permit), None)),
        }
    }

    /// A concurrency permit and a fresh store, whatever `requests_per_instance` says.
    fn start_fresh(self: &Arc<Self>, call: CallInfo, export: Export) -> Result<Call, PluginError> {
        let permit = self.permit(export)?;
        Ok(self.new_call(call, permit))
    }

    fn permit(&self, export: Export) -> Result<tokio::sync::OwnedSemaphorePermit, PluginError> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            self.stats.refused(export, &PluginError::Busy);
            PluginError::Busy
        })
    }

    fn new_call(
        self: &Arc<Self>,
        call: CallInfo,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Call {
        let memory = usize::try_from(self.limits.memory).unwrap_or(usize::MAX);
        let mut store = Store::new(&self.runtime.engine, Host::new(call, memory));
        store.limiter(|host| &mut host.limiter);
        store.epoch_deadline_callback(|store| {
            if Instant::now() >= store.data().deadline {
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
        self.stats.instantiated();
        Call {
            plugin: self.clone(),
            store,
            served: 1,
            _permit: permit,
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

/// One request's store of a plugin, holding one of its concurrency permits.
struct Call {
    plugin: Arc<Plugin>,
    store: Store<Host>,
    /// Requests this store has served, this one included.
    served: u32,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Call {
    /// The request is over for this store and its calls succeeded: keep the instance for
    /// the next request of the same use when the plugin reuses instances and this one
    /// has requests left, else drop it. (A failed call never gets here: its store is
    /// dropped with the `Call`.)
    fn done(self, instance: Bound) {
        let plugin = self.plugin;
        if self.served < plugin.requests_per_instance {
            plugin.idle.put(idle::Kept {
                store: self.store,
                bound: instance,
                served: self.served,
            });
        }
    }

    /// Runs `body` under the plugin's deadline, and classifies failures. After a failure
    /// the store must not be used again (a trap poisons it); callers drop it.
    async fn run<T>(
        &mut self,
        export: Export,
        body: impl AsyncFnOnce(&mut Store<Host>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        let timeout = self.plugin.limits.timeout;
        let started = Instant::now();
        self.store.data_mut().deadline = started + timeout;
        self.store.set_epoch_deadline(1);
        let outcome = within(
            tokio::time::Instant::from_std(started) + timeout + WALL_CLOCK_GRACE,
            body(&mut self.store),
        )
        .await;
        let result = match outcome {
            None => Err(PluginError::Timeout(timeout)),
            Some(Ok(value)) => Ok(value),
            Some(Err(error)) => Err(self.plugin.classify(&error, self.store.data(), timeout)),
        };
        let error = result.as_ref().err();
        self.plugin.stats.ran(export, started.elapsed(), error);
        result
    }
}

/// `future`'s output, or `None` if it is still pending at `deadline`: the wall-clock bound
/// around a plugin call. Unlike `tokio::time::timeout`, no timer is set unless the call
/// has to wait (a host function awaiting, or the guest yielding at an epoch tick): most
/// calls finish in their first poll, and a timer per call was ≈ 2 k instructions of a
/// reused filter's ≈ 45 k.
async fn within<T>(deadline: tokio::time::Instant, future: impl Future<Output = T>) -> Option<T> {
    let mut future = std::pin::pin!(future);
    let mut timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(value) = future.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(value));
        }
        timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)))
            .as_mut()
            .poll(cx)
            .map(|()| None)
    })
    .await
}

/// A filter's instance between `on-request` and `on-response` of one request. Dropping
/// it (the request failed, or a later filter answered) releases it without a call.
pub struct FilterInstance {
    call: Call,
    instance: Filter,
}

impl FilterInstance {
    /// `on-response` with the integration's response, in the instance that ran
    /// `on-request`.
    pub async fn on_response(mut self, response: Response) -> Result<Response, PluginError> {
        let instance = self.instance;
        let response = self
            .call
            .run(Export::OnResponse, async |store| {
                instance.call_on_response(&mut *store, &response).await
            })
            .await?;
        self.call.done(Bound::Filter(instance));
        Ok(response)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::within;

    #[tokio::test]
    async fn within_gives_the_output_of_a_call_that_finishes_in_time() {
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(within(soon, async { 7 }).await, Some(7));
        let waits = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            8
        };
        assert_eq!(within(soon, waits).await, Some(8));
    }

    #[tokio::test]
    async fn within_gives_up_on_a_call_still_waiting_at_the_deadline() {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(30);
        assert_eq!(within(deadline, std::future::pending::<u8>()).await, None);
        assert!(Instant::now() >= deadline);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
