//! Evidence that the simulation sees: the seeds that found bugs before their
//! fixes keep every promise, and each fence turned off is noticed (the
//! mutation check). Seeds are deterministic, so each test states its budget;
//! RELIABILITY.md ("Simulation") says which seed found what first.

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
        // Issue 25, 4: a create decided on a lone lock at a previous home,
        // written there after the lock lapsed; and a re-added shard whose
        // state was from its earlier life.
        (788, "a record created at a previous home by a replica of the switch step"),
        // A migration whose reply was lost left a copy at the new home; a
        // forget of the original then let the copy replay it.
        (1261, "a forgotten record brought back by a half-done migration's copy"),
        // An announce replica that began acting at the switch step trusted
        // a shard state it knew from before, below the switch: a record on a
        // receiving shard got tokens below its previous home's.
        (2290, "a shard state known from the announce step trusted at the switch step"),
        // An attempt whose owner crashed stayed at its old home: only
        // finished records moved, so the map never settled.
        (0, "an abandoned attempt left behind by shards status --migrate"),
        // A takeover that met the migration's forwarding record took it for
        // the record and answered "key reused".
        (42, "a forwarding record returned as the record a write conflicted with"),
        // A half-done migration's copy of an attempt then taken over
        // blocked every later migration of the key.
        (246, "a stale copy blocking the migration of its key"),
        // A second migration run wrote its copy after the first had moved
        // the record and a forget had removed the moved copy.
        (4172, "a forgotten result brought back by a late migration's copy"),
        // Two clusters' revisions coincided: a migration's compare was
        // taken for a moved attempt's token, and a copy was replaced.
        (376, "a revision taken for a moved attempt's token"),
        // A migration run still in flight when another said safe wrote a
        // copy of a record forgotten meanwhile, read once settled.
        (5098, "a late run's copy read after settling"),
    ];
    for (seed, what) in cases {
        let plan = crate::plan::generate(seed, passing);
        let run = crate::runner::run(seed, &plan, None, None);
        assert!(run.violation.is_none(), "seed {seed} ({what}): {}", run.trace.join("\n"));
    }
}

/// Issue 25, 2: settling by the old README's waiting rule, without asking
/// `shards status`, dropped a record still at its old home (seed 0). Now the
/// settled replicas refuse to act on a shard nobody checked: calls fail,
/// nothing is lost. Seed 7 read a record as gone before reads were held to
/// the shard's step too.
#[test]
fn settling_without_the_check_loses_nothing() {
    if let Some(failure) = explore(0..200, Knobs::all(), None) {
        panic!("{failure}");
    }
}

/// Without the settle check: settling by the rule drops records again.
#[test]
fn notices_the_settle_check_turned_off() {
    let failure = found(Knobs::all(), Some(Mutation::SettleCheck), 50);
    println!("found at seed {}: {}", failure.seed, failure.violation);
}

/// Issue 25, 1: without token generations, a key re-created on a cluster
/// with lower revisions gets lower tokens; and a record stored without its
/// generation no longer matches the token its owner was handed, so the
/// owner's Complete is refused though nobody took over.
#[test]
fn notices_the_token_generations_turned_off() {
    assert_found(
        &found(Knobs::passing(), Some(Mutation::TokenGenerations), 20),
        &["fencing tokens must increase", "refused as lease lost"],
    );
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
