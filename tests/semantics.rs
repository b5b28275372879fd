//! DESIGN.md's state machine, end to end over gRPC against a real etcd.

mod common;

use std::time::Duration;

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
async fn a_second_caller_sees_in_progress_while_the_owner_works() {
    let (_etcd, _server, mut client) = start().await;
    let mut owner = begin_request("order-2", "cart", 5);
    owner.owner = "pod-a".into();
    let first = acquired(begin(&mut client, owner).await);
    match begin(&mut client, begin_request("order-2", "cart", 5)).await {
        Outcome::InProgress(busy) => {
            assert_eq!((busy.owner.as_str(), busy.attempt), ("pod-a", 1));
            let expiry = busy.lease_expires_at.unwrap();
            assert_eq!(Some(expiry), first.lease_expires_at);
            assert!(busy.retry_after.is_some());
        }
        other => panic!("expected in_progress, got {other:?}"),
    }
}

#[tokio::test]
async fn a_terminal_failure_is_replayed() {
    let (_etcd, _server, mut client) = start().await;
    let first = acquired(begin(&mut client, begin_request("order-3", "cart", 5)).await);
    let record = client.fail(fail_request("order-3", first.fencing_token, "card_declined", false)).await.unwrap();
    assert_eq!(record.into_inner().record.unwrap().state(), v1::State::Failed);
    for _ in 0..2 {
        match begin(&mut client, begin_request("order-3", "cart", 5)).await {
            Outcome::Failed(replay) => {
                assert_eq!(replay.attempt, 1);
                assert_eq!(replay.error.unwrap().code, "card_declined");
                assert!(replay.failed_at.is_some());
            }
            other => panic!("expected a failed replay, got {other:?}"),
        }
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
async fn sixty_four_concurrent_begins_on_one_key_acquire_exactly_once() {
    let (_etcd, server, _client) = start().await;
    let channel = server.channel().await;
    let calls = (0..64).map(|i| {
        let mut client = v1::coordinator_service_client::CoordinatorServiceClient::new(channel.clone());
        tokio::spawn(async move {
            let mut request = begin_request("hot-key", "cart", 5);
            request.owner = format!("caller-{i}");
            begin(&mut client, request).await
        })
    });
    let outcomes: Vec<Outcome> = futures_join(calls).await;
    let winners = outcomes.iter().filter(|o| matches!(o, Outcome::Acquired(_))).count();
    let busy = outcomes.iter().filter(|o| matches!(o, Outcome::InProgress(_))).count();
    assert_eq!((winners, busy), (1, 63), "{outcomes:?}");
}

async fn futures_join<T: Send + 'static>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        results.push(task.await.expect("task completes"));
    }
    results
}

#[tokio::test]
async fn an_abandoned_attempt_is_taken_over_with_a_higher_token() {
    let (_etcd, _server, mut client) = start().await;
    let mut first_request = begin_request("crashy", "cart", 2);
    first_request.owner = "pod-that-crashed".into();
    let first = acquired(begin(&mut client, first_request).await);
    // The owner "crashes": no Complete, no Extend. Its 2 s lease lapses.
    tokio::time::sleep(Duration::from_millis(2_100)).await;

    let mut second_request = begin_request("crashy", "cart", 5);
    second_request.owner = "pod-b".into();
    let second = acquired(begin(&mut client, second_request).await);
    assert_eq!(second.attempt, 2);
    assert!(second.fencing_token > first.fencing_token);
    let recovered = second.recovered.expect("the takeover says what it recovered from");
    assert_eq!(recovered.reason(), v1::RecoveryReason::Abandoned);
    assert_eq!((recovered.previous_attempt, recovered.previous_owner.as_str()), (1, "pod-that-crashed"));

    // The crashed owner's late Complete, Fail and Extend are refused.
    for status in [
        client.complete(complete_request("crashy", first.fencing_token, "late")).await.map(|_| ()),
        client.fail(fail_request("crashy", first.fencing_token, "late", false)).await.map(|_| ()),
        client.extend(extend_request("crashy", first.fencing_token, 5)).await.map(|_| ()),
    ] {
        let status = assert_status(status, Code::FailedPrecondition, "LEASE_LOST");
        let info = tonic_types::StatusExt::get_error_details(&status).error_info().cloned().unwrap();
        assert_eq!(info.metadata.get("current_attempt").map(String::as_str), Some("2"));
    }
    // The new owner is unaffected.
    client.complete(complete_request("crashy", second.fencing_token, "ok")).await.expect("the new owner completes");
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
}

#[tokio::test]
async fn a_late_completion_is_accepted_when_nobody_took_over() {
    let (_etcd, _server, mut client) = start().await;
    let first = acquired(begin(&mut client, begin_request("slow", "cart", 2)).await);
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    // Its lease lapsed, but no other attempt began: the late word is the truth.
    let record = client.complete(complete_request("slow", first.fencing_token, "done late")).await.unwrap();
    assert_eq!(record.into_inner().record.unwrap().state(), v1::State::Completed);
    assert!(matches!(begin(&mut client, begin_request("slow", "cart", 5)).await, Outcome::Completed(_)));
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
async fn a_begin_retried_with_its_request_id_gets_the_same_acquisition() {
    let (_etcd, _server, mut client) = start().await;
    let mut request = begin_request("lost-response", "cart", 5);
    request.request_id = "5f0c6f5e-0d4e-4b8e-9a52-1c1b2f7d9a11".into();
    let first = acquired(begin(&mut client, request.clone()).await);
    // The response was "lost"; the caller retries the same logical call.
    let retry = acquired(begin(&mut client, request.clone()).await);
    assert_eq!(retry, first);
    // Another logical call for the same key is told it is in progress.
    request.request_id = "another-call".into();
    assert!(matches!(begin(&mut client, request).await, Outcome::InProgress(_)));
}

#[tokio::test]
async fn extend_keeps_an_owner_alive_past_its_original_ttl() {
    let (_etcd, _server, mut client) = start().await;
    let first = acquired(begin(&mut client, begin_request("long-job", "cart", 2)).await);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let extended = client.extend(extend_request("long-job", first.fencing_token, 2)).await.unwrap().into_inner();
        assert!(extended.lease_expires_at.unwrap().seconds >= first.lease_expires_at.unwrap().seconds);
    }
    // 3 s after a 2 s lease began, the owner still holds it.
    assert!(matches!(begin(&mut client, begin_request("long-job", "cart", 5)).await, Outcome::InProgress(_)));
    let record = client.lookup(lookup_request("long-job")).await.unwrap().into_inner().record.unwrap();
    assert_eq!(record.fencing_token, first.fencing_token);
    // And its token is still good.
    client.complete(complete_request("long-job", first.fencing_token, "ok")).await.expect("complete after extends");
}

#[tokio::test]
async fn retention_expiry_makes_a_key_new_again() {
    let (_etcd, _server, mut client) = start().await;
    let first = acquired(begin(&mut client, begin_request("short-lived", "cart", 5)).await);
    let mut complete = complete_request("short-lived", first.fencing_token, "ok");
    complete.retention = Some(secs(1));
    let record = client.complete(complete).await.unwrap().into_inner().record.unwrap();
    let expires_at = record.expires_at.unwrap();
    let completed_at = record.updated_at.unwrap();
    let retained_ms =
        (expires_at.seconds - completed_at.seconds) * 1000 + (expires_at.nanos - completed_at.nanos) as i64 / 1_000_000;
    assert!((1_000..=1_020).contains(&retained_ms), "retained for {retained_ms} ms");
    assert!(matches!(begin(&mut client, begin_request("short-lived", "cart", 5)).await, Outcome::Completed(_)));

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_status(client.lookup(lookup_request("short-lived")).await, Code::NotFound, "RECORD_NOT_FOUND");
    // Even a different request may now use the key: it is a new record.
    let again = acquired(begin(&mut client, begin_request("short-lived", "another cart", 5)).await);
    assert_eq!(again.attempt, 1);
    assert!(again.recovered.is_none());
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
async fn a_bogus_token_never_finishes_a_live_attempt() {
    let (_etcd, _server, mut client) = start().await;
    let owner = acquired(begin(&mut client, begin_request("guarded", "cart", 5)).await);
    for token in [owner.fencing_token - 1, owner.fencing_token + 1, u64::MAX] {
        assert_status(
            client.complete(complete_request("guarded", token, "x")).await,
            Code::FailedPrecondition,
            "LEASE_LOST",
        );
    }
    client.complete(complete_request("guarded", owner.fencing_token, "ok")).await.expect("the owner completes");
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
