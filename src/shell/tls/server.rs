//! The gRPC port's TLS configuration, read from PEM files: at startup, where
//! an unreadable file stops the process naming its flag, and again whenever
//! the files change.

use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use crate::shell::reload::Reloadable;

/// Where the gRPC port's TLS material lives.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub certificate_chain: PathBuf,
    pub private_key: PathBuf,
    /// Set for mutual TLS.
    pub client_ca: Option<PathBuf>,
}

fn certificates(flag: &str, path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, String> {
    let invalid = |e: &dyn std::fmt::Display| format!("--{flag}: {}: {e}", path.display());
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| invalid(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&e))?;
    if certificates.is_empty() {
        return Err(invalid(&"holds no PEM certificate"));
    }
    Ok(certificates)
}

impl ServerTlsFiles {
    pub fn paths(&self) -> Vec<PathBuf> {
        [Some(&self.certificate_chain), Some(&self.private_key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Reads the files into a rustls configuration for gRPC (ALPN h2).
    pub fn load(&self) -> Result<ServerConfig, String> {
        let chain = certificates("tls-cert", &self.certificate_chain)?;
        let key = PrivateKeyDer::from_pem_file(&self.private_key)
            .map_err(|e| format!("--tls-key: {}: {e}", self.private_key.display()))?;
        let builder = ServerConfig::builder();
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for certificate in certificates("tls-client-ca", path)? {
                    roots.add(certificate).map_err(|e| format!("--tls-client-ca: {}: {e}", path.display()))?;
                }
                // Verified when presented but not demanded in the handshake: a
                // caller without one gets UNAUTHENTICATED naming what is missing
                // (a bearer token may stand in) rather than an opaque TLS alert.
                let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| format!("--tls-client-ca: {}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("--tls-key does not fit --tls-cert ({}): {e}", self.private_key.display()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// The files and the configuration last loaded from them.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub files: ServerTlsFiles,
    pub current: Arc<Reloadable<ServerConfig>>,
}

impl ServerTls {
    pub fn load(files: ServerTlsFiles) -> Result<Self, String> {
        let config = files.load()?;
        Ok(Self { files, current: Arc::new(Reloadable::new(config)) })
    }
}
