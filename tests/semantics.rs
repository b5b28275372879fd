//! DESIGN.md's state machine as callers see it on the wire: each outcome and
//! each error's code, ErrorInfo reason and metadata, over gRPC against a real
//! etcd, across two server replicas. The semantics themselves, on every
//! store, are the conformance suite's (`tests/conformance`).

mod common;

use common::*;
use idempotency_coordinator::proto::v1::{self, begin_response::Outcome};
use tonic::Code;

#[tokio::test]
async fn a_new_key_is_acquired_then_replayed_after_complete() {
    let (_etcd, _server, mut client) = start().await;
    let first = acquired(begin(&mut client, begin_request("order-1", "cart-a", 5)).await);
    assert_eq!(first.attempt, 1);
    assert!(first.recovered.is_none());
    assert!(first.fencing_token > 0);

    let record =
        client.complete(complete_request("order-1", first.fencing_token, r#"{"charge":"ch_1"}"#)).await.unwrap();
    let record = record.into_inner().record.unwrap();
    assert_eq!(record.state(), v1::State::Completed);
    assert_eq!(record.fencing_token, first.fencing_token);

    match begin(&mut client, begin_request("order-1", "cart-a", 5)).await {
        Outcome::Completed(replay) => {
            assert_eq!(replay.attempt, 1);
            let result = replay.result.unwrap();
            assert_eq!(result.body, Some(v1::result::Body::Response(br#"{"charge":"ch_1"}"#.to_vec())));
            assert_eq!((result.content_type.as_str(), result.status_code), ("application/json", 201));
            assert!(replay.completed_at.is_some());
        }
        other => panic!("expected a replay, got {other:?}"),
    }
}

#[tokio::test]
async fn a_reused_key_with_another_request_is_refused_in_every_state() {
    let (_etcd, _server, mut client) = start().await;
    let reused = |key: &str| begin_request(key, "a different cart", 5);

    // In progress.
    let live = acquired(begin(&mut client, begin_request("in-progress", "cart", 5)).await);
    assert_status(client.begin(reused("in-progress")).await, Code::FailedPrecondition, "IDEMPOTENCY_KEY_REUSED");
    // Completed.
    let done = acquired(begin(&mut client, begin_request("completed", "cart", 5)).await);
    client.complete(complete_request("completed", done.fencing_token, "ok")).await.unwrap();
    assert_status(client.begin(reused("completed")).await, Code::FailedPrecondition, "IDEMPOTENCY_KEY_REUSED");
    // Failed.
    let failed = acquired(begin(&mut client, begin_request("failed", "cart", 5)).await);
    client.fail(fail_request("failed", failed.fencing_token, "declined", false)).await.unwrap();
    assert_status(client.begin(reused("failed")).await, Code::FailedPrecondition, "IDEMPOTENCY_KEY_REUSED");
    // Released by a retryable failure.
    let released = acquired(begin(&mut client, begin_request("released", "cart", 5)).await);
    client.fail(fail_request("released", released.fencing_token, "timeout", true)).await.unwrap();
    assert_status(client.begin(reused("released")).await, Code::FailedPrecondition, "IDEMPOTENCY_KEY_REUSED");

    // A refusal changes nothing: the rightful request still gets the right answers.
    assert!(matches!(begin(&mut client, begin_request("in-progress", "cart", 5)).await, Outcome::InProgress(_)));
    assert!(matches!(begin(&mut client, begin_request("completed", "cart", 5)).await, Outcome::Completed(_)));
    let retaken = acquired(begin(&mut client, begin_request("released", "cart", 5)).await);
    assert_eq!(retaken.attempt, 2);
    let _ = live;
}

#[tokio::test]
async fn json_payloads_fingerprint_by_content_not_formatting() {
    let (_etcd, _server, mut client) = start().await;
    let json = |data: &str| v1::BeginRequest {
        namespace: "orders.create".into(),
        key: "json-1".into(),
        request: Some(v1::begin_request::Request::Payload(v1::Payload {
            data: data.as_bytes().to_vec(),
            canonicalization: v1::Canonicalization::Json as i32,
            ignore_fields: vec!["/sent_at".into()],
        })),
        ..Default::default()
    };
    acquired(begin(&mut client, json(r#"{"b":1,"a":true,"sent_at":"10:00"}"#)).await);
    // Same content, other order, spacing and volatile field: the same request.
    assert!(matches!(
        begin(&mut client, json(r#"{ "a": true, "b": 1, "sent_at": "10:01" }"#)).await,
        Outcome::InProgress(_)
    ));
    // Different content: a reused key.
    assert_status(client.begin(json(r#"{"a":true,"b":2}"#)).await, Code::FailedPrecondition, "IDEMPOTENCY_KEY_REUSED");
}

#[tokio::test]
async fn a_retryable_failure_releases_the_key_at_once() {
    let (_etcd, _server, mut client) = start().await;
    let mut first_request = begin_request("flaky", "cart", 30);
    first_request.owner = "pod-a".into();
    let first = acquired(begin(&mut client, first_request).await);
    client.fail(fail_request("flaky", first.fencing_token, "provider_timeout", true)).await.unwrap();

    // No waiting for the 30 s lease: the next Begin acquires immediately.
    let second = acquired(begin(&mut client, begin_request("flaky", "cart", 5)).await);
    assert_eq!(second.attempt, 2);
    assert!(second.fencing_token > first.fencing_token);
    let recovered = second.recovered.unwrap();
    assert_eq!(recovered.reason(), v1::RecoveryReason::Released);
    assert_eq!(recovered.previous_owner, "pod-a");
    assert_eq!(recovered.last_error.unwrap().code, "provider_timeout");

    // The released owner's token is stale: LEASE_LOST names the current attempt.
    for status in [
        client.complete(complete_request("flaky", first.fencing_token, "late")).await.map(|_| ()),
        client.extend(extend_request("flaky", first.fencing_token, 5)).await.map(|_| ()),
    ] {
        let status = assert_status(status, Code::FailedPrecondition, "LEASE_LOST");
        let info = tonic_types::StatusExt::get_error_details(&status).error_info().cloned().unwrap();
        assert_eq!(info.metadata.get("current_attempt").map(String::as_str), Some("2"));
    }
    let extended = client.extend(extend_request("flaky", second.fencing_token, 5)).await.unwrap().into_inner();
    assert!(extended.lease_expires_at.unwrap().seconds >= second.lease_expires_at.unwrap().seconds);
}

#[tokio::test]
async fn repeating_complete_or_fail_is_idempotent() {
    let (_etcd, _server, mut client) = start().await;
    let first = acquired(begin(&mut client, begin_request("twice", "cart", 5)).await);
    let once = client.complete(complete_request("twice", first.fencing_token, "ok")).await.unwrap().into_inner();
    let again = client.complete(complete_request("twice", first.fencing_token, "ok")).await.unwrap().into_inner();
    assert_eq!(once, again);
    // The same token cannot rewrite the outcome.
    assert_status(
        client.complete(complete_request("twice", first.fencing_token, "different")).await,
        Code::FailedPrecondition,
        "ALREADY_FINISHED",
    );
    assert_status(
        client.fail(fail_request("twice", first.fencing_token, "oops", false)).await,
        Code::FailedPrecondition,
        "ALREADY_FINISHED",
    );

    let failing = acquired(begin(&mut client, begin_request("fail-twice", "cart", 5)).await);
    let once = client.fail(fail_request("fail-twice", failing.fencing_token, "declined", false)).await.unwrap();
    let again = client.fail(fail_request("fail-twice", failing.fencing_token, "declined", false)).await.unwrap();
    assert_eq!(once.into_inner(), again.into_inner());
}

#[tokio::test]
async fn unknown_records_are_not_found() {
    let (_etcd, _server, mut client) = start().await;
    assert_status(client.lookup(lookup_request("nobody")).await, Code::NotFound, "RECORD_NOT_FOUND");
    assert_status(client.complete(complete_request("nobody", 7, "x")).await, Code::NotFound, "RECORD_NOT_FOUND");
    assert_status(client.fail(fail_request("nobody", 7, "x", true)).await, Code::NotFound, "RECORD_NOT_FOUND");
    assert_status(client.extend(extend_request("nobody", 7, 5)).await, Code::NotFound, "RECORD_NOT_FOUND");
}

#[tokio::test]
async fn namespaces_and_tenants_are_separate_records() {
    let (_etcd, _server, mut client) = start().await;
    let acme = |namespace: &str| {
        let mut request = begin_request("shared-key", "cart", 5);
        request.tenant = "acme".into();
        request.namespace = namespace.into();
        request
    };
    let acme_payments = acquired(begin(&mut client, acme("payments.create")).await);
    // Same key, other namespace: its own record.
    acquired(begin(&mut client, acme("refunds.create")).await);
    // Same key and namespace, other tenant: its own record, even with another fingerprint.
    let mut globex = begin_request("shared-key", "another cart", 5);
    globex.tenant = "globex".into();
    let globex_attempt = acquired(begin(&mut client, globex).await);

    // A tenant cannot see or finish another tenant's record.
    let mut peek = lookup_request("shared-key");
    peek.tenant = "initech".into();
    assert_status(client.lookup(peek).await, Code::NotFound, "RECORD_NOT_FOUND");
    let mut steal = complete_request("shared-key", globex_attempt.fencing_token, "stolen");
    steal.tenant = "acme".into();
    assert_status(client.complete(steal).await, Code::FailedPrecondition, "LEASE_LOST");
    let mut finish = complete_request("shared-key", acme_payments.fencing_token, "ok");
    finish.tenant = "acme".into();
    client.complete(finish).await.expect("acme completes its own record");
    // The default tenant has never seen this key.
    assert_status(client.lookup(lookup_request("shared-key")).await, Code::NotFound, "RECORD_NOT_FOUND");
}

#[tokio::test]
async fn lookup_shows_the_whole_record() {
    let (_etcd, _server, mut client) = start().await;
    let mut request = begin_request("inspect", "cart", 5);
    request.owner = "pod-z".into();
    let owner = acquired(begin(&mut client, request).await);
    let record = client.lookup(lookup_request("inspect")).await.unwrap().into_inner().record.unwrap();
    assert_eq!(record.state(), v1::State::InProgress);
    assert_eq!((record.attempt, record.owner.as_str(), record.fencing_token), (1, "pod-z", owner.fencing_token));
    assert_eq!(record.lease_expires_at, owner.lease_expires_at);
    assert_eq!(record.fingerprint.len(), 32);
    assert!(record.created_at.is_some() && record.updated_at.is_some() && record.expires_at.is_some());
    assert!(record.result.is_none() && record.error.is_none());
}

#[tokio::test]
async fn a_completion_on_one_replica_is_seen_by_lookup_on_another() {
    let (etcd, replica_a, mut a) = start().await;
    let replica_b = Server::start(&etcd, &[]).await;
    let mut b = replica_b.client().await;
    for i in 0..20 {
        let key = format!("cross-{i}");
        let owner = acquired(begin(&mut a, begin_request(&key, "cart", 5)).await);
        a.complete(complete_request(&key, owner.fencing_token, "ok")).await.unwrap();
        let seen = b.lookup(lookup_request(&key)).await.unwrap().into_inner().record.unwrap();
        assert_eq!(seen.state(), v1::State::Completed, "replica B missed completion {i}");
    }
    drop(replica_a);
}

#[tokio::test]
async fn a_waiting_begin_answers_within_the_grpc_timeout() {
    let (_etcd, _server, mut client) = start().await;
    acquired(begin(&mut client, begin_request("wait-deadline", "cart", 30)).await);
    let mut waiting = begin_request("wait-deadline", "cart", 5);
    waiting.wait = Some(secs(20));
    let mut request = tonic::IntoRequest::into_request(waiting);
    request.set_timeout(std::time::Duration::from_millis(800));
    let started = std::time::Instant::now();
    // Answered (in_progress) before the deadline, not DEADLINE_EXCEEDED.
    let outcome = client.begin(request).await.expect("answered within the deadline").into_inner().outcome;
    assert!(matches!(outcome, Some(Outcome::InProgress(_))), "{outcome:?}");
    assert!(started.elapsed() < std::time::Duration::from_millis(800), "took {:?}", started.elapsed());
}
