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

/// The failure breaks one of the promises `says` names. Which seed finds
/// it first moves whenever the plan's draws change; each budget is a few
/// times the seed that found it last (RELIABILITY.md, "Simulation").
fn assert_found(failure: &Failure, says: &[&str]) {
    assert!(says.iter().any(|s| failure.violation.contains(s)), "expected one of {says:?}, got:\n{failure}");
    println!("found at seed {}: {}", failure.seed, failure.violation);
}

/// Seeds that found a bug before its fix, kept as regression cases (the
/// plan's draws have changed since some were found, so they now stand for
/// the scenario class as much as for the exact history).
#[test]
fn the_seeds_of_fixed_findings_keep_every_promise() {
    let passing = Knobs::passing();
    let cases = [
        // Issue 26, 1: a retry handed back an attempt without a fresh lease ("two owners").
        (2, "a request_id retry handed back an attempt whose lease it did not renew"),
        // A record whose lease ran out before its lock's (written by a replica
        // with a fast clock, then extended): a new record was created under the lock.
        (473, "a lock that outlived its record"),
        // A replay cached by a replica whose clock was then stepped back was
        // served after the record expired and a new result was acknowledged.
        (249, "a cached replay outliving its record on a clock stepped back"),
        // Issue 26, 3: a forgotten result replayed while a replica's watch was silent.
        (180, "a forgotten result replayed while a watch is silent"),
    ];
    for (seed, what) in cases {
        let plan = crate::plan::generate(seed, passing);
        let run = crate::runner::run(seed, &plan, None, None);
        assert!(run.violation.is_none(), "seed {seed} ({what}): {}", run.trace.join("\n"));
    }
}

/// Issue 25, 2: settling by the README's waiting rule drops a record still at its old home.
#[test]
fn finds_settle_by_the_waiting_rule_dropping_a_live_record() {
    let knobs = Knobs { settle_by_rule: true, ..Knobs::passing() };
    // The record left at its old home is new again to the settled map: it
    // shows as a second owner, an attempt that recovered nothing, or a
    // completed key acquired again, whichever the seed meets first.
    assert_found(&found(knobs, None, 50), &["two owners", "unfinished", "acquired (token"]);
}

/// Issue 25, 1: a key re-created on a cluster with lower revisions gets lower tokens.
#[test]
fn finds_tokens_of_two_clusters_compared_as_one_sequence() {
    let knobs = Knobs { overlapping_revisions: true, ..Knobs::passing() };
    assert_found(&found(knobs, None, 20), &["fencing tokens must increase"]);
    // Removing a shard sends keys back to a cluster with lower revisions,
    // however far apart the clusters started.
    let knobs = Knobs { removals: true, ..Knobs::passing() };
    assert_found(&found(knobs, None, 20), &["fencing tokens must increase"]);
}

/// Without the token compare on Complete, Fail and Extend.
#[test]
fn notices_the_token_compare_turned_off() {
    // Whichever promise it breaks first: a stale owner's write lands.
    let failure = found(Knobs::passing(), Some(Mutation::TokenCompare), 50);
    println!("found at seed {}: {}", failure.seed, failure.violation);
}

/// Without the lock compare on takeover.
#[test]
fn notices_the_lock_compare_turned_off() {
    assert_found(&found(Knobs::passing(), Some(Mutation::LockCompare), 500), &["two owners"]);
}

/// Without the feed that drops forgotten records' replays.
#[test]
fn notices_the_forget_feed_turned_off() {
    assert_found(&found(Knobs::passing(), Some(Mutation::ForgetFeed), 200), &["after the forget", "since the forget"]);
}
