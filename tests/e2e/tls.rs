//! TLS on the public listener (`[server.tls]`): ALPN chooses HTTP/1.1 or HTTP/2, SNI
//! chooses the certificate, `client_ca` turns on mutual TLS, and clients that never
//! finish a handshake (or do not speak TLS at all) are dropped without harm.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{
    IssuedCert, RawConn, TestGateway, TestPki, client, tls_client_config, tls_connect,
};

/// A gateway with plain and TLS listeners and `header_read_timeout = "300ms"`. The default
/// certificate, written to `{dir}/server.crt`, is issued by `pki` for `localhost` and
/// 127.0.0.1; `server_extra` is appended to `[server]`, `tls_extra` to `[server.tls]`.
/// One route: `GET /hello` answers `hello over tls`.
fn gateway_with_tls(
    pki: &TestPki,
    dir: tempfile::TempDir,
    server_extra: &str,
    tls_extra: &str,
) -> TestGateway {
    pki.server_cert(&["localhost", "127.0.0.1"])
        .write(dir.path(), "server");
    TestGateway::start_in(
        dir,
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
header_read_timeout = "300ms"
{server_extra}

[server.tls]
listen = "127.0.0.1:0"
cert = "{{dir}}/server.crt"
key = "{{dir}}/server.key"
{tls_extra}

[[routes]]
path = "/hello"
methods = ["GET"]
mock = {{ status = 200, body = "hello over tls" }}
"#
        ),
    )
}

/// What came back from [`get_over`].
#[derive(Debug)]
struct Answer {
    version: Version,
    status: StatusCode,
    body: String,
}

type BoxError = Box<dyn Error + Send + Sync>;

/// Sends `GET {path}` on an established TLS connection in the protocol ALPN chose
/// (HTTP/2 for `h2`, HTTP/1.1 otherwise), with hyper's client, and reads the answer.
async fn get_over(
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    path: &str,
) -> Result<Answer, BoxError> {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let response = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        let request =
            Request::get(format!("https://localhost{path}")).body(Empty::<Bytes>::new())?;
        sender.send_request(request).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        let request = Request::get(path)
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())?;
        sender.send_request(request).await?
    };
    let (version, status) = (response.version(), response.status());
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer {
        version,
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Whether a client with `config` gets `GET /hello` answered over TLS: `false` when the
/// handshake, or the first exchange after it, is refused.
async fn is_served(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> bool {
    let attempt = async {
        let stream = tls_connect(addr, config, "localhost").await?;
        get_over(stream, "/hello").await
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(answer)) => answer.status == StatusCode::OK && answer.body == "hello over tls",
        Ok(Err(_)) => false,
        Err(_) => panic!("a TLS exchange neither finished nor failed within 5s"),
    }
}

/// The certificate the gateway presented in a handshake for `server_name`.
async fn presented_cert(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    server_name: &str,
) -> Vec<u8> {
    let stream = tls_connect(addr, config.clone(), server_name)
        .await
        .unwrap_or_else(|e| panic!("handshake for {server_name:?} failed: {e}"));
    let chain = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server sent certificates");
    chain[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_chooses_http1_or_http2_and_both_serve_requests() {
    let pki = TestPki::new("weir test ca");
    let gateway = gateway_with_tls(&pki, tempfile::tempdir().expect("tempdir"), "", "");
    let addr = gateway.https.expect("tls listener");

    // A client that only speaks HTTP/1.1 gets HTTP/1.1.
    let http1_only = tls_client_config(&[pki.ca_der()], &[b"http/1.1"], None);
    let stream = tls_connect(addr, http1_only, "localhost")
        .await
        .expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let answer = get_over(stream, "/hello").await.expect("http/1.1 request");
    assert_eq!(
        (answer.version, answer.status, answer.body.as_str()),
        (Version::HTTP_11, StatusCode::OK, "hello over tls")
    );

    // A client that offers h2 gets HTTP/2.
    let h2 = tls_client_config(&[pki.ca_der()], &[b"h2", b"http/1.1"], None);
    let stream = tls_connect(addr, h2, "localhost").await.expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let answer = get_over(stream, "/hello").await.expect("h2 request");
    assert_eq!(
        (answer.version, answer.status, answer.body.as_str()),
        (Version::HTTP_2, StatusCode::OK, "hello over tls")
    );

    // A client that offers no ALPN at all still gets HTTP/1.1.
    let no_alpn = tls_client_config(&[pki.ca_der()], &[], None);
    let stream = tls_connect(addr, no_alpn, "localhost")
        .await
        .expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    let answer = get_over(stream, "/hello")
        .await
        .expect("request without alpn");
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn reqwest_gets_http2_over_tls_with_the_gateway_certificate() {
    let pki = TestPki::new("weir test ca");
    let gateway = gateway_with_tls(&pki, tempfile::tempdir().expect("tempdir"), "", "");
    let addr = gateway.https.expect("tls listener");
    // `localhost` is on the certificate; pin it to the TLS listener's address.
    let https = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(
            reqwest::Certificate::from_der(&pki.ca_der()).expect("ca for reqwest"),
        )
        .resolve("localhost", addr)
        .build()
        .expect("client");

    let response = https
        .get(format!("https://localhost:{}/hello", addr.port()))
        .send()
        .await
        .expect("https request");

    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.text().await.expect("body"), "hello over tls");
}

#[tokio::test]
async fn sni_chooses_the_certificate_by_server_name() {
    let pki = TestPki::new("weir test ca");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_a = pki.server_cert(&["a.test"]);
    let cert_b = pki.server_cert(&["*.b.test"]);
    cert_a.write(dir.path(), "a");
    cert_b.write(dir.path(), "b");
    // The default certificate names everything that should fall through to it.
    let default = pki.server_cert(&["other.test", "b.test", "y.x.b.test", "127.0.0.1"]);
    default.write(dir.path(), "default");
    let gateway = TestGateway::start_in(
        dir,
        r#"
[server]
listen = "127.0.0.1:0"

[server.tls]
listen = "127.0.0.1:0"
cert = "{dir}/default.crt"
key = "{dir}/default.key"

[[server.tls.sni]]
names = ["a.test"]
cert = "{dir}/a.crt"
key = "{dir}/a.key"

[[server.tls.sni]]
names = ["*.b.test"]
cert = "{dir}/b.crt"
key = "{dir}/b.key"

[[routes]]
path = "/hello"
mock = { status = 200, body = "hello over tls" }
"#,
    );
    let addr = gateway.https.expect("tls listener");
    let config = tls_client_config(&[pki.ca_der()], &[b"http/1.1"], None);
    let expect = |name: &str, cert: &IssuedCert| (name.to_owned(), cert.cert_der.clone());

    let mut seen = Vec::new();
    for (name, wanted) in [
        expect("a.test", &cert_a),
        expect("A.Test", &cert_a),
        expect("x.b.test", &cert_b),
        // A wildcard covers exactly one label: neither the parent nor a grandchild.
        expect("b.test", &default),
        expect("y.x.b.test", &default),
        expect("other.test", &default),
        // An IP-address server name makes rustls send no SNI at all.
        expect("127.0.0.1", &default),
    ] {
        let got = presented_cert(addr, &config, &name).await;
        seen.push((name.clone(), got == wanted));
    }
    let wrong: Vec<_> = seen.iter().filter(|(_, ok)| !ok).collect();
    assert!(wrong.is_empty(), "wrong certificate for {wrong:?}");

    // And the connection chosen by SNI serves requests like any other.
    let stream = tls_connect(addr, config, "x.b.test")
        .await
        .expect("handshake");
    let answer = get_over(stream, "/hello").await.expect("request");
    assert_eq!(answer.status, StatusCode::OK);
}

/// A gateway requiring (or, with `optional`, allowing) client certificates from `clients`.
fn gateway_with_client_ca(
    pki: &TestPki,
    clients: &TestPki,
    client_auth: Option<&str>,
) -> TestGateway {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("clients.crt"), clients.ca_pem()).expect("write client ca");
    let auth = client_auth
        .map(|mode| format!("client_auth = \"{mode}\""))
        .unwrap_or_default();
    gateway_with_tls(
        pki,
        dir,
        "",
        &format!("client_ca = \"{{dir}}/clients.crt\"\n{auth}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_serves_only_clients_with_a_certificate_from_client_ca() {
    let pki = TestPki::new("weir test ca");
    let clients = TestPki::new("weir client ca");
    let strangers = TestPki::new("someone else's ca");
    let gateway = gateway_with_client_ca(&pki, &clients, None);
    let addr = gateway.https.expect("tls listener");
    let roots = [pki.ca_der()];

    let trusted = clients.client_cert("partner-a");
    let with_trusted_cert = tls_client_config(&roots, &[b"http/1.1"], Some(&trusted));
    assert!(
        is_served(addr, with_trusted_cert).await,
        "a client certificate from client_ca is served"
    );

    let without_cert = tls_client_config(&roots, &[b"http/1.1"], None);
    assert!(
        !is_served(addr, without_cert).await,
        "a client without certificate is refused"
    );

    let foreign = strangers.client_cert("partner-a");
    let with_foreign_cert = tls_client_config(&roots, &[b"h2"], Some(&foreign));
    assert!(
        !is_served(addr, with_foreign_cert).await,
        "a client certificate from another CA is refused"
    );

    // The refusals hurt nobody: trusted clients are still served, over HTTP/2 too.
    let trusted_h2 = tls_client_config(&roots, &[b"h2"], Some(&trusted));
    assert!(is_served(addr, trusted_h2).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_auth_serves_clients_without_certificate_but_checks_presented_ones() {
    let pki = TestPki::new("weir test ca");
    let clients = TestPki::new("weir client ca");
    let strangers = TestPki::new("someone else's ca");
    let gateway = gateway_with_client_ca(&pki, &clients, Some("optional"));
    let addr = gateway.https.expect("tls listener");
    let roots = [pki.ca_der()];

    let without_cert = tls_client_config(&roots, &[b"http/1.1"], None);
    assert!(
        is_served(addr, without_cert).await,
        "optional: a client without certificate is served"
    );

    let trusted = clients.client_cert("partner-a");
    let with_trusted_cert = tls_client_config(&roots, &[b"http/1.1"], Some(&trusted));
    assert!(is_served(addr, with_trusted_cert).await);

    let foreign = strangers.client_cert("partner-a");
    let with_foreign_cert = tls_client_config(&roots, &[b"http/1.1"], Some(&foreign));
    assert!(
        !is_served(addr, with_foreign_cert).await,
        "optional still refuses a certificate that does not chain to client_ca"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_is_dropped_and_the_gateway_keeps_serving() {
    let pki = TestPki::new("weir test ca");
    let gateway = gateway_with_tls(&pki, tempfile::tempdir().expect("tempdir"), "", "");
    let addr = gateway.https.expect("tls listener");

    let mut confused = TcpStream::connect(addr).await.expect("connect");
    confused
        .write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), confused.read_to_end(&mut reply)).await;
    assert!(read.is_ok(), "the connection is closed, not left hanging");
    assert!(
        !String::from_utf8_lossy(&reply).contains("hello over tls"),
        "plain HTTP on the TLS port is never routed"
    );

    // TLS clients and the plain listener are served as before.
    let config = tls_client_config(&[pki.ca_der()], &[b"h2"], None);
    assert!(is_served(addr, config).await);
    let response = client()
        .get(gateway.url("/hello"))
        .send()
        .await
        .expect("plain request");
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshake_is_cut_after_header_read_timeout() {
    let pki = TestPki::new("weir test ca");
    // header_read_timeout = "300ms" bounds the handshake too.
    let gateway = gateway_with_tls(&pki, tempfile::tempdir().expect("tempdir"), "", "");
    let addr = gateway.https.expect("tls listener");

    // One client says nothing at all; another starts a ClientHello and stops.
    let mut silent = RawConn::connect(addr).await;
    let mut half_hello = RawConn::connect(addr).await;
    half_hello.send("\u{16}\u{3}\u{1}\u{2}\u{0}\u{1}").await;

    assert!(silent.closed_within(Duration::from_secs(3)).await);
    assert!(half_hello.closed_within(Duration::from_secs(3)).await);
    let config = tls_client_config(&[pki.ca_der()], &[b"http/1.1"], None);
    assert!(is_served(addr, config).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_limits_apply_over_http2_too() {
    let pki = TestPki::new("weir test ca");
    let gateway = gateway_with_tls(
        &pki,
        tempfile::tempdir().expect("tempdir"),
        "max_headers = 10",
        "",
    );
    let addr = gateway.https.expect("tls listener");
    let config = tls_client_config(&[pki.ca_der()], &[b"h2"], None);

    for (count, expected) in [
        (10, StatusCode::OK),
        (11, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
    ] {
        let stream = tls_connect(addr, config.clone(), "localhost")
            .await
            .expect("handshake");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let mut request = Request::get("https://localhost/hello");
        for i in 0..count {
            request = request.header(format!("x-filler-{i}"), "v");
        }
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new()).expect("request"))
            .await
            .expect("h2 response");
        assert_eq!(response.status(), expected, "{count} header fields");
        let id = response.headers()["x-request-id"].clone();
        if expected != StatusCode::OK {
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(body["request_id"], id.to_str().expect("ascii id"));
            assert!(body["message"].is_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_see_the_client_certificate_of_a_mutual_tls_connection() {
    let pki = TestPki::new("weir test ca");
    let clients = TestPki::new("weir client ca");
    let upstream = crate::harness::TestUpstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("clients.crt"), clients.ca_pem()).expect("write client ca");
    let probe = &crate::guests::guests().probe_filter;
    let gateway = gateway_with_tls(
        &pki,
        dir,
        "",
        &format!(
            r#"client_ca = "{{dir}}/clients.crt"
client_auth = "optional"

[plugins.probe]
path = "{}"

[upstreams.backend]
targets = ["{}"]

[[routes]]
path = "/who"
upstream = "backend"
filters = [{{ plugin = "probe" }}]
"#,
            probe.display(),
            upstream.url()
        ),
    );
    let addr = gateway.https.expect("tls listener");
    let roots = [pki.ca_der()];

    let trusted = clients.client_cert("partner-a");
    let config = tls_client_config(&roots, &[b"h2"], Some(&trusted));
    let stream = tls_connect(addr, config, "localhost")
        .await
        .expect("handshake");
    let answer = get_over(stream, "/who").await.expect("request");
    assert_eq!(answer.status, StatusCode::OK);
    let echo: serde_json::Value = serde_json::from_str(&answer.body).expect("json");
    assert_eq!(echo["headers"]["x-tls-client"], "CN=partner-a;");
    let fingerprint: String = ring::digest::digest(&ring::digest::SHA256, &trusted.cert_der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(echo["headers"]["x-tls-fingerprint"], fingerprint.as_str());

    // Without a certificate, the plugin is told there is none.
    let config = tls_client_config(&roots, &[b"http/1.1"], None);
    let stream = tls_connect(addr, config, "localhost")
        .await
        .expect("handshake");
    let answer = get_over(stream, "/who").await.expect("request");
    let echo: serde_json::Value = serde_json::from_str(&answer.body).expect("json");
    assert!(echo["headers"].get("x-tls-client").is_none());
}
