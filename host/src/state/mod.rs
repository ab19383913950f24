//! Shared state behind limits, quotas, the response cache and plugin key-value data: one
//! interface, two backends (`[state] backend = "memory" | "redis"`).
//!
//! Everything goes through [`State`], which the [`Gateway`](crate::pipeline::Gateway)
//! owns (`gateway.state()`). Keys are plain strings chosen by the caller; the backend
//! namespaces them by use (a bucket key never meets a quota key) and, for Redis, by the
//! configured prefix. Use stable names (route names, plan names, key names), never
//! indices, so that several gateways sharing one Redis agree.
//!
//! # Token buckets (throttles, usage-plan `rate`/`burst`)
//!
//! ```ignore
//! let limit = Limit { rate: plan.rate, burst: plan.burst };
//! let choice = route.on_state_error.unwrap_or(OnStateError::LIMITS_DEFAULT);
//! match gateway.state().take(&format!("plan:{plan}:key:{key}"), limit, choice).await {
//!     Ok(decision) if decision.allowed => { /* go on; decision feeds RateLimit-* headers */ }
//!     Ok(decision) => return Err(GatewayError::Throttled(decision.into())), // 429
//!     Err(Unavailable) => return Err(GatewayError::StateUnavailable),       // 503
//! }
//! ```
//!
//! A take is atomic per key (a mutex section in memory, a Lua script in Redis), so racing
//! requests never over-admit. A refused take costs no token.
//!
//! # Quotas (usage-plan `quota = { limit, period }`)
//!
//! ```ignore
//! let quota = Quota { limit: 1000, period: Period::Day };
//! let choice = route.on_state_error.unwrap_or(OnStateError::QUOTAS_DEFAULT);
//! let decision = gateway.state().quota(&format!("plan:{plan}:key:{key}"), quota, choice).await?;
//! ```
//!
//! Windows are fixed calendar periods in UTC ([`window::window`]): a day from midnight, a
//! week from Monday, a month from the 1st. A refused request is not counted. The decision
//! carries `remaining` and `reset` (end of window) for `RateLimit-*` headers, and
//! `retry_after` (also the end of window) when refused; format headers with
//! [`crate::throttle::rate_limit_headers`].
//!
//! # When Redis is unreachable
//!
//! Each call takes the route's [`OnStateError`]: `Local` answers from this process's
//! memory backend (per-gateway limits), `Open` allows (or, for the cache, bypasses),
//! `Closed` makes the call return [`Unavailable`] (answer `503`). Defaults:
//! [`OnStateError::LIMITS_DEFAULT`] (local), [`OnStateError::QUOTAS_DEFAULT`] (closed),
//! [`OnStateError::CACHE_DEFAULT`] (bypass). Every failed operation and every degraded
//! decision is counted ([`State::stats`], exported as `weir_state_errors_total` and
//! `weir_state_fallbacks_total`) and logged, at most once per [`DEGRADED_LOG_INTERVAL`]
//! per use. After a failure Redis is not asked again for `retry_interval`; then one
//! request probes it and the first success ends the degraded mode.
//!
//! # Pure logic
//!
//! [`bucket`] (the token-bucket arithmetic) and [`window`] (quota windows) take the time
//! as a parameter; [`MemoryState::take_at`] and [`MemoryState::quota_at`] too.

pub mod bucket;
pub mod memory;
pub mod redis;
pub mod stats;
pub mod window;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

pub use self::redis::{RedisSettings, RedisState};
pub use bucket::{Decision, Limit};
pub use memory::{CacheBounds, MemoryState, Quota};
pub use stats::{CacheCounters, Op, StateStats, StatsSnapshot};
pub use window::Period;

/// At most one log line per this interval per kind of degraded decision (the count of
/// those not logged is in the next line).
pub const DEGRADED_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// What a route does when the shared state backend cannot be reached
/// (`on_state_error = "local" | "open" | "closed"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStateError {
    /// Decide from this gateway's own memory (limits per gateway, local cache).
    Local,
    /// Allow the request (limits, quotas); bypass the cache.
    Open,
    /// Refuse the request with `503` (limits, quotas); bypass the cache.
    Closed,
}

impl OnStateError {
    /// Throttles and usage-plan rates fall back to local buckets.
    pub const LIMITS_DEFAULT: OnStateError = OnStateError::Local;
    /// Quotas fail closed: a quota that cannot be counted is not granted.
    pub const QUOTAS_DEFAULT: OnStateError = OnStateError::Closed;
    /// The cache is bypassed.
    pub const CACHE_DEFAULT: OnStateError = OnStateError::Open;

    pub fn as_str(self) -> &'static str {
        match self {
            OnStateError::Local => "local",
            OnStateError::Open => "open",
            OnStateError::Closed => "closed",
        }
    }
}

/// Why the shared backend could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state backend is down (waiting to retry)")]
    Down,
    #[error("state backend did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("unexpected reply from the state backend to a {0} operation")]
    BadReply(&'static str),
}

/// A limit or quota could not be checked and the route chose `closed`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("state backend unavailable")]
pub struct Unavailable;

/// Which backend (`[state]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSettings {
    Memory,
    Redis(RedisSettings),
}

/// The shared backend.
#[derive(Debug)]
pub enum Backend {
    /// Only this process: the [`State::memory`] store is the backend.
    Memory,
    /// Redis, with the memory store as local fallback (boxed: it is large and the memory
    /// backend carries nothing).
    Redis(Box<RedisState>),
}

/// The state interface. See the module docs.
#[derive(Debug)]
pub struct State {
    backend: Backend,
    memory: MemoryState,
    stats: Arc<StateStats>,
    degraded: Degraded,
}

/// What a degraded decision was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Limit,
    Quota,
    Cache,
    Kv,
}

impl Use {
    pub const ALL: [Use; 4] = [Use::Limit, Use::Quota, Use::Cache, Use::Kv];

    pub fn as_str(self) -> &'static str {
        match self {
            Use::Limit => "limit",
            Use::Quota => "quota",
            Use::Cache => "cache",
            Use::Kv => "kv",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Degraded decisions so far, by use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DegradedCounts {
    pub limit: u64,
    pub quota: u64,
    pub cache: u64,
    pub kv: u64,
}

impl State {
    /// The backend `settings` asks for; Redis is connected lazily, on first use.
    pub fn new(settings: &StateSettings, cache: CacheBounds) -> Result<State, StateError> {
        let backend = match settings {
            StateSettings::Memory => Backend::Memory,
            StateSettings::Redis(redis) => {
                Backend::Redis(Box::new(RedisState::new(redis.clone())?))
            }
        };
        Ok(State::with_backend(backend, cache))
    }

    /// A memory-only state.
    pub fn memory(cache: CacheBounds) -> State {
        State::with_backend(Backend::Memory, cache)
    }

    fn with_backend(backend: Backend, cache: CacheBounds) -> State {
        let stats = Arc::new(StateStats::default());
        State {
            backend,
            memory: MemoryState::with_stats(cache, stats.clone()),
            stats,
            degraded: Degraded::new(),
        }
    }

    /// The Redis backend, when `[state]` is Redis (the WebSocket API's cross-gateway
    /// delivery uses it directly).
    pub fn redis(&self) -> Option<&RedisState> {
        match &self.backend {
            Backend::Memory => None,
            Backend::Redis(redis) => Some(redis),
        }
    }

    /// `"memory"` or `"redis"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Memory => "memory",
            Backend::Redis(_) => "redis",
        }
    }

    /// Whether the shared backend answered last time (always true for memory).
    pub fn is_healthy(&self) -> bool {
        match &self.backend {
            Backend::Memory => true,
            Backend::Redis(redis) => redis.is_up(),
        }
    }

    /// This process's memory store (the backend itself, or Redis's local fallback).
    pub fn local(&self) -> &MemoryState {
        &self.memory
    }

    /// Degraded decisions so far.
    pub fn degraded(&self) -> DegradedCounts {
        let get = |what| self.stats.fallbacks_of(what);
        DegradedCounts {
            limit: get(Use::Limit),
            quota: get(Use::Quota),
            cache: get(Use::Cache),
            kv: get(Use::Kv),
        }
    }

    /// This state's counters: backend errors, degraded decisions, local cache evictions,
    /// per-route cache lookups (see [`stats`]).
    pub fn stats(&self) -> &Arc<StateStats> {
        &self.stats
    }

    /// Counts a failed operation and the degraded decision taken instead, and logs it
    /// (rate-limited).
    fn degrade(&self, op: Op, what: Use, choice: OnStateError, error: &StateError) {
        self.stats.error(op, error);
        let total = self.stats.fallback(what, choice);
        self.degraded.log(what, choice, error, total);
    }

    /// Takes one token from bucket `key` (see the module docs).
    pub async fn take(
        &self,
        key: &str,
        limit: Limit,
        on_error: OnStateError,
    ) -> Result<Decision, Unavailable> {
        let redis = match &self.backend {
            Backend::Memory => return Ok(self.memory.take(key, limit)),
            Backend::Redis(redis) => redis,
        };
        match redis.take(key, limit).await {
            Ok(decision) => Ok(decision),
            Err(error) => {
                self.degrade(Op::Take, Use::Limit, on_error, &error);
                match on_error {
                    OnStateError::Local => Ok(self.memory.take(key, limit)),
                    OnStateError::Open => Ok(Decision::unlimited(limit.burst)),
                    OnStateError::Closed => Err(Unavailable),
                }
            }
        }
    }

    /// Counts one request against quota `key` in the current window (see the module docs).
    pub async fn quota(
        &self,
        key: &str,
        quota: Quota,
        on_error: OnStateError,
    ) -> Result<Decision, Unavailable> {
        self.quota_at(key, quota, on_error, unix_now()).await
    }

    /// [`Self::quota`] at Unix time `now` (seconds): the window is the one containing
    /// `now`. For callers with their own clock (usage plans, whose tests cross period
    /// boundaries).
    pub async fn quota_at(
        &self,
        key: &str,
        quota: Quota,
        on_error: OnStateError,
        now: u64,
    ) -> Result<Decision, Unavailable> {
        let redis = match &self.backend {
            Backend::Memory => return Ok(self.memory.quota_at(key, quota, now)),
            Backend::Redis(redis) => redis,
        };
        match redis.quota(key, quota, now).await {
            Ok(decision) => Ok(decision),
            Err(error) => {
                self.degrade(Op::Quota, Use::Quota, on_error, &error);
                match on_error {
                    OnStateError::Local => Ok(self.memory.quota_at(key, quota, now)),
                    OnStateError::Open => Ok(Decision::unlimited(quota.limit)),
                    OnStateError::Closed => Err(Unavailable),
                }
            }
        }
    }

    /// A fresh cache entry. With Redis down: `Local` looks in this process's cache, the
    /// others miss.
    pub async fn cache_get(&self, key: &str, on_error: OnStateError) -> Option<Bytes> {
        let redis = match &self.backend {
            Backend::Memory => return self.memory.cache_get(key),
            Backend::Redis(redis) => redis,
        };
        match redis.cache_get(key).await {
            Ok(value) => value,
            Err(error) => {
                self.degrade(Op::CacheGet, Use::Cache, on_error, &error);
                match on_error {
                    OnStateError::Local => self.memory.cache_get(key),
                    OnStateError::Open | OnStateError::Closed => None,
                }
            }
        }
    }

    /// Stores a cache entry for `ttl`; returns whether it was stored. `key` must start
    /// with [`cache_route_prefix`] of `route` (purges by route rely on it).
    pub async fn cache_put(
        &self,
        route: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
        on_error: OnStateError,
    ) -> bool {
        let redis = match &self.backend {
            Backend::Memory => return self.memory.cache_put(route, key, value, ttl),
            Backend::Redis(redis) => redis,
        };
        match redis.cache_put(key, value.clone(), ttl).await {
            Ok(()) => true,
            Err(error) => {
                self.degrade(Op::CachePut, Use::Cache, on_error, &error);
                on_error == OnStateError::Local && self.memory.cache_put(route, key, value, ttl)
            }
        }
    }

    /// Removes every cache entry (`None`) or one route's; returns how many were removed.
    pub async fn cache_purge(&self, route: Option<&str>) -> Result<u64, StateError> {
        let local = self.memory.cache_purge(route);
        match &self.backend {
            Backend::Memory => Ok(local),
            Backend::Redis(redis) => {
                let prefix = route.map(cache_route_prefix).unwrap_or_default();
                let shared = redis
                    .cache_purge(&prefix)
                    .await
                    .inspect_err(|error| self.stats.error(Op::CachePurge, error))?;
                Ok(local + shared)
            }
        }
    }

    /// Plugin key-value data in `namespace` (one per plugin).
    pub async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Bytes>, StateError> {
        match &self.backend {
            Backend::Memory => Ok(self.memory.kv_get(namespace, key)),
            Backend::Redis(redis) => redis.kv_get(namespace, key).await.inspect_err(|error| {
                self.degrade(Op::KvGet, Use::Kv, OnStateError::Closed, error);
            }),
        }
    }

    pub async fn kv_set(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), StateError> {
        match &self.backend {
            Backend::Memory => {
                self.memory.kv_set(namespace, key, value, ttl);
                Ok(())
            }
            Backend::Redis(redis) => redis
                .kv_set(namespace, key, value, ttl)
                .await
                .inspect_err(|error| self.degrade(Op::KvSet, Use::Kv, OnStateError::Closed, error)),
        }
    }

    pub async fn kv_delete(&self, namespace: &str, key: &str) -> Result<(), StateError> {
        match &self.backend {
            Backend::Memory => {
                self.memory.kv_delete(namespace, key);
                Ok(())
            }
            Backend::Redis(redis) => redis.kv_delete(namespace, key).await.inspect_err(|error| {
                self.degrade(Op::KvDelete, Use::Kv, OnStateError::Closed, error);
            }),
        }
    }
}

/// The start of every cache key of `route`: length-prefixed, so that no route's keys
/// start with another route's prefix.
pub fn cache_route_prefix(route: &str) -> String {
    format!("{}:{route}:", route.len())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Logs degraded decisions, at most once per [`DEGRADED_LOG_INTERVAL`] per use (the
/// counting is in [`StateStats`]).
#[derive(Debug)]
struct Degraded {
    base: Instant,
    /// Per use: milliseconds on `base` of the last log line, plus one (0 = never).
    last_log_ms: [AtomicU64; 4],
    /// Per use: the count at the last log line.
    logged_count: [AtomicU64; 4],
}

impl Degraded {
    fn new() -> Degraded {
        Degraded {
            base: Instant::now(),
            last_log_ms: Default::default(),
            logged_count: Default::default(),
        }
    }

    /// Logs the `total`-th degraded decision about `what`, unless one was logged less than
    /// [`DEGRADED_LOG_INTERVAL`] ago.
    fn log(&self, what: Use, choice: OnStateError, error: &StateError, total: u64) {
        let i = what.index();
        let (Some(last), Some(logged)) = (self.last_log_ms.get(i), self.logged_count.get(i)) else {
            return;
        };
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let previous = last.load(Ordering::Relaxed);
        let interval = u64::try_from(DEGRADED_LOG_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if previous != 0 && now < previous.saturating_add(interval) {
            return;
        }
        if last
            .compare_exchange(previous, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let since_last = total.saturating_sub(logged.swap(total, Ordering::AcqRel));
        let decision = match (what, choice) {
            (Use::Cache, OnStateError::Local) => "local cache",
            (Use::Cache, _) => "cache bypassed",
            (Use::Kv, _) => "error returned to the plugin",
            (_, OnStateError::Local) => "local decision",
            (_, OnStateError::Open) => "allowed (fail open)",
            (_, OnStateError::Closed) => "refused (fail closed)",
        };
        tracing::warn!(
            phase = "state",
            r#use = what.as_str(),
            on_state_error = choice.as_str(),
            decision,
            degraded_since_last_log = since_last,
            degraded_total = total,
            error = %error,
            "state backend unavailable: degraded decision"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const BOUNDS: CacheBounds = CacheBounds {
        max_entries: 100,
        max_bytes: 1 << 20,
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_tasks_never_over_admit() {
        let state = Arc::new(State::memory(BOUNDS));
        // A slow refill (one token per 1000 s) so that the run cannot earn a token.
        let limit = Limit {
            rate: 0.001,
            burst: 50,
        };
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let state = state.clone();
            tasks.push(tokio::spawn(async move {
                let mut admitted = 0u32;
                for _ in 0..200 {
                    if state
                        .take("race", limit, OnStateError::LIMITS_DEFAULT)
                        .await
                        .is_ok_and(|d| d.allowed)
                    {
                        admitted += 1;
                    }
                    tokio::task::yield_now().await;
                }
                admitted
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await.expect("task");
        }
        assert_eq!(
            total, 50,
            "exactly the burst is admitted across 3200 racing takes"
        );
    }

    #[test]
    fn racing_threads_never_over_admit() {
        let state = Arc::new(MemoryState::new(BOUNDS));
        let limit = Limit {
            rate: 1.0,
            burst: 100,
        };
        let now = state.now_ns();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let state = state.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| state.take_at("k", limit, now).allowed)
                        .count()
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(total, 100);
    }

    #[tokio::test]
    async fn memory_quota_and_cache_through_the_interface() {
        let state = State::memory(BOUNDS);
        let quota = Quota {
            limit: 1,
            period: Period::Month,
        };
        assert!(
            state
                .quota("q", quota, OnStateError::QUOTAS_DEFAULT)
                .await
                .is_ok_and(|d| d.allowed)
        );
        assert!(
            state
                .quota("q", quota, OnStateError::QUOTAS_DEFAULT)
                .await
                .is_ok_and(|d| !d.allowed)
        );
        let key = format!("{}GET /a", cache_route_prefix("r"));
        state
            .cache_put(
                "r",
                &key,
                Bytes::from_static(b"x"),
                Duration::from_secs(5),
                OnStateError::CACHE_DEFAULT,
            )
            .await;
        assert!(
            state
                .cache_get(&key, OnStateError::CACHE_DEFAULT)
                .await
                .is_some()
        );
        assert_eq!(state.cache_purge(Some("other")).await.expect("purge"), 0);
        assert_eq!(state.cache_purge(Some("r")).await.expect("purge"), 1);
        assert!(
            state
                .cache_get(&key, OnStateError::CACHE_DEFAULT)
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn unreachable_redis_follows_the_route_choice() {
        let settings = StateSettings::Redis(RedisSettings {
            // Port 1: nothing listens there.
            url: "redis://127.0.0.1:1".to_owned(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(50),
            retry_interval: Duration::from_secs(60),
            prefix: "weir:".to_owned(),
        });
        let state = State::new(&settings, BOUNDS).expect("state");
        let limit = Limit {
            rate: 1.0,
            burst: 1,
        };
        let local = state
            .take("k", limit, OnStateError::Local)
            .await
            .expect("local");
        assert!(local.allowed);
        assert!(
            !state
                .take("k", limit, OnStateError::Local)
                .await
                .expect("local")
                .allowed
        );
        assert!(
            state
                .take("k", limit, OnStateError::Open)
                .await
                .expect("open")
                .allowed
        );
        assert!(state.take("k", limit, OnStateError::Closed).await.is_err());
        let quota = Quota {
            limit: 5,
            period: Period::Day,
        };
        assert!(
            state
                .quota("k", quota, OnStateError::QUOTAS_DEFAULT)
                .await
                .is_err()
        );
        assert!(
            state
                .cache_get("k", OnStateError::CACHE_DEFAULT)
                .await
                .is_none()
        );
        assert!(!state.is_healthy());
        let degraded = state.degraded();
        assert_eq!(degraded.limit, 4);
        assert_eq!(degraded.quota, 1);
        assert_eq!(degraded.cache, 1);
    }
}
