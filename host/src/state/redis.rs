//! The `redis` state backend: token buckets as a Lua script run by Redis (atomic, on
//! Redis's clock, so every gateway sees one bucket), quota counters with expiry, cache
//! entries with a TTL, plugin key-value data.
//!
//! Every command has a short deadline. After a failure the backend is considered down for
//! `retry_interval`: calls fail at once (no waiting on a dead server), then one call probes
//! it; the first success brings the backend back. Recovery needs nothing from anyone.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::StateError;
use super::bucket::{Decision, Limit};
use super::memory::{Quota, quota_decision};
use super::window;

/// Extra life of a quota counter after its window, so that gateways whose clocks differ
/// slightly still find it.
const QUOTA_EXPIRY_SLACK_SECS: u64 = 3_600;
/// Keys deleted per `UNLINK` when purging.
const PURGE_BATCH: usize = 500;
/// `COUNT` hint for `SCAN` when purging.
const SCAN_COUNT: usize = 1_000;
/// Reconnect attempts the connection manager makes per failure (the backend's own
/// retry interval does the rest).
const RECONNECT_RETRIES: usize = 1;

/// Token bucket, GCRA form, on Redis's clock in microseconds (see `bucket.rs`).
/// KEYS[1] bucket; ARGV[1] interval µs (integer ≥ 1); ARGV[2] burst.
/// Returns {allowed, remaining, retry_after µs, reset µs}.
static BUCKET_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tolerance = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local ahead = new_tat - now
if ahead > tolerance then
  return {0, 0, ahead - tolerance, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(ahead / 1000) + 1)
return {1, math.floor((tolerance - ahead) / interval), 0, ahead}
",
    )
});

/// Fixed-window quota counter. KEYS[1] counter; ARGV[1] limit; ARGV[2] expiry (Unix s).
/// Returns {allowed, count}. A refused request is not counted.
static QUOTA_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local limit = tonumber(ARGV[1])
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= limit then return {0, count} end
count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIREAT', KEYS[1], ARGV[2]) end
return {1, count}
",
    )
});

/// How to reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:pass@]host:port[/db]`.
    pub url: String,
    /// Deadline of one command.
    pub timeout: Duration,
    /// Deadline of connecting.
    pub connect_timeout: Duration,
    /// How long Redis is left alone after a failure before one call probes it again.
    pub retry_interval: Duration,
    /// Prefix of every key weir writes.
    pub prefix: String,
}

/// The Redis backend. Connects lazily, on first use.
pub struct RedisState {
    client: redis::Client,
    settings: RedisSettings,
    connection: OnceCell<ConnectionManager>,
    health: Health,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RedisState {
    /// Checks the URL; nothing is connected yet.
    pub fn new(settings: RedisSettings) -> Result<RedisState, StateError> {
        let client = redis::Client::open(settings.url.as_str())?;
        Ok(RedisState {
            client,
            settings,
            connection: OnceCell::new(),
            health: Health::new(),
        })
    }

    /// Whether the last call reached Redis (false while it is considered down).
    pub fn is_up(&self) -> bool {
        !self.health.down.load(Ordering::Relaxed)
    }

    fn key(&self, kind: &str, key: &str) -> String {
        let prefix = &self.settings.prefix;
        let mut full = String::with_capacity(prefix.len() + kind.len() + key.len() + 1);
        full.push_str(prefix);
        full.push_str(kind);
        full.push(':');
        full.push_str(key);
        full
    }

    /// Runs one operation with the deadline and the up/down bookkeeping.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StateError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.health.admit(self.settings.retry_interval) {
            return Err(StateError::Down);
        }
        let deadline = self.settings.timeout + self.settings.connect_timeout;
        let result = tokio::time::timeout(deadline, async {
            let connection = self
                .connection
                .get_or_try_init(|| async {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.settings.connect_timeout))
                        .set_response_timeout(Some(self.settings.timeout))
                        .set_number_of_retries(RECONNECT_RETRIES)
                        .set_max_delay(self.settings.retry_interval);
                    ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                })
                .await?
                .clone();
            op(connection).await
        })
        .await;
        match result {
            Ok(Ok(value)) => {
                self.health.succeeded(&self.settings.url);
                Ok(value)
            }
            Ok(Err(error)) => {
                // A script or type error is Redis answering: the server is there.
                if error.is_io_error()
                    || error.is_timeout()
                    || error.is_connection_dropped()
                    || error.is_unrecoverable_error()
                {
                    self.health
                        .failed(self.settings.retry_interval, &self.settings.url);
                }
                Err(StateError::Redis(error))
            }
            Err(_) => {
                self.health
                    .failed(self.settings.retry_interval, &self.settings.url);
                Err(StateError::Timeout(deadline))
            }
        }
    }

    pub async fn take(&self, key: &str, limit: Limit) -> Result<Decision, StateError> {
        let redis_key = self.key("bucket", key);
        let interval_us = (limit.interval_ns() / 1_000).max(1);
        let burst = limit.burst.max(1);
        let reply: Vec<i64> = self
            .run(|mut connection| async move {
                BUCKET_SCRIPT
                    .key(redis_key)
                    .arg(interval_us)
                    .arg(burst)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        let [allowed, remaining, retry_after, reset] = reply[..] else {
            return Err(StateError::BadReply("bucket"));
        };
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(Decision {
            allowed: allowed == 1,
            limit: burst,
            remaining: u64::try_from(remaining).unwrap_or(0),
            retry_after: micros(retry_after),
            reset: micros(reset),
        })
    }

    pub async fn quota(
        &self,
        key: &str,
        quota: Quota,
        now_unix: u64,
    ) -> Result<Decision, StateError> {
        let window = window::window(quota.period, now_unix);
        let redis_key = self.key("quota", &format!("{key}:{}", window.start));
        let expire_at = window.end + QUOTA_EXPIRY_SLACK_SECS;
        let limit = quota.limit;
        let reply: Vec<i64> = self
            .run(|mut connection| async move {
                QUOTA_SCRIPT
                    .key(redis_key)
                    .arg(limit)
                    .arg(expire_at)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        let [allowed, count] = reply[..] else {
            return Err(StateError::BadReply("quota"));
        };
        Ok(quota_decision(
            allowed == 1,
            limit,
            u64::try_from(count).unwrap_or(0),
            window.remaining(now_unix),
        ))
    }

    pub async fn cache_get(&self, key: &str) -> Result<Option<Bytes>, StateError> {
        self.get_bytes(self.key("cache", key)).await
    }

    pub async fn cache_put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(), StateError> {
        self.set_bytes(self.key("cache", key), value, Some(ttl))
            .await
    }

    /// Deletes every cache key starting with `key_prefix` (all when empty).
    pub async fn cache_purge(&self, key_prefix: &str) -> Result<u64, StateError> {
        let pattern = format!("{}*", glob_escape(&self.key("cache", key_prefix)));
        self.run(|mut connection| async move {
            let mut cursor: u64 = 0;
            let mut deleted: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query_async(&mut connection)
                    .await?;
                for batch in keys.chunks(PURGE_BATCH) {
                    let removed: u64 = redis::cmd("UNLINK")
                        .arg(batch)
                        .query_async(&mut connection)
                        .await?;
                    deleted += removed;
                }
                if next == 0 {
                    return Ok(deleted);
                }
                cursor = next;
            }
        })
        .await
    }

    pub async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Bytes>, StateError> {
        self.get_bytes(self.kv_key(namespace, key)).await
    }

    pub async fn kv_set(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), StateError> {
        self.set_bytes(self.kv_key(namespace, key), value, ttl)
            .await
    }

    pub async fn kv_delete(&self, namespace: &str, key: &str) -> Result<(), StateError> {
        let redis_key = self.kv_key(namespace, key);
        self.run(|mut connection| async move {
            redis::cmd("DEL")
                .arg(redis_key)
                .query_async::<()>(&mut connection)
                .await
        })
        .await
    }

    /// A plugin's KV key: the namespace is length-prefixed, so no choice of namespace and
    /// key can collide with another plugin's.
    fn kv_key(&self, namespace: &str, key: &str) -> String {
        self.key("kv", &format!("{}:{namespace}:{key}", namespace.len()))
    }

    /// `GET` of a binary value (cache entries and plugin KV alike).
    async fn get_bytes(&self, redis_key: String) -> Result<Option<Bytes>, StateError> {
        let value: Option<Vec<u8>> = self
            .run(|mut connection| async move {
                redis::cmd("GET")
                    .arg(redis_key)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(value.map(Bytes::from))
    }

    /// `SET` of a binary value, expiring after `ttl` (at least 1 ms) when given.
    async fn set_bytes(
        &self,
        redis_key: String,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), StateError> {
        self.run(|mut connection| async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(redis_key).arg(value.as_ref());
            if let Some(ttl) = ttl {
                cmd.arg("PX")
                    .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
            }
            cmd.query_async::<()>(&mut connection).await
        })
        .await
    }
}

/// The WebSocket API's cross-gateway plumbing (see `crate::websocket::api::registry`):
/// a key per open connection naming the `weir` process that holds it, and a pub/sub
/// channel per process for what others want done to its connections.
impl RedisState {
    fn connection_key(&self, id: &str) -> String {
        self.key("ws:conn", id)
    }

    fn instance_channel(&self, instance: &str) -> String {
        self.key("ws:instance", instance)
    }

    /// Records (or refreshes) that connection `id` is open, described by `value`, for `ttl`.
    pub async fn connection_set(
        &self,
        id: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(), StateError> {
        self.set_bytes(self.connection_key(id), value, Some(ttl))
            .await
    }

    /// The description of connection `id`, if some process holds it.
    pub async fn connection_get(&self, id: &str) -> Result<Option<Bytes>, StateError> {
        self.get_bytes(self.connection_key(id)).await
    }

    /// Forgets connection `id`.
    pub async fn connection_delete(&self, id: &str) -> Result<(), StateError> {
        let redis_key = self.connection_key(id);
        self.run(|mut connection| async move {
            redis::cmd("DEL")
                .arg(redis_key)
                .query_async::<()>(&mut connection)
                .await
        })
        .await
    }

    /// Publishes `payload` on the channel of process `instance`; the number of
    /// subscribers that got it (0: that process is gone).
    pub async fn instance_publish(
        &self,
        instance: &str,
        payload: Bytes,
    ) -> Result<u64, StateError> {
        let channel = self.instance_channel(instance);
        self.run(|mut connection| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload.as_ref())
                .query_async(&mut connection)
                .await
        })
        .await
    }

    /// A dedicated connection subscribed to the channel of process `instance`: its
    /// messages' payloads, until the connection breaks (the stream ends).
    pub async fn instance_subscribe(
        &self,
        instance: &str,
    ) -> Result<redis::aio::PubSubStream, StateError> {
        let channel = self.instance_channel(instance);
        let subscribe = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok::<_, redis::RedisError>(pubsub.into_on_message())
        };
        let deadline = self.settings.timeout + self.settings.connect_timeout;
        match tokio::time::timeout(deadline, subscribe).await {
            Ok(result) => result.map_err(StateError::Redis),
            Err(_) => Err(StateError::Timeout(deadline)),
        }
    }
}

/// Escapes `SCAN MATCH` glob characters.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Whether Redis is considered reachable, and when to probe it again if not.
#[derive(Debug)]
struct Health {
    base: Instant,
    /// Milliseconds on `base` before which calls fail at once; 0 while up.
    down_until_ms: AtomicU64,
    down: AtomicBool,
}

impl Health {
    fn new() -> Health {
        Health {
            base: Instant::now(),
            down_until_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        // Offset by one so that 0 always means "up".
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Whether a call may try Redis now. While down, exactly one caller per
    /// `retry_interval` is let through to probe it.
    fn admit(&self, retry_interval: Duration) -> bool {
        let until = self.down_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        if now < until {
            return false;
        }
        let next = now + duration_ms(retry_interval);
        self.down_until_ms
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn failed(&self, retry_interval: Duration, url: &str) {
        let next = self.now_ms() + duration_ms(retry_interval);
        self.down_until_ms.store(next, Ordering::Release);
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(backend = "redis", url = %redact(url), retry_interval = ?retry_interval, "state backend unreachable; degraded until it returns");
        }
    }

    fn succeeded(&self, url: &str) {
        if self.down_until_ms.load(Ordering::Acquire) != 0 {
            self.down_until_ms.store(0, Ordering::Release);
        }
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::AcqRel) {
            tracing::info!(backend = "redis", url = %redact(url), "state backend recovered");
        }
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX / 2)
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(redact("redis://:secret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
    }

    #[test]
    fn one_probe_per_interval_while_down() {
        let health = Health::new();
        let interval = Duration::from_millis(50);
        assert!(health.admit(interval));
        health.failed(interval, "redis://x");
        assert!(!health.admit(interval));
        std::thread::sleep(Duration::from_millis(60));
        assert!(health.admit(interval), "the first caller probes");
        assert!(!health.admit(interval), "the others do not");
        health.succeeded("redis://x");
        assert!(health.admit(interval));
        assert!(health.admit(interval));
    }
}
