//! The `throttle` phase: token buckets server-wide (`[server] throttle`) and per route
//! (`throttle`), each shared, per client address or per header value, taken cheapest
//! first, before authorizers and everything costly.
//!
//! Also the one formatter of the `RateLimit-*` headers (IETF draft
//! `draft-ietf-httpapi-ratelimit-headers`: `RateLimit-Limit`, `RateLimit-Remaining`,
//! `RateLimit-Reset`) and of `Retry-After`, used by usage plans as well.
//!
//! A route with no throttle and a server with none cost one `is_empty` check: no
//! allocation, no lock.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};

use crate::config::{Config, Route, Throttle, ThrottleKey};
use crate::error::{GatewayError, Phase};
use crate::state::{Decision, OnStateError, State};

/// `RateLimit-Limit`.
pub static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`.
pub static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`.
pub static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Whole seconds, rounded up: a client that waits this long is never early.
pub fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Sets `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds, rounded
/// up) from `decision`.
pub fn rate_limit_headers(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert(&RATELIMIT_LIMIT, HeaderValue::from(decision.limit));
    headers.insert(&RATELIMIT_REMAINING, HeaderValue::from(decision.remaining));
    headers.insert(
        &RATELIMIT_RESET,
        HeaderValue::from(ceil_secs(decision.reset)),
    );
}

/// Sets `Retry-After` (seconds, rounded up, at least 1) and the `RateLimit-*` headers of
/// a refused request.
pub fn refusal_headers(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert(
        RETRY_AFTER,
        HeaderValue::from(ceil_secs(decision.retry_after).max(1)),
    );
    rate_limit_headers(headers, decision);
}

/// Which decision the `RateLimit-*` headers of an allowed response report: the one with
/// the fewest requests left.
pub fn tightest(current: Option<Decision>, next: Decision) -> Option<Decision> {
    match current {
        Some(current) if current.remaining <= next.remaining => Some(current),
        _ => Some(next),
    }
}

/// One bucket, ready to take from.
#[derive(Debug)]
struct Bucket {
    /// `server#I` or `route:NAME#I`: the stable part of the state key.
    name: Box<str>,
    throttle: Throttle,
    /// `"server"` or `"route"`, for logs.
    level: &'static str,
}

impl Bucket {
    /// Cheapest first: shared buckets need no key building.
    fn cost(&self) -> u8 {
        match self.throttle.key {
            ThrottleKey::Shared => 0,
            ThrottleKey::Client => 1,
            ThrottleKey::Header(_) => 2,
        }
    }
}

/// The compiled throttles of a config: per route, the server's buckets and the route's,
/// cheapest first.
#[derive(Debug, Default)]
pub struct Throttles {
    routes: Vec<Vec<Bucket>>,
}

impl Throttles {
    pub fn new(config: &Config) -> Throttles {
        let server = &config.server.throttle;
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let mut buckets: Vec<Bucket> = server
                    .iter()
                    .enumerate()
                    .map(|(i, t)| Bucket {
                        name: format!("server#{i}").into(),
                        throttle: t.clone(),
                        level: "server",
                    })
                    .chain(
                        route
                            .traffic
                            .throttle
                            .iter()
                            .enumerate()
                            .map(|(i, t)| Bucket {
                                name: format!("route:{}#{i}", route.name).into(),
                                throttle: t.clone(),
                                level: "route",
                            }),
                    )
                    .collect();
                buckets.sort_by_key(Bucket::cost);
                buckets
            })
            .collect();
        Throttles { routes }
    }

    /// The `throttle` phase for route `index`: takes a token from each bucket in turn.
    /// `Ok(Some(decision))` is the tightest decision (for `RateLimit-*` on the response);
    /// `Ok(None)` when the route has no throttle.
    pub async fn check(
        &self,
        state: &State,
        index: usize,
        route: &Route,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Result<Option<Decision>, GatewayError> {
        let Some(buckets) = self.routes.get(index).filter(|b| !b.is_empty()) else {
            return Ok(None);
        };
        let on_error = route
            .traffic
            .on_state_error
            .unwrap_or(OnStateError::LIMITS_DEFAULT);
        let mut tightest_so_far = None;
        let mut key = String::new();
        for bucket in buckets {
            key.clear();
            key.push_str(&bucket.name);
            match &bucket.throttle.key {
                ThrottleKey::Shared => {}
                ThrottleKey::Client => {
                    let _ = write!(key, "|client:{client}");
                }
                ThrottleKey::Header(name) => {
                    key.push_str("|header:");
                    for (i, value) in headers.get_all(name).iter().enumerate() {
                        if i > 0 {
                            key.push(',');
                        }
                        key.push_str(&String::from_utf8_lossy(value.as_bytes()));
                    }
                }
            }
            let decision = state
                .take(&key, bucket.throttle.limit, on_error)
                .await
                .map_err(|_| GatewayError::StateUnavailable {
                    phase: Phase::Throttle,
                })?;
            if !decision.allowed {
                return Err(GatewayError::Throttled {
                    phase: Phase::Throttle,
                    level: bucket.level,
                    decision,
                });
            }
            tightest_so_far = tightest(tightest_so_far, decision);
        }
        Ok(tightest_so_far)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(remaining: u64) -> Decision {
        Decision {
            allowed: true,
            limit: 10,
            remaining,
            retry_after: Duration::ZERO,
            reset: Duration::from_millis(1500),
        }
    }

    #[test]
    fn headers_round_up_and_never_say_zero_retry() {
        let mut headers = HeaderMap::new();
        let mut refused = decision(0);
        refused.allowed = false;
        refused.retry_after = Duration::from_millis(10);
        refusal_headers(&mut headers, &refused);
        assert_eq!(headers[RETRY_AFTER], "1");
        assert_eq!(headers[&RATELIMIT_LIMIT], "10");
        assert_eq!(headers[&RATELIMIT_REMAINING], "0");
        assert_eq!(headers[&RATELIMIT_RESET], "2");
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn the_tightest_decision_wins() {
        let t = tightest(None, decision(5));
        let t = tightest(t, decision(3));
        let t = tightest(t, decision(7));
        assert_eq!(t.map(|d| d.remaining), Some(3));
    }
}
