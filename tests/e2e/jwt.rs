//! The built-in JWT authorizer through the real gateway: tokens minted here with RSA, EC
//! and Ed25519 keys generated here, good and bad; key sets from a file and from an HTTPS
//! server (with a private CA) that rotates its keys mid-test; a flood of unknown `kid`s.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use serde_json::{Value, json};

use crate::harness::{TestGateway, TestPki, TestUpstream, client, wait_until};
use crate::tokens::{self, AUDIENCE, ISSUER, Signer, good_claims, hs256, now};

/// A gateway with an echo backend behind `/api/{path+}`, guarded by authorizer `main`
/// (`{authorizer}` is its table body), and `/scoped` needing scope `admin`.
fn gateway(dir: tempfile::TempDir, upstream: &TestUpstream, authorizer: &str) -> TestGateway {
    TestGateway::start_in(
        dir,
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"

[upstreams.echo]
targets = ["{upstream}"]

[authorizers.main]
type = "jwt"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
forward_claims = {{ sub = "x-user-id" }}
{authorizer}

[[routes]]
path = "/api/{{path+}}"
authorizer = "main"
upstream = "echo"

[[routes]]
path = "/scoped"
authorizer = "main"
scopes = ["admin", "users:write"]
upstream = "echo"
"#,
            upstream = upstream.url()
        ),
    )
}

/// A gateway whose `main` authorizer reads the JWKS file holding `signers`.
fn file_gateway(upstream: &TestUpstream, signers: &[&Signer], extra: &str) -> TestGateway {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("jwks.json"), tokens::jwks(signers)).expect("jwks");
    gateway(dir, upstream, &format!("jwks = \"jwks.json\"\n{extra}"))
}

async fn get(gateway: &TestGateway, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = client().get(gateway.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

async fn status(gateway: &TestGateway, token: &str) -> u16 {
    get(gateway, "/api/x", Some(token)).await.status().as_u16()
}

#[tokio::test]
async fn valid_tokens_from_rsa_ec_and_ed25519_keys_pass_and_forward_claims() {
    let upstream = TestUpstream::echo().await;
    let (rsa, ec, ed) = (Signer::rsa("r1"), Signer::ec("e1"), Signer::ed("d1"));
    let gateway = file_gateway(&upstream, &[&rsa, &ec, &ed], "");
    for signer in [&rsa, &ec, &ed] {
        let token = signer.token(&good_claims(signer.alg()));
        let response = client()
            .get(gateway.url("/api/who"))
            .bearer_auth(&token)
            // A client cannot forge the header the gateway sets from the token.
            .header("x-user-id", "forged")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "{}", signer.alg());
        let echo: Value = response.json().await.expect("json");
        assert_eq!(echo["headers"]["x-user-id"], signer.alg());
    }
    // A route's authorizer strips the header even when the token fails.
    let response = client()
        .get(gateway.url("/api/who"))
        .header("x-user-id", "forged")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    assert_eq!(upstream.count(), 3);
}

#[tokio::test]
async fn every_bad_token_is_401_with_www_authenticate_and_never_reaches_the_backend() {
    let upstream = TestUpstream::echo().await;
    let rsa = Signer::rsa("r1");
    let other = Signer::ec("e1");
    let gateway = file_gateway(&upstream, &[&rsa], "");
    let claims = |change: &dyn Fn(&mut Value)| {
        let mut claims = good_claims("alice");
        change(&mut claims);
        claims
    };
    let good = rsa.token(&good_claims("alice"));
    let tampered = {
        let parts: Vec<&str> = good.split('.').collect();
        let payload = tokens::encode_json(&claims(&|c| c["sub"] = json!("admin")));
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    let unsigned = format!(
        "{}.{}.",
        tokens::encode_json(&json!({"alg": "none", "typ": "JWT"})),
        tokens::encode_json(&good_claims("alice"))
    );
    // The classic confusion: HS256 "signed" with the RSA public key as the secret.
    let confused = hs256(
        &json!({"alg": "HS256", "kid": "r1", "typ": "JWT"}),
        &good_claims("alice"),
        &rsa.rsa_public_der(),
    );
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            rsa.token(&claims(&|c| c["exp"] = json!(now() - 3600))),
        ),
        (
            "not yet valid",
            rsa.token(&claims(&|c| c["nbf"] = json!(now() + 3600))),
        ),
        (
            "wrong iss",
            rsa.token(&claims(&|c| c["iss"] = json!("https://evil.test"))),
        ),
        (
            "wrong aud",
            rsa.token(&claims(&|c| c["aud"] = json!("someone-else"))),
        ),
        (
            "missing iss",
            rsa.token(&claims(&|c| {
                c.as_object_mut().expect("obj").remove("iss");
            })),
        ),
        (
            "missing aud",
            rsa.token(&claims(&|c| {
                c.as_object_mut().expect("obj").remove("aud");
            })),
        ),
        (
            "missing exp",
            rsa.token(&claims(&|c| {
                c.as_object_mut().expect("obj").remove("exp");
            })),
        ),
        (
            "exp as a string",
            rsa.token(&claims(&|c| c["exp"] = json!((now() + 600).to_string()))),
        ),
        ("alg none", unsigned),
        ("hs256 with the rsa public key", confused),
        ("unknown kid", other.token(&good_claims("alice"))),
        (
            "right kid, wrong key",
            other.token_with_header(&json!({"alg": "ES256", "kid": "r1"}), &good_claims("alice")),
        ),
        ("tampered payload", tampered),
        (
            "oversized",
            rsa.token(&claims(&|c| c["pad"] = json!("x".repeat(9000)))),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, token) in &cases {
        let response = get(&gateway, "/api/x", Some(token)).await;
        assert_eq!(response.status(), 401, "{what}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .expect("header");
        assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["message"], "authentication required", "{what}");
    }
    let missing = get(&gateway, "/api/x", None).await;
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_eq!(upstream.count(), 0, "no bad token reached the backend");
    // The good one does.
    assert_eq!(status(&gateway, &good).await, 200);
}

#[tokio::test]
async fn leeway_lets_a_just_expired_token_through() {
    let upstream = TestUpstream::echo().await;
    let ed = Signer::ed("d1");
    let gateway = file_gateway(&upstream, &[&ed], "leeway = \"2m\"");
    let mut claims = good_claims("alice");
    claims["exp"] = json!(now() - 60);
    assert_eq!(status(&gateway, &ed.token(&claims)).await, 200);
    claims["exp"] = json!(now() - 600);
    assert_eq!(status(&gateway, &ed.token(&claims)).await, 401);
}

#[tokio::test]
async fn missing_scope_is_403() {
    let upstream = TestUpstream::echo().await;
    let ed = Signer::ed("d1");
    let gateway = file_gateway(&upstream, &[&ed], "");
    let mut claims = good_claims("alice");
    let response = get(&gateway, "/scoped", Some(&ed.token(&claims))).await;
    assert_eq!(response.status(), 403);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .expect("header")
            .contains("insufficient_scope")
    );
    claims["scope"] = json!("profile users:write");
    assert_eq!(
        get(&gateway, "/scoped", Some(&ed.token(&claims)))
            .await
            .status(),
        200
    );
    claims.as_object_mut().expect("obj").remove("scope");
    claims["scp"] = json!(["admin"]);
    assert_eq!(
        get(&gateway, "/scoped", Some(&ed.token(&claims)))
            .await
            .status(),
        200
    );
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn algorithms_outside_the_allow_list_are_refused() {
    let upstream = TestUpstream::echo().await;
    let (rsa, ed) = (Signer::rsa("r1"), Signer::ed("d1"));
    let gateway = file_gateway(&upstream, &[&rsa, &ed], "algorithms = [\"EdDSA\"]");
    assert_eq!(status(&gateway, &ed.token(&good_claims("a"))).await, 200);
    assert_eq!(status(&gateway, &rsa.token(&good_claims("a"))).await, 401);
}

#[tokio::test]
async fn hs256_with_a_secret_from_the_environment() {
    let upstream = TestUpstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = "an-hs256-secret-of-at-least-32-bytes!!";
    let toml_secret = "secret = \"${env:WEIR_E2E_JWT_SECRET}\"\nalgorithms = [\"HS256\"]";
    // The secret reaches weir through its environment only.
    let gateway = TestGateway::start_in_env(
        dir,
        &gateway_toml(&upstream, toml_secret),
        &[("WEIR_E2E_JWT_SECRET", secret)],
    );
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let token = hs256(&header, &good_claims("alice"), secret.as_bytes());
    assert_eq!(status(&gateway, &token).await, 200);
    let forged = hs256(
        &header,
        &good_claims("alice"),
        b"a-different-secret-of-32-bytes!!!!",
    );
    assert_eq!(status(&gateway, &forged).await, 401);
}

fn gateway_toml(upstream: &TestUpstream, authorizer: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[upstreams.echo]
targets = ["{upstream}"]

[authorizers.main]
type = "jwt"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
{authorizer}

[[routes]]
path = "/api/{{path+}}"
authorizer = "main"
upstream = "echo"
"#,
        upstream = upstream.url()
    )
}

#[tokio::test]
async fn token_from_a_cookie_or_the_query() {
    let upstream = TestUpstream::echo().await;
    let ed = Signer::ed("d1");
    let token = ed.token(&good_claims("alice"));
    let cookie = file_gateway(&upstream, &[&ed], "token = \"cookie:session\"");
    let response = client()
        .get(cookie.url("/api/x"))
        .header("cookie", format!("theme=dark; session={token}"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        status(&cookie, &token).await,
        401,
        "the header is not the source"
    );
    let query = file_gateway(&upstream, &[&ed], "token = \"query:access_token\"");
    let response = client()
        .get(query.url(&format!("/api/x?access_token={token}")))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
}

/// A JWKS server over HTTPS (certificate from a test CA), serving whatever `keys` holds
/// and counting fetches.
struct JwksServer {
    server: TestUpstream,
    keys: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    ca_pem: String,
}

impl JwksServer {
    async fn start(initial: String) -> JwksServer {
        let pki = TestPki::new("jwks-ca");
        let cert = pki.server_cert(&["127.0.0.1"]);
        let keys = Arc::new(Mutex::new(initial));
        let fetches = Arc::new(AtomicUsize::new(0));
        let server = {
            let keys = keys.clone();
            let fetches = fetches.clone();
            TestUpstream::start_tls(cert.rustls_server_config(&[b"http/1.1"]), move |_, _| {
                let body = keys.lock().expect("keys").clone();
                fetches.fetch_add(1, Ordering::SeqCst);
                async move {
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    response.headers_mut().insert(
                        "content-type",
                        http::HeaderValue::from_static("application/json"),
                    );
                    response
                }
            })
            .await
        };
        JwksServer {
            server,
            keys,
            fetches,
            ca_pem: pki.ca_pem(),
        }
    }

    fn serve(&self, jwks: String) {
        *self.keys.lock().expect("keys") = jwks;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// A gateway whose `main` authorizer fetches from this server.
    fn gateway(&self, upstream: &TestUpstream, settings: &str) -> TestGateway {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.crt"), &self.ca_pem).expect("ca");
        gateway(
            dir,
            upstream,
            &format!(
                "jwks = \"https://{}/.well-known/jwks.json\"\nca = \"ca.crt\"\n{settings}",
                self.server.addr
            ),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_over_https_is_fetched_at_start_and_follows_a_rotation() {
    let upstream = TestUpstream::echo().await;
    let (old, new) = (Signer::rsa("old"), Signer::ec("new"));
    let jwks = JwksServer::start(tokens::jwks(&[&old])).await;
    let gateway = jwks.gateway(&upstream, "jwks_cooldown = \"1s\"");
    assert_eq!(jwks.fetches(), 1, "fetched once at start");
    assert_eq!(status(&gateway, &old.token(&good_claims("a"))).await, 200);
    assert_eq!(jwks.fetches(), 1, "a known kid needs no fetch");

    // The issuer rotates: only the new key is published now.
    jwks.serve(tokens::jwks(&[&new]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status(&gateway, &new.token(&good_claims("a"))).await, 200);
    assert_eq!(jwks.fetches(), 2, "the unknown kid caused one fetch");
    assert_eq!(
        status(&gateway, &old.token(&good_claims("a"))).await,
        401,
        "the old key is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_is_refreshed_periodically() {
    let upstream = TestUpstream::echo().await;
    let (old, new) = (Signer::ed("old"), Signer::ed("new"));
    let jwks = JwksServer::start(tokens::jwks(&[&old])).await;
    let gateway = jwks.gateway(&upstream, "jwks_refresh = \"1s\"\njwks_cooldown = \"1m\"");
    jwks.serve(tokens::jwks(&[&new]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The set is stale: this request is served from it and starts a background refresh.
    assert_eq!(status(&gateway, &old.token(&good_claims("a"))).await, 200);
    wait_until(Duration::from_secs(10), "background refresh", || {
        jwks.fetches() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // No unknown-kid fetch was allowed (cooldown 1m), yet the new key works: the refresh did it.
    assert_eq!(status(&gateway, &new.token(&good_claims("a"))).await, 200);
    assert_eq!(status(&gateway, &old.token(&good_claims("a"))).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_causes_at_most_one_fetch_per_cooldown() {
    let upstream = TestUpstream::echo().await;
    let signer = Signer::ed("real");
    let jwks = JwksServer::start(tokens::jwks(&[&signer])).await;
    let gateway = jwks.gateway(&upstream, "jwks_cooldown = \"2s\"");
    assert_eq!(jwks.fetches(), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let attacker = Signer::ed("unused");
    let mut tasks = Vec::new();
    for i in 0..60 {
        let header = json!({"alg": "EdDSA", "kid": format!("random-{i}")});
        let token = attacker.token_with_header(&header, &good_claims("a"));
        let url = gateway.url("/api/x");
        tasks.push(tokio::spawn(async move {
            client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), 401);
    }
    assert_eq!(jwks.fetches(), 2, "60 unknown kids, one fetch");
    assert_eq!(
        status(&gateway, &signer.token(&good_claims("a"))).await,
        200
    );
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_jwks_fails_closed() {
    let upstream = TestUpstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new("ca");
    std::fs::write(dir.path().join("ca.crt"), pki.ca_pem()).expect("ca");
    let dead = crate::harness::dead_addr();
    let gateway = gateway(
        dir,
        &upstream,
        &format!("jwks = \"https://{dead}/jwks.json\"\nca = \"ca.crt\"\njwks_cooldown = \"1m\""),
    );
    let signer = Signer::ed("k");
    let response = get(&gateway, "/api/x", Some(&signer.token(&good_claims("a")))).await;
    assert_eq!(response.status(), 503);
    assert_eq!(get(&gateway, "/api/x", None).await.status(), 401);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn the_access_log_names_the_principal() {
    let upstream = TestUpstream::echo().await;
    let rsa = Signer::rsa("r1");
    let gateway = file_gateway(&upstream, &[&rsa], "");
    let token = rsa.token(&good_claims("alice"));
    assert_eq!(get(&gateway, "/api/who", Some(&token)).await.status(), 200);
    let line = &gateway.access_log(1).await[0];
    assert_eq!(line["principal"], "alice");
}
