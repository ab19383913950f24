//! TLS configuration for both sides: the server side of the public TLS listener
//! (certificates chosen by SNI, optional client-certificate verification) and the client
//! side used for `https` upstream targets.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::CertificateDer;

use crate::config::{CertKey, ClientAuth, Tls};

/// ALPN identifiers offered by the public TLS listener, most preferred first.
pub const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A TLS setting could not be turned into a working rustls configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Key {
        path: String,
        #[source]
        source: rustls::Error,
    },
    #[error("client_ca: {0}")]
    ClientCa(String),
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified_key(cert: &CertKey, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    CertifiedKey::from_der(cert.chain.clone(), cert.key.clone_key(), provider)
        .map(Arc::new)
        .map_err(|source| TlsError::Key {
            path: cert.cert_path.display().to_string(),
            source,
        })
}

/// Picks the certificate for a handshake by its server name.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl SniResolver {
    fn pick(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        let name = name.to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return key.clone();
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(key) = self.wildcard.get(parent)
        {
            return key.clone();
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// The server configuration of the public TLS listener.
pub fn server_config(tls: &Tls) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let mut resolver = SniResolver {
        default: certified_key(&tls.default_cert, &provider)?,
        exact: HashMap::new(),
        wildcard: HashMap::new(),
    };
    for sni in &tls.sni {
        let key = certified_key(&sni.cert, &provider)?;
        for name in &sni.names {
            match name.strip_prefix("*.") {
                Some(parent) => resolver.wildcard.insert(parent.to_owned(), key.clone()),
                None => resolver.exact.insert(name.clone(), key.clone()),
            };
        }
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(cas) => {
            let mut roots = RootCertStore::empty();
            for ca in cas {
                roots
                    .add(ca.clone())
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match tls.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The client configuration for an upstream's `https` targets: its `ca` if given, else the
/// Mozilla root set; ALPN offers `h2` only when the upstream speaks HTTP/2.
pub fn client_config(
    ca: Option<&[CertificateDer<'static>]>,
    http2: bool,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(cas) => {
            for cert in cas {
                roots.add(cert.clone())?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}
