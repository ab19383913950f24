//! The `api_key` phase: API keys (`[[api_keys]]`) and their usage plans
//! (`[usage_plans.NAME]`: `rate`/`burst` and `quota`), for routes with `api_key = true`.
//!
//! **Keys are compared without leaking timing.** The table holds only SHA-256 digests. The
//! presented key is hashed (time depends on its length only, which the client knows), and
//! the digest is looked up in a `HashMap` keyed by digest. The lookup's time depends on the
//! *digest* of what the client sent, and at worst on how many leading bytes of that digest
//! equal a stored digest; learning that tells an attacker nothing usable, since finding a
//! key whose digest shares more leading bytes with a stored one is a preimage search
//! against SHA-256. No byte of a stored key, and no comparison of key text, ever depends on
//! secret data. (The map's hasher is randomly seeded, so bucket positions are unknown too.)
//!
//! **Limits.** Each key's requests take a token from the plan's bucket, then count against
//! its quota (a request refused by the bucket is not counted; one refused by the quota
//! keeps the token it took). A route listed under the plan's `routes` uses its own limits
//! and its own counters. Counters live in the [`State`] backend under names built from the
//! plan, route and key names, so gateways sharing Redis share them. Over a limit: `429`
//! with `Retry-After` and `RateLimit-*`; allowed responses carry `RateLimit-*` of the
//! tightest limit.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};

use crate::config::{Access, ApiKey, Route, UsagePlan};
use crate::error::{GatewayError, Phase};
use crate::state::{Decision, OnStateError, State};
use crate::throttle::tightest;

/// The longest API key accepted (longer ones are refused without hashing).
pub const MAX_API_KEY_BYTES: usize = 512;

/// The current Unix time in seconds: what quota windows are measured on. Injectable, so
/// that tests can cross a period boundary.
pub type UnixClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> UnixClock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

/// The API keys of a config, indexed by digest, with their plans.
pub struct ApiKeyTable {
    header: HeaderName,
    by_digest: HashMap<[u8; 32], ApiKey>,
    plans: Vec<UsagePlan>,
    clock: UnixClock,
}

impl std::fmt::Debug for ApiKeyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyTable")
            .field("header", &self.header)
            .field("keys", &self.by_digest.len())
            .field("plans", &self.plans.len())
            .finish()
    }
}

/// The key a request presented, once found.
#[derive(Debug, Clone)]
pub struct ApiKeyName(pub Arc<str>);

impl ApiKeyTable {
    /// Indexes `access`'s keys (the plans are cloned: the table owns what it enforces).
    pub fn new(access: &Access, clock: UnixClock) -> ApiKeyTable {
        ApiKeyTable {
            header: access.api_keys.header.clone(),
            by_digest: access
                .api_keys
                .keys
                .iter()
                .map(|key| (key.sha256, key.clone()))
                .collect(),
            plans: access
                .usage_plans
                .iter()
                .map(|plan| UsagePlan {
                    name: plan.name.clone(),
                    limits: plan.limits,
                    routes: plan.routes.clone(),
                })
                .collect(),
            clock,
        }
    }

    /// The header clients send their key in.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Replaces the quota clock (tests).
    pub fn set_clock(&mut self, clock: UnixClock) {
        self.clock = clock;
    }

    /// The key presented in `headers` (or `chosen` by a plugin authorizer's usage-plan
    /// key, which takes precedence), if it is one of ours. `Err` is the `403` to answer.
    pub fn find(&self, headers: &HeaderMap, chosen: Option<&str>) -> Result<&ApiKey, GatewayError> {
        let presented = match chosen {
            Some(key) => key.as_bytes(),
            None => {
                let mut values = headers.get_all(&self.header).iter();
                let (Some(value), None) = (values.next(), values.next()) else {
                    return Err(GatewayError::ApiKeyMissing);
                };
                value.as_bytes()
            }
        };
        if presented.is_empty() {
            return Err(GatewayError::ApiKeyMissing);
        }
        if presented.len() > MAX_API_KEY_BYTES {
            return Err(GatewayError::ApiKeyInvalid);
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, presented);
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        self.by_digest.get(&key).ok_or(GatewayError::ApiKeyInvalid)
    }

    /// The `api_key` phase for route `index`: the key must be known and within its plan.
    /// `Ok(Some(decision))` feeds `RateLimit-*` on the response.
    pub async fn check(
        &self,
        state: &State,
        index: usize,
        route: &Route,
        headers: &HeaderMap,
        chosen: Option<&str>,
    ) -> Result<(ApiKeyName, Option<Decision>), GatewayError> {
        let key = self.find(headers, chosen)?;
        let name = ApiKeyName(Arc::from(key.name.as_str()));
        let Some(plan) = key.plan.and_then(|p| self.plans.get(p)) else {
            return Ok((name, None));
        };
        let (limits, own) = plan.limits_for(index);
        let counter = if own {
            counter_name(&plan.name, Some(&route.name), &key.name)
        } else {
            counter_name(&plan.name, None, &key.name)
        };
        let on_error = route.traffic.on_state_error;
        let mut reported = None;
        if let Some(limit) = limits.rate {
            let decision = state
                .take(
                    &counter,
                    limit,
                    on_error.unwrap_or(OnStateError::LIMITS_DEFAULT),
                )
                .await
                .map_err(|_| GatewayError::StateUnavailable {
                    phase: Phase::ApiKey,
                })?;
            if !decision.allowed {
                return Err(GatewayError::Throttled {
                    phase: Phase::ApiKey,
                    level: "usage plan rate",
                    decision,
                });
            }
            reported = tightest(reported, decision);
        }
        if let Some(quota) = limits.quota {
            let now = (self.clock)();
            let decision = state
                .quota_at(
                    &counter,
                    quota,
                    on_error.unwrap_or(OnStateError::QUOTAS_DEFAULT),
                    now,
                )
                .await
                .map_err(|_| GatewayError::StateUnavailable {
                    phase: Phase::ApiKey,
                })?;
            if !decision.allowed {
                return Err(GatewayError::Throttled {
                    phase: Phase::ApiKey,
                    level: "usage plan quota",
                    decision,
                });
            }
            reported = tightest(reported, decision);
        }
        Ok((name, reported))
    }
}

/// The state key of a key's counters: `usage|PLAN|[ROUTE]|KEY`, each name length-prefixed
/// so that no two (plan, route, key) triples can spell the same key.
fn counter_name(plan: &str, route: Option<&str>, key: &str) -> String {
    let route = route.unwrap_or("");
    format!(
        "usage|{}:{plan}|{}:{route}|{}:{key}",
        plan.len(),
        route.len(),
        key.len()
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use http::{Request, StatusCode};

    use super::*;
    use crate::body::Body;
    use crate::pipeline::{ConnInfo, Gateway};

    /// 2026-01-31 23:59:58 UTC: two seconds before a month (and a day) ends.
    const END_OF_JANUARY: u64 = 1_769_903_998;

    const ROUTES: &str = r#"
[server]
listen = "127.0.0.1:0"

[usage_plans.monthly]
quota = { limit = 3, period = "month" }

[[api_keys]]
name = "client"
key_sha256 = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
plan = "monthly"

[[routes]]
path = "/data"
api_key = true
mock = { status = 200, body = "data" }
"#;

    /// Quota exhaustion, then the period boundary, driven by an injected clock through the
    /// pipeline (no sockets). The key is `foo` (its SHA-256 is in the file).
    #[tokio::test]
    async fn quota_is_exhausted_then_renewed_at_the_period_boundary() {
        let config = crate::config::parse(ROUTES, std::path::Path::new("test.toml"), &|_| None)
            .expect("valid config");
        let mut gateway = Gateway::new(config).expect("gateway");
        let now = Arc::new(AtomicU64::new(END_OF_JANUARY));
        let clock = now.clone();
        gateway.set_quota_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
        let conn = ConnInfo::new("127.0.0.1:40000".parse().expect("addr"), false, None);
        let send = || async {
            let request = Request::get("/data")
                .header("host", "localhost")
                .header("x-api-key", "foo")
                .body(Body::Empty)
                .expect("request");
            gateway.handle(request, &conn).await
        };
        for remaining in ["2", "1", "0"] {
            let response = send().await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["ratelimit-limit"], "3");
            assert_eq!(response.headers()["ratelimit-remaining"], remaining);
            assert_eq!(response.headers()["ratelimit-reset"], "2");
        }
        let refused = send().await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()["retry-after"], "2");
        // One second later: still January, still exhausted.
        now.store(END_OF_JANUARY + 1, Ordering::SeqCst);
        assert_eq!(send().await.status(), StatusCode::TOO_MANY_REQUESTS);
        // February 1st, 00:00:00 UTC: a new month, a new quota.
        now.store(END_OF_JANUARY + 2, Ordering::SeqCst);
        let renewed = send().await;
        assert_eq!(renewed.status(), StatusCode::OK);
        assert_eq!(renewed.headers()["ratelimit-remaining"], "2");
        // 28 days of February.
        assert_eq!(
            renewed.headers()["ratelimit-reset"],
            (28 * 86_400).to_string()
        );
    }

    #[test]
    fn counter_names_cannot_collide() {
        assert_ne!(
            counter_name("a|1:b", None, "c"),
            counter_name("a", Some("b"), "c")
        );
        assert_ne!(
            counter_name("p", Some("r"), "k"),
            counter_name("p", None, "k")
        );
    }
}
