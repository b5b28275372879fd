//! A deterministic simulation of the whole protocol (RELIABILITY.md,
//! "Simulation"): the real `Coordinator` over the real `ShardedStore` over
//! memory clusters that behave like etcd, on tokio's paused clock, with
//! several replicas (each with its own caches and clock), faults, and
//! shard-map changes, all chosen by one seed. An oracle checks every answer.
//!
//! - `plan`: what a seed makes happen; `world`: the deployment carrying it
//!   out; `cluster`: the simulated etcd clusters and links; `oracle`: the
//!   promises checked; `runner`: running, replaying and shrinking seeds.
//!
//! Replay one seed: `SIM_SEED=N cargo test --test simulation replay -- --nocapture`
//! (with `SIM_KNOBS`, `SIM_KEEP` and `SIM_MUTATION` as a failure prints them).
//! Explore longer: `scripts/simulate.sh --seeds N` or `--minutes M`.

mod cluster;
mod findings;
mod oracle;
mod plan;
mod runner;
mod world;

use plan::Knobs;
use runner::{explore, replay_from_env};

/// Seeds every `cargo test` runs with everything that holds today.
const CI_SEEDS: u64 = 1_000;

#[test]
fn every_promise_holds_over_a_thousand_seeds() {
    if let Some(failure) = explore(0..CI_SEEDS, Knobs::passing(), None) {
        panic!("{failure}");
    }
}

#[test]
fn the_same_seed_replays_the_same_history() {
    for (seed, knobs) in [(3, Knobs::passing()), (17, Knobs::passing()), (101, Knobs::all())] {
        let plan = plan::generate(seed, knobs);
        let first = runner::run(seed, &plan, None, None);
        let second = runner::run(seed, &plan, None, None);
        assert!(first.trace.len() > 20, "seed {seed}: only {} lines", first.trace.len());
        assert_eq!(first.trace, second.trace, "seed {seed} ran two ways");
    }
}

/// Runs one seed (or its shrunk steps) from the environment, printing its trace.
#[test]
fn replay() {
    replay_from_env();
}

/// `scripts/simulate.sh`: many seeds, or many minutes.
#[test]
#[ignore = "long: run by scripts/simulate.sh"]
fn explore_from_env() {
    runner::explore_from_env();
}
