//! The route authorizers of the `authorize` phase: the built-in JWT validator
//! ([`crate::jwt`]) and plugin authorizers (`type = "plugin"`), whose decisions are cached
//! by identity.
//!
//! A plugin authorizer:
//!
//! 1. reads its `identity` sources (`header:`, `query:`, `cookie:`); any missing is `401`
//!    without a plugin call;
//! 2. looks the identity values up in its decision cache (`cache_ttl`; keyed by a SHA-256
//!    of the values, so no credential is kept in memory in clear);
//! 3. on a miss, calls the plugin's `authorize` in a fresh instance and caches what it
//!    decided — allows and denies alike, as API Gateway does;
//! 4. on allow, puts the [`Principal`] and [`AuthContext`] into the request's extensions
//!    (filters and handlers see them), sets the `forward_context` headers, and notes the
//!    usage-plan key for the `api_key` phase ([`UsagePlanKey`]); on deny, the plugin's
//!    response is the answer.
//!
//! A failed call (trap, timeout, bad output, busy) refuses the request: authorizers fail
//! closed. Failures are not cached.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, COOKIE, HeaderName, HeaderValue};
use http::{HeaderMap, Request, StatusCode};
use lru::LruCache;

use crate::body::Body;
use crate::config::{IdentitySource, PluginAuthorizer as PluginAuthorizerConfig};
use crate::error::{GatewayError, Phase};
use crate::identity::{AuthContext, Principal};
use crate::jwt::JwtAuthorizer;
use crate::plugin::{self, CallInfo, Decision, Plugin};

/// Decisions one plugin authorizer remembers at most (least recently used go first).
pub const DECISION_CACHE_ENTRIES: usize = 10_000;
/// The longest identity value accepted, in bytes; longer ones are refused with `401`.
pub const MAX_IDENTITY_BYTES: usize = 8 * 1024;

/// One `[authorizers.NAME]`, ready to run.
pub enum Authorizer {
    Jwt(JwtAuthorizer),
    Plugin(PluginAuthorizer),
}

impl Authorizer {
    pub fn name(&self) -> &str {
        match self {
            Authorizer::Jwt(jwt) => jwt.name(),
            Authorizer::Plugin(plugin) => &plugin.name,
        }
    }
}

/// The API key a plugin authorizer chose for the request's usage plan: the `api_key`
/// phase uses it instead of the `x-api-key` header.
#[derive(Debug, Clone)]
pub struct UsagePlanKey(pub Arc<str>);

/// What the request needs from the pipeline to be authorized by a plugin.
pub struct Subject<'a> {
    pub path: &'a str,
    pub params: &'a crate::router::Params,
    pub client: std::net::IpAddr,
    pub request_id: &'a HeaderValue,
    pub state: &'a Arc<crate::state::State>,
}

/// A `type = "plugin"` authorizer: the plugin, its identity sources and decision cache.
pub struct PluginAuthorizer {
    name: Arc<str>,
    plugin: Arc<Plugin>,
    config: Arc<str>,
    outbound: plugin::Outbound,
    identity: Vec<IdentitySource>,
    cache_ttl: Duration,
    forward: Vec<(String, HeaderName)>,
    cache: Option<Mutex<LruCache<[u8; 32], Cached>>>,
    counts: Arc<CacheCounts>,
}

/// Lookups in one plugin authorizer's decision cache (an `Arc`, so the metrics can read
/// the last counts of an authorizer a reload replaced).
#[derive(Debug, Default)]
pub struct CacheCounts {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// A remembered decision and when it stops counting.
#[derive(Clone)]
struct Cached {
    expires: Instant,
    verdict: Verdict,
}

/// A plugin's decision, in the form the pipeline applies (cheap to clone).
#[derive(Clone)]
enum Verdict {
    Allow(Arc<Allowed>),
    Deny(Arc<Denied>),
}

struct Allowed {
    principal: Principal,
    context: Arc<serde_json::Map<String, serde_json::Value>>,
    usage_plan_key: Option<Arc<str>>,
    /// `forward_context` headers with their values, checked once.
    headers: Vec<(HeaderName, HeaderValue)>,
}

struct Denied {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl PluginAuthorizer {
    pub fn new(
        name: &str,
        config: &PluginAuthorizerConfig,
        plugin: Arc<Plugin>,
        outbound: plugin::Outbound,
    ) -> Self {
        let cache = (!config.cache_ttl.is_zero()).then(|| {
            let entries = NonZeroUsize::new(DECISION_CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN);
            Mutex::new(LruCache::new(entries))
        });
        PluginAuthorizer {
            name: Arc::from(name),
            plugin,
            config: config.plugin.config.clone(),
            outbound,
            identity: config.identity.clone(),
            cache_ttl: config.cache_ttl,
            forward: config.forward_context.clone(),
            cache,
            counts: Arc::default(),
        }
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Decisions served from the cache, and decisions that needed a plugin call.
    pub fn cache_counts(&self) -> (u64, u64) {
        (
            self.counts.hits.load(Ordering::Relaxed),
            self.counts.misses.load(Ordering::Relaxed),
        )
    }

    /// The decision cache's lookup counters; `None` when `cache_ttl` is zero.
    pub fn cache_counters(&self) -> Option<&Arc<CacheCounts>> {
        self.cache.as_ref().map(|_| &self.counts)
    }

    /// Authorizes `request`: `Ok` lets it go on (identity in its extensions), `Err` is
    /// the answer (`401` without identity, the plugin's deny, or a failed call).
    pub async fn authorize(
        &self,
        request: &mut Request<Body>,
        subject: Subject<'_>,
    ) -> Result<(), GatewayError> {
        for (_, header) in &self.forward {
            request.headers_mut().remove(header);
        }
        let key = self.identity_key(request)?;
        let verdict = match self.cached(key.as_ref()) {
            Some(verdict) => verdict,
            None => {
                // Built before the call: a `&Request<Body>` held across an `.await`
                // would make the future not `Send` (a body is not `Sync`).
                let wit_request = plugin::convert::request_head(
                    request,
                    subject.path,
                    subject.params,
                    subject.client,
                    None,
                );
                let verdict = self.call(wit_request, &subject).await?;
                if let (Some(cache), Some(key)) = (&self.cache, key) {
                    let entry = Cached {
                        expires: Instant::now() + self.cache_ttl,
                        verdict: verdict.clone(),
                    };
                    cache
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .put(key, entry);
                }
                verdict
            }
        };
        match verdict {
            Verdict::Allow(allowed) => {
                let headers = request.headers_mut();
                for (name, value) in &allowed.headers {
                    headers.insert(name.clone(), value.clone());
                }
                let extensions = request.extensions_mut();
                extensions.insert(allowed.principal.clone());
                extensions.insert(AuthContext {
                    authorizer: self.name.clone(),
                    claims: allowed.context.clone(),
                });
                if let Some(key) = &allowed.usage_plan_key {
                    extensions.insert(UsagePlanKey(key.clone()));
                }
                Ok(())
            }
            Verdict::Deny(denied) => {
                let mut response = http::Response::new(Body::full(denied.body.clone()));
                *response.status_mut() = denied.status;
                *response.headers_mut() = denied.headers.clone();
                Err(GatewayError::AuthorizerDenied {
                    authorizer: self.name.clone(),
                    response: Box::new(response),
                })
            }
        }
    }

    /// The cache key of the request's identity values; `401` when one is missing.
    /// `None` when decisions are not cached.
    fn identity_key(&self, request: &Request<Body>) -> Result<Option<[u8; 32]>, GatewayError> {
        let missing = || GatewayError::IdentityMissing {
            authorizer: self.name.clone(),
        };
        // Without a cache the values are only checked, not hashed.
        let mut digest = self
            .cache
            .is_some()
            .then(|| ring::digest::Context::new(&ring::digest::SHA256));
        for source in &self.identity {
            let value = identity_value(source, request).ok_or_else(missing)?;
            if value.is_empty() || value.len() > MAX_IDENTITY_BYTES {
                return Err(missing());
            }
            if let Some(digest) = &mut digest {
                // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
                digest.update(&(value.len() as u64).to_be_bytes());
                digest.update(value);
            }
        }
        let Some(digest) = digest else {
            return Ok(None);
        };
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.finish().as_ref());
        Ok(Some(key))
    }

    fn cached(&self, key: Option<&[u8; 32]>) -> Option<Verdict> {
        let (cache, key) = (self.cache.as_ref()?, key?);
        let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
        let verdict = match cache.get(key) {
            Some(entry) if entry.expires > Instant::now() => Some(entry.verdict.clone()),
            Some(_) => {
                cache.pop(key);
                None
            }
            None => None,
        };
        drop(cache);
        let counter = if verdict.is_some() {
            &self.counts.hits
        } else {
            &self.counts.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        verdict
    }

    /// Asks the plugin.
    async fn call(
        &self,
        wit_request: plugin::Request,
        subject: &Subject<'_>,
    ) -> Result<Verdict, GatewayError> {
        let call = CallInfo {
            plugin: self.plugin.name().clone(),
            request_id: Arc::from(subject.request_id.to_str().unwrap_or("")),
            config: self.config.clone(),
            state: subject.state.clone(),
            outbound: self.outbound.clone(),
        };
        let failed = |error| GatewayError::Plugin {
            phase: Phase::Authorize,
            plugin: self.plugin.name().clone(),
            error,
        };
        // The call ran, but the host refuses what it answered.
        let refused = |error| {
            self.plugin.stats().output_refused(&error);
            failed(error)
        };
        match self.plugin.authorize(call, wit_request).await {
            Ok(Decision::Allow(allow)) => self.allowed(allow).map_err(refused),
            Ok(Decision::Deny(response)) => {
                let response = plugin::convert::response(response).map_err(refused)?;
                let (parts, body) = response.into_parts();
                let body = match body {
                    Body::Full(bytes) => bytes.unwrap_or_default(),
                    _ => Bytes::new(),
                };
                let mut headers = parts.headers;
                headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
                Ok(Verdict::Deny(Arc::new(Denied {
                    status: parts.status,
                    headers,
                    body,
                })))
            }
            Err(error) => Err(failed(error)),
        }
    }

    /// Checks an allow and prepares what it sets on each request.
    fn allowed(&self, allow: plugin::Allow) -> Result<Verdict, plugin::PluginError> {
        if allow.principal.is_empty() {
            return Err(plugin::PluginError::BadOutput(
                "allow with an empty principal".to_owned(),
            ));
        }
        let context: serde_json::Map<String, serde_json::Value> = allow
            .context
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        let mut headers = Vec::new();
        for (key, header) in &self.forward {
            let value = match key.as_str() {
                "principal" => Some(allow.principal.as_str()),
                _ => context.get(key).and_then(serde_json::Value::as_str),
            };
            if let Some(value) = value {
                let value = HeaderValue::from_str(value).map_err(|_| {
                    plugin::PluginError::BadOutput(format!(
                        "context value {key:?} cannot be sent as header {header}"
                    ))
                })?;
                headers.push((header.clone(), value));
            }
        }
        Ok(Verdict::Allow(Arc::new(Allowed {
            principal: Principal::new(allow.principal),
            context: Arc::new(context),
            usage_plan_key: allow.usage_plan_key.map(Arc::from),
            headers,
        })))
    }
}

/// The value of one identity source in `request`, as sent.
fn identity_value<'r>(source: &IdentitySource, request: &'r Request<Body>) -> Option<&'r [u8]> {
    match source {
        IdentitySource::Header(name) => {
            let mut values = request.headers().get_all(name).iter();
            let value = values.next()?;
            // Two lines of one credential header are ambiguous: refuse, like the JWT
            // authorizer does.
            values.next().is_none().then_some(value.as_bytes())
        }
        IdentitySource::Query(name) => request.uri().query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v.as_bytes())
        }),
        IdentitySource::Cookie(name) => request
            .headers()
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then_some(v.trim_matches('"').as_bytes())
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::Empty).expect("request")
    }

    #[test]
    fn identity_values_come_from_headers_queries_and_cookies() {
        let r = request(
            "/x?a=1&token=abc&flag",
            &[("x-token", "t1"), ("cookie", "theme=dark; session=\"s1\"")],
        );
        let header = IdentitySource::Header(HeaderName::from_static("x-token"));
        assert_eq!(identity_value(&header, &r), Some(&b"t1"[..]));
        let query = IdentitySource::Query("token".to_owned());
        assert_eq!(identity_value(&query, &r), Some(&b"abc"[..]));
        let flag = IdentitySource::Query("flag".to_owned());
        assert_eq!(identity_value(&flag, &r), Some(&b""[..]));
        let cookie = IdentitySource::Cookie("session".to_owned());
        assert_eq!(identity_value(&cookie, &r), Some(&b"s1"[..]));
        let absent = IdentitySource::Cookie("nope".to_owned());
        assert_eq!(identity_value(&absent, &r), None);
    }

    #[test]
    fn a_repeated_credential_header_is_no_identity() {
        let r = request("/", &[("x-token", "a"), ("x-token", "b")]);
        let header = IdentitySource::Header(HeaderName::from_static("x-token"));
        assert_eq!(identity_value(&header, &r), None);
    }
}
