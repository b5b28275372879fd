//! Upgrade safety: records as an earlier release stored them in etcd
//! (`testdata/stored-records-v1.json`, written by `write_golden_records`
//! below at the commit it names) are read, replayed, completed and taken over
//! by this release. The values go into a fresh etcd byte for byte; the
//! coordinator's clock is set back to when they were written, so that their
//! stored deadlines and expiries mean what they meant then.
//!
//! To write the file again (only when the stored format changes, with a
//! version bump, keeping the old file for the reader of the old version):
//! `cargo test --test stored_records -- --ignored write_golden_records`

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Etcd, etcd_config, uncached_coordinator};
use idempotency_coordinator::core::clock::{Clock, SystemClock};
use idempotency_coordinator::core::command::{BeginCommand, CompleteCommand, FailCommand};
use idempotency_coordinator::core::coordinator::Coordinator;
use idempotency_coordinator::core::error::Error;
use idempotency_coordinator::core::limits::Limits;
use idempotency_coordinator::core::outcome::{BeginOutcome, PublicState};
use idempotency_coordinator::core::record::{CallError, CallResult, RecordId, RecoveryReason, ResultBody};
use idempotency_coordinator::store::etcd::EtcdStore;
use serde_json::{Value, json};
use tokio::time::Instant;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/stored-records-v1.json");
const PREFIX: &str = "/golden/";
const FINGERPRINT: [u8; 32] = [7; 32];

/// The wall clock moved by a fixed offset.
struct Shifted(i64);

impl Clock for Shifted {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms() + self.0
    }
}

fn coordinator(store: EtcdStore, clock: Arc<dyn Clock>) -> Coordinator<EtcdStore> {
    let limits = Limits {
        default_lease_ttl: Duration::from_secs(30),
        max_lease_ttl: Duration::from_secs(7200),
        max_wait: Duration::from_secs(10),
        default_retention: Duration::from_secs(86_400),
        max_retention: Duration::from_secs(86_400),
        max_payload_bytes: 1 << 20,
        max_result_bytes: 1 << 20,
    };
    uncached_coordinator(Arc::new(store), clock, limits)
}

fn id(key: &str) -> RecordId {
    RecordId { tenant: "default".into(), namespace: "golden".into(), key: key.into() }
}

fn begin(key: &str, fingerprint: [u8; 32]) -> BeginCommand {
    BeginCommand {
        id: id(key),
        fingerprint,
        members: vec![],
        lease_ttl: Duration::from_secs(3600),
        wait: Duration::ZERO,
        owner: "golden-writer".into(),
        request_id: String::new(),
    }
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn response(body: ResultBody) -> CallResult {
    CallResult { body, content_type: "application/json".into(), status_code: 201 }
}

fn error(code: &str) -> CallError {
    CallError { code: code.into(), message: format!("{code} happened"), details: vec![1, 2, 3] }
}

async fn acquire(coordinator: &Coordinator<EtcdStore>, key: &str) -> u64 {
    match coordinator.begin(&begin(key, FINGERPRINT), deadline()).await {
        Ok(BeginOutcome::Acquired(a)) => a.fencing_token,
        other => panic!("{key}: expected acquired, got {other:?}"),
    }
}

#[tokio::test]
#[ignore]
async fn write_golden_records() {
    let etcd = Etcd::start().await;
    let store = EtcdStore::connect(&etcd_config(&etcd, PREFIX)).await.unwrap();
    let written_at_ms = SystemClock.now_ms();
    let c = coordinator(store, Arc::new(SystemClock));
    let complete = |key: &str, token, body| CompleteCommand {
        id: id(key),
        fencing_token: token,
        result: response(body),
        retention: Duration::from_secs(86_400),
    };
    let fail = |key: &str, token, retryable| FailCommand {
        id: id(key),
        fencing_token: token,
        error: error("declined"),
        retryable,
        retention: Duration::from_secs(86_400),
    };
    let token = acquire(&c, "completed-response").await;
    c.complete(complete("completed-response", token, ResultBody::Response(b"{\"order\":1}".to_vec())), deadline())
        .await
        .unwrap();
    let token = acquire(&c, "completed-reference").await;
    c.complete(complete("completed-reference", token, ResultBody::ResourceRef("orders/1".into())), deadline())
        .await
        .unwrap();
    let token = acquire(&c, "failed").await;
    c.fail(fail("failed", token, false), deadline()).await.unwrap();
    let token = acquire(&c, "released").await;
    c.fail(fail("released", token, true), deadline()).await.unwrap();
    acquire(&c, "in-progress").await;
    let token = acquire(&c, "recovered-completed").await;
    c.fail(fail("recovered-completed", token, true), deadline()).await.unwrap();
    let token = acquire(&c, "recovered-completed").await;
    c.complete(complete("recovered-completed", token, ResultBody::Response(b"second".to_vec())), deadline())
        .await
        .unwrap();

    let mut client = etcd_client::Client::connect([&etcd.client_url], None).await.unwrap();
    let all = client.get(PREFIX, Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    let values: Vec<Value> = all
        .kvs()
        .iter()
        .map(|kv| json!({ "key": kv.key_str().unwrap().strip_prefix(PREFIX).unwrap(), "value": hex::encode(kv.value()) }))
        .collect();
    let commit = std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().unwrap().stdout;
    let golden = json!({
        "written_by_commit": String::from_utf8_lossy(&commit).trim(),
        "written_at_ms": written_at_ms,
        "fingerprint": hex::encode(FINGERPRINT),
        "values": values,
    });
    std::fs::write(GOLDEN, serde_json::to_string_pretty(&golden).unwrap() + "\n").unwrap();
}

#[tokio::test]
async fn records_an_earlier_release_stored_are_read_completed_and_taken_over() {
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(GOLDEN).expect("the golden file")).unwrap();
    let etcd = Etcd::start().await;
    let mut client = etcd_client::Client::connect([&etcd.client_url], None).await.unwrap();
    // Locks live on a lease, as they did; records need none for this test.
    let lease = client.lease_grant(3600, None).await.unwrap().id();
    for entry in golden["values"].as_array().unwrap() {
        let key = format!("{PREFIX}{}", entry["key"].as_str().unwrap());
        let value = hex::decode(entry["value"].as_str().unwrap()).unwrap();
        let options = key.ends_with("/lock").then(|| etcd_client::PutOptions::new().with_lease(lease));
        client.put(key, value, options).await.unwrap();
    }
    // Back to a second after the records were written.
    let offset = golden["written_at_ms"].as_i64().unwrap() + 1_000 - SystemClock.now_ms();
    let clock: Arc<dyn Clock> = Arc::new(Shifted(offset));
    let store = EtcdStore::connect(&etcd_config(&etcd, PREFIX)).await.unwrap();
    let c = coordinator(store, clock);

    match c.begin(&begin("completed-response", FINGERPRINT), deadline()).await.unwrap() {
        BeginOutcome::Completed(done) => {
            let result = done.result.expect("a result");
            assert_eq!(result.body, ResultBody::Response(b"{\"order\":1}".to_vec()));
            assert_eq!((result.content_type.as_str(), result.status_code, done.attempt), ("application/json", 201, 1));
        }
        other => panic!("completed-response: {other:?}"),
    }
    match c.begin(&begin("completed-reference", FINGERPRINT), deadline()).await.unwrap() {
        BeginOutcome::Completed(done) => {
            assert_eq!(done.result.unwrap().body, ResultBody::ResourceRef("orders/1".into()))
        }
        other => panic!("completed-reference: {other:?}"),
    }
    match c.begin(&begin("failed", FINGERPRINT), deadline()).await.unwrap() {
        BeginOutcome::Failed(failed) => assert_eq!(failed.error.unwrap(), error("declined")),
        other => panic!("failed: {other:?}"),
    }
    match c.begin(&begin("recovered-completed", FINGERPRINT), deadline()).await.unwrap() {
        BeginOutcome::Completed(done) => assert_eq!(done.attempt, 2),
        other => panic!("recovered-completed: {other:?}"),
    }
    // A released attempt is taken over as the next one, naming its error.
    match c.begin(&begin("released", FINGERPRINT), deadline()).await.unwrap() {
        BeginOutcome::Acquired(taken) => {
            let recovered = taken.recovered.expect("recovered");
            assert_eq!((taken.attempt, recovered.reason), (2, RecoveryReason::Released));
            assert_eq!(recovered.last_error, Some(error("declined")));
        }
        other => panic!("released: {other:?}"),
    }
    // The attempt in progress is still owned (its lock and deadline hold),
    // and its owner can complete it with the token it reads back.
    let owned = c.lookup(&id("in-progress"), deadline()).await.unwrap();
    assert_eq!((owned.state, owned.attempt), (PublicState::InProgress, 1));
    assert!(matches!(c.begin(&begin("in-progress", FINGERPRINT), deadline()).await, Ok(BeginOutcome::InProgress(_))));
    let complete = CompleteCommand {
        id: id("in-progress"),
        fencing_token: owned.fencing_token,
        result: response(ResultBody::Response(b"late".to_vec())),
        retention: Duration::from_secs(600),
    };
    c.complete(complete, deadline()).await.expect("the owner completes an attempt an earlier release began");
    assert!(matches!(c.begin(&begin("in-progress", FINGERPRINT), deadline()).await, Ok(BeginOutcome::Completed(_))));
    // The stored fingerprints still guard their keys.
    let reused = c.begin(&begin("completed-response", [8; 32]), deadline()).await;
    assert!(matches!(reused, Err(Error::KeyReused { attempt: 1, .. })), "{reused:?}");
}
