//! The implementations of [`crate::core::store::RecordStore`]: [`etcd`], the
//! store of every deployment, and [`memory`], one process's memory for
//! local development and tests.

pub mod etcd;
pub mod memory;
pub mod sharded;
