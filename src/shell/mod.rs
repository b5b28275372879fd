//! The process shell: settings ([`config`]), the server that wires the
//! layers together and drains on shutdown ([`server`], [`shutdown`]),
//! health ([`health`]), reflection ([`reflection`]), Prometheus
//! ([`metrics`]), logs ([`telemetry`]), who is calling ([`auth`]), TLS on the
//! gRPC port ([`tls`]) and files that reload without a restart ([`reload`]).

pub mod auth;
pub mod config;
pub mod etcd_files;
pub mod health;
pub mod metrics;
pub mod nodelay;
pub mod print_config;
pub mod reflection;
pub mod reload;
pub mod server;
pub mod shard_map_file;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
