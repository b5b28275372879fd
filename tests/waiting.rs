//! Begin with `wait`: blocks on an etcd watch until the owner finishes or
//! lapses, bounded by `wait` and the caller's deadline.

mod common;

use std::time::{Duration, Instant};

use common::*;
use idempotency_coordinator::proto::v1::{self, begin_response::Outcome};
use tonic::IntoRequest;

fn waiting_request(key: &str, wait_seconds: i64) -> v1::BeginRequest {
    let mut request = begin_request(key, "cart", 5);
    request.wait = Some(secs(wait_seconds));
    request.owner = "waiter".into();
    request
}

#[tokio::test]
async fn a_waiter_gets_the_result_when_the_owner_completes() {
    let (_etcd, server, mut owner) = start().await;
    let attempt = acquired(begin(&mut owner, begin_request("wait-complete", "cart", 5)).await);
    let mut waiter = server.client().await;
    let started = Instant::now();
    let waiting = tokio::spawn(async move { begin(&mut waiter, waiting_request("wait-complete", 10)).await });

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the waiter answered before the owner finished");
    owner.complete(complete_request("wait-complete", attempt.fencing_token, "paid")).await.unwrap();

    match waiting.await.unwrap() {
        Outcome::Completed(replay) => {
            assert_eq!(replay.result.unwrap().body, Some(v1::result::Body::Response(b"paid".to_vec())));
        }
        other => panic!("expected the completed result, got {other:?}"),
    }
    // It woke on the completion, not at the end of its 10 s wait.
    assert!(started.elapsed() < Duration::from_secs(2), "waited {:?}", started.elapsed());
}

#[tokio::test]
async fn a_waiter_gets_a_terminal_failure_when_the_owner_fails() {
    let (_etcd, server, mut owner) = start().await;
    let attempt = acquired(begin(&mut owner, begin_request("wait-fail", "cart", 5)).await);
    let mut waiter = server.client().await;
    let waiting = tokio::spawn(async move { begin(&mut waiter, waiting_request("wait-fail", 10)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    owner.fail(fail_request("wait-fail", attempt.fencing_token, "declined", false)).await.unwrap();
    assert!(matches!(waiting.await.unwrap(), Outcome::Failed(_)));
}

#[tokio::test]
async fn exactly_one_waiter_acquires_when_the_owner_lapses() {
    let (_etcd, server, mut owner) = start().await;
    let first = acquired(begin(&mut owner, begin_request("wait-lapse", "cart", 2)).await);
    let started = Instant::now();
    let mut waiters = Vec::new();
    for _ in 0..8 {
        let mut client = server.client().await;
        waiters.push(tokio::spawn(async move { begin(&mut client, waiting_request("wait-lapse", 5)).await }));
    }
    let mut outcomes = Vec::new();
    for waiter in waiters {
        outcomes.push(waiter.await.unwrap());
    }
    let winners: Vec<&v1::Acquired> =
        outcomes.iter().filter_map(|o| if let Outcome::Acquired(a) = o { Some(a) } else { None }).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let winner = winners[0];
    assert_eq!(winner.attempt, 2);
    assert!(winner.fencing_token > first.fencing_token);
    assert_eq!(winner.recovered.as_ref().unwrap().reason(), v1::RecoveryReason::Abandoned);
    // The others waited on for the new owner and ran out of wait.
    assert_eq!(outcomes.iter().filter(|o| matches!(o, Outcome::InProgress(p) if p.attempt == 2)).count(), 7);
    assert!(started.elapsed() >= Duration::from_secs(5), "the losers stopped waiting early");
}

#[tokio::test]
async fn the_wait_ends_with_in_progress_when_it_runs_out() {
    let (_etcd, server, mut owner) = start().await;
    acquired(begin(&mut owner, begin_request("wait-out", "cart", 30)).await);
    let mut waiter = server.client().await;
    let started = Instant::now();
    assert!(matches!(begin(&mut waiter, waiting_request("wait-out", 1)).await, Outcome::InProgress(_)));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(950) && waited < Duration::from_secs(3), "waited {waited:?}");
}

#[tokio::test]
async fn the_callers_deadline_bounds_the_wait() {
    let (_etcd, server, mut owner) = start().await;
    acquired(begin(&mut owner, begin_request("wait-deadline", "cart", 30)).await);
    let mut waiter = server.client().await;
    let mut request = waiting_request("wait-deadline", 20).into_request();
    request.set_timeout(Duration::from_millis(800));
    let started = Instant::now();
    // Answered (in_progress) before the deadline, not DEADLINE_EXCEEDED.
    let outcome = waiter.begin(request).await.expect("answered within the deadline").into_inner().outcome;
    assert!(matches!(outcome, Some(Outcome::InProgress(_))), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_millis(800), "took {:?}", started.elapsed());
}
