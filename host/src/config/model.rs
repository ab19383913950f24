//! The validated route file: the only form of configuration the running gateway sees.
//!
//! Everything here is resolved and checked: references are indices, durations are
//! [`Duration`]s, sizes are byte counts, certificates are parsed. It is built by
//! `validate.rs` from the raw serde mirror in `raw.rs`, and never derives
//! `Deserialize` itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use ipnet::IpNet;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use super::plugins::{OnError, Phases, Plugin, PluginLimits, PluginUse};
pub use super::traffic::{
    CacheKeyPart, CacheLimits, Invalidate, RouteCache, RouteTraffic, Throttle, ThrottleKey, Traffic,
};
pub use super::websocket::{WebSocketApi, WebSocketProxy, WsHandler};
use crate::access_log::AccessLogTarget;
use crate::path::PathOptions;
use crate::router::Router;

/// Default for `[server] max_body`: the largest request body the gateway accepts.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Default for `[server] request_timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for `[server] header_read_timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for `[server] idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for `[server] max_headers`.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default for `[server] max_header_bytes`.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Default for `[server] max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default for `[server] shutdown_grace`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default for `[upstreams.*] connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default for `[upstreams.*] timeout`.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for `[upstreams.*] retries`.
pub const DEFAULT_RETRIES: u32 = 1;
/// Default for `[upstreams.*] eject.failures`.
pub const DEFAULT_EJECT_FAILURES: u32 = 5;
/// Default for `[upstreams.*] eject.duration`.
pub const DEFAULT_EJECT_DURATION: Duration = Duration::from_secs(30);
/// Default for `[upstreams.*] pool.max_idle` (per target).
pub const DEFAULT_POOL_MAX_IDLE: usize = 64;
/// Default for `[upstreams.*] pool.idle_timeout`.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default weight of an upstream target.
pub const DEFAULT_TARGET_WEIGHT: u32 = 1;

/// A whole, validated route file.
#[derive(Debug)]
pub struct Config {
    /// The file this was read from (for messages and reloads).
    pub source: PathBuf,
    pub server: Server,
    /// Named upstream pools; routes refer to them by index.
    pub upstreams: Vec<Upstream>,
    /// Routes in file order; the router refers to them by index.
    pub routes: Vec<Route>,
    /// The compiled route table (built from `routes`).
    pub router: Router,
    /// `[log]`.
    pub log: Log,
    /// `[state]` and `[cache]`.
    pub traffic: Traffic,
    /// `[authorizers]`, `[usage_plans]`, `[[api_keys]]`.
    pub access: Access,
    /// `[plugins.NAME]`, in file order; plugin uses refer to them by index.
    pub plugins: Vec<Plugin>,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// `access = "stdout" | "off" | "PATH"`: where access log lines go.
    pub access: AccessLogTarget,
}

/// `[server]`.
#[derive(Debug)]
pub struct Server {
    /// `listen`: plain HTTP listener. At least one of `listen` and `tls.listen` is set.
    pub listen: Option<SocketAddr>,
    /// `admin`: the admin listener (health, readiness).
    pub admin: Option<SocketAddr>,
    /// `admin_token`: when set, admin endpoints other than `/healthz` and `/readyz` need
    /// `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// `[server.tls]`.
    pub tls: Option<Tls>,
    /// `workers`: runtime worker threads; `None` = one per CPU.
    pub workers: Option<usize>,
    /// `max_body`, bytes.
    pub max_body: u64,
    /// `request_timeout`: from the request head to the response head.
    pub request_timeout: Duration,
    /// `header_read_timeout`: a client must send a whole request head within this.
    pub header_read_timeout: Duration,
    /// `idle_timeout`: a connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// `max_headers`: the most request header fields accepted (`431` past it).
    pub max_headers: usize,
    /// `max_header_bytes`: the largest request head accepted (`431` past it).
    pub max_header_bytes: usize,
    /// `max_connections`: open client connections across all public listeners.
    pub max_connections: usize,
    /// `shutdown_grace`: how long `SIGTERM` waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// `trusted_proxies`: peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `merge_slashes` and `escaped_separators`.
    pub paths: PathOptions,
    /// `throttle`: server-wide buckets, taken before the route's.
    pub throttle: Vec<Throttle>,
}

/// `[server.tls]`.
#[derive(Debug)]
pub struct Tls {
    /// `listen`.
    pub listen: SocketAddr,
    /// `cert` + `key`: served when no `[[server.tls.sni]]` entry matches (or no SNI is sent).
    pub default_cert: CertKey,
    /// `[[server.tls.sni]]`: certificates chosen by the client's server name.
    pub sni: Vec<SniCert>,
    /// `client_ca`: CA certificates that client certificates must chain to (mutual TLS).
    pub client_ca: Option<Vec<CertificateDer<'static>>>,
    /// `client_auth`: whether a client certificate is required when `client_ca` is set.
    pub client_auth: ClientAuth,
}

/// A certificate chain and its private key, read from PEM files.
#[derive(Debug)]
pub struct CertKey {
    pub cert_path: PathBuf,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// One `[[server.tls.sni]]` entry.
#[derive(Debug)]
pub struct SniCert {
    /// Lower-case server names; a leading `*.` matches exactly one label.
    pub names: Vec<String>,
    pub cert: CertKey,
}

/// `client_auth = "required" | "optional"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Required,
    Optional,
}

/// `[upstreams.NAME]`: a pool of targets that routes proxy to.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub targets: Vec<Target>,
    /// `connect_timeout`: TCP + TLS handshake with one target.
    pub connect_timeout: Duration,
    /// `timeout`: from sending the request to receiving the response head (`504` past it).
    pub timeout: Duration,
    /// `retries`: further attempts on other targets (connect failures, or idempotent
    /// methods with no request body).
    pub retries: u32,
    /// `http2`: speak HTTP/2 to targets (prior knowledge for `http`, ALPN for `https`).
    pub http2: bool,
    /// `ca`: trust these CAs for `https` targets instead of the built-in web roots.
    pub ca: Option<Vec<CertificateDer<'static>>>,
    /// `preserve_host`: send the client's `Host` instead of the target's authority.
    pub preserve_host: bool,
    /// `eject`: passive health checking.
    pub eject: Eject,
    /// `pool`: connection pool per target.
    pub pool: Pool,
}

/// `eject = { failures, duration }`.
#[derive(Debug, Clone, Copy)]
pub struct Eject {
    /// Consecutive failures (connect errors, timeouts, 502/503/504) that eject a target.
    pub failures: u32,
    /// How long an ejected target is skipped.
    pub duration: Duration,
}

/// `pool = { max_idle, idle_timeout }`.
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    pub max_idle: usize,
    pub idle_timeout: Duration,
}

/// One target of an upstream: `"http://host:port/base"` or `{ url = "...", weight = 3 }`.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as written (for logs and `weir routes`).
    pub url: String,
    pub scheme: Scheme,
    /// `host[:port]` as sent in `Host`.
    pub authority: http::uri::Authority,
    /// Host name or IP literal (no brackets), for connecting and for TLS SNI.
    pub host: String,
    pub port: u16,
    /// Path prefix prepended to the request path; empty or starts with `/` without a
    /// trailing `/`.
    pub base_path: String,
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// One `[[routes]]` entry.
#[derive(Debug)]
pub struct Route {
    /// `name`, or `"METHODS path"` (plus `" on HOSTS"` when `hosts` is set) when not
    /// given. Unique.
    pub name: String,
    /// `methods`; `None` = any method.
    pub methods: Option<Vec<Method>>,
    /// `path`: the template as written.
    pub path: String,
    /// `hosts`: lower-case host names (`*.example.com` allowed); empty = any host.
    pub hosts: Vec<String>,
    /// `max_body`: overrides `[server] max_body` for this route.
    pub max_body: Option<u64>,
    pub integration: Integration,
    /// `filters`: Wasm filters, run in order on the request and in reverse order on the
    /// response.
    pub filters: Vec<PluginUse>,
    /// `throttle`, `cache`, `on_state_error`.
    pub traffic: RouteTraffic,
    /// `authorizer`, `scopes`, `api_key`, `cors`, `allow_cidrs`, `deny_cidrs`.
    pub access: RouteAccess,
    /// `websocket_idle_timeout`, `websocket_max_duration` (routes with `upstream`).
    pub websocket: WebSocketProxy,
}

/// What produces a route's response.
#[derive(Debug)]
pub enum Integration {
    /// `upstream = "NAME"`: index into [`Config::upstreams`].
    Upstream(usize),
    /// `mock = { status, headers, body }`.
    Mock(Mock),
    /// `handler = { plugin, config, body, max_body }`: a Wasm plugin answers.
    Handler(PluginUse),
    /// `websocket = { ... }`: a WebSocket API; the gateway answers the handshake itself
    /// and calls the API's handlers on its connections' events (`crate::websocket::api`).
    WebSocket(Box<WebSocketApi>),
}

/// `mock = { status = 200, body = "...", headers = { ... } }`.
#[derive(Debug, Clone)]
pub struct Mock {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

// ---- access control: authorizers, usage plans, API keys, CORS, client addresses ----

/// Default `[authorizers.*] leeway`: clock skew allowed on `exp` and `nbf`.
pub const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(60);
/// Default `[authorizers.*] jwks_refresh`: age after which a fetched key set is refetched.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(10 * 60);
/// Default `[authorizers.*] jwks_cooldown`: the least time between two fetches caused by
/// tokens naming unknown keys.
pub const DEFAULT_JWKS_COOLDOWN: Duration = Duration::from_secs(30);
/// Default `[authorizers.*] token_cache`: verified tokens remembered per authorizer.
pub const DEFAULT_JWT_TOKEN_CACHE: usize = 10_000;
/// Default `[server] api_key_header`.
pub const DEFAULT_API_KEY_HEADER: &str = "x-api-key";

/// Top-level access-control tables.
#[derive(Debug)]
pub struct Access {
    /// `[authorizers.NAME]`, in file order; routes refer to them by index.
    pub authorizers: Vec<Authorizer>,
    /// `[usage_plans.NAME]`, in file order; API keys refer to them by index.
    pub usage_plans: Vec<UsagePlan>,
    /// `[[api_keys]]` and `[server] api_key_header`.
    pub api_keys: ApiKeys,
}

/// `[authorizers.NAME]`.
#[derive(Debug)]
pub struct Authorizer {
    pub name: String,
    /// `type`, and that type's keys.
    pub kind: AuthorizerKind,
}

/// What an authorizer is.
#[derive(Debug)]
pub enum AuthorizerKind {
    /// `type = "jwt"`: the built-in JWT validator.
    Jwt(JwtConfig),
    /// `type = "plugin"`: a Wasm component of the `authorizer` world decides.
    Plugin(PluginAuthorizer),
}

/// Default `[authorizers.*] cache_ttl` of a plugin authorizer.
pub const DEFAULT_AUTHORIZER_CACHE_TTL: Duration = Duration::from_secs(300);

/// A `type = "plugin"` authorizer.
#[derive(Debug)]
pub struct PluginAuthorizer {
    /// `plugin` and `config` (never a body: authorizers see heads only).
    pub plugin: PluginUse,
    /// `identity`: where the caller's credentials are. Any missing → `401` without a
    /// plugin call. Their values key the decision cache.
    pub identity: Vec<IdentitySource>,
    /// `cache_ttl`: how long a decision is reused for the same identity values
    /// (zero = never; always zero without `identity`).
    pub cache_ttl: Duration,
    /// `forward_context`: context key → header sent upstream.
    pub forward_context: Vec<(String, http::HeaderName)>,
}

/// One `identity` source of a plugin authorizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// `header:NAME`: the header's value (all of its lines, comma-joined).
    Header(http::HeaderName),
    /// `query:NAME`: the first query parameter of that name, as sent.
    Query(String),
    /// `cookie:NAME`: the cookie's value.
    Cookie(String),
}

/// A `type = "jwt"` authorizer.
#[derive(Debug)]
pub struct JwtConfig {
    /// `issuer`: accepted `iss` values.
    pub issuers: Vec<String>,
    /// `audience`: accepted `aud` values (a token's `aud` must name one).
    pub audiences: Vec<String>,
    /// `jwks` (file or URL) or `secret`.
    pub keys: JwtKeys,
    /// `algorithms`: the allow-list.
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// `leeway`: clock skew allowed on `exp` and `nbf` (whole seconds).
    pub leeway: Duration,
    /// `token`: where the token is read from.
    pub token: TokenSource,
    /// `forward_claims`: claim name → header sent upstream.
    pub forward_claims: Vec<(String, http::HeaderName)>,
    /// `token_cache`: verified tokens remembered (0 = verify every request).
    pub token_cache: usize,
}

/// Where a JWT authorizer's keys come from.
#[derive(Debug)]
pub enum JwtKeys {
    /// A JWKS file read at validation, or a `secret` (one HMAC key).
    Fixed(std::sync::Arc<crate::jwt::jwks::KeySet>),
    /// A JWKS URL, fetched at start and refreshed.
    Remote {
        url: crate::jwt::jwks::JwksUrl,
        /// `ca`: trust these CAs for the URL instead of the web roots.
        ca: Option<Vec<CertificateDer<'static>>>,
        /// `jwks_refresh`.
        refresh: Duration,
        /// `jwks_cooldown`.
        cooldown: Duration,
    },
}

/// `token = "header:NAME" | "cookie:NAME" | "query:NAME"`.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// `Authorization: Bearer TOKEN` (the default, `"header:authorization"`).
    Bearer(http::HeaderName),
    /// Another header; its whole value is the token (a `Bearer ` prefix is allowed).
    Header(http::HeaderName),
    Cookie(String),
    Query(String),
}

/// `[usage_plans.NAME]`.
#[derive(Debug)]
pub struct UsagePlan {
    pub name: String,
    /// The plan's limits on every route without an override.
    pub limits: PlanLimits,
    /// `routes."ROUTE"`: overrides by route index (each with its own counters).
    pub routes: Vec<(usize, PlanLimits)>,
}

impl UsagePlan {
    /// The limits on route `route`, and whether they are the route's own (an override).
    pub fn limits_for(&self, route: usize) -> (&PlanLimits, bool) {
        match self.routes.iter().find(|(index, _)| *index == route) {
            Some((_, limits)) => (limits, true),
            None => (&self.limits, false),
        }
    }
}

/// `rate`, `burst` and `quota` of a plan (or of one route in it).
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanLimits {
    /// `rate` + `burst`: a token bucket per key.
    pub rate: Option<crate::state::Limit>,
    /// `quota = { limit, period }`: requests per calendar period per key.
    pub quota: Option<crate::state::Quota>,
}

/// `[[api_keys]]`.
#[derive(Debug)]
pub struct ApiKeys {
    /// `[server] api_key_header`: where clients send their key.
    pub header: http::HeaderName,
    pub keys: Vec<ApiKey>,
}

/// One API key: its name and the SHA-256 digest of the key (the key itself is never kept).
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub name: String,
    pub sha256: [u8; 32],
    /// Index into [`Access::usage_plans`]; `None` = no limits.
    pub plan: Option<usize>,
}

/// A route's access rules.
#[derive(Debug, Default)]
pub struct RouteAccess {
    /// `authorizer`: index into [`Access::authorizers`].
    pub authorizer: Option<usize>,
    /// `scopes`: the token must carry at least one (empty = no scope check).
    pub scopes: Vec<String>,
    /// `api_key = true`.
    pub api_key: bool,
    /// `cors`, or `[server] cors` when the route has none.
    pub cors: Option<std::sync::Arc<crate::cors::Cors>>,
    /// `allow_cidrs` / `deny_cidrs` on the client address.
    pub addresses: Option<AddressRules>,
}

/// `allow_cidrs` and `deny_cidrs`.
#[derive(Debug, Default)]
pub struct AddressRules {
    /// When not empty, the client must be in one of these.
    pub allow: Vec<IpNet>,
    /// The client must be in none of these (wins over `allow`).
    pub deny: Vec<IpNet>,
}

impl AddressRules {
    /// Whether a client at `ip` may use the route.
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        !self.deny.iter().any(|net| net.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip)))
    }
}
