//! The cases, written once for every store. Each takes a fresh harness.

use std::time::Duration;

use idempotency_coordinator::core::error::Error;
use idempotency_coordinator::core::outcome::{Acquired, BeginOutcome, PublicState};
use idempotency_coordinator::core::record::{RecordId, RecoveryReason};
use idempotency_coordinator::core::store::{Page, RecordStore};
use tokio::time::{Instant, sleep};

use crate::harness::*;

fn lease_lost(result: Result<impl std::fmt::Debug, Error>, current: u32) {
    match result {
        Err(Error::LeaseLost { current_attempt }) => assert_eq!(current_attempt, current),
        other => panic!("expected LEASE_LOST (current attempt {current}), got {other:?}"),
    }
}

pub async fn a_new_key_is_acquired_then_replayed_after_complete<S: RecordStore>(h: &Harness<S>) {
    let before = h.now_ms();
    let first = h.acquire(&begin("order-1", "cart-a", 5)).await;
    let lease_ms = first.lease_expires_at_ms - before;
    assert!((5_000..=5_000 + h.now_ms() - before).contains(&lease_ms), "a 5 s lease runs for {lease_ms} ms");
    assert_eq!(first.attempt, 1);
    assert!(first.recovered.is_none());
    assert!(first.fencing_token > 0);

    let record = h.complete("order-1", first.fencing_token, r#"{"charge":"ch_1"}"#).await.unwrap();
    assert_eq!(record.state, PublicState::Completed);
    assert_eq!(record.fencing_token, first.fencing_token);

    // Through this replica (its replay cache) and through a fresh one (a read).
    for replica in [h.coordinator.clone(), h.replica()] {
        let replay = replica.begin(&begin("order-1", "cart-a", 5), deadline()).await.unwrap();
        assert_eq!(replayed_response(&replay), Some(br#"{"charge":"ch_1"}"#.as_slice()));
        match replay {
            BeginOutcome::Completed(c) => {
                assert_eq!(c.attempt, 1);
                let result = c.result.unwrap();
                assert_eq!((result.content_type.as_str(), result.status_code), ("application/json", 201));
                assert_eq!(c.completed_at_ms, record.updated_at_ms);
            }
            other => panic!("expected a replay, got {other:?}"),
        }
    }
}

pub async fn a_second_caller_sees_in_progress_while_the_owner_works<S: RecordStore>(h: &Harness<S>) {
    let first = h.acquire(&owned_by(begin("order-2", "cart", 5), "pod-a")).await;
    match h.begin(&begin("order-2", "cart", 5)).await.unwrap() {
        BeginOutcome::InProgress(busy) => {
            assert_eq!((busy.owner.as_str(), busy.attempt), ("pod-a", 1));
            assert_eq!(busy.lease_expires_at_ms, first.lease_expires_at_ms);
            assert!(busy.retry_after > Duration::ZERO && busy.retry_after <= Duration::from_secs(1));
        }
        other => panic!("expected in_progress, got {other:?}"),
    }
}

pub async fn a_terminal_failure_is_replayed<S: RecordStore>(h: &Harness<S>) {
    let first = h.acquire(&begin("order-3", "cart", 5)).await;
    let record = h.fail("order-3", first.fencing_token, "card_declined", false).await.unwrap();
    assert_eq!(record.state, PublicState::Failed);
    for replica in [h.coordinator.clone(), h.replica()] {
        match replica.begin(&begin("order-3", "cart", 5), deadline()).await.unwrap() {
            BeginOutcome::Failed(replay) => {
                assert_eq!(replay.attempt, 1);
                assert_eq!(replay.error.unwrap().code, "card_declined");
            }
            other => panic!("expected a failed replay, got {other:?}"),
        }
    }
}

pub async fn a_reused_key_with_another_request_is_refused_in_every_state<S: RecordStore>(h: &Harness<S>) {
    let reused = |key: &str| begin(key, "a different cart", 5);
    let refused = |result: Result<BeginOutcome, Error>| {
        assert!(matches!(result, Err(Error::KeyReused { attempt: 1, .. })), "{result:?}");
    };
    h.acquire(&begin("in-progress", "cart", 5)).await;
    refused(h.begin(&reused("in-progress")).await);
    let done = h.acquire(&begin("completed", "cart", 5)).await;
    h.complete("completed", done.fencing_token, "ok").await.unwrap();
    refused(h.begin(&reused("completed")).await);
    refused(h.replica().begin(&reused("completed"), deadline()).await);
    let failed = h.acquire(&begin("failed", "cart", 5)).await;
    h.fail("failed", failed.fencing_token, "declined", false).await.unwrap();
    refused(h.begin(&reused("failed")).await);
    let released = h.acquire(&begin("released", "cart", 5)).await;
    h.fail("released", released.fencing_token, "timeout", true).await.unwrap();
    refused(h.begin(&reused("released")).await);

    // A refusal changes nothing: the rightful request still gets the right answers.
    assert!(matches!(h.begin(&begin("in-progress", "cart", 5)).await, Ok(BeginOutcome::InProgress(_))));
    assert!(matches!(h.begin(&begin("completed", "cart", 5)).await, Ok(BeginOutcome::Completed(_))));
    assert_eq!(h.acquire(&begin("released", "cart", 5)).await.attempt, 2);
}

pub async fn concurrent_begins_on_one_key_acquire_exactly_once<S: RecordStore>(h: &Harness<S>) {
    let replicas = [h.coordinator.clone(), h.replica()];
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let replica = replicas[i % 2].clone();
            tokio::spawn(async move {
                replica.begin(&owned_by(begin("hot-key", "cart", 5), &format!("caller-{i}")), deadline()).await
            })
        })
        .collect();
    let mut tokens = Vec::new();
    let mut busy = 0;
    for call in calls {
        match call.await.expect("the call ran") {
            Ok(BeginOutcome::Acquired(a)) => tokens.push(a.fencing_token),
            Ok(BeginOutcome::InProgress(_)) => busy += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((tokens.len(), busy), (1, 63));
}

pub async fn an_abandoned_attempt_is_taken_over_with_a_higher_token<S: RecordStore>(h: &Harness<S>) {
    let first = h.acquire(&owned_by(begin("crashy", "cart", 2), "pod-that-crashed")).await;
    // Before the lease lapses, nobody may take over. Timed from the deadline
    // the owner was told, not from when its answer arrived: on a loaded
    // machine the acquisition itself can take a good part of the margin.
    let until_deadline = |h: &Harness<S>, ms: i64| Duration::from_millis((ms - h.now_ms()).max(0) as u64);
    sleep(until_deadline(h, first.lease_expires_at_ms - 300)).await;
    assert!(matches!(h.begin(&begin("crashy", "cart", 5)).await, Ok(BeginOutcome::InProgress(_))));
    // The owner "crashes": no Complete, no Extend. Its 2 s lease lapses, and
    // the store frees the lock a little later: a waiting Begin takes over
    // then, never before the deadline the owner was told.
    let second = h.acquire(&owned_by(waiting(begin("crashy", "cart", 5), 10), "pod-b")).await;
    assert!(h.now_ms() >= first.lease_expires_at_ms, "taken over before the owner's deadline");
    assert_eq!(second.attempt, 2);
    assert!(second.fencing_token > first.fencing_token);
    let recovered = second.recovered.expect("the takeover says what it recovered from");
    assert_eq!(recovered.reason, RecoveryReason::Abandoned);
    assert_eq!((recovered.previous_attempt, recovered.previous_owner.as_str()), (1, "pod-that-crashed"));

    // The crashed owner's late Complete, Fail and Extend are refused.
    lease_lost(h.complete("crashy", first.fencing_token, "late").await, 2);
    lease_lost(h.fail("crashy", first.fencing_token, "late", false).await, 2);
    lease_lost(h.extend("crashy", first.fencing_token, 5).await, 2);
    // The new owner is unaffected.
    h.complete("crashy", second.fencing_token, "ok").await.expect("the new owner completes");
}

pub async fn fencing_tokens_grow_with_every_takeover<S: RecordStore>(h: &Harness<S>) {
    let mut tokens = Vec::new();
    for attempt in 1..=4 {
        let acquired = h.acquire(&begin("many-owners", "cart", 5)).await;
        assert_eq!(acquired.attempt, attempt);
        tokens.push(acquired.fencing_token);
        // Unrelated writes in between must not matter.
        h.acquire(&begin(&format!("other-{attempt}"), "cart", 5)).await;
        h.fail("many-owners", acquired.fencing_token, "retry", true).await.unwrap();
    }
    assert!(tokens.windows(2).all(|pair| pair[0] < pair[1]), "tokens {tokens:?}");
    // Every earlier token is stale.
    let last = h.acquire(&begin("many-owners", "cart", 5)).await;
    for token in tokens {
        lease_lost(h.complete("many-owners", token, "stale").await, 5);
    }
    h.complete("many-owners", last.fencing_token, "ok").await.unwrap();
}

/// The replica that handed out an attempt completes it without reading the
/// record first; only the store's check of the token stands between a paused
/// owner and the new one's work.
pub async fn a_stale_owner_is_refused_even_by_the_replica_that_knew_its_attempt<S: RecordStore>(h: &Harness<S>) {
    let paused = h.acquire(&begin("paused-owner", "cart", 2)).await;
    let other = h.replica();
    let new_owner = acquired(other.begin(&waiting(begin("paused-owner", "cart", 5), 10), deadline()).await);
    assert_eq!(new_owner.attempt, 2);

    lease_lost(h.complete("paused-owner", paused.fencing_token, "late").await, 2);
    lease_lost(h.extend("paused-owner", paused.fencing_token, 2).await, 2);
    lease_lost(h.fail("paused-owner", paused.fencing_token, "late", true).await, 2);
    let record = h.lookup("paused-owner").await.unwrap();
    assert_eq!(
        (record.state, record.attempt, record.fencing_token),
        (PublicState::InProgress, 2, new_owner.fencing_token)
    );
    other.complete(complete("paused-owner", new_owner.fencing_token, "ok"), deadline()).await.unwrap();
}

pub async fn a_retryable_failure_releases_the_key_at_once<S: RecordStore>(h: &Harness<S>) {
    let first = h.acquire(&owned_by(begin("flaky", "cart", 30), "pod-a")).await;
    let released = h.fail("flaky", first.fencing_token, "provider_timeout", true).await.unwrap();
    // Released: in progress to callers, with no live token and no lease.
    for view in [released, h.lookup("flaky").await.unwrap()] {
        assert_eq!((view.state, view.fencing_token, view.lease_expires_at_ms), (PublicState::InProgress, 0, None));
        assert_eq!(view.error.map(|e| e.code).as_deref(), Some("provider_timeout"));
    }
    // No waiting for the 30 s lease: the next Begin acquires immediately.
    let second = h.acquire(&begin("flaky", "cart", 5)).await;
    assert_eq!(second.attempt, 2);
    assert!(second.fencing_token > first.fencing_token);
    let recovered = second.recovered.unwrap();
    assert_eq!(recovered.reason, RecoveryReason::Released);
    assert_eq!(recovered.previous_owner, "pod-a");
    assert_eq!(recovered.last_error.unwrap().code, "provider_timeout");
}

/// A retryable Fail commits but its answer is lost; another owner takes
/// over; the first owner retries the Fail. It did happen, so it is not
/// LEASE_LOST — but nothing else that token asks for is granted.
pub async fn a_repeated_release_is_answered_truthfully_after_a_takeover<S: RecordStore>(h: &Harness<S>) {
    let first = h.acquire(&begin("lost-release", "cart", 30)).await;
    h.fail("lost-release", first.fencing_token, "provider_timeout", true).await.unwrap();
    let second = h.acquire(&begin("lost-release", "cart", 5)).await;
    for replica in [h.coordinator.clone(), h.replica()] {
        let repeat =
            replica.fail(fail("lost-release", first.fencing_token, "provider_timeout", true), deadline()).await;
        let view = repeat.expect("the release happened");
        assert_eq!((view.state, view.attempt), (PublicState::InProgress, 2));
    }
    lease_lost(h.fail("lost-release", first.fencing_token, "another_error", true).await, 2);
    lease_lost(h.complete("lost-release", first.fencing_token, "late").await, 2);
    h.complete("lost-release", second.fencing_token, "ok").await.expect("the new owner is unaffected");
}

pub async fn a_late_completion_is_accepted_when_nobody_took_over<S: RecordStore>(h: &Harness<S>) {
    let first = h.acquire(&begin("slow", "cart", 2)).await;
    sleep(Duration::from_millis(2_300)).await;
    // Its lease lapsed, but no other attempt began: the late word is the truth.
    let record = h.complete("slow", first.fencing_token, "done late").await.unwrap();
    assert_eq!(record.state, PublicState::Completed);
    assert!(matches!(h.replica().begin(&begin("slow", "cart", 5), deadline()).await, Ok(BeginOutcome::Completed(_))));
}

pub async fn repeating_complete_or_fail_is_idempotent<S: RecordStore>(h: &Harness<S>) {
    let first = h.acquire(&begin("twice", "cart", 5)).await;
    let once = h.complete("twice", first.fencing_token, "ok").await.unwrap();
    let again = h.complete("twice", first.fencing_token, "ok").await.unwrap();
    assert_eq!(once, again);
    // The same token cannot rewrite the outcome.
    let rewrite = h.complete("twice", first.fencing_token, "different").await;
    assert!(matches!(rewrite, Err(Error::AlreadyFinished { attempt: 1, state: "COMPLETED" })), "{rewrite:?}");
    let rewrite = h.fail("twice", first.fencing_token, "oops", false).await;
    assert!(matches!(rewrite, Err(Error::AlreadyFinished { .. })), "{rewrite:?}");

    let failing = h.acquire(&begin("fail-twice", "cart", 5)).await;
    let once = h.fail("fail-twice", failing.fencing_token, "declined", false).await.unwrap();
    let again = h.fail("fail-twice", failing.fencing_token, "declined", false).await.unwrap();
    assert_eq!(once, again);
}

pub async fn a_begin_retried_with_its_request_id_gets_the_same_acquisition<S: RecordStore>(h: &Harness<S>) {
    let mut command = begin("lost-response", "cart", 5);
    command.request_id = "5f0c6f5e-0d4e-4b8e-9a52-1c1b2f7d9a11".into();
    let first = h.acquire(&command).await;
    // The response was "lost"; the caller retries the same logical call, on
    // any replica, and gets the same attempt with its lock renewed.
    let same = |again: Acquired| {
        assert_eq!((again.fencing_token, again.attempt, &again.recovered), (first.fencing_token, 1, &None));
        assert!(again.lease_expires_at_ms >= first.lease_expires_at_ms, "{again:?} after {first:?}");
    };
    same(h.acquire(&command).await);
    same(acquired(h.replica().begin(&command, deadline()).await));
    // Another logical call for the same key is told it is in progress.
    command.request_id = "another-call".into();
    assert!(matches!(h.begin(&command).await, Ok(BeginOutcome::InProgress(_))));
}

/// Found in review: a duplicate of the first Begin arriving late (a proxy's
/// retry) renewed the lock for its own short TTL after the owner had
/// extended it, and a waiter acquired 22 s before the extended deadline.
pub async fn a_late_duplicate_of_a_begin_does_not_cut_an_extended_lease_short<S: RecordStore>(h: &Harness<S>) {
    let mut command = begin("duplicated", "cart", 2);
    command.request_id = "9e4b-duplicated".into();
    let first = h.acquire(&command).await;
    let extended = h.extend("duplicated", first.fencing_token, 6).await.expect("extend");
    let again = acquired(h.replica().begin(&command, deadline()).await);
    assert_eq!(again.fencing_token, first.fencing_token);
    assert!(
        again.lease_expires_at_ms >= extended,
        "handed back until {} after an extend to {extended}",
        again.lease_expires_at_ms
    );
    // Past the duplicate's 2 s, within the 6 s the owner was promised.
    sleep(Duration::from_secs(3)).await;
    command.request_id = "another-call".into();
    assert!(matches!(h.begin(&command).await, Ok(BeginOutcome::InProgress(_))), "the extended lease was cut short");
}

pub async fn extend_keeps_an_owner_alive_past_its_original_ttl<S: RecordStore>(h: &Harness<S>) {
    let first = h.acquire(&begin("long-job", "cart", 2)).await;
    let mut expiry = first.lease_expires_at_ms;
    for _ in 0..3 {
        sleep(Duration::from_millis(1_000)).await;
        let extended = h.extend("long-job", first.fencing_token, 2).await.unwrap();
        assert!(extended > expiry, "the lease moved from {expiry} to {extended}");
        expiry = extended;
    }
    // 3 s after a 2 s lease began, the owner still holds it.
    match h.replica().begin(&begin("long-job", "cart", 5), deadline()).await {
        Ok(BeginOutcome::InProgress(busy)) => assert_eq!(busy.lease_expires_at_ms, expiry),
        other => panic!("expected in_progress, got {other:?}"),
    }
    let record = h.lookup("long-job").await.unwrap();
    assert_eq!((record.fencing_token, record.lease_expires_at_ms), (first.fencing_token, Some(expiry)));
    // And its token is still good.
    h.complete("long-job", first.fencing_token, "ok").await.expect("complete after extends");
}

pub async fn an_extend_may_not_outlive_the_record<S: RecordStore>(h: &Harness<S>) {
    // The record of an attempt lives for its lease plus the default retention.
    let first = h.acquire(&begin("bounded", "cart", 2)).await;
    let too_long = 2 + DEFAULT_RETENTION.as_secs() + 1;
    match h.extend("bounded", first.fencing_token, too_long).await {
        Err(Error::InvalidRequest(violations)) => assert_eq!(violations[0].field, "lease_ttl"),
        other => panic!("expected INVALID_ARGUMENT on lease_ttl, got {other:?}"),
    }
    h.extend("bounded", first.fencing_token, 2).await.expect("a short extension is fine");
}

pub async fn retention_expiry_makes_a_key_new_again<S: RecordStore>(h: &Harness<S>) {
    let first = h.acquire(&begin("short-lived", "cart", 5)).await;
    let mut command = complete("short-lived", first.fencing_token, "ok");
    command.retention = Duration::from_secs(1);
    let record = h.coordinator.complete(command, deadline()).await.unwrap();
    let retained_ms = record.expires_at_ms - record.updated_at_ms;
    assert!((1_000..=1_020).contains(&retained_ms), "retained for {retained_ms} ms");
    assert!(matches!(h.begin(&begin("short-lived", "cart", 5)).await, Ok(BeginOutcome::Completed(_))));

    // Gone once the store drops it: within the retention lease's slack.
    sleep(Duration::from_millis(1_000) + RECORD_GONE_WITHIN).await;
    assert!(matches!(h.lookup("short-lived").await, Err(Error::NotFound)));
    // Even a different request may now use the key: it is a new record.
    let again = h.acquire(&begin("short-lived", "another cart", 5)).await;
    assert_eq!(again.attempt, 1);
    assert!(again.recovered.is_none());
}

pub async fn an_abandoned_record_disappears_after_retention<S: RecordStore>(h: &Harness<S>) {
    h.acquire(&begin("forgotten", "cart", 2)).await;
    let record = h.lookup("forgotten").await.unwrap();
    // Kept for the lease plus the retention, spread by up to 2%.
    let kept_ms = record.expires_at_ms - record.created_at_ms - 2_000;
    let retention_ms = DEFAULT_RETENTION.as_millis() as i64;
    assert!((retention_ms..=retention_ms + retention_ms / 50).contains(&kept_ms), "kept {kept_ms} ms");
    sleep(Duration::from_millis(2_000) + DEFAULT_RETENTION / 2).await;
    assert!(h.lookup("forgotten").await.is_ok(), "abandoned, but still within retention");
    sleep(DEFAULT_RETENTION / 2 + DEFAULT_RETENTION / 50 + RECORD_GONE_WITHIN).await;
    assert!(matches!(h.lookup("forgotten").await, Err(Error::NotFound)));
    let fresh = h.acquire(&begin("forgotten", "a new cart", 5)).await;
    assert_eq!((fresh.attempt, fresh.recovered), (1, None));
}

pub async fn unknown_records_are_not_found<S: RecordStore>(h: &Harness<S>) {
    assert!(matches!(h.lookup("nobody").await, Err(Error::NotFound)));
    assert!(matches!(h.complete("nobody", 7, "x").await, Err(Error::NotFound)));
    assert!(matches!(h.fail("nobody", 7, "x", true).await, Err(Error::NotFound)));
    assert!(matches!(h.extend("nobody", 7, 5).await, Err(Error::NotFound)));
}

pub async fn a_bogus_token_never_finishes_a_live_attempt<S: RecordStore>(h: &Harness<S>) {
    let owner = h.acquire(&begin("guarded", "cart", 5)).await;
    for token in [owner.fencing_token - 1, owner.fencing_token + 1, u64::MAX] {
        lease_lost(h.complete("guarded", token, "x").await, 1);
        lease_lost(h.extend("guarded", token, 5).await, 1);
    }
    h.complete("guarded", owner.fencing_token, "ok").await.expect("the owner completes");
}

pub async fn namespaces_and_tenants_are_separate_records<S: RecordStore>(h: &Harness<S>) {
    let scoped = |tenant: &str, namespace: &str, payload: &str| {
        let mut command = begin("shared-key", payload, 5);
        command.id = RecordId { tenant: tenant.into(), namespace: namespace.into(), key: "shared-key".into() };
        command
    };
    let acme = h.acquire(&scoped("acme", "payments.create", "cart")).await;
    // Same key, other namespace: its own record.
    h.acquire(&scoped("acme", "refunds.create", "cart")).await;
    // Same key and namespace, other tenant: its own record, even with another fingerprint.
    let globex = h.acquire(&scoped("globex", "payments.create", "another cart")).await;

    let in_tenant =
        |tenant: &str| RecordId { tenant: tenant.into(), namespace: NAMESPACE.into(), key: "shared-key".into() };
    assert!(matches!(h.coordinator.lookup(&in_tenant("initech"), deadline()).await, Err(Error::NotFound)));
    // A token of one tenant's record finishes nothing of another's.
    let mut steal = complete("shared-key", globex.fencing_token, "stolen");
    steal.id = in_tenant("acme");
    if globex.fencing_token != acme.fencing_token {
        lease_lost(h.coordinator.complete(steal, deadline()).await, 1);
    }
    let mut finish = complete("shared-key", acme.fencing_token, "ok");
    finish.id = in_tenant("acme");
    h.coordinator.complete(finish, deadline()).await.expect("acme completes its own record");
    // The globex record is untouched and the default tenant has never seen this key.
    let globex_record = h.coordinator.lookup(&in_tenant("globex"), deadline()).await.unwrap();
    assert_eq!(globex_record.state, PublicState::InProgress);
    assert!(matches!(h.lookup("shared-key").await, Err(Error::NotFound)));
}

pub async fn lookup_shows_the_whole_record<S: RecordStore>(h: &Harness<S>) {
    let owner = h.acquire(&owned_by(begin("inspect", "cart", 5), "pod-z")).await;
    let record = h.lookup("inspect").await.unwrap();
    assert_eq!(record.state, PublicState::InProgress);
    assert_eq!((record.attempt, record.owner.as_str(), record.fencing_token), (1, "pod-z", owner.fencing_token));
    assert_eq!(record.lease_expires_at_ms, Some(owner.lease_expires_at_ms));
    assert_eq!(record.fingerprint, begin("inspect", "cart", 5).fingerprint.to_vec());
    assert!(record.created_at_ms <= record.updated_at_ms && record.updated_at_ms < record.expires_at_ms);
    assert!(record.result.is_none() && record.error.is_none());

    h.complete("inspect", owner.fencing_token, "ok").await.unwrap();
    let record = h.lookup("inspect").await.unwrap();
    assert_eq!((record.state, record.lease_expires_at_ms), (PublicState::Completed, None));
    assert!(record.result.is_some());
}

pub async fn a_completion_through_one_replica_is_seen_by_another<S: RecordStore>(h: &Harness<S>) {
    let other = h.replica();
    for i in 0..20 {
        let key = format!("cross-{i}");
        let owner = h.acquire(&begin(&key, "cart", 5)).await;
        h.complete(&key, owner.fencing_token, "ok").await.unwrap();
        let seen = other.lookup(&id(&key), deadline()).await.unwrap();
        assert_eq!(seen.state, PublicState::Completed, "the other replica missed completion {i}");
    }
}

pub async fn a_waiter_gets_the_result_when_the_owner_completes<S: RecordStore>(h: &Harness<S>) {
    let attempt = h.acquire(&begin("wait-complete", "cart", 5)).await;
    let started = Instant::now();
    let replica = h.replica();
    let waiting =
        tokio::spawn(async move { replica.begin(&waiting(begin("wait-complete", "cart", 5), 10), deadline()).await });
    sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the waiter answered before the owner finished");
    h.complete("wait-complete", attempt.fencing_token, "paid").await.unwrap();
    let outcome = waiting.await.unwrap().unwrap();
    assert_eq!(replayed_response(&outcome), Some(b"paid".as_slice()), "{outcome:?}");
    // It woke on the completion, not at the end of its 10 s wait.
    assert!(started.elapsed() < Duration::from_secs(2), "waited {:?}", started.elapsed());
}

pub async fn a_waiter_gets_a_terminal_failure_when_the_owner_fails<S: RecordStore>(h: &Harness<S>) {
    let attempt = h.acquire(&begin("wait-fail", "cart", 5)).await;
    let replica = h.replica();
    let waiting =
        tokio::spawn(async move { replica.begin(&waiting(begin("wait-fail", "cart", 5), 10), deadline()).await });
    sleep(Duration::from_millis(300)).await;
    h.fail("wait-fail", attempt.fencing_token, "declined", false).await.unwrap();
    assert!(matches!(waiting.await.unwrap(), Ok(BeginOutcome::Failed(_))));
}

pub async fn exactly_one_waiter_acquires_when_the_owner_lapses<S: RecordStore>(h: &Harness<S>) {
    let first = h.acquire(&begin("wait-lapse", "cart", 2)).await;
    let started = Instant::now();
    let waiters: Vec<_> = (0..8)
        .map(|i| {
            let replica = if i % 2 == 0 { h.coordinator.clone() } else { h.replica() };
            tokio::spawn(async move { replica.begin(&waiting(begin("wait-lapse", "cart", 30), 8), deadline()).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for waiter in waiters {
        outcomes.push(waiter.await.unwrap().unwrap());
    }
    let winners: Vec<_> =
        outcomes.iter().filter_map(|o| if let BeginOutcome::Acquired(a) = o { Some(a) } else { None }).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    assert_eq!(winners[0].attempt, 2);
    assert!(winners[0].fencing_token > first.fencing_token);
    assert_eq!(winners[0].recovered.as_ref().unwrap().reason, RecoveryReason::Abandoned);
    // The others waited on for the new owner and ran out of wait.
    let busy = outcomes.iter().filter(|o| matches!(o, BeginOutcome::InProgress(p) if p.attempt == 2)).count();
    assert_eq!(busy, 7, "{outcomes:?}");
    assert!(started.elapsed() >= Duration::from_secs(8), "the losers stopped waiting early");
}

pub async fn the_wait_ends_with_in_progress_when_it_runs_out<S: RecordStore>(h: &Harness<S>) {
    h.acquire(&begin("wait-out", "cart", 30)).await;
    let started = Instant::now();
    assert!(matches!(h.begin(&waiting(begin("wait-out", "cart", 5), 1)).await, Ok(BeginOutcome::InProgress(_))));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(950) && waited < Duration::from_secs(3), "waited {waited:?}");
}

pub async fn the_callers_deadline_bounds_the_wait<S: RecordStore>(h: &Harness<S>) {
    h.acquire(&begin("wait-deadline", "cart", 30)).await;
    let started = Instant::now();
    let deadline = started + Duration::from_millis(800);
    let outcome = h.coordinator.begin(&waiting(begin("wait-deadline", "cart", 5), 20), deadline).await;
    assert!(matches!(outcome, Ok(BeginOutcome::InProgress(_))), "{outcome:?}");
    assert!(started.elapsed() <= Duration::from_millis(850), "took {:?}", started.elapsed());
}

/// Replicas whose clocks run a lease and more ahead of, or behind, the store's
/// owner decide exactly as one with the right time: the store's lock, not a
/// clock, says when an attempt is abandoned, and the store's retention lease
/// when a record is gone.
pub async fn skewed_clocks_neither_take_over_early_nor_forget_early<S: RecordStore>(h: &Harness<S>) {
    let skew = Duration::from_secs(2 + 4);
    let (ahead, behind) = (h.replica_with_skew(skew, true), h.replica_with_skew(skew, false));
    let owner = h.acquire(&owned_by(begin("skewed", "cart", 2), "pod-a")).await;
    // Ahead by more than the lease: the deadline has "passed" on its clock
    // from the start, yet the owner still holds the lock.
    for replica in [&ahead, &behind] {
        match replica.begin(&begin("skewed", "cart", 5), deadline()).await {
            Ok(BeginOutcome::InProgress(busy)) => assert_eq!(busy.lease_expires_at_ms, owner.lease_expires_at_ms),
            other => panic!("a skewed replica took over a live attempt: {other:?}"),
        }
    }
    // Behind by more than the lease: once the store freed the lock, it takes
    // over without waiting for its own clock to reach the deadline.
    let started = Instant::now();
    let second = acquired(behind.begin(&owned_by(waiting(begin("skewed", "cart", 5), 10), "pod-b"), deadline()).await);
    assert!(h.now_ms() >= owner.lease_expires_at_ms, "taken over before the owner's deadline");
    assert!(started.elapsed() < Duration::from_secs(5), "waited for its own clock: {:?}", started.elapsed());
    assert_eq!((second.attempt, second.recovered.map(|r| r.reason)), (2, Some(RecoveryReason::Abandoned)));
    lease_lost(h.complete("skewed", owner.fencing_token, "late").await, 2);

    // A record finished with a short retention: on the fast clock its expiry
    // has passed, but the store still holds it, so it replays and is not a
    // new request (the double effect a fast clock used to cause).
    let mut command = complete("skewed", second.fencing_token, "paid");
    command.retention = Duration::from_secs(3);
    behind.complete(command, deadline()).await.unwrap();
    for replica in [&ahead, &behind, &h.coordinator] {
        let replay = replica.begin(&begin("skewed", "cart", 5), deadline()).await;
        assert_eq!(replayed_response(replay.as_ref().unwrap()), Some(b"paid".as_slice()), "{replay:?}");
        assert_eq!(replica.lookup(&id("skewed"), deadline()).await.unwrap().state, PublicState::Completed);
    }
    // Once the store drops it, it is gone for every replica alike.
    sleep(Duration::from_secs(3) + RECORD_GONE_WITHIN).await;
    for replica in [&ahead, &behind, &h.coordinator] {
        assert!(matches!(replica.lookup(&id("skewed"), deadline()).await, Err(Error::NotFound)));
    }
}

/// A page of two of the default tenant's records in `namespace`, after `after`.
fn page(namespace: &str, after: &str) -> Page {
    Page { tenant: "default".into(), namespace: namespace.into(), after: after.into(), limit: 2 }
}

pub async fn finished_records_are_listed_and_forgotten_on_every_replica<S: RecordStore>(h: &Harness<S>) {
    let other = h.replica();
    let _following = other.follow_forgets();
    let done = h.acquire(&begin("done", "cart", 5)).await;
    h.complete("done", done.fencing_token, "receipt").await.unwrap();
    let declined = h.acquire(&begin("declined", "cart", 5)).await;
    h.fail("declined", declined.fencing_token, "card_declined", false).await.unwrap();
    h.acquire(&begin("running", "cart", 30)).await;

    // Two pages of two: every record once, in the store's order.
    let (first, next) = h.coordinator.list(&page(NAMESPACE, ""), deadline()).await.unwrap();
    let next = next.expect("a second page");
    let (second, last) = h.coordinator.list(&page(NAMESPACE, &next), deadline()).await.unwrap();
    assert_eq!(last, None);
    let mut keys: Vec<String> = first.iter().chain(&second).map(|(key, _)| key.clone()).collect();
    keys.sort();
    assert_eq!(keys, ["declined", "done", "running"]);
    assert!(h.coordinator.list(&page("another.namespace", ""), deadline()).await.unwrap().0.is_empty());

    let refused = h.coordinator.forget(&id("running"), deadline()).await;
    assert!(matches!(refused, Err(Error::RecordInProgress { attempt: 1 })), "{refused:?}");
    assert!(matches!(h.coordinator.forget(&id("never-was"), deadline()).await, Err(Error::NotFound)));

    // The other replica has "done" in its replay cache; after the forget, it is a new key there too.
    assert!(matches!(other.begin(&begin("done", "cart", 5), deadline()).await, Ok(BeginOutcome::Completed(_))));
    let forgotten = h.coordinator.forget(&id("done"), deadline()).await.unwrap();
    assert_eq!(forgotten.state, PublicState::Completed);
    let started = Instant::now();
    loop {
        match other.begin(&begin("done", "another cart", 5), deadline()).await {
            Ok(BeginOutcome::Acquired(acquired)) => {
                assert_eq!(acquired.attempt, 1, "a new record");
                break;
            }
            other => assert!(started.elapsed() < Duration::from_secs(3), "still remembered: {other:?}"),
        }
        sleep(Duration::from_millis(20)).await;
    }
    h.coordinator.forget(&id("declined"), deadline()).await.expect("a failed record is finished too");
}
