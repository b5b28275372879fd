//! Persistence in etcd: the key layout, shared leases, and the transactions.

pub mod etcd;
pub mod keys;
pub mod leases;

pub use etcd::{EtcdStore, Expect, RecordLease, Snapshot, Versioned, Write, Written, now_ms};
pub use keys::RecordKeys;
pub use leases::LeaseWant;
