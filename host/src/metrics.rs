//! Prometheus metrics: one process-wide [`Metrics`] (it outlives reloads, so counters never
//! reset when the route file changes), exposed as text on the admin listener's `/metrics`
//! by `prometheus-client`.
//!
//! The request path never hashes label sets: every route gets a [`RouteMetrics`] when a
//! config is loaded, with its histograms resolved up front and its per-method, per-status
//! counters resolved on first use and then kept, so counting a request is a few atomic
//! operations. Label values are bounded by the config (route, upstream and target names)
//! or by fixed sets (method, status class, phase, reason) — never raw paths.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
    /// Serialises scrapes (encoding borrows the registry).
    scrape: Mutex<()>,
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
}

/// One route's metric handles.
pub struct RouteMetrics {
    name: String,
    total: Histogram,
    upstream: Histogram,
    requests: [OnceLock<Counter>; METHOD_SLOTS * STATUS_CLASSES],
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
