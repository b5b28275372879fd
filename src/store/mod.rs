//! Persistence in etcd: the key layout, shared leases, the transactions, and
//! group commit of concurrent transactions.

pub mod batch;
pub mod etcd;
pub mod keys;
pub mod leases;

pub use etcd::{EtcdStore, Expect, RecordLease, Snapshot, Versioned, Write, Written, now_ms};
pub use keys::RecordKeys;
pub use leases::LeaseWant;
