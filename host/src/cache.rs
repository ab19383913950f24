//! The response cache: the `cache_lookup` and `cache_store` phases, and the admin purge.
//!
//! A route with `cache = { ttl, key, invalidate, max_entry }` keeps final responses (as
//! they leave the gateway) in the state backend (memory, or Redis shared by every
//! gateway), keyed on the route, the method, the canonical path and the route's chosen
//! parts (`query:NAME`, `header:NAME`, `identity`). Rules, after RFC 9111:
//!
//! - only `GET` and `HEAD`, only heuristically cacheable statuses ([`CACHEABLE_STATUSES`]);
//! - upstream `Cache-Control: no-store`, `private` or `no-cache`, a `Set-Cookie`, or a
//!   `Vary` on a header the key does not include: not stored; `s-maxage` / `max-age` cap
//!   the route's `ttl`;
//! - a request with `Authorization` is served from, or stored into, a shared entry only
//!   when the route keys on `identity` or the upstream allowed it (`public`, `s-maxage`,
//!   `must-revalidate`: RFC 9111 §3.5);
//! - a client's `Cache-Control: max-age=0` (or `no-cache`) refreshes the entry only as
//!   the route's `invalidate` allows;
//! - larger than `max_entry`: passed through uncached;
//! - concurrent misses for one key make one upstream request: the first is the leader,
//!   the others wait for its entry (request coalescing, per gateway).
//!
//! Every response of a cached route's `GET`/`HEAD` carries `x-cache: hit` or `miss`, and
//! is counted the same way in the route's [`CacheCounters`] (lookups by result, stores),
//! which the state keeps and `/metrics` exports. A route without `cache` costs one
//! `Option` check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{
    AGE, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, HeaderName, HeaderValue, SET_COOKIE, VARY,
};
use http::{Extensions, HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::body::{Body, Chain};
use crate::config::{CacheKeyPart, CacheLimits, Invalidate, Route, RouteCache};
use crate::error::GatewayError;
use crate::identity;
use crate::state::{self, CacheCounters, OnStateError, State};

/// `x-cache`.
pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// Statuses stored by default (RFC 9111 §4.2.2 "heuristically cacheable", less `206`).
pub const CACHEABLE_STATUSES: &[u16] = &[200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];
/// Version byte of the stored entry format.
const ENTRY_FORMAT: u8 = 1;
/// Headers never stored with an entry (set fresh on every response).
const UNSTORED_HEADERS: &[&str] = &[
    "x-request-id",
    "x-cache",
    "age",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
];

/// A stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Unix milliseconds when stored (for `Age`).
    pub stored_at_ms: u64,
    /// Whether a request carrying `Authorization` may be served this entry although the
    /// route does not key on `identity` (RFC 9111 §3.5).
    pub shared_with_authorized: bool,
}

impl Entry {
    /// The stored form: version, status, flags, time, headers, body.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.body.len() + 256);
        out.put_u8(ENTRY_FORMAT);
        out.put_u16(self.status.as_u16());
        out.put_u8(u8::from(self.shared_with_authorized));
        out.put_u64(self.stored_at_ms);
        let count = u16::try_from(self.headers.len()).unwrap_or(u16::MAX);
        out.put_u16(count);
        for (name, value) in self.headers.iter().take(usize::from(count)) {
            out.put_u16(u16::try_from(name.as_str().len()).unwrap_or(0));
            out.put_slice(name.as_str().as_bytes());
            out.put_u32(u32::try_from(value.len()).unwrap_or(0));
            out.put_slice(value.as_bytes());
        }
        out.put_slice(&self.body);
        out.freeze()
    }

    /// Reads [`encode`](Self::encode)'s output; `None` for anything else (an entry
    /// written by another version is a miss).
    pub fn decode(mut data: Bytes) -> Option<Entry> {
        use bytes::Buf;
        if data.remaining() < 14 || data.get_u8() != ENTRY_FORMAT {
            return None;
        }
        let status = StatusCode::from_u16(data.get_u16()).ok()?;
        let shared_with_authorized = data.get_u8() == 1;
        let stored_at_ms = data.get_u64();
        let count = data.get_u16();
        let mut headers = HeaderMap::with_capacity(usize::from(count));
        for _ in 0..count {
            if data.remaining() < 2 {
                return None;
            }
            let len = usize::from(data.get_u16());
            if data.remaining() < len + 4 {
                return None;
            }
            let name = HeaderName::from_bytes(&data.split_to(len)).ok()?;
            let len = usize::try_from(data.get_u32()).ok()?;
            if data.remaining() < len {
                return None;
            }
            let value = HeaderValue::from_maybe_shared(data.split_to(len)).ok()?;
            headers.append(name, value);
        }
        Some(Entry {
            status,
            headers,
            body: data,
            stored_at_ms,
            shared_with_authorized,
        })
    }

    /// The response for a hit.
    fn respond(&self, method: &Method, now_ms: u64) -> Response<Body> {
        let body = if method == Method::HEAD {
            Body::Empty
        } else {
            Body::full(self.body.clone())
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        let headers = response.headers_mut();
        headers.insert(&X_CACHE, HeaderValue::from_static("hit"));
        headers.insert(
            AGE,
            HeaderValue::from(now_ms.saturating_sub(self.stored_at_ms) / 1000),
        );
        response
    }
}

type Waiters = Arc<Mutex<HashMap<String, watch::Receiver<Option<Arc<Entry>>>>>>;

/// The cache's live part: default limits and the requests in flight (coalescing).
#[derive(Debug, Default)]
pub struct ResponseCache {
    max_entry: u64,
    inflight: Waiters,
}

/// What `cache_lookup` found.
#[derive(Debug)]
pub enum Lookup {
    /// The route does not cache this request.
    Off,
    /// Served from the cache.
    Hit(Response<Body>),
    /// Not in the cache: fetch, then [`ResponseCache::store`].
    Miss(Fill),
}

/// A miss to fill once the response is there.
#[derive(Debug)]
pub struct Fill {
    key: String,
    /// The route's counters (and its name).
    counters: Arc<CacheCounters>,
    ttl: Duration,
    max_entry: u64,
    on_error: OnStateError,
    /// The request carried `Authorization` and the route does not key on `identity`.
    authorized_shared: bool,
    /// `header:` parts of the key (a `Vary` on anything else is not stored).
    key_headers: Vec<HeaderName>,
    leader: Option<Leader>,
}

/// The request whose upstream answer other concurrent misses wait for.
#[derive(Debug)]
struct Leader {
    key: String,
    sender: watch::Sender<Option<Arc<Entry>>>,
    inflight: Waiters,
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if inflight
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.sender.subscribe()))
        {
            inflight.remove(&self.key);
        }
    }
}

enum Role {
    Leader(Leader),
    Follower(watch::Receiver<Option<Arc<Entry>>>),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whether the header's comma-separated directives include `directive` (case-insensitive),
/// and its `=value` if any.
fn directive<'h>(headers: &'h HeaderMap, directive: &str) -> Option<Option<&'h str>> {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|item| {
            let (name, value) = match item.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
                None => (item.trim(), None),
            };
            name.eq_ignore_ascii_case(directive).then_some(value)
        })
}

fn seconds(value: Option<&str>) -> Option<Duration> {
    value?.parse::<u64>().ok().map(Duration::from_secs)
}

/// What the cache reads of a request (borrowed parts: a request body need not be `Sync`).
#[derive(Debug, Clone, Copy)]
pub struct Head<'r> {
    pub method: &'r Method,
    pub uri: &'r Uri,
    pub headers: &'r HeaderMap,
    pub extensions: &'r Extensions,
}

impl<'r> Head<'r> {
    pub fn of<B>(request: &'r Request<B>) -> Head<'r> {
        Head {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }
}

/// The cache key of `request` on `route` (method, canonical path, the route's parts).
pub fn key(route: &Route, settings: &RouteCache, request: Head<'_>, path: &str) -> String {
    let mut key = state::cache_route_prefix(&route.name);
    key.push_str(request.method.as_str());
    key.push(' ');
    key.push_str(path);
    for part in &settings.key {
        match part {
            CacheKeyPart::Query(name) => {
                key.push_str("\nq:");
                key.push_str(name);
                key.push('=');
                let query = request.uri.query().unwrap_or("");
                let values = query.split('&').filter_map(|pair| {
                    let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (n == name).then_some(v)
                });
                for (i, value) in values.enumerate() {
                    if i > 0 {
                        key.push('&');
                    }
                    key.push_str(value);
                }
            }
            CacheKeyPart::Header(name) => {
                key.push_str("\nh:");
                key.push_str(name.as_str());
                key.push('=');
                for (i, value) in request.headers.get_all(name).iter().enumerate() {
                    if i > 0 {
                        key.push(',');
                    }
                    key.push_str(&String::from_utf8_lossy(value.as_bytes()));
                }
            }
            CacheKeyPart::Identity => {
                key.push_str("\ni=");
                if let Some(principal) = identity::principal_in(request.extensions) {
                    key.push_str(principal.as_str());
                }
            }
        }
    }
    key
}

/// Whether the client asks for a fresh response (`max-age=0` or `no-cache`).
fn wants_refresh(headers: &HeaderMap) -> bool {
    directive(headers, "no-cache").is_some()
        || directive(headers, "max-age")
            .flatten()
            .is_some_and(|v| v.trim() == "0")
}

impl ResponseCache {
    pub fn new(limits: &CacheLimits) -> ResponseCache {
        ResponseCache {
            max_entry: limits.max_entry,
            inflight: Waiters::default(),
        }
    }

    /// The `cache_lookup` phase.
    pub async fn lookup(
        &self,
        state: &State,
        route: &Route,
        request: Head<'_>,
        path: &str,
    ) -> Lookup {
        let Some(settings) = &route.traffic.cache else {
            return Lookup::Off;
        };
        let method = request.method;
        if method != Method::GET && method != Method::HEAD {
            return Lookup::Off;
        }
        let key = key(route, settings, request, path);
        let on_error = route
            .traffic
            .on_state_error
            .unwrap_or(OnStateError::CACHE_DEFAULT);
        let authorized_shared =
            request.headers.contains_key(AUTHORIZATION) && !settings.keys_on_identity();
        let usable = |entry: &Entry| !authorized_shared || entry.shared_with_authorized;
        let refresh = wants_refresh(request.headers)
            && match settings.invalidate {
                Invalidate::Never => false,
                Invalidate::Anyone => true,
                Invalidate::Authorized => identity::principal_in(request.extensions).is_some(),
            };
        let mut fill = Fill {
            key,
            counters: state.stats().cache_route(&route.name),
            ttl: settings.ttl,
            max_entry: settings.max_entry.unwrap_or(self.max_entry),
            on_error,
            authorized_shared,
            key_headers: settings
                .key
                .iter()
                .filter_map(|part| match part {
                    CacheKeyPart::Header(name) => Some(name.clone()),
                    _ => None,
                })
                .collect(),
            leader: None,
        };
        if refresh {
            return fill.miss();
        }
        if let Some(entry) = state
            .cache_get(&fill.key, on_error)
            .await
            .and_then(Entry::decode)
            .filter(|entry| usable(entry))
        {
            return fill.hit(&entry, method);
        }
        match self.join(&fill.key) {
            Role::Leader(leader) => {
                fill.leader = Some(leader);
                fill.miss()
            }
            Role::Follower(mut receiver) => {
                // The leader's entry, or nothing if it stored none (or went away).
                let entry = receiver
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|entry| entry.clone());
                match entry.filter(|entry| usable(entry)) {
                    Some(entry) => fill.hit(&entry, method),
                    None => fill.miss(),
                }
            }
        }
    }

    fn join(&self, key: &str) -> Role {
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(receiver) = inflight.get(key) {
            return Role::Follower(receiver.clone());
        }
        let (sender, receiver) = watch::channel(None);
        inflight.insert(key.to_owned(), receiver);
        Role::Leader(Leader {
            key: key.to_owned(),
            sender,
            inflight: self.inflight.clone(),
        })
    }

    /// The `cache_store` phase: stores `response` when the rules allow, and marks it
    /// `x-cache: miss`.
    pub async fn store(
        &self,
        state: &State,
        response: Response<Body>,
        fill: Fill,
    ) -> Result<Response<Body>, GatewayError> {
        let (mut parts, body) = response.into_parts();
        parts
            .headers
            .insert(&X_CACHE, HeaderValue::from_static("miss"));
        let Some(ttl) = storable(&parts.status, &parts.headers, &fill) else {
            return Ok(Response::from_parts(parts, body));
        };
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > fill.max_entry) {
            return Ok(Response::from_parts(parts, body));
        }
        let bytes = match buffer(body, fill.max_entry).await {
            Ok(Buffered::Whole(bytes)) => bytes,
            Ok(Buffered::TooLarge(body)) => return Ok(Response::from_parts(parts, body)),
            Err(reason) => {
                return Err(GatewayError::UpstreamProtocol {
                    upstream: fill.counters.route().to_string(),
                    target: "response body".to_owned(),
                    reason,
                });
            }
        };
        let mut headers = parts.headers.clone();
        for name in UNSTORED_HEADERS {
            headers.remove(*name);
        }
        let entry = Arc::new(Entry {
            status: parts.status,
            headers,
            body: bytes.clone(),
            stored_at_ms: now_ms(),
            shared_with_authorized: shares_with_authorized(&parts.headers),
        });
        let route = fill.counters.route();
        if state
            .cache_put(route, &fill.key, entry.encode(), ttl, fill.on_error)
            .await
        {
            fill.counters.stored();
        }
        if let Some(leader) = &fill.leader {
            let _ = leader.sender.send(Some(entry));
        }
        Ok(Response::from_parts(parts, Body::full(bytes)))
    }
}

impl Fill {
    /// Answers the lookup from `entry`, counted as a hit.
    fn hit(self, entry: &Entry, method: &Method) -> Lookup {
        self.counters.hit();
        Lookup::Hit(entry.respond(method, now_ms()))
    }

    /// Sends the request on to the integration, counted as a miss.
    fn miss(self) -> Lookup {
        self.counters.miss();
        Lookup::Miss(self)
    }
}

/// RFC 9111 §3.5: a response the upstream marked for shared caches despite
/// `Authorization`.
fn shares_with_authorized(headers: &HeaderMap) -> bool {
    directive(headers, "public").is_some()
        || directive(headers, "s-maxage").is_some()
        || directive(headers, "must-revalidate").is_some()
}

/// The TTL to store the response with, or `None` when it must not be stored.
fn storable(status: &StatusCode, headers: &HeaderMap, fill: &Fill) -> Option<Duration> {
    if !CACHEABLE_STATUSES.contains(&status.as_u16()) {
        return None;
    }
    if ["no-store", "private", "no-cache"]
        .iter()
        .any(|d| directive(headers, d).is_some())
    {
        return None;
    }
    if headers.contains_key(SET_COOKIE) {
        return None;
    }
    let varies_elsewhere = headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .any(|name| {
            name == "*"
                || !fill
                    .key_headers
                    .iter()
                    .any(|key| key.as_str().eq_ignore_ascii_case(name))
        });
    if varies_elsewhere {
        return None;
    }
    if fill.authorized_shared && !shares_with_authorized(headers) {
        return None;
    }
    let upstream_ttl = seconds(directive(headers, "s-maxage").flatten())
        .or_else(|| seconds(directive(headers, "max-age").flatten()));
    let ttl = upstream_ttl.map_or(fill.ttl, |t| t.min(fill.ttl));
    (!ttl.is_zero()).then_some(ttl)
}

enum Buffered {
    Whole(Bytes),
    /// Past the limit: what was read, then the rest, to pass through.
    TooLarge(Body),
}

async fn buffer(mut body: Body, limit: u64) -> Result<Buffered, String> {
    let mut collected = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            collected.extend_from_slice(&data);
            if collected.len() as u64 > limit {
                return Ok(Buffered::TooLarge(Body::Chain(Box::new(Chain {
                    head: Some(collected.freeze()),
                    rest: body,
                }))));
            }
        }
    }
    Ok(Buffered::Whole(collected.freeze()))
}

/// `POST /cache/purge[?route=NAME]` on the admin listener.
pub async fn admin_purge(
    state: &State,
    routes: &[Route],
    query: Option<&str>,
) -> Result<u64, PurgeError> {
    let route = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("route="))
        .map(|name| {
            percent_encoding::percent_decode_str(&name.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        });
    if let Some(name) = &route
        && !routes.iter().any(|r| &r.name == name)
    {
        return Err(PurgeError::NoSuchRoute);
    }
    state
        .cache_purge(route.as_deref())
        .await
        .map_err(PurgeError::State)
}

/// Why a purge failed.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("no route with that name")]
    NoSuchRoute,
    #[error("state backend: {0}")]
    State(#[from] state::StateError),
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::headers::header_map as headers;

    fn fill(ttl: u64) -> Fill {
        Fill {
            key: String::new(),
            counters: Arc::new(CacheCounters::new("r")),
            ttl: Duration::from_secs(ttl),
            max_entry: 1024,
            on_error: OnStateError::CACHE_DEFAULT,
            authorized_shared: false,
            key_headers: vec![HeaderName::from_static("accept")],
            leader: None,
        }
    }

    #[test]
    fn entries_round_trip() {
        let entry = Entry {
            status: StatusCode::NOT_FOUND,
            headers: headers(&[("content-type", "text/plain"), ("x-a", "1"), ("x-a", "2")]),
            body: Bytes::from_static(b"hello"),
            stored_at_ms: 1_700_000_000_000,
            shared_with_authorized: true,
        };
        assert_eq!(Entry::decode(entry.encode()), Some(entry));
        assert_eq!(
            Entry::decode(Bytes::from_static(b"\x02garbage......")),
            None
        );
    }

    #[test]
    fn what_is_stored_and_for_how_long() {
        let ok = StatusCode::OK;
        assert_eq!(
            storable(&ok, &HeaderMap::new(), &fill(300)),
            Some(Duration::from_secs(300))
        );
        let capped = headers(&[("cache-control", "public, max-age=10")]);
        assert_eq!(
            storable(&ok, &capped, &fill(300)),
            Some(Duration::from_secs(10))
        );
        let s_maxage = headers(&[("cache-control", "max-age=10, s-maxage=20")]);
        assert_eq!(
            storable(&ok, &s_maxage, &fill(300)),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            storable(&ok, &capped, &fill(5)),
            Some(Duration::from_secs(5))
        );
        for refused in [
            headers(&[("cache-control", "no-store")]),
            headers(&[("cache-control", "Private")]),
            headers(&[("cache-control", "max-age=0")]),
            headers(&[("set-cookie", "a=b")]),
            headers(&[("vary", "accept-encoding")]),
            headers(&[("vary", "*")]),
        ] {
            assert_eq!(storable(&ok, &refused, &fill(300)), None, "{refused:?}");
        }
        assert!(storable(&ok, &headers(&[("vary", "Accept")]), &fill(300)).is_some());
        assert_eq!(
            storable(
                &StatusCode::INTERNAL_SERVER_ERROR,
                &HeaderMap::new(),
                &fill(300)
            ),
            None
        );
        assert_eq!(
            storable(&StatusCode::PARTIAL_CONTENT, &HeaderMap::new(), &fill(300)),
            None
        );
        let mut authorized = fill(300);
        authorized.authorized_shared = true;
        assert_eq!(storable(&ok, &HeaderMap::new(), &authorized), None);
        let public = headers(&[("cache-control", "public")]);
        assert!(storable(&ok, &public, &authorized).is_some());
    }

    #[test]
    fn refresh_requests() {
        assert!(wants_refresh(&headers(&[("cache-control", "max-age=0")])));
        assert!(wants_refresh(&headers(&[("cache-control", "no-cache")])));
        assert!(!wants_refresh(&headers(&[("cache-control", "max-age=60")])));
        assert!(!wants_refresh(&HeaderMap::new()));
    }
}
