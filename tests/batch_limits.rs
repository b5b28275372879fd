//! Group commit within etcd's limits, whatever the calls carry: large
//! answers, large requests and long keys never fail a whole batch, and
//! every call gets its own answer (against a real etcd).
//!
//! The tests run on one thread, after a warm-up Begin that leaves the
//! leases they need in the pool: the concurrent calls then all reach the
//! batcher before it runs, so they share one transaction.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Etcd, etcd_config, uncached_coordinator};
use idempotency_coordinator::core::clock::SystemClock;
use idempotency_coordinator::core::command::{BeginCommand, CompleteCommand, FailCommand};
use idempotency_coordinator::core::coordinator::Coordinator;
use idempotency_coordinator::core::limits::Limits;
use idempotency_coordinator::core::outcome::BeginOutcome;
use idempotency_coordinator::core::record::{CallError, CallResult, RecordId, ResultBody};
use idempotency_coordinator::store::etcd::EtcdStore;
use tokio::time::Instant;

/// A coordinator on `etcd`, its keys under `prefix`, with the replay cache
/// off, so that every replay reads the whole record from etcd.
async fn coordinator(etcd: &Etcd, prefix: &str) -> Arc<Coordinator<EtcdStore>> {
    let store = Arc::new(EtcdStore::connect(&etcd_config(etcd, prefix)).await.unwrap());
    coordinator_on(store)
}

fn coordinator_on(store: Arc<EtcdStore>) -> Arc<Coordinator<EtcdStore>> {
    let limits = Limits {
        default_lease_ttl: Duration::from_secs(30),
        max_lease_ttl: Duration::from_secs(60),
        max_wait: Duration::from_secs(10),
        default_retention: Duration::from_secs(600),
        max_retention: Duration::from_secs(3600),
        max_payload_bytes: 1 << 20,
        max_result_bytes: 256 << 10,
    };
    Arc::new(uncached_coordinator(store, Arc::new(SystemClock), limits))
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn id(key: &str) -> RecordId {
    RecordId { tenant: "default".into(), namespace: "ns".into(), key: key.into() }
}

fn begin(key: &str) -> BeginCommand {
    BeginCommand {
        id: id(key),
        fingerprint: [7; 32],
        members: vec![],
        lease_ttl: Duration::from_secs(30),
        wait: Duration::ZERO,
        owner: "test".into(),
        request_id: String::new(),
    }
}

async fn acquire(coordinator: &Coordinator<EtcdStore>, key: &str) -> u64 {
    match coordinator.begin(&begin(key), deadline()).await {
        Ok(BeginOutcome::Acquired(a)) => a.fencing_token,
        other => panic!("{key}: expected acquired, got {other:?}"),
    }
}

/// Completes `count` keys named by `name`, each with a result of `bytes`.
async fn completed(coordinator: &Coordinator<EtcdStore>, name: impl Fn(usize) -> String, count: usize, bytes: usize) {
    for i in 0..count {
        let key = name(i);
        let fencing_token = acquire(coordinator, &key).await;
        let result =
            CallResult { body: ResultBody::Response(vec![b'r'; bytes]), content_type: String::new(), status_code: 200 };
        let complete = CompleteCommand { id: id(&key), fencing_token, result, retention: Duration::from_secs(600) };
        coordinator.complete(complete, deadline()).await.unwrap();
    }
}

#[tokio::test]
async fn replays_of_large_records_and_a_fresh_key_share_no_fate() {
    let etcd = Etcd::start().await;
    let coordinator = coordinator(&etcd, "/batch-limits/").await;
    completed(&coordinator, |i| format!("large-{i}"), 20, 256 << 10).await;
    acquire(&coordinator, "warm-up").await;
    // 20 replays (each answer ~256 KiB: 5 MiB together) and one new key at once.
    let calls: Vec<_> = (0..21)
        .map(|i| {
            let coordinator = coordinator.clone();
            let key = if i < 20 { format!("large-{i}") } else { "fresh".to_owned() };
            tokio::spawn(async move { (key.clone(), coordinator.begin(&begin(&key), deadline()).await) })
        })
        .collect();
    for call in calls {
        match call.await.unwrap() {
            (key, Ok(BeginOutcome::Completed(c))) if key != "fresh" => {
                assert!(matches!(c.result.map(|r| r.body), Some(ResultBody::Response(b)) if b.len() == 256 << 10));
            }
            (key, Ok(BeginOutcome::Acquired(_))) if key == "fresh" => {}
            (key, other) => panic!("{key}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn lookups_whose_answers_exceed_four_mib_together_all_succeed() {
    let etcd = Etcd::start().await;
    let coordinator = coordinator(&etcd, "/batch-limits/").await;
    completed(&coordinator, |i| format!("mid-{i}"), 64, 64 << 10).await;
    let lookups: Vec<_> = (0..64)
        .map(|i| {
            let coordinator = coordinator.clone();
            tokio::spawn(async move { coordinator.lookup(&id(&format!("mid-{i}")), deadline()).await })
        })
        .collect();
    for lookup in lookups {
        let record = lookup.await.unwrap().expect("every lookup is answered");
        assert!(record.result.is_some());
    }
}

#[tokio::test]
async fn takeovers_with_long_keys_and_large_records_fit_etcds_request_limit() {
    let etcd = Etcd::start().await;
    // A long key prefix and 255-byte keys of 3-byte characters (each byte
    // percent-encoded): every etcd key of a record is about 1.5 KiB, named 6
    // times per takeover.
    let prefix = format!("/{}/", "p".repeat(1000));
    let coordinator = coordinator(&etcd, &prefix).await;
    let key = |i: usize| format!("{i:03}{}", "€".repeat(84));
    for i in 0..64 {
        let fencing_token = acquire(&coordinator, &key(i)).await;
        let error = CallError { code: "retry".into(), message: String::new(), details: vec![b'd'; 16 << 10] };
        let fail = FailCommand { id: id(&key(i)), fencing_token, error, retryable: true, retention: Duration::ZERO };
        coordinator.fail(fail, deadline()).await.unwrap();
    }
    acquire(&coordinator, "warm-up").await;
    // 64 takeovers at once, each rewriting a record that carries the 16 KiB error.
    let takeovers: Vec<_> = (0..64)
        .map(|i| {
            let coordinator = coordinator.clone();
            tokio::spawn(async move { coordinator.begin(&begin(&key(i)), deadline()).await })
        })
        .collect();
    for takeover in takeovers {
        match takeover.await.unwrap() {
            Ok(BeginOutcome::Acquired(a)) => assert_eq!(a.attempt, 2),
            other => panic!("expected a takeover, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_batch_etcd_refuses_as_too_large_is_sent_again_call_by_call() {
    // etcd taking at most 512 KiB per request: half of what a batch may carry.
    let etcd = Etcd::start_with("http", vec!["--max-request-bytes=524288".into()], None).await;
    let coordinator = coordinator(&etcd, "/batch-limits/").await;
    let mut tokens = Vec::new();
    for i in 0..48 {
        tokens.push(acquire(&coordinator, &format!("split-{i}")).await);
    }
    acquire(&coordinator, "warm-up").await;
    // 48 Completes of 20 KiB at once: about 1 MiB in one transaction.
    let completes: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, fencing_token)| {
            let coordinator = coordinator.clone();
            let result = CallResult {
                body: ResultBody::Response(vec![b's'; 20 << 10]),
                content_type: String::new(),
                status_code: 0,
            };
            let key = format!("split-{i}");
            let complete = CompleteCommand { id: id(&key), fencing_token, result, retention: Duration::from_secs(600) };
            tokio::spawn(async move { coordinator.complete(complete, deadline()).await })
        })
        .collect();
    for complete in completes {
        complete.await.unwrap().expect("every Complete commits");
    }
}

/// 64 Begins on new keys at once, after a warm-up that pools their lease:
/// every one must be acquired.
async fn sixty_four_begins_at_once(coordinator: &Arc<Coordinator<EtcdStore>>, name: &str) {
    acquire(coordinator, &format!("{name}-warm-up")).await;
    let begins: Vec<_> = (0..64)
        .map(|i| {
            let coordinator = coordinator.clone();
            let key = format!("{name}-{i}");
            tokio::spawn(async move { acquire(&coordinator, &key).await })
        })
        .collect();
    for begin in begins {
        begin.await.unwrap();
    }
}

#[tokio::test]
async fn an_etcd_taking_fewer_operations_than_configured_gets_smaller_transactions() {
    let etcd = Etcd::start_with("http", vec!["--max-txn-ops=16".into()], None).await;
    let mut config = etcd_config(&etcd, "/batch-limits/");
    config.batching.max_txn_ops = 1024;
    let store = Arc::new(EtcdStore::connect(&config).await.unwrap());
    // Found when connecting: 1021 calls halved until etcd took them.
    let calls = store.calls_per_transaction();
    assert!((1..=14).contains(&calls), "{calls} calls per transaction under --max-txn-ops=16");
    let coordinator = coordinator_on(store.clone());
    sixty_four_begins_at_once(&coordinator, "fewer").await;
    let largest = store.counters().largest.load(std::sync::atomic::Ordering::Relaxed);
    assert!(largest as usize <= calls, "a transaction of {largest} calls");
}

#[tokio::test]
async fn a_limit_lowered_while_running_is_learned_from_the_first_refusal() {
    let mut etcd = Etcd::start().await;
    let store = Arc::new(EtcdStore::connect(&etcd_config(&etcd, "/batch-limits/")).await.unwrap());
    // etcd's default of 128 operations: 125 calls of up to 3 operations each.
    assert_eq!(store.calls_per_transaction(), 125);
    let coordinator = coordinator_on(store.clone());
    // Restarted with a lower limit: the next batch that is too large is
    // refused before anything runs, and its calls go again in smaller ones.
    etcd.stop();
    etcd.extra_args = vec!["--max-txn-ops=16".into()];
    etcd.restart().await;
    sixty_four_begins_at_once(&coordinator, "lowered").await;
    let calls = store.calls_per_transaction();
    assert!(calls <= 14, "still {calls} calls per transaction");
}
