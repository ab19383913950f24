//! The `memory` state backend: token buckets, quota counters, cache entries and plugin
//! key-value data in this process. Also the local fallback of the `redis` backend.
//!
//! Buckets and quotas live in sharded maps (one short `Mutex` section per operation, so
//! racing tasks never over-admit); cache entries in one LRU bounded by entries and bytes.
//! Time comes in as a parameter everywhere below the public convenience methods.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;

use super::bucket::{self, Decision, Limit};
use super::stats::{Eviction, StateStats};
use super::window::{self, Period};

/// Number of independently locked shards for buckets and quota counters.
const SHARDS: usize = 16;
/// Buckets kept per shard before full ones are swept (a full bucket is the same as none).
pub const MAX_BUCKETS_PER_SHARD: usize = 65_536;
/// Quota counters kept per shard before those of past windows are swept.
pub const MAX_QUOTAS_PER_SHARD: usize = 65_536;
/// Plugin key-value entries kept before expired ones are swept.
pub const MAX_KV_ENTRIES: usize = 100_000;

/// Bounds of the in-memory response cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheBounds {
    /// The most entries kept.
    pub max_entries: usize,
    /// The most bytes kept (keys and values).
    pub max_bytes: u64,
}

/// A quota check's inputs: at most `limit` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub period: Period,
}

/// The in-process backend.
#[derive(Debug)]
pub struct MemoryState {
    /// The zero of the bucket clock (nanoseconds since this instant).
    base: Instant,
    hasher: RandomState,
    buckets: Vec<Mutex<HashMap<Box<str>, u64>>>,
    quotas: Vec<Mutex<HashMap<Box<str>, QuotaCount>>>,
    cache: Mutex<MemoryCache>,
    kv: Mutex<HashMap<KvKey, KvValue>>,
}

/// (namespace, key) of a plugin key-value entry.
type KvKey = (Box<str>, Box<str>);

#[derive(Debug, Clone, Copy)]
struct QuotaCount {
    window_start: u64,
    window_end: u64,
    count: u64,
}

#[derive(Debug)]
struct KvValue {
    value: Bytes,
    expires: Option<Instant>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (every update is a
    // single assignment), so a poisoned lock is simply taken over.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryState {
    pub fn new(cache: CacheBounds) -> MemoryState {
        MemoryState::with_stats(cache, Arc::default())
    }

    /// A memory state that counts cache evictions into `stats`.
    pub fn with_stats(cache: CacheBounds, stats: Arc<StateStats>) -> MemoryState {
        MemoryState {
            base: Instant::now(),
            hasher: RandomState::new(),
            buckets: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            quotas: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            cache: Mutex::new(MemoryCache::new(cache, stats)),
            kv: Mutex::new(HashMap::new()),
        }
    }

    /// Nanoseconds on the bucket clock.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn shard(&self, key: &str) -> usize {
        // The modulo keeps the value below SHARDS, so the cast cannot truncate.
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    /// Takes a token from bucket `key` now.
    pub fn take(&self, key: &str, limit: Limit) -> Decision {
        self.take_at(key, limit, self.now_ns())
    }

    /// Takes a token from bucket `key` at `now` (nanoseconds on this state's bucket clock,
    /// see [`now_ns`](Self::now_ns)).
    pub fn take_at(&self, key: &str, limit: Limit, now: u64) -> Decision {
        let Some(shard) = self.buckets.get(self.shard(key)) else {
            return Decision::unlimited(limit.burst);
        };
        let mut buckets = lock(shard);
        if let Some(tat) = buckets.get_mut(key) {
            return bucket::take(tat, limit, now);
        }
        let mut tat = 0;
        let decision = bucket::take(&mut tat, limit, now);
        if buckets.len() >= MAX_BUCKETS_PER_SHARD {
            buckets.retain(|_, tat| !bucket::is_full(*tat, now));
        }
        if buckets.len() < MAX_BUCKETS_PER_SHARD {
            buckets.insert(key.into(), tat);
        }
        decision
    }

    /// Counts one request against quota `key` at `now_unix` (seconds). A refused request
    /// is not counted.
    pub fn quota_at(&self, key: &str, quota: Quota, now_unix: u64) -> Decision {
        let window = window::window(quota.period, now_unix);
        let Some(shard) = self.quotas.get(self.shard(key)) else {
            return Decision::unlimited(quota.limit);
        };
        let mut quotas = lock(shard);
        if !quotas.contains_key(key) && quotas.len() >= MAX_QUOTAS_PER_SHARD {
            quotas.retain(|_, count| count.window_end > now_unix);
        }
        let fresh = QuotaCount {
            window_start: window.start,
            window_end: window.end,
            count: 0,
        };
        let count = quotas.entry(key.into()).or_insert(fresh);
        if count.window_start != window.start {
            *count = fresh;
        }
        let allowed = count.count < quota.limit;
        if allowed {
            count.count += 1;
        }
        quota_decision(
            allowed,
            quota.limit,
            count.count,
            window.remaining(now_unix),
        )
    }

    /// A cached value, if present and fresh.
    pub fn cache_get(&self, key: &str) -> Option<Bytes> {
        lock(&self.cache).get(key, Instant::now())
    }

    /// Stores a cache value for `ttl`, tagged with `route` for purges; returns whether it
    /// was stored (not when larger than the whole cache).
    pub fn cache_put(&self, route: &str, key: &str, value: Bytes, ttl: Duration) -> bool {
        let now = Instant::now();
        lock(&self.cache).put(route, key, value, now + ttl, now)
    }

    /// Removes every entry (`None`) or those of one route; returns how many.
    pub fn cache_purge(&self, route: Option<&str>) -> u64 {
        lock(&self.cache).purge(route)
    }

    /// (entries, bytes) held by the cache.
    pub fn cache_usage(&self) -> (usize, u64) {
        let cache = lock(&self.cache);
        (cache.entries.len(), cache.bytes)
    }

    pub fn kv_get(&self, namespace: &str, key: &str) -> Option<Bytes> {
        let kv = lock(&self.kv);
        let value = kv.get(&(namespace.into(), key.into()))?;
        match value.expires {
            Some(expires) if expires <= Instant::now() => None,
            _ => Some(value.value.clone()),
        }
    }

    pub fn kv_set(&self, namespace: &str, key: &str, value: Bytes, ttl: Option<Duration>) {
        let now = Instant::now();
        let mut kv = lock(&self.kv);
        if kv.len() >= MAX_KV_ENTRIES {
            kv.retain(|_, v| v.expires.is_none_or(|e| e > now));
        }
        kv.insert(
            (namespace.into(), key.into()),
            KvValue {
                value,
                expires: ttl.map(|ttl| now + ttl),
            },
        );
    }

    pub fn kv_delete(&self, namespace: &str, key: &str) {
        lock(&self.kv).remove(&(namespace.into(), key.into()));
    }
}

/// A quota decision: `count` requests used of `limit`, the window ends in `reset`.
pub(super) fn quota_decision(allowed: bool, limit: u64, count: u64, reset: Duration) -> Decision {
    Decision {
        allowed,
        limit,
        remaining: limit.saturating_sub(count),
        retry_after: if allowed { Duration::ZERO } else { reset },
        reset,
    }
}

/// The LRU of cache entries, bounded by count and bytes.
#[derive(Debug)]
struct MemoryCache {
    entries: LruCache<Box<str>, CacheSlot>,
    bytes: u64,
    bounds: CacheBounds,
    /// Where evictions are counted.
    stats: Arc<StateStats>,
}

#[derive(Debug)]
struct CacheSlot {
    route: Arc<str>,
    value: Bytes,
    expires: Instant,
}

fn slot_size(key: &str, value: &Bytes) -> u64 {
    (key.len() + value.len()) as u64
}

impl MemoryCache {
    fn new(bounds: CacheBounds, stats: Arc<StateStats>) -> MemoryCache {
        MemoryCache {
            entries: LruCache::unbounded(),
            bytes: 0,
            bounds,
            stats,
        }
    }

    fn get(&mut self, key: &str, now: Instant) -> Option<Bytes> {
        let slot = self.entries.get(key)?;
        if slot.expires > now {
            return Some(slot.value.clone());
        }
        if let Some(slot) = self.entries.pop(key) {
            self.bytes -= slot_size(key, &slot.value);
            self.stats.evicted(Eviction::Expired);
        }
        None
    }

    /// Stores `value` under `key` (replacing any entry), pushing out least recently used
    /// entries until it fits; `false` when it can never fit.
    fn put(
        &mut self,
        route: &str,
        key: &str,
        value: Bytes,
        expires: Instant,
        now: Instant,
    ) -> bool {
        let size = slot_size(key, &value);
        if size > self.bounds.max_bytes || self.bounds.max_entries == 0 {
            return false;
        }
        if let Some(old) = self.entries.pop(key) {
            self.bytes -= slot_size(key, &old.value);
        }
        while self.entries.len() >= self.bounds.max_entries
            || self.bytes + size > self.bounds.max_bytes
        {
            let Some((old_key, old)) = self.entries.pop_lru() else {
                break;
            };
            self.bytes -= slot_size(&old_key, &old.value);
            self.stats.evicted(if old.expires > now {
                Eviction::Lru
            } else {
                Eviction::Expired
            });
        }
        self.bytes += size;
        self.entries.put(
            key.into(),
            CacheSlot {
                route: route.into(),
                value,
                expires,
            },
        );
        true
    }

    fn purge(&mut self, route: Option<&str>) -> u64 {
        let Some(route) = route else {
            let count = self.entries.len() as u64;
            self.entries.clear();
            self.bytes = 0;
            return count;
        };
        let doomed: Vec<Box<str>> = self
            .entries
            .iter()
            .filter(|(_, slot)| &*slot.route == route)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &doomed {
            if let Some(slot) = self.entries.pop(key) {
                self.bytes -= slot_size(key, &slot.value);
            }
        }
        doomed.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: CacheBounds = CacheBounds {
        max_entries: 3,
        max_bytes: 100,
    };

    #[test]
    fn buckets_are_per_key() {
        let state = MemoryState::new(BOUNDS);
        let limit = Limit {
            rate: 1.0,
            burst: 1,
        };
        assert!(state.take_at("a", limit, 10).allowed);
        assert!(!state.take_at("a", limit, 10).allowed);
        assert!(state.take_at("b", limit, 10).allowed);
        assert!(state.take_at("a", limit, 10 + 1_000_000_000).allowed);
    }

    #[test]
    fn quotas_count_per_window_and_not_refusals() {
        let state = MemoryState::new(BOUNDS);
        let quota = Quota {
            limit: 2,
            period: Period::Day,
        };
        let day = 86_400 * 20_000;
        let first = state.quota_at("k", quota, day + 5);
        assert!(first.allowed);
        assert_eq!(first.remaining, 1);
        assert_eq!(first.reset, Duration::from_secs(86_400 - 5));
        assert!(state.quota_at("k", quota, day + 6).allowed);
        let refused = state.quota_at("k", quota, day + 7);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, Duration::from_secs(86_400 - 7));
        // The next day starts afresh.
        let next = state.quota_at("k", quota, day + 86_400);
        assert!(next.allowed);
        assert_eq!(next.remaining, 1);
    }

    fn evictions(stats: &StateStats) -> Vec<(Eviction, u64)> {
        stats.snapshot().evictions().collect()
    }

    #[test]
    fn cache_is_bounded_by_entries_and_bytes() {
        let stats = Arc::new(StateStats::default());
        let mut cache = MemoryCache::new(BOUNDS, stats.clone());
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        for key in ["a", "b", "c", "d"] {
            assert!(cache.put("r", key, Bytes::from_static(b"0123456789"), later, now));
        }
        assert_eq!(
            evictions(&stats),
            [(Eviction::Lru, 1), (Eviction::Expired, 0)]
        );
        assert_eq!(cache.entries.len(), 3);
        assert!(
            cache.get("a", Instant::now()).is_none(),
            "least recently used went"
        );
        // 11 + 11 + 60 bytes: one big entry pushes out the older ones until it fits.
        assert!(cache.put("r", "e", Bytes::from(vec![b'x'; 89]), later, now));
        assert!(cache.bytes <= BOUNDS.max_bytes);
        assert_eq!(cache.entries.len(), 1);
        assert_eq!(
            evictions(&stats),
            [(Eviction::Lru, 4), (Eviction::Expired, 0)]
        );
        // Larger than the whole cache: not stored at all.
        assert!(!cache.put("r", "f", Bytes::from(vec![b'x'; 200]), later, now));
        assert!(cache.get("f", Instant::now()).is_none());
        assert!(cache.get("e", Instant::now()).is_some());
    }

    #[test]
    fn cache_entries_expire_and_purge_by_route() {
        let stats = Arc::new(StateStats::default());
        let mut cache = MemoryCache::new(BOUNDS, stats.clone());
        let now = Instant::now();
        let put = |cache: &mut MemoryCache, route: &str, key: &str, ttl: u64| {
            let value = Bytes::from_static(b"1");
            cache.put(route, key, value, now + Duration::from_secs(ttl), now)
        };
        put(&mut cache, "r1", "a", 1);
        put(&mut cache, "r2", "b", 10);
        put(&mut cache, "r2", "c", 10);
        assert!(cache.get("a", now).is_some());
        assert!(cache.get("a", now + Duration::from_secs(2)).is_none());
        assert_eq!(cache.purge(Some("r2")), 2);
        assert_eq!(cache.entries.len(), 0);
        assert_eq!(cache.bytes, 0);
        // An expired entry pushed out by a newer one counts as expired, not as LRU.
        put(&mut cache, "r1", "d", 1);
        put(&mut cache, "r1", "e", 10);
        put(&mut cache, "r1", "f", 10);
        let later = now + Duration::from_secs(2);
        cache.put("r1", "g", Bytes::from_static(b"1"), later, later);
        assert_eq!(
            evictions(&stats),
            [(Eviction::Lru, 0), (Eviction::Expired, 2)],
            "purges are not evictions"
        );
    }

    #[test]
    fn kv_round_trip() {
        let state = MemoryState::new(BOUNDS);
        state.kv_set("p", "k", Bytes::from_static(b"v"), None);
        assert_eq!(state.kv_get("p", "k"), Some(Bytes::from_static(b"v")));
        assert_eq!(state.kv_get("q", "k"), None);
        state.kv_delete("p", "k");
        assert_eq!(state.kv_get("p", "k"), None);
    }
}
