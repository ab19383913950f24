//! Validation of the access-control keys: `[authorizers.NAME]`, `[usage_plans.NAME]`,
//! `[[api_keys]]`, `[server] cors` / `api_key_header`, and the route keys `authorizer`,
//! `scopes`, `api_key`, `cors`, `allow_cidrs`, `deny_cidrs`.
//!
//! Called once from [`super::validate::validate`] after the routes (usage plans name
//! routes); reports every problem like the rest of the pass.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use ipnet::IpNet;
use jsonwebtoken::Algorithm;

use super::document::{Document, Report};
use super::keypath::KeyPath;
use super::model::*;
use super::names::{did_you_mean, is_upstream_name};
use super::pem;
use super::raw::{
    RawApiKey, RawAuthorizer, RawConfig, RawCors, RawPlanLimits, RawPluginUse, RawQuota, RawRoute,
    RawUsagePlan,
};
use super::units::parse_duration;
use crate::cors::{Cors, OriginRule};
use crate::jwt::jwks::{self, JwksUrl, Key, KeySet, KeyType};
use crate::state::{Limit, Period, Quota};

/// The smallest usage-plan `rate` accepted (one request per 1000 s).
pub const MIN_PLAN_RATE: f64 = 0.001;
/// The largest `leeway` accepted.
pub const MAX_JWT_LEEWAY: Duration = Duration::from_secs(10 * 60);
/// The shortest `jwks_cooldown` accepted.
pub const MIN_JWKS_COOLDOWN: Duration = Duration::from_secs(1);
/// The shortest HMAC secret accepted, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;
/// The algorithms allowed when `algorithms` is not given: every asymmetric one.
pub const DEFAULT_JWT_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The keys only a `type = "jwt"` authorizer has.
const JWT_AUTHORIZER_KEYS: &[&str] = &[
    "issuer",
    "audience",
    "jwks",
    "secret",
    "ca",
    "algorithms",
    "leeway",
    "token",
    "forward_claims",
    "jwks_refresh",
    "jwks_cooldown",
    "token_cache",
];
/// The keys only a `type = "plugin"` authorizer has.
const PLUGIN_AUTHORIZER_KEYS: &[&str] = &[
    "plugin",
    "identity",
    "cache_ttl",
    "config",
    "forward_context",
];

/// A route's access keys, taken out of its raw table before the route is validated.
#[derive(Debug, Default)]
pub struct RawRouteAccess {
    authorizer: Option<String>,
    scopes: Option<Vec<String>>,
    api_key: Option<bool>,
    cors: Option<RawCors>,
    allow_cidrs: Option<Vec<String>>,
    deny_cidrs: Option<Vec<String>>,
}

impl RawRouteAccess {
    pub fn take(raw: &mut RawRoute) -> RawRouteAccess {
        RawRouteAccess {
            authorizer: raw.authorizer.take(),
            scopes: raw.scopes.take(),
            api_key: raw.api_key.take(),
            cors: raw.cors.take(),
            allow_cidrs: raw.allow_cidrs.take(),
            deny_cidrs: raw.deny_cidrs.take(),
        }
    }
}

/// The top-level access tables, taken out of the raw config before `[server]` is validated.
#[derive(Debug, Default)]
pub struct RawAccess {
    authorizers: BTreeMap<String, RawAuthorizer>,
    usage_plans: BTreeMap<String, RawUsagePlan>,
    api_keys: Vec<RawApiKey>,
    server_cors: Option<RawCors>,
    api_key_header: Option<String>,
    routes: Vec<RawRouteAccess>,
}

impl RawAccess {
    pub fn take(raw: &mut RawConfig) -> RawAccess {
        RawAccess {
            authorizers: std::mem::take(&mut raw.authorizers),
            usage_plans: std::mem::take(&mut raw.usage_plans),
            api_keys: std::mem::take(&mut raw.api_keys),
            server_cors: raw.server.cors.take(),
            api_key_header: raw.server.api_key_header.take(),
            routes: raw.routes.iter_mut().map(RawRouteAccess::take).collect(),
        }
    }
}

/// Validates the access tables and fills in each route's [`RouteAccess`].
pub fn access(
    report: &mut Report<'_>,
    document: &Document<'_>,
    base_dir: &Path,
    raw: RawAccess,
    routes: &mut [Route],
    plugins: super::plugins::UseNames<'_>,
) -> Access {
    let mut v = AccessValidator { report, base_dir };
    let authorizers = v.authorizers(document, raw.authorizers, plugins);
    let server_cors = raw
        .server_cors
        .map(|cors| Arc::new(v.cors(&KeyPath::root().key("server").key("cors"), cors)));
    let routes_path = KeyPath::root().key("routes");
    for (i, (route, raw)) in routes.iter_mut().zip(raw.routes).enumerate() {
        route.access = v.route_access(
            &routes_path.index(i),
            raw,
            &authorizers,
            server_cors.as_ref(),
        );
    }
    let usage_plans = v.usage_plans(document, raw.usage_plans, routes);
    let api_keys = v.api_keys(raw.api_keys, raw.api_key_header, &usage_plans);
    Access {
        authorizers,
        usage_plans,
        api_keys,
    }
}

struct AccessValidator<'r, 'd> {
    report: &'r mut Report<'d>,
    base_dir: &'r Path,
}

impl AccessValidator<'_, '_> {
    // ---- [authorizers.NAME] ----

    fn authorizers(
        &mut self,
        document: &Document<'_>,
        raw: BTreeMap<String, RawAuthorizer>,
        plugins: super::plugins::UseNames<'_>,
    ) -> Vec<Authorizer> {
        let base = KeyPath::root().key("authorizers");
        let mut raw: Vec<(String, RawAuthorizer)> = raw.into_iter().collect();
        raw.sort_by_key(|(name, _)| document.key_offset(&base.key(name)));
        raw.into_iter()
            .filter_map(|(name, raw)| self.authorizer(&base.key(&name), name, raw, plugins))
            .collect()
    }

    fn authorizer(
        &mut self,
        path: &KeyPath,
        name: String,
        raw: RawAuthorizer,
        plugins: super::plugins::UseNames<'_>,
    ) -> Option<Authorizer> {
        if !is_upstream_name(&name) {
            self.report.at_key(
                path,
                format!("invalid authorizer name {name:?}, expected letters, digits, `_` and `-`"),
            );
        }
        match raw.kind.as_deref() {
            Some("jwt") => self.only_for(path, "jwt", PLUGIN_AUTHORIZER_KEYS),
            Some("plugin") => {
                self.only_for(path, "plugin", JWT_AUTHORIZER_KEYS);
                let plugin = self.plugin_authorizer(path, raw, plugins);
                return Some(Authorizer {
                    name,
                    kind: AuthorizerKind::Plugin(plugin),
                });
            }
            Some(other) => {
                self.report.at(
                    &path.key("type"),
                    format!("invalid authorizer type {other:?}, expected \"jwt\" or \"plugin\""),
                );
                return None;
            }
            None => {
                self.report.at(
                    &path.key("type"),
                    "missing required key, expected \"jwt\" or \"plugin\"",
                );
                return None;
            }
        }
        let issuers = self.strings(
            &path.key("issuer"),
            raw.issuer.map(|s| s.0),
            "an issuer URL",
        );
        let audiences = self.strings(
            &path.key("audience"),
            raw.audience.map(|s| s.0),
            "an audience",
        );
        let algorithms = self.algorithms(&path.key("algorithms"), raw.algorithms);
        let keys = self.jwt_keys(path, &raw.jwks, &raw.secret, &raw.ca, &algorithms);
        let refresh = self.duration(
            &path.key("jwks_refresh"),
            raw.jwks_refresh,
            DEFAULT_JWKS_REFRESH,
        );
        let cooldown = self.duration(
            &path.key("jwks_cooldown"),
            raw.jwks_cooldown,
            DEFAULT_JWKS_COOLDOWN,
        );
        if cooldown < MIN_JWKS_COOLDOWN {
            self.report.at(
                &path.key("jwks_cooldown"),
                format!(
                    "expected at least {}, got {cooldown:?}",
                    humantime::format_duration(MIN_JWKS_COOLDOWN)
                ),
            );
        }
        if raw
            .jwks
            .as_deref()
            .is_none_or(|jwks| !jwks.starts_with("https://"))
        {
            for key in ["jwks_refresh", "jwks_cooldown", "ca"] {
                if self.report.is_in_file(&path.key(key)) {
                    self.report.at(
                        &path.key(key),
                        "only meaningful with an https:// `jwks` URL",
                    );
                }
            }
        }
        let leeway = self.duration(&path.key("leeway"), raw.leeway, DEFAULT_JWT_LEEWAY);
        if leeway > MAX_JWT_LEEWAY || leeway.subsec_nanos() != 0 {
            self.report
                .at(&path.key("leeway"), "expected whole seconds, at most 10m");
        }
        let token = self.token_source(&path.key("token"), raw.token);
        let forward_claims = self.forward_claims(&path.key("forward_claims"), raw.forward_claims);
        let token_cache = match raw.token_cache {
            None => DEFAULT_JWT_TOKEN_CACHE,
            Some(n) => usize::try_from(n).unwrap_or_else(|_| {
                self.report.at(
                    &path.key("token_cache"),
                    format!("expected an integer of at least 0, got {n}"),
                );
                DEFAULT_JWT_TOKEN_CACHE
            }),
        };
        let keys = match keys? {
            KeysChoice::Fixed(set) => JwtKeys::Fixed(set),
            KeysChoice::Url(url, ca) => JwtKeys::Remote {
                url,
                ca,
                refresh,
                cooldown,
            },
        };
        Some(Authorizer {
            name,
            kind: AuthorizerKind::Jwt(JwtConfig {
                issuers,
                audiences,
                keys,
                algorithms,
                leeway,
                token,
                forward_claims,
                token_cache,
            }),
        })
    }

    /// Reports the keys of `path` that belong to another authorizer type.
    fn only_for(&mut self, path: &KeyPath, kind: &str, others: &[&str]) {
        for key in others {
            if self.report.is_in_file(&path.key(key)) {
                self.report.at(
                    &path.key(key),
                    format!("not a key of a type = {kind:?} authorizer"),
                );
            }
        }
    }

    /// The keys of a `type = "plugin"` authorizer.
    fn plugin_authorizer(
        &mut self,
        path: &KeyPath,
        raw: RawAuthorizer,
        plugins: super::plugins::UseNames<'_>,
    ) -> PluginAuthorizer {
        let use_ = RawPluginUse {
            plugin: raw.plugin,
            config: raw.config,
            ..RawPluginUse::default()
        };
        let plugin = super::plugins::plugin_use(
            self.report,
            path,
            use_,
            plugins,
            super::plugins::UseKind::Authorizer,
        );
        let identity_path = path.key("identity");
        let identity: Vec<IdentitySource> = raw
            .identity
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, text)| self.identity_source(&identity_path.index(i), text))
            .collect();
        let mut cache_ttl = self.duration(
            &path.key("cache_ttl"),
            raw.cache_ttl,
            DEFAULT_AUTHORIZER_CACHE_TTL,
        );
        if identity.is_empty() {
            if self.report.is_in_file(&path.key("cache_ttl")) && !cache_ttl.is_zero() {
                self.report.at(
                    &path.key("cache_ttl"),
                    "decisions are cached by `identity`: give `identity` sources, or leave \
                     `cache_ttl` out",
                );
            }
            cache_ttl = Duration::ZERO;
        }
        let forward_context =
            self.forward_claims(&path.key("forward_context"), raw.forward_context);
        PluginAuthorizer {
            plugin,
            identity,
            cache_ttl,
            forward_context,
        }
    }

    /// `"header:NAME"`, `"query:NAME"` or `"cookie:NAME"`.
    fn identity_source(&mut self, path: &KeyPath, text: &str) -> Option<IdentitySource> {
        let source = match text.split_once(':') {
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .ok()
                .map(IdentitySource::Header),
            Some(("cookie", name)) if is_token_name(name) => {
                Some(IdentitySource::Cookie(name.to_owned()))
            }
            Some(("query", name)) if is_token_name(name) => {
                Some(IdentitySource::Query(name.to_owned()))
            }
            _ => None,
        };
        if source.is_none() {
            self.report.at(
                path,
                format!(
                    "invalid identity source {text:?}, expected \"header:NAME\", \"query:NAME\" or \"cookie:NAME\""
                ),
            );
        }
        source
    }

    /// A required, non-empty list of non-empty strings (or one string).
    fn strings(&mut self, path: &KeyPath, raw: Option<Vec<String>>, what: &str) -> Vec<String> {
        let Some(list) = raw else {
            self.report.at(
                path,
                format!("missing required key, expected {what} (or a list)"),
            );
            return Vec::new();
        };
        if list.is_empty() || list.iter().any(String::is_empty) {
            self.report.at(
                path,
                format!("expected {what} or a list of them, none empty"),
            );
        }
        list
    }

    fn algorithms(&mut self, path: &KeyPath, raw: Option<Vec<String>>) -> Vec<Algorithm> {
        let Some(names) = raw else {
            return DEFAULT_JWT_ALGORITHMS.to_vec();
        };
        if names.is_empty() {
            self.report.at(path, "expected at least one algorithm");
        }
        let mut algorithms = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match Algorithm::from_str(name) {
                Ok(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
                Ok(_) => self
                    .report
                    .at(&path.index(i), format!("duplicate algorithm {name:?}")),
                Err(_) => self.report.at(
                    &path.index(i),
                    format!(
                        "unknown algorithm {name:?}, expected one of RS256, RS384, RS512, PS256, \
                         PS384, PS512, ES256, ES384, EdDSA, HS256, HS384, HS512"
                    ),
                ),
            }
        }
        algorithms
    }

    fn jwt_keys(
        &mut self,
        path: &KeyPath,
        jwks: &Option<String>,
        secret: &Option<String>,
        ca: &Option<String>,
        algorithms: &[Algorithm],
    ) -> Option<KeysChoice> {
        let is_hmac =
            |alg: &Algorithm| matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
        let hmac = algorithms.iter().filter(|a| is_hmac(a)).count();
        match (jwks, secret) {
            (Some(_), Some(_)) => {
                self.report.at(
                    &path.key("secret"),
                    "give either `jwks` or `secret`, not both",
                );
                None
            }
            (None, None) => {
                self.report.at(
                    &path.key("jwks"),
                    "missing required key, expected a JWKS file or https:// URL (or `secret`)",
                );
                None
            }
            (None, Some(secret)) => {
                let secret_path = path.key("secret");
                let written = self.report.value_text(&secret_path).unwrap_or_default();
                let from_env = written
                    .trim_matches(|c| c == '"' || c == '\'')
                    .strip_prefix("${env:")
                    .is_some_and(|rest| rest.ends_with('}') && !rest.contains("${"));
                if !from_env {
                    self.report.at(
                        &secret_path,
                        "the secret must come from the environment: write exactly \"${env:NAME}\"",
                    );
                }
                if secret.len() < MIN_HMAC_SECRET_BYTES {
                    self.report.at(
                        &secret_path,
                        format!("the secret is too short, expected at least {MIN_HMAC_SECRET_BYTES} bytes"),
                    );
                }
                if hmac == 0 || hmac != algorithms.len() {
                    self.report.at(
                        &path.key("algorithms"),
                        "a `secret` needs `algorithms` of HS256, HS384 or HS512 only",
                    );
                }
                Some(KeysChoice::Fixed(Arc::new(KeySet::single(Key {
                    kid: None,
                    key_type: KeyType::Hmac,
                    alg: None,
                    decoding: jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
                }))))
            }
            (Some(jwks), None) => {
                let jwks_path = path.key("jwks");
                if hmac > 0 {
                    self.report.at(
                        &path.key("algorithms"),
                        "HS256, HS384 and HS512 need a `secret` from the environment, not a `jwks`",
                    );
                }
                if jwks.starts_with("https://") {
                    let url = match JwksUrl::parse(jwks) {
                        Ok(url) => url,
                        Err(message) => {
                            self.report.at(&jwks_path, message);
                            return None;
                        }
                    };
                    let ca = match ca {
                        Some(file) => Some(
                            pem::read_certs(&self.base_dir.join(file), file)
                                .map_err(|message| self.report.at(&path.key("ca"), message))
                                .ok()?,
                        ),
                        None => None,
                    };
                    return Some(KeysChoice::Url(url, ca));
                }
                if jwks.contains("://") {
                    self.report.at(
                        &jwks_path,
                        format!(
                            "invalid JWKS location {jwks:?}, expected a file or an https:// URL"
                        ),
                    );
                    return None;
                }
                let file = self.base_dir.join(jwks);
                let text = match std::fs::read(&file) {
                    Ok(text) => text,
                    Err(error) => {
                        self.report.at(
                            &jwks_path,
                            format!("cannot read {jwks:?}: {}", pem::io_reason(&error)),
                        );
                        return None;
                    }
                };
                match jwks::parse(&text) {
                    Ok((set, warnings)) => {
                        for warning in warnings {
                            tracing::warn!(jwks = %jwks, "{warning}");
                        }
                        Some(KeysChoice::Fixed(Arc::new(set)))
                    }
                    Err(message) => {
                        self.report.at(&jwks_path, format!("{jwks:?}: {message}"));
                        None
                    }
                }
            }
        }
    }

    fn token_source(&mut self, path: &KeyPath, raw: Option<String>) -> TokenSource {
        let default = TokenSource::Bearer(http::header::AUTHORIZATION);
        let Some(text) = raw else { return default };
        let header = |name: &str| HeaderName::from_bytes(name.as_bytes()).ok();
        let source = match text.split_once(':') {
            Some(("header", name)) => header(name).map(|name| {
                if name == http::header::AUTHORIZATION {
                    TokenSource::Bearer(name)
                } else {
                    TokenSource::Header(name)
                }
            }),
            Some(("cookie", name)) if is_token_name(name) => {
                Some(TokenSource::Cookie(name.to_owned()))
            }
            Some(("query", name)) if is_token_name(name) => {
                Some(TokenSource::Query(name.to_owned()))
            }
            _ => None,
        };
        source.unwrap_or_else(|| {
            self.report.at(
                path,
                format!(
                    "invalid token source {text:?}, expected \"header:NAME\", \"cookie:NAME\" or \"query:NAME\""
                ),
            );
            default
        })
    }

    fn forward_claims(
        &mut self,
        path: &KeyPath,
        raw: Option<BTreeMap<String, String>>,
    ) -> Vec<(String, HeaderName)> {
        let mut out = Vec::new();
        for (claim, header) in raw.unwrap_or_default() {
            match HeaderName::from_bytes(header.as_bytes()) {
                Ok(name) if is_forwardable(&name) => out.push((claim, name)),
                Ok(_) => self.report.at(
                    &path.key(&claim),
                    format!("{header:?} cannot carry a claim (hop-by-hop, framing or host header)"),
                ),
                Err(_) => self.report.at(
                    &path.key(&claim),
                    format!("invalid header name {header:?}, expected e.g. \"x-user-id\""),
                ),
            }
        }
        out
    }

    // ---- cors ----

    fn cors(&mut self, path: &KeyPath, raw: RawCors) -> Cors {
        let origins_path = path.key("allow_origins");
        let mut origins = Vec::new();
        match raw.allow_origins {
            None => self.report.at(
                &origins_path,
                "missing required key, expected a list of origins such as [\"https://app.example\"]",
            ),
            Some(list) if list.is_empty() => {
                self.report.at(&origins_path, "expected at least one origin")
            }
            Some(list) => {
                for (i, text) in list.iter().enumerate() {
                    match OriginRule::parse(text) {
                        Ok(rule) => origins.push(rule),
                        Err(message) => self.report.at(&origins_path.index(i), message),
                    }
                }
            }
        }
        let credentials = raw.allow_credentials.unwrap_or(false);
        let methods = raw.allow_methods.map(|list| {
            let methods_path = path.key("allow_methods");
            let mut methods = Vec::new();
            for (i, text) in list.iter().enumerate() {
                match Method::from_bytes(text.to_ascii_uppercase().as_bytes()) {
                    Ok(method) if !methods.contains(&method) => methods.push(method),
                    Ok(_) => {}
                    Err(_) => self.report.at(
                        &methods_path.index(i),
                        format!("invalid method {text:?}, expected e.g. \"GET\""),
                    ),
                }
            }
            methods
        });
        let (headers, any_header) = match raw.allow_headers {
            Some(list) if list.len() == 1 && list[0] == "*" => (None, true),
            Some(list) => (
                Some(self.header_names(&path.key("allow_headers"), &list)),
                false,
            ),
            None => (None, false),
        };
        let expose = raw
            .expose_headers
            .map(|list| self.header_names(&path.key("expose_headers"), &list))
            .unwrap_or_default();
        let max_age = raw.max_age.map(|text| {
            parse_duration(&text)
                .map_err(|e| self.report.at(&path.key("max_age"), e.to_string()))
                .unwrap_or_default()
        });
        Cors::new(
            origins,
            methods,
            headers,
            any_header,
            expose,
            credentials,
            max_age,
        )
    }

    fn header_names(&mut self, path: &KeyPath, list: &[String]) -> Vec<HeaderName> {
        let mut names = Vec::new();
        for (i, text) in list.iter().enumerate() {
            match HeaderName::from_bytes(text.as_bytes()) {
                Ok(name) => names.push(name),
                Err(_) => self.report.at(
                    &path.index(i),
                    format!("invalid header name {text:?}, expected e.g. \"content-type\""),
                ),
            }
        }
        names
    }

    // ---- route keys ----

    fn route_access(
        &mut self,
        path: &KeyPath,
        raw: RawRouteAccess,
        known: &[Authorizer],
        server_cors: Option<&Arc<Cors>>,
    ) -> RouteAccess {
        let authorizers: Vec<&str> = known.iter().map(|a| a.name.as_str()).collect();
        let authorizer = raw.authorizer.and_then(|name| {
            let found = authorizers.iter().position(|known| *known == name);
            if found.is_none()
                && !self
                    .report
                    .has_errors_at_or_under(&KeyPath::root().key("authorizers").key(&name))
            {
                let message = if authorizers.is_empty() {
                    format!("unknown authorizer {name:?}, no `[authorizers]` are defined")
                } else {
                    format!(
                        "unknown authorizer {name:?}{}",
                        did_you_mean(&name, authorizers.iter().copied())
                    )
                };
                self.report.at(&path.key("authorizer"), message);
            }
            found
        });
        let scopes = raw.scopes.unwrap_or_default();
        if !scopes.is_empty() && !self.report.is_in_file(&path.key("authorizer")) {
            self.report.at(
                &path.key("scopes"),
                "`scopes` needs an `authorizer` on the route",
            );
        }
        if !scopes.is_empty()
            && let Some(index) = authorizer
            && matches!(
                known.get(index).map(|a| &a.kind),
                Some(AuthorizerKind::Plugin(_))
            )
        {
            self.report.at(
                &path.key("scopes"),
                "`scopes` are checked against a JWT's claims; a plugin authorizer decides \
                 on its own",
            );
        }
        if scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
            self.report.at(
                &path.key("scopes"),
                "expected scope names without spaces, none empty",
            );
        }
        let cors = match raw.cors {
            Some(cors) => Some(Arc::new(self.cors(&path.key("cors"), cors))),
            None => server_cors.cloned(),
        };
        let allow = self.cidrs(&path.key("allow_cidrs"), raw.allow_cidrs);
        let deny = self.cidrs(&path.key("deny_cidrs"), raw.deny_cidrs);
        let addresses =
            (!allow.is_empty() || !deny.is_empty()).then_some(AddressRules { allow, deny });
        RouteAccess {
            authorizer,
            scopes,
            api_key: raw.api_key.unwrap_or(false),
            cors,
            addresses,
        }
    }

    fn cidrs(&mut self, path: &KeyPath, raw: Option<Vec<String>>) -> Vec<IpNet> {
        let Some(list) = raw else { return Vec::new() };
        if list.is_empty() {
            self.report.at(
                path,
                "expected at least one address or range (leave the key out for none)",
            );
        }
        let mut nets = Vec::new();
        for (i, text) in list.iter().enumerate() {
            let net = IpNet::from_str(text)
                .map(|net| net.trunc())
                .or_else(|_| std::net::IpAddr::from_str(text).map(IpNet::from));
            match net {
                Ok(net) => nets.push(net),
                Err(_) => self.report.at(
                    &path.index(i),
                    format!(
                        "invalid address {text:?}, expected an IP address or a CIDR range such as \"10.0.0.0/8\""
                    ),
                ),
            }
        }
        nets
    }

    // ---- [usage_plans.NAME] ----

    fn usage_plans(
        &mut self,
        document: &Document<'_>,
        raw: BTreeMap<String, RawUsagePlan>,
        routes: &[Route],
    ) -> Vec<UsagePlan> {
        let base = KeyPath::root().key("usage_plans");
        let mut raw: Vec<(String, RawUsagePlan)> = raw.into_iter().collect();
        raw.sort_by_key(|(name, _)| document.key_offset(&base.key(name)));
        let route_names: HashMap<&str, usize> = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.as_str(), i))
            .collect();
        raw.into_iter()
            .map(|(name, raw)| {
                let path = base.key(&name);
                if !is_upstream_name(&name) {
                    self.report.at_key(
                        &path,
                        format!(
                            "invalid plan name {name:?}, expected letters, digits, `_` and `-`"
                        ),
                    );
                }
                let limits = self.plan_limits(
                    &path,
                    RawPlanLimits {
                        rate: raw.rate,
                        burst: raw.burst,
                        quota: raw.quota,
                    },
                );
                let mut overrides = Vec::new();
                for (route, raw) in raw.routes.unwrap_or_default() {
                    let route_path = path.key("routes").key(&route);
                    let limits = self.plan_limits(&route_path, raw);
                    match route_names.get(route.as_str()) {
                        Some(&index) => overrides.push((index, limits)),
                        None => self.report.at_key(
                            &route_path,
                            format!(
                                "unknown route {route:?}{}",
                                did_you_mean(&route, route_names.keys().copied())
                            ),
                        ),
                    }
                }
                UsagePlan {
                    name,
                    limits,
                    routes: overrides,
                }
            })
            .collect()
    }

    fn plan_limits(&mut self, path: &KeyPath, raw: RawPlanLimits) -> PlanLimits {
        let rate = match raw.rate {
            None => {
                if raw.burst.is_some() {
                    self.report.at(&path.key("burst"), "`burst` needs a `rate`");
                }
                None
            }
            Some(rate) if rate.is_finite() && rate >= MIN_PLAN_RATE => {
                let burst = match raw.burst {
                    None => (rate.ceil() as u64).max(1),
                    Some(burst) if burst >= 1 => u64::try_from(burst).unwrap_or(u64::MAX),
                    Some(burst) => {
                        self.report.at(
                            &path.key("burst"),
                            format!("expected an integer of at least 1, got {burst}"),
                        );
                        1
                    }
                };
                Some(Limit { rate, burst })
            }
            Some(rate) => {
                self.report.at(
                    &path.key("rate"),
                    format!("expected a rate of at least {MIN_PLAN_RATE} requests per second, got {rate}"),
                );
                None
            }
        };
        let quota = raw
            .quota
            .and_then(|quota| self.quota(&path.key("quota"), quota));
        PlanLimits { rate, quota }
    }

    fn quota(&mut self, path: &KeyPath, raw: RawQuota) -> Option<Quota> {
        let limit = match raw.limit {
            None => {
                self.report.at(
                    &path.key("limit"),
                    "missing required key, expected a number of requests",
                );
                None
            }
            Some(limit) if limit >= 1 => u64::try_from(limit).ok(),
            Some(limit) => {
                self.report.at(
                    &path.key("limit"),
                    format!("expected an integer of at least 1, got {limit}"),
                );
                None
            }
        };
        let period = match raw.period.as_deref() {
            Some("day") => Some(Period::Day),
            Some("week") => Some(Period::Week),
            Some("month") => Some(Period::Month),
            Some(other) => {
                self.report.at(
                    &path.key("period"),
                    format!(
                        "invalid value {other:?}, expected \"day\", \"week\" or \"month\"{}",
                        did_you_mean(other, ["day", "week", "month"])
                    ),
                );
                None
            }
            None => {
                self.report.at(
                    &path.key("period"),
                    "missing required key, expected \"day\", \"week\" or \"month\"",
                );
                None
            }
        };
        Some(Quota {
            limit: limit?,
            period: period?,
        })
    }

    // ---- [[api_keys]] ----

    fn api_keys(
        &mut self,
        raw: Vec<RawApiKey>,
        header: Option<String>,
        plans: &[UsagePlan],
    ) -> ApiKeys {
        let header = match header {
            None => HeaderName::from_static(DEFAULT_API_KEY_HEADER),
            Some(text) => HeaderName::from_bytes(text.as_bytes()).unwrap_or_else(|_| {
                self.report.at(
                    &KeyPath::root().key("server").key("api_key_header"),
                    format!("invalid header name {text:?}, expected e.g. \"x-api-key\""),
                );
                HeaderName::from_static(DEFAULT_API_KEY_HEADER)
            }),
        };
        let base = KeyPath::root().key("api_keys");
        let plan_names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
        let mut keys: Vec<ApiKey> = Vec::new();
        // Where each name and digest was first defined.
        let mut names: HashMap<String, String> = HashMap::new();
        let mut digests: HashMap<[u8; 32], String> = HashMap::new();
        for (i, entry) in raw.into_iter().enumerate() {
            let path = base.index(i);
            let plan = entry.plan.as_deref().and_then(|plan| {
                let found = plan_names.iter().position(|p| *p == plan);
                if found.is_none() {
                    let message = if plan_names.is_empty() {
                        format!("unknown usage plan {plan:?}, no `[usage_plans]` are defined")
                    } else {
                        format!(
                            "unknown usage plan {plan:?}{}",
                            did_you_mean(plan, plan_names.iter().copied())
                        )
                    };
                    self.report.at(&path.key("plan"), message);
                }
                found
            });
            let mut found: Vec<(String, [u8; 32], KeyPath, String)> = Vec::new();
            match (entry.file, entry.name, entry.key_sha256) {
                (Some(file), None, None) => {
                    let file_path = path.key("file");
                    match std::fs::read_to_string(self.base_dir.join(&file)) {
                        Err(error) => self.report.at(
                            &file_path,
                            format!("cannot read {file:?}: {}", pem::io_reason(&error)),
                        ),
                        Ok(text) => {
                            for (n, line) in text.lines().enumerate() {
                                let line = line.trim();
                                if line.is_empty() || line.starts_with('#') {
                                    continue;
                                }
                                let place = format!("{file}:{}", n + 1);
                                let mut words = line.split_whitespace();
                                match (words.next(), words.next(), words.next()) {
                                    (Some(name), Some(digest), None) => match parse_sha256(digest) {
                                        Some(digest) => {
                                            found.push((name.to_owned(), digest, file_path.clone(), place))
                                        }
                                        None => self.report.at(
                                            &file_path,
                                            format!("{place}: expected 64 hex digits of a SHA-256 digest"),
                                        ),
                                    },
                                    _ => self.report.at(
                                        &file_path,
                                        format!("{place}: expected a line \"NAME SHA256\""),
                                    ),
                                }
                            }
                        }
                    }
                }
                (Some(_), _, _) => self.report.at(
                    &path.key("file"),
                    "give either `file` or `name` + `key_sha256`, not both",
                ),
                (None, name, digest) => {
                    let name = self.required_text(
                        &path.key("name"),
                        name,
                        "a name for the key, e.g. \"partner-a\"",
                    );
                    let digest_path = path.key("key_sha256");
                    let digest = self
                        .required_text(&digest_path, digest, "the SHA-256 of the key, 64 hex digits")
                        .and_then(|text| {
                            let digest = parse_sha256(&text);
                            if digest.is_none() {
                                self.report.at(
                                    &digest_path,
                                    "expected 64 hex digits (e.g. the output of `printf %s KEY | sha256sum`)",
                                );
                            }
                            digest
                        });
                    if let (Some(name), Some(digest)) = (name, digest) {
                        found.push((name, digest, path.key("name"), base.index(i).to_string()));
                    }
                }
            }
            for (name, digest, at, place) in found {
                if let Some(first) = names.get(&name) {
                    self.report.at(
                        &at,
                        format!("duplicate API key name {name:?}, also in {first}"),
                    );
                    continue;
                }
                if let Some(first) = digests.get(&digest) {
                    self.report
                        .at(&at, format!("the same key digest is also in {first}"));
                    continue;
                }
                names.insert(name.clone(), place.clone());
                digests.insert(digest, place);
                keys.push(ApiKey {
                    name,
                    sha256: digest,
                    plan,
                });
            }
        }
        ApiKeys { header, keys }
    }

    // ---- values ----

    fn required_text(
        &mut self,
        path: &KeyPath,
        raw: Option<String>,
        expected: &str,
    ) -> Option<String> {
        match raw {
            Some(text) if !text.is_empty() => Some(text),
            Some(_) => {
                self.report
                    .at(path, format!("expected {expected}, got an empty string"));
                None
            }
            None => {
                self.report
                    .at(path, format!("missing required key, expected {expected}"));
                None
            }
        }
    }

    fn duration(&mut self, path: &KeyPath, raw: Option<String>, default: Duration) -> Duration {
        let Some(text) = raw else { return default };
        match parse_duration(&text) {
            Ok(duration) => duration,
            Err(error) => {
                self.report.at(path, error.to_string());
                default
            }
        }
    }
}

enum KeysChoice {
    Fixed(Arc<KeySet>),
    Url(
        JwksUrl,
        Option<Vec<rustls_pki_types::CertificateDer<'static>>>,
    ),
}

/// Cookie and query parameter names for tokens: no separators, no spaces.
fn is_token_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Headers the gateway will not set from a claim.
fn is_forwardable(name: &HeaderName) -> bool {
    use http::header::*;
    ![
        CONNECTION,
        TRANSFER_ENCODING,
        CONTENT_LENGTH,
        HOST,
        TE,
        TRAILER,
        UPGRADE,
        PROXY_AUTHORIZATION,
        PROXY_AUTHENTICATE,
    ]
    .contains(name)
        && name.as_str() != "keep-alive"
        && name.as_str() != "proxy-connection"
}

/// 64 hex digits → 32 bytes.
pub fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(body: &str, env: &[(&str, &str)]) -> Vec<String> {
        let source = format!("[server]\nlisten = \"127.0.0.1:0\"\n{body}");
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        match crate::config::parse(&source, Path::new("weir.toml"), &lookup) {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .0
                .iter()
                .map(|e| format!("{}: {}", e.key, e.message))
                .collect(),
        }
    }

    #[test]
    fn access_keys_are_checked() {
        let found = errors(
            r#"
[authorizers.main]
type = "jwt"
issuer = "https://i"
audience = "a"
secret = "a-secret-written-into-the-file-32bytes"
algorithms = ["HS256"]

[authorizers.other]
type = "jwt"
issuer = "https://i"
audience = "a"
jwks = "http://issuer/jwks.json"

[usage_plans.p]
burst = 3
quota = { limit = 0, period = "year" }
routes = { nope = { rate = 1 } }

[[api_keys]]
name = "k"
key_sha256 = "xyz"
plan = "q"

[[routes]]
path = "/a"
mock = {}
authorizer = "mian"
cors = { allow_origins = ["https://a.*.example"] }
deny_cidrs = ["10.0.0.0/33"]

[[routes]]
path = "/b"
mock = {}
scopes = ["x"]
"#,
            &[],
        );
        let expected = [
            "authorizers.main.secret: the secret must come from the environment",
            "authorizers.other.jwks: invalid JWKS location",
            "usage_plans.p.burst: `burst` needs a `rate`",
            "usage_plans.p.quota.limit: expected an integer of at least 1",
            "usage_plans.p.quota.period: invalid value \"year\"",
            "usage_plans.p.routes.nope: unknown route \"nope\"",
            "api_keys[0].key_sha256: expected 64 hex digits",
            "api_keys[0].plan: unknown usage plan \"q\"",
            "routes[0].authorizer: unknown authorizer \"mian\" (did you mean \"main\"?)",
            "routes[0].cors.allow_origins[0]: invalid origin",
            "routes[0].deny_cidrs[0]: invalid address",
            "routes[1].scopes: `scopes` needs an `authorizer`",
        ];
        for want in expected {
            assert!(
                found.iter().any(|line| line.starts_with(want)),
                "missing {want:?} in:\n{}",
                found.join("\n")
            );
        }
        assert_eq!(found.len(), expected.len(), "{}", found.join("\n"));
    }

    #[test]
    fn a_secret_from_the_environment_is_accepted() {
        let body = r#"
[authorizers.main]
type = "jwt"
issuer = "https://i"
audience = "a"
secret = "${env:SECRET}"
algorithms = ["HS256"]
"#;
        assert_eq!(
            errors(body, &[("SECRET", "0123456789abcdef0123456789abcdef")]),
            Vec::<String>::new()
        );
        let short = errors(body, &[("SECRET", "short")]);
        assert_eq!(short.len(), 1, "{short:?}");
        assert!(short[0].contains("too short"));
    }

    #[test]
    fn sha256_hex() {
        let hex = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
        let digest = parse_sha256(hex).expect("digest");
        assert_eq!(digest[0], 0x2c);
        assert_eq!(digest[31], 0xae);
        assert!(parse_sha256(&hex[1..]).is_none());
        assert!(parse_sha256(&hex.replace('2', "g")).is_none());
    }
}
