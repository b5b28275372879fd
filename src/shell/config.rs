//! Server settings: every one a flag and an `IDEMPOTENCY_*` environment
//! variable, checked once at startup into a [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::core::limits::{Limits, MIN_LEASE_TTL, check_scope_name};
use crate::shell::auth::{AuthConfig, TokensFile};
use crate::shell::etcd_files::{self, etcd_credentials, etcd_tls};
use crate::shell::shard_map_file::{self, ShardedEtcd};
use crate::shell::tls::server::{ServerTls, ServerTlsFiles};
use crate::store::etcd::config::{Batching, DEFAULT_QUOTA_BYTES, EtcdConfig};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where records live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// etcd: durable and shared by every replica.
    Etcd,
    /// This process's memory: lost on exit, not shared. For local development and client tests only.
    Memory,
}

/// The `serve` flags, as parsed.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the gRPC server listens on.
    #[arg(long, env = "IDEMPOTENCY_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// Address of the plain-HTTP Prometheus endpoint (GET /metrics).
    #[arg(long, env = "IDEMPOTENCY_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,

    /// Plaintext gRPC health port, served only when TLS is on, so kubelet probes need no certificate.
    #[arg(long, env = "IDEMPOTENCY_HEALTH_LISTEN", default_value = "0.0.0.0:50052")]
    pub health_listen: SocketAddr,

    /// PEM certificate chain of the gRPC port; with --tls-key the port speaks TLS only.
    #[arg(long, env = "IDEMPOTENCY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "IDEMPOTENCY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates that sign client certificates: turns on mutual TLS and
    /// authentication, the certificate naming the caller's tenant.
    #[arg(long, env = "IDEMPOTENCY_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// A client certificate URI SAN starting with this prefix names the tenant as the rest of
    /// the URI (e.g. spiffe://example.org/tenant/); with it set, a certificate without one is
    /// refused. Unset, the subject CN names the tenant.
    #[arg(long, env = "IDEMPOTENCY_TENANT_URI_PREFIX", requires = "tls_client_ca")]
    pub tenant_uri_prefix: Option<String>,

    /// Bearer tokens file, one "<tenant> <sha256 hex of token>" per line: turns on
    /// authentication by `authorization: Bearer` tokens. Needs TLS.
    #[arg(long, env = "IDEMPOTENCY_TOKENS_FILE", requires = "tls_cert")]
    pub tokens_file: Option<PathBuf>,

    /// Tenants whose authenticated callers may use the admin service (list records, forget a
    /// finished one), comma-separated. Unset: the admin service is off. Needs authentication.
    #[arg(long, env = "IDEMPOTENCY_ADMIN_TENANTS", value_delimiter = ',')]
    pub admin_tenants: Vec<String>,

    /// How often TLS and tokens files are checked for changes; changed files are loaded
    /// without a restart (new connections get a renewed certificate).
    #[arg(long, env = "IDEMPOTENCY_RELOAD_INTERVAL", value_parser = humantime::parse_duration, default_value = "10s")]
    pub reload_interval: Duration,

    /// Where records live: etcd, or this process's memory (lost on exit, one replica only).
    #[arg(long, env = "IDEMPOTENCY_STORE", value_enum, default_value = "etcd")]
    pub store: StoreKind,

    /// etcd client URLs, comma-separated; give every member.
    #[arg(long, env = "IDEMPOTENCY_ETCD_ENDPOINTS", value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub etcd_endpoints: Vec<String>,

    /// A shard-map file (TOML): records sharded over several etcd clusters, each with its own
    /// endpoints, TLS and credentials, and the map that places records on them. Replaces
    /// --etcd-endpoints and the --etcd-* TLS and credential flags; the other --etcd-* flags apply to
    /// every shard.
    #[arg(long, env = "IDEMPOTENCY_SHARD_MAP", conflicts_with_all = ["etcd_ca", "etcd_cert", "etcd_user"])]
    pub shard_map: Option<PathBuf>,

    /// Prefix of every etcd key this service writes.
    #[arg(long, env = "IDEMPOTENCY_ETCD_PREFIX", default_value = "/idempotency/")]
    pub etcd_prefix: String,

    /// PEM CA certificates that sign etcd's server certificates; required for https:// endpoints.
    #[arg(long, env = "IDEMPOTENCY_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,

    /// PEM client certificate presented to etcd (etcd --client-cert-auth).
    #[arg(long, env = "IDEMPOTENCY_ETCD_CERT", requires_all = ["etcd_key", "etcd_ca"])]
    pub etcd_cert: Option<PathBuf>,

    /// PEM private key of --etcd-cert.
    #[arg(long, env = "IDEMPOTENCY_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,

    /// etcd user, when etcd has authentication enabled.
    #[arg(long, env = "IDEMPOTENCY_ETCD_USER", requires = "etcd_password_file")]
    pub etcd_user: Option<String>,

    /// File holding the password of --etcd-user (a file, so it never shows in a process list).
    #[arg(long, env = "IDEMPOTENCY_ETCD_PASSWORD_FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,

    /// Time allowed to open a connection to an etcd member.
    #[arg(long, env = "IDEMPOTENCY_ETCD_CONNECT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "2s")]
    pub etcd_connect_timeout: Duration,

    /// Time allowed for one store request, retries included, when the caller's deadline is longer.
    #[arg(long, env = "IDEMPOTENCY_ETCD_REQUEST_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub etcd_request_timeout: Duration,

    /// etcd's --max-txn-ops (128 unless etcd sets it; deploy/etcd sets 1024): bounds the calls one etcd
    /// transaction carries. If etcd refuses that many, the coordinator logs it and sends fewer.
    #[arg(long, env = "IDEMPOTENCY_ETCD_MAX_TXN_OPS", default_value_t = Batching::default().max_txn_ops as u32,
          value_parser = clap::value_parser!(u32).range(4..=65536))]
    pub etcd_max_txn_ops: u32,

    /// etcd transactions in flight at once; while one is, the next goes when it is a fair share of a full one.
    #[arg(long, env = "IDEMPOTENCY_ETCD_BATCHES_IN_FLIGHT", default_value_t = Batching::default().in_flight as u32,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub etcd_batches_in_flight: u32,

    /// The --quota-backend-bytes etcd runs with (etcd's default: 2 GiB). Above 80% of it a warning is
    /// logged; etcd 3.6 and later report their own, which then counts.
    #[arg(long, env = "IDEMPOTENCY_ETCD_QUOTA_BYTES", default_value_t = DEFAULT_QUOTA_BYTES)]
    pub etcd_quota_bytes: u64,

    /// Lease of an attempt whose Begin sets no lease_ttl.
    #[arg(long, env = "IDEMPOTENCY_DEFAULT_LEASE_TTL", value_parser = humantime::parse_duration, default_value = "30s")]
    pub default_lease_ttl: Duration,

    /// Longest lease_ttl a Begin or Extend may ask for.
    #[arg(long, env = "IDEMPOTENCY_MAX_LEASE_TTL", value_parser = humantime::parse_duration, default_value = "1h")]
    pub max_lease_ttl: Duration,

    /// Longest a Begin may wait for another owner.
    #[arg(long, env = "IDEMPOTENCY_MAX_WAIT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub max_wait: Duration,

    /// How long finished (and abandoned) records are kept when a call sets no retention.
    #[arg(long, env = "IDEMPOTENCY_DEFAULT_RETENTION", value_parser = humantime::parse_duration, default_value = "24h")]
    pub default_retention: Duration,

    /// Longest retention a call may ask for; longer requests are capped to it.
    #[arg(long, env = "IDEMPOTENCY_MAX_RETENTION", value_parser = humantime::parse_duration, default_value = "7d")]
    pub max_retention: Duration,

    /// Largest Begin payload the coordinator fingerprints.
    #[arg(long, env = "IDEMPOTENCY_MAX_PAYLOAD_BYTES", default_value_t = 1024 * 1024)]
    pub max_payload_bytes: usize,

    /// Largest stored result or error (etcd's own request limit is 1.5 MiB by default).
    #[arg(long, env = "IDEMPOTENCY_MAX_RESULT_BYTES", default_value_t = 256 * 1024)]
    pub max_result_bytes: usize,

    /// Largest gRPC message the server decodes; must exceed the payload limit so oversize payloads get a clear error.
    #[arg(long, env = "IDEMPOTENCY_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Most coordinator calls in flight at once (waiting Begins included); more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "IDEMPOTENCY_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,

    /// Most bytes of coordinator requests held at once, counted twice (as received, and decoded) until
    /// each call answers; a request that would exceed it is refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "IDEMPOTENCY_MAX_REQUEST_BYTES_HELD", default_value_t = 256 * 1024 * 1024)]
    pub max_request_bytes_held: usize,

    /// Most Begins of one tenant waiting at once (default: half of --max-in-flight); more answer
    /// in_progress without waiting, so one tenant's waits cannot take every slot.
    #[arg(long, env = "IDEMPOTENCY_MAX_WAITS_PER_TENANT")]
    pub max_waits_per_tenant: Option<usize>,

    /// Memory for replaying finished records without an etcd request (0 turns the replay cache off).
    #[arg(long, env = "IDEMPOTENCY_REPLAY_CACHE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub replay_cache_bytes: u64,

    /// How often readiness checks that etcd answers.
    #[arg(long, env = "IDEMPOTENCY_HEALTH_CHECK_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
    pub health_check_interval: Duration,

    /// Time in-flight calls get to finish after SIGTERM before the process exits anyway.
    #[arg(long, env = "IDEMPOTENCY_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "20s")]
    pub shutdown_grace: Duration,

    /// Log format.
    #[arg(long, env = "IDEMPOTENCY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter (tracing-subscriber EnvFilter syntax), e.g. "info" or "idempotency_coordinator=debug".
    #[arg(long, env = "IDEMPOTENCY_LOG", default_value = "info")]
    pub log: String,

    /// OTLP/gRPC collector to export traces to (e.g. http://otel-collector:4317): a span per call,
    /// continuing the caller's traceparent, with its etcd transactions inside. Unset: no traces.
    #[arg(long, env = "IDEMPOTENCY_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Print the settings this process would serve with, as JSON, and exit (reads no files,
    /// binds nothing): for checking deployment manifests against the server.
    #[arg(long)]
    pub print_config: bool,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub health_listen: SocketAddr,
    /// None: plaintext gRPC.
    pub tls: Option<ServerTls>,
    pub auth: AuthConfig,
    pub reload_interval: Duration,
    pub store: StoreKind,
    /// How to reach etcd (with `store` etcd).
    pub etcd: EtcdConfig,
    pub limits: Limits,
    pub health_check_interval: Duration,
    pub shutdown_grace: Duration,
    pub max_message_bytes: usize,
    pub max_in_flight: usize,
    pub max_request_bytes_held: usize,
    pub max_waits_per_tenant: usize,
    pub replay_cache_bytes: u64,
    /// Callers of these tenants may use the admin service; empty: it is off.
    pub admin_tenants: Vec<String>,
    /// Set with --shard-map: records sharded over these etcd clusters
    /// instead of the one `etcd` names.
    pub sharded: Option<ShardedEtcd>,
}

/// etcd refuses requests above 1.5 MiB by default; a stored record must fit.
const ETCD_REQUEST_LIMIT: usize = 1536 * 1024;

impl ServeArgs {
    /// Checks the flags once, naming the flag at fault.
    pub fn validate(self) -> Result<Config, String> {
        let whole_seconds = |flag: &str, d: Duration| {
            if d.subsec_nanos() != 0 || d < MIN_LEASE_TTL {
                Err(format!("--{flag} must be whole seconds, at least {}s (got {d:?})", MIN_LEASE_TTL.as_secs()))
            } else {
                Ok(())
            }
        };
        whole_seconds("default-lease-ttl", self.default_lease_ttl)?;
        whole_seconds("max-lease-ttl", self.max_lease_ttl)?;
        if self.default_lease_ttl > self.max_lease_ttl {
            return Err("--default-lease-ttl must not exceed --max-lease-ttl".into());
        }
        if self.default_retention < Duration::from_secs(1) || self.default_retention > self.max_retention {
            return Err("--default-retention must be at least 1s and at most --max-retention".into());
        }
        if self.etcd_endpoints.iter().all(|e| e.trim().is_empty()) {
            return Err("--etcd-endpoints must name at least one etcd member".into());
        }
        if !self.etcd_prefix.starts_with('/') || !self.etcd_prefix.ends_with('/') {
            return Err(format!("--etcd-prefix must start and end with '/' (got {:?})", self.etcd_prefix));
        }
        if self.max_result_bytes == 0 || self.max_result_bytes > ETCD_REQUEST_LIMIT / 2 {
            return Err(format!(
                "--max-result-bytes must be between 1 and {} (half of etcd's default request limit)",
                ETCD_REQUEST_LIMIT / 2
            ));
        }
        if self.max_message_bytes <= self.max_payload_bytes.max(self.max_result_bytes) {
            return Err("--max-message-bytes must exceed --max-payload-bytes and --max-result-bytes".into());
        }
        for (flag, d) in [
            ("etcd-connect-timeout", self.etcd_connect_timeout),
            ("etcd-request-timeout", self.etcd_request_timeout),
            ("health-check-interval", self.health_check_interval),
            ("reload-interval", self.reload_interval),
        ] {
            if d.is_zero() {
                return Err(format!("--{flag} must be positive"));
            }
        }
        if self.max_in_flight == 0 {
            return Err("--max-in-flight must be at least 1".into());
        }
        // A request counts twice (buffered, then decoded): the largest must fit alone.
        if self.max_request_bytes_held < 2 * self.max_message_bytes {
            return Err("--max-request-bytes-held must be at least twice --max-message-bytes".into());
        }
        if self.max_waits_per_tenant == Some(0) {
            return Err("--max-waits-per-tenant must be at least 1".into());
        }
        let endpoints: Vec<String> =
            self.etcd_endpoints.iter().map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect();
        let https = endpoints.iter().filter(|e| e.starts_with("https://")).count();
        if https != 0 && https != endpoints.len() {
            return Err("--etcd-endpoints must be all https:// or all http://".into());
        }
        if (https != 0) != self.etcd_ca.is_some() {
            return Err("--etcd-ca is required with https:// --etcd-endpoints, and only with them".into());
        }
        let tls = self.server_tls()?;
        let tokens = self.tokens_file.clone().map(TokensFile::load).transpose()?;
        if !self.admin_tenants.is_empty() && tokens.is_none() && self.tls_client_ca.is_none() {
            return Err("--admin-tenants needs authentication (--tokens-file or --tls-client-ca): the admin service \
                        must know who calls it"
                .into());
        }
        for tenant in &self.admin_tenants {
            check_scope_name(tenant).map_err(|e| format!("--admin-tenants: {tenant:?} {e}"))?;
        }
        let client_files = self.etcd_cert.as_deref().zip(self.etcd_key.as_deref());
        let etcd_tls = etcd_tls(self.etcd_ca.as_deref(), client_files, etcd_files::flag)?;
        let user = self.etcd_user.as_deref().zip(self.etcd_password_file.as_deref());
        let credentials = etcd_credentials(user, etcd_files::flag)?;
        let etcd = EtcdConfig {
            endpoints,
            prefix: self.etcd_prefix,
            connect_timeout: self.etcd_connect_timeout,
            request_timeout: self.etcd_request_timeout,
            tls: etcd_tls,
            credentials,
            batching: Batching {
                max_txn_ops: self.etcd_max_txn_ops as usize,
                in_flight: self.etcd_batches_in_flight as usize,
            },
            quota_bytes: self.etcd_quota_bytes,
            shard: "default".into(),
        };
        let sharded = self.shard_map.as_deref().map(|path| shard_map_file::load(path, &etcd)).transpose()?;
        Ok(Config {
            listen: self.listen,
            metrics_listen: self.metrics_listen,
            health_listen: self.health_listen,
            tls,
            reload_interval: self.reload_interval,
            auth: AuthConfig {
                client_certificates: self.tls_client_ca.is_some(),
                tenant_uri_prefix: self.tenant_uri_prefix,
                tokens,
            },
            store: self.store,
            etcd,
            limits: Limits {
                default_lease_ttl: self.default_lease_ttl,
                max_lease_ttl: self.max_lease_ttl,
                max_wait: self.max_wait,
                default_retention: self.default_retention,
                max_retention: self.max_retention,
                max_payload_bytes: self.max_payload_bytes,
                max_result_bytes: self.max_result_bytes,
            },
            health_check_interval: self.health_check_interval,
            shutdown_grace: self.shutdown_grace,
            max_message_bytes: self.max_message_bytes,
            max_in_flight: self.max_in_flight,
            max_request_bytes_held: self.max_request_bytes_held,
            max_waits_per_tenant: self.max_waits_per_tenant.unwrap_or((self.max_in_flight / 2).max(1)),
            replay_cache_bytes: self.replay_cache_bytes,
            admin_tenants: self.admin_tenants,
            sharded,
        })
    }
}

impl ServeArgs {
    fn server_tls(&self) -> Result<Option<ServerTls>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        ServerTls::load(ServerTlsFiles {
            certificate_chain: cert.clone(),
            private_key: key.clone(),
            client_ca: self.tls_client_ca.clone(),
        })
        .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["test"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map_err(|e| e.to_string())?.serve.validate()
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse(&[]).expect("defaults validate");
        assert_eq!(config.limits.default_lease_ttl, Duration::from_secs(30));
        assert_eq!(config.limits.default_retention, Duration::from_secs(24 * 3600));
        assert_eq!(config.etcd.endpoints, ["http://127.0.0.1:2379"]);
    }

    #[test]
    fn bad_settings_name_the_flag() {
        assert!(parse(&["--default-lease-ttl", "1500ms"]).unwrap_err().contains("--default-lease-ttl"));
        assert!(parse(&["--default-lease-ttl", "2h"]).unwrap_err().contains("--max-lease-ttl"));
        assert!(parse(&["--etcd-prefix", "idem"]).unwrap_err().contains("--etcd-prefix"));
        assert!(parse(&["--max-result-bytes", "10000000"]).unwrap_err().contains("--max-result-bytes"));
    }

    #[test]
    fn security_flags_need_their_partners() {
        assert!(parse(&["--tls-cert", "c.pem"]).unwrap_err().contains("--tls-key"));
        assert!(parse(&["--tokens-file", "t"]).unwrap_err().contains("--tls-cert"));
        assert!(parse(&["--etcd-user", "u"]).unwrap_err().contains("--etcd-password-file"));
        assert!(parse(&["--etcd-endpoints", "https://a:2379"]).unwrap_err().contains("--etcd-ca"));
        assert!(parse(&["--etcd-ca", "ca.pem"]).unwrap_err().contains("--etcd-ca"));
        let missing = parse(&["--tls-cert", "/nonexistent/c.pem", "--tls-key", "k.pem"]).unwrap_err();
        assert!(missing.starts_with("--tls-cert: /nonexistent/c.pem"), "{missing}");
    }

    #[test]
    fn endpoints_split_on_commas() {
        let config = parse(&["--etcd-endpoints", "http://a:2379,http://b:2379"]).expect("valid");
        assert_eq!(config.etcd.endpoints, ["http://a:2379", "http://b:2379"]);
    }
}
