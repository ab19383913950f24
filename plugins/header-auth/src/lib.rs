//! `header-auth`: a Weir `authorizer` plugin that lets a request in when a header carries
//! one of a set of static tokens.
//!
//! The configuration never holds a token, only its SHA-256: the plugin hashes the token
//! the request presents and compares the digest with every configured one in constant
//! time. A match lets the request in as that token's principal, with its context and
//! usage plan key; no token, or an unknown one, is a 401 with `{"message": ...}`.
//!
//! Config (see README.md): `header` (default `x-api-token`), `scheme` (optional, e.g.
//! `"Bearer"` for `authorization: Bearer TOKEN`), `tokens_sha256 = ["HEX", ...]` and
//! `tokens = [{ sha256, principal, context, usage_plan_key }, ...]`.

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use weir_plugin::{Allow, Authorizer, Decision, Request, Response, headers, log};

/// The header read when the config names none.
const DEFAULT_HEADER: &str = "x-api-token";
/// How many hex digits of a token's digest name its principal when the config gives none.
const DEFAULT_PRINCIPAL_HEX_DIGITS: usize = 16;
/// A SHA-256 digest's length in bytes.
const DIGEST_BYTES: usize = 32;

/// The plugin: its configuration, validated (built from [`RawConfig`]).
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawConfig")]
struct HeaderAuth {
    /// The header that carries the token, lower-case.
    header: String,
    /// The authentication scheme the header's value starts with, if any.
    scheme: Option<String>,
    /// The tokens that let a request in.
    tokens: Vec<Token>,
}

/// One accepted token, as its digest and what a request that presents it is.
#[derive(Debug)]
struct Token {
    digest: [u8; DIGEST_BYTES],
    principal: String,
    context: Vec<(String, String)>,
    usage_plan_key: Option<String>,
}

/// The `config` table as the route file gives it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_header")]
    header: String,
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    tokens_sha256: Vec<Sha256Hex>,
    #[serde(default)]
    tokens: Vec<RawToken>,
}

/// One entry of `tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    sha256: Sha256Hex,
    #[serde(default)]
    principal: Option<String>,
    #[serde(default)]
    context: BTreeMap<String, String>,
    #[serde(default)]
    usage_plan_key: Option<String>,
}

/// A SHA-256 digest written as 64 hex digits (either case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct Sha256Hex([u8; DIGEST_BYTES]);

fn default_header() -> String {
    DEFAULT_HEADER.to_owned()
}

impl TryFrom<String> for Sha256Hex {
    type Error = String;

    fn try_from(hex: String) -> Result<Self, String> {
        let invalid = || format!("`{hex}` is not a SHA-256 digest (64 hex digits)");
        let bytes = hex.as_bytes();
        if bytes.len() != DIGEST_BYTES * 2 {
            return Err(invalid());
        }
        let mut digest = [0u8; DIGEST_BYTES];
        for (byte, pair) in digest.iter_mut().zip(bytes.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| invalid())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
        }
        Ok(Self(digest))
    }
}

impl TryFrom<RawConfig> for HeaderAuth {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Self, String> {
        if !headers::is_valid_name(&raw.header) {
            return Err(format!(
                "header `{}` is not a valid header name",
                raw.header
            ));
        }
        if let Some(scheme) = &raw.scheme
            && !headers::is_valid_name(scheme)
        {
            return Err(format!(
                "scheme `{scheme}` is not a valid authentication scheme"
            ));
        }
        let plain = raw.tokens_sha256.into_iter().map(|digest| RawToken {
            sha256: digest,
            principal: None,
            context: BTreeMap::new(),
            usage_plan_key: None,
        });
        let mut tokens: Vec<Token> = Vec::new();
        for raw_token in plain.chain(raw.tokens) {
            let digest = raw_token.sha256.0;
            if tokens.iter().any(|token| token.digest == digest) {
                return Err(format!("token {} is listed twice", hex(&digest)));
            }
            let principal = match raw_token.principal {
                Some(principal) if principal.is_empty() => {
                    return Err(format!("token {} has an empty principal", hex(&digest)));
                }
                Some(principal) => principal,
                None => default_principal(&digest),
            };
            tokens.push(Token {
                digest,
                principal,
                context: raw_token.context.into_iter().collect(),
                usage_plan_key: raw_token.usage_plan_key,
            });
        }
        if tokens.is_empty() {
            return Err("no tokens: set `tokens_sha256` or `tokens`".to_owned());
        }
        Ok(Self {
            header: raw.header.to_ascii_lowercase(),
            scheme: raw.scheme,
            tokens,
        })
    }
}

/// `sha256:` and the first hex digits of the digest: names a token without revealing it.
fn default_principal(digest: &[u8; DIGEST_BYTES]) -> String {
    let mut hex = hex(digest);
    hex.truncate(DEFAULT_PRINCIPAL_HEX_DIGITS);
    format!("sha256:{hex}")
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Authorizer for HeaderAuth {
    fn authorize(&self, request: Request) -> Decision {
        let Some(presented) = self.presented_token(&request) else {
            return self.deny("missing token");
        };
        match self.find(presented.as_bytes()) {
            Some(token) => Allow {
                principal: token.principal.clone(),
                context: token.context.clone(),
                usage_plan_key: token.usage_plan_key.clone(),
            }
            .into(),
            None => {
                log::debug(&format!("unknown token in `{}`", self.header));
                self.deny("invalid token")
            }
        }
    }
}

impl HeaderAuth {
    /// The token the request presents: the header's value, after the scheme when one is
    /// configured. `None` when there is no token to check.
    fn presented_token<'a>(&self, request: &'a Request) -> Option<&'a str> {
        let value = request.header(&self.header)?.trim();
        let token = match &self.scheme {
            None => value,
            Some(scheme) => {
                let (given, rest) = value.split_once(' ')?;
                if !given.eq_ignore_ascii_case(scheme) {
                    return None;
                }
                rest.trim()
            }
        };
        (!token.is_empty()).then_some(token)
    }

    /// The configured token whose digest is the digest of `presented`. Every digest is
    /// compared, each in constant time, whichever matches.
    fn find(&self, presented: &[u8]) -> Option<&Token> {
        let digest: [u8; DIGEST_BYTES] = Sha256::digest(presented).into();
        let mut found = None;
        for token in &self.tokens {
            let matches: bool = token.digest.ct_eq(&digest).into();
            if matches && found.is_none() {
                found = Some(token);
            }
        }
        found
    }

    /// A 401 with `{"message": MESSAGE}`, and `www-authenticate` when a scheme is set.
    fn deny(&self, message: &str) -> Decision {
        let mut response = Response::error(401, message);
        if let Some(scheme) = &self.scheme {
            response.set_header("www-authenticate", scheme.as_str());
        }
        Decision::Deny(response)
    }
}

weir_plugin::export_authorizer!(HeaderAuth);

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use weir_plugin::{config, testing};

    use super::*;

    fn sha(token: &str) -> String {
        hex(&Sha256::digest(token.as_bytes()))
    }

    fn plugin(config: Value) -> HeaderAuth {
        config::parse(&config.to_string()).expect("a valid config")
    }

    fn config_error(config: Value) -> String {
        config::parse::<HeaderAuth>(&config.to_string())
            .expect_err("an invalid config")
            .to_string()
    }

    fn denial(decision: Decision) -> (u16, Value) {
        match decision {
            Decision::Deny(response) => (response.status, response.json_body().expect("json")),
            Decision::Allow(allow) => panic!("allowed as {}", allow.principal),
        }
    }

    #[test]
    fn a_listed_token_is_let_in_with_its_principal_context_and_plan() {
        let auth = plugin(json!({
            "header": "X-Partner-Token",
            "tokens_sha256": [sha("plain")],
            "tokens": [{
                "sha256": sha("secret-a").to_uppercase(),
                "principal": "partner-a",
                "context": { "tenant": "a", "tier": "gold" },
                "usage_plan_key": "key-a",
            }],
        }));
        let request = Request::new("GET", "/").with_header("x-partner-token", "secret-a");
        assert_eq!(
            auth.authorize(request),
            Decision::Allow(Allow {
                principal: "partner-a".into(),
                context: vec![
                    ("tenant".into(), "a".into()),
                    ("tier".into(), "gold".into())
                ],
                usage_plan_key: Some("key-a".into()),
            })
        );

        let plain = Request::new("GET", "/").with_header("x-partner-token", " plain ");
        let expected = format!("sha256:{}", &sha("plain")[..DEFAULT_PRINCIPAL_HEX_DIGITS]);
        assert_eq!(auth.authorize(plain), Decision::allow(expected));
    }

    #[test]
    fn missing_and_unknown_tokens_are_401() {
        let auth = plugin(json!({ "tokens_sha256": [sha("right")] }));
        let missing = auth.authorize(Request::new("GET", "/"));
        assert_eq!(
            denial(missing),
            (401, json!({ "message": "missing token" }))
        );
        let empty = auth.authorize(Request::new("GET", "/").with_header(DEFAULT_HEADER, " "));
        assert_eq!(denial(empty), (401, json!({ "message": "missing token" })));
        let wrong = auth.authorize(Request::new("GET", "/").with_header(DEFAULT_HEADER, "wrong"));
        assert_eq!(denial(wrong), (401, json!({ "message": "invalid token" })));
        let right = auth.authorize(Request::new("GET", "/").with_header(DEFAULT_HEADER, "right"));
        assert!(right.is_allow());
    }

    #[test]
    fn a_scheme_is_required_and_announced() {
        let auth = plugin(json!({
            "header": "authorization",
            "scheme": "Bearer",
            "tokens": [{ "sha256": sha("t0k3n"), "principal": "svc" }],
        }));
        let ok = Request::new("GET", "/").with_header("authorization", "bearer  t0k3n");
        assert_eq!(auth.authorize(ok), Decision::allow("svc"));
        for value in ["t0k3n", "Basic t0k3n", "Bearer", "Bearer "] {
            let request = Request::new("GET", "/").with_header("authorization", value);
            let Decision::Deny(response) = auth.authorize(request) else {
                panic!("`{value}` let in");
            };
            assert_eq!(response.status, 401);
            assert_eq!(response.header("www-authenticate"), Some("Bearer"));
        }
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        assert!(config_error(json!({})).contains("no tokens"));
        assert!(config_error(json!({ "tokens_sha256": ["abc"] })).contains("not a SHA-256"));
        let not_hex = "zz".repeat(DIGEST_BYTES);
        assert!(config_error(json!({ "tokens_sha256": [not_hex] })).contains("tokens_sha256[0]"));
        let twice = config_error(json!({
            "tokens_sha256": [sha("a")],
            "tokens": [{ "sha256": sha("a"), "principal": "p" }],
        }));
        assert!(twice.contains("listed twice"), "{twice}");
        let header = config_error(json!({ "header": "bad header", "tokens_sha256": [sha("a")] }));
        assert!(header.contains("not a valid header name"), "{header}");
        let unknown = config_error(json!({ "token_sha256": [sha("a")] }));
        assert!(unknown.contains("unknown field"), "{unknown}");
        let empty = config_error(json!({ "tokens": [{ "sha256": sha("a"), "principal": "" }] }));
        assert!(empty.contains("empty principal"), "{empty}");
    }

    #[test]
    fn a_bad_config_denies_through_the_export_with_a_500() {
        testing::reset();
        testing::set_config(&json!({ "tokens_sha256": ["nope"] }));
        let decision = testing::authorize::<HeaderAuth>(Request::new("GET", "/"));
        assert_eq!(
            denial(decision),
            (500, json!({ "message": "plugin misconfigured" }))
        );
        let logs = testing::logs();
        assert!(logs[0].1.contains("tokens_sha256[0]"), "{logs:?}");
    }
}
