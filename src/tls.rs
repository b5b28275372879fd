//! TLS material read at startup: the gRPC port's certificate and key, the CA
//! that signs client certificates, and what the etcd client presents.

use std::fmt;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Bytes that must never reach a log line (private keys, passwords).
#[derive(Clone, Default)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// TLS on the gRPC port.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub certificate_chain: Vec<u8>,
    pub private_key: Secret,
    /// Set for mutual TLS.
    pub client_ca: Option<Vec<u8>>,
}

impl ServerTls {
    pub fn config(&self) -> ServerTlsConfig {
        let config =
            ServerTlsConfig::new().identity(Identity::from_pem(&self.certificate_chain, self.private_key.expose()));
        match &self.client_ca {
            // Verified when presented but not demanded in the handshake: a
            // caller without one gets UNAUTHENTICATED naming what is missing
            // (a bearer token may stand in) rather than an opaque TLS alert.
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)).client_auth_optional(true),
            None => config,
        }
    }
}

/// How the etcd client verifies etcd and, optionally, identifies itself.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca: Vec<u8>,
    pub client: Option<(Vec<u8>, Secret)>,
}

impl EtcdTls {
    pub fn options(&self) -> ClientTlsConfig {
        let options = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca));
        match &self.client {
            Some((certificate, key)) => options.identity(Identity::from_pem(certificate, key.expose())),
            None => options,
        }
    }
}
