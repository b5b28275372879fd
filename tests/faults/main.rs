//! The fault suite: "nothing lost, nothing done twice", demonstrated.
//!
//! A 3-member etcd cluster and 2 coordinator replicas on loopback; worker
//! processes charge random keys (many deliberately shared) through the
//! coordinator onto a fenced ledger while this test kill -9s replicas,
//! SIGSTOPs workers for longer than their lease, cuts one replica off from
//! etcd (silently, or by resetting its connections), kills etcd members (the
//! leader too) and takes etcd's quorum away. Then every key is settled and
//! checked: one effect each in the ledger, the same completed result on every
//! replica and in everything any caller was told, and no attempt taken over
//! before the deadline its owner was told. Bounded: about 40 s of faults per
//! run (60 s for the map change); five runs (a shard-map change adding a
//! shard and removing it again, each step rolled out between the faults;
//! as is, with replica clocks skewed by more than a lease,
//! with records sharded over three etcd clusters and a whole shard killed,
//! and a rolling upgrade from the previous release), one at a time.

mod cluster;
#[path = "../common/fault_proxy.rs"]
mod fault_proxy;
mod gauges;
mod ledger;
#[path = "../common/process.rs"]
mod process;
mod worker;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use idempotency_coordinator::proto::v1::{self, coordinator_service_client::CoordinatorServiceClient};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use cluster::{EtcdCluster, Replica};
use fault_proxy::Network;
use ledger::Ledger;
use process::coordinator_binary;
use worker::{NAMESPACE, Report, Worker};

/// New keys become current at this rate; workers pick among the current
/// window, so several of them contend for the same key at the same moment.
const KEYS_PER_SECOND: f64 = 10.0;
const KEY_WINDOW: usize = 12;
const WORKER_PROCESSES: usize = 3;
const TASKS_PER_WORKER: usize = 6;
const FAULT_PHASE: Duration = Duration::from_secs(40);
/// More locks than this at once would mean attempts leak: 18 tasks own at
/// most 18, and crashed or paused owners' locks lapse within seconds.
const MOST_LOCKS: usize = 64;
/// Keys settled at once after the faults.
const SETTLE_LANES: usize = 8;
const WORKER_ENV: &str = "IDEMPOTENCY_FAULT_WORKER";
const REPORT_PREFIX: &str = "FAULT-WORKER-REPORT ";

#[derive(Serialize, Deserialize)]
struct WorkerPlan {
    urls: Vec<String>,
    ledger: String,
    seconds: u64,
    keys: usize,
}

/// Keys become current at `KEYS_PER_SECOND` over a run of `duration`.
fn keys_for(duration: Duration) -> usize {
    (duration.as_secs_f64() * KEYS_PER_SECOND) as usize + KEY_WINDOW
}

/// Entry point of the worker processes: this test binary runs itself with
/// only this test selected (it is ignored in normal runs).
#[test]
#[ignore = "run by the fault suite as a separate process"]
fn worker_process() {
    let plan: WorkerPlan =
        serde_json::from_str(&std::env::var(WORKER_ENV).expect("started by the fault suite")).expect("a worker plan");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let report = runtime.block_on(async {
        let worker = std::sync::Arc::new(Worker::new(&plan.urls, &plan.ledger, 0.05, 0.05));
        let started = Instant::now();
        let until = started + Duration::from_secs(plan.seconds);
        let tasks: Vec<_> = (0..TASKS_PER_WORKER)
            .map(|_| {
                let worker = worker.clone();
                tokio::spawn(async move {
                    while Instant::now() < until {
                        let newest = (started.elapsed().as_secs_f64() * KEYS_PER_SECOND) as usize;
                        let pick = newest + rand::Rng::random_range(&mut rand::rng(), 0..KEY_WINDOW);
                        let key = format!("k{}", pick.min(plan.keys - 1));
                        worker.settle(&key, until).await;
                        // Callers think between requests; 2 cores are shared by everything here.
                        let think = rand::Rng::random_range(&mut rand::rng(), 10..40);
                        tokio::time::sleep(Duration::from_millis(think)).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let mut report = std::mem::take(&mut *worker.report.lock().unwrap());
        report.observed.sort();
        report.observed.dedup();
        report
    });
    println!("{REPORT_PREFIX}{}", serde_json::to_string(&report).unwrap());
}

/// The gauges now; a replica that is down (being restarted) has none.
async fn sample(at: Duration, replicas: &[Replica], etcd: &EtcdCluster) -> gauges::Sample {
    gauges::Sample {
        at,
        replicas: replicas.iter().map(|r| r.pid().and_then(gauges::process_gauges)).collect(),
        etcd: gauges::etcd_gauges(etcd).await,
    }
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("kill runs");
    assert!(status.success(), "kill {signal} failed");
}

async fn wait_ready(url: &str) {
    let started = Instant::now();
    loop {
        let check = async {
            let channel = tonic::transport::Channel::from_shared(url.to_owned()).ok()?.connect().await.ok()?;
            let reply =
                HealthClient::new(channel).check(HealthCheckRequest { service: "readiness".into() }).await.ok()?;
            Some(reply.into_inner().status() == ServingStatus::Serving)
        };
        if check.await == Some(true) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{url} never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Clone, Copy)]
enum Fault {
    KillReplica,
    PauseWorker,
    KillEtcdLeader,
    KillEtcdFollower,
    LoseQuorum,
    PartitionReplica,
    /// The sharded run: one whole shard (a single-member cluster) killed
    /// and restarted.
    KillShard,
    /// The map-change run: the next step of adding shard c and removing it
    /// again, rolled out replica by replica (a settle only once `shards
    /// status --migrate` says it is safe).
    MapStep,
}

/// Every kind comes up within the first six steps (about 20 s); the second
/// replica kill comes at about 25 s.
const FAULT_CYCLE: [Fault; 8] = [
    Fault::KillReplica,
    Fault::PauseWorker,
    Fault::KillEtcdLeader,
    Fault::PartitionReplica,
    Fault::LoseQuorum,
    Fault::KillEtcdFollower,
    Fault::PauseWorker,
    Fault::KillReplica,
];

/// The map-change run's cycle: a map step between every two other faults.
const MAP_CHANGE_FAULT_CYCLE: [Fault; 14] = [
    Fault::MapStep,
    Fault::KillReplica,
    Fault::MapStep,
    Fault::PauseWorker,
    Fault::MapStep,
    Fault::KillShard,
    Fault::MapStep,
    Fault::KillEtcdLeader,
    Fault::MapStep,
    Fault::PartitionReplica,
    Fault::MapStep,
    Fault::LoseQuorum,
    Fault::KillReplica,
    Fault::PauseWorker,
];

/// One step of the map-change run's walk: the map file's lines, the shards
/// it names, and whether it settles the change before it.
struct MapStep {
    lines: &'static str,
    named: &'static [&'static str],
    settles: Option<(u64, &'static [&'static str], &'static [&'static str])>,
}

/// The walk: shard c added, then removed, each change in its three steps.
/// A settle first asks, as `shards status --migrate` does, until safe.
const MAP_WALK: [MapStep; 6] = [
    MapStep {
        lines: "epoch = 1\nshards = [\"a\", \"b\"]\n[next]\nepoch = 2\nshards = [\"a\", \"b\", \"c\"]",
        named: &["a", "b", "c"],
        settles: None,
    },
    MapStep {
        lines: "epoch = 2\nshards = [\"a\", \"b\", \"c\"]\n[previous]\nepoch = 1\nshards = [\"a\", \"b\"]",
        named: &["a", "b", "c"],
        settles: None,
    },
    MapStep {
        lines: "epoch = 2\nshards = [\"a\", \"b\", \"c\"]",
        named: &["a", "b", "c"],
        settles: Some((2, &["a", "b", "c"], &["a", "b"])),
    },
    MapStep {
        lines: "epoch = 2\nshards = [\"a\", \"b\", \"c\"]\n[next]\nepoch = 3\nshards = [\"a\", \"b\"]",
        named: &["a", "b", "c"],
        settles: None,
    },
    MapStep {
        lines: "epoch = 3\nshards = [\"a\", \"b\"]\n[previous]\nepoch = 2\nshards = [\"a\", \"b\", \"c\"]",
        named: &["a", "b", "c"],
        settles: None,
    },
    MapStep {
        lines: "epoch = 3\nshards = [\"a\", \"b\"]",
        named: &["a", "b"],
        settles: Some((3, &["a", "b"], &["a", "b", "c"])),
    },
];

/// The map-change run starts on this map.
const MAP_WALK_START: (&str, &[&str]) = ("epoch = 1\nshards = [\"a\", \"b\"]", &["a", "b"]);

/// The operator's part of a settle: asks a store at the switch step (the
/// code `shards status --migrate` runs) until nothing is left behind.
async fn settle_check(etcd: &EtcdCluster, shards: &[EtcdCluster], switch: (u64, &[&str], &[&str])) {
    use idempotency_coordinator::store::etcd::{EtcdStore, config::EtcdConfig};
    use idempotency_coordinator::store::sharded::ShardedStore;
    use idempotency_coordinator::store::sharded::shard_map::{Neighbour, Placement, ShardMap};
    let placement = |epoch, names: &[&str]| Placement { epoch, shards: names.iter().map(|n| n.to_string()).collect() };
    let (epoch, place, previous) = switch;
    let map = ShardMap {
        place: placement(epoch, place),
        neighbour: Some(Neighbour::Previous(placement(epoch - 1, previous))),
    };
    let mut stores = std::collections::BTreeMap::new();
    let urls = std::iter::once(etcd.client_urls()).chain(shards.iter().map(EtcdCluster::client_urls));
    for (name, endpoints) in ["a", "b", "c"].into_iter().zip(urls) {
        let config = EtcdConfig {
            endpoints,
            prefix: "/idempotency/".into(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            tls: None,
            credentials: None,
            batching: Default::default(),
            quota_bytes: idempotency_coordinator::store::etcd::config::DEFAULT_QUOTA_BYTES,
            shard: name.into(),
        };
        stores.insert(name.to_owned(), std::sync::Arc::new(EtcdStore::connect(&config).await.expect("etcd store")));
    }
    let store = ShardedStore::new(stores, map, Duration::from_secs(3600)).expect("the switch map");
    let started = Instant::now();
    loop {
        match store.map_status(true, Instant::now() + Duration::from_secs(10)).await {
            Ok(status) if status.settle_safe => {
                println!(
                    "settle check: safe after {:?} ({} migrated in the last pass)",
                    started.elapsed(),
                    status.migrated
                );
                return;
            }
            Ok(status) => println!("settle check: {} left behind, {} migrated", status.left_behind, status.migrated),
            Err(error) => println!("settle check: {error}"),
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the map never became safe to settle");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The sharded run's cycle: a shard kill in place of every other etcd fault.
const SHARDED_FAULT_CYCLE: [Fault; 8] = [
    Fault::KillReplica,
    Fault::KillShard,
    Fault::PauseWorker,
    Fault::KillEtcdLeader,
    Fault::PartitionReplica,
    Fault::KillShard,
    Fault::LoseQuorum,
    Fault::KillReplica,
];

#[derive(Default, Debug)]
struct Faults {
    replica_kills: u32,
    worker_pauses: u32,
    etcd_leader_kills: u32,
    etcd_follower_kills: u32,
    quorum_losses: u32,
    partitions: u32,
    shard_kills: u32,
    map_steps: usize,
}

/// What one run of the suite varies.
struct Run {
    /// Each replica's wall clock offset from the machine's, in seconds.
    skews: [i64; 2],
    /// The binary both replicas start with.
    first_binary: String,
    /// The binary a killed replica restarts with: a different one makes the
    /// kills a rolling upgrade.
    restart_binary: String,
    /// How long the load and the faults go on.
    duration: Duration,
    /// How often to sample the gauges a soak must keep flat (None: never).
    sample_every: Option<Duration>,
    /// Single-member etcd clusters beside the 3-member one, which is then
    /// one shard of several.
    extra_shards: usize,
    faults: &'static [Fault],
    /// Walks [`MAP_WALK`] (needs two extra shards).
    map_change: bool,
}

impl Run {
    fn of(first_binary: String, restart_binary: String, skews: [i64; 2]) -> Run {
        Run {
            skews,
            first_binary,
            restart_binary,
            duration: FAULT_PHASE,
            sample_every: None,
            extra_shards: 0,
            faults: &FAULT_CYCLE,
            map_change: false,
        }
    }
}

/// The runs share 2 cores: one at a time.
static ONE_RUN_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_crashes_pauses_partitions_and_etcd_failures() {
    // Sampled too: the soak's short form.
    let run_plan = Run {
        sample_every: Some(Duration::from_secs(2)),
        ..Run::of(coordinator_binary(), coordinator_binary(), [0, 0])
    };
    run(run_plan).await;
}

/// `SOAK_MINUTES` (30 unless set) of the same load and faults, with the
/// gauges sampled every 30 s: `scripts/soak.sh --minutes N`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: scripts/soak.sh runs it"]
async fn soak() {
    let minutes: u64 =
        std::env::var("SOAK_MINUTES").map(|m| m.parse().expect("SOAK_MINUTES is a number")).unwrap_or(30);
    let every = Duration::from_secs(if minutes >= 5 { 30 } else { 5 });
    let duration = Duration::from_secs(minutes * 60);
    run(Run { duration, sample_every: Some(every), ..Run::of(coordinator_binary(), coordinator_binary(), [0, 0]) })
        .await;
}

/// Replica clocks a lease and more ahead and behind: ownership and retention
/// follow etcd's leases, so nothing changes (RELIABILITY.md, "Clocks").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_with_replica_clocks_skewed_by_more_than_a_lease() {
    let skew = worker::LEASE_TTL_SECONDS + 4;
    run(Run::of(coordinator_binary(), coordinator_binary(), [skew, -skew])).await;
}

/// Records sharded over three etcd clusters (the 3-member one and two
/// single-member ones); besides the usual faults, a whole shard is killed
/// and restarted: its keys wait, the others go on, and still every key has
/// one effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_with_records_sharded_and_a_shard_killed_and_restarted() {
    let plan = Run {
        extra_shards: 2,
        faults: &SHARDED_FAULT_CYCLE,
        ..Run::of(coordinator_binary(), coordinator_binary(), [0, 0])
    };
    run(plan).await;
}

/// Records sharded over a, b (and c once added), while the map adds shard c
/// and removes it again, each change rolled out replica by replica in its
/// three steps between the usual faults: still every key has one effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_a_shard_map_change_adding_then_removing_a_shard() {
    let plan = Run {
        extra_shards: 2,
        faults: &MAP_CHANGE_FAULT_CYCLE,
        map_change: true,
        duration: Duration::from_secs(60),
        ..Run::of(coordinator_binary(), coordinator_binary(), [0, 0])
    };
    run(plan).await;
}

/// Both replicas start as the previous release (`PREVIOUS_COORDINATOR_BIN`,
/// built by scripts/build-previous-release.sh) and each restarts as this
/// build at its first kill: old and new side by side on one etcd, then new
/// only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the previous release's binary: scripts/test.sh builds it and runs this"]
async fn exactly_once_through_a_rolling_upgrade_from_the_previous_release() {
    let previous = std::env::var("PREVIOUS_COORDINATOR_BIN")
        .expect("PREVIOUS_COORDINATOR_BIN names the previous release's binary (scripts/build-previous-release.sh)");
    run(Run::of(previous, coordinator_binary(), [0, 0])).await;
}

async fn run(plan: Run) {
    let _alone = ONE_RUN_AT_A_TIME.lock().await;
    let keys = keys_for(plan.duration);
    let mut etcd = EtcdCluster::start().await;
    let mut shards = Vec::new();
    for _ in 0..plan.extra_shards {
        shards.push(EtcdCluster::start_with(1).await);
    }
    let initial_map = plan.map_change.then_some(MAP_WALK_START);
    let mut replicas = vec![
        Replica::start(&etcd, &shards, &plan.first_binary, plan.skews[0], initial_map).await,
        Replica::start(&etcd, &shards, &plan.first_binary, plan.skews[1], initial_map).await,
    ];
    for replica in &replicas {
        wait_ready(&replica.url()).await;
    }
    let ledger = Ledger::start().await;
    let urls: Vec<String> = replicas.iter().map(Replica::url).collect();
    let worker_plan = serde_json::to_string(&WorkerPlan {
        urls: urls.clone(),
        ledger: ledger.addr.to_string(),
        seconds: plan.duration.as_secs(),
        keys,
    })
    .unwrap();
    let workers: Vec<Child> = (0..WORKER_PROCESSES)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["worker_process", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
                .env(WORKER_ENV, &worker_plan)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("a worker process starts")
        })
        .collect();

    // Faults, one after another, until the phase ends.
    let mut faults = Faults::default();
    let started = Instant::now();
    let phase_end = started + plan.duration - Duration::from_secs(4);
    let mut step = 0;
    let mut samples = Vec::new();
    while Instant::now() < phase_end {
        if let Some(every) = plan.sample_every
            && started.elapsed() >= every * samples.len() as u32
        {
            samples.push(sample(started.elapsed(), &replicas, &etcd).await);
        }
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        match plan.faults[step % plan.faults.len()] {
            Fault::KillReplica => {
                let replica = &mut replicas[faults.replica_kills as usize % 2];
                replica.kill();
                tokio::time::sleep(Duration::from_millis(800)).await;
                replica.binary = plan.restart_binary.clone();
                replica.spawn();
                faults.replica_kills += 1;
            }
            Fault::PartitionReplica => {
                // Longer than the lease, so its owners' attempts lapse and
                // are taken over through the other replica meanwhile.
                let replica = &replicas[faults.partitions as usize % 2];
                let network = if faults.partitions % 2 == 0 { Network::Drop } else { Network::Reset };
                replica.network(network);
                tokio::time::sleep(Duration::from_millis(3_000)).await;
                replica.network(Network::Pass);
                faults.partitions += 1;
            }
            Fault::PauseWorker => {
                // Longer than the 2 s lease: its in-flight owners go stale.
                let worker = &workers[faults.worker_pauses as usize % WORKER_PROCESSES];
                signal(worker, "-STOP");
                tokio::time::sleep(Duration::from_millis(3_000)).await;
                signal(worker, "-CONT");
                faults.worker_pauses += 1;
            }
            Fault::KillEtcdLeader => {
                let leader = etcd.leader().await.unwrap_or(0);
                etcd.kill(leader);
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                etcd.spawn(leader);
                faults.etcd_leader_kills += 1;
            }
            Fault::KillEtcdFollower => {
                let follower = etcd.leader().await.map(|leader| (leader + 1) % 3).unwrap_or(1);
                etcd.kill(follower);
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                etcd.spawn(follower);
                faults.etcd_follower_kills += 1;
            }
            Fault::KillShard => {
                let count = shards.len();
                let shard = &mut shards[faults.shard_kills as usize % count];
                shard.kill(0);
                tokio::time::sleep(Duration::from_millis(3_000)).await;
                shard.spawn(0);
                shard.wait_for_quorum(Duration::from_secs(20)).await;
                faults.shard_kills += 1;
            }
            Fault::MapStep => {
                if let Some(step) = MAP_WALK.get(faults.map_steps) {
                    if let Some(switch) = step.settles {
                        settle_check(&etcd, &shards, switch).await;
                    }
                    for replica in &mut replicas {
                        replica.write_map(step.lines, step.named);
                        replica.kill();
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        replica.spawn();
                        wait_ready(&replica.url()).await;
                    }
                    faults.map_steps += 1;
                }
            }
            Fault::LoseQuorum => {
                // Two of three members down: no quorum at all.
                let first = etcd.leader().await.unwrap_or(0);
                let second = (first + 1) % 3;
                etcd.kill(first);
                etcd.kill(second);
                tokio::time::sleep(Duration::from_millis(3_000)).await;
                etcd.spawn(first);
                etcd.spawn(second);
                faults.quorum_losses += 1;
            }
        }
        etcd.wait_for_quorum(Duration::from_secs(20)).await;
        step += 1;
    }
    assert!((0..3).all(|i| etcd.is_running(i)));
    etcd.wait_for_quorum(Duration::from_secs(20)).await;

    let mut report = Report::default();
    for worker in workers {
        let output = tokio::task::spawn_blocking(move || worker.wait_with_output()).await.unwrap().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        // libtest prints "test worker_process ... " on the same line first.
        let Some(line) = stdout.lines().find_map(|l| l.split_once(REPORT_PREFIX).map(|(_, report)| report)) else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            panic!("a worker did not report ({}): {stdout:.2000}\n{stderr:.2000}", output.status);
        };
        report.merge(serde_json::from_str(line).expect("a worker report"));
    }

    // Settle every key, faults over: each ends completed exactly once.
    for replica in &replicas {
        wait_ready(&replica.url()).await;
    }
    let finisher = std::sync::Arc::new(Worker::new(&urls, &ledger.addr.to_string(), 0.0, 0.0));
    // A minute, and more for a soak's thousands of keys.
    let settle_until = Instant::now() + Duration::from_secs(60) + Duration::from_millis(20) * keys as u32;
    let settled: Vec<_> = (0..SETTLE_LANES)
        .map(|lane| {
            let finisher = finisher.clone();
            tokio::spawn(async move {
                for key in (lane..keys).step_by(SETTLE_LANES) {
                    finisher.settle(&format!("k{key}"), settle_until).await;
                }
            })
        })
        .collect();
    for lane in settled {
        lane.await.unwrap();
    }
    report.merge(std::mem::take(&mut *finisher.report.lock().unwrap()));

    // The checks.
    let mut violations = std::mem::take(&mut report.violations);
    let mut effect_of = std::collections::HashMap::new();
    let stale_rejected = {
        let ledger_state = ledger.state.lock().unwrap();
        for key in (0..keys).map(|k| format!("k{k}")) {
            let effects = ledger_state.keys.get(&key).map(|e| e.effects.clone()).unwrap_or_default();
            match effects.as_slice() {
                [(_, effect)] => {
                    effect_of.insert(key, effect.clone());
                }
                other => violations.push(format!("{key}: {} effects in the ledger: {other:?}", other.len())),
            }
        }
        (ledger_state.stale_writes_rejected, ledger_state.stale_claims_rejected)
    };
    // No attempt was taken over as abandoned before its owner's lease could
    // have ended (its Begin was sent, plus the TTL), on the machine's clock.
    let earliest_end: std::collections::HashMap<(&str, u32), i64> = report
        .acquisitions
        .iter()
        .map(|(key, attempt, ends)| ((key.as_str(), *attempt), *ends))
        .fold(std::collections::HashMap::new(), |mut all, (id, ends)| {
            let earliest = all.entry(id).or_insert(ends);
            *earliest = (*earliest).min(ends);
            all
        });
    let mut early_takeovers = 0;
    for (key, attempt, taken_at) in &report.abandoned_takeovers {
        if let Some(ends) = earliest_end.get(&(key.as_str(), *attempt)).filter(|ends| taken_at < ends) {
            early_takeovers += 1;
            violations
                .push(format!("{key}: attempt {attempt} taken over {} ms before its lease ended", ends - taken_at));
        }
    }
    for (key, result) in &report.observed {
        if effect_of.get(key) != Some(result) {
            violations.push(format!("{key}: a caller was told {result:?}, the ledger has {:?}", effect_of.get(key)));
        }
    }
    for url in &urls {
        let mut client = CoordinatorServiceClient::connect(url.clone()).await.unwrap();
        for (key, effect) in &effect_of {
            let lookup = v1::LookupRequest { namespace: NAMESPACE.into(), key: key.clone(), ..Default::default() };
            let record = client.lookup(lookup).await.map(|r| r.into_inner().record.unwrap());
            let stored =
                record.as_ref().ok().and_then(|r| match (r.state(), r.result.as_ref().and_then(|x| x.body.as_ref())) {
                    (v1::State::Completed, Some(v1::result::Body::Response(bytes))) => {
                        Some(String::from_utf8_lossy(bytes).into_owned())
                    }
                    _ => None,
                });
            if stored.as_ref() != Some(effect) {
                violations.push(format!("{key} on {url}: record {record:?}, ledger effect {effect:?}"));
            }
        }
    }

    println!(
        "fault suite: {keys} keys, {WORKER_PROCESSES} worker processes x {TASKS_PER_WORKER} tasks, {:?} of faults; clocks {:?} s; binaries {} then {}",
        plan.duration, plan.skews, plan.first_binary, plan.restart_binary
    );
    println!("faults injected: {faults:?}");
    println!(
        "operations: {} Begin calls, {} Complete calls, {} acquisitions, {} results observed by callers",
        report.begins,
        report.completes,
        report.acquired,
        report.observed.len()
    );
    println!(
        "takeovers: {} after abandonment ({} simulated owner crashes), {} after a retryable Fail ({} releases); LEASE_LOST rejections: {}",
        report.takeovers_abandoned,
        report.crashes,
        report.takeovers_released,
        report.released_by_fail,
        report.lease_lost
    );
    println!(
        "UNAVAILABLE (or transport) answers: {}; RESOURCE_EXHAUSTED: {}; stale owners stopped by the ledger: {} (writes rejected {}, fenced reads rejected {})",
        report.unavailable, report.overloaded, report.stale_stopped_by_ledger, stale_rejected.0, stale_rejected.1
    );
    println!(
        "takeovers checked against their owners' deadlines: {}, early: {early_takeovers}",
        report.abandoned_takeovers.len()
    );
    if plan.sample_every.is_some() {
        gauges::print(&samples);
        violations.extend(gauges::unbounded(&samples, keys, MOST_LOCKS));
    }
    println!("keys with exactly one effect: {} of {keys}; violations: {}", effect_of.len(), violations.len());
    for violation in &violations {
        println!("VIOLATION {violation}");
    }
    assert!(violations.is_empty(), "{} violations", violations.len());
    assert!(
        faults.replica_kills > 0
            && faults.worker_pauses > 0
            && faults.etcd_leader_kills > 0
            && faults.quorum_losses > 0
            && faults.partitions > 0
    );
    assert_eq!(faults.shard_kills > 0, plan.extra_shards > 0, "{faults:?}");
    if plan.map_change {
        assert_eq!(faults.map_steps, MAP_WALK.len(), "the walk did not finish: {faults:?}");
    }
    if plan.first_binary != plan.restart_binary {
        assert!(replicas.iter().all(|r| r.binary == plan.restart_binary), "not every replica was upgraded: {faults:?}");
    }
    assert!(report.takeovers_abandoned > 0, "no takeover happened: the faults did not bite");
}
