//! Running seeds: one plan on a fresh single-threaded runtime with tokio's
//! clock paused; many seeds on both cores; a failing plan shrunk to the
//! fewest groups of steps that still break the same promise, and printed
//! with the command that replays it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::Mutation;
use crate::plan::{self, Action, Knobs, Plan};
use crate::world::World;

pub struct Run {
    pub trace: Vec<String>,
    pub violation: Option<String>,
}

/// How long the world runs on after the last step, for calls in flight to finish.
const QUIET_END: Duration = Duration::from_secs(30);

pub fn run(seed: u64, plan: &Plan, keep: Option<&[bool]>, mutation: Option<Mutation>) -> Run {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("a runtime");
    let kept = |index: usize| keep.is_none_or(|keep| keep[index]);
    runtime.block_on(async {
        let world = World::new(plan, seed, mutation);
        let start = Instant::now();
        let mut waiting_groups = BTreeSet::new();
        for (index, step) in plan.steps.iter().enumerate() {
            if !kept(index) || waiting_groups.contains(&step.group) {
                continue;
            }
            tokio::time::sleep_until(start + Duration::from_millis(step.at_ms)).await;
            if world.violated() {
                break;
            }
            let Action::AwaitSafeSettle { settled } = &step.action else {
                world.act(index, &step.action);
                continue;
            };
            // The rest of this map change waits for the operator's check;
            // callers and faults go on meanwhile.
            waiting_groups.insert(step.group);
            let rest: Vec<(usize, plan::Step)> = plan
                .steps
                .iter()
                .enumerate()
                .filter(|(i, s)| *i > index && s.group == step.group && kept(*i))
                .map(|(i, s)| (i, s.clone()))
                .collect();
            tokio::spawn(operator(world.clone(), settled.clone(), step.at_ms, rest));
        }
        if !world.violated() {
            tokio::time::sleep(QUIET_END).await;
        }
        world.log(format!(
            "end: replicas on {:?}; {:?}",
            world.steps(),
            world.oracle.lock().expect("oracle").summary()
        ));
        let violation = world.oracle.lock().expect("oracle").violations.first().cloned();
        let trace = std::mem::take(&mut *world.trace.lock().expect("trace"));
        Run { trace, violation }
    })
}

/// The operator's part of a map change: ask a replica of the switch step
/// (`shards status`) until it says settling is safe, then go on with the
/// rest of the change (and the changes after it) on the plan's spacing
/// from that moment, waiting again at each settle. The simulation checks
/// the answer against what the clusters hold.
async fn operator(
    world: std::sync::Arc<World>,
    settled: Vec<&'static str>,
    from_ms: u64,
    rest: Vec<(usize, plan::Step)>,
) {
    let (mut settled, mut from_ms) = (settled, from_ms);
    loop {
        while !world.settle_checked(&settled).await {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        world.log(format!("operator: shards status says nothing is left behind; settling on {settled:?}"));
        world.check_nothing_left_behind(&settled).await;
        let safe_at = Instant::now();
        let mut next = None;
        for (index, step) in &rest {
            if step.at_ms <= from_ms {
                continue;
            }
            tokio::time::sleep_until(safe_at + Duration::from_millis(step.at_ms - from_ms)).await;
            if let Action::AwaitSafeSettle { settled } = &step.action {
                next = Some((settled.clone(), step.at_ms));
                break;
            }
            world.act(*index, &step.action);
        }
        let Some((to, at)) = next else { return };
        (settled, from_ms) = (to, at);
    }
}

/// A violation's kind: its text without numbers, so that a shrunk plan is
/// held to breaking the same promise, not just any.
fn kind(violation: &str) -> String {
    violation.chars().filter(|c| !c.is_ascii_digit()).collect()
}

/// The fewest groups of steps (a map change is one group) that still break
/// the promise, by removing ever smaller chunks (delta debugging).
fn shrink(seed: u64, plan: &Plan, mutation: Option<Mutation>, violation: &str) -> Vec<bool> {
    let wanted = kind(violation);
    let mut groups: Vec<usize> = plan.steps.iter().map(|s| s.group).collect::<BTreeSet<_>>().into_iter().collect();
    let keep_of = |groups: &[usize]| -> Vec<bool> {
        let set: BTreeSet<usize> = groups.iter().copied().collect();
        plan.steps.iter().map(|s| set.contains(&s.group)).collect()
    };
    let mut runs = 0;
    let mut chunk = groups.len().div_ceil(2);
    while chunk >= 1 && runs < 400 {
        let mut progressed = false;
        let mut at = 0;
        while at < groups.len() && runs < 400 {
            let candidate: Vec<usize> =
                groups.iter().enumerate().filter(|(i, _)| *i < at || *i >= at + chunk).map(|(_, g)| *g).collect();
            runs += 1;
            let still = run(seed, plan, Some(&keep_of(&candidate)), mutation).violation;
            if still.is_some_and(|v| kind(&v) == wanted) {
                groups = candidate;
                progressed = true;
            } else {
                at += chunk;
            }
        }
        if !progressed {
            if chunk == 1 {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
    }
    keep_of(&groups)
}

fn replay_command(seed: u64, knobs: Knobs, keep: &[bool], mutation: Option<Mutation>) -> String {
    let kept: Vec<String> = keep.iter().enumerate().filter(|(_, k)| **k).map(|(i, _)| i.to_string()).collect();
    let mutation = mutation.map(|m| format!(" SIM_MUTATION={}", m.name())).unwrap_or_default();
    format!(
        "SIM_SEED={seed} SIM_KNOBS={} SIM_KEEP={}{mutation} cargo test --test simulation replay -- --nocapture",
        knobs.names(),
        kept.join(",")
    )
}

/// A failure, shrunk and ready to print.
pub struct Failure {
    pub seed: u64,
    pub violation: String,
    pub report: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.report)
    }
}

fn failure(seed: u64, knobs: Knobs, mutation: Option<Mutation>, violation: String) -> Failure {
    let plan = plan::generate(seed, knobs);
    let keep = shrink(seed, &plan, mutation, &violation);
    let shrunk = run(seed, &plan, Some(&keep), mutation);
    let steps = keep.iter().filter(|k| **k).count();
    let report = format!(
        "simulation seed {seed} broke a promise: {violation}\n\
         shrunk from {} steps to {steps}; its trace:\n{}\n\
         replay the shrunk run: {}\n\
         replay the whole seed: SIM_SEED={seed} SIM_KNOBS={}{} cargo test --test simulation replay -- --nocapture\n",
        plan.steps.len(),
        shrunk.trace.join("\n"),
        replay_command(seed, knobs, &keep, mutation),
        knobs.names(),
        mutation.map(|m| format!(" SIM_MUTATION={}", m.name())).unwrap_or_default(),
    );
    Failure { seed, violation, report }
}

/// Runs `seeds` on both cores; the lowest failing seed, shrunk, if any.
pub fn explore(seeds: std::ops::Range<u64>, knobs: Knobs, mutation: Option<Mutation>) -> Option<Failure> {
    let next = AtomicU64::new(seeds.start);
    let lowest_failing = AtomicU64::new(u64::MAX);
    let first: std::sync::Mutex<Option<(u64, String)>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end || seed > lowest_failing.load(Ordering::Relaxed) {
                        return;
                    }
                    let plan = plan::generate(seed, knobs);
                    if let Some(violation) = run(seed, &plan, None, mutation).violation {
                        lowest_failing.fetch_min(seed, Ordering::Relaxed);
                        let mut first = first.lock().expect("first");
                        if first.as_ref().is_none_or(|(s, _)| seed < *s) {
                            *first = Some((seed, violation));
                        }
                    }
                }
            });
        }
    });
    let (seed, violation) = first.into_inner().expect("first")?;
    Some(failure(seed, knobs, mutation, violation))
}

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?} does not parse")))
}

fn knobs_from_env() -> Knobs {
    Knobs::parse(&std::env::var("SIM_KNOBS").unwrap_or_else(|_| "passing".into())).expect("SIM_KNOBS")
}

fn mutation_from_env() -> Option<Mutation> {
    std::env::var("SIM_MUTATION").ok().map(|m| Mutation::parse(&m).unwrap_or_else(|| panic!("SIM_MUTATION={m:?}")))
}

pub fn replay_from_env() {
    let Some(seed) = env::<u64>("SIM_SEED") else {
        eprintln!("set SIM_SEED (and SIM_KNOBS, SIM_KEEP, SIM_MUTATION as a failure printed them) to replay a seed");
        return;
    };
    let (knobs, mutation) = (knobs_from_env(), mutation_from_env());
    let plan = plan::generate(seed, knobs);
    let keep = std::env::var("SIM_KEEP").ok().map(|kept| {
        let kept: BTreeSet<usize> =
            kept.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().expect("SIM_KEEP")).collect();
        (0..plan.steps.len()).map(|i| kept.contains(&i)).collect::<Vec<_>>()
    });
    let run = run(seed, &plan, keep.as_deref(), mutation);
    println!("{}", run.trace.join("\n"));
    if let Some(violation) = run.violation {
        panic!("seed {seed}: {violation}");
    }
}

pub fn explore_from_env() {
    let (knobs, mutation) = (knobs_from_env(), mutation_from_env());
    let start = env::<u64>("SIM_START").unwrap_or(0);
    let minutes = env::<f64>("SIM_MINUTES");
    let batch = env::<u64>("SIM_SEEDS").unwrap_or(10_000);
    let began = std::time::Instant::now();
    let (mut from, mut total) = (start, 0);
    loop {
        let count = if minutes.is_some() { 200 } else { batch };
        if let Some(failure) = explore(from..from + count, knobs, mutation) {
            panic!("after {} seeds: {failure}", failure.seed - start + 1);
        }
        (from, total) = (from + count, total + count);
        let out_of_time = minutes.is_none_or(|m| began.elapsed().as_secs_f64() >= m * 60.0);
        if out_of_time {
            break;
        }
    }
    let rate = total as f64 / began.elapsed().as_secs_f64();
    println!("{total} seeds from {start} ({knobs:?}, mutation {mutation:?}): every promise held; {rate:.1} seeds/s");
}
