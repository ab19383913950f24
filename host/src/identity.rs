//! Who the caller is, as established by the `authorize` phase: a [`Principal`] carried in
//! the request's `http::Extensions`.
//!
//! The authorizer (built-in JWT or a plugin) inserts it once it let the request through:
//! `request.extensions_mut().insert(Principal::new(subject))`. Later phases read it:
//! the response cache keys on it (`key = ["identity"]`) and lets a client refresh an entry
//! only when it is present (`invalidate = "authorized"`); access logs print it. A request
//! without one is anonymous.

use std::sync::Arc;

/// The authenticated caller's identity (e.g. a JWT `sub`, a plugin's principal). Cheap
/// to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal(Arc<str>);

impl Principal {
    pub fn new(id: impl Into<Arc<str>>) -> Principal {
        Principal(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The principal a request carries, if an authorizer set one.
pub fn principal<B>(request: &http::Request<B>) -> Option<&Principal> {
    principal_in(request.extensions())
}

/// The principal in a request's extensions, if an authorizer set one.
pub fn principal_in(extensions: &http::Extensions) -> Option<&Principal> {
    extensions.get::<Principal>()
}

/// The authorizer's context for a request it let in: which authorizer, and what it
/// learnt (for the built-in JWT authorizer, every claim of the token). Inserted beside the
/// [`Principal`], for filters and handlers.
#[derive(Debug, Clone)]
pub struct AuthContext {
    /// The `[authorizers.NAME]` that let the request in.
    pub authorizer: Arc<str>,
    /// The token's claims.
    pub claims: Arc<serde_json::Map<String, serde_json::Value>>,
}

/// The authorizer context a request carries, if an authorizer let it in.
pub fn auth_context<B>(request: &http::Request<B>) -> Option<&AuthContext> {
    request.extensions().get::<AuthContext>()
}

/// The certificate a client presented on a mutual-TLS connection, as plugins see it
/// (`tls-client`). Read once per connection, shared by its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject, as an RFC 4514 string.
    pub subject: String,
    /// DNS names and URIs of the subject alternative name extension.
    pub sans: Vec<String>,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub fingerprint_sha256: String,
}

impl ClientCert {
    /// Reads a DER certificate (already verified by the TLS handshake). `None` when it
    /// cannot be parsed (the handshake's verifier would have refused it first).
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let sans = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                        GeneralName::URI(uri) => Some((*uri).to_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        Some(ClientCert {
            subject: cert.subject().to_string(),
            sans,
            fingerprint_sha256: crate::config::plugins::hex(digest.as_ref()),
        })
    }
}
