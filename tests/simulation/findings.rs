//! Evidence that the simulation sees: each finding of the review that is
//! not fixed yet (issues 25 and 26) is found within a few seeds when its
//! knob is on, and each fence turned off is noticed (the mutation check).
//! Seeds are deterministic, so each test states the seed that finds it; once
//! a finding is fixed, its test turns into "no violation over the budget"
//! and its knob joins `Knobs::passing`.

use crate::cluster::Mutation;
use crate::plan::Knobs;
use crate::runner::{Failure, explore};

/// The lowest seed below `budget` that breaks a promise with `knobs` on.
fn found(knobs: Knobs, mutation: Option<Mutation>, budget: u64) -> Failure {
    explore(0..budget, knobs, mutation)
        .unwrap_or_else(|| panic!("{budget} seeds with {knobs:?}, mutation {mutation:?}: every promise held"))
}

fn assert_found(failure: &Failure, seed: u64, says: &str) {
    assert!(failure.violation.contains(says), "expected {says:?} at seed {seed}, got:\n{failure}");
    assert_eq!(failure.seed, seed, "{failure}");
}

/// Issue 26, 1: a retry is handed back an attempt whose lock was not renewed.
#[test]
fn finds_a_request_id_retry_handed_an_attempt_without_a_fresh_lease() {
    let knobs = Knobs { request_id_retries: true, ..Knobs::passing() };
    assert_found(&found(knobs, None, 50), 2, "two owners");
}

/// Issue 26, 3: a replica whose feed of forgotten records went silent replays them.
#[test]
fn finds_a_forgotten_result_replayed_while_a_watch_is_silent() {
    let knobs = Knobs { silent_watches: true, ..Knobs::passing() };
    assert_found(&found(knobs, None, 400), 180, "after the forget");
}

/// Issue 25, 2: settling by the README's waiting rule drops a record still at its old home.
#[test]
fn finds_settle_by_the_waiting_rule_dropping_a_live_record() {
    let knobs = Knobs { settle_by_rule: true, ..Knobs::passing() };
    assert_found(&found(knobs, None, 20), 0, "acquired (token");
}

/// Issue 25, 1: a key re-created on a cluster with lower revisions gets lower tokens.
#[test]
fn finds_tokens_of_two_clusters_compared_as_one_sequence() {
    let knobs = Knobs { overlapping_revisions: true, ..Knobs::passing() };
    assert_found(&found(knobs, None, 20), 0, "fencing tokens must increase");
    // Removing a shard sends keys back to a cluster with lower revisions,
    // however far apart the clusters started.
    let knobs = Knobs { removals: true, ..Knobs::passing() };
    assert_found(&found(knobs, None, 20), 1, "fencing tokens must increase");
}

/// Without the token compare on Complete, Fail and Extend.
#[test]
fn notices_the_token_compare_turned_off() {
    assert_found(&found(Knobs::passing(), Some(Mutation::TokenCompare), 50), 4, "k2");
}

/// Without the lock compare on takeover.
#[test]
fn notices_the_lock_compare_turned_off() {
    assert_found(&found(Knobs::passing(), Some(Mutation::LockCompare), 400), 250, "two owners");
}

/// Without the feed that drops forgotten records' replays.
#[test]
fn notices_the_forget_feed_turned_off() {
    assert_found(&found(Knobs::passing(), Some(Mutation::ForgetFeed), 100), 18, "after the forget");
}
