//! Shared etcd leases.
//!
//! Granting a lease is an etcd round trip and a raft proposal. Records whose
//! leases should end at about the same time can share one lease (as the
//! Kubernetes API server does for events), so a Begin normally finds its lease
//! here instead of granting one. A lease is handed out only if it ends no
//! earlier than wanted and at most `slack` later; the record's own deadline,
//! not its lease, is what the coordinator tells callers and enforces.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::core::limits::MIN_LEASE_TTL;
use crate::core::store::LeaseWant;

/// The TTL to grant for a lease that lands inside `want`'s window: aimed at
/// its middle, in the whole seconds etcd deals in.
pub fn grant_ttl_secs(want: LeaseWant) -> i64 {
    let aim = (want.lasts + want.slack / 2).as_millis() as i64;
    ((aim + 999) / 1000).max(MIN_LEASE_TTL.as_secs() as i64)
}

/// How much longer than wanted a pooled lease must be known to last: etcd
/// starts a lease's countdown when its leader grants it, which we measure from
/// just before sending the grant, so only rate differences between the two
/// clocks are left to cover.
const MARGIN: Duration = Duration::from_millis(500);

/// Leases granted by this replica, by the instant before which etcd cannot
/// have expired them. Monotonic instants, not wall-clock times: a wall clock
/// stepped back would otherwise make every pooled lease look longer-lived
/// than it is, and a record could get a lease that ends before the record
/// does.
#[derive(Debug, Default)]
pub struct LeasePool {
    // A std Mutex, not a tokio one: nothing awaits while it is held.
    by_expiry: Mutex<BTreeMap<Instant, i64>>,
}

impl LeasePool {
    /// A pooled lease that lasts from `until` on (plus the margin) but ends
    /// no more than `slack` after it.
    pub fn find(&self, until: Instant, slack: Duration, now: Instant) -> Option<i64> {
        let mut leases = self.by_expiry.lock().expect("lease pool lock poisoned");
        // Leases that have ended are useless; forget them as we go (usually
        // none: this runs on every write, so no tree is rebuilt for it).
        while leases.first_key_value().is_some_and(|(expiry, _)| *expiry < now) {
            leases.pop_first();
        }
        leases.range(until + MARGIN..=until + slack).next().map(|(_, id)| *id)
    }

    pub fn insert(&self, expires_at: Instant, lease_id: i64) {
        self.by_expiry.lock().expect("lease pool lock poisoned").insert(expires_at, lease_id);
    }

    /// Forgets every lease, e.g. after etcd said one no longer exists (its
    /// data was restored from a backup, or the lease was revoked by hand).
    pub fn clear(&self) {
        self.by_expiry.lock().expect("lease pool lock poisoned").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLACK: Duration = Duration::from_secs(2);

    #[test]
    fn a_lease_is_reused_only_inside_its_window() {
        let pool = LeasePool::default();
        let now = Instant::now();
        let at = |ms: u64| now + Duration::from_millis(ms);
        pool.insert(at(10_500), 7);
        assert_eq!(pool.find(at(10_000), SLACK, now), Some(7));
        assert_eq!(pool.find(at(8_500), SLACK, now), Some(7));
        // Would end too early, or too close to the wanted end.
        assert_eq!(pool.find(at(10_501), SLACK, now), None);
        assert_eq!(pool.find(at(10_100), SLACK, now), None);
        // Would outlive the wanted time by more than the slack.
        assert_eq!(pool.find(at(8_499), SLACK, now), None);
    }

    #[test]
    fn ended_leases_are_dropped() {
        let pool = LeasePool::default();
        let now = Instant::now();
        pool.insert(now + Duration::from_secs(1), 1);
        let later = now + Duration::from_secs(2);
        assert_eq!(pool.find(now, SLACK, later), None);
        assert!(pool.by_expiry.lock().unwrap().is_empty());
    }

    #[test]
    fn grants_land_inside_the_window() {
        for lasts_ms in [5_000, 5_001, 86_399_877, 100] {
            let want = LeaseWant { lasts: Duration::from_millis(lasts_ms), slack: SLACK };
            let expiry = grant_ttl_secs(want) as u64 * 1000;
            assert!(expiry >= lasts_ms + MARGIN.as_millis() as u64, "{expiry} ends too soon for {lasts_ms}");
            assert!(
                expiry <= lasts_ms + SLACK.as_millis() as u64 || lasts_ms < 2_000,
                "{expiry} too late for {lasts_ms}"
            );
        }
    }
}
