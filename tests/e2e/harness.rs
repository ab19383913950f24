//! The test harness: [`TestGateway`] runs the real `weir` binary on a route file,
//! [`TestUpstream`] is a backend in the test process, [`TestPki`] makes certificates, and
//! [`raw_request`] speaks HTTP/1.1 byte for byte where a client library would tidy the
//! request up first.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a gateway may take to start before the test fails.
/// Generous: a gateway whose plugins are not in the compiled-component cache yet
/// compiles them before it listens, and a debug build on a busy 2-core machine takes
/// seconds per component (the JavaScript and Python ones are megabytes).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The `weir` binary built for these tests.
pub fn weir_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weir")
}

/// A running `weir run` process on a route file written for the test.
pub struct TestGateway {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    stdout_lines: Arc<Mutex<Vec<String>>>,
}

impl TestGateway {
    /// Starts `weir run` on `toml`; `{dir}` in it is replaced by the test's temp dir.
    /// Listener addresses should use port 0; the harness reads the bound ones from the log.
    pub fn start(toml: &str) -> TestGateway {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, toml)
    }

    /// Like [`start`](Self::start), with more arguments for `weir run` (e.g. `--watch`).
    pub fn start_with_args(toml: &str, args: &[&str]) -> TestGateway {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::launch(dir, toml, args)
    }

    /// Like [`start`](Self::start) in a directory the test prepared (certificates…).
    pub fn start_in(dir: tempfile::TempDir, toml: &str) -> TestGateway {
        Self::launch(dir, toml, &[])
    }

    /// Like [`start_in`](Self::start_in), with extra environment variables for weir
    /// (`${env:NAME}` secrets).
    pub fn start_in_env(dir: tempfile::TempDir, toml: &str, env: &[(&str, &str)]) -> TestGateway {
        Self::launch_env(dir, toml, &[], env)
    }

    fn launch(dir: tempfile::TempDir, toml: &str, args: &[&str]) -> TestGateway {
        Self::launch_env(dir, toml, args, &[])
    }

    fn launch_env(
        dir: tempfile::TempDir,
        toml: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> TestGateway {
        let config_path = dir.path().join("weir.toml");
        let toml = toml.replace("{dir}", &dir.path().display().to_string());
        std::fs::write(&config_path, toml).expect("write config");
        let mut child = Command::new(weir_bin())
            .args(["run", "-c"])
            .arg(&config_path)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weir");
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        {
            let stdout = child.stdout.take().expect("stdout piped");
            let lines = stdout_lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().expect("stdout lines").push(line);
                }
            });
        }
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                let mut ready_tx = Some(ready_tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if std::env::var_os("WEIR_TEST_LOGS").is_some() {
                        eprintln!("[weir] {line}");
                    }
                    let is_ready = line.contains(" ready");
                    logs.lock().expect("logs").push(line);
                    if is_ready && let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
            });
        }
        let mut gateway = TestGateway {
            child: Some(child),
            dir,
            config_path,
            http: None,
            https: None,
            admin: None,
            logs,
            stdout_lines,
        };
        if ready_rx.recv_timeout(START_TIMEOUT).is_err() {
            let status = gateway
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            panic!(
                "weir did not become ready (exit: {status:?}); log:\n{}",
                gateway.logs().join("\n")
            );
        }
        for line in gateway.logs() {
            if !line.contains("listening") {
                continue;
            }
            let addr = field(&line, "addr").and_then(|a| a.parse().ok());
            match field(&line, "kind").as_deref() {
                Some("http") => gateway.http = addr,
                Some("https") => gateway.https = addr,
                Some("admin") => gateway.admin = addr,
                _ => {}
            }
        }
        gateway
    }

    /// `http://127.0.0.1:PORT{path}` on the plain listener.
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://{}{}",
            self.http.expect("gateway has no http listener"),
            path
        )
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{}",
            self.admin.expect("gateway has no admin listener"),
            path
        )
    }

    /// `POST /reload` on the admin listener, with `token` as a bearer token when given.
    pub async fn reload(&self, token: Option<&str>) -> reqwest::Response {
        let request = client().post(self.admin_url("/reload"));
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        request.send().await.expect("reload")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.expect("gateway has no http listener")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What the gateway wrote to stdout so far (the access log, by default).
    pub fn stdout(&self) -> Vec<String> {
        self.stdout_lines.lock().expect("stdout lines").clone()
    }

    /// The gateway's log so far (stderr lines).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "weir did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident set size of the gateway process, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Peak resident set size of the gateway process, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("status field")
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `key=value` from a log line (value up to the next space; quotes removed).
fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"').to_owned())
}

/// What a [`TestUpstream`] saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body_len: usize,
}

type Handler = Arc<
    dyn Fn(Request<Bytes>) -> futures_util::future::BoxFuture<'static, Response<Full<Bytes>>>
        + Send
        + Sync,
>;

/// A backend in the test process (HTTP/1.1 and h2c), recording every request.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestUpstream {
    /// Answers every request with `200` and a body naming this upstream (`from PORT`).
    pub async fn named() -> TestUpstream {
        Self::start(|_req, addr| async move {
            Response::new(Full::new(Bytes::from(format!("from {}", addr.port()))))
        })
        .await
    }

    /// Answers with the request as JSON: method, uri, headers, body length.
    pub async fn echo() -> TestUpstream {
        Self::start(|req: Request<Bytes>, _| async move {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::json!(v.to_str().unwrap_or(""))))
                .collect();
            let body = serde_json::json!({
                "method": req.method().as_str(),
                "uri": req.uri().to_string(),
                "headers": headers,
                "body_len": req.body().len(),
            });
            let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
            response.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            response
        })
        .await
    }

    /// A backend running `handler` for each request (the body fully read first); the
    /// handler also gets this upstream's address.
    pub async fn start<F, Fut>(handler: F) -> TestUpstream
    where
        F: Fn(Request<Bytes>, SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req, addr)));
        Self::serve(listener, handler, None)
    }

    /// Like [`start`](Self::start), over TLS with `server_config`.
    pub async fn start_tls<F, Fut>(
        server_config: Arc<rustls::ServerConfig>,
        handler: F,
    ) -> TestUpstream
    where
        F: Fn(Request<Bytes>, SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req, addr)));
        Self::serve(
            listener,
            handler,
            Some(tokio_rustls::TlsAcceptor::from(server_config)),
        )
    }

    fn serve(
        listener: TcpListener,
        handler: Handler,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> TestUpstream {
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let task = {
            let seen = seen.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let handler = handler.clone();
                    let seen = seen.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req: Request<Incoming>| {
                            let handler = handler.clone();
                            let seen = seen.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|c| c.to_bytes())
                                    .unwrap_or_default();
                                seen.lock().expect("seen").push(Seen {
                                    method: parts.method.to_string(),
                                    uri: parts.uri.to_string(),
                                    version: parts.version,
                                    headers: parts.headers.clone(),
                                    body_len: body.len(),
                                });
                                Ok::<_, Infallible>(handler(Request::from_parts(parts, body)).await)
                            }
                        });
                        let builder = auto::Builder::new(TokioExecutor::new());
                        match tls {
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    let _ = builder
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                }
                            }
                            None => {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    });
                }
            })
        };
        TestUpstream {
            addr,
            seen,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("seen").len()
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address nothing listens on (bound, then released).
pub fn dead_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A plain reqwest client (no proxy from the environment).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A raw HTTP/1.1 response: status, headers, body.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not json ({e}): {}", self.body))
    }
}

/// Sends `head` (a whole request head, `\r\n` line ends, no body) exactly as written, with
/// `Connection: close` semantics expected, and reads the response to EOF.
pub async fn raw_request(addr: SocketAddr, head: &str) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("response within 10s")
        .expect("read");
    parse_raw(&buf)
}

/// A `GET {path}` with the path exactly as given.
pub async fn raw_get(addr: SocketAddr, path: &str) -> RawResponse {
    raw_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

fn parse_raw(buf: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A test certificate authority with helpers to issue server and client certificates and
/// write them as PEM files.
pub struct TestPki {
    ca_key: rcgen::KeyPair,
    ca_cert: rcgen::Certificate,
    ca_issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A certificate and key, as PEM and as written files.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
}

impl TestPki {
    pub fn new(name: &str) -> TestPki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let ca_cert = params.self_signed(&ca_key).expect("ca cert");
        let issuer_key = rcgen::KeyPair::from_pem(&ca_key.serialize_pem()).expect("key copy");
        let ca_issuer = rcgen::Issuer::new(params, issuer_key);
        TestPki {
            ca_key,
            ca_cert,
            ca_issuer,
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca_cert.pem()
    }

    pub fn ca_der(&self) -> Vec<u8> {
        self.ca_cert.der().to_vec()
    }

    /// A server certificate for `names` (DNS names or IP literals).
    pub fn server_cert(&self, names: &[&str]) -> IssuedCert {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "weir test server");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate with common name `cn`.
    pub fn client_cert(&self, cn: &str) -> IssuedCert {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, params: rcgen::CertificateParams) -> IssuedCert {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca_issuer).expect("sign");
        IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        }
    }
}

impl IssuedCert {
    /// Writes `NAME.crt` and `NAME.key` into `dir`, returning their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }

    /// A rustls server config serving this certificate (for TLS test upstreams).
    pub fn rustls_server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        use rustls_pki_types::pem::PemObject;
        let certs = vec![rustls_pki_types::CertificateDer::from(
            self.cert_der.clone(),
        )];
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .expect("key pem");
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

// ---- Added for tls.rs and listener.rs: TLS clients and keep-alive raw connections ----

/// A rustls client config trusting the CA certificates `roots` (DER), offering `alpn`
/// (empty = no ALPN), and presenting `identity` as client certificate when given.
pub fn tls_client_config(
    roots: &[Vec<u8>],
    alpn: &[&[u8]],
    identity: Option<&IssuedCert>,
) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(rustls_pki_types::CertificateDer::from(root.clone()))
            .expect("root cert");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(store);
    let mut config = match identity {
        Some(cert) => {
            let chain = vec![rustls_pki_types::CertificateDer::from(
                cert.cert_der.clone(),
            )];
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
                .expect("key pem");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Opens a TLS connection to `addr` for `server_name`: a DNS name (sent as SNI) or an IP
/// literal (rustls then sends no SNI at all).
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name =
        rustls_pki_types::ServerName::try_from(server_name.to_owned()).expect("valid server name");
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// One raw HTTP/1.1 connection kept open across requests, for tests about what happens
/// to a connection before, between and after requests.
pub struct RawConn {
    stream: TcpStream,
    /// Bytes read but not yet consumed as a response.
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        RawConn {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    /// A connection opened already.
    pub fn from_stream(stream: TcpStream) -> RawConn {
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` exactly as given.
    pub async fn send(&mut self, bytes: &str) {
        self.stream
            .write_all(bytes.as_bytes())
            .await
            .expect("write");
    }

    /// Writes `bytes`, reporting failure (the server may have closed) instead of panicking.
    pub async fn try_send(&mut self, bytes: &str) -> std::io::Result<()> {
        self.stream.write_all(bytes.as_bytes()).await
    }

    /// A keep-alive `GET {path}`, and its response.
    pub async fn get(&mut self, path: &str) -> RawResponse {
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"))
            .await;
        self.read_response().await
    }

    /// Reads one response (head, then a `content-length` or chunked body) within 5 s.
    pub async fn read_response(&mut self) -> RawResponse {
        tokio::time::timeout(Duration::from_secs(5), self.read_response_inner())
            .await
            .expect("response within 5s")
    }

    /// Like [`read_response`](Self::read_response), but `None` if no whole response
    /// arrives within `within` (the connection stays usable).
    pub async fn try_read_response(&mut self, within: Duration) -> Option<RawResponse> {
        tokio::time::timeout(within, self.read_response_inner())
            .await
            .ok()
    }

    /// Reads one response head only (a `HEAD` answer, a `1xx`, `204`, `304`, or a body
    /// read separately) within 5 s.
    pub async fn read_head_only(&mut self) -> RawResponse {
        tokio::time::timeout(Duration::from_secs(5), async {
            let head_end = self.head_end().await;
            let head = parse_raw(&self.buf[..head_end]);
            self.buf.drain(..head_end);
            head
        })
        .await
        .expect("response head within 5s")
    }

    /// Reads a chunked body (after [`read_head_only`](Self::read_head_only)) to its last
    /// chunk within 5 s, and returns its data.
    pub async fn read_chunked_body(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(i) = self.buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                    let body = dechunk(&String::from_utf8_lossy(&self.buf[..i + 5]));
                    self.buf.drain(..i + 5);
                    return body;
                }
                self.fill().await;
            }
        })
        .await
        .expect("chunked body within 5s")
    }

    async fn head_end(&mut self) -> usize {
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return i + 4;
            }
            self.fill().await;
        }
    }

    async fn read_response_inner(&mut self) -> RawResponse {
        let head_end = self.head_end().await;
        let head = parse_raw(&self.buf[..head_end]);
        let total = if let Some(len) = head.header("content-length") {
            head_end + len.parse::<usize>().expect("content-length")
        } else if head
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            loop {
                if let Some(i) = self.buf[head_end..]
                    .windows(5)
                    .position(|w| w == b"0\r\n\r\n")
                {
                    break head_end + i + 5;
                }
                self.fill().await;
            }
        } else {
            head_end
        };
        while self.buf.len() < total {
            self.fill().await;
        }
        let response = parse_raw(&self.buf[..total]);
        self.buf.drain(..total);
        response
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed mid-response");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Whether the server closes the connection (EOF or reset) within `within`. Bytes
    /// arriving meanwhile are kept.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut chunk = [0u8; 8192];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// What arrived so far without being read as a response.
    pub fn unread(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// Polls `condition` every 10 ms until it holds; panics after `within`.
pub async fn wait_until(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- Added for throttle.rs, cache.rs and redis.rs: a real redis-server ----

/// A `redis-server` process of the test's own, on a free port, with persistence off.
/// [`stop`](Self::stop) and [`start_again`](Self::start_again) simulate an outage.
pub struct TestRedis {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl TestRedis {
    /// Starts `redis-server` (installed by `.ci/run`) and waits until it answers.
    pub fn start() -> TestRedis {
        let port = dead_addr().port();
        let mut redis = TestRedis {
            port,
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        redis.start_again();
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port (after [`stop`](Self::stop)).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis is already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (apt-get install -y redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.ping() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the server answers `PING` with `+PONG`.
    pub fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Runs one command with `redis-cli` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

impl TestGateway {
    /// The first `n` access log lines on stdout (the default target), parsed; waits up to
    /// 5 s for them (the writer drains its queue every 50 ms).
    pub async fn access_log(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines = self.stdout();
            if lines.len() >= n || Instant::now() > deadline {
                return lines
                    .iter()
                    .take(n)
                    .map(|l| serde_json::from_str(l).expect("access log line is JSON"))
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
