//! Downstream TLS: a rustls server config from PEM files, ALPN h2 + http/1.1.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is unreadable or malformed.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the material.
    #[error("TLS config: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Build the downstream TLS config (explicit ring provider: never the process default).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let pem = |path: &str, e: &dyn std::fmt::Display| TlsError::Pem {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| pem(&files.cert_file, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(&files.cert_file, &e))?;
    if certs.is_empty() {
        return Err(pem(&files.cert_file, &"no certificate found"));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| pem(&files.key_file, &e))?;
    let mut cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
