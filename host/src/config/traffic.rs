//! Validation and validated form of the traffic keys: `[state]`, `[cache]`,
//! `[server] throttle`, and the route keys `throttle`, `cache` and `on_state_error`.
//!
//! Called from `validate.rs`; like it, it reports every problem and uses stand-ins so
//! that checking goes on.

use std::time::Duration;

use http::header::HeaderName;

use super::document::Report;
use super::keypath::KeyPath;
use super::raw::{RawCacheLimits, RawRouteCache, RawSize, RawState, RawThrottle, RawThrottles};
use super::units::{parse_duration, parse_size};
use crate::state::{Limit, OnStateError, RedisSettings, StateSettings};

/// Default `[state] timeout`: deadline of one Redis command.
pub const DEFAULT_STATE_TIMEOUT: Duration = Duration::from_millis(100);
/// Default `[state] connect_timeout`.
pub const DEFAULT_STATE_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// Default `[state] retry_interval`: how long an unreachable Redis is left alone.
pub const DEFAULT_STATE_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Default `[state] prefix`.
pub const DEFAULT_STATE_PREFIX: &str = "weir:";
/// Default `[cache] max_entries`.
pub const DEFAULT_CACHE_MAX_ENTRIES: usize = 10_000;
/// Default `[cache] max_bytes`.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default `[cache] max_entry` (and route `cache.max_entry`): larger responses pass
/// through uncached.
pub const DEFAULT_CACHE_MAX_ENTRY_BYTES: u64 = 1024 * 1024;
/// Default route `cache.ttl`.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
/// The longest route `cache.ttl` accepted.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);
/// The smallest throttle `rate` accepted (one request per 1000 s).
pub const MIN_THROTTLE_RATE: f64 = 0.001;

/// `[cache]`: bounds of the in-memory response cache, shared by all routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// `max_entries`.
    pub max_entries: usize,
    /// `max_bytes`: keys and bodies of all entries.
    pub max_bytes: u64,
    /// `max_entry`: default per-entry limit for routes.
    pub max_entry: u64,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_entries: DEFAULT_CACHE_MAX_ENTRIES,
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
            max_entry: DEFAULT_CACHE_MAX_ENTRY_BYTES,
        }
    }
}

/// One token bucket of `[server] throttle` or a route's `throttle`.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttle {
    /// `rate` (requests per second) and `burst`.
    pub limit: Limit,
    /// Whose bucket a request takes from.
    pub key: ThrottleKey,
}

/// `key` / `per_client` of a throttle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThrottleKey {
    /// One bucket for everyone (the default).
    Shared,
    /// One bucket per client address (`per_client = true`, `key = "client"`), per
    /// `trusted_proxies`.
    Client,
    /// One bucket per value of a request header (`key = "header:NAME"`); requests
    /// without it share one bucket.
    Header(HeaderName),
}

/// A route's `cache`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCache {
    /// `ttl`, capped by upstream `max-age` / `s-maxage`.
    pub ttl: Duration,
    /// `key`: the parts that vary the entry, besides method and canonical path.
    pub key: Vec<CacheKeyPart>,
    /// `invalidate`: who may refresh an entry with `Cache-Control: max-age=0`.
    pub invalidate: Invalidate,
    /// `max_entry`: larger responses pass through uncached; `None` = `[cache] max_entry`.
    pub max_entry: Option<u64>,
}

impl RouteCache {
    /// Whether entries are per caller (`key` includes `identity`).
    pub fn keys_on_identity(&self) -> bool {
        self.key.contains(&CacheKeyPart::Identity)
    }
}

/// One entry of a route's `cache.key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheKeyPart {
    /// `query:NAME`: the query parameter's value(s).
    Query(String),
    /// `header:NAME`: the request header's value(s).
    Header(HeaderName),
    /// `identity`: the principal set by the route's authorizer.
    Identity,
}

/// `invalidate = "never" | "authorized" | "anyone"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidate {
    /// `Cache-Control: max-age=0` from clients is ignored.
    Never,
    /// Only callers that passed the route's authorizer may refresh.
    Authorized,
    /// Any caller may refresh.
    Anyone,
}

/// Default route `cache.invalidate`.
pub const DEFAULT_INVALIDATE: Invalidate = Invalidate::Authorized;

/// The top-level traffic tables: `[state]` and `[cache]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    /// `[state]`: where buckets, quotas, cache entries and plugin data live.
    pub state: StateSettings,
    /// `[cache]`: bounds of the in-memory response cache.
    pub cache: CacheLimits,
}

/// A route's traffic keys: `throttle`, `cache`, `on_state_error`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteTraffic {
    /// `throttle`: buckets every request of the route takes from, in order.
    pub throttle: Vec<Throttle>,
    /// `cache`.
    pub cache: Option<RouteCache>,
    /// `on_state_error`; `None` = the default of each use (see [`OnStateError`]).
    pub on_state_error: Option<OnStateError>,
}

/// `[state]` and `[cache]`.
pub fn traffic(
    report: &mut Report<'_>,
    state_raw: Option<RawState>,
    cache_raw: Option<RawCacheLimits>,
) -> Traffic {
    Traffic {
        state: state(report, state_raw),
        cache: cache_limits(report, cache_raw),
    }
}

/// A route's `throttle`, `cache` and `on_state_error`.
pub fn route(
    report: &mut Report<'_>,
    path: &KeyPath,
    throttle: Option<RawThrottles>,
    cache: Option<RawRouteCache>,
    on_state_error: Option<String>,
) -> RouteTraffic {
    RouteTraffic {
        throttle: throttles(report, &path.key("throttle"), throttle),
        cache: route_cache(report, &path.key("cache"), cache),
        on_state_error: self::on_state_error(report, &path.key("on_state_error"), on_state_error),
    }
}

/// `[state]`.
pub fn state(report: &mut Report<'_>, raw: Option<RawState>) -> StateSettings {
    let path = KeyPath::root().key("state");
    let Some(raw) = raw else {
        return StateSettings::Memory;
    };
    let backend = raw.backend.as_deref().unwrap_or("memory");
    let redis_only = [
        ("url", raw.url.is_some()),
        ("prefix", raw.prefix.is_some()),
        ("timeout", raw.timeout.is_some()),
        ("connect_timeout", raw.connect_timeout.is_some()),
        ("retry_interval", raw.retry_interval.is_some()),
    ];
    let timeout = duration(
        report,
        &path.key("timeout"),
        raw.timeout,
        DEFAULT_STATE_TIMEOUT,
    );
    let connect_timeout = duration(
        report,
        &path.key("connect_timeout"),
        raw.connect_timeout,
        DEFAULT_STATE_CONNECT_TIMEOUT,
    );
    let retry_interval = duration(
        report,
        &path.key("retry_interval"),
        raw.retry_interval,
        DEFAULT_STATE_RETRY_INTERVAL,
    );
    match backend {
        "memory" => {
            for (key, set) in redis_only {
                if set {
                    report.at(&path.key(key), "only meaningful with `backend = \"redis\"`");
                }
            }
            StateSettings::Memory
        }
        "redis" => {
            let Some(url) = raw.url else {
                report.at(
                    &path,
                    "missing required key `url` for `backend = \"redis\"`, expected e.g. \
                     \"redis://127.0.0.1:6379\"",
                );
                return StateSettings::Memory;
            };
            if !(url.starts_with("redis://") || url.starts_with("unix://"))
                || redis::Client::open(url.as_str()).is_err()
            {
                report.at(
                    &path.key("url"),
                    format!(
                        "invalid Redis URL {:?}, expected e.g. \"redis://127.0.0.1:6379\" \
                         (or \"redis://:PASSWORD@HOST:PORT/DB\")",
                        crate::state::redis::redact(&url)
                    ),
                );
            }
            StateSettings::Redis(RedisSettings {
                url,
                timeout,
                connect_timeout,
                retry_interval,
                prefix: raw
                    .prefix
                    .unwrap_or_else(|| DEFAULT_STATE_PREFIX.to_owned()),
            })
        }
        other => {
            report.at(
                &path.key("backend"),
                format!("invalid value {other:?}, expected \"memory\" or \"redis\""),
            );
            StateSettings::Memory
        }
    }
}

/// `[cache]`.
pub fn cache_limits(report: &mut Report<'_>, raw: Option<RawCacheLimits>) -> CacheLimits {
    let path = KeyPath::root().key("cache");
    let defaults = CacheLimits::default();
    let Some(raw) = raw else { return defaults };
    let max_entries = match raw.max_entries {
        None => defaults.max_entries,
        Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
        Some(n) => {
            report.at(
                &path.key("max_entries"),
                format!("expected an integer of at least 0, got {n}"),
            );
            defaults.max_entries
        }
    };
    CacheLimits {
        max_entries,
        max_bytes: size(report, &path.key("max_bytes"), raw.max_bytes)
            .unwrap_or(defaults.max_bytes),
        max_entry: size(report, &path.key("max_entry"), raw.max_entry)
            .unwrap_or(defaults.max_entry),
    }
}

/// `[server] throttle` or a route's `throttle`: one table or an array of tables.
pub fn throttles(
    report: &mut Report<'_>,
    path: &KeyPath,
    raw: Option<RawThrottles>,
) -> Vec<Throttle> {
    match raw {
        None => Vec::new(),
        Some(RawThrottles::One(one)) => throttle(report, path, one).into_iter().collect(),
        Some(RawThrottles::Many(many)) => {
            if many.is_empty() {
                report.at(
                    path,
                    "expected at least one throttle table (leave `throttle` out for none)",
                );
            }
            many.into_iter()
                .enumerate()
                .filter_map(|(i, one)| throttle(report, &path.index(i), one))
                .collect()
        }
    }
}

fn throttle(report: &mut Report<'_>, path: &KeyPath, raw: RawThrottle) -> Option<Throttle> {
    let rate = match raw.rate {
        None => {
            report.at(
                path,
                "missing required key `rate`, expected requests per second such as 100",
            );
            None
        }
        Some(rate) if rate.is_finite() && rate >= MIN_THROTTLE_RATE => Some(rate),
        Some(rate) => {
            report.at(
                &path.key("rate"),
                format!("expected a rate of at least {MIN_THROTTLE_RATE} requests per second, got {rate}"),
            );
            None
        }
    };
    let burst = match raw.burst {
        // A burst of one second's worth (at least 1) when not given.
        None => rate.map_or(1, |rate| (rate.ceil() as u64).max(1)),
        Some(burst) if burst >= 1 => u64::try_from(burst).unwrap_or(u64::MAX),
        Some(burst) => {
            report.at(
                &path.key("burst"),
                format!("expected an integer of at least 1, got {burst}"),
            );
            1
        }
    };
    let key = match (raw.per_client, raw.key.as_deref()) {
        (None | Some(false), None) => ThrottleKey::Shared,
        (Some(true), None) | (None | Some(true), Some("client")) => ThrottleKey::Client,
        (Some(false), Some(_)) | (Some(true), Some(_)) => {
            report.at(
                &path.key("per_client"),
                "give either `per_client = true` or `key`, not both",
            );
            ThrottleKey::Shared
        }
        (None, Some(text)) => match text.strip_prefix("header:") {
            Some(name) => match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => ThrottleKey::Header(name),
                Err(_) => {
                    report.at(
                        &path.key("key"),
                        format!("invalid header name {name:?} in {text:?}"),
                    );
                    ThrottleKey::Shared
                }
            },
            None => {
                report.at(
                    &path.key("key"),
                    format!("invalid value {text:?}, expected \"client\" or \"header:NAME\""),
                );
                ThrottleKey::Shared
            }
        },
    };
    Some(Throttle {
        limit: Limit { rate: rate?, burst },
        key,
    })
}

/// A route's `cache`.
pub fn route_cache(
    report: &mut Report<'_>,
    path: &KeyPath,
    raw: Option<RawRouteCache>,
) -> Option<RouteCache> {
    let raw = raw?;
    let ttl_path = path.key("ttl");
    let ttl = duration(report, &ttl_path, raw.ttl.clone(), DEFAULT_CACHE_TTL);
    if raw.ttl.is_some() && ttl.is_zero() {
        report.at(&ttl_path, "expected a duration greater than zero");
    }
    if ttl > MAX_CACHE_TTL {
        report.at(
            &ttl_path,
            format!(
                "expected at most \"{}\", got {:?}",
                humantime::format_duration(MAX_CACHE_TTL),
                raw.ttl.unwrap_or_default()
            ),
        );
    }
    let key_path = path.key("key");
    let mut key = Vec::new();
    for (i, text) in raw.key.unwrap_or_default().into_iter().enumerate() {
        let part = if text == "identity" {
            Some(CacheKeyPart::Identity)
        } else if let Some(name) = text.strip_prefix("query:").filter(|n| !n.is_empty()) {
            Some(CacheKeyPart::Query(name.to_owned()))
        } else if let Some(name) = text.strip_prefix("header:") {
            HeaderName::from_bytes(name.as_bytes())
                .ok()
                .map(CacheKeyPart::Header)
        } else {
            None
        };
        match part {
            Some(part) if key.contains(&part) => {
                report.at(&key_path.index(i), format!("duplicate key part {text:?}"));
            }
            Some(part) => key.push(part),
            None => report.at(
                &key_path.index(i),
                format!(
                    "invalid key part {text:?}, expected \"query:NAME\", \"header:NAME\" or \
                     \"identity\""
                ),
            ),
        }
    }
    let invalidate = match raw.invalidate.as_deref() {
        None => DEFAULT_INVALIDATE,
        Some("never") => Invalidate::Never,
        Some("authorized") => Invalidate::Authorized,
        Some("anyone") => Invalidate::Anyone,
        Some(other) => {
            report.at(
                &path.key("invalidate"),
                format!(
                    "invalid value {other:?}, expected \"never\" or \"authorized\" or \"anyone\""
                ),
            );
            DEFAULT_INVALIDATE
        }
    };
    let max_entry = size(report, &path.key("max_entry"), raw.max_entry);
    Some(RouteCache {
        ttl,
        key,
        invalidate,
        max_entry,
    })
}

/// A route's `on_state_error`.
pub fn on_state_error(
    report: &mut Report<'_>,
    path: &KeyPath,
    raw: Option<String>,
) -> Option<OnStateError> {
    match raw.as_deref()? {
        "local" => Some(OnStateError::Local),
        "open" => Some(OnStateError::Open),
        "closed" => Some(OnStateError::Closed),
        other => {
            report.at(
                path,
                format!("invalid value {other:?}, expected \"local\" or \"open\" or \"closed\""),
            );
            None
        }
    }
}

fn duration(
    report: &mut Report<'_>,
    path: &KeyPath,
    raw: Option<String>,
    default: Duration,
) -> Duration {
    let Some(text) = raw else { return default };
    match parse_duration(&text) {
        Ok(duration) => duration,
        Err(error) => {
            report.at(path, error.to_string());
            default
        }
    }
}

pub(super) fn size(report: &mut Report<'_>, path: &KeyPath, raw: Option<RawSize>) -> Option<u64> {
    let parsed = match raw? {
        RawSize::Text(text) => parse_size(&text).map_err(|error| error.to_string()),
        RawSize::Bytes(bytes) => u64::try_from(bytes)
            .map_err(|_| format!("invalid size {bytes}, expected a number of bytes of at least 0")),
    };
    parsed.map_err(|message| report.at(path, message)).ok()
}
