//! Heartbeats: when the gateway extends the lease of a request it forwarded,
//! and when it stops counting on that lease. The Python and Node helpers
//! (`heartbeat.py`, `heartbeat.js`) follow the same rule.
//!
//! A lease may have much less than its TTL left when it is handed over: a
//! Begin retried with its `request_id` (by a proxy or mesh between the
//! gateway and the coordinator) gets its own attempt back with the original
//! `lease_expires_at`, which may be a quarter of the TTL away. And the
//! coordinator's clock may not be the gateway's. So:
//!
//! - **Time left**, counted from when the call that answered (Begin or
//!   Extend) was *sent*, on the monotonic clock: `lease_expires_at` minus the
//!   gateway's wall clock when the answer came, at most the TTL (a replica
//!   clock ahead of ours says more than there is) and at least a quarter of
//!   it (the coordinator hands out no lease, and answers no Extend, with
//!   less: an answer that says less comes from a replica clock behind ours).
//!   Counting from the send makes the estimate short by the call's own
//!   duration: heartbeats come a little early, never late. A Begin that
//!   waited for another owner is counted from its send too, so its first
//!   heartbeat comes at once.
//! - **Heartbeat** a third of the time left after the send.
//! - **Each Extend's deadline** is half the time left when it is sent (at
//!   most [`CALL_TIMEOUT`]), so that a lost answer leaves time for another
//!   try; at least [`MIN_EXTEND_TIMEOUT`], for a last try, but never more
//!   than the time left: a short lease's Extend must not outlive it.
//! - **Failures** other than LEASE_LOST are retried every [`RETRY_PAUSE`]
//!   while time is left. Once it has run out without an Extend answering OK,
//!   the gateway stops heartbeating, as on LEASE_LOST; the Complete then
//!   says whether another attempt took over. An Extend that answers OK, even
//!   late, proves that none did: it would have been answered LEASE_LOST.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use tracing::warn;

use crate::gateway::coordinator::{CALL_TIMEOUT, CallError, Coordinator, RecordName};
use crate::gateway::routes::Route;

/// The shortest Extend deadline: one round trip and an etcd commit.
pub const MIN_EXTEND_TIMEOUT: Duration = Duration::from_millis(250);

/// The pause between a failed Extend and the next try.
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How much of a lease is left, counted from when the call that answered was
/// sent: `lease_expires_at` minus the wall clock `answered_at` when the answer
/// came, within a quarter of `ttl` and `ttl`. An unset timestamp counts as
/// the quarter.
pub fn lease_left(
    lease_expires_at: Option<&prost_types::Timestamp>,
    answered_at: SystemTime,
    ttl: Duration,
) -> Duration {
    let said = lease_expires_at
        .and_then(|at| SystemTime::try_from(*at).ok())
        .and_then(|at| at.duration_since(answered_at).ok())
        .unwrap_or(Duration::ZERO);
    said.clamp(ttl / 4, ttl)
}

/// A lease as the gateway counts it, on the monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub sent_at: Instant,
    pub ends_at: Instant,
}

impl Lease {
    /// The lease a call sent at `sent_at` was answered with: its
    /// `lease_expires_at`, read against the wall clock `answered_at` when
    /// the answer came.
    pub fn answered(
        sent_at: Instant,
        lease_expires_at: Option<&prost_types::Timestamp>,
        answered_at: SystemTime,
        ttl: Duration,
    ) -> Lease {
        Lease { sent_at, ends_at: sent_at + lease_left(lease_expires_at, answered_at, ttl) }
    }

    /// When to send the next Extend: a third of the time left after the send.
    pub fn heartbeat_at(&self) -> Instant {
        self.sent_at + (self.ends_at - self.sent_at) / 3
    }

    /// The deadline of an Extend sent at `now`: half the time left, within
    /// [`MIN_EXTEND_TIMEOUT`] and `configured`, and never past the time left.
    pub fn extend_timeout(&self, now: Instant, configured: Duration) -> Duration {
        let left = self.ends_at.saturating_duration_since(now);
        (left / 2).max(MIN_EXTEND_TIMEOUT).min(configured).min(left)
    }

    /// Whether the time left has run out: without an Extend answered OK,
    /// another attempt may have taken over.
    pub fn over(&self, now: Instant) -> bool {
        now >= self.ends_at
    }

    fn retry_pause(&self, now: Instant) -> Duration {
        self.ends_at.saturating_duration_since(now).min(RETRY_PAUSE)
    }
}

/// How long after `now` the first Extend goes out for a Begin sent at
/// `sent_at` and answered with `lease_expires_at` when the wall clock said
/// `answered_at`; zero means at once.
pub fn first_heartbeat(
    lease_expires_at: Option<&prost_types::Timestamp>,
    sent_at: Instant,
    ttl: Duration,
    answered_at: SystemTime,
    now: Instant,
) -> Duration {
    Lease::answered(sent_at, lease_expires_at, answered_at, ttl).heartbeat_at().saturating_duration_since(now)
}

/// Extends `lease` by the rule above until dropped, so a slow service keeps
/// its attempt; stops once the attempt is lost or its time ran out, which the
/// Complete will report.
pub fn heartbeat(
    coordinator: Coordinator,
    route: Arc<Route>,
    namespace: String,
    key: String,
    token: u64,
    lease: Lease,
) -> AbortOnDropHandle<()> {
    AbortOnDropHandle::new(tokio::spawn(async move {
        let name = RecordName { route: &route, namespace: &namespace, key: &key };
        let mut lease = lease;
        loop {
            tokio::time::sleep_until(lease.heartbeat_at()).await;
            match extend(&coordinator, &name, token, lease).await {
                Some(renewed) => lease = renewed,
                None => return,
            }
        }
    }))
}

/// The lease an Extend renewed, tried again while time is left; `None` once
/// the attempt is lost or its time ran out.
async fn extend(coordinator: &Coordinator, name: &RecordName<'_>, token: u64, lease: Lease) -> Option<Lease> {
    let route = name.route;
    loop {
        let sent_at = Instant::now();
        match coordinator.extend(name, token, lease.extend_timeout(sent_at, CALL_TIMEOUT)).await {
            Ok(expires) => return Some(Lease::answered(sent_at, expires.as_ref(), SystemTime::now(), route.lease_ttl)),
            Err(CallError::LeaseLost) => {
                warn!(route = %route.name, token, "lease lost while the service worked");
                return None;
            }
            Err(error) if lease.over(Instant::now()) => {
                warn!(route = %route.name, token, ?error, "the lease ran out before an Extend succeeded; another attempt may take over");
                return None;
            }
            Err(error) => warn!(route = %route.name, ?error, "heartbeat failed; trying again"),
        }
        tokio::time::sleep(lease.retry_pause(Instant::now())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WALL: Duration = Duration::from_secs(1_800_000_000);

    fn at(offset_ms: i64) -> prost_types::Timestamp {
        let wall = SystemTime::UNIX_EPOCH + WALL;
        let offset = Duration::from_millis(offset_ms.unsigned_abs());
        (if offset_ms >= 0 { wall + offset } else { wall - offset }).into()
    }

    fn answered() -> SystemTime {
        SystemTime::UNIX_EPOCH + WALL
    }

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_full_lease_is_extended_a_third_of_its_ttl_after_the_send() {
        let sent = Instant::now();
        assert_eq!(first_heartbeat(Some(&at(30_000)), sent, secs(30), answered(), sent), secs(10));
        assert_eq!(first_heartbeat(Some(&at(30_000)), sent, secs(30), answered(), sent + secs(4)), secs(6));
    }

    /// Issue 26 item 2: a handed-back lease with a quarter of its TTL left.
    /// The gateway used to extend a third of the TTL (10 s) after the answer.
    #[test]
    fn a_handed_back_lease_with_a_quarter_left_is_extended_within_that_quarter() {
        let sent = Instant::now();
        assert_eq!(first_heartbeat(Some(&at(7_500)), sent, secs(30), answered(), sent), Duration::from_millis(2_500));
        let lease = Lease::answered(sent, Some(&at(7_500)), answered(), secs(30));
        assert_eq!(lease.ends_at, sent + Duration::from_millis(7_500));
    }

    #[test]
    fn the_time_left_is_counted_from_the_send_so_a_slow_answer_makes_it_earlier() {
        let sent = Instant::now();
        assert_eq!(Lease::answered(sent, Some(&at(9_000)), answered(), secs(30)).ends_at, sent + secs(9));
        assert_eq!(first_heartbeat(Some(&at(9_000)), sent, secs(30), answered(), sent + secs(2)), secs(1));
        // A Begin that waited longer than a third of it: the first Extend goes at once.
        assert_eq!(first_heartbeat(Some(&at(30_000)), sent, secs(30), answered(), sent + secs(12)), Duration::ZERO);
    }

    #[test]
    fn a_skewed_replica_clock_is_bounded_by_the_ttl_and_a_quarter_of_it() {
        // A replica 60 s ahead says 90 s are left of a 30 s lease.
        assert_eq!(lease_left(Some(&at(90_000)), answered(), secs(30)), secs(30));
        // 60 s behind, it says the lease ended 30 s ago: a quarter is counted.
        assert_eq!(lease_left(Some(&at(-30_000)), answered(), secs(30)), Duration::from_millis(7_500));
        assert_eq!(lease_left(None, answered(), secs(2)), Duration::from_millis(500));
    }

    #[test]
    fn an_extend_deadline_is_half_the_time_left_at_most_the_configured_timeout() {
        let sent = Instant::now();
        let lease = Lease::answered(sent, Some(&at(30_000)), answered(), secs(30));
        assert_eq!(lease.extend_timeout(sent + secs(10), secs(10)), secs(10));
        assert_eq!(lease.extend_timeout(sent + secs(10), secs(5)), secs(5));
        assert_eq!(lease.extend_timeout(sent + secs(24), secs(10)), secs(3));
        // A last try, when little is left, gets a round trip, but not past the lease.
        assert_eq!(lease.extend_timeout(sent + Duration::from_millis(29_600), secs(10)), MIN_EXTEND_TIMEOUT);
        assert_eq!(lease.extend_timeout(sent + Duration::from_millis(29_900), secs(10)), Duration::from_millis(100));
        assert_eq!(lease.extend_timeout(sent + secs(31), secs(10)), Duration::ZERO);
    }

    /// Issue 27, item 6: on the shortest lease (2 s), every Extend the
    /// heartbeat sends, first and retries, has a deadline within the time
    /// left, so a hung call cannot outlast the lease it is meant to keep.
    #[test]
    fn on_short_leases_every_extend_deadline_is_within_the_time_left() {
        for ttl in [secs(2), secs(3), secs(5)] {
            let sent = Instant::now();
            // Full, handed back with a quarter, and the coordinator's clock behind.
            for said in [ttl.as_millis() as i64, ttl.as_millis() as i64 / 4, -1_000] {
                let lease = Lease::answered(sent, Some(&at(said)), answered(), ttl);
                let mut now = lease.heartbeat_at();
                while !lease.over(now) {
                    let left = lease.ends_at - now;
                    let deadline = lease.extend_timeout(now, CALL_TIMEOUT);
                    assert!(deadline <= left, "{ttl:?}, {said} ms: {deadline:?} > {left:?} left");
                    assert!(deadline < left || left <= MIN_EXTEND_TIMEOUT, "{ttl:?}: {deadline:?} of {left:?}");
                    now += RETRY_PAUSE;
                }
            }
        }
    }

    #[test]
    fn the_lease_is_over_when_its_time_left_has_run_out() {
        let sent = Instant::now();
        let lease = Lease::answered(sent, Some(&at(2_000)), answered(), secs(4));
        assert!(!lease.over(sent + Duration::from_millis(1_999)));
        assert!(lease.over(sent + secs(2)));
        assert_eq!(lease.retry_pause(sent + Duration::from_millis(1_950)), Duration::from_millis(50));
        assert_eq!(lease.retry_pause(sent + secs(1)), RETRY_PAUSE);
    }
}
