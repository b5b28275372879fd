//! TLS: the gRPC port's configuration, loaded from files and reloaded when
//! they change ([`server`]), the connections accepted with it ([`incoming`]),
//! and what the etcd client presents.

pub mod incoming;
pub mod server;

use std::fmt;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

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
