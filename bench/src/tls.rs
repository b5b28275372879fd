//! TLS material for the `coordinator-tls` target, made at startup: a CA and a
//! server certificate for 127.0.0.1, plus one bearer token and its tokens file.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, ClientTlsConfig};

pub const TOKEN: &str = "bench-token-6a1f3c5e7b9d2f4a6c8e0b1d3f5a7c9e";

pub struct Material {
    pub dir: tempfile::TempDir,
    ca_pem: String,
}

impl Material {
    pub fn new() -> anyhow::Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let server_key = KeyPair::generate()?;
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&server_key, &ca)?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("server.pem"), server.pem())?;
        std::fs::write(dir.path().join("server-key.pem"), server_key.serialize_pem())?;
        let digest = idempotency_coordinator::shell::auth::tokens::hash_token(TOKEN);
        std::fs::write(dir.path().join("tokens"), format!("bench {digest}\n"))?;
        Ok(Self { dir, ca_pem: ca.pem() })
    }

    /// `serve` flags: TLS on the gRPC port, bearer-token authentication.
    pub fn server_flags(&self) -> Vec<String> {
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        vec![
            "--tls-cert".into(),
            path("server.pem"),
            "--tls-key".into(),
            path("server-key.pem"),
            "--tokens-file".into(),
            path("tokens"),
        ]
    }

    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem))
    }
}
