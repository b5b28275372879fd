//! A stalled etcd (stopped for longer than a lease, then resumed, so that the
//! write queued meanwhile commits late) must never make Begin or Extend hand
//! out a lease that has already run out: the caller would act while anyone
//! else may take the attempt over.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use idempotency_coordinator::proto::v1::begin_response::Outcome;
use tonic::Code;

const LEASE_TTL: i64 = 2;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn ms(timestamp: &prost_types::Timestamp) -> i64 {
    timestamp.seconds * 1000 + timestamp.nanos as i64 / 1_000_000
}

/// Runs `call` while etcd is stopped for 2.5 s (longer than the lease), and
/// returns what it answered and when.
async fn during_a_stall<T: Send + 'static>(
    etcd: &Etcd,
    call: impl std::future::Future<Output = T> + Send + 'static,
) -> (T, i64) {
    etcd.signal("STOP");
    let call = tokio::spawn(async move {
        let answer = call.await;
        (answer, now_ms())
    });
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    etcd.signal("CONT");
    call.await.unwrap()
}

#[tokio::test]
async fn a_stalled_etcd_never_yields_an_expired_lease() {
    // The production request timeout (5 s): a write may wait out the stall.
    let (etcd, server, mut client) = start_with(&["--etcd-request-timeout", "5s"]).await;
    let mut warm = begin_request("warm-up", "cart", LEASE_TTL);
    warm.request_id = "warm-up".into();
    acquired(begin(&mut client, warm).await);

    let mut request = begin_request("stalled", "cart", LEASE_TTL);
    request.request_id = "7b0e5c1e-stalled".into();
    let mut stalled_client = server.client().await;
    let first = request.clone();
    let (answer, answered_at) = during_a_stall(&etcd, async move { stalled_client.begin(first).await }).await;
    match answer {
        Ok(response) => match response.into_inner().outcome {
            Some(Outcome::Acquired(a)) => {
                let left = ms(a.lease_expires_at.as_ref().unwrap()) - answered_at;
                assert!(left >= 900, "acquired with {left} ms of a {LEASE_TTL} s lease left");
            }
            other => panic!("unexpected {other:?}"),
        },
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
    }

    // The caller retries its Begin, willing to wait: it owns the key now,
    // with time to act. If the stalled write committed, the attempt it made
    // is handed back only with time left; with too little, it is busy until
    // etcd frees it, and the retry then takes it over.
    let mut retry = request.clone();
    retry.wait = Some(secs(5));
    let owner = acquired(begin(&mut client, retry).await);
    let left = ms(owner.lease_expires_at.as_ref().unwrap()) - now_ms();
    assert!(left >= 1_000, "the retry acquired with only {left} ms left");
    let mut other = request.clone();
    other.request_id = "someone-else".into();
    assert!(matches!(begin(&mut client, other).await, Outcome::InProgress(_)), "the owner's lease is not live");

    // Extend through a stall is held to the same rule.
    let mut extending_client = server.client().await;
    let extend = extend_request("stalled", owner.fencing_token, LEASE_TTL);
    let (answer, answered_at) = during_a_stall(&etcd, async move { extending_client.extend(extend).await }).await;
    match answer {
        Ok(response) => {
            let left = ms(response.into_inner().lease_expires_at.as_ref().unwrap()) - answered_at;
            assert!(left >= 900, "extended to a lease with {left} ms left");
        }
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
    }
}
