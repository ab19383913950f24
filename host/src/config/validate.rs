//! The validation pass: the raw serde mirror ([`super::raw`]) in, the validated model
//! ([`super::model`]) out.
//!
//! It parses durations, sizes, addresses and URLs, reads certificate files, resolves
//! upstream references and checks every rule of the route file, reporting *every* problem
//! to a [`Report`] rather than stopping at the first. Where a value is wrong, a stand-in
//! is used so that checking can go on; the caller throws the result away if the report
//! has any error.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use ipnet::IpNet;
use rustls_pki_types::CertificateDer;

use super::document::{Document, Report};
use super::keypath::KeyPath;
use super::model::*;
use super::names::{check_host_name, did_you_mean, did_you_mean_text, is_upstream_name, suggest};
use super::pem;
use super::raw::{
    RawConfig, RawEject, RawLog, RawMock, RawPluginUse, RawPool, RawRoute, RawServer, RawSize,
    RawSni, RawTarget, RawTls, RawUpstream, Table,
};
use super::target_url::parse_target_url;
use super::units::{parse_duration, parse_size};
use crate::access_log::AccessLogTarget;
use crate::path::{EscapedSeparators, PathOptions};

/// The smallest `[server] max_header_bytes` accepted.
pub const MIN_MAX_HEADER_BYTES: u64 = 1024;
/// Lowest and highest status a mock may answer with.
pub const MOCK_STATUS_RANGE: std::ops::RangeInclusive<i64> = 100..=599;
/// Default `mock.status`.
pub const DEFAULT_MOCK_STATUS: StatusCode = StatusCode::OK;
/// Everything but the router: the caller builds that once the report is clean.
#[derive(Debug)]
pub struct Validated {
    pub server: Server,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    pub log: Log,
    pub traffic: Traffic,
    pub access: Access,
    pub plugins: Vec<Plugin>,
}

/// Validates `raw`, reporting every problem to `report`. The result is only meaningful
/// when `report` has no errors. Relative file names resolve against `base_dir`.
pub fn validate(
    mut raw: RawConfig,
    document: &Document<'_>,
    report: &mut Report<'_>,
    base_dir: &Path,
) -> Validated {
    let raw_access = super::access::RawAccess::take(&mut raw);
    let mut v = Validator { report, base_dir };
    let traffic = super::traffic::traffic(v.report, raw.state, raw.cache);
    let server = v.server(raw.server);

    // Upstreams in file order (the raw map is sorted by name).
    let mut raw_upstreams: Vec<(String, RawUpstream)> = raw.upstreams.into_iter().collect();
    let upstreams_path = KeyPath::root().key("upstreams");
    raw_upstreams.sort_by_key(|(name, _)| document.key_offset(&upstreams_path.key(name)));
    let upstreams: Vec<Upstream> = raw_upstreams
        .into_iter()
        .map(|(name, raw)| v.upstream(&upstreams_path.key(&name), name, raw))
        .collect();

    let plugins = super::plugins::plugins(v.report, document, base_dir, raw.plugins);
    let plugin_names: Vec<&str> = plugins.iter().map(|p| p.name.as_str()).collect();

    let routes_path = KeyPath::root().key("routes");
    let upstream_names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    let names = Names {
        upstreams: &upstream_names,
        plugins: &plugin_names,
    };
    let mut routes: Vec<Route> = raw
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, raw)| v.route(&routes_path.index(i), raw, &names))
        .collect();
    v.unique_route_names(&routes_path, &routes);
    let log = v.log(raw.log);
    let access = super::access::access(
        v.report,
        document,
        base_dir,
        raw_access,
        &mut routes,
        names.uses(),
    );

    Validated {
        server,
        upstreams,
        routes,
        log,
        traffic,
        access,
        plugins,
    }
}

/// What routes may refer to by name.
struct Names<'a> {
    upstreams: &'a [&'a str],
    plugins: &'a [&'a str],
}

impl Names<'_> {
    fn uses(&self) -> super::plugins::UseNames<'_> {
        super::plugins::UseNames {
            plugins: self.plugins,
            upstreams: self.upstreams,
        }
    }
}

/// Reports a key that no raw type accepted.
pub fn unknown_key(report: &mut Report<'_>, path: &KeyPath) {
    let table = path.parent().as_ref().and_then(Table::at);
    let (Some(table), Some(key)) = (table, path.last_key()) else {
        report.at_key(path, "unknown key");
        return;
    };
    if table.is_not_yet_supported(key) {
        report.at_key(path, "not supported by this version of weir yet");
        return;
    }
    let suggestion = suggest(key, table.keys().iter().copied());
    report.at_key(
        path,
        format!("unknown key{}", did_you_mean_text(suggestion)),
    );
    // The key it was meant to be now looks missing; that is no second problem.
    if let Some(meant) = suggestion.and_then(|meant| Some(path.parent()?.key(meant)))
        && !report.is_in_file(&meant)
    {
        report.silence(&meant);
    }
}

/// Whether a duration may be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zero {
    Allowed,
    Refused,
}

struct Validator<'r, 'd> {
    report: &'r mut Report<'d>,
    base_dir: &'r Path,
}

impl Validator<'_, '_> {
    // ---- [log] ----

    fn log(&mut self, raw: RawLog) -> Log {
        let access = match raw.access.as_deref() {
            None | Some("stdout") => AccessLogTarget::Stdout,
            Some("off") => AccessLogTarget::Off,
            Some("") => {
                self.report.at(
                    &KeyPath::root().key("log").key("access"),
                    "expected \"stdout\", \"off\" or a file path",
                );
                AccessLogTarget::Stdout
            }
            Some(path) => AccessLogTarget::File(self.base_dir.join(path)),
        };
        Log { access }
    }

    // ---- [server] ----

    fn server(&mut self, raw: RawServer) -> Server {
        let path = KeyPath::root().key("server");
        let listen = self.socket_addr(&path.key("listen"), raw.listen);
        let admin = self.socket_addr(&path.key("admin"), raw.admin);
        let has_tls = raw.tls.is_some();
        let tls_path = path.key("tls");
        let tls_listen = raw.tls.as_ref().and_then(|tls| tls.listen.clone());
        let tls_listen = self.socket_addr(&tls_path.key("listen"), tls_listen);
        let tls = raw.tls.and_then(|tls| self.tls(&tls_path, tls, tls_listen));

        // With `[server.tls]` present, its own `listen` is required and reported there.
        if listen.is_none() && !has_tls && !self.report.has_errors_at_or_under(&path.key("listen"))
        {
            self.report.at(
                &path,
                "at least one of `server.listen` and `server.tls.listen` must be set",
            );
        }
        if let (Some(plain), Some(secure)) = (listen, tls_listen)
            && overlaps(plain, secure)
        {
            self.report.at(
                &path.key("tls").key("listen"),
                format!("{secure} is also `server.listen`, expected a different address"),
            );
        }
        if let Some(admin) = admin {
            for (public, name) in [(listen, "server.listen"), (tls_listen, "server.tls.listen")] {
                if let Some(public) = public
                    && overlaps(admin, public)
                {
                    self.report.at(
                        &path.key("admin"),
                        format!(
                            "{admin} is also `{name}`, the admin listener must be separate \
                             from the public ones"
                        ),
                    );
                }
            }
        }

        let max_header_bytes = self.size(&path.key("max_header_bytes"), raw.max_header_bytes);
        if let Some(bytes) = max_header_bytes
            && bytes < MIN_MAX_HEADER_BYTES
        {
            self.report.at(
                &path.key("max_header_bytes"),
                format!("expected at least 1KiB ({MIN_MAX_HEADER_BYTES} bytes), got {bytes}"),
            );
        }

        let admin_token = raw.admin_token.filter(|token| {
            let ok = !token.is_empty();
            if !ok {
                self.report.at(
                    &path.key("admin_token"),
                    "expected a non-empty token (e.g. \"${env:WEIR_ADMIN_TOKEN}\")",
                );
            }
            ok
        });
        if admin_token.is_some() && admin.is_none() {
            self.report.at(
                &path.key("admin_token"),
                "`admin_token` needs an admin listener: set `server.admin`",
            );
        }

        Server {
            listen,
            admin,
            admin_token,
            tls,
            workers: raw
                .workers
                .map(|w| self.integer(&path.key("workers"), Some(w), 1, 1)),
            max_body: self
                .size(&path.key("max_body"), raw.max_body)
                .unwrap_or(DEFAULT_MAX_BODY_BYTES),
            request_timeout: self.duration(
                &path.key("request_timeout"),
                raw.request_timeout,
                DEFAULT_REQUEST_TIMEOUT,
                Zero::Refused,
            ),
            header_read_timeout: self.duration(
                &path.key("header_read_timeout"),
                raw.header_read_timeout,
                DEFAULT_HEADER_READ_TIMEOUT,
                Zero::Refused,
            ),
            idle_timeout: self.duration(
                &path.key("idle_timeout"),
                raw.idle_timeout,
                DEFAULT_IDLE_TIMEOUT,
                Zero::Refused,
            ),
            max_headers: self.integer(
                &path.key("max_headers"),
                raw.max_headers,
                1,
                DEFAULT_MAX_HEADERS,
            ),
            max_header_bytes: max_header_bytes
                .and_then(|bytes| usize::try_from(bytes).ok())
                .unwrap_or(DEFAULT_MAX_HEADER_BYTES),
            max_connections: self.integer(
                &path.key("max_connections"),
                raw.max_connections,
                1,
                DEFAULT_MAX_CONNECTIONS,
            ),
            shutdown_grace: self.duration(
                &path.key("shutdown_grace"),
                raw.shutdown_grace,
                DEFAULT_SHUTDOWN_GRACE,
                Zero::Allowed,
            ),
            trusted_proxies: self
                .trusted_proxies(&path.key("trusted_proxies"), raw.trusted_proxies),
            paths: PathOptions {
                merge_slashes: raw
                    .merge_slashes
                    .unwrap_or(PathOptions::default().merge_slashes),
                escaped_separators: self.choice(
                    &path.key("escaped_separators"),
                    raw.escaped_separators,
                    &[
                        ("reject", EscapedSeparators::Reject),
                        ("keep", EscapedSeparators::Keep),
                    ],
                    PathOptions::default().escaped_separators,
                ),
            },
            throttle: super::traffic::throttles(self.report, &path.key("throttle"), raw.throttle),
        }
    }

    fn trusted_proxies(&mut self, path: &KeyPath, raw: Option<Vec<String>>) -> Vec<IpNet> {
        let mut nets = Vec::new();
        for (i, text) in raw.unwrap_or_default().into_iter().enumerate() {
            let net = IpNet::from_str(&text)
                .map(|net| net.trunc())
                .or_else(|_| IpAddr::from_str(&text).map(IpNet::from));
            match net {
                Ok(net) => nets.push(net),
                Err(_) => self.report.at(
                    &path.index(i),
                    format!(
                        "invalid address {text:?}, expected an IP address or a CIDR range \
                         such as \"10.0.0.0/8\""
                    ),
                ),
            }
        }
        nets
    }

    // ---- [server.tls] ----

    /// `[server.tls]`; its `listen` is parsed by the caller, which checks it against the
    /// other listeners even when a certificate is broken.
    fn tls(&mut self, path: &KeyPath, raw: RawTls, listen: Option<SocketAddr>) -> Option<Tls> {
        self.required(
            &path.key("listen"),
            raw.listen.as_ref(),
            "an address such as \"0.0.0.0:8443\"",
        );
        let default_cert = self.cert_key(path, raw.cert, raw.key);
        let client_ca = raw
            .client_ca
            .and_then(|file| self.certs(&path.key("client_ca"), &file));
        let client_auth = match (&raw.client_auth, &client_ca) {
            (Some(_), None) if !self.report.has_errors_at_or_under(&path.key("client_ca")) => {
                self.report.at(
                    &path.key("client_auth"),
                    "only meaningful with `client_ca`, which is not set",
                );
                ClientAuth::Required
            }
            _ => self.choice(
                &path.key("client_auth"),
                raw.client_auth,
                &[
                    ("required", ClientAuth::Required),
                    ("optional", ClientAuth::Optional),
                ],
                ClientAuth::Required,
            ),
        };
        let sni = self.sni_entries(&path.key("sni"), raw.sni.unwrap_or_default());
        Some(Tls {
            listen: listen?,
            default_cert: default_cert?,
            sni,
            client_ca,
            client_auth,
        })
    }

    fn sni_entries(&mut self, path: &KeyPath, raw: Vec<RawSni>) -> Vec<SniCert> {
        // Every name served so far, with the entry that serves it.
        let mut served: HashMap<String, usize> = HashMap::new();
        let mut entries = Vec::new();
        for (i, entry) in raw.into_iter().enumerate() {
            let entry_path = path.index(i);
            let names_path = entry_path.key("names");
            let names = self
                .required(&names_path, entry.names, "a list of host names")
                .unwrap_or_default();
            let mut lower_names = Vec::new();
            if names.is_empty() && !self.report.has_errors_at_or_under(&names_path) {
                self.report.at(
                    &names_path,
                    "expected at least one host name, got an empty list",
                );
            }
            for (j, name) in names.iter().enumerate() {
                let Some(name) = self.host_name(&names_path.index(j), name) else {
                    continue;
                };
                match served.entry(name.clone()) {
                    Entry::Occupied(first) => {
                        let first = path.index(*first.get());
                        self.report.at(
                            &names_path.index(j),
                            format!("{name:?} is already served by {first}"),
                        );
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(i);
                    }
                }
                lower_names.push(name);
            }
            if let Some(cert) = self.cert_key(&entry_path, entry.cert, entry.key) {
                entries.push(SniCert {
                    names: lower_names,
                    cert,
                });
            }
        }
        entries
    }

    /// `cert` + `key` of `table`: both required, read and checked to belong together.
    fn cert_key(
        &mut self,
        table: &KeyPath,
        cert: Option<String>,
        key: Option<String>,
    ) -> Option<CertKey> {
        let cert_path = table.key("cert");
        let key_path = table.key("key");
        let cert = self.required(&cert_path, cert, "a PEM certificate file");
        let key = self.required(&key_path, key, "a PEM private key file");
        let chain = cert.as_ref().and_then(|file| self.certs(&cert_path, file));
        let private_key = key.and_then(|file| {
            pem::read_private_key(&self.resolve(&file), &file)
                .map_err(|message| self.report.at(&key_path, message))
                .ok()
        });
        let (cert, chain, private_key) = (cert?, chain?, private_key?);
        if let Err(message) = pem::check_key_matches(&chain, &private_key, &cert) {
            self.report.at(&key_path, message);
            return None;
        }
        Some(CertKey {
            cert_path: self.resolve(&cert),
            chain,
            key: private_key,
        })
    }

    fn certs(&mut self, path: &KeyPath, file: &str) -> Option<Vec<CertificateDer<'static>>> {
        pem::read_certs(&self.resolve(file), file)
            .map_err(|message| self.report.at(path, message))
            .ok()
    }

    fn resolve(&self, file: &str) -> PathBuf {
        self.base_dir.join(file)
    }

    // ---- [upstreams.NAME] ----

    fn upstream(&mut self, path: &KeyPath, name: String, raw: RawUpstream) -> Upstream {
        if !is_upstream_name(&name) {
            self.report.at_key(
                path,
                format!("invalid upstream name {name:?}, expected letters, digits, `_` and `-`"),
            );
        }
        let targets_path = path.key("targets");
        let raw_targets = self
            .required(&targets_path, raw.targets, "a list of target URLs")
            .unwrap_or_default();
        if raw_targets.is_empty() && !self.report.has_errors_at_or_under(&targets_path) {
            self.report.at(
                &targets_path,
                "expected at least one target, got an empty list",
            );
        }
        let targets: Vec<Target> = raw_targets
            .into_iter()
            .enumerate()
            .filter_map(|(i, raw)| self.target(&targets_path.index(i), raw))
            .collect();

        let ca = raw.ca.and_then(|file| {
            let ca_path = path.key("ca");
            let certs = self.certs(&ca_path, &file)?;
            if !targets.is_empty() && targets.iter().all(|t| t.scheme == Scheme::Http) {
                self.report.at(
                    &ca_path,
                    "only used for https targets, and every target of this upstream is http",
                );
            }
            Some(certs)
        });

        Upstream {
            connect_timeout: self.duration(
                &path.key("connect_timeout"),
                raw.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
                Zero::Refused,
            ),
            timeout: self.duration(
                &path.key("timeout"),
                raw.timeout,
                DEFAULT_UPSTREAM_TIMEOUT,
                Zero::Refused,
            ),
            retries: self.integer(&path.key("retries"), raw.retries, 0, DEFAULT_RETRIES),
            http2: raw.http2.unwrap_or(false),
            ca,
            preserve_host: raw.preserve_host.unwrap_or(false),
            eject: self.eject(&path.key("eject"), raw.eject.unwrap_or_default()),
            pool: self.pool(&path.key("pool"), raw.pool.unwrap_or_default()),
            name,
            targets,
        }
    }

    fn eject(&mut self, path: &KeyPath, raw: RawEject) -> Eject {
        Eject {
            failures: self.integer(
                &path.key("failures"),
                raw.failures,
                1,
                DEFAULT_EJECT_FAILURES,
            ),
            duration: self.duration(
                &path.key("duration"),
                raw.duration,
                DEFAULT_EJECT_DURATION,
                Zero::Refused,
            ),
        }
    }

    fn pool(&mut self, path: &KeyPath, raw: RawPool) -> Pool {
        Pool {
            max_idle: self.integer(
                &path.key("max_idle"),
                raw.max_idle,
                0,
                DEFAULT_POOL_MAX_IDLE,
            ),
            idle_timeout: self.duration(
                &path.key("idle_timeout"),
                raw.idle_timeout,
                DEFAULT_POOL_IDLE_TIMEOUT,
                Zero::Allowed,
            ),
        }
    }

    fn target(&mut self, path: &KeyPath, raw: RawTarget) -> Option<Target> {
        let (url, url_path, weight) = match raw {
            RawTarget::Url(url) => (url, path.clone(), DEFAULT_TARGET_WEIGHT),
            RawTarget::Table(table) => {
                let url_path = path.key("url");
                let weight =
                    self.integer(&path.key("weight"), table.weight, 1, DEFAULT_TARGET_WEIGHT);
                let url = self.required(
                    &url_path,
                    table.url,
                    "a URL such as \"http://127.0.0.1:9000\"",
                )?;
                (url, url_path, weight)
            }
        };
        match parse_target_url(&url) {
            Ok(parts) => Some(Target {
                url,
                scheme: parts.scheme,
                authority: parts.authority,
                host: parts.host,
                port: parts.port,
                base_path: parts.base_path,
                weight,
            }),
            Err(message) => {
                self.report.at(&url_path, message);
                None
            }
        }
    }

    // ---- [[routes]] ----

    fn route(&mut self, path: &KeyPath, raw: RawRoute, names: &Names<'_>) -> Route {
        let route_path = self
            .required(
                &path.key("path"),
                raw.path,
                "a path starting with \"/\", e.g. \"/users/{id}\"",
            )
            .unwrap_or_default();
        if !route_path.is_empty() && !route_path.starts_with('/') {
            self.report.at(
                &path.key("path"),
                format!("invalid path {route_path:?}, expected a path starting with \"/\""),
            );
        }
        let methods = raw
            .methods
            .map(|methods| self.methods(&path.key("methods"), methods));
        let hosts_path = path.key("hosts");
        let hosts: Vec<String> = raw
            .hosts
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, host)| self.host_name(&hosts_path.index(i), host))
            .collect();
        let max_body = self.size(&path.key("max_body"), raw.max_body);
        let websocket = super::websocket::route(
            self.report,
            path,
            raw.upstream.is_some(),
            raw.websocket_idle_timeout,
            raw.websocket_max_duration,
        );
        let integration = match raw.websocket {
            // A WebSocket API is the route's integration: the gateway is the server.
            Some(websocket) => {
                let taken: Vec<&str> = [
                    raw.upstream.as_ref().map(|_| "`upstream`"),
                    raw.mock.as_ref().map(|_| "`mock`"),
                    raw.handler.as_ref().map(|_| "`handler`"),
                ]
                .into_iter()
                .flatten()
                .collect();
                if !taken.is_empty() {
                    self.report.at(
                        &path.key("websocket"),
                        format!(
                            "a route with `websocket` is the WebSocket server itself and takes \
                             no other integration, found {}",
                            taken.join(", ")
                        ),
                    );
                }
                Integration::WebSocket(Box::new(super::websocket::api(
                    self.report,
                    &path.key("websocket"),
                    websocket,
                    names.uses(),
                )))
            }
            None => self.integration(path, raw.upstream, raw.mock, raw.handler, names),
        };
        let filters_path = path.key("filters");
        let filters = raw
            .filters
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                super::plugins::plugin_use(
                    self.report,
                    &filters_path.index(i),
                    raw,
                    names.uses(),
                    super::plugins::UseKind::Filter,
                )
            })
            .collect();
        if raw.name.as_deref() == Some("") {
            self.report.at(
                &path.key("name"),
                "expected a non-empty name (leave `name` out for the default)",
            );
        }
        let name = raw
            .name
            .unwrap_or_else(|| default_route_name(methods.as_deref(), &route_path, &hosts));
        let traffic = super::traffic::route(
            self.report,
            path,
            raw.throttle,
            raw.cache,
            raw.on_state_error,
        );
        Route {
            name,
            methods,
            path: route_path,
            hosts,
            max_body,
            integration,
            filters,
            traffic,
            access: RouteAccess::default(),
            websocket,
        }
    }

    fn methods(&mut self, path: &KeyPath, raw: Vec<String>) -> Vec<Method> {
        if raw.is_empty() {
            self.report.at(
                path,
                "expected at least one method, got an empty list (leave `methods` out to allow any method)",
            );
        }
        let mut methods: Vec<Method> = Vec::new();
        for (i, text) in raw.iter().enumerate() {
            let upper = text.to_ascii_uppercase();
            match Method::from_bytes(upper.as_bytes()) {
                Ok(method) if methods.contains(&method) => self
                    .report
                    .at(&path.index(i), format!("duplicate method {upper:?}")),
                Ok(method) => methods.push(method),
                Err(_) => self.report.at(
                    &path.index(i),
                    format!("invalid method {text:?}, expected an HTTP method such as \"GET\""),
                ),
            }
        }
        methods
    }

    fn integration(
        &mut self,
        path: &KeyPath,
        upstream: Option<String>,
        mock: Option<RawMock>,
        handler: Option<RawPluginUse>,
        names: &Names<'_>,
    ) -> Integration {
        const NEEDS_ONE: &str =
            "a route needs exactly one integration: `upstream`, `mock` or `handler`";
        match (upstream, mock, handler) {
            (Some(name), None, None) => Integration::Upstream(self.upstream_ref(
                &path.key("upstream"),
                &name,
                names.upstreams,
            )),
            (None, Some(mock), None) => Integration::Mock(self.mock(&path.key("mock"), mock)),
            (None, None, Some(handler)) => Integration::Handler(super::plugins::plugin_use(
                self.report,
                &path.key("handler"),
                handler,
                names.uses(),
                super::plugins::UseKind::Handler,
            )),
            (None, None, None) => {
                self.report.at(path, NEEDS_ONE);
                Integration::Upstream(0)
            }
            (upstream, mock, handler) => {
                let found: Vec<&str> = [
                    upstream.map(|_| "`upstream`"),
                    mock.map(|_| "`mock`"),
                    handler.map(|_| "`handler`"),
                ]
                .into_iter()
                .flatten()
                .collect();
                let found = if found.len() == 2 {
                    "both".to_owned()
                } else {
                    found.join(", ")
                };
                self.report.at(path, format!("{NEEDS_ONE}, found {found}"));
                Integration::Upstream(0)
            }
        }
    }

    fn upstream_ref(&mut self, path: &KeyPath, name: &str, upstreams: &[&str]) -> usize {
        if let Some(index) = upstreams.iter().position(|known| *known == name) {
            return index;
        }
        let message = if upstreams.is_empty() {
            format!("unknown upstream {name:?}, no `[upstreams]` are defined")
        } else {
            format!(
                "unknown upstream {name:?}{}",
                did_you_mean(name, upstreams.iter().copied())
            )
        };
        self.report.at(path, message);
        0
    }

    fn mock(&mut self, path: &KeyPath, raw: RawMock) -> Mock {
        let status = match raw.status {
            None => DEFAULT_MOCK_STATUS,
            Some(code) => {
                let status = u16::try_from(code)
                    .ok()
                    .filter(|_| MOCK_STATUS_RANGE.contains(&code))
                    .and_then(|code| StatusCode::from_u16(code).ok());
                status.unwrap_or_else(|| {
                    self.report.at(
                        &path.key("status"),
                        format!("expected a status code from 100 to 599, got {code}"),
                    );
                    DEFAULT_MOCK_STATUS
                })
            }
        };
        let mut headers = HeaderMap::new();
        let headers_path = path.key("headers");
        for (name, value) in raw.headers.unwrap_or_default() {
            let header_path = headers_path.key(&name);
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                self.report.at_key(
                    &header_path,
                    format!("invalid header name {name:?}, expected e.g. \"content-type\""),
                );
                continue;
            };
            match HeaderValue::from_str(&value) {
                Ok(value) => {
                    headers.append(header, value);
                }
                Err(_) => self.report.at(
                    &header_path,
                    format!("invalid header value {value:?}, expected visible ASCII text"),
                ),
            }
        }
        Mock {
            status,
            headers,
            body: Bytes::from(raw.body.unwrap_or_default()),
        }
    }

    /// Names must be unique. Two default names can only be equal for routes with the same
    /// methods, path and hosts, which the router reports as duplicate routes; so a clash
    /// is reported here only when at least one of the names is written in the file.
    fn unique_route_names(&mut self, path: &KeyPath, routes: &[Route]) {
        let mut first_use: HashMap<&str, usize> = HashMap::new();
        for (i, route) in routes.iter().enumerate() {
            match first_use.entry(route.name.as_str()) {
                Entry::Vacant(slot) => {
                    slot.insert(i);
                }
                Entry::Occupied(first) => {
                    let route_path = path.index(i);
                    let name_path = route_path.key("name");
                    let first_name_path = path.index(*first.get()).key("name");
                    let written = self.report.is_in_file(&name_path);
                    if !written && !self.report.is_in_file(&first_name_path) {
                        continue;
                    }
                    // Place the error at `name` if it is written, else at the route.
                    let at = if written { name_path } else { route_path };
                    self.report.at(
                        &at,
                        format!(
                            "duplicate route name {:?}, also used by {}",
                            route.name,
                            path.index(*first.get())
                        ),
                    );
                }
            }
        }
    }

    // ---- values ----

    fn required<T>(&mut self, path: &KeyPath, value: Option<T>, expected: &str) -> Option<T> {
        if value.is_none() {
            self.report
                .at(path, format!("missing required key, expected {expected}"));
        }
        value
    }

    fn socket_addr(&mut self, path: &KeyPath, raw: Option<String>) -> Option<SocketAddr> {
        let text = raw?;
        match SocketAddr::from_str(&text) {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.report.at(
                    path,
                    format!(
                        "invalid socket address {text:?}, expected an IP address and port \
                         such as \"127.0.0.1:8080\""
                    ),
                );
                None
            }
        }
    }

    fn duration(
        &mut self,
        path: &KeyPath,
        raw: Option<String>,
        default: Duration,
        zero: Zero,
    ) -> Duration {
        let Some(text) = raw else { return default };
        match parse_duration(&text) {
            Ok(duration) if duration.is_zero() && zero == Zero::Refused => {
                self.report.at(
                    path,
                    format!("expected a duration greater than zero, got {text:?}"),
                );
                default
            }
            Ok(duration) => duration,
            Err(error) => {
                self.report.at(path, error.to_string());
                default
            }
        }
    }

    fn size(&mut self, path: &KeyPath, raw: Option<RawSize>) -> Option<u64> {
        let parsed = match raw? {
            RawSize::Text(text) => parse_size(&text).map_err(|error| error.to_string()),
            RawSize::Bytes(bytes) => u64::try_from(bytes).map_err(|_| {
                format!("invalid size {bytes}, expected a number of bytes of at least 0")
            }),
        };
        parsed.map_err(|message| self.report.at(path, message)).ok()
    }

    /// An integer of at least `min` that fits `T`; `default` when absent or wrong.
    fn integer<T: TryFrom<i64> + Copy>(
        &mut self,
        path: &KeyPath,
        raw: Option<i64>,
        min: i64,
        default: T,
    ) -> T {
        let Some(value) = raw else { return default };
        if value < min {
            self.report.at(
                path,
                format!("expected an integer of at least {min}, got {value}"),
            );
            return default;
        }
        T::try_from(value).unwrap_or_else(|_| {
            self.report.at(path, format!("{value} is too large"));
            default
        })
    }

    /// One of a fixed set of strings.
    fn choice<T: Copy>(
        &mut self,
        path: &KeyPath,
        raw: Option<String>,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(text) = raw else { return default };
        if let Some((_, value)) = options.iter().find(|(name, _)| *name == text) {
            return *value;
        }
        let expected = options
            .iter()
            .map(|(name, _)| format!("{name:?}"))
            .collect::<Vec<_>>()
            .join(" or ");
        let names = options.iter().map(|(name, _)| *name);
        self.report.at(
            path,
            format!(
                "invalid value {text:?}, expected {expected}{}",
                did_you_mean(&text, names)
            ),
        );
        default
    }

    /// A host name for routing or SNI, lower-cased; `None` (reported) when invalid.
    fn host_name(&mut self, path: &KeyPath, raw: &str) -> Option<String> {
        let name = raw.to_ascii_lowercase();
        match check_host_name(&name) {
            Ok(()) => Some(name),
            Err(message) => {
                self.report.at(path, message);
                None
            }
        }
    }
}

/// Whether two listen addresses would collide. Port 0 (any free port) never collides.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// `"GET,POST /path"`, or just the path when any method is allowed; `" on HOST,HOST"`
/// follows when the route lists hosts, so that routes told apart only by host get
/// different names.
fn default_route_name(methods: Option<&[Method]>, path: &str, hosts: &[String]) -> String {
    let mut name = match methods {
        Some(methods) if !methods.is_empty() => {
            let methods: Vec<&str> = methods.iter().map(Method::as_str).collect();
            format!("{} {path}", methods.join(","))
        }
        _ => path.to_owned(),
    };
    if !hosts.is_empty() {
        name.push_str(" on ");
        name.push_str(&hosts.join(","));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_addresses() {
        let addr = |s: &str| SocketAddr::from_str(s).expect("valid address");
        assert!(overlaps(addr("127.0.0.1:80"), addr("127.0.0.1:80")));
        assert!(overlaps(addr("0.0.0.0:80"), addr("127.0.0.1:80")));
        assert!(!overlaps(addr("127.0.0.1:80"), addr("127.0.0.2:80")));
        assert!(!overlaps(addr("127.0.0.1:0"), addr("127.0.0.1:0")));
    }

    #[test]
    fn default_names() {
        let methods = [Method::GET, Method::POST];
        assert_eq!(default_route_name(Some(&methods), "/a", &[]), "GET,POST /a");
        assert_eq!(default_route_name(None, "/a", &[]), "/a");
        let hosts = ["a.example".to_owned(), "*.b.example".to_owned()];
        assert_eq!(
            default_route_name(Some(&methods[..1]), "/a", &hosts),
            "GET /a on a.example,*.b.example"
        );
    }
}
