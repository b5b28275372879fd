//! TLS on the gRPC port: its configuration, loaded from files and reloaded
//! when they change ([`server`]), and the connections accepted with it
//! ([`incoming`]). What the etcd client presents is the etcd store's
//! ([`crate::store::etcd::config`]).

pub mod incoming;
pub mod server;
