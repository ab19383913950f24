//! The `jsonwebtoken` crate's crypto backend, on `ring` (the library rustls already uses
//! here), so that no second crypto library is compiled in.
//!
//! `jsonwebtoken` ≥ 10 has no crypto of its own: without a provider feature or an installed
//! [`CryptoProvider`] its first `decode` panics. [`install`] installs [`PROVIDER`] once per
//! process; [`super::JwtAuthorizer::new`] calls it, so no decode can happen before it.
//! Verification only: the gateway never signs tokens, so the signer factory refuses.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::ThumbprintHash;
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature as sig;

/// The provider: verifiers for every algorithm `jsonwebtoken` knows, digests for JWK
/// thumbprints; no signing, no private-key utilities.
pub static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(unsupported()),
        rsa_pub_components_from_public_key: |_| Err(unsupported()),
        ec_pub_components_from_private_key: |_, _| Err(unsupported()),
        ed_pub_components_from_private_key: |_, _| Err(unsupported()),
        compute_digest,
    },
};

/// Installs [`PROVIDER`] as the process default (once; later calls do nothing). If another
/// provider was installed first, that one stays: it is a complete provider as well.
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = PROVIDER.install_default();
    });
}

fn unsupported() -> Error {
    Error::from(ErrorKind::Provider(
        "not supported by weir's verification-only provider".to_owned(),
    ))
}

fn new_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Err(unsupported())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, Error> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
        _ => return Err(unsupported()),
    };
    Ok(ring::digest::digest(algorithm, data).as_ref().to_vec())
}

/// How one algorithm verifies.
#[derive(Clone, Copy)]
enum Scheme {
    Rsa(&'static sig::RsaParameters),
    /// ECDSA and EdDSA: a raw public key (uncompressed point, or the 32 Ed25519 bytes).
    Raw(&'static dyn sig::VerificationAlgorithm),
    Hmac(ring::hmac::Algorithm),
}

fn scheme(algorithm: Algorithm) -> Option<Scheme> {
    Some(match algorithm {
        Algorithm::RS256 => Scheme::Rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Scheme::Rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Scheme::Rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => Scheme::Rsa(&sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => Scheme::Rsa(&sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => Scheme::Rsa(&sig::RSA_PSS_2048_8192_SHA512),
        Algorithm::ES256 => Scheme::Raw(&sig::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => Scheme::Raw(&sig::ECDSA_P384_SHA384_FIXED),
        Algorithm::EdDSA => Scheme::Raw(&sig::ED25519),
        Algorithm::HS256 => Scheme::Hmac(ring::hmac::HMAC_SHA256),
        Algorithm::HS384 => Scheme::Hmac(ring::hmac::HMAC_SHA384),
        Algorithm::HS512 => Scheme::Hmac(ring::hmac::HMAC_SHA512),
        _ => return None,
    })
}

/// A verifier for one algorithm and one key.
struct RingVerifier {
    algorithm: Algorithm,
    scheme: Scheme,
    key: DecodingKey,
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    // The key's family must be the algorithm's: an RSA key never checks an HMAC tag.
    if key.family() != algorithm.family() {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    if algorithm.family() == AlgorithmFamily::Hmac && key.try_get_as_bytes().is_err() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        scheme: scheme(*algorithm).ok_or(ErrorKind::UnsupportedAlgorithm)?,
        key: key.clone(),
    }))
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let ok = match (self.scheme, self.key.kind()) {
            (Scheme::Rsa(params), DecodingKeyKind::RsaModulusExponent { n, e }) => {
                sig::RsaPublicKeyComponents { n, e }
                    .verify(params, message, signature)
                    .is_ok()
            }
            (Scheme::Rsa(params), DecodingKeyKind::SecretOrDer(der)) => {
                sig::UnparsedPublicKey::new(params, der)
                    .verify(message, signature)
                    .is_ok()
            }
            (Scheme::Raw(algorithm), DecodingKeyKind::SecretOrDer(bytes)) => {
                sig::UnparsedPublicKey::new(algorithm, bytes)
                    .verify(message, signature)
                    .is_ok()
            }
            (Scheme::Hmac(algorithm), DecodingKeyKind::SecretOrDer(secret)) => {
                let key = ring::hmac::Key::new(algorithm, secret);
                // Constant-time comparison of the tags.
                ring::hmac::verify(&key, message, signature).is_ok()
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}
