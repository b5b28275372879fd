//! An idempotency coordinator: services in any language ask it over gRPC
//! before performing a side effect that must happen once per client intent,
//! and it answers "you own this attempt", "already done, here is the
//! outcome", "someone else is on it", or "this key was used for a different
//! request". All state lives in etcd; replicas are stateless.
//!
//! The layers, from the wire inwards:
//! - [`service`]: the gRPC edge — decode, validate ([`request`]), call the
//!   coordinator, encode. [`codec`] and [`oversize`] make undecodable and
//!   oversize requests INVALID_ARGUMENT;
//!   [`error`] maps every failure to a status in one table.
//! - [`coordinator`]: the state machine of DESIGN.md (Begin, Complete, Fail,
//!   Extend, Lookup, waiting), storage details kept out.
//! - [`store`]: etcd — the key layout, shared leases, conditional transactions
//!   committed in groups. [`cache`]: per-replica replay and attempt caches.
//! - [`fingerprint`] and [`canonical_json`]: request fingerprints (SHA-256 of
//!   raw bytes or of RFC 8785 canonical JSON).
//! - [`auth`]: who is calling — client certificates and bearer tokens name
//!   the caller's tenant when authentication is on; [`tls`] serves the gRPC
//!   port over TLS; [`reload`] picks up renewed certificates and tokens.
//! - The process shell: [`config`], [`telemetry`], [`health`], [`metrics`] and
//!   [`grpc_metrics`] (Prometheus), [`overload`]
//!   (load shedding) — steps around each call built on [`middleware`] —
//!   [`shutdown`],
//!   and [`server::run`], which tests call with a port-0 listener.
//! - [`cli`]: the command-line client in the same binary.

pub mod auth;
pub mod cache;
pub mod canonical_json;
pub mod cli;
pub mod codec;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod fingerprint;
pub mod grpc_metrics;
pub mod health;
pub mod metrics;
pub mod middleware;
pub mod overload;
pub mod oversize;
pub mod proto;
pub mod reload;
pub mod request;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tls;
