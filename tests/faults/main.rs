//! The fault suite: "nothing lost, nothing done twice", demonstrated.
//!
//! A 3-member etcd cluster and 2 coordinator replicas on loopback; worker
//! processes charge random keys (many deliberately shared) through the
//! coordinator onto a fenced ledger while this test kill -9s replicas,
//! SIGSTOPs workers for longer than their lease, kills etcd members (the
//! leader too) and takes etcd's quorum away. Then every key is settled and
//! checked: one effect each in the ledger, the same completed result on every
//! replica and in everything any caller was told. Bounded: about 40 s of faults.

mod cluster;
mod ledger;
mod worker;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use idempotency_coordinator::proto::v1::{self, coordinator_service_client::CoordinatorServiceClient};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use cluster::{EtcdCluster, Replica};
use ledger::Ledger;
use worker::{NAMESPACE, Report, Worker};

/// New keys become current at this rate; workers pick among the current
/// window, so several of them contend for the same key at the same moment.
const KEYS_PER_SECOND: f64 = 10.0;
const KEY_WINDOW: usize = 12;
const KEYS: usize = 40 * 10 + KEY_WINDOW;
const WORKER_PROCESSES: usize = 3;
const TASKS_PER_WORKER: usize = 6;
const FAULT_PHASE: Duration = Duration::from_secs(40);
const WORKER_ENV: &str = "IDEMPOTENCY_FAULT_WORKER";
const REPORT_PREFIX: &str = "FAULT-WORKER-REPORT ";

#[derive(Serialize, Deserialize)]
struct WorkerPlan {
    urls: Vec<String>,
    ledger: String,
    seconds: u64,
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
                        let key = format!("k{}", pick.min(KEYS - 1));
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
}

/// Every kind comes up within the first five steps (about 20 s).
const FAULT_CYCLE: [Fault; 7] = [
    Fault::KillReplica,
    Fault::PauseWorker,
    Fault::KillEtcdLeader,
    Fault::LoseQuorum,
    Fault::KillEtcdFollower,
    Fault::PauseWorker,
    Fault::KillReplica,
];

#[derive(Default, Debug)]
struct Faults {
    replica_kills: u32,
    worker_pauses: u32,
    etcd_leader_kills: u32,
    etcd_follower_kills: u32,
    quorum_losses: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_crashes_pauses_and_etcd_failures() {
    let mut etcd = EtcdCluster::start().await;
    let mut replicas = vec![Replica::start(&etcd.endpoints()), Replica::start(&etcd.endpoints())];
    for replica in &replicas {
        wait_ready(&replica.url()).await;
    }
    let ledger = Ledger::start().await;
    let urls: Vec<String> = replicas.iter().map(Replica::url).collect();
    let plan = serde_json::to_string(&WorkerPlan {
        urls: urls.clone(),
        ledger: ledger.addr.to_string(),
        seconds: FAULT_PHASE.as_secs(),
    })
    .unwrap();
    let workers: Vec<Child> = (0..WORKER_PROCESSES)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["worker_process", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
                .env(WORKER_ENV, &plan)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("a worker process starts")
        })
        .collect();

    // Faults, one after another, until the phase ends.
    let mut faults = Faults::default();
    let phase_end = Instant::now() + FAULT_PHASE - Duration::from_secs(4);
    let mut step = 0;
    while Instant::now() < phase_end {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        match FAULT_CYCLE[step % FAULT_CYCLE.len()] {
            Fault::KillReplica => {
                let replica = &mut replicas[faults.replica_kills as usize % 2];
                replica.kill();
                tokio::time::sleep(Duration::from_millis(800)).await;
                replica.spawn();
                faults.replica_kills += 1;
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
    let settle_until = Instant::now() + Duration::from_secs(60);
    let settled: Vec<_> = (0..4)
        .map(|lane| {
            let finisher = finisher.clone();
            tokio::spawn(async move {
                for key in (lane..KEYS).step_by(4) {
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
        for key in (0..KEYS).map(|k| format!("k{k}")) {
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
        "fault suite: {KEYS} keys, {WORKER_PROCESSES} worker processes x {TASKS_PER_WORKER} tasks, {FAULT_PHASE:?} of faults"
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
    println!("keys with exactly one effect: {} of {KEYS}; violations: {}", effect_of.len(), violations.len());
    for violation in &violations {
        println!("VIOLATION {violation}");
    }
    assert!(violations.is_empty(), "{} violations", violations.len());
    assert!(
        faults.replica_kills > 0
            && faults.worker_pauses > 0
            && faults.etcd_leader_kills > 0
            && faults.quorum_losses > 0
    );
    assert!(report.takeovers_abandoned > 0, "no takeover happened: the faults did not bite");
}
