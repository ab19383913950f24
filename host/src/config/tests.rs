//! Tests of the whole pass, one or more per rule of the route file: each would fail if
//! its rule were dropped. Messages are checked in full where the wording matters.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Method, StatusCode};

use super::*;
use crate::path::EscapedSeparators;

const LISTEN: &str = "[server]\nlisten = \"127.0.0.1:8080\"\n";

fn certs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/config/certs")
}

fn env(name: &str) -> Option<String> {
    match name {
        "CERTS" => Some(certs_dir().display().to_string()),
        "PORT" => Some("8080".to_owned()),
        _ => None,
    }
}

fn try_parse(source: &str) -> Result<Config, ConfigErrors> {
    parse(source, Path::new("weir.toml"), &env)
}

/// The errors `source` gives, as printed.
fn errors(source: &str) -> Vec<String> {
    match try_parse(source) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// The one error `source` gives.
fn error(source: &str) -> String {
    let errors = errors(source);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    errors.into_iter().next().unwrap_or_default()
}

fn valid(source: &str) -> Config {
    try_parse(source).unwrap_or_else(|errors| panic!("expected a valid file:\n{errors}"))
}

/// `LISTEN` plus `rest`.
fn with_listen(rest: &str) -> String {
    format!("{LISTEN}{rest}")
}

fn tls(rest: &str) -> String {
    format!(
        "[server.tls]\nlisten = \"127.0.0.1:8443\"\ncert = \"${{env:CERTS}}/server.crt\"\n\
         key = \"${{env:CERTS}}/server.key\"\n{rest}"
    )
}

// ---- the error format ----

#[test]
fn errors_carry_file_line_column_and_key() {
    let error = &try_parse("[server]\nadmin = \"127.0.0.1:9901\"\nlisen = \"127.0.0.1:8080\"\n")
        .expect_err("an error")
        .0[0];
    assert_eq!(error.file, Path::new("weir.toml"));
    assert_eq!((error.line, error.column), (Some(3), Some(1)));
    assert_eq!(error.key, "server.lisen");
    assert_eq!(error.message, "unknown key (did you mean \"listen\"?)");
}

#[test]
fn all_errors_are_reported_in_file_order() {
    let source = with_listen(
        "request_timeout = \"soon\"\n\
         [[routes]]\npath = \"nope\"\n\
         [[routes]]\npath = \"/b\"\nupstream = \"missing\"\n",
    );
    assert_eq!(
        errors(&source),
        [
            "weir.toml:3:19: server.request_timeout: invalid duration \"soon\", expected e.g. \"250ms\", \"5s\", \"1h\"",
            "weir.toml:4:1: routes[0]: a route needs exactly one integration: `upstream`, `mock` or `handler`",
            "weir.toml:5:8: routes[0].path: invalid path \"nope\", expected a path starting with \"/\"",
            "weir.toml:8:12: routes[1].upstream: unknown upstream \"missing\", no `[upstreams]` are defined",
        ]
    );
}

#[test]
fn syntax_errors_keep_toml_position() {
    assert_eq!(
        error("[server]\nlisten = \n"),
        "weir.toml:2:10: string values must be quoted, expected literal string"
    );
}

#[test]
fn type_errors_name_the_key_and_toml_words() {
    assert_eq!(
        error(&with_listen(
            "[upstreams.users]\ntargets = [\"http://h\"]\nretries = \"two\"\n"
        )),
        "weir.toml:5:11: upstreams.users.retries: invalid type: string \"two\", expected an integer"
    );
    assert_eq!(
        error("server = 5\n"),
        "weir.toml:1:10: server: invalid type: integer `5`, expected a table"
    );
    assert_eq!(
        error("[server]\nlisten = 1979-05-27\n"),
        "weir.toml:2:10: server.listen: invalid type: datetime, expected a string"
    );
    assert_eq!(
        error(&with_listen("[routes]\npath = \"/\"\n")),
        "weir.toml:3:1: routes: invalid type: table, expected an array"
    );
}

#[test]
fn load_reports_an_unreadable_file_without_position() {
    let missing = Path::new("/nonexistent/weir.toml");
    assert_eq!(
        load(missing).expect_err("an error").to_string(),
        "/nonexistent/weir.toml: cannot read the route file: no such file"
    );
}

#[test]
fn load_resolves_files_against_the_config_directory() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::create_dir(dir.path().join("tls")).expect("create tls/");
    for file in ["server.crt", "server.key"] {
        std::fs::copy(certs_dir().join(file), dir.path().join("tls").join(file))
            .expect("copy a certificate");
    }
    let path = dir.path().join("weir.toml");
    std::fs::write(
        &path,
        "[server.tls]\nlisten = \"127.0.0.1:0\"\ncert = \"tls/server.crt\"\nkey = \"tls/server.key\"\n",
    )
    .expect("write weir.toml");
    let config = load(&path).expect("a valid file");
    let tls = config.server.tls.expect("tls is set");
    assert_eq!(
        tls.default_cert.cert_path,
        dir.path().join("tls/server.crt")
    );
    assert_eq!(tls.default_cert.chain.len(), 1);
    assert_eq!(config.source, path);
}

// ---- unknown keys ----

#[test]
fn unknown_keys_everywhere_with_suggestions() {
    let source = with_listen(
        "colour = 1\n\
         [upstreams.users]\ntargets = [{ url = \"http://h\", wieght = 2 }]\n\
         pool = { max_idel = 1 }\n\
         [[routes]]\npath = \"/\"\nmock = { stauts = 200, headers = { x-anything = \"ok\" } }\n",
    );
    assert_eq!(
        errors(&source),
        [
            "weir.toml:3:1: server.colour: unknown key",
            "weir.toml:5:32: upstreams.users.targets[0].wieght: unknown key (did you mean \"weight\"?)",
            "weir.toml:6:10: upstreams.users.pool.max_idel: unknown key (did you mean \"max_idle\"?)",
            "weir.toml:9:10: routes[0].mock.stauts: unknown key (did you mean \"status\"?)",
        ]
    );
}

#[test]
fn a_misspelt_key_does_not_also_look_missing() {
    // Without the suggestion, `path` would be reported missing and `listen` would leave
    // the server without a listener.
    assert_eq!(
        errors("[server]\nlisen = \"127.0.0.1:8080\"\n[[routes]]\npth = \"/\"\nmock = {}\n"),
        [
            "weir.toml:2:1: server.lisen: unknown key (did you mean \"listen\"?)",
            "weir.toml:4:1: routes[0].pth: unknown key (did you mean \"path\"?)",
        ]
    );
    // When the key it resembles is also written, both are checked.
    assert_eq!(
        errors("[server]\nlisten = \"bad\"\nlisen = 1\n"),
        [
            "weir.toml:2:10: server.listen: invalid socket address \"bad\", expected an IP address and port such as \"127.0.0.1:8080\"",
            "weir.toml:3:1: server.lisen: unknown key (did you mean \"listen\"?)",
        ]
    );
}

#[test]
fn a_websocket_api_is_the_routes_only_integration() {
    let source = with_listen("[[routes]]\npath = \"/\"\nmock = {}\nwebsocket = {}\n");
    assert_eq!(
        errors(&source),
        [
            "weir.toml:6:13: routes[0].websocket: a route with `websocket` is the WebSocket \
          server itself and takes no other integration, found `mock`"
        ]
    );
}

// ---- ${env:NAME} ----

#[test]
fn env_interpolates_any_string_value() {
    let config = valid("[server]\nlisten = \"127.0.0.1:${env:PORT}\"\n");
    assert_eq!(config.server.listen, "127.0.0.1:8080".parse().ok());
}

#[test]
fn undefined_env_is_one_error_at_its_key() {
    assert_eq!(
        error("[server]\nlisten = \"${env:NOPE}\"\n"),
        "weir.toml:2:10: server.listen: environment variable \"NOPE\" is not set"
    );
    assert_eq!(
        error(&with_listen(
            "[[routes]]\npath = \"/\"\nupstream = \"${env:NOPE}\"\n"
        )),
        "weir.toml:5:12: routes[0].upstream: environment variable \"NOPE\" is not set"
    );
}

// ---- [server] ----

#[test]
fn server_defaults() {
    let server = valid(LISTEN).server;
    assert_eq!(server.admin, None);
    assert!(server.tls.is_none());
    assert_eq!(server.workers, None);
    assert_eq!(server.max_body, DEFAULT_MAX_BODY_BYTES);
    assert_eq!(server.request_timeout, DEFAULT_REQUEST_TIMEOUT);
    assert_eq!(server.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
    assert_eq!(server.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    assert_eq!(server.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
    assert_eq!(server.max_headers, DEFAULT_MAX_HEADERS);
    assert_eq!(server.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
    assert_eq!(server.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert!(server.trusted_proxies.is_empty());
    assert!(server.paths.merge_slashes);
    assert_eq!(server.paths.escaped_separators, EscapedSeparators::Reject);
}

#[test]
fn server_values() {
    let server = valid(&with_listen(
        "admin = \"127.0.0.1:9901\"\nworkers = 2\nmax_body = \"2MiB\"\nrequest_timeout = \"1s\"\n\
         header_read_timeout = \"2s\"\nidle_timeout = \"3s\"\nshutdown_grace = \"0s\"\n\
         max_headers = 10\nmax_header_bytes = 2048\nmax_connections = 7\n\
         trusted_proxies = [\"10.1.2.3/8\", \"192.168.0.1\", \"::1\"]\n\
         merge_slashes = false\nescaped_separators = \"keep\"\n",
    ))
    .server;
    assert_eq!(server.admin, "127.0.0.1:9901".parse().ok());
    assert_eq!(server.workers, Some(2));
    assert_eq!(server.max_body, 2 << 20);
    assert_eq!(server.request_timeout, Duration::from_secs(1));
    assert_eq!(server.header_read_timeout, Duration::from_secs(2));
    assert_eq!(server.idle_timeout, Duration::from_secs(3));
    assert_eq!(server.shutdown_grace, Duration::ZERO);
    assert_eq!(server.max_headers, 10);
    assert_eq!(server.max_header_bytes, 2048);
    assert_eq!(server.max_connections, 7);
    let proxies: Vec<String> = server
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(proxies, ["10.0.0.0/8", "192.168.0.1/32", "::1/128"]);
    assert!(!server.paths.merge_slashes);
    assert_eq!(server.paths.escaped_separators, EscapedSeparators::Keep);
}

#[test]
fn a_listener_is_required() {
    assert_eq!(
        error("[server]\nadmin = \"127.0.0.1:9901\"\n"),
        "weir.toml:1:1: server: at least one of `server.listen` and `server.tls.listen` must be set"
    );
    assert_eq!(
        error(""),
        "weir.toml: server: at least one of `server.listen` and `server.tls.listen` must be set"
    );
}

#[test]
fn tls_alone_is_a_listener() {
    let config = valid(&tls(""));
    assert_eq!(config.server.listen, None);
    assert_eq!(
        config.server.tls.map(|tls| tls.listen),
        "127.0.0.1:8443".parse().ok()
    );
}

#[test]
fn bad_socket_address() {
    assert_eq!(
        error("[server]\nlisten = \"localhost:80\"\n"),
        "weir.toml:2:10: server.listen: invalid socket address \"localhost:80\", expected an IP address and port such as \"127.0.0.1:8080\""
    );
}

#[test]
fn admin_must_differ_from_public_listeners() {
    assert_eq!(
        error(&with_listen("admin = \"127.0.0.1:8080\"\n")),
        "weir.toml:3:9: server.admin: 127.0.0.1:8080 is also `server.listen`, the admin listener must be separate from the public ones"
    );
    let source = format!("[server]\nadmin = \"0.0.0.0:8443\"\n{}", tls(""));
    assert!(error(&source).contains("server.admin: 0.0.0.0:8443 is also `server.tls.listen`"));
    // Checked even while the TLS certificate is still missing.
    let errors =
        errors("[server]\nadmin = \"0.0.0.0:8443\"\n[server.tls]\nlisten = \"127.0.0.1:8443\"\n");
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].contains("server.admin: 0.0.0.0:8443 is also `server.tls.listen`"));
    // Port 0 means "any free port": never a collision.
    valid("[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n");
}

#[test]
fn tls_listen_must_differ_from_listen() {
    let source = format!(
        "{}{}",
        LISTEN,
        tls("").replace("127.0.0.1:8443", "127.0.0.1:8080")
    );
    assert!(error(&source).contains("server.tls.listen: 127.0.0.1:8080 is also `server.listen`"));
}

#[test]
fn server_counts_have_minimums() {
    let errors = errors(&with_listen(
        "workers = 0\nmax_headers = 0\nmax_connections = -1\nmax_header_bytes = \"512\"\n",
    ));
    assert_eq!(
        errors,
        [
            "weir.toml:3:11: server.workers: expected an integer of at least 1, got 0",
            "weir.toml:4:15: server.max_headers: expected an integer of at least 1, got 0",
            "weir.toml:5:19: server.max_connections: expected an integer of at least 1, got -1",
            "weir.toml:6:20: server.max_header_bytes: expected at least 1KiB (1024 bytes), got 512",
        ]
    );
}

#[test]
fn bad_sizes() {
    assert_eq!(
        error(&with_listen("max_body = \"1 parsec\"\n")),
        "weir.toml:3:12: server.max_body: invalid size \"1 parsec\", expected a number of bytes with an optional unit, e.g. \"512KiB\", \"1MiB\", \"10MB\", \"1024\""
    );
    assert!(error(&with_listen("max_body = -5\n")).contains("invalid size -5"));
    assert_eq!(valid(&with_listen("max_body = 100\n")).server.max_body, 100);
}

#[test]
fn timeouts_must_be_positive() {
    assert_eq!(
        error(&with_listen("idle_timeout = \"0s\"\n")),
        "weir.toml:3:16: server.idle_timeout: expected a duration greater than zero, got \"0s\""
    );
}

#[test]
fn bad_trusted_proxy() {
    assert_eq!(
        error(&with_listen(
            "trusted_proxies = [\"10.0.0.0/8\", \"ten\"]\n"
        )),
        "weir.toml:3:34: server.trusted_proxies[1]: invalid address \"ten\", expected an IP address or a CIDR range such as \"10.0.0.0/8\""
    );
}

#[test]
fn bad_choice_suggests() {
    assert_eq!(
        error(&with_listen("escaped_separators = \"rejct\"\n")),
        "weir.toml:3:22: server.escaped_separators: invalid value \"rejct\", expected \"reject\" or \"keep\" (did you mean \"reject\"?)"
    );
}

// ---- [server.tls] ----

#[test]
fn tls_requires_listen_cert_and_key() {
    assert_eq!(
        errors("[server.tls]\nclient_auth = \"required\"\n"),
        [
            "weir.toml:1:1: server.tls.listen: missing required key, expected an address such as \"0.0.0.0:8443\"",
            "weir.toml:1:1: server.tls.cert: missing required key, expected a PEM certificate file",
            "weir.toml:1:1: server.tls.key: missing required key, expected a PEM private key file",
            "weir.toml:2:15: server.tls.client_auth: only meaningful with `client_ca`, which is not set",
        ]
    );
}

#[test]
fn tls_files_must_be_readable_pem() {
    let source = "[server.tls]\nlisten = \"127.0.0.1:8443\"\ncert = \"missing.crt\"\n\
                  key = \"${env:CERTS}/empty.pem\"\nclient_ca = \"${env:CERTS}/server.key\"\n";
    let certs = certs_dir().display().to_string();
    assert_eq!(
        errors(source),
        [
            "weir.toml:3:8: server.tls.cert: cannot read \"missing.crt\": no such file".to_owned(),
            format!(
                "weir.toml:4:7: server.tls.key: no private key in \"{certs}/empty.pem\", expected a PEM file with a \"PRIVATE KEY\" block"
            ),
            format!(
                "weir.toml:5:13: server.tls.client_ca: no certificate in \"{certs}/server.key\", expected a PEM file with a \"CERTIFICATE\" block"
            ),
        ]
    );
}

#[test]
fn tls_key_must_match_cert() {
    let source = tls("").replace("server.key", "api.key");
    let certs = certs_dir().display().to_string();
    assert_eq!(
        error(&source),
        format!(
            "weir.toml:4:7: server.tls.key: private key does not match the certificate in \"{certs}/server.crt\""
        )
    );
}

#[test]
fn tls_client_auth() {
    let config = valid(&tls("client_ca = \"${env:CERTS}/ca.crt\"\n"));
    let tls_config = config.server.tls.expect("tls is set");
    assert_eq!(tls_config.client_auth, ClientAuth::Required);
    assert_eq!(tls_config.client_ca.map(|certs| certs.len()), Some(1));
    let config = valid(&tls(
        "client_ca = \"${env:CERTS}/ca.crt\"\nclient_auth = \"optional\"\n",
    ));
    assert_eq!(
        config.server.tls.map(|tls| tls.client_auth),
        Some(ClientAuth::Optional)
    );
    assert!(
        error(&tls("client_auth = \"optional\"\n"))
            .contains("server.tls.client_auth: only meaningful with `client_ca`")
    );
    assert!(
        error(&tls(
            "client_ca = \"${env:CERTS}/ca.crt\"\nclient_auth = \"sometimes\"\n"
        ))
        .contains("invalid value \"sometimes\", expected \"required\" or \"optional\"")
    );
}

fn sni(names: &str) -> String {
    format!(
        "[[server.tls.sni]]\nnames = {names}\ncert = \"${{env:CERTS}}/api.crt\"\nkey = \"${{env:CERTS}}/api.key\"\n"
    )
}

#[test]
fn sni_names_are_lower_cased() {
    let config = valid(&tls(&sni("[\"API.example.com\", \"*.Example.com\"]")));
    let tls_config = config.server.tls.expect("tls is set");
    assert_eq!(
        tls_config.sni[0].names,
        ["api.example.com", "*.example.com"]
    );
}

#[test]
fn sni_names_are_checked() {
    assert!(
        error(&tls(&sni("[]"))).contains(
            "server.tls.sni[0].names: expected at least one host name, got an empty list"
        )
    );
    assert!(error(&tls(&sni("[\"a.*.com\"]"))).contains(
        "server.tls.sni[0].names[0]: invalid host name \"a.*.com\", a wildcard is only allowed as a leading \"*.\""
    ));
    let twice = format!(
        "{}{}",
        sni("[\"a.example\"]"),
        sni("[\"b.example\", \"A.example\"]")
    );
    assert_eq!(
        error(&tls(&twice)),
        "weir.toml:10:23: server.tls.sni[1].names[1]: \"a.example\" is already served by server.tls.sni[0]"
    );
}

// ---- [upstreams.NAME] ----

fn upstream(rest: &str) -> String {
    with_listen(&format!("[upstreams.users]\n{rest}"))
}

#[test]
fn upstream_defaults_and_targets() {
    let config = valid(&upstream(
        "targets = [\"http://127.0.0.1:9000\", { url = \"https://Api.example/v1/\", weight = 3 }]\n",
    ));
    let users = &config.upstreams[0];
    assert_eq!(users.name, "users");
    assert_eq!(users.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(users.timeout, DEFAULT_UPSTREAM_TIMEOUT);
    assert_eq!(users.retries, DEFAULT_RETRIES);
    assert!(!users.http2);
    assert!(users.ca.is_none());
    assert!(!users.preserve_host);
    assert_eq!(users.eject.failures, DEFAULT_EJECT_FAILURES);
    assert_eq!(users.eject.duration, DEFAULT_EJECT_DURATION);
    assert_eq!(users.pool.max_idle, DEFAULT_POOL_MAX_IDLE);
    assert_eq!(users.pool.idle_timeout, DEFAULT_POOL_IDLE_TIMEOUT);

    let [plain, secure] = &users.targets[..] else {
        panic!("two targets expected")
    };
    assert_eq!(
        (plain.scheme, plain.host.as_str(), plain.port, plain.weight),
        (Scheme::Http, "127.0.0.1", 9000, DEFAULT_TARGET_WEIGHT)
    );
    assert_eq!(plain.base_path, "");
    assert_eq!(plain.url, "http://127.0.0.1:9000");
    assert_eq!(
        (
            secure.scheme,
            secure.host.as_str(),
            secure.port,
            secure.weight
        ),
        (Scheme::Https, "api.example", 443, 3)
    );
    assert_eq!(secure.authority.as_str(), "Api.example");
    assert_eq!(secure.base_path, "/v1");
}

#[test]
fn upstream_values() {
    let config = valid(&upstream(
        "targets = [\"https://h\"]\nconnect_timeout = \"100ms\"\ntimeout = \"2s\"\nretries = 0\n\
         http2 = true\nca = \"${env:CERTS}/ca.crt\"\npreserve_host = true\n\
         eject = { failures = 2, duration = \"1m\" }\npool = { max_idle = 0, idle_timeout = \"0s\" }\n",
    ));
    let users = &config.upstreams[0];
    assert_eq!(users.connect_timeout, Duration::from_millis(100));
    assert_eq!(users.timeout, Duration::from_secs(2));
    assert_eq!(users.retries, 0);
    assert!(users.http2);
    assert_eq!(users.ca.as_ref().map(Vec::len), Some(1));
    assert!(users.preserve_host);
    assert_eq!(users.eject.failures, 2);
    assert_eq!(users.eject.duration, Duration::from_secs(60));
    assert_eq!(users.pool.max_idle, 0);
    assert_eq!(users.pool.idle_timeout, Duration::ZERO);
}

#[test]
fn upstreams_keep_file_order() {
    let config = valid(&with_listen(
        "[upstreams.zeta]\ntargets = [\"http://z\"]\n[upstreams.alpha]\ntargets = [\"http://a\"]\n\
         [[routes]]\npath = \"/\"\nupstream = \"alpha\"\n",
    ));
    let names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha"]);
    assert!(matches!(
        config.routes[0].integration,
        Integration::Upstream(1)
    ));
}

#[test]
fn upstream_names_are_restricted() {
    assert_eq!(
        error(&with_listen(
            "[upstreams.\"a.b\"]\ntargets = [\"http://h\"]\n"
        )),
        "weir.toml:3:12: upstreams.\"a.b\": invalid upstream name \"a.b\", expected letters, digits, `_` and `-`"
    );
}

#[test]
fn upstream_targets_are_required() {
    assert_eq!(
        error(&upstream("timeout = \"1s\"\n")),
        "weir.toml:3:1: upstreams.users.targets: missing required key, expected a list of target URLs"
    );
    assert_eq!(
        error(&upstream("targets = []\n")),
        "weir.toml:4:11: upstreams.users.targets: expected at least one target, got an empty list"
    );
}

#[test]
fn bad_targets() {
    assert_eq!(
        errors(&upstream(
            "targets = [\"ftp://h\", { url = \"http://h?x=1\" }, { weight = 0 }]\n"
        )),
        [
            "weir.toml:4:12: upstreams.users.targets[0]: unsupported scheme \"ftp\" in \"ftp://h\", expected \"http\" or \"https\"",
            "weir.toml:4:31: upstreams.users.targets[1].url: a target URL takes no query or fragment, got \"http://h?x=1\"",
            "weir.toml:4:49: upstreams.users.targets[2].url: missing required key, expected a URL such as \"http://127.0.0.1:9000\"",
            "weir.toml:4:60: upstreams.users.targets[2].weight: expected an integer of at least 1, got 0",
        ]
    );
}

#[test]
fn upstream_ca_needs_an_https_target() {
    assert_eq!(
        error(&upstream(
            "targets = [\"http://h\"]\nca = \"${env:CERTS}/ca.crt\"\n"
        )),
        "weir.toml:5:6: upstreams.users.ca: only used for https targets, and every target of this upstream is http"
    );
}

#[test]
fn upstream_counts_have_minimums() {
    assert_eq!(
        errors(&upstream(
            "targets = [\"http://h\"]\nretries = -1\neject = { failures = 0 }\npool = { max_idle = -1 }\n"
        )),
        [
            "weir.toml:5:11: upstreams.users.retries: expected an integer of at least 0, got -1",
            "weir.toml:6:22: upstreams.users.eject.failures: expected an integer of at least 1, got 0",
            "weir.toml:7:21: upstreams.users.pool.max_idle: expected an integer of at least 0, got -1",
        ]
    );
}

// ---- [[routes]] ----

fn route(rest: &str) -> String {
    with_listen(&format!(
        "[upstreams.users]\ntargets = [\"http://h\"]\n[[routes]]\n{rest}"
    ))
}

#[test]
fn route_values() {
    let config = valid(&route(
        "name = \"r\"\nmethods = [\"get\", \"Post\"]\npath = \"/users/{id}\"\n\
         hosts = [\"API.example.com\"]\nmax_body = \"1KiB\"\nupstream = \"users\"\n",
    ));
    let r = &config.routes[0];
    assert_eq!(r.name, "r");
    assert_eq!(r.methods, Some(vec![Method::GET, Method::POST]));
    assert_eq!(r.path, "/users/{id}");
    assert_eq!(r.hosts, ["api.example.com"]);
    assert_eq!(r.max_body, Some(1024));
    assert!(matches!(r.integration, Integration::Upstream(0)));
}

#[test]
fn route_defaults() {
    let config = valid(&route(
        "path = \"/a\"\nmock = {}\n[[routes]]\nmethods = [\"GET\", \"HEAD\"]\npath = \"/b\"\nmock = {}\n",
    ));
    let (a, b) = (&config.routes[0], &config.routes[1]);
    assert_eq!(a.name, "/a");
    assert_eq!(a.methods, None);
    assert!(a.hosts.is_empty());
    assert_eq!(a.max_body, None);
    assert_eq!(b.name, "GET,HEAD /b");
    let Integration::Mock(mock) = &a.integration else {
        panic!("a mock expected")
    };
    assert_eq!(mock.status, StatusCode::OK);
    assert!(mock.headers.is_empty());
    assert!(mock.body.is_empty());
}

#[test]
fn route_path_is_required_and_absolute() {
    assert_eq!(
        error(&route("upstream = \"users\"\n")),
        "weir.toml:5:1: routes[0].path: missing required key, expected a path starting with \"/\", e.g. \"/users/{id}\""
    );
    assert!(
        error(&route("path = \"users\"\nupstream = \"users\"\n")).contains(
            "routes[0].path: invalid path \"users\", expected a path starting with \"/\""
        )
    );
}

#[test]
fn route_methods_are_checked() {
    assert_eq!(
        errors(&route(
            "path = \"/\"\nupstream = \"users\"\nmethods = [\"GET\", \"get\", \"BAD METHOD\"]\n"
        )),
        [
            "weir.toml:8:19: routes[0].methods[1]: duplicate method \"GET\"",
            "weir.toml:8:26: routes[0].methods[2]: invalid method \"BAD METHOD\", expected an HTTP method such as \"GET\"",
        ]
    );
    assert!(
        error(&route("path = \"/\"\nupstream = \"users\"\nmethods = []\n"))
            .contains("routes[0].methods: expected at least one method, got an empty list")
    );
}

#[test]
fn route_hosts_are_checked() {
    assert!(
        error(&route(
            "path = \"/\"\nupstream = \"users\"\nhosts = [\"ok.example\", \"bad host\"]\n"
        ))
        .contains("routes[0].hosts[1]: invalid host name \"bad host\"")
    );
}

#[test]
fn route_needs_exactly_one_integration() {
    assert_eq!(
        error(&route("path = \"/\"\n")),
        "weir.toml:5:1: routes[0]: a route needs exactly one integration: `upstream`, `mock` or `handler`"
    );
    assert_eq!(
        error(&route("path = \"/\"\nupstream = \"users\"\nmock = {}\n")),
        "weir.toml:5:1: routes[0]: a route needs exactly one integration: `upstream`, `mock` or `handler`, found both"
    );
}

#[test]
fn unknown_upstream_suggests() {
    assert_eq!(
        error(&route("path = \"/\"\nupstream = \"usres\"\n")),
        "weir.toml:7:12: routes[0].upstream: unknown upstream \"usres\" (did you mean \"users\"?)"
    );
}

#[test]
fn mock_values() {
    let config = valid(&route(
        "path = \"/\"\nmock = { status = 201, body = \"hi\", headers = { Content-Type = \"text/plain\", x-a = \"b\" } }\n",
    ));
    let Integration::Mock(mock) = &config.routes[0].integration else {
        panic!("a mock expected")
    };
    assert_eq!(mock.status, StatusCode::CREATED);
    assert_eq!(&mock.body[..], b"hi");
    assert_eq!(mock.headers["content-type"], "text/plain");
    assert_eq!(mock.headers["x-a"], "b");
}

#[test]
fn mock_is_checked() {
    assert_eq!(
        errors(&route(
            "path = \"/\"\nmock = { status = 600, headers = { \"bad name\" = \"x\", ok = \"bad\\u0001value\" } }\n"
        )),
        [
            "weir.toml:7:19: routes[0].mock.status: expected a status code from 100 to 599, got 600",
            "weir.toml:7:36: routes[0].mock.headers.\"bad name\": invalid header name \"bad name\", expected e.g. \"content-type\"",
            "weir.toml:7:59: routes[0].mock.headers.ok: invalid header value \"bad\\u{1}value\", expected visible ASCII text",
        ]
    );
    assert!(
        error(&route("path = \"/\"\nmock = { status = 99 }\n"))
            .contains("expected a status code from 100 to 599, got 99")
    );
}

#[test]
fn route_names_are_unique() {
    assert_eq!(
        errors(&route(
            "name = \"a\"\npath = \"/a\"\nmock = {}\n\
             [[routes]]\nname = \"a\"\npath = \"/b\"\nmock = {}\n\
             [[routes]]\nmethods = [\"GET\"]\npath = \"/c\"\nmock = {}\n\
             [[routes]]\nname = \"GET /c\"\npath = \"/d\"\nmock = {}\n"
        )),
        [
            "weir.toml:10:8: routes[1].name: duplicate route name \"a\", also used by routes[0]",
            "weir.toml:18:8: routes[3].name: duplicate route name \"GET /c\", also used by routes[2]",
        ]
    );
    assert!(
        error(&route("name = \"\"\npath = \"/\"\nmock = {}\n"))
            .contains("routes[0].name: expected a non-empty name")
    );
}

#[test]
fn default_names_tell_routes_apart_by_host() {
    let config = valid(&route(
        "path = \"/c\"\nmock = {}\n[[routes]]\npath = \"/c\"\nhosts = [\"X.example\"]\nmock = {}\n",
    ));
    assert_eq!(config.routes[0].name, "/c");
    assert_eq!(config.routes[1].name, "/c on x.example");
}

#[test]
fn equal_default_names_are_left_to_the_router() {
    // The same route twice: one error, the router's, not also a duplicate name.
    let errors = errors(&route(
        "path = \"/c\"\nmock = {}\n[[routes]]\npath = \"/c\"\nmock = {}\n",
    ));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("weir.toml:9:8: routes[1].path: duplicate of route 0"),
        "{errors:#?}"
    );
}

#[test]
fn router_errors_are_placed_at_the_route_path() {
    let errors = errors(&route(
        "path = \"/a/{id\"\nmock = {}\n[[routes]]\npath = \"/b\"\nmock = {}\n",
    ));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("weir.toml:6:8: routes[0].path: path template"),
        "{errors:#?}"
    );
}

#[test]
fn unreadable_files_say_where_they_were_looked_for() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("weir.toml");
    std::fs::write(
        &path,
        "[server.tls]\nlisten = \"127.0.0.1:0\"\ncert = \"tls/missing.crt\"\nkey = \"tls/missing.key\"\n",
    )
    .expect("write weir.toml");
    let errors = load(&path).expect_err("the files are missing");
    let looked_for = dir.path().join("tls/missing.crt").display().to_string();
    assert_eq!(
        errors.0[0].message,
        format!("cannot read \"tls/missing.crt\" (looked for {looked_for:?}): no such file")
    );
}
