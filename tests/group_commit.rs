//! Group commit and the per-replica caches, seen from the store's counters:
//! concurrent calls share etcd transactions within etcd's limits, every call
//! keeps its own answer, replays cost no etcd request, and a Complete on the
//! replica that handed out the attempt costs one.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::Etcd;
use idempotency_coordinator::core::clock::SystemClock;
use idempotency_coordinator::core::command::{BeginCommand, CompleteCommand};
use idempotency_coordinator::core::coordinator::{Coordinator, Settings};
use idempotency_coordinator::core::error::Error;
use idempotency_coordinator::core::limits::Limits;
use idempotency_coordinator::core::outcome::BeginOutcome as Outcome;
use idempotency_coordinator::core::record::{CallResult, RecordId, ResultBody};
use idempotency_coordinator::store::etcd::EtcdStore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn limits() -> Limits {
    Limits {
        default_lease_ttl: Duration::from_secs(30),
        max_lease_ttl: Duration::from_secs(3600),
        max_wait: Duration::from_secs(60),
        default_retention: Duration::from_secs(3600),
        max_retention: Duration::from_secs(86_400),
        max_payload_bytes: 1 << 20,
        max_result_bytes: 1 << 18,
    }
}

async fn coordinator(etcd: &Etcd) -> (Arc<Coordinator<EtcdStore>>, Arc<EtcdStore>) {
    let config = common::etcd_config(etcd, "/group-commit/");
    let store = Arc::new(EtcdStore::connect(&config).await.expect("etcd client"));
    let settings = Settings {
        limits: limits(),
        replay_cache_bytes: 1 << 20,
        request_timeout: config.request_timeout,
        max_waits_per_tenant: 1024,
        replay_clock_margin: idempotency_coordinator::core::coordinator::REPLAY_CLOCK_MARGIN,
    };
    let coordinator =
        Arc::new(Coordinator::new(store.clone(), Arc::new(SystemClock), settings, CancellationToken::new()));
    // Replays are served from memory only while the feed of forgotten
    // records is heard from; its first progress answer comes at once.
    coordinator.follow_forgets();
    tokio::time::sleep(Duration::from_millis(500)).await;
    (coordinator, store)
}

fn begin_command(key: &str, fingerprint: u8) -> BeginCommand {
    BeginCommand {
        id: RecordId { tenant: "default".into(), namespace: "ns".into(), key: key.into() },
        fingerprint: [fingerprint; 32],
        members: vec![],
        lease_ttl: Duration::from_secs(30),
        wait: Duration::ZERO,
        owner: "test".into(),
        request_id: String::new(),
    }
}

/// Completes `key` with a small receipt, kept 10 minutes.
fn receipt(key: &str, fencing_token: u64) -> CompleteCommand {
    CompleteCommand {
        id: RecordId { tenant: "default".into(), namespace: "ns".into(), key: key.into() },
        fencing_token,
        result: CallResult {
            body: ResultBody::Response(b"receipt".to_vec()),
            content_type: String::new(),
            status_code: 0,
        },
        retention: Duration::from_secs(600),
    }
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn etcd_calls(store: &EtcdStore) -> u64 {
    store.counters().calls.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_transactions_and_keep_their_own_answers() {
    let etcd = Etcd::start().await;
    let (coordinator, store) = coordinator(&etcd).await;
    // 300 distinct keys and 20 callers on one hot key, all at once.
    let tasks: Vec<_> = (0..320)
        .map(|i| {
            let coordinator = coordinator.clone();
            let key = if i < 300 { format!("key-{i}") } else { "hot".to_owned() };
            tokio::spawn(async move { (key.clone(), coordinator.begin(&begin_command(&key, 1), deadline()).await) })
        })
        .collect();
    let mut hot_winners = 0;
    let mut tokens = std::collections::HashMap::new();
    for task in tasks {
        let (key, outcome) = task.await.unwrap();
        match outcome.expect("every Begin is answered") {
            Outcome::Acquired(a) => {
                if key == "hot" {
                    hot_winners += 1;
                }
                tokens.insert(key, a.fencing_token);
            }
            Outcome::InProgress(_) => assert_eq!(key, "hot", "{key} was busy"),
            other => panic!("{key}: unexpected {other:?}"),
        }
    }
    assert_eq!(hot_winners, 1);
    assert_eq!(tokens.len(), 301);

    let counters = store.counters();
    let (batches, calls, largest) = (
        counters.batches.load(Ordering::Relaxed),
        counters.calls.load(Ordering::Relaxed),
        counters.largest.load(Ordering::Relaxed),
    );
    println!("{calls} etcd calls in {batches} transactions, largest {largest}");
    assert!(calls >= 320, "{calls} calls");
    assert!(batches < calls / 4, "{batches} transactions for {calls} calls: not grouped");
    let limit = store.calls_per_transaction() as u64;
    assert!(largest <= limit, "a transaction carried {largest} calls, over the batch limit of {limit}");

    // Each record is intact: its own token is the one that completes it.
    for (key, token) in tokens.iter().take(20) {
        let complete = CompleteCommand {
            id: RecordId { tenant: "default".into(), namespace: "ns".into(), key: key.clone() },
            fencing_token: *token,
            result: CallResult {
                body: ResultBody::ResourceRef(format!("done/{key}")),
                content_type: String::new(),
                status_code: 0,
            },
            retention: Duration::from_secs(600),
        };
        coordinator.complete(complete, deadline()).await.expect("complete with its own token");
    }
}

#[tokio::test]
async fn replays_cost_no_etcd_request_and_a_local_complete_costs_one() {
    let etcd = Etcd::start().await;
    let (coordinator, store) = coordinator(&etcd).await;
    let acquired = match coordinator.begin(&begin_command("order", 1), deadline()).await.unwrap() {
        Outcome::Acquired(a) => a,
        other => panic!("expected acquired, got {other:?}"),
    };
    let before_complete = etcd_calls(&store);
    coordinator.complete(receipt("order", acquired.fencing_token), deadline()).await.unwrap();
    assert_eq!(etcd_calls(&store) - before_complete, 1, "Complete on the acquiring replica needs no read");

    let before_replays = etcd_calls(&store);
    for _ in 0..100 {
        assert!(matches!(coordinator.begin(&begin_command("order", 1), deadline()).await, Ok(Outcome::Completed(_))));
    }
    // The fingerprint is still checked on a cached replay.
    assert!(matches!(coordinator.begin(&begin_command("order", 2), deadline()).await, Err(Error::KeyReused { .. })));
    assert_eq!(etcd_calls(&store), before_replays, "replays went to etcd");

    // Another replica (no cache yet) reads etcd once, then replays from memory.
    let (other, other_store) = coordinator_on(&etcd).await;
    assert!(matches!(other.begin(&begin_command("order", 1), deadline()).await, Ok(Outcome::Completed(_))));
    let after_first = etcd_calls(&other_store);
    assert_eq!(after_first, 1);
    assert!(matches!(other.begin(&begin_command("order", 1), deadline()).await, Ok(Outcome::Completed(_))));
    assert_eq!(etcd_calls(&other_store), after_first);
}

async fn coordinator_on(etcd: &Etcd) -> (Arc<Coordinator<EtcdStore>>, Arc<EtcdStore>) {
    coordinator(etcd).await
}

#[tokio::test]
async fn a_lookup_of_a_finished_record_fills_the_replay_cache() {
    let etcd = Etcd::start().await;
    let (coordinator, _) = coordinator(&etcd).await;
    let acquired = match coordinator.begin(&begin_command("looked-up", 1), deadline()).await.unwrap() {
        Outcome::Acquired(a) => a,
        other => panic!("expected acquired, got {other:?}"),
    };
    let complete = receipt("looked-up", acquired.fencing_token);
    coordinator.complete(complete.clone(), deadline()).await.unwrap();

    // Another replica learns of the record by a Lookup: its replays then cost nothing.
    let (other, other_store) = coordinator_on(&etcd).await;
    other.lookup(&complete.id, deadline()).await.unwrap();
    let after_lookup = etcd_calls(&other_store);
    assert!(matches!(other.begin(&begin_command("looked-up", 1), deadline()).await, Ok(Outcome::Completed(_))));
    assert_eq!(etcd_calls(&other_store), after_lookup, "the replay after a Lookup went to etcd");
}
