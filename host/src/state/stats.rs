//! What the state backend and the response cache count: backend errors by operation and
//! kind, degraded (fallback) decisions by use and `on_state_error` choice, evictions from
//! the local cache, and per-route cache lookups and stores.
//!
//! Plain atomics owned by [`State`](super::State) (so they live exactly as long as the
//! state they describe, across reloads that keep it) and read by
//! [`Metrics::scrape`](crate::metrics::Metrics::scrape), which folds them into the
//! process-wide Prometheus counters. Counting is a relaxed `fetch_add`; the one lookup on
//! the request path is [`StateStats::cache_route`], a read of an immutable map (no lock)
//! that replaces the per-request allocation of the route name the cache needed anyway.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use super::{OnStateError, StateError, Use};

/// A backend operation, for the `op` label of `weir_state_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Take,
    Quota,
    CacheGet,
    CachePut,
    CachePurge,
    KvGet,
    KvSet,
    KvDelete,
}

impl Op {
    pub const ALL: [Op; 8] = [
        Op::Take,
        Op::Quota,
        Op::CacheGet,
        Op::CachePut,
        Op::CachePurge,
        Op::KvGet,
        Op::KvSet,
        Op::KvDelete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Take => "take",
            Op::Quota => "quota",
            Op::CacheGet => "cache_get",
            Op::CachePut => "cache_put",
            Op::CachePurge => "cache_purge",
            Op::KvGet => "kv_get",
            Op::KvSet => "kv_set",
            Op::KvDelete => "kv_delete",
        }
    }
}

/// Why an operation failed, for the `kind` label of `weir_state_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not tried: the backend is considered down until `retry_interval` has passed.
    Down,
    /// No answer within the deadline.
    Timeout,
    /// Connecting failed, or the connection broke.
    Connection,
    /// The server answered, with an error or something unexpected.
    Reply,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 4] = [
        ErrorKind::Down,
        ErrorKind::Timeout,
        ErrorKind::Connection,
        ErrorKind::Reply,
    ];

    pub fn of(error: &StateError) -> ErrorKind {
        match error {
            StateError::Down => ErrorKind::Down,
            StateError::Timeout(_) => ErrorKind::Timeout,
            StateError::Redis(e) if e.is_timeout() => ErrorKind::Timeout,
            StateError::Redis(e)
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_unrecoverable_error() =>
            {
                ErrorKind::Connection
            }
            StateError::Redis(_) | StateError::BadReply(_) => ErrorKind::Reply,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Down => "down",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connection => "connection",
            ErrorKind::Reply => "reply",
        }
    }
}

/// Why an entry left the local cache, for the `reason` label of
/// `weir_cache_local_evictions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Pushed out by a newer entry (entry or byte bound), still fresh.
    Lru,
    /// Found expired (by a lookup, or when pushed out).
    Expired,
}

impl Eviction {
    pub const ALL: [Eviction; 2] = [Eviction::Lru, Eviction::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            Eviction::Lru => "lru",
            Eviction::Expired => "expired",
        }
    }
}

const CHOICES: [OnStateError; 3] = [
    OnStateError::Local,
    OnStateError::Open,
    OnStateError::Closed,
];

fn choice_index(choice: OnStateError) -> usize {
    match choice {
        OnStateError::Local => 0,
        OnStateError::Open => 1,
        OnStateError::Closed => 2,
    }
}

/// The counters of one [`State`](super::State).
#[derive(Debug, Default)]
pub struct StateStats {
    /// Per [`Op`], per [`ErrorKind`].
    errors: [[AtomicU64; 4]; 8],
    /// Per [`Use`], per [`OnStateError`] (local, open, closed).
    fallbacks: [[AtomicU64; 3]; 4],
    /// Per [`Eviction`].
    evictions: [AtomicU64; 2],
    /// Per route name; only ever grows (route names come from the config).
    routes: ArcSwap<HashMap<Box<str>, Arc<CacheCounters>>>,
}

/// One route's cache counters.
#[derive(Debug)]
pub struct CacheCounters {
    route: Arc<str>,
    hits: AtomicU64,
    misses: AtomicU64,
    stores: AtomicU64,
}

impl CacheCounters {
    pub fn new(route: &str) -> CacheCounters {
        CacheCounters {
            route: route.into(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stores: AtomicU64::new(0),
        }
    }

    /// The route's name.
    pub fn route(&self) -> &Arc<str> {
        &self.route
    }

    /// A lookup answered from the cache (`x-cache: hit`).
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// A lookup that goes to the integration (`x-cache: miss`).
    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// A response written to the cache.
    pub fn stored(&self) {
        self.stores.fetch_add(1, Ordering::Relaxed);
    }

    fn counts(&self) -> CacheCounts {
        CacheCounts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stores: self.stores.load(Ordering::Relaxed),
        }
    }
}

/// A route's cache counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    pub hits: u64,
    pub misses: u64,
    pub stores: u64,
}

/// Every counter of a [`StateStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    errors: [[u64; 4]; 8],
    fallbacks: [[u64; 3]; 4],
    evictions: [u64; 2],
    routes: HashMap<Arc<str>, CacheCounts>,
}

fn load<const N: usize>(counters: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| counters.get(i).map_or(0, |c| c.load(Ordering::Relaxed)))
}

fn bump<const N: usize>(counters: &[AtomicU64; N], index: usize) -> u64 {
    counters
        .get(index)
        .map_or(0, |c| c.fetch_add(1, Ordering::Relaxed) + 1)
}

impl StateStats {
    /// Counts a failed backend operation.
    pub fn error(&self, op: Op, error: &StateError) {
        let kind = ErrorKind::of(error);
        let (op, kind) = (op as usize, kind as usize);
        if let Some(row) = self.errors.get(op) {
            bump(row, kind);
        }
    }

    /// Counts a degraded decision; returns how many `what` decisions there were so far.
    pub fn fallback(&self, what: Use, choice: OnStateError) -> u64 {
        let Some(row) = self.fallbacks.get(what.index()) else {
            return 0;
        };
        bump(row, choice_index(choice));
        load(row).iter().sum()
    }

    /// Degraded decisions about `what` so far, whatever the choice.
    pub fn fallbacks_of(&self, what: Use) -> u64 {
        self.fallbacks
            .get(what.index())
            .map_or(0, |row| load(row).iter().sum())
    }

    /// Counts an entry leaving the local cache.
    pub fn evicted(&self, why: Eviction) {
        bump(&self.evictions, why as usize);
    }

    /// The cache counters of `route`, created on its first lookup.
    pub fn cache_route(&self, route: &str) -> Arc<CacheCounters> {
        if let Some(counters) = self.routes.load().get(route) {
            return counters.clone();
        }
        self.routes.rcu(|routes| {
            let mut routes = HashMap::clone(routes);
            routes
                .entry(route.into())
                .or_insert_with(|| Arc::new(CacheCounters::new(route)));
            routes
        });
        self.routes
            .load()
            .get(route)
            .cloned()
            .unwrap_or_else(|| Arc::new(CacheCounters::new(route)))
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            errors: std::array::from_fn(|op| self.errors.get(op).map_or([0; 4], load)),
            fallbacks: std::array::from_fn(|u| self.fallbacks.get(u).map_or([0; 3], load)),
            evictions: load(&self.evictions),
            routes: self
                .routes
                .load()
                .values()
                .map(|c| (c.route.clone(), c.counts()))
                .collect(),
        }
    }
}

impl StatsSnapshot {
    /// Failed operations: (op, kind, count).
    pub fn errors(&self) -> impl Iterator<Item = (Op, ErrorKind, u64)> + '_ {
        Op::ALL.into_iter().flat_map(move |op| {
            ErrorKind::ALL.into_iter().map(move |kind| {
                let count = self
                    .errors
                    .get(op as usize)
                    .and_then(|row| row.get(kind as usize));
                (op, kind, count.copied().unwrap_or(0))
            })
        })
    }

    /// Degraded decisions: (use, choice, count).
    pub fn fallbacks(&self) -> impl Iterator<Item = (Use, OnStateError, u64)> + '_ {
        Use::ALL.into_iter().flat_map(move |what| {
            CHOICES.into_iter().map(move |choice| {
                let count = self
                    .fallbacks
                    .get(what.index())
                    .and_then(|row| row.get(choice_index(choice)));
                (what, choice, count.copied().unwrap_or(0))
            })
        })
    }

    /// Local cache evictions: (reason, count).
    pub fn evictions(&self) -> impl Iterator<Item = (Eviction, u64)> + '_ {
        Eviction::ALL
            .into_iter()
            .map(|why| (why, self.evictions.get(why as usize).copied().unwrap_or(0)))
    }

    /// Per-route cache counters.
    pub fn routes(&self) -> impl Iterator<Item = (&Arc<str>, CacheCounts)> + '_ {
        self.routes.iter().map(|(route, counts)| (route, *counts))
    }

    /// One route's cache counters (zero when it had no lookup).
    pub fn route(&self, route: &str) -> CacheCounts {
        self.routes.get(route).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_land_in_their_cells() {
        let stats = StateStats::default();
        stats.error(Op::CachePut, &StateError::Down);
        stats.error(Op::CachePut, &StateError::BadReply("bucket"));
        assert_eq!(stats.fallback(Use::Quota, OnStateError::Closed), 1);
        assert_eq!(stats.fallback(Use::Quota, OnStateError::Local), 2);
        stats.evicted(Eviction::Expired);
        let route = stats.cache_route("r");
        route.hit();
        route.miss();
        route.miss();
        assert!(Arc::ptr_eq(&route, &stats.cache_route("r")));
        let snapshot = stats.snapshot();
        let errors: Vec<_> = snapshot.errors().filter(|e| e.2 > 0).collect();
        assert_eq!(
            errors,
            [
                (Op::CachePut, ErrorKind::Down, 1),
                (Op::CachePut, ErrorKind::Reply, 1)
            ]
        );
        let fallbacks: Vec<_> = snapshot.fallbacks().filter(|f| f.2 > 0).collect();
        assert_eq!(
            fallbacks,
            [
                (Use::Quota, OnStateError::Local, 1),
                (Use::Quota, OnStateError::Closed, 1)
            ]
        );
        assert_eq!(stats.fallbacks_of(Use::Quota), 2);
        assert_eq!(
            snapshot.evictions().collect::<Vec<_>>(),
            [(Eviction::Lru, 0), (Eviction::Expired, 1)]
        );
        assert_eq!(
            snapshot.route("r"),
            CacheCounts {
                hits: 1,
                misses: 2,
                stores: 0
            }
        );
    }
}
