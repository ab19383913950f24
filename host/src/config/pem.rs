//! Certificates and private keys read from the PEM files the route file names.
//!
//! Errors are config-error messages that name the file as written in the route file
//! (`shown`), while reading from the path resolved against the file's directory.

use std::io;
use std::path::Path;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Reads every certificate in a PEM file; at least one is required.
pub fn read_certs(resolved: &Path, shown: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(resolved)
        .map_err(|e| pem_error(e, resolved, shown, "certificate"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e, resolved, shown, "certificate"))?;
    if certs.is_empty() {
        return Err(no_items(shown, "certificate"));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn read_private_key(resolved: &Path, shown: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(resolved).map_err(|e| pem_error(e, resolved, shown, "private key"))
}

/// Checks that `key` is usable by rustls and belongs to the first certificate of `chain`.
pub fn check_key_matches(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    cert_shown: &str,
) -> Result<(), String> {
    let provider = rustls::crypto::ring::default_provider();
    match CertifiedKey::from_der(chain.to_vec(), key.clone_key(), &provider) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err(format!(
            "private key does not match the certificate in {cert_shown:?}"
        )),
        Err(e) => Err(format!("unusable private key: {e}")),
    }
}

fn no_items(shown: &str, what: &str) -> String {
    let label = if what == "certificate" {
        "CERTIFICATE"
    } else {
        "PRIVATE KEY"
    };
    format!("no {what} in {shown:?}, expected a PEM file with a \"{label}\" block")
}

fn pem_error(error: pem::Error, resolved: &Path, shown: &str, what: &str) -> String {
    match error {
        // Where a relative name was looked for is what the reader needs to fix it.
        pem::Error::Io(e) if resolved != Path::new(shown) => format!(
            "cannot read {shown:?} (looked for {:?}): {}",
            resolved.display().to_string(),
            io_reason(&e)
        ),
        pem::Error::Io(e) => format!("cannot read {shown:?}: {}", io_reason(&e)),
        pem::Error::NoItemsFound => no_items(shown, what),
        other => format!("invalid PEM in {shown:?}: {other}"),
    }
}

pub fn io_reason(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => "no such file".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        io::ErrorKind::IsADirectory => "is a directory".to_owned(),
        _ => error.to_string(),
    }
}
