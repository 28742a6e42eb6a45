//! HTTPS without a proxy (`[server.tls]`): the certificate chain and key read from PEM
//! files at start into a rustls acceptor (TLS 1.2 and 1.3, `ring` provider, HTTP/1.1
//! only). A missing or unreadable file stops the start with the file named.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// The acceptor for `cfg`, or None when TLS is off.
pub fn load(cfg: &TlsConfig) -> Result<Option<TlsAcceptor>, String> {
    if !cfg.enabled() {
        return Ok(None);
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("server.tls.cert_file {}: {e}", cfg.cert_file))?;
    if certs.is_empty() {
        return Err(format!(
            "server.tls.cert_file {}: no PEM certificate in it",
            cfg.cert_file
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .map_err(|e| format!("server.tls.key_file {}: {e}", cfg.key_file))?;
    acceptor(certs, key).map(Some)
}

/// An acceptor for a chain and its key.
pub fn acceptor(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("server.tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server.tls: the key does not fit the certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let cfg = TlsConfig {
            cert_file: dir.path().join("nope.pem").display().to_string(),
            key_file: empty.display().to_string(),
        };
        assert!(load(&cfg).err().unwrap().contains("nope.pem"));
        let cfg = TlsConfig {
            cert_file: empty.display().to_string(),
            key_file: empty.display().to_string(),
        };
        assert!(load(&cfg).err().unwrap().contains("no PEM certificate"));
        assert!(load(&TlsConfig::default()).unwrap().is_none());
    }
}
