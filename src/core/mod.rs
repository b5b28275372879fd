//! The core: the state machine of DESIGN.md in the coordinator's own types,
//! with no wire format and no etcd in it.
//!
//! - [`record`], [`command`], [`outcome`]: what a record is, what callers ask,
//!   what they are told. [`limits`]: the bounds requests are held to.
//! - [`decide`]: the decisions, as pure functions of a snapshot and the time.
//! - [`coordinator`]: the apply loops over a [`store::RecordStore`].
//! - [`store`]: the narrow trait every store implements.
//! - [`cache`]: per-replica replay and attempt caches; [`wait_shares`]: each
//!   tenant's share of waiting Begins.
//! - [`fingerprint`] and [`canonical_json`]: request fingerprints.
//! - [`clock`]: the time the core and stores read; [`error`]: what can go wrong.

pub mod cache;
pub mod canonical_json;
pub mod clock;
pub mod command;
pub mod coordinator;
pub mod decide;
pub mod error;
pub mod fingerprint;
pub mod limits;
pub mod outcome;
pub mod record;
pub mod store;
pub mod wait_shares;
