//! The built-in JWT authorizer (`[authorizers.NAME] type = "jwt"`): finds the bearer
//! token, checks it with the `jsonwebtoken` crate against the authorizer's keys, checks
//! the route's scopes, and puts the caller's [`Principal`] (its `sub`) and
//! [`AuthContext`] (its claims) into the request's extensions.
//!
//! What a token must pass, in order (any failure is `401` with `WWW-Authenticate: Bearer`,
//! except a missing scope, `403`):
//!
//! 1. present in the configured source (header, cookie or query) and at most
//!    [`MAX_TOKEN_BYTES`] long;
//! 2. its header's `alg` in the authorizer's allow-list (`none` is no algorithm at all);
//! 3. a key for its `kid` whose type fits `alg` (an RSA key never checks an `HS256` tag,
//!    and `HS*` is only allowed with a `secret`; see [`jwks`]);
//! 4. a valid signature; `exp` present and numeric, not past (minus `leeway`); `nbf`, when
//!    present, not in the future (plus `leeway`); `iss` and `aud` present and matching;
//! 5. at least one of the route's `scopes`, from `scope` (space-separated) or `scp` (a
//!    list, or a space-separated string).
//!
//! Headers named in `forward_claims` are removed from every request before anything else,
//! so only the gateway can set them.

pub mod crypto;
pub mod jwks;
pub mod verified;

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use crate::config::{JwtConfig, JwtKeys, TokenSource};
use crate::identity::{AuthContext, Principal};
use crate::tls::TlsError;
use jwks::{KeyError, KeyStore};
use verified::{Verified, VerifiedTokens};

/// The longest token accepted (bytes of its compact form).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token where the authorizer looks for one.
    #[error("no bearer token")]
    Missing,
    /// A token that does not pass (the reason is for logs only).
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// A valid token without any of the route's scopes.
    #[error("token lacks the route's scopes")]
    InsufficientScope,
    /// The authorizer has no keys yet (its JWKS was never fetched).
    #[error("authorizer keys unavailable")]
    Unavailable,
}

/// A running JWT authorizer.
pub struct JwtAuthorizer {
    name: Arc<str>,
    keys: Arc<KeyStore>,
    /// One validation per allowed algorithm (`jsonwebtoken` wants every algorithm of a
    /// validation to be of the key's family).
    validations: Vec<(Algorithm, Validation)>,
    token: TokenSource,
    /// `forward_claims`: claim name → header sent upstream.
    forward: Vec<(String, HeaderName)>,
    /// `leeway`, whole seconds.
    leeway: u64,
    /// Tokens already verified (`token_cache`; `None` when 0).
    verified: Option<VerifiedTokens>,
}

impl std::fmt::Debug for JwtAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthorizer")
            .field("name", &self.name)
            .field("keys", &self.keys)
            .finish()
    }
}

impl JwtAuthorizer {
    /// Builds the authorizer `name` (no fetch yet: see [`Self::load`]).
    pub fn new(name: &str, config: &JwtConfig) -> Result<JwtAuthorizer, TlsError> {
        crypto::install();
        let keys = match &config.keys {
            JwtKeys::Fixed(set) => KeyStore::fixed(name, set.clone()),
            JwtKeys::Remote {
                url,
                ca,
                refresh,
                cooldown,
            } => KeyStore::remote(name, url.clone(), ca.as_deref(), *refresh, *cooldown)?,
        };
        let validations = config
            .algorithms
            .iter()
            .map(|&alg| {
                let mut validation = Validation::new(alg);
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                validation.set_issuer(&config.issuers);
                validation.set_audience(&config.audiences);
                validation.leeway = config.leeway.as_secs();
                validation.validate_exp = true;
                validation.validate_nbf = true;
                validation.validate_aud = true;
                (alg, validation)
            })
            .collect();
        Ok(JwtAuthorizer {
            name: Arc::from(name),
            keys: Arc::new(keys),
            validations,
            token: config.token.clone(),
            forward: config.forward_claims.clone(),
            leeway: config.leeway.as_secs(),
            verified: VerifiedTokens::new(config.token_cache),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Fetches a remote key set for the first time (at start).
    pub async fn load(&self) {
        self.keys.load().await;
    }

    /// Checks `request`'s token and, on success, forwards the configured claims as
    /// headers and records the caller's identity in the request's extensions.
    pub async fn authorize<B>(
        &self,
        request: &mut Request<B>,
        scopes: &[String],
    ) -> Result<(), AuthError> {
        for (_, header) in &self.forward {
            request.headers_mut().remove(header);
        }
        let verified = {
            let token = find_token(&self.token, request).ok_or(AuthError::Missing)?;
            self.verify(token).await?
        };
        let claims = &verified.claims;
        if !scopes.is_empty() && !has_any_scope(claims, scopes) {
            return Err(AuthError::InsufficientScope);
        }
        for (claim, header) in &self.forward {
            if let Some(value) = claims.get(claim).and_then(claim_header_value) {
                request.headers_mut().insert(header.clone(), value);
            }
        }
        let extensions = request.extensions_mut();
        extensions.insert(Principal::new(verified.principal));
        extensions.insert(AuthContext {
            authorizer: self.name.clone(),
            claims: verified.claims,
        });
        Ok(())
    }

    /// A token's verified claims: remembered ones when the token was verified before (see
    /// [`verified`]), else from [`Self::check`].
    async fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid("token too large"));
        }
        let Some(cache) = &self.verified else {
            let claims = self.check(token).await?;
            return Verified::new(0, claims).ok_or(AuthError::Invalid("malformed exp or nbf"));
        };
        let generation = self.keys.generation();
        let now = jsonwebtoken::get_current_timestamp();
        let digest = VerifiedTokens::digest(token);
        if let Some(verified) = cache.get(&digest, generation, now, self.leeway) {
            self.keys.touch();
            return Ok(verified);
        }
        let claims = self.check(token).await?;
        let verified =
            Verified::new(generation, claims).ok_or(AuthError::Invalid("malformed exp or nbf"))?;
        cache.put(digest, verified.clone(), now, self.leeway);
        Ok(verified)
    }

    /// Steps 1–4 of the module docs: the token's claims, if it passes.
    async fn check(&self, token: &str) -> Result<Map<String, Value>, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid("token too large"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("malformed token header"))?;
        let Some((_, validation)) = self.validations.iter().find(|(alg, _)| *alg == header.alg)
        else {
            return Err(AuthError::Invalid("algorithm not allowed"));
        };
        let key = match self.keys.key(header.kid.as_deref(), header.alg).await {
            Ok(key) => key,
            Err(KeyError::NoKey) => return Err(AuthError::Invalid("no key for the token")),
            Err(KeyError::Unavailable) => return Err(AuthError::Unavailable),
        };
        jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, validation)
            .map(|data| data.claims)
            .map_err(|error| AuthError::Invalid(reason(error.kind())))
    }
}

/// A fixed, log-only description of why `jsonwebtoken` refused a token.
fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not yet valid (nbf)",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::MissingRequiredClaim(_) => "missing or malformed exp, iss or aud",
        ErrorKind::InvalidClaimFormat(_) => "malformed exp or nbf",
        ErrorKind::InvalidAlgorithm => "algorithm does not fit the key",
        _ => "malformed token",
    }
}

/// The token in the request, per `source`.
fn find_token<'r, B>(source: &TokenSource, request: &'r Request<B>) -> Option<&'r str> {
    let token = match source {
        TokenSource::Bearer(name) => {
            let value = single_header(request.headers(), name)?;
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)?
        }
        TokenSource::Header(name) => {
            let value = single_header(request.headers(), name)?;
            match value.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token,
                _ => value,
            }
        }
        TokenSource::Cookie(name) => request
            .headers()
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then_some(v.trim_matches('"'))
            })?,
        TokenSource::Query(name) => request.uri().query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            // A JWT is base64url and dots: nothing in it is ever percent-encoded.
            (k == name).then_some(v)
        })?,
    };
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// The value of a header sent exactly once (two `Authorization` lines are refused).
fn single_header<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()
}

/// Whether the claims grant at least one of `wanted`.
fn has_any_scope(claims: &Map<String, Value>, wanted: &[String]) -> bool {
    let granted = |scope: &str| wanted.iter().any(|w| w == scope);
    let in_value = |value: &Value| match value {
        Value::String(text) => text.split(' ').any(granted),
        Value::Array(items) => items.iter().filter_map(Value::as_str).any(granted),
        _ => false,
    };
    claims.get("scope").is_some_and(in_value) || claims.get("scp").is_some_and(in_value)
}

/// A claim as a header value: strings as they are, other JSON values as compact JSON.
fn claim_header_value(value: &Value) -> Option<HeaderValue> {
    match value {
        Value::String(text) => HeaderValue::from_str(text).ok(),
        Value::Null => None,
        other => HeaderValue::from_str(&other.to_string()).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(header: (&str, &str), uri: &str) -> Request<()> {
        Request::builder()
            .uri(uri)
            .header(header.0, header.1)
            .body(())
            .expect("request")
    }

    #[test]
    fn tokens_from_each_source() {
        let auth = HeaderName::from_static("authorization");
        let bearer = TokenSource::Bearer(auth.clone());
        assert_eq!(
            find_token(&bearer, &request(("authorization", "Bearer abc"), "/")),
            Some("abc")
        );
        assert_eq!(
            find_token(&bearer, &request(("authorization", "bearer abc"), "/")),
            Some("abc")
        );
        assert_eq!(
            find_token(&bearer, &request(("authorization", "Basic abc"), "/")),
            None
        );
        assert_eq!(
            find_token(&bearer, &request(("authorization", "Bearer "), "/")),
            None
        );
        let header = TokenSource::Header(HeaderName::from_static("x-token"));
        assert_eq!(
            find_token(&header, &request(("x-token", "abc"), "/")),
            Some("abc")
        );
        let cookie = TokenSource::Cookie("session".to_owned());
        assert_eq!(
            find_token(&cookie, &request(("cookie", "a=1; session=abc; b=2"), "/")),
            Some("abc")
        );
        let query = TokenSource::Query("access_token".to_owned());
        assert_eq!(
            find_token(&query, &request(("x", "y"), "/p?x=1&access_token=abc")),
            Some("abc")
        );
    }

    #[test]
    fn two_authorization_lines_are_no_token() {
        let request = Request::builder()
            .header("authorization", "Bearer a")
            .header("authorization", "Bearer b")
            .body(())
            .expect("request");
        let bearer = TokenSource::Bearer(HeaderName::from_static("authorization"));
        assert_eq!(find_token(&bearer, &request), None);
    }

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    use crate::config::{JwtConfig, JwtKeys};
    use jwks::{Key, KeySet, KeyType};

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn mint(key: &Ed25519KeyPair, header: &str, claims: &str) -> String {
        let message = format!("{}.{}", B64.encode(header), B64.encode(claims));
        let signature = key.sign(message.as_bytes());
        format!("{message}.{}", B64.encode(signature.as_ref()))
    }

    fn authorizer(key: &Ed25519KeyPair) -> JwtAuthorizer {
        let x = B64.encode(key.public_key().as_ref());
        let set = KeySet::single(Key {
            kid: Some("k1".to_owned()),
            key_type: KeyType::Ed25519,
            alg: None,
            decoding: jsonwebtoken::DecodingKey::from_ed_components(&x).expect("key"),
        });
        let config = JwtConfig {
            issuers: vec!["https://issuer.test".to_owned()],
            audiences: vec!["weir".to_owned()],
            keys: JwtKeys::Fixed(Arc::new(set)),
            algorithms: vec![Algorithm::EdDSA],
            leeway: std::time::Duration::from_secs(5),
            token: TokenSource::Bearer(http::header::AUTHORIZATION),
            forward_claims: vec![("sub".to_owned(), HeaderName::from_static("x-user-id"))],
            token_cache: 16,
        };
        JwtAuthorizer::new("main", &config).expect("authorizer")
    }

    fn bearer(token: &str) -> Request<()> {
        Request::builder()
            .header("authorization", format!("Bearer {token}"))
            .header("x-user-id", "forged")
            .body(())
            .expect("request")
    }

    /// The crypto provider is compiled in and installed: a real decode succeeds (a
    /// missing provider would panic here).
    #[tokio::test]
    async fn decodes_a_token_with_the_ring_provider() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("keygen");
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
        let authorizer = authorizer(&key);
        let claims = format!(
            r#"{{"sub":"alice","iss":"https://issuer.test","aud":"weir","exp":{},"scope":"a b"}}"#,
            now() + 60
        );
        let token = mint(&key, r#"{"alg":"EdDSA","kid":"k1","typ":"JWT"}"#, &claims);
        let mut request = bearer(&token);
        authorizer
            .authorize(&mut request, &["b".to_owned()])
            .await
            .expect("valid token");
        assert_eq!(request.headers()["x-user-id"], "alice");
        let principal = request.extensions().get::<Principal>().expect("principal");
        assert_eq!(principal.as_str(), "alice");

        // A tampered payload fails, and the forged header is gone either way.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = B64.encode(claims.replace("alice", "admin"));
        parts[1] = &forged;
        let mut request = bearer(&parts.join("."));
        let error = authorizer
            .authorize(&mut request, &[])
            .await
            .expect_err("tampered");
        assert_eq!(error, AuthError::Invalid("bad signature"));
        assert!(!request.headers().contains_key("x-user-id"));

        let mut request = bearer(&token);
        let error = authorizer
            .authorize(&mut request, &["admin".to_owned()])
            .await
            .expect_err("scope");
        assert_eq!(error, AuthError::InsufficientScope);
    }

    #[test]
    fn scopes_from_scope_or_scp() {
        let claims =
            |json: &str| -> Map<String, Value> { serde_json::from_str(json).expect("json") };
        let wanted = ["users:read".to_owned()];
        assert!(has_any_scope(
            &claims(r#"{"scope":"a users:read"}"#),
            &wanted
        ));
        assert!(has_any_scope(&claims(r#"{"scp":["users:read"]}"#), &wanted));
        assert!(has_any_scope(&claims(r#"{"scp":"x users:read"}"#), &wanted));
        assert!(!has_any_scope(
            &claims(r#"{"scope":"users:write"}"#),
            &wanted
        ));
        assert!(!has_any_scope(
            &claims(r#"{"scope":"users:readx"}"#),
            &wanted
        ));
        assert!(!has_any_scope(&claims(r#"{}"#), &wanted));
    }
}
