//! The raw serde mirror of the route file: the only types that derive `Deserialize`.
//!
//! Every key is optional here and every value is in its TOML shape (durations and
//! choices are strings, integers are `i64`), so that deserializing stops only on a value
//! of the wrong TOML type; everything else (missing keys, ranges, references, files) is
//! checked by [`super::validate`], which reports all problems at once. Unknown keys are
//! collected during deserialization (`serde_ignored`) and checked against [`Table::keys`].

use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, forward_to_deserialize_any};

use super::document::Tree;
use super::keypath::{KeyPath, Segment};

/// Keys that DESIGN.md describes but this version does not implement yet. An unknown key
/// found here gets "not supported by this version of weir yet" instead of "unknown key".
/// Remove an entry when its feature lands (and add the key to the raw type).
pub const NOT_YET_SUPPORTED: &[(Table, &str)] = &[];

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawConfig {
    pub server: RawServer,
    pub upstreams: BTreeMap<String, RawUpstream>,
    pub routes: Vec<RawRoute>,
    pub state: Option<RawState>,
    pub cache: Option<RawCacheLimits>,
    pub log: RawLog,
    pub authorizers: BTreeMap<String, RawAuthorizer>,
    pub usage_plans: BTreeMap<String, RawUsagePlan>,
    pub api_keys: Vec<RawApiKey>,
    pub plugins: BTreeMap<String, RawPlugin>,
}

/// `[plugins.NAME]`: a WebAssembly component routes may use.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawPlugin {
    pub path: Option<String>,
    pub sha256: Option<String>,
    pub limits: Option<RawPluginLimits>,
    pub requests_per_instance: Option<i64>,
}

/// `[plugins.NAME] limits = { memory, timeout, concurrency }`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawPluginLimits {
    pub memory: Option<RawSize>,
    pub timeout: Option<String>,
    pub concurrency: Option<i64>,
}

/// A use of a plugin on a route: `handler = { plugin, config, body, max_body }` or one
/// entry of `filters = [{ plugin, config, body, max_body, on_error, phases }]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawPluginUse {
    pub plugin: Option<String>,
    /// Free-form: handed to the plugin as JSON, never checked by the gateway.
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
    pub body: Option<bool>,
    pub max_body: Option<RawSize>,
    /// Filters only: `"fail"` or `"skip"`.
    pub on_error: Option<String>,
    /// Filters only: `["request", "response"]` or one of them.
    pub phases: Option<Vec<String>>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawLog {
    pub access: Option<String>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawServer {
    pub listen: Option<String>,
    pub admin: Option<String>,
    pub admin_token: Option<String>,
    pub workers: Option<i64>,
    pub max_body: Option<RawSize>,
    pub request_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
    pub max_headers: Option<i64>,
    pub max_header_bytes: Option<RawSize>,
    pub max_connections: Option<i64>,
    pub trusted_proxies: Option<Vec<String>>,
    pub merge_slashes: Option<bool>,
    pub escaped_separators: Option<String>,
    pub throttle: Option<RawThrottles>,
    pub tls: Option<RawTls>,
    pub cors: Option<RawCors>,
    pub api_key_header: Option<String>,
}

/// `[server.tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawTls {
    pub listen: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
    pub client_auth: Option<String>,
    pub sni: Option<Vec<RawSni>>,
}

/// `[[server.tls.sni]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawSni {
    pub names: Option<Vec<String>>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// `[upstreams.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawUpstream {
    pub targets: Option<Vec<RawTarget>>,
    pub connect_timeout: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<i64>,
    pub http2: Option<bool>,
    pub ca: Option<String>,
    pub preserve_host: Option<bool>,
    pub eject: Option<RawEject>,
    pub pool: Option<RawPool>,
}

/// One entry of `targets`: `"http://host:port"` or `{ url = "...", weight = 2 }`.
#[derive(Debug)]
pub enum RawTarget {
    Url(String),
    Table(RawTargetTable),
}

/// `{ url = "...", weight = 2 }`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawTargetTable {
    pub url: Option<String>,
    pub weight: Option<i64>,
}

/// `eject = { failures, duration }`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawEject {
    pub failures: Option<i64>,
    pub duration: Option<String>,
}

/// `pool = { max_idle, idle_timeout }`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawPool {
    pub max_idle: Option<i64>,
    pub idle_timeout: Option<String>,
}

/// `[[routes]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawRoute {
    pub name: Option<String>,
    pub path: Option<String>,
    pub methods: Option<Vec<String>>,
    pub hosts: Option<Vec<String>>,
    pub max_body: Option<RawSize>,
    pub upstream: Option<String>,
    pub mock: Option<RawMock>,
    pub handler: Option<RawPluginUse>,
    pub filters: Option<Vec<RawPluginUse>>,
    pub throttle: Option<RawThrottles>,
    pub cache: Option<RawRouteCache>,
    pub on_state_error: Option<String>,
    pub authorizer: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub api_key: Option<bool>,
    pub cors: Option<RawCors>,
    pub allow_cidrs: Option<Vec<String>>,
    pub deny_cidrs: Option<Vec<String>>,
    pub websocket_idle_timeout: Option<String>,
    pub websocket_max_duration: Option<String>,
    pub websocket: Option<RawWebSocketApi>,
}

/// `websocket = { ... }` on a route: a WebSocket API (the gateway is the server).
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawWebSocketApi {
    pub selection: Option<String>,
    pub connect: Option<String>,
    pub disconnect: Option<String>,
    pub default: Option<String>,
    /// Route key → handler; the keys are the API's, not weir's.
    pub routes: Option<BTreeMap<String, String>>,
    /// Free-form: handed to plugin handlers as JSON.
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
    pub max_frame: Option<RawSize>,
    pub max_message: Option<RawSize>,
    pub rate: Option<f64>,
    pub burst: Option<i64>,
    pub idle_timeout: Option<String>,
    pub max_duration: Option<String>,
}

/// `[authorizers.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawAuthorizer {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub issuer: Option<RawStrings>,
    pub audience: Option<RawStrings>,
    pub jwks: Option<String>,
    pub secret: Option<String>,
    pub ca: Option<String>,
    pub algorithms: Option<Vec<String>>,
    pub leeway: Option<String>,
    pub token: Option<String>,
    pub forward_claims: Option<BTreeMap<String, String>>,
    pub jwks_refresh: Option<String>,
    pub jwks_cooldown: Option<String>,
    pub token_cache: Option<i64>,
    // `type = "plugin"`
    pub plugin: Option<String>,
    pub identity: Option<Vec<String>>,
    pub cache_ttl: Option<String>,
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
    pub forward_context: Option<BTreeMap<String, String>>,
}

/// `[usage_plans.NAME]`: the plan's limits, and per-route overrides.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawUsagePlan {
    pub rate: Option<f64>,
    pub burst: Option<i64>,
    pub quota: Option<RawQuota>,
    pub routes: Option<BTreeMap<String, RawPlanLimits>>,
}

/// `[usage_plans.NAME.routes."ROUTE"]`: a plan's limits on one route.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawPlanLimits {
    pub rate: Option<f64>,
    pub burst: Option<i64>,
    pub quota: Option<RawQuota>,
}

/// `quota = { limit, period }`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawQuota {
    pub limit: Option<i64>,
    pub period: Option<String>,
}

/// `[[api_keys]]`: one key (`name`, `key_sha256`) or a keys `file`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawApiKey {
    pub name: Option<String>,
    pub key_sha256: Option<String>,
    pub file: Option<String>,
    pub plan: Option<String>,
}

/// `cors = { ... }` on a route or in `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawCors {
    pub allow_origins: Option<Vec<String>>,
    pub allow_methods: Option<Vec<String>>,
    pub allow_headers: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub allow_credentials: Option<bool>,
    pub max_age: Option<String>,
}

/// A string or a list of strings (`audience = "a"` or `audience = ["a", "b"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawStrings(pub Vec<String>);

/// `mock = { status, body, headers }`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawMock {
    pub status: Option<i64>,
    pub body: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
}

/// `[state]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawState {
    pub backend: Option<String>,
    pub url: Option<String>,
    pub prefix: Option<String>,
    pub timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub retry_interval: Option<String>,
}

/// `[cache]`: bounds of the in-memory response cache.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawCacheLimits {
    pub max_entries: Option<i64>,
    pub max_bytes: Option<RawSize>,
    pub max_entry: Option<RawSize>,
}

/// `throttle = { rate, burst, per_client, key }`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawThrottle {
    pub rate: Option<f64>,
    pub burst: Option<i64>,
    pub per_client: Option<bool>,
    pub key: Option<String>,
}

/// `throttle`: one table, or an array of them (several buckets on one route).
#[derive(Debug)]
pub enum RawThrottles {
    One(RawThrottle),
    Many(Vec<RawThrottle>),
}

/// A route's `cache = { ttl, key, invalidate, max_entry }`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub struct RawRouteCache {
    pub ttl: Option<String>,
    pub key: Option<Vec<String>>,
    pub invalidate: Option<String>,
    pub max_entry: Option<RawSize>,
}

impl<'de> Deserialize<'de> for RawThrottles {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ThrottlesVisitor;

        impl<'de> Visitor<'de> for ThrottlesVisitor {
            type Value = RawThrottles;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table { rate, burst } or an array of them")
            }

            // Both go through the same access, so `serde_ignored` still sees unknown keys.
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawThrottles, A::Error> {
                RawThrottle::deserialize(MapAccessDeserializer::new(map)).map(RawThrottles::One)
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<RawThrottles, A::Error> {
                Vec::<RawThrottle>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(RawThrottles::Many)
            }
        }

        deserializer.deserialize_any(ThrottlesVisitor)
    }
}

/// A size: a string such as `"1MiB"`, or an integer number of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSize {
    Text(String),
    Bytes(i64),
}

impl<'de> Deserialize<'de> for RawTarget {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TargetVisitor;

        impl<'de> Visitor<'de> for TargetVisitor {
            type Value = RawTarget;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a URL string or a table { url, weight }")
            }

            fn visit_str<E: de::Error>(self, url: &str) -> Result<RawTarget, E> {
                Ok(RawTarget::Url(url.to_owned()))
            }

            // The table goes through the same `MapAccess`, so unknown keys in it are still
            // seen by `serde_ignored` (an untagged enum would buffer and hide them).
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawTarget, A::Error> {
                RawTargetTable::deserialize(MapAccessDeserializer::new(map)).map(RawTarget::Table)
            }
        }

        deserializer.deserialize_any(TargetVisitor)
    }
}

impl<'de> Deserialize<'de> for RawStrings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringsVisitor;

        impl<'de> Visitor<'de> for StringsVisitor {
            type Value = RawStrings;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<RawStrings, E> {
                Ok(RawStrings(vec![text.to_owned()]))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawStrings, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(RawStrings(items))
            }
        }

        deserializer.deserialize_any(StringsVisitor)
    }
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"1MiB\" or a number of bytes")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(text.to_owned()))
            }

            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(bytes))
            }

            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<RawSize, E> {
                i64::try_from(bytes)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::custom(format!("size {bytes} is too large")))
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A value of the wrong TOML type: deserializing stops at the first one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeError {
    pub path: KeyPath,
    /// Byte offset of the value, when the TOML deserializer knew it.
    pub offset: Option<usize>,
    pub message: String,
}

/// What deserializing the tree gives: the raw config (or the first type error) and the
/// path of every key that no raw type accepted, in the order met.
#[derive(Debug)]
pub struct Deserialized {
    pub config: Result<RawConfig, TypeError>,
    pub unknown_keys: Vec<KeyPath>,
}

/// Deserializes the parsed (and interpolated) tree into [`RawConfig`].
pub fn deserialize(tree: Tree<'_>) -> Deserialized {
    let mut unknown_keys = Vec::new();
    let mut on_ignored = |path: serde_ignored::Path<'_>| unknown_keys.push(ignored_path(&path));
    let deserializer =
        serde_ignored::Deserializer::new(toml::de::Deserializer::from(tree), &mut on_ignored);
    let config = serde_path_to_error::deserialize(deserializer).map_err(|error| TypeError {
        path: error_path(error.path()),
        offset: error.inner().span().map(|span| span.start),
        message: tidy_type_message(error.inner().message()),
    });
    Deserialized {
        config,
        unknown_keys,
    }
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> KeyPath {
    use serde_ignored::Path;
    match path {
        Path::Root => KeyPath::root(),
        Path::Seq { parent, index } => ignored_path(parent).index(*index),
        Path::Map { parent, key } => ignored_path(parent).key(key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

fn error_path(path: &serde_path_to_error::Path) -> KeyPath {
    use serde_path_to_error::Segment as S;
    let mut key_path = KeyPath::root();
    for segment in path {
        match segment {
            S::Seq { index } => key_path.push(Segment::Index(*index)),
            S::Map { key } => key_path.push(Segment::Key(key.clone())),
            S::Enum { .. } | S::Unknown => {}
        }
    }
    key_path
}

/// Serde's type names in TOML's words: `i64` is an integer, a map is a table.
fn tidy_type_message(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        ("expected i64", "expected an integer"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
        ("invalid type: map,", "invalid type: table,"),
        ("invalid type: sequence,", "invalid type: array,"),
    ];
    WORDS.iter().fold(message.to_owned(), |text, (from, to)| {
        text.replace(from, to)
    })
}

/// The kinds of table in the route file that have a fixed set of keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Root,
    Server,
    Tls,
    Sni,
    Upstream,
    Target,
    Eject,
    Pool,
    Route,
    Mock,
    State,
    CacheLimits,
    Throttle,
    RouteCache,
    Log,
    Authorizer,
    UsagePlan,
    PlanLimits,
    Quota,
    ApiKey,
    Cors,
    Plugin,
    PluginLimits,
    PluginUse,
    WebSocketApi,
}

impl Table {
    /// The kind of table found at `path`, if it has a fixed set of keys.
    pub fn at(path: &KeyPath) -> Option<Self> {
        use Segment::{Index, Key};
        let key = |segment: &Segment, name: &str| matches!(segment, Key(k) if k == name);
        Some(match path.segments() {
            [] => Self::Root,
            [s] if key(s, "server") => Self::Server,
            [l] if key(l, "log") => Self::Log,
            [s, t] if key(s, "server") && key(t, "tls") => Self::Tls,
            [s, t, n, Index(_)] if key(s, "server") && key(t, "tls") && key(n, "sni") => Self::Sni,
            [u, Key(_)] if key(u, "upstreams") => Self::Upstream,
            [u, Key(_), t, Index(_)] if key(u, "upstreams") && key(t, "targets") => Self::Target,
            [u, Key(_), e] if key(u, "upstreams") && key(e, "eject") => Self::Eject,
            [u, Key(_), p] if key(u, "upstreams") && key(p, "pool") => Self::Pool,
            [r, Index(_)] if key(r, "routes") => Self::Route,
            [s] if key(s, "state") => Self::State,
            [c] if key(c, "cache") => Self::CacheLimits,
            [s, t] | [s, t, Index(_)] if key(s, "server") && key(t, "throttle") => Self::Throttle,
            [r, Index(_), t] | [r, Index(_), t, Index(_)]
                if key(r, "routes") && key(t, "throttle") =>
            {
                Self::Throttle
            }
            [r, Index(_), c] if key(r, "routes") && key(c, "cache") => Self::RouteCache,
            [r, Index(_), m] if key(r, "routes") && key(m, "mock") => Self::Mock,
            [r, Index(_), c] if key(r, "routes") && key(c, "cors") => Self::Cors,
            [s, c] if key(s, "server") && key(c, "cors") => Self::Cors,
            [a, Key(_)] if key(a, "authorizers") => Self::Authorizer,
            [k, Index(_)] if key(k, "api_keys") => Self::ApiKey,
            [p, Key(_)] if key(p, "usage_plans") => Self::UsagePlan,
            [p, Key(_)] if key(p, "plugins") => Self::Plugin,
            [p, Key(_), l] if key(p, "plugins") && key(l, "limits") => Self::PluginLimits,
            [r, Index(_), h] if key(r, "routes") && key(h, "handler") => Self::PluginUse,
            [r, Index(_), f, Index(_)] if key(r, "routes") && key(f, "filters") => Self::PluginUse,
            [r, Index(_), w] if key(r, "routes") && key(w, "websocket") => Self::WebSocketApi,
            [p, Key(_), q] if key(p, "usage_plans") && key(q, "quota") => Self::Quota,
            [p, Key(_), r, Key(_)] if key(p, "usage_plans") && key(r, "routes") => Self::PlanLimits,
            [p, Key(_), r, Key(_), q]
                if key(p, "usage_plans") && key(r, "routes") && key(q, "quota") =>
            {
                Self::Quota
            }
            _ => return None,
        })
    }

    /// The keys this kind of table accepts, read from its raw type's `Deserialize`.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Self::Root => field_names::<RawConfig>(),
            Self::Server => field_names::<RawServer>(),
            Self::Tls => field_names::<RawTls>(),
            Self::Sni => field_names::<RawSni>(),
            Self::Upstream => field_names::<RawUpstream>(),
            Self::Target => field_names::<RawTargetTable>(),
            Self::Eject => field_names::<RawEject>(),
            Self::Pool => field_names::<RawPool>(),
            Self::Route => field_names::<RawRoute>(),
            Self::Mock => field_names::<RawMock>(),
            Self::State => field_names::<RawState>(),
            Self::CacheLimits => field_names::<RawCacheLimits>(),
            Self::Throttle => field_names::<RawThrottle>(),
            Self::RouteCache => field_names::<RawRouteCache>(),
            Self::Log => field_names::<RawLog>(),
            Self::Authorizer => field_names::<RawAuthorizer>(),
            Self::UsagePlan => field_names::<RawUsagePlan>(),
            Self::PlanLimits => field_names::<RawPlanLimits>(),
            Self::Quota => field_names::<RawQuota>(),
            Self::ApiKey => field_names::<RawApiKey>(),
            Self::Cors => field_names::<RawCors>(),
            Self::Plugin => field_names::<RawPlugin>(),
            Self::PluginLimits => field_names::<RawPluginLimits>(),
            Self::PluginUse => field_names::<RawPluginUse>(),
            Self::WebSocketApi => field_names::<RawWebSocketApi>(),
        }
    }

    /// Whether `key` is planned for this table but not implemented yet.
    pub fn is_not_yet_supported(self, key: &str) -> bool {
        NOT_YET_SUPPORTED
            .iter()
            .any(|(table, name)| *table == self && *name == key)
    }
}

/// The field names a derived `Deserialize` struct passes to `deserialize_struct`.
fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // Always fails: the deserializer stops as soon as it has seen the field names.
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// A deserializer that records the field names of the struct asked of it, and nothing else.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names recorded"))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_keys_come_from_the_raw_types() {
        assert_eq!(Table::Eject.keys(), ["failures", "duration"]);
        assert!(Table::Server.keys().contains(&"escaped_separators"));
        assert!(Table::Route.keys().contains(&"mock"));
    }

    #[test]
    fn not_yet_supported_keys_are_not_raw_keys() {
        for (table, key) in NOT_YET_SUPPORTED {
            assert!(
                !table.keys().contains(key),
                "{table:?}.{key} is implemented"
            );
        }
    }

    #[test]
    fn tables_by_path() {
        let root = KeyPath::root();
        assert_eq!(Table::at(&root), Some(Table::Root));
        assert_eq!(
            Table::at(&root.key("server").key("tls").key("sni").index(1)),
            Some(Table::Sni)
        );
        let users = root.key("upstreams").key("users");
        assert_eq!(Table::at(&users), Some(Table::Upstream));
        assert_eq!(
            Table::at(&users.key("targets").index(0)),
            Some(Table::Target)
        );
        assert_eq!(Table::at(&users.key("pool")), Some(Table::Pool));
        assert_eq!(
            Table::at(&root.key("routes").index(3).key("mock")),
            Some(Table::Mock)
        );
        assert_eq!(
            Table::at(&root.key("routes").index(3).key("mock").key("headers")),
            None
        );
    }
}
