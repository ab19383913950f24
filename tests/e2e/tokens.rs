//! JWTs minted in the tests: keys generated here (RSA through `openssl genpkey`, which
//! `ring` cannot do; EC P-256 and Ed25519 with `ring`), their JWKS form, and tokens built
//! by hand so that broken ones (`alg: none`, tampered payloads, string `exp`) are as easy
//! to make as good ones.
#![allow(dead_code)]

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RsaKeyPair, RsaPublicKeyComponents,
};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "weir-tests";

/// A signing key and its public JWK.
pub enum Signer {
    Rsa { kid: String, key: RsaKeyPair },
    Ec { kid: String, key: EcdsaKeyPair },
    Ed { kid: String, key: Ed25519KeyPair },
}

impl Signer {
    /// A fresh RSA-2048 key (RS256).
    pub fn rsa(kid: &str) -> Signer {
        let output = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-outform",
                "DER",
            ])
            .output()
            .expect("run openssl genpkey (the tests need the openssl command for RSA keys)");
        assert!(output.status.success(), "openssl genpkey failed");
        // OpenSSL 3 writes PKCS#1 for `-outform DER`; older ones PKCS#8.
        let key = RsaKeyPair::from_der(&output.stdout)
            .or_else(|_| RsaKeyPair::from_pkcs8(&output.stdout))
            .expect("an RSA private key from openssl");
        Signer::Rsa {
            kid: kid.to_owned(),
            key,
        }
    }

    /// A fresh EC P-256 key (ES256).
    pub fn ec(kid: &str) -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("ec key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("ec pkcs8");
        Signer::Ec {
            kid: kid.to_owned(),
            key,
        }
    }

    /// A fresh Ed25519 key (EdDSA).
    pub fn ed(kid: &str) -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("ed key");
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("ed pkcs8");
        Signer::Ed {
            kid: kid.to_owned(),
            key,
        }
    }

    pub fn kid(&self) -> &str {
        match self {
            Signer::Rsa { kid, .. } | Signer::Ec { kid, .. } | Signer::Ed { kid, .. } => kid,
        }
    }

    pub fn alg(&self) -> &'static str {
        match self {
            Signer::Rsa { .. } => "RS256",
            Signer::Ec { .. } => "ES256",
            Signer::Ed { .. } => "EdDSA",
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        match self {
            Signer::Rsa { kid, key } => {
                let parts = RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                       "n": B64.encode(&parts.n), "e": B64.encode(&parts.e)})
            }
            Signer::Ec { kid, key } => {
                let point = key.public_key().as_ref();
                json!({"kty": "EC", "kid": kid, "crv": "P-256",
                       "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])})
            }
            Signer::Ed { kid, key } => {
                json!({"kty": "OKP", "kid": kid, "crv": "Ed25519",
                       "x": B64.encode(key.public_key().as_ref())})
            }
        }
    }

    /// The RSA public key in the DER form an HS256 forger would use as the "secret".
    pub fn rsa_public_der(&self) -> Vec<u8> {
        match self {
            Signer::Rsa { key, .. } => key.public().as_ref().to_vec(),
            _ => panic!("not an RSA key"),
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Rsa { key, .. } => {
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .expect("rsa sign");
                signature
            }
            Signer::Ec { key, .. } => key.sign(&rng, message).expect("ec sign").as_ref().to_vec(),
            Signer::Ed { key, .. } => key.sign(message).as_ref().to_vec(),
        }
    }

    /// A token with this key's `alg` and `kid` and `claims`.
    pub fn token(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg(), "kid": self.kid(), "typ": "JWT"});
        self.token_with_header(&header, claims)
    }

    /// A token with any header, signed with this key.
    pub fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        let message = format!("{}.{}", encode_json(header), encode_json(claims));
        let signature = self.sign(message.as_bytes());
        format!("{message}.{}", B64.encode(signature))
    }
}

/// A JWKS document of these keys.
pub fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}).to_string()
}

pub fn encode_json(value: &Value) -> String {
    B64.encode(value.to_string())
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Claims that pass: the test issuer and audience, valid for ten minutes.
pub fn good_claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "iat": now(),
           "scope": "users:read profile"})
}

/// An HS256 token signed with `secret`.
pub fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let message = format!("{}.{}", encode_json(header), encode_json(claims));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, message.as_bytes());
    format!("{message}.{}", B64.encode(tag.as_ref()))
}
