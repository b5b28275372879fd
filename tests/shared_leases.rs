//! Shared etcd leases under a wall clock that is stepped back (NTP fixing a
//! clock that ran ahead): no record may get a lease that ends before the
//! record's own expiry, or etcd deletes it early and a completed side effect
//! runs again.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::{Etcd, etcd_config};
use idempotency_coordinator::core::clock::{Clock, SystemClock};
use idempotency_coordinator::core::command::{BeginCommand, CompleteCommand};
use idempotency_coordinator::core::coordinator::{Coordinator, Settings};
use idempotency_coordinator::core::limits::Limits;
use idempotency_coordinator::core::outcome::BeginOutcome;
use idempotency_coordinator::core::record::{CallResult, RecordId, ResultBody};
use idempotency_coordinator::store::etcd::EtcdStore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The wall clock plus an offset the test sets.
#[derive(Default)]
struct SteppedClock {
    offset_ms: AtomicI64,
}

impl Clock for SteppedClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms() + self.offset_ms.load(Ordering::Relaxed)
    }
}

const PREFIX: &str = "/shared-leases/";

fn id(key: &str) -> RecordId {
    RecordId { tenant: "default".into(), namespace: "ns".into(), key: key.into() }
}

/// Begins and completes `key`, kept for `retention`; its expiry (Unix ms).
async fn finish(coordinator: &Coordinator<EtcdStore>, key: &str, retention: Duration) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let begin = BeginCommand {
        id: id(key),
        fingerprint: [1; 32],
        members: vec![],
        lease_ttl: Duration::from_secs(5),
        wait: Duration::ZERO,
        owner: "test".into(),
        request_id: String::new(),
    };
    let BeginOutcome::Acquired(acquired) = coordinator.begin(&begin, deadline).await.unwrap() else {
        panic!("a new key is acquired")
    };
    let result = CallResult { body: ResultBody::ResourceRef("r".into()), content_type: String::new(), status_code: 0 };
    let complete = CompleteCommand { id: id(key), fencing_token: acquired.fencing_token, result, retention };
    coordinator.complete(complete, deadline).await.unwrap().expires_at_ms
}

#[tokio::test]
async fn a_wall_clock_stepped_back_never_gives_a_record_a_shorter_lease() {
    let etcd = Etcd::start().await;
    let clock = Arc::new(SteppedClock::default());
    let config = etcd_config(&etcd, PREFIX);
    let store = Arc::new(EtcdStore::connect(&config).await.unwrap());
    let limits = Limits {
        default_lease_ttl: Duration::from_secs(5),
        max_lease_ttl: Duration::from_secs(60),
        max_wait: Duration::from_secs(10),
        default_retention: Duration::from_secs(60),
        max_retention: Duration::from_secs(3600),
        max_payload_bytes: 1024,
        max_result_bytes: 1024,
    };
    let settings = Settings {
        limits,
        replay_cache_bytes: 0,
        request_timeout: Duration::from_secs(5),
        max_waits_per_tenant: 64,
        replay_clock_margin: idempotency_coordinator::core::coordinator::REPLAY_CLOCK_MARGIN,
    };
    let coordinator = Coordinator::new(store, clock.clone(), settings, CancellationToken::new());

    // The clock runs 30 s ahead while a record kept for 2 s gets a lease
    // (truly about 3 s long; on the fast clock it looks like it ends 33 s out).
    clock.offset_ms.store(30_000, Ordering::Relaxed);
    finish(&coordinator, "early", Duration::from_secs(2)).await;
    // NTP steps the clock back; records kept for 32 s now want leases ending
    // about where the first one seemed to end.
    clock.offset_ms.store(0, Ordering::Relaxed);
    let mut client = etcd_client::Client::connect([&etcd.client_url], None).await.unwrap();
    for i in 0..5 {
        let key = format!("later-{i}");
        let expires_at_ms = finish(&coordinator, &key, Duration::from_secs(32)).await;
        let stored = client.get(format!("{PREFIX}default/ns/{key}/record"), None).await.unwrap();
        let lease = stored.kvs()[0].lease();
        let left = client.lease_time_to_live(lease, None).await.unwrap().ttl();
        let needed = (expires_at_ms - SystemClock.now_ms()) / 1000;
        assert!(left >= needed, "{key}: its lease ends in {left} s, the record in {needed} s");
    }
}
