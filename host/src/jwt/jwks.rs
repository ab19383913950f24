//! JSON Web Key Sets: parsing one into verification keys, fetching one over `https`, and
//! the [`KeyStore`] that keeps the current set of an authorizer.
//!
//! A `kid` from a token is only ever a lookup key into the in-memory set: it never names a
//! file or a URL. A set from a URL is fetched at start ([`KeyStore::load`]), refreshed in the
//! background once it is older than `jwks_refresh` (the first request after that starts
//! the fetch; requests go on with the old set meanwhile), and refetched when a token names
//! a `kid` the set does not have — at most once per `jwks_cooldown`, however many such
//! tokens arrive, so a flood of random `kid`s cannot hammer the issuer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{ACCEPT, HOST, USER_AGENT};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The largest JWKS document accepted, from a file or a URL.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// The most keys kept from one JWKS (the rest are ignored, with a warning).
pub const MAX_JWKS_KEYS: usize = 100;
/// How long one JWKS fetch may take, connect to last byte.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// `User-Agent` of JWKS fetches.
const JWKS_USER_AGENT: &str = concat!("weir/", env!("CARGO_PKG_VERSION"));

/// The public key types a JWK may hold, which decide the algorithms it can check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    P256,
    P384,
    Ed25519,
    /// A shared secret (only from `secret = "${env:…}"`, never from a JWKS).
    Hmac,
}

impl KeyType {
    /// Whether a token signed with `alg` can be checked with a key of this type.
    pub fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyType::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyType::P256 => alg == ES256,
            KeyType::P384 => alg == ES384,
            KeyType::Ed25519 => alg == EdDSA,
            KeyType::Hmac => matches!(alg, HS256 | HS384 | HS512),
        }
    }
}

/// One verification key.
pub struct Key {
    pub kid: Option<String>,
    pub key_type: KeyType,
    /// The JWK's `alg`, when it names one: then only that algorithm may use the key.
    pub alg: Option<Algorithm>,
    pub decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("key_type", &self.key_type)
            .field("alg", &self.alg)
            .finish()
    }
}

impl Key {
    /// Whether this key may check a token signed with `alg`.
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.key_type.fits(alg) && self.alg.is_none_or(|own| own == alg)
    }
}

/// A set of verification keys, indexed by `kid`.
#[derive(Debug, Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    /// Every key, in document order.
    all: Vec<Arc<Key>>,
}

impl KeySet {
    /// A set of one key.
    pub fn single(key: Key) -> KeySet {
        let mut set = KeySet::default();
        set.push(key);
        set
    }

    fn push(&mut self, key: Key) {
        let key = Arc::new(key);
        if let Some(kid) = &key.kid {
            self.by_kid
                .entry(kid.clone())
                .or_insert_with(|| key.clone());
        }
        self.all.push(key);
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The key for a token's `kid` and `alg`. A token without `kid` is checked only when
    /// exactly one key of the set fits its `alg` (never by trying several keys).
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                Some(key) if key.allows(alg) => Lookup::Found(key.clone()),
                Some(_) => Lookup::WrongType,
                None => Lookup::Unknown,
            },
            None => {
                let mut fitting = self.all.iter().filter(|key| key.allows(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Lookup::Found(key.clone()),
                    (Some(_), Some(_)) => Lookup::Ambiguous,
                    (None, _) => Lookup::Unknown,
                }
            }
        }
    }
}

/// What [`KeySet::find`] found.
#[derive(Debug)]
pub enum Lookup {
    Found(Arc<Key>),
    /// No key has that `kid` (or, without `kid`, none fits the algorithm).
    Unknown,
    /// The key with that `kid` is of a type (or pinned `alg`) that does not fit the token's.
    WrongType,
    /// No `kid`, and more than one key fits.
    Ambiguous,
}

/// Parses a JWKS document. Keys that are not for signatures (`use` other than `sig`), of
/// an unknown type, or symmetric (`oct`: a shared secret has no place in a key set that
/// may be served publicly) are skipped and named in the returned warnings; a key that
/// claims to be usable but is malformed is an error.
pub fn parse(text: &[u8]) -> Result<(KeySet, Vec<String>), String> {
    if text.len() > MAX_JWKS_BYTES {
        return Err(format!(
            "key set larger than {MAX_JWKS_BYTES} bytes ({} bytes)",
            text.len()
        ));
    }
    let document: Value =
        serde_json::from_slice(text).map_err(|e| format!("not a JSON key set: {e}"))?;
    let keys = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JSON key set: expected an object with a \"keys\" array")?;
    let mut set = KeySet::default();
    let mut warnings = Vec::new();
    for (i, jwk) in keys.iter().enumerate() {
        if set.len() == MAX_JWKS_KEYS {
            warnings.push(format!(
                "only the first {MAX_JWKS_KEYS} keys are used, {} ignored",
                keys.len() - i
            ));
            break;
        }
        match parse_key(jwk) {
            Ok(Some(key)) => set.push(key),
            Ok(None) => warnings.push(format!(
                "keys[{i}]: not a signature key weir can use, ignored"
            )),
            Err(message) => return Err(format!("keys[{i}]: {message}")),
        }
    }
    if set.is_empty() {
        return Err("the key set has no usable signature key".to_owned());
    }
    Ok((set, warnings))
}

fn parse_key(jwk: &Value) -> Result<Option<Key>, String> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let required =
        |name: &str| text(name).ok_or_else(|| format!("missing or non-string \"{name}\""));
    if text("use").is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let alg = match text("alg") {
        None => None,
        Some(name) => match name.parse::<Algorithm>() {
            Ok(alg) => Some(alg),
            // An algorithm this gateway does not know (e.g. RSA-OAEP): not for us.
            Err(_) => return Ok(None),
        },
    };
    let bad = |e: jsonwebtoken::errors::Error| format!("invalid key material: {e}");
    let (key_type, decoding) = match text("kty") {
        Some("RSA") => {
            let key =
                DecodingKey::from_rsa_components(required("n")?, required("e")?).map_err(bad)?;
            (KeyType::Rsa, key)
        }
        Some("EC") => {
            let (key_type, len) = match required("crv")? {
                "P-256" => (KeyType::P256, 32),
                "P-384" => (KeyType::P384, 48),
                _ => return Ok(None),
            };
            let (x, y) = (required("x")?, required("y")?);
            if b64_len(x) != Some(len) || b64_len(y) != Some(len) {
                return Err(format!("\"x\" and \"y\" must be {len} bytes each"));
            }
            (
                key_type,
                DecodingKey::from_ec_components(x, y).map_err(bad)?,
            )
        }
        Some("OKP") => {
            if required("crv")? != "Ed25519" {
                return Ok(None);
            }
            let x = required("x")?;
            if b64_len(x) != Some(32) {
                return Err("\"x\" must be 32 bytes".to_owned());
            }
            (
                KeyType::Ed25519,
                DecodingKey::from_ed_components(x).map_err(bad)?,
            )
        }
        _ => return Ok(None),
    };
    if alg.is_some_and(|alg| !key_type.fits(alg)) {
        return Err(format!("\"alg\" does not fit a key of type {key_type:?}"));
    }
    Ok(Some(Key {
        kid: text("kid").map(str::to_owned),
        key_type,
        alg,
        decoding,
    }))
}

/// The decoded length of unpadded base64url text (`None` if it cannot be such text).
fn b64_len(text: &str) -> Option<usize> {
    let text = text.trim_end_matches('=');
    match text.len() % 4 {
        1 => None,
        rem => Some(text.len() / 4 * 3 + rem.saturating_sub(1)),
    }
}

/// An `https` JWKS URL, checked at validation.
#[derive(Debug, Clone)]
pub struct JwksUrl {
    pub url: String,
    pub host: String,
    pub port: u16,
    /// `host[:port]` for the `Host` header.
    pub authority: String,
    pub path_and_query: String,
}

impl JwksUrl {
    /// Parses an `https://host[:port]/path` URL.
    pub fn parse(url: &str) -> Result<JwksUrl, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("invalid URL {url:?}, expected an https:// URL"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("invalid URL {url:?}, expected a host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("invalid URL {url:?}, user info is not allowed"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        Ok(JwksUrl {
            url: url.to_owned(),
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(443),
            authority: authority.as_str().to_owned(),
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }
}

/// Why a JWKS could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad server name for tls: {0}")]
    ServerName(String),
    #[error("answered {0}")]
    Status(StatusCode),
    #[error("body: {0}")]
    Body(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Parse(String),
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Fetches and parses the key set at `url`.
pub async fn fetch(url: &JwksUrl, tls: &TlsConnector) -> Result<KeySet, FetchError> {
    match tokio::time::timeout(JWKS_FETCH_TIMEOUT, fetch_inner(url, tls)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout(JWKS_FETCH_TIMEOUT)),
    }
}

async fn fetch_inner(url: &JwksUrl, tls: &TlsConnector) -> Result<KeySet, FetchError> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port)).await?;
    let name = ServerName::try_from(url.host.clone())
        .map_err(|e| FetchError::ServerName(e.to_string()))?;
    let stream = tls.connect(name, tcp).await?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = Request::get(url.path_and_query.as_str())
        .header(HOST, url.authority.as_str())
        .header(ACCEPT, HeaderValue::from_static("application/json"))
        .header(USER_AGENT, HeaderValue::from_static(JWKS_USER_AGENT))
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Body(e.to_string()))?;
    let response = sender.send_request(request).await?;
    if response.status() != StatusCode::OK {
        connection.abort();
        return Err(FetchError::Status(response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| FetchError::Body(e.to_string()))?
        .to_bytes();
    connection.abort();
    let (set, warnings) = parse(&body).map_err(FetchError::Parse)?;
    for warning in warnings {
        tracing::warn!(jwks = %url.url, "{warning}");
    }
    Ok(set)
}

/// Milliseconds since the first call: a cheap monotonic clock for refresh deadlines.
fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Where a [`KeyStore`]'s keys come from.
enum Source {
    /// Read at validation (a JWKS file) or given (a secret): never changes.
    Fixed,
    Remote {
        url: JwksUrl,
        tls: TlsConnector,
        refresh: Duration,
        cooldown: Duration,
    },
}

/// What a key lookup gave.
#[derive(Debug)]
pub enum KeyError {
    /// No key for the token (unknown `kid`, wrong key type, ambiguous).
    NoKey,
    /// The remote key set was never loaded.
    Unavailable,
}

/// The current key set of one authorizer, refreshed as the module docs say.
pub struct KeyStore {
    name: String,
    source: Source,
    current: ArcSwap<KeySet>,
    /// Whether a set was ever loaded (always, for fixed sources).
    loaded: AtomicBool,
    /// When the current set was loaded (ms, [`now_ms`]).
    loaded_at_ms: AtomicU64,
    /// When the last fetch started, successful or not (ms + 1; 0 = never).
    attempted_at_ms: AtomicU64,
    /// A background refresh is running.
    refreshing: AtomicBool,
    /// Bumped each time a fetched set is installed: verified tokens remembered under an
    /// older generation are checked again (their key may be gone).
    generation: AtomicU64,
    /// Serialises fetches: requests waiting on a `kid` share one fetch.
    fetch_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("name", &self.name)
            .field("keys", &self.current.load().len())
            .finish()
    }
}

impl KeyStore {
    /// A store whose keys never change.
    pub fn fixed(name: &str, keys: Arc<KeySet>) -> KeyStore {
        KeyStore {
            name: name.to_owned(),
            source: Source::Fixed,
            current: ArcSwap::new(keys),
            loaded: AtomicBool::new(true),
            loaded_at_ms: AtomicU64::new(now_ms()),
            attempted_at_ms: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            fetch_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The generation of the current key set (see the field docs).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A store fed from `url`, trusting `ca` (or the web roots). Empty until [`Self::load`]
    /// or the first request.
    pub fn remote(
        name: &str,
        url: JwksUrl,
        ca: Option<&[CertificateDer<'static>]>,
        refresh: Duration,
        cooldown: Duration,
    ) -> Result<KeyStore, crate::tls::TlsError> {
        let tls = TlsConnector::from(crate::tls::client_config(ca, false)?);
        Ok(KeyStore {
            name: name.to_owned(),
            source: Source::Remote {
                url,
                tls,
                refresh,
                cooldown,
            },
            current: ArcSwap::new(Arc::new(KeySet::default())),
            loaded: AtomicBool::new(false),
            loaded_at_ms: AtomicU64::new(0),
            attempted_at_ms: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            fetch_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The first fetch, at start. A failure is logged and left to later requests (which
    /// fail closed until a fetch succeeds).
    pub async fn load(&self) {
        if matches!(self.source, Source::Remote { .. }) {
            let _guard = self.fetch_lock.lock().await;
            self.fetch_now().await;
        }
    }

    /// The key for a token's `kid` and `alg`, refetching the set (at most once per
    /// cooldown) when the `kid` is unknown.
    pub async fn key(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<Key>, KeyError> {
        let lookup = self.current.load().find(kid, alg);
        let Source::Remote {
            cooldown, refresh, ..
        } = &self.source
        else {
            return match lookup {
                Lookup::Found(key) => Ok(key),
                _ => Err(KeyError::NoKey),
            };
        };
        match lookup {
            Lookup::Found(key) => {
                self.refresh_if_stale(*refresh);
                return Ok(key);
            }
            Lookup::Unknown => {}
            Lookup::WrongType | Lookup::Ambiguous => return Err(KeyError::NoKey),
        }
        if !self.cooled_down(*cooldown) {
            return Err(self.missing());
        }
        let _guard = self.fetch_lock.lock().await;
        // Someone else may have fetched while this request waited.
        if let Lookup::Found(key) = self.current.load().find(kid, alg) {
            return Ok(key);
        }
        if !self.cooled_down(*cooldown) {
            return Err(self.missing());
        }
        tracing::info!(authorizer = %self.name, "token names an unknown key, refetching the key set");
        self.fetch_now().await;
        match self.current.load().find(kid, alg) {
            Lookup::Found(key) => Ok(key),
            _ => Err(self.missing()),
        }
    }

    /// Starts a background refresh if the remote set is stale (for requests that needed
    /// no key lookup: their token was verified before).
    pub fn touch(self: &Arc<Self>) {
        if let Source::Remote { refresh, .. } = &self.source {
            self.refresh_if_stale(*refresh);
        }
    }

    fn missing(&self) -> KeyError {
        if self.loaded.load(Ordering::Acquire) {
            KeyError::NoKey
        } else {
            KeyError::Unavailable
        }
    }

    fn cooled_down(&self, cooldown: Duration) -> bool {
        let attempted = self.attempted_at_ms.load(Ordering::Acquire);
        attempted == 0 || now_ms() + 1 >= attempted + cooldown.as_millis() as u64
    }

    /// Starts a background fetch when the set is older than `refresh`.
    fn refresh_if_stale(self: &Arc<Self>, refresh: Duration) {
        let age = now_ms().saturating_sub(self.loaded_at_ms.load(Ordering::Relaxed));
        if age < refresh.as_millis() as u64 || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            {
                let _guard = store.fetch_lock.lock().await;
                let age = now_ms().saturating_sub(store.loaded_at_ms.load(Ordering::Relaxed));
                if age >= refresh.as_millis() as u64 {
                    store.fetch_now().await;
                    // A failed refresh waits a whole period before the next try.
                    store.loaded_at_ms.store(now_ms(), Ordering::Relaxed);
                }
            }
            store.refreshing.store(false, Ordering::Release);
        });
    }

    /// Fetches now (the caller holds `fetch_lock`) and installs the set on success.
    async fn fetch_now(&self) {
        let Source::Remote { url, tls, .. } = &self.source else {
            return;
        };
        self.attempted_at_ms.store(now_ms() + 1, Ordering::Release);
        match fetch(url, tls).await {
            Ok(set) => {
                tracing::info!(authorizer = %self.name, jwks = %url.url, keys = set.len(), "key set loaded");
                self.current.store(Arc::new(set));
                self.generation.fetch_add(1, Ordering::AcqRel);
                self.loaded_at_ms.store(now_ms(), Ordering::Relaxed);
                self.loaded.store(true, Ordering::Release);
            }
            Err(error) => {
                tracing::warn!(authorizer = %self.name, jwks = %url.url, error = %error, "cannot fetch the key set");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    #[test]
    fn parses_keys_and_skips_what_is_not_for_signatures() {
        let text = format!(
            r#"{{"keys":[
                {{"kty":"RSA","kid":"r1","alg":"RS256","use":"sig","n":"{RSA_N}","e":"AQAB"}},
                {{"kty":"RSA","kid":"enc","use":"enc","n":"{RSA_N}","e":"AQAB"}},
                {{"kty":"oct","kid":"s","k":"c2VjcmV0"}},
                {{"kty":"OKP","kid":"e1","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}
            ]}}"#
        );
        let (set, warnings) = parse(text.as_bytes()).expect("valid set");
        assert_eq!(set.len(), 2);
        assert_eq!(warnings.len(), 2);
        assert!(matches!(
            set.find(Some("r1"), Algorithm::RS256),
            Lookup::Found(_)
        ));
        // The JWK pins RS256: PS256 with the same key is refused.
        assert!(matches!(
            set.find(Some("r1"), Algorithm::PS256),
            Lookup::WrongType
        ));
        assert!(matches!(
            set.find(Some("e1"), Algorithm::RS256),
            Lookup::WrongType
        ));
        assert!(matches!(
            set.find(Some("nope"), Algorithm::RS256),
            Lookup::Unknown
        ));
        // Without kid: exactly one key fits EdDSA.
        assert!(matches!(set.find(None, Algorithm::EdDSA), Lookup::Found(_)));
        assert!(matches!(set.find(None, Algorithm::HS256), Lookup::Unknown));
    }

    #[test]
    fn malformed_sets_are_errors() {
        assert!(parse(b"[]").is_err());
        assert!(parse(b"{\"keys\":[]}").is_err());
        assert!(parse(br#"{"keys":[{"kty":"RSA","kid":"a"}]}"#).is_err());
        assert!(parse(br#"{"keys":[{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}]}"#).is_err());
    }

    #[test]
    fn urls_must_be_https() {
        assert!(JwksUrl::parse("http://issuer.example/jwks.json").is_err());
        let url = JwksUrl::parse("https://127.0.0.1:8443/.well-known/jwks.json").expect("url");
        assert_eq!(url.port, 8443);
        assert_eq!(url.path_and_query, "/.well-known/jwks.json");
        assert_eq!(url.authority, "127.0.0.1:8443");
    }

    #[test]
    fn base64_lengths() {
        assert_eq!(b64_len("AAAA"), Some(3));
        assert_eq!(b64_len("AAA"), Some(2));
        assert_eq!(b64_len("AA"), Some(1));
        assert_eq!(b64_len("A"), None);
    }
}
