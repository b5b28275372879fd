//! How close etcd is to its quota. etcd refuses every write once its backend
//! reaches `--quota-backend-bytes` (the NOSPACE alarm), which must never be
//! the first sign: every health check reads the backend's size, reports it
//! with the quota, and logs a warning above [`WARN_RATIO`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::StatusResponse;
use tracing::warn;

/// etcd's backend size in bytes (a Prometheus gauge, by `shard`).
pub const DB_SIZE: &str = "idempotency_store_db_size_bytes";
/// The part of it holding data; the rest is free pages that only a
/// defragmentation returns (a gauge, by `shard`).
pub const DB_IN_USE: &str = "idempotency_store_db_in_use_bytes";
/// The backend size at which etcd stops taking writes (a gauge, by `shard`).
pub const DB_QUOTA: &str = "idempotency_store_db_quota_bytes";
/// Above this share of the quota a warning is logged, as the
/// IdempotencyEtcdNearQuota alert does (deploy/monitoring).
pub const WARN_RATIO: f64 = 0.8;
/// At most one warning per shard this often, while it stays above.
const WARN_EVERY: Duration = Duration::from_secs(300);

pub struct SpaceReport {
    shard: String,
    /// The quota etcd runs with, when etcd does not say (before 3.6).
    configured_quota: u64,
    last_warning: Mutex<Option<Instant>>,
}

impl SpaceReport {
    pub fn new(shard: &str, configured_quota: u64) -> Self {
        Self { shard: shard.to_owned(), configured_quota, last_warning: Mutex::new(None) }
    }

    pub fn observe(&self, status: &StatusResponse) {
        let size = status.db_size().max(0) as u64;
        let quota = match status.db_size_quota() {
            reported if reported > 0 => reported as u64,
            _ => self.configured_quota,
        };
        metrics::gauge!(DB_SIZE, "shard" => self.shard.clone()).set(size as f64);
        metrics::gauge!(DB_IN_USE, "shard" => self.shard.clone()).set(status.raft_used_db_size().max(0) as f64);
        metrics::gauge!(DB_QUOTA, "shard" => self.shard.clone()).set(quota as f64);
        if (size as f64) < quota as f64 * WARN_RATIO {
            return;
        }
        let mut last = self.last_warning.lock().expect("not poisoned");
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            warn!(
                shard = %self.shard,
                db_size_bytes = size,
                quota_bytes = quota,
                "etcd's backend is over {:.0}% of its quota; compact and defragment it, or add a shard, before it \
                 refuses writes (deploy/README.md, \"Capacity\")",
                WARN_RATIO * 100.0
            );
        }
    }
}
