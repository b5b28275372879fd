//! An idempotency coordinator: services in any language ask it over gRPC
//! before performing a side effect that must happen once per client intent,
//! and it answers "you own this attempt", "already done, here is the
//! outcome", "someone else is on it", or "this key was used for a different
//! request". All state lives in etcd; replicas are stateless.
//!
//! The layers, from the wire inwards; each imports only the ones below it:
//! - [`shell`]: the process — settings, the server that wires everything
//!   together ([`shell::server::run`], which tests call with a port-0
//!   listener), health, metrics, logs, authentication, TLS, reloads, drain.
//! - [`grpc`]: the gRPC edge — handlers, validation into commands, tenant
//!   scoping, the one error-to-status table, the codec and the tower layers
//!   around each call. [`proto`]: the generated messages and their
//!   conversion to and from the core's types.
//! - [`store`]: the implementations of the core's store trait — [`store::etcd`]
//!   (key layout, stored format, shared leases, group commit) and
//!   [`store::memory`] (one process, for development and tests).
//! - [`core`]: the state machine of DESIGN.md in its own types — decisions,
//!   apply loops, caches, fingerprints, the [`core::store::RecordStore`]
//!   trait and the clock. No wire format and no etcd.
//!
//! [`cli`] is the command-line client in the same binary, a gRPC caller like
//! any other; so is [`gateway`], the HTTP front door that enforces the
//! `Idempotency-Key` header in front of any HTTP service.

pub mod cli;
pub mod core;
pub mod gateway;
pub mod grpc;
pub mod proto;
pub mod shell;
pub mod store;
