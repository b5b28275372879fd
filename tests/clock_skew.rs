//! Replicas on hosts whose wall clocks are wrong by more than a lease: real
//! coordinator processes under libfaketime on one real etcd. Ownership and
//! retention are etcd's to decide (its lock and retention leases), so a clock
//! running ahead takes over nothing early and treats no finished record as
//! new, and a clock running behind does not keep a freed record waiting.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::process::{START_WITHIN, coordinator_binary, serve_command};
use common::*;
use idempotency_coordinator::proto::v1::{self, begin_response::Outcome};
use tonic_health::pb::health_check_response::ServingStatus;

/// The lease the owner takes, and how far the skewed replicas are off: the
/// lease and a few seconds more, ahead and behind.
const LEASE_TTL_SECS: i64 = 2;
const SKEW_SECS: i64 = LEASE_TTL_SECS + 4;

struct Replica {
    child: Child,
    url: String,
}

impl Replica {
    async fn start(etcd: &Etcd, skew_secs: i64) -> Replica {
        let port = free_port();
        let child = serve_command(&coordinator_binary(), port, &etcd.client_url, skew_secs, &["--log", "warn"])
            .stdout(Stdio::null())
            .spawn()
            .expect("the coordinator starts");
        // Made before waiting, so that it is stopped if the wait fails.
        let replica = Replica { child, url: format!("http://127.0.0.1:{port}") };
        wait_for_health(&replica.url, "readiness", ServingStatus::Serving, START_WITHIN).await;
        replica
    }

    async fn client(&self) -> Client {
        v1::coordinator_service_client::CoordinatorServiceClient::new(connect_when_up(&self.url).await)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_skewed_clocks_take_over_nothing_early_and_forget_nothing_early() {
    let etcd = Etcd::start().await;
    let (right, ahead, behind) =
        tokio::join!(Replica::start(&etcd, 0), Replica::start(&etcd, SKEW_SECS), Replica::start(&etcd, -SKEW_SECS));
    let (mut right, mut ahead, mut behind) = (right.client().await, ahead.client().await, behind.client().await);

    // The skew is real: each replica tells deadlines on its own clock.
    let probe = |key: &str| begin_request(key, "probe", LEASE_TTL_SECS);
    let told = |outcome: Outcome| acquired(outcome).lease_expires_at.map(|t| t.seconds * 1000).unwrap_or_default();
    let (before, on_ahead, on_behind) =
        (now_ms(), told(begin(&mut ahead, probe("probe-a")).await), told(begin(&mut behind, probe("probe-b")).await));
    let lease_ms = LEASE_TTL_SECS * 1000;
    assert!(on_ahead - before >= lease_ms + SKEW_SECS * 1000 - 1_500, "the fast replica is not ahead");
    assert!(on_behind - before <= lease_ms - SKEW_SECS * 1000 + 1_500, "the slow replica is not behind");

    // An owner on the right clock. The fast replica sees its deadline as
    // long past; it keeps asking and must not acquire before the deadline.
    let owner = acquired(begin(&mut right, begin_request("charge", "cart", LEASE_TTL_SECS)).await);
    let deadline_ms = owner.lease_expires_at.as_ref().map(|t| t.seconds * 1000 + t.nanos as i64 / 1_000_000).unwrap();
    let taken_over = loop {
        match begin(&mut ahead, begin_request("charge", "cart", 30)).await {
            Outcome::InProgress(busy) => {
                assert_eq!(busy.attempt, 1);
                assert!(now_ms() < deadline_ms + 10_000, "the lock was never freed");
            }
            Outcome::Acquired(second) => break second,
            other => panic!("expected in_progress, then a takeover: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let taken_at = now_ms();
    assert!(taken_at >= deadline_ms, "the fast replica took over {} ms before the deadline", deadline_ms - taken_at);
    assert_eq!(taken_over.attempt, 2);
    let late = right.complete(complete_request("charge", owner.fencing_token, "late")).await.unwrap_err();
    assert_eq!(reason(&late), "LEASE_LOST");

    // A record kept for 3 s: on the fast clock it "expired" almost at once.
    // While etcd holds it, every replica replays it and none starts anew.
    let mut done = complete_request("charge", taken_over.fencing_token, "paid");
    done.retention = Some(secs(3));
    behind.complete(done).await.unwrap();
    for client in [&mut ahead, &mut right, &mut behind] {
        match begin(client, begin_request("charge", "cart", 30)).await {
            Outcome::Completed(replay) => assert_eq!(replay.attempt, 2),
            other => panic!("a completed record was treated as new: {other:?}"),
        }
    }

    // A freed lock is taken over by the slow replica as soon as etcd frees
    // it, not when its own clock reaches the deadline (6 s later).
    let owner = acquired(begin(&mut right, begin_request("refund", "cart", LEASE_TTL_SECS)).await);
    let mut waiting = begin_request("refund", "cart", 30);
    waiting.wait = Some(secs(10));
    let started = std::time::Instant::now();
    let second = acquired(begin(&mut behind, waiting).await);
    assert!(second.fencing_token > owner.fencing_token);
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(lease_ms as u64 + 3_500), "waited {waited:?} for its own clock");
}

/// Issue 26, 1: a Begin retried with its request_id on a replica whose clock
/// is 10 s slow was handed the attempt back with its lease already run out
/// (the slow clock thought plenty was left), and another caller acquired it
/// 0.95 s later: two owners. Now a hand-back renews the lock in etcd for
/// the retry's TTL, or the retry takes the lapsed attempt over; either way
/// it owns the key for its TTL from when it asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_a_slow_replica_owns_its_attempt_for_its_whole_ttl() {
    const TTL: i64 = 4;
    let etcd = Etcd::start().await;
    let (right, slow) = tokio::join!(Replica::start(&etcd, 0), Replica::start(&etcd, -10));
    let (mut right, mut slow) = (right.client().await, slow.client().await);
    let mut first = begin_request("retried", "cart", TTL);
    first.request_id = "7c1d-retried".into();
    let owner = acquired(begin(&mut right, first.clone()).await);

    tokio::time::sleep(Duration::from_millis(4_300)).await;
    let retried_at = now_ms();
    let retry = acquired(begin(&mut slow, first).await);
    assert!(
        retry.fencing_token == owner.fencing_token || retry.recovered.is_some(),
        "a new attempt over the old one says what it recovered: {retry:?}"
    );

    let mut other = begin_request("retried", "cart", TTL);
    other.request_id = "someone-else".into();
    other.wait = Some(secs(10));
    let second = acquired(begin(&mut right, other).await);
    let taken_at = now_ms();
    assert!(second.fencing_token > retry.fencing_token);
    assert!(
        taken_at >= retried_at + TTL * 1000,
        "another caller acquired {} ms after the retry was handed a {TTL} s lease",
        taken_at - retried_at
    );
}
