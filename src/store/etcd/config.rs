//! How to reach etcd: endpoints, key prefix, timeouts, TLS and credentials.

use std::fmt;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    /// Prefix of every key this service writes.
    pub prefix: String,
    pub connect_timeout: Duration,
    /// Time allowed for one etcd request, retries included.
    pub request_timeout: Duration,
    /// Set for https:// endpoints.
    pub tls: Option<EtcdTls>,
    /// etcd user and password.
    pub credentials: Option<(String, Secret)>,
    /// How group commit sizes and pipelines its transactions.
    pub batching: Batching,
    /// The `--quota-backend-bytes` etcd runs with, for the warning before
    /// it fills up (etcd 3.6 and later report their own).
    pub quota_bytes: u64,
    /// The shard this cluster is, in metrics and logs ("default" unsharded).
    pub shard: String,
}

/// etcd's own default `--quota-backend-bytes`: 2 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

/// How group commit sizes and pipelines its etcd transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// The `--max-txn-ops` etcd runs with: it bounds the calls one
    /// transaction carries. Checked against etcd when connecting; if etcd
    /// refuses transactions that large, fewer calls go per transaction.
    pub max_txn_ops: usize,
    /// Transactions in flight at once.
    pub in_flight: usize,
}

impl Default for Batching {
    /// etcd's own default `--max-txn-ops`, and four transactions in flight.
    fn default() -> Self {
        Self { max_txn_ops: 128, in_flight: 4 }
    }
}

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
