//! Prometheus metrics: one process-wide [`Metrics`] (it outlives reloads, so counters never
//! reset when the route file changes), exposed as text on the admin listener's `/metrics`
//! by `prometheus-client`.
//!
//! The request path never hashes label sets: every route gets a [`RouteMetrics`] when a
//! config is loaded, with its histograms resolved up front and its per-method, per-status
//! counters resolved on first use and then kept, so counting a request is a few atomic
//! operations. Label values are bounded by the config (route, upstream and target names)
//! or by fixed sets (method, status class, phase, reason) — never raw paths.
//!
//! The state backend and the response cache count into plain atomics of their own
//! ([`StateStats`], kept by the [`State`]: the cache and the state are what a request
//! reaches, and the state outlives reloads that leave `[state]` and `[cache]` alone).
//! [`Metrics::scrape`] folds what they counted since the last scrape into the counters
//! here, and sets the cache and backend gauges; when a reload replaced the state, the old
//! one's last counts are folded in first, so these counters never go back either.
//!
//! Plugins and plugin authorizers work the same way: each [`Plugin`](crate::plugin::Plugin) counts its calls,
//! failures and call times into a [`PluginStats`], each plugin authorizer its decision
//! cache lookups into a [`CacheCounts`], and [`Metrics::scrape`] folds in what they
//! counted since the last scrape. A reload keeps an unchanged plugin (and its counters);
//! a replaced plugin or authorizer is read once more, and for as long as requests of the
//! old config still hold it, before it is forgotten.
//!
//! WebSockets: the connections of WebSocket API routes count into their route's
//! [`Counters`] in the connection registry (opened, messages each way, closes by reason),
//! folded in at scrape time the same way. Proxied tunnels count straight into their
//! route's [`TunnelMetrics`] (resolved on the route's first tunnel): a tunnel opening and
//! closing is a few atomic operations, and its bytes are added when it closes.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use http::Method;
use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::authorize::{Authorizer, CacheCounts};
use crate::pipeline::Gateway;
use crate::plugin::Plugins;
use crate::plugin::stats::{self, PluginStats, TimesSnapshot};
use crate::state::{OnStateError, State, StateStats, StatsSnapshot, Use};
use crate::websocket::api::Connections;
use crate::websocket::api::registry::{CloseReason, Counters};

/// Upper bounds (seconds) of the latency histograms' buckets.
pub const LATENCY_BUCKETS_SECONDS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// The `route` label of requests that matched no route.
pub const NO_ROUTE: &str = "";

/// HTTP methods with a label of their own; everything else is `OTHER`.
const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
    Method::CONNECT,
    Method::TRACE,
];
const METHOD_SLOTS: usize = METHODS.len() + 1;
const STATUS_CLASSES: usize = 5;

fn method_slot(method: &Method) -> usize {
    METHODS
        .iter()
        .position(|m| m == method)
        .unwrap_or(METHODS.len())
}

fn method_label(slot: usize) -> &'static str {
    METHODS.get(slot).map_or("OTHER", |m| m.as_str())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    route: String,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    route: String,
    phase: &'static str,
    status: u16,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    upstream: String,
    target: String,
    outcome: UpstreamOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetOnly {
    upstream: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamOnly {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLookupLabels {
    route: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateErrorLabels {
    op: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    r#use: &'static str,
    on_state_error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginOnly {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginExportLabels {
    plugin: String,
    export: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginReasonLabels {
    plugin: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthorizerCacheLabels {
    authorizer: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteDirectionLabels {
    route: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteReasonLabels {
    route: String,
    reason: &'static str,
}

/// The `reason` label of `weir_websocket_tunnel_closes_total`.
pub const TUNNEL_ENDS: [&str; 5] = [
    "closed",
    "error",
    "idle_timeout",
    "max_duration",
    "shutdown",
];

/// What the metrics last read from a WebSocket API route's [`Counters`]: opened, messages
/// in, messages out, then closes in [`CloseReason::ALL`] order.
type WsSnapshot = [u64; 3 + CloseReason::ALL.len()];

fn ws_snapshot(counters: &Counters) -> WsSnapshot {
    let mut snapshot = [0; 3 + CloseReason::ALL.len()];
    snapshot[0] = counters.opened.load(Ordering::Relaxed);
    snapshot[1] = counters.messages_in.load(Ordering::Relaxed);
    snapshot[2] = counters.messages_out.load(Ordering::Relaxed);
    for (n, c) in snapshot[3..].iter_mut().zip(&counters.closes) {
        *n = c.load(Ordering::Relaxed);
    }
    snapshot
}

/// The values of the `backend` label of `weir_state_backend_up`.
const BACKENDS: [&str; 2] = ["memory", "redis"];

/// How one attempt at an upstream target ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum UpstreamOutcome {
    /// A response other than 502/503/504.
    ok,
    /// A 502, 503 or 504 response.
    unavailable,
    connect_error,
    timeout,
    error,
}

const OUTCOMES: [UpstreamOutcome; 5] = [
    UpstreamOutcome::ok,
    UpstreamOutcome::unavailable,
    UpstreamOutcome::connect_error,
    UpstreamOutcome::timeout,
    UpstreamOutcome::error,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_SECONDS)
}

/// A histogram of plugin call times (buckets of [`stats::bucket_bound_seconds`], 10 µs to
/// 5 s) that grows by whole bucket counts at scrape time, from the plugins' own atomics
/// (`prometheus_client`'s `Histogram` only takes one observation at a time).
#[derive(Debug, Clone, Default)]
struct CallTimeHistogram(Arc<Mutex<TimesSnapshot>>);

impl CallTimeHistogram {
    fn add(&self, delta: &TimesSnapshot) {
        let mut total = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (n, d) in total.buckets.iter_mut().zip(delta.buckets) {
            *n += d;
        }
        total.sum_nanos += delta.sum_nanos;
    }
}

impl TypedMetric for CallTimeHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for CallTimeHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let total = *self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let buckets: Vec<(f64, u64)> = total
            .buckets
            .iter()
            .enumerate()
            .map(|(i, &n)| (stats::bucket_bound_seconds(i), n))
            .collect();
        let sum = total.sum_nanos as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, total.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A counter source a reload may replace (a plugin's stats, an authorizer's cache
/// counts), and what the last scrape read from it.
#[derive(Debug)]
struct Seen<S, C> {
    name: Arc<str>,
    source: Arc<S>,
    counts: C,
}

/// Brings `seen` up to `live` (the running gateway's sources, by name): `add(name, now,
/// before)` gets what each live source counted since the last call (all of it for a
/// source not seen before), then what each source that is no longer live counted since.
/// A source that is no longer live is kept, and read again next time, as long as someone
/// besides `seen` holds it: a request of the old config may still count into it.
/// Returns the names that were live before and are not now.
fn fold<S, C: Default>(
    seen: &mut Vec<Seen<S, C>>,
    live: &[(&str, &Arc<S>)],
    read: impl Fn(&S) -> C,
    mut add: impl FnMut(&str, &C, &C),
) -> Vec<Arc<str>> {
    let mut old = std::mem::take(seen);
    for &(name, source) in live {
        let before = old
            .iter()
            .position(|s| Arc::ptr_eq(&s.source, source))
            .map(|i| old.swap_remove(i).counts)
            .unwrap_or_default();
        let now = read(source);
        add(name, &now, &before);
        seen.push(Seen {
            name: Arc::from(name),
            source: source.clone(),
            counts: now,
        });
    }
    let mut gone = Vec::new();
    for retired in old {
        let now = read(&retired.source);
        add(&retired.name, &now, &retired.counts);
        if !live.iter().any(|(name, _)| **name == *retired.name) && !gone.contains(&retired.name) {
            gone.push(retired.name.clone());
        }
        if Arc::strong_count(&retired.source) > 1 {
            seen.push(Seen {
                counts: now,
                ..retired
            });
        }
    }
    gone
}

/// All of the gateway's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    refused: Family<RefusedLabels, Counter>,
    upstream_attempts: Family<TargetLabels, Counter>,
    upstream_retries: Family<UpstreamOnly, Counter>,
    upstream_ejections: Family<TargetOnly, Counter>,
    upstream_healthy: Family<TargetOnly, Gauge>,
    reloads: Family<ResultLabels, Counter>,
    reload_time: Gauge<f64, AtomicU64>,
    open_connections: Family<ListenerLabels, Gauge>,
    connections: Family<ListenerLabels, Counter>,
    access_log_dropped: Counter,
    cache_lookups: Family<CacheLookupLabels, Counter>,
    cache_stores: Family<RouteOnly, Counter>,
    cache_evictions: Family<ReasonLabels, Counter>,
    cache_entries: Gauge,
    cache_bytes: Gauge,
    state_errors: Family<StateErrorLabels, Counter>,
    state_fallbacks: Family<FallbackLabels, Counter>,
    state_up: Family<BackendLabels, Gauge>,
    plugin_calls: Family<PluginExportLabels, Counter>,
    plugin_failures: Family<PluginReasonLabels, Counter>,
    plugin_time: Family<PluginExportLabels, CallTimeHistogram>,
    plugin_in_flight: Family<PluginOnly, Gauge>,
    plugin_instances: Family<PluginOnly, Counter>,
    plugin_idle: Family<PluginOnly, Gauge>,
    authorizer_cache: Family<AuthorizerCacheLabels, Counter>,
    ws_open: Family<RouteOnly, Gauge>,
    ws_connections: Family<RouteOnly, Counter>,
    ws_messages: Family<RouteDirectionLabels, Counter>,
    ws_closes: Family<RouteReasonLabels, Counter>,
    tunnels_open: Family<RouteOnly, Gauge>,
    tunnels: Family<RouteOnly, Counter>,
    tunnel_closes: Family<RouteReasonLabels, Counter>,
    tunnel_bytes: Family<RouteDirectionLabels, Counter>,
    /// The WebSocket API routes' counters folded in last.
    ws_seen: Mutex<Vec<Seen<Counters, WsSnapshot>>>,
    /// The state whose counters were folded in last, and their values then.
    state_seen: Mutex<StateSeen>,
    /// The plugins and plugin authorizers whose counters were folded in last.
    plugins_seen: Mutex<Vec<Seen<PluginStats, stats::StatsSnapshot>>>,
    authorizers_seen: Mutex<Vec<Seen<CacheCounts, [u64; 2]>>>,
    /// Serialises scrapes (encoding borrows the registry).
    scrape: Mutex<()>,
}

/// What [`Metrics::scrape`] last read from a state's counters.
#[derive(Debug, Default)]
struct StateSeen {
    stats: Option<Arc<StateStats>>,
    counts: StatsSnapshot,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("weir");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route, method and status class",
            requests.clone(),
        );
        let duration: Family<PhaseLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time spent, by route and phase (total: head to end of response; upstream: \
             request sent to response head)",
            duration.clone(),
        );
        let refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "refused_requests",
            "Requests the gateway answered itself with an error, by route, phase, status and reason",
            refused.clone(),
        );
        let upstream_attempts = Family::<TargetLabels, Counter>::default();
        registry.register(
            "upstream_attempts",
            "Attempts at upstream targets, by outcome",
            upstream_attempts.clone(),
        );
        let upstream_retries = Family::<UpstreamOnly, Counter>::default();
        registry.register(
            "upstream_retries",
            "Attempts beyond the first, by upstream",
            upstream_retries.clone(),
        );
        let upstream_ejections = Family::<TargetOnly, Counter>::default();
        registry.register(
            "upstream_ejections",
            "Targets ejected by passive health checking",
            upstream_ejections.clone(),
        );
        let upstream_healthy = Family::<TargetOnly, Gauge>::default();
        registry.register(
            "upstream_target_healthy",
            "1 when the target takes traffic, 0 while ejected (as of the last request to it)",
            upstream_healthy.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Route file reloads, by result (success, failure)",
            reloads.clone(),
        );
        let reload_time = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "config_last_success_timestamp_seconds",
            "When the running route file was loaded (Unix time)",
            reload_time.clone(),
        );
        let open_connections = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "open_connections",
            "Client connections open now, by listener",
            open_connections.clone(),
        );
        let connections = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections",
            "Client connections accepted, by listener",
            connections.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let cache_lookups = Family::<CacheLookupLabels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Response cache lookups of GET and HEAD requests on cached routes, by route and \
             result (hit, miss: as in x-cache)",
            cache_lookups.clone(),
        );
        let cache_stores = Family::<RouteOnly, Counter>::default();
        registry.register(
            "cache_stores",
            "Responses written to the cache, by route",
            cache_stores.clone(),
        );
        let cache_evictions = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "cache_local_evictions",
            "Entries removed from this process's cache by the entry or byte bound (lru) or \
             because they had expired (expired)",
            cache_evictions.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register(
            "cache_local_entries",
            "Entries in this process's cache (with Redis: the local fallback only)",
            cache_entries.clone(),
        );
        let cache_bytes = Gauge::default();
        registry.register(
            "cache_local_bytes",
            "Bytes (keys and stored responses) in this process's cache",
            cache_bytes.clone(),
        );
        let state_errors = Family::<StateErrorLabels, Counter>::default();
        registry.register(
            "state_errors",
            "Failed state backend operations, by operation and kind (down: not tried while \
             the backend is considered down)",
            state_errors.clone(),
        );
        let state_fallbacks = Family::<FallbackLabels, Counter>::default();
        registry.register(
            "state_fallbacks",
            "Decisions taken without the state backend, by use and the route's on_state_error",
            state_fallbacks.clone(),
        );
        let state_up = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "state_backend_up",
            "1 when the state backend answered its last operation, 0 while it is considered down",
            state_up.clone(),
        );
        let plugin_calls = Family::<PluginExportLabels, Counter>::default();
        registry.register(
            "plugin_calls",
            "Calls of plugin exports (handle, on-request, on-response, authorize), failed \
             and refused ones included, by plugin and export",
            plugin_calls.clone(),
        );
        let plugin_failures = Family::<PluginReasonLabels, Counter>::default();
        registry.register(
            "plugin_failures",
            "Failed plugin calls, by plugin and reason (plugin_busy, plugin_timeout, \
             plugin_memory, plugin_trap, plugin_bad_output, plugin_instantiate)",
            plugin_failures.clone(),
        );
        let plugin_time = Family::<PluginExportLabels, CallTimeHistogram>::default();
        registry.register(
            "plugin_call_duration_seconds",
            "Time of plugin calls that got an instance (instantiation included), by plugin \
             and export",
            plugin_time.clone(),
        );
        let plugin_in_flight = Family::<PluginOnly, Gauge>::default();
        registry.register(
            "plugin_instances_in_flight",
            "Plugin instances alive now (each holds one of the plugin's concurrency permits)",
            plugin_in_flight.clone(),
        );
        let plugin_instances = Family::<PluginOnly, Counter>::default();
        registry.register(
            "plugin_instances_created",
            "Plugin instances created: one per request, fewer for plugins that reuse \
             instances (requests_per_instance above 1)",
            plugin_instances.clone(),
        );
        let plugin_idle = Family::<PluginOnly, Gauge>::default();
        registry.register(
            "plugin_instances_idle",
            "Plugin instances kept for reuse and idle now (requests_per_instance above 1)",
            plugin_idle.clone(),
        );
        let authorizer_cache = Family::<AuthorizerCacheLabels, Counter>::default();
        registry.register(
            "authorizer_cache_lookups",
            "Decision cache lookups of plugin authorizers with a cache_ttl, by authorizer and \
             result (hit, miss: the plugin was called)",
            authorizer_cache.clone(),
        );
        let ws_open = Family::<RouteOnly, Gauge>::default();
        registry.register(
            "websocket_open_connections",
            "Connections of WebSocket API routes open now, by route",
            ws_open.clone(),
        );
        let ws_connections = Family::<RouteOnly, Counter>::default();
        registry.register(
            "websocket_connections",
            "Connections accepted by WebSocket API routes, by route",
            ws_connections.clone(),
        );
        let ws_messages = Family::<RouteDirectionLabels, Counter>::default();
        registry.register(
            "websocket_messages",
            "Messages of WebSocket API routes, by route and direction (in: from clients; \
             out: to clients, replies and connections API sends)",
            ws_messages.clone(),
        );
        let ws_closes = Family::<RouteReasonLabels, Counter>::default();
        registry.register(
            "websocket_closes",
            "Connections of WebSocket API routes ended, by route and reason (client, api, \
             idle_timeout, max_duration, too_large, rate_limited, error, shutdown)",
            ws_closes.clone(),
        );
        let tunnels_open = Family::<RouteOnly, Gauge>::default();
        registry.register(
            "websocket_open_tunnels",
            "Proxied WebSocket connections (tunnels) open now, by route",
            tunnels_open.clone(),
        );
        let tunnels = Family::<RouteOnly, Counter>::default();
        registry.register(
            "websocket_tunnels",
            "Proxied WebSocket connections (tunnels) opened, by route",
            tunnels.clone(),
        );
        let tunnel_closes = Family::<RouteReasonLabels, Counter>::default();
        registry.register(
            "websocket_tunnel_closes",
            "Proxied WebSocket tunnels ended, by route and reason (closed, error, \
             idle_timeout, max_duration, shutdown)",
            tunnel_closes.clone(),
        );
        let tunnel_bytes = Family::<RouteDirectionLabels, Counter>::default();
        registry.register(
            "websocket_tunnel_bytes",
            "Bytes through proxied WebSocket tunnels, by route and direction (in: from \
             clients; out: from upstreams to clients), counted when the tunnel ends",
            tunnel_bytes.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            refused,
            upstream_attempts,
            upstream_retries,
            upstream_ejections,
            upstream_healthy,
            reloads,
            reload_time,
            open_connections,
            connections,
            access_log_dropped,
            cache_lookups,
            cache_stores,
            cache_evictions,
            cache_entries,
            cache_bytes,
            state_errors,
            state_fallbacks,
            state_up,
            plugin_calls,
            plugin_failures,
            plugin_time,
            plugin_in_flight,
            plugin_instances,
            plugin_idle,
            authorizer_cache,
            ws_open,
            ws_connections,
            ws_messages,
            ws_closes,
            tunnels_open,
            tunnels,
            tunnel_closes,
            tunnel_bytes,
            ws_seen: Mutex::new(Vec::new()),
            state_seen: Mutex::new(StateSeen::default()),
            plugins_seen: Mutex::new(Vec::new()),
            authorizers_seen: Mutex::new(Vec::new()),
            scrape: Mutex::new(()),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let _guard = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The exposition, with the figures of `gateway` (the running one: its state,
    /// plugins and authorizers) brought up to date first: what the `/metrics` endpoint
    /// serves.
    pub fn scrape(&self, gateway: &Gateway) -> String {
        self.observe_state(gateway.state());
        self.observe_plugins(gateway.plugins());
        self.observe_authorizers(gateway.authorizers());
        self.observe_websocket_apis(gateway.connections());
        self.encode()
    }

    /// Folds what the WebSocket API routes counted since the last call into the
    /// `weir_websocket_*` counters, and sets the open-connection gauges.
    pub fn observe_websocket_apis(&self, connections: &Connections) {
        let all = connections.all_counters();
        let live: Vec<(&str, &Arc<Counters>)> = all.iter().map(|(r, c)| (&**r, c)).collect();
        let mut seen = self.ws_seen.lock().unwrap_or_else(PoisonError::into_inner);
        let gone = fold(&mut seen, &live, ws_snapshot, |route, now, before| {
            let d = |i: usize| now[i].saturating_sub(before[i]);
            let route_only = RouteOnly {
                route: route.to_owned(),
            };
            self.ws_connections.get_or_create(&route_only).inc_by(d(0));
            for (i, direction) in [(1, "in"), (2, "out")] {
                self.ws_messages
                    .get_or_create(&RouteDirectionLabels {
                        route: route.to_owned(),
                        direction,
                    })
                    .inc_by(d(i));
            }
            for (i, reason) in CloseReason::ALL.iter().enumerate() {
                self.ws_closes
                    .get_or_create(&RouteReasonLabels {
                        route: route.to_owned(),
                        reason: reason.as_str(),
                    })
                    .inc_by(d(3 + i));
            }
        });
        for (route, counters) in &all {
            let open = i64::try_from(counters.open()).unwrap_or(i64::MAX);
            self.ws_open
                .get_or_create(&RouteOnly {
                    route: route.clone(),
                })
                .set(open);
        }
        for route in gone {
            self.ws_open.remove(&RouteOnly {
                route: route.to_string(),
            });
        }
    }

    /// Folds what the plugins counted since the last call into the counters and the
    /// call-time histograms, and sets the in-flight gauges.
    pub fn observe_plugins(&self, plugins: &Plugins) {
        let live: Vec<(&str, &Arc<PluginStats>)> =
            plugins.iter().map(|p| (&**p.name(), p.stats())).collect();
        let gone = self.observe_plugin_stats(&live);
        for plugin in plugins.iter() {
            let labels = PluginOnly {
                plugin: plugin.name().to_string(),
            };
            self.plugin_in_flight
                .get_or_create(&labels)
                .set(i64::try_from(plugin.in_flight()).unwrap_or(i64::MAX));
            self.plugin_idle
                .get_or_create(&labels)
                .set(i64::try_from(plugin.idle()).unwrap_or(i64::MAX));
        }
        for name in gone {
            let labels = PluginOnly {
                plugin: name.to_string(),
            };
            self.plugin_in_flight.remove(&labels);
            self.plugin_idle.remove(&labels);
        }
    }

    /// [`fold`]s the live plugins' stats into the counters; returns the names gone.
    fn observe_plugin_stats(&self, live: &[(&str, &Arc<PluginStats>)]) -> Vec<Arc<str>> {
        let mut seen = self
            .plugins_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        fold(
            &mut seen,
            live,
            PluginStats::snapshot,
            |name, now, before| {
                self.add_plugin_counts(name, now, before);
            },
        )
    }

    /// Adds `now - before` of one plugin. Every series of its exports and every failure
    /// reason exists from its first scrape, so that `increase()` sees the first call.
    fn add_plugin_counts(
        &self,
        plugin: &str,
        now: &stats::StatsSnapshot,
        before: &stats::StatsSnapshot,
    ) {
        let delta = |now: u64, before: u64| now.saturating_sub(before);
        self.plugin_instances
            .get_or_create(&PluginOnly {
                plugin: plugin.to_owned(),
            })
            .inc_by(delta(now.instances(), before.instances()));
        for ((export, has, n), (.., n_before)) in now.calls().zip(before.calls()) {
            let d = delta(n, n_before);
            if !has && d == 0 {
                continue;
            }
            let labels = PluginExportLabels {
                plugin: plugin.to_owned(),
                export: export.as_str(),
            };
            self.plugin_calls.get_or_create(&labels).inc_by(d);
            self.plugin_time
                .get_or_create(&labels)
                .add(&now.times(export).since(before.times(export)));
        }
        for ((reason, n), (_, n_before)) in now.failures().zip(before.failures()) {
            let labels = PluginReasonLabels {
                plugin: plugin.to_owned(),
                reason,
            };
            self.plugin_failures
                .get_or_create(&labels)
                .inc_by(delta(n, n_before));
        }
    }

    /// Folds what the plugin authorizers' decision caches counted since the last call
    /// into `weir_authorizer_cache_lookups_total`.
    pub fn observe_authorizers(&self, authorizers: &[Authorizer]) {
        let mut seen = self
            .authorizers_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let live: Vec<(&str, &Arc<CacheCounts>)> = authorizers
            .iter()
            .filter_map(|a| match a {
                Authorizer::Plugin(plugin) => Some((a.name(), plugin.cache_counters()?)),
                Authorizer::Jwt(_) => None,
            })
            .collect();
        let read = |c: &CacheCounts| {
            [
                c.hits.load(Ordering::Relaxed),
                c.misses.load(Ordering::Relaxed),
            ]
        };
        fold(&mut seen, &live, read, |name, now, before| {
            for ((result, n), n_before) in ["hit", "miss"].into_iter().zip(now).zip(before) {
                self.authorizer_cache
                    .get_or_create(&AuthorizerCacheLabels {
                        authorizer: name.to_owned(),
                        result,
                    })
                    .inc_by(n.saturating_sub(*n_before));
            }
        });
    }

    /// Folds what `state` counted since the last call into the counters, and sets the
    /// cache and backend gauges.
    pub fn observe_state(&self, state: &State) {
        let mut seen = self
            .state_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let stats = state.stats();
        if !seen.stats.as_ref().is_some_and(|s| Arc::ptr_eq(s, stats)) {
            // A reload replaced the state: count what the old one did since the last scrape.
            if let Some(old) = seen.stats.take() {
                self.add_state_counts(&old.snapshot(), &seen.counts, false);
            }
            seen.counts = StatsSnapshot::default();
            seen.stats = Some(stats.clone());
        }
        let now = stats.snapshot();
        // With Redis, every error and fallback series exists from the first scrape, so that
        // `increase()` sees the first one.
        let shared = state.backend_name() != "memory";
        self.add_state_counts(&now, &seen.counts, shared);
        seen.counts = now;

        let (entries, bytes) = state.local().cache_usage();
        self.cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        for backend in BACKENDS {
            let labels = BackendLabels { backend };
            if backend == state.backend_name() {
                self.state_up
                    .get_or_create(&labels)
                    .set(i64::from(state.is_healthy()));
            } else {
                self.state_up.remove(&labels);
            }
        }
    }

    /// Adds `now - before` to the state and cache counters; series still at zero are
    /// created only with `zeros`.
    fn add_state_counts(&self, now: &StatsSnapshot, before: &StatsSnapshot, zeros: bool) {
        let delta = |now: u64, before: u64| now.saturating_sub(before);
        // Both sides list every (op, kind) and (use, choice) in the same order.
        for ((op, kind, n), (.., n_before)) in now.errors().zip(before.errors()) {
            let d = delta(n, n_before);
            if d > 0 || zeros {
                let labels = StateErrorLabels {
                    op: op.as_str(),
                    kind: kind.as_str(),
                };
                self.state_errors.get_or_create(&labels).inc_by(d);
            }
        }
        for ((what, choice, n), (.., n_before)) in now.fallbacks().zip(before.fallbacks()) {
            let d = delta(n, n_before);
            // Plugin KV errors always go back to the plugin ("closed").
            let possible = what != Use::Kv || choice == OnStateError::Closed;
            if d > 0 || (zeros && possible) {
                let labels = FallbackLabels {
                    r#use: what.as_str(),
                    on_state_error: choice.as_str(),
                };
                self.state_fallbacks.get_or_create(&labels).inc_by(d);
            }
        }
        for ((why, n), (_, n_before)) in now.evictions().zip(before.evictions()) {
            let labels = ReasonLabels {
                reason: why.as_str(),
            };
            self.cache_evictions
                .get_or_create(&labels)
                .inc_by(delta(n, n_before));
        }
        for (route, counts) in now.routes() {
            let was = before.route(route);
            let lookups = |result| CacheLookupLabels {
                route: route.to_string(),
                result,
            };
            self.cache_lookups
                .get_or_create(&lookups("hit"))
                .inc_by(delta(counts.hits, was.hits));
            self.cache_lookups
                .get_or_create(&lookups("miss"))
                .inc_by(delta(counts.misses, was.misses));
            self.cache_stores
                .get_or_create(&RouteOnly {
                    route: route.to_string(),
                })
                .inc_by(delta(counts.stores, was.stores));
        }
    }

    /// The handles of one route (or of unmatched requests, with [`NO_ROUTE`]).
    pub fn route(self: &Arc<Self>, name: &str) -> RouteMetrics {
        let phase = |phase: &'static str| {
            self.duration.get_or_create_owned(&PhaseLabels {
                route: name.to_owned(),
                phase,
            })
        };
        RouteMetrics {
            name: name.to_owned(),
            total: phase("total"),
            upstream: phase("upstream"),
            requests: std::array::from_fn(|_| OnceLock::new()),
            tunnel: OnceLock::new(),
            metrics: self.clone(),
        }
    }

    /// The handles of one upstream target.
    pub fn target(&self, upstream: &str, target: &str) -> TargetMetrics {
        let only = TargetOnly {
            upstream: upstream.to_owned(),
            target: target.to_owned(),
        };
        let healthy = self.upstream_healthy.get_or_create_owned(&only);
        healthy.set(1);
        TargetMetrics {
            attempts: OUTCOMES.map(|outcome| {
                self.upstream_attempts.get_or_create_owned(&TargetLabels {
                    upstream: upstream.to_owned(),
                    target: target.to_owned(),
                    outcome,
                })
            }),
            retries: self.upstream_retries.get_or_create_owned(&UpstreamOnly {
                upstream: upstream.to_owned(),
            }),
            ejections: self.upstream_ejections.get_or_create_owned(&only),
            healthy,
        }
    }

    /// Counts a reload attempt; on success also records its time.
    pub fn record_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
        if success {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.reload_time.set(now);
        }
    }

    /// The open-connection gauge and accept counter of a listener.
    pub fn listener(&self, listener: &'static str) -> (Gauge, Counter) {
        let labels = ListenerLabels { listener };
        (
            self.open_connections.get_or_create_owned(&labels),
            self.connections.get_or_create_owned(&labels),
        )
    }

    pub fn access_log_dropped(&self) -> &Counter {
        &self.access_log_dropped
    }

    /// The handles of the proxied WebSocket tunnels of route `route`.
    fn tunnel(&self, route: &str) -> TunnelMetrics {
        let route_only = RouteOnly {
            route: route.to_owned(),
        };
        let direction = |direction| {
            self.tunnel_bytes
                .get_or_create_owned(&RouteDirectionLabels {
                    route: route.to_owned(),
                    direction,
                })
        };
        TunnelMetrics {
            opened: self.tunnels.get_or_create_owned(&route_only),
            open: self.tunnels_open.get_or_create_owned(&route_only),
            closes: TUNNEL_ENDS.map(|reason| {
                self.tunnel_closes.get_or_create_owned(&RouteReasonLabels {
                    route: route.to_owned(),
                    reason,
                })
            }),
            bytes_in: direction("in"),
            bytes_out: direction("out"),
        }
    }
}

/// The metric handles of one route's proxied WebSocket tunnels.
#[derive(Debug)]
pub struct TunnelMetrics {
    opened: Counter,
    open: Gauge,
    closes: [Counter; TUNNEL_ENDS.len()],
    bytes_in: Counter,
    bytes_out: Counter,
}

impl TunnelMetrics {
    /// A tunnel began (both sides switched protocols).
    pub fn opened(&self) {
        self.opened.inc();
        self.open.inc();
    }

    /// A tunnel ended, for `reason` (one of [`TUNNEL_ENDS`]), after `bytes_in` bytes from
    /// the client and `bytes_out` from the upstream.
    pub fn closed(&self, reason: &str, bytes_in: u64, bytes_out: u64) {
        self.open.dec();
        let slot = TUNNEL_ENDS.iter().position(|r| *r == reason).unwrap_or(0);
        if let Some(closes) = self.closes.get(slot) {
            closes.inc();
        }
        self.bytes_in.inc_by(bytes_in);
        self.bytes_out.inc_by(bytes_out);
    }
}

/// One route's metric handles.
pub struct RouteMetrics {
    name: String,
    total: Histogram,
    upstream: Histogram,
    requests: [OnceLock<Counter>; METHOD_SLOTS * STATUS_CLASSES],
    tunnel: OnceLock<Arc<TunnelMetrics>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("name", &self.name)
            .finish()
    }
}

impl RouteMetrics {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counts a finished request and its total time.
    pub fn record_request(&self, method: &Method, status: u16, total: Duration) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        let slot = method_slot(method) * STATUS_CLASSES + class;
        if let Some(cell) = self.requests.get(slot) {
            cell.get_or_init(|| {
                const CLASSES: [&str; STATUS_CLASSES] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
                self.metrics.requests.get_or_create_owned(&RequestLabels {
                    route: self.name.clone(),
                    method: method_label(slot / STATUS_CLASSES),
                    status: CLASSES[class],
                })
            })
            .inc();
        }
        self.total.observe(total.as_secs_f64());
    }

    /// The handles of this route's proxied WebSocket tunnels (resolved on first use).
    pub fn tunnel(&self) -> Arc<TunnelMetrics> {
        self.tunnel
            .get_or_init(|| Arc::new(self.metrics.tunnel(&self.name)))
            .clone()
    }

    /// Records the upstream phase's time.
    pub fn record_upstream(&self, elapsed: Duration) {
        self.upstream.observe(elapsed.as_secs_f64());
    }

    /// Counts a request the gateway refused or failed itself (a rare path: hashes labels).
    pub fn record_refused(&self, phase: &'static str, status: u16, reason: &'static str) {
        self.metrics
            .refused
            .get_or_create(&RefusedLabels {
                route: self.name.clone(),
                phase,
                status,
                reason,
            })
            .inc();
    }
}

/// One upstream target's metric handles.
#[derive(Debug, Clone)]
pub struct TargetMetrics {
    attempts: [Counter; 5],
    retries: Counter,
    ejections: Counter,
    healthy: Gauge<i64, AtomicI64>,
}

impl TargetMetrics {
    pub fn attempt(&self, outcome: UpstreamOutcome) {
        let idx = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(0);
        self.attempts[idx].inc();
    }

    pub fn retry(&self) {
        self.retries.inc();
    }

    pub fn ejected(&self) {
        self.ejections.inc();
        self.healthy.set(0);
    }

    pub fn healthy(&self) {
        if self.healthy.get() != 1 {
            self.healthy.set(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape_state(metrics: &Metrics, state: &State) -> String {
        metrics.observe_state(state);
        metrics.encode()
    }

    #[test]
    fn exposition_has_route_counters_and_histograms() {
        let metrics = Arc::new(Metrics::new());
        let route = metrics.route("get-user");
        route.record_request(&Method::GET, 200, Duration::from_millis(3));
        route.record_request(&Method::GET, 200, Duration::from_millis(4));
        route.record_request(
            &Method::from_bytes(b"PURGE").expect("method"),
            503,
            Duration::ZERO,
        );
        route.record_upstream(Duration::from_millis(2));
        let unmatched = metrics.route(NO_ROUTE);
        unmatched.record_refused("route", 404, "no_route");
        let text = metrics.encode();
        assert!(
            text.contains(r#"weir_requests_total{route="get-user",method="GET",status="2xx"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weir_requests_total{route="get-user",method="OTHER",status="5xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"weir_request_duration_seconds_count{route="get-user",phase="total"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"weir_refused_requests_total{route="",phase="route",status="404",reason="no_route"} 1"#),
            "{text}"
        );
    }

    const BOUNDS: crate::state::CacheBounds = crate::state::CacheBounds {
        max_entries: 1,
        max_bytes: 1 << 20,
    };

    #[tokio::test]
    async fn cache_figures_are_folded_in_at_scrape_time_and_survive_a_new_state() {
        let metrics = Metrics::new();
        let state = State::memory(BOUNDS);
        let counters = state.stats().cache_route("pages");
        counters.hit();
        counters.miss();
        for key in ["4:pages:a", "4:pages:b"] {
            let value = bytes::Bytes::from_static(b"body");
            let ttl = Duration::from_secs(60);
            assert!(
                state
                    .cache_put("pages", key, value, ttl, OnStateError::Open)
                    .await
            );
            counters.stored();
        }
        let text = scrape_state(&metrics, &state);
        for line in [
            r#"weir_cache_lookups_total{route="pages",result="hit"} 1"#,
            r#"weir_cache_lookups_total{route="pages",result="miss"} 1"#,
            r#"weir_cache_stores_total{route="pages"} 2"#,
            r#"weir_cache_local_evictions_total{reason="lru"} 1"#,
            r#"weir_cache_local_evictions_total{reason="expired"} 0"#,
            "weir_cache_local_entries 1",
            "weir_cache_local_bytes 13",
            r#"weir_state_backend_up{backend="memory"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            !text.contains("weir_state_errors_total"),
            "no error series for the memory backend: {text}"
        );
        // A later scrape adds what is new.
        counters.hit();
        let text = scrape_state(&metrics, &state);
        assert!(text.contains(r#"weir_cache_lookups_total{route="pages",result="hit"} 2"#));

        // A reload that replaces the state: what the old one counted since the last
        // scrape is kept, and the new one counts on top.
        counters.hit();
        let fresh = State::memory(BOUNDS);
        fresh.stats().cache_route("pages").hit();
        let text = scrape_state(&metrics, &fresh);
        assert!(
            text.contains(r#"weir_cache_lookups_total{route="pages",result="hit"} 4"#),
            "{text}"
        );
        assert!(text.contains("weir_cache_local_entries 0"), "{text}");
    }

    #[tokio::test]
    async fn state_errors_and_fallbacks_are_counted_by_kind_and_choice() {
        let settings = crate::state::StateSettings::Redis(crate::state::RedisSettings {
            // Port 1: nothing listens there.
            url: "redis://127.0.0.1:1".to_owned(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(50),
            retry_interval: Duration::from_secs(60),
            prefix: "weir:".to_owned(),
        });
        let state = State::new(&settings, BOUNDS).expect("state");
        let metrics = Metrics::new();
        let text = scrape_state(&metrics, &state);
        for line in [
            r#"weir_state_backend_up{backend="redis"} 1"#,
            r#"weir_state_errors_total{op="take",kind="connection"} 0"#,
            r#"weir_state_fallbacks_total{use="quota",on_state_error="closed"} 0"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            !text.contains(r#"use="kv",on_state_error="open""#),
            "{text}"
        );

        let limit = crate::state::Limit {
            rate: 1.0,
            burst: 1,
        };
        assert!(state.take("k", limit, OnStateError::Open).await.is_ok());
        assert!(state.take("k", limit, OnStateError::Closed).await.is_err());
        assert!(state.cache_get("k", OnStateError::Local).await.is_none());
        let text = scrape_state(&metrics, &state);
        for line in [
            r#"weir_state_backend_up{backend="redis"} 0"#,
            // The first call found the server missing; the others did not try.
            r#"weir_state_errors_total{op="take",kind="down"} 1"#,
            r#"weir_state_errors_total{op="cache_get",kind="down"} 1"#,
            r#"weir_state_fallbacks_total{use="limit",on_state_error="open"} 1"#,
            r#"weir_state_fallbacks_total{use="limit",on_state_error="closed"} 1"#,
            r#"weir_state_fallbacks_total{use="cache",on_state_error="local"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        let first_failures: f64 = text
            .lines()
            .filter(|l| l.starts_with(r#"weir_state_errors_total{op="take",kind="#))
            .filter(|l| !l.contains(r#"kind="down""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(first_failures, 1.0, "{text}");
    }

    #[test]
    fn plugin_figures_are_folded_in_at_scrape_time_and_never_go_back() {
        use crate::plugin::PluginError;
        use crate::plugin::stats::Export;

        let metrics = Metrics::new();
        use crate::plugin::Role;
        let kept = Arc::new(PluginStats::new(&[Role::Filter]));
        let old = Arc::new(PluginStats::new(&[Role::Handler]));
        kept.ran(Export::OnRequest, Duration::from_micros(30), None);
        kept.refused(Export::OnRequest, &PluginError::Busy);
        old.ran(Export::Handle, Duration::from_millis(2), None);
        metrics.observe_plugin_stats(&[("filter", &kept), ("handler", &old)]);
        let text = metrics.encode();
        for line in [
            r#"weir_plugin_calls_total{plugin="filter",export="on-request"} 2"#,
            r#"weir_plugin_calls_total{plugin="filter",export="on-response"} 0"#,
            r#"weir_plugin_failures_total{plugin="filter",reason="plugin_busy"} 1"#,
            r#"weir_plugin_failures_total{plugin="filter",reason="plugin_trap"} 0"#,
            r#"weir_plugin_call_duration_seconds_count{plugin="filter",export="on-request"} 1"#,
            r#"weir_plugin_call_duration_seconds_bucket{le="0.00005",plugin="filter",export="on-request"} 1"#,
            r#"weir_plugin_call_duration_seconds_bucket{le="0.000025",plugin="filter",export="on-request"} 0"#,
            r#"weir_plugin_call_duration_seconds_sum{plugin="handler",export="handle"} 0.002"#,
            r#"weir_plugin_calls_total{plugin="handler",export="handle"} 1"#,
            "# TYPE weir_plugin_call_duration_seconds histogram",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            !text.contains(r#"plugin="filter",export="handle""#),
            "only the exports the component has: {text}"
        );

        // A reload replaces `handler` by a new load of the same name; a request of the old
        // config still holds the old one and counts into it after the scrape below.
        let new = Arc::new(PluginStats::new(&[Role::Handler]));
        old.ran(Export::Handle, Duration::from_millis(2), None);
        new.ran(Export::Handle, Duration::from_millis(2), None);
        let gone = metrics.observe_plugin_stats(&[("filter", &kept), ("handler", &new)]);
        assert!(gone.is_empty());
        let calls = |text: &str| {
            text.lines()
                .find(|l| l.starts_with(r#"weir_plugin_calls_total{plugin="handler""#))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        };
        assert_eq!(calls(&metrics.encode()), Some(3));
        let error = PluginError::Timeout(Duration::from_secs(1));
        old.ran(Export::Handle, Duration::from_secs(1), Some(&error));
        drop(old);
        // Then it is removed from the config: its last counts are kept, it is forgotten.
        let gone = metrics.observe_plugin_stats(&[("filter", &kept)]);
        assert_eq!(gone, [Arc::from("handler")]);
        let text = metrics.encode();
        assert_eq!(calls(&text), Some(4), "{text}");
        assert!(
            text.contains(
                r#"weir_plugin_failures_total{plugin="handler",reason="plugin_timeout"} 1"#
            )
        );
        assert!(text.contains(
            r#"weir_plugin_call_duration_seconds_count{plugin="handler",export="handle"} 4"#
        ));
        assert_eq!(metrics.plugins_seen.lock().expect("lock").len(), 2);
        drop(new);
        metrics.observe_plugin_stats(&[("filter", &kept)]);
        assert_eq!(
            metrics.plugins_seen.lock().expect("lock").len(),
            1,
            "plugins no request can count into any more are forgotten"
        );
        assert_eq!(calls(&metrics.encode()), Some(4));
    }

    #[test]
    fn target_health_follows_ejection() {
        let metrics = Metrics::new();
        let target = metrics.target("users", "http://127.0.0.1:9000");
        target.attempt(UpstreamOutcome::connect_error);
        target.ejected();
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"weir_upstream_target_healthy{upstream="users",target="http://127.0.0.1:9000"} 0"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"weir_upstream_attempts_total{upstream="users",target="http://127.0.0.1:9000",outcome="connect_error"} 1"#), "{text}");
    }
}
