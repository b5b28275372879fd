//! The simulated deployment: clusters, replicas running the real
//! `Coordinator` over the real `ShardedStore`, callers carrying out the
//! plan, and the operator rolling out shard maps. Everything runs on one
//! thread on tokio's paused clock, so a plan replays exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idempotency_coordinator::core::clock::Clock;
use idempotency_coordinator::core::command::{BeginCommand, CompleteCommand, ExtendCommand, FailCommand};
use idempotency_coordinator::core::coordinator::{Coordinator, Settings};
use idempotency_coordinator::core::error::Error;
use idempotency_coordinator::core::limits::Limits;
use idempotency_coordinator::core::outcome::{BeginOutcome, PublicState};
use idempotency_coordinator::core::record::{CallError, CallResult, RecordId, ResultBody};
use idempotency_coordinator::store::memory::MemoryStore;
use idempotency_coordinator::store::sharded::ShardedStore;
use idempotency_coordinator::store::sharded::forwarding;
use idempotency_coordinator::store::sharded::shard_map::{Neighbour, Placement, ShardMap};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, Link, Mutation};
use crate::oracle::{Answer, Oracle};
use crate::plan::{Action, CLUSTERS, KEYS, MapStep, Plan, REPLICAS};

pub const MAX_RETENTION_MS: u64 = 20_000;
pub const MAX_LEASE_TTL_MS: u64 = 10_000;
pub const DEFAULT_RETENTION_MS: u64 = 20_000;
/// How far from the true time the plan sets a replica's clock.
pub const MAX_SKEW_MS: i64 = 8_000;
/// When every replica's clocks start: a fixed instant, so runs replay exactly.
const ORIGIN_MS: i64 = 1_800_000_000_000;

/// A replica's wall clock: the true time plus its skew, which the plan sets.
pub struct SimClock {
    start: Instant,
    offset_ms: AtomicI64,
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        ORIGIN_MS + self.start.elapsed().as_millis() as i64 + self.offset_ms.load(Ordering::Relaxed)
    }
}

type Store = ShardedStore<Link>;

/// One running replica process: restarted, it is a new one (caches lost,
/// connections new), with the same clock.
struct Process {
    coordinator: Arc<Coordinator<Store>>,
    links: Vec<Arc<Link>>,
    tasks: Vec<JoinHandle<()>>,
    step: MapStep,
}

impl Drop for Process {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

pub struct World {
    seed: u64,
    start: Instant,
    clusters: Vec<Arc<Cluster>>,
    clocks: Vec<Arc<SimClock>>,
    processes: Vec<Mutex<Process>>,
    generation: Mutex<u64>,
    /// Per intent: the fencing token of the latest attempt it was handed.
    tokens: Mutex<Vec<Option<u64>>>,
    pub oracle: Mutex<Oracle>,
    pub trace: Mutex<Vec<String>>,
    /// Records nobody holds that the operator's last `shards status
    /// --migrate` left where the settled map won't look: (cluster, key,
    /// revision).
    unheld_left_behind: Mutex<BTreeSet<(String, usize, i64)>>,
}

pub fn record_id(key: usize) -> RecordId {
    RecordId { tenant: "t".into(), namespace: "ns".into(), key: format!("k{key}") }
}

fn shard_map(step: &MapStep) -> ShardMap {
    let names = |shards: &[&str]| shards.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match step {
        MapStep::Settled { epoch, shards } => ShardMap::single(*epoch, names(shards)),
        MapStep::Announce { epoch, shards, next } => ShardMap {
            place: Placement { epoch: *epoch, shards: names(shards) },
            neighbour: Some(Neighbour::Next(Placement { epoch: epoch + 1, shards: names(next) })),
        },
        MapStep::Switch { epoch, shards, previous } => ShardMap {
            place: Placement { epoch: *epoch, shards: names(shards) },
            neighbour: Some(Neighbour::Previous(Placement { epoch: epoch - 1, shards: names(previous) })),
        },
    }
}

fn settings() -> Settings {
    let limits = Limits {
        default_lease_ttl: Duration::from_secs(4),
        max_lease_ttl: Duration::from_millis(MAX_LEASE_TTL_MS),
        max_wait: Duration::from_secs(5),
        default_retention: Duration::from_millis(DEFAULT_RETENTION_MS),
        max_retention: Duration::from_millis(MAX_RETENTION_MS),
        max_payload_bytes: 1024,
        max_result_bytes: 1024,
    };
    Settings {
        limits,
        replay_cache_bytes: 16 * 1024 * 1024,
        request_timeout: Duration::from_secs(5),
        max_waits_per_tenant: 1_000,
        // Above the largest skew between two replicas the plan sets.
        replay_clock_margin: Duration::from_millis(2 * MAX_SKEW_MS as u64 + 1_000),
    }
}

impl World {
    pub fn new(plan: &Plan, seed: u64, mutation: Option<Mutation>) -> Arc<Self> {
        let start = Instant::now();
        let truth = Arc::new(SimClock { start, offset_ms: AtomicI64::new(0) });
        let clusters = CLUSTERS
            .iter()
            .enumerate()
            .map(|(n, name)| {
                let first = if plan.knobs.overlapping_revisions { 0 } else { n as i64 * 1_000_000 };
                Arc::new(Cluster::new(name, MemoryStore::starting_at(truth.clone(), first), mutation))
            })
            .collect();
        let clocks = (0..REPLICAS).map(|_| Arc::new(SimClock { start, offset_ms: AtomicI64::new(0) })).collect();
        let world = Arc::new(World {
            seed,
            start,
            clusters,
            clocks,
            processes: Vec::new(),
            generation: Mutex::new(0),
            tokens: Mutex::new(vec![None; plan.intents.len()]),
            oracle: Mutex::new(Oracle::new(plan.intents.clone())),
            trace: Mutex::new(Vec::new()),
            unheld_left_behind: Mutex::new(BTreeSet::new()),
        });
        // Processes need the world's clusters and clocks first.
        let processes = (0..REPLICAS).map(|r| Mutex::new(world.process(r, plan.initial.clone()))).collect();
        let mut world = Arc::into_inner(world).expect("no other handle yet");
        world.processes = processes;
        Arc::new(world)
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn log(&self, line: String) {
        let line = format!("{:>7} ms  {line}", self.now_ms());
        self.trace.lock().expect("trace").push(line);
    }

    fn violation(&self, found: Result<(), String>) {
        if let Err(why) = found {
            self.log(format!("VIOLATION: {why}"));
            self.oracle.lock().expect("oracle").violations.push(why);
        }
    }

    pub fn violated(&self) -> bool {
        !self.oracle.lock().expect("oracle").violations.is_empty()
    }

    fn process(&self, replica: usize, step: MapStep) -> Process {
        let generation = {
            let mut generation = self.generation.lock().expect("generation");
            *generation += 1;
            *generation
        };
        let map = shard_map(&step);
        let links: Vec<Arc<Link>> = self
            .clusters
            .iter()
            .enumerate()
            .map(|(n, cluster)| {
                let seed = self.seed ^ (generation << 32) ^ ((replica as u64) << 8) ^ n as u64;
                Arc::new(Link::new(cluster.clone(), seed))
            })
            .collect();
        let named = map.shard_names();
        let stores: BTreeMap<String, Arc<Link>> = links
            .iter()
            .filter(|link| named.contains(link.cluster.name.as_str()))
            .map(|link| (link.cluster.name.clone(), link.clone()))
            .collect();
        let forwarding_lasts = Duration::from_millis(MAX_RETENTION_MS + MAX_LEASE_TTL_MS);
        let store = Arc::new(ShardedStore::new(stores, map, forwarding_lasts).expect("a valid shard map"));
        let clock: Arc<dyn Clock> = self.clocks[replica].clone();
        let coordinator = Arc::new(Coordinator::new(store.clone(), clock, settings(), CancellationToken::new()));
        let follow = coordinator.follow_forgets();
        // The readiness loop: it is what marks a shard that does not answer.
        let health = tokio::spawn(async move {
            loop {
                let _ =
                    idempotency_coordinator::core::store::RecordStore::ping(&*store, Duration::from_millis(500)).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Process { coordinator, links, tasks: vec![follow, health], step }
    }

    fn coordinator(&self, replica: usize) -> Arc<Coordinator<Store>> {
        self.processes[replica].lock().expect("process").coordinator.clone()
    }

    fn link(&self, replica: usize, cluster: usize) -> Arc<Link> {
        self.processes[replica].lock().expect("process").links[cluster].clone()
    }

    fn restart(&self, replica: usize, step: Option<MapStep>) {
        let step = step.unwrap_or_else(|| self.processes[replica].lock().expect("process").step.clone());
        let fresh = self.process(replica, step);
        let old = std::mem::replace(&mut *self.processes[replica].lock().expect("process"), fresh);
        drop(old);
    }

    /// Asks replicas of the switch step whether the map may settle on
    /// `settled`, as an operator runs `shards status --migrate`: two at
    /// once where two are at that step, as when a timed-out check is run
    /// again while the first still migrates. A record that no attempt holds
    /// can always be moved, so one that nobody held from before a pass to
    /// after it, unchanged, in two passes in a row, is a violation: the
    /// operator would wait for its retention to end.
    pub async fn settle_checked(&self, settled: &[&'static str]) -> bool {
        let switching: Vec<usize> = (0..REPLICAS)
            .filter(|r| matches!(self.processes[*r].lock().expect("process").step, MapStep::Switch { .. }))
            .take(2)
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        let unheld_before = self.unheld_left_behind(settled).await;
        let statuses = futures::future::join_all(
            switching.iter().map(|replica| async move { self.coordinator(*replica).map_status(true, deadline).await }),
        )
        .await;
        for (replica, status) in switching.iter().zip(&statuses) {
            self.log(format!("operator: r{replica} shards status: {status:?}"));
        }
        let safe = statuses.iter().any(|status| matches!(status, Ok(Some(status)) if status.settle_safe));
        let answered = statuses.iter().any(Result::is_ok);
        let unheld: BTreeSet<_> = if answered && !safe {
            self.unheld_left_behind(settled).await.intersection(&unheld_before).cloned().collect()
        } else {
            BTreeSet::new()
        };
        let mut before = self.unheld_left_behind.lock().expect("unheld");
        if let Some((cluster, key, revision)) = unheld.intersection(&before).next() {
            self.violation(Err(format!(
                "shards status --migrate left k{key} on {cluster} (revision {revision}), which no attempt holds, \
                 behind in two passes in a row"
            )));
        }
        *before = unheld;
        safe
    }

    /// Records where `settled` won't look that no live lock holds and that
    /// are not about to expire (read from the clusters themselves).
    async fn unheld_left_behind(&self, settled: &[&'static str]) -> BTreeSet<(String, usize, i64)> {
        let placement = Placement { epoch: 0, shards: settled.iter().map(|s| s.to_string()).collect() };
        // Past this, a record may be waiting out its retention lease's slack.
        let expiring_ms = ORIGIN_MS + self.now_ms() as i64 + MAX_SKEW_MS;
        let mut unheld = BTreeSet::new();
        for key in 0..KEYS {
            let id = record_id(key);
            let home = placement.home(&id);
            for cluster in self.clusters.iter().filter(|c| c.name != home) {
                let held = cluster.peek(&id).await;
                if let Some(record) = held.record
                    && !forwarding::is_forwarding(&record.value)
                    && held.lock.is_none()
                    && record.value.expires_at_ms > expiring_ms
                {
                    unheld.insert((cluster.name.clone(), key, record.revision));
                }
            }
        }
        unheld
    }

    /// Once `shards status` said settling is safe, nothing may be left
    /// where the settled map won't look, then or later in this change.
    pub async fn check_nothing_left_behind(&self, settled: &[&'static str]) {
        if !self.nothing_left_behind(settled).await {
            self.violation(Err(format!(
                "shards status said settling on {settled:?} is safe, but a record is left where that map won't look"
            )));
        }
    }

    /// Whether settling on `settled` now loses no record: every record and
    /// lock of every key is at its settled home, or behind a forwarding
    /// record there (read from the clusters themselves).
    async fn nothing_left_behind(&self, settled: &[&'static str]) -> bool {
        let placement = Placement { epoch: 0, shards: settled.iter().map(|s| s.to_string()).collect() };
        for key in 0..KEYS {
            let id = record_id(key);
            let home = placement.home(&id).to_owned();
            let at_home = self.cluster(&home).peek(&id).await;
            let reachable = at_home
                .record
                .as_ref()
                .filter(|r| forwarding::is_forwarding(&r.value))
                .map(|r| r.value.request_id.clone());
            for cluster in &self.clusters {
                if cluster.name == home || Some(&cluster.name) == reachable.as_ref() {
                    continue;
                }
                let held = cluster.peek(&id).await;
                let real = held.record.as_ref().is_some_and(|r| !forwarding::is_forwarding(&r.value));
                if real || (held.lock.is_some() && held.record.is_none()) {
                    return false;
                }
            }
        }
        true
    }

    fn cluster(&self, name: &str) -> &Arc<Cluster> {
        self.clusters.iter().find(|c| c.name == name).expect("a known cluster")
    }

    /// Carries out one action; callers' calls run as tasks of their own.
    pub fn act(self: &Arc<Self>, index: usize, action: &Action) {
        let world = self.clone();
        match action.clone() {
            Action::Begin { intent, replica, ttl_s, wait_ms, retry } => {
                tokio::spawn(async move { world.begin(index, intent, replica, ttl_s, wait_ms, retry).await });
            }
            Action::Complete { intent, replica, retention_s } => {
                tokio::spawn(async move { world.complete(index, intent, replica, retention_s).await });
            }
            Action::Fail { intent, replica, retryable, retention_s } => {
                tokio::spawn(async move { world.fail(index, intent, replica, retryable, retention_s).await });
            }
            Action::Extend { intent, replica, ttl_s } => {
                tokio::spawn(async move { world.extend(index, intent, replica, ttl_s).await });
            }
            Action::Lookup { key, replica } => {
                tokio::spawn(async move { world.lookup(index, key, replica).await });
            }
            Action::Forget { key, replica } => {
                tokio::spawn(async move { world.forget(index, key, replica).await });
            }
            Action::Restart { replica } => {
                self.log(format!("#{index} r{replica} restarts"));
                self.restart(replica, None);
            }
            Action::Clock { replica, offset_ms } => {
                self.log(format!("#{index} r{replica} clock set {offset_ms:+} ms from true time"));
                self.clocks[replica].offset_ms.store(offset_ms, Ordering::Relaxed);
            }
            Action::WatchLag { replica, cluster, lag_ms } => {
                self.log(format!("#{index} r{replica} watches on {} lag {lag_ms} ms", CLUSTERS[cluster]));
                self.link(replica, cluster).faults.watch_lag_ms.store(lag_ms, Ordering::Relaxed);
            }
            Action::Silence { replica, cluster, silent } => {
                self.log(format!("#{index} r{replica} link to {} silent: {silent}", CLUSTERS[cluster]));
                self.link(replica, cluster).faults.silent.store(silent, Ordering::Relaxed);
            }
            Action::BreakFeed { replica, cluster } => {
                self.log(format!("#{index} r{replica} forget feed from {} breaks", CLUSTERS[cluster]));
                self.link(replica, cluster).break_feed();
            }
            Action::ClusterDown { cluster, down } => {
                self.log(format!("#{index} cluster {} down: {down}", CLUSTERS[cluster]));
                self.clusters[cluster].set_down(down);
            }
            Action::Flaky { cluster, flaky } => {
                self.log(format!("#{index} cluster {} loses replies: {flaky}", CLUSTERS[cluster]));
                self.clusters[cluster].set_flaky(flaky);
            }
            Action::Rollout { replica, step } => {
                self.log(format!("#{index} r{replica} rolls out {step:?}"));
                self.restart(replica, Some(step));
            }
            Action::AwaitSafeSettle { .. } => unreachable!("the operator waits for it (runner::operator)"),
        }
    }

    async fn begin(&self, index: usize, intent: usize, replica: usize, ttl_s: u64, wait_ms: u64, retry: bool) {
        let the = self.oracle.lock().expect("oracle").intents[intent];
        // A retry repeats the intent's call: its request_id and its TTL.
        let (request_id, ttl_s) = if retry { (format!("i{intent}"), the.ttl_s) } else { (format!("s{index}"), ttl_s) };
        let command = BeginCommand {
            id: record_id(the.key),
            fingerprint: [the.payload + 1; 32],
            members: Vec::new(),
            lease_ttl: Duration::from_secs(ttl_s),
            wait: Duration::from_millis(wait_ms),
            owner: format!("i{intent}"),
            request_id: request_id.clone(),
        };
        let sent = self.now_ms();
        self.oracle.lock().expect("oracle").begin_sent(the.key, the.payload, sent, index, retry.then_some(intent));
        let deadline = Instant::now() + Duration::from_secs(10) + command.wait;
        let answer = self.coordinator(replica).begin(&command, deadline).await;
        let line = format!(
            "#{index} r{replica} begin i{intent} k{} p{} ttl {ttl_s}s wait {wait_ms}ms request_id {request_id} (sent {sent})",
            the.key, the.payload
        );
        let answer = match answer {
            Ok(BeginOutcome::Acquired(acquired)) => {
                self.tokens.lock().expect("tokens")[intent] = Some(acquired.fencing_token);
                self.log(format!(
                    "{line} -> acquired token {} attempt {} recovered {:?}",
                    acquired.fencing_token,
                    acquired.attempt,
                    acquired.recovered.as_ref().map(|r| (r.reason, r.previous_attempt))
                ));
                Answer::Acquired {
                    token: acquired.fencing_token,
                    attempt: acquired.attempt,
                    recovered_from: acquired.recovered.map(|r| r.previous_attempt),
                    ttl_ms: ttl_s * 1_000,
                    request_id,
                }
            }
            Ok(BeginOutcome::Completed(completed)) => {
                let result = completed.result.map(|r| match r.body {
                    ResultBody::Response(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    ResultBody::ResourceRef(reference) => reference,
                });
                self.log(format!("{line} -> completed {result:?} attempt {}", completed.attempt));
                Answer::Replayed(result.unwrap_or_default())
            }
            Ok(BeginOutcome::Failed(failed)) => {
                let message = failed.error.map(|e| e.message).unwrap_or_default();
                self.log(format!("{line} -> failed {message:?}"));
                Answer::Replayed(message)
            }
            Ok(BeginOutcome::InProgress(busy)) => {
                self.log(format!("{line} -> in progress (attempt {})", busy.attempt));
                Answer::Busy
            }
            Err(Error::KeyReused { .. }) => {
                self.log(format!("{line} -> key reused"));
                Answer::KeyReused
            }
            Err(error) => {
                self.log(format!("{line} -> error: {error}"));
                Answer::Error
            }
        };
        let found = self.oracle.lock().expect("oracle").begin_answered(intent, index, sent, self.now_ms(), answer);
        self.violation(found);
    }

    /// The result an owner stores: which intent, payload and token made it.
    fn result_of(&self, intent: usize, token: u64) -> String {
        let the = self.oracle.lock().expect("oracle").intents[intent];
        format!("i{intent}/p{}/t{token}", the.payload)
    }

    async fn complete(&self, index: usize, intent: usize, replica: usize, retention_s: u64) {
        let Some(token) = self.tokens.lock().expect("tokens")[intent] else { return };
        let key = self.oracle.lock().expect("oracle").intents[intent].key;
        let result = self.result_of(intent, token);
        // The side effect, fenced by the token: a ledger refuses older tokens.
        let performed = self.oracle.lock().expect("oracle").ledger_write(key, token);
        let command = CompleteCommand {
            id: record_id(key),
            fencing_token: token,
            result: CallResult {
                body: ResultBody::Response(result.clone().into_bytes()),
                content_type: String::new(),
                status_code: 0,
            },
            retention: Duration::from_secs(retention_s),
        };
        let sent = self.now_ms();
        self.oracle.lock().expect("oracle").finish_sent(key, token, Some(sent + retention_s * 1_000));
        let answer = self.coordinator(replica).complete(command, Instant::now() + Duration::from_secs(10)).await;
        self.log(format!(
            "#{index} r{replica} complete i{intent} k{key} token {token} {result} retention {retention_s}s (ledger took it: {performed}, sent {sent}) -> {}",
            answer.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.to_string())
        ));
        self.finished(key, token, sent, answer.as_ref().map(|_| ()), Some((result, performed)));
    }

    /// Tells the oracle how a Complete or Fail ended.
    fn finished(&self, key: usize, token: u64, sent: u64, answer: Result<(), &Error>, kept: Option<(String, bool)>) {
        let refused = answer.is_err_and(decided);
        let mut oracle = self.oracle.lock().expect("oracle");
        let mut found = oracle.finished(key, token, sent, self.now_ms(), answer.is_ok(), kept, refused);
        if found.is_ok() && matches!(answer, Err(Error::LeaseLost { .. })) {
            found = oracle.lease_lost(key, token, sent);
        }
        drop(oracle);
        self.violation(found);
    }

    async fn fail(&self, index: usize, intent: usize, replica: usize, retryable: bool, retention_s: u64) {
        let Some(token) = self.tokens.lock().expect("tokens")[intent] else { return };
        let key = self.oracle.lock().expect("oracle").intents[intent].key;
        let message = self.result_of(intent, token);
        let command = FailCommand {
            id: record_id(key),
            fencing_token: token,
            error: CallError { code: "DECLINED".into(), message: message.clone(), details: Vec::new() },
            retryable,
            retention: Duration::from_secs(retention_s),
        };
        let sent = self.now_ms();
        let kept_until = (!retryable).then_some(sent + retention_s * 1_000);
        self.oracle.lock().expect("oracle").finish_sent(key, token, kept_until);
        let answer = self.coordinator(replica).fail(command, Instant::now() + Duration::from_secs(10)).await;
        self.log(format!(
            "#{index} r{replica} fail i{intent} k{key} token {token} retryable {retryable} {message} (sent {sent}) -> {}",
            answer.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.to_string())
        ));
        // A released attempt leaves nothing to replay; a final failure does.
        let kept = (!retryable).then_some((message, true));
        self.finished(key, token, sent, answer.as_ref().map(|_| ()), kept);
    }

    async fn extend(&self, index: usize, intent: usize, replica: usize, ttl_s: u64) {
        let Some(token) = self.tokens.lock().expect("tokens")[intent] else { return };
        let key = self.oracle.lock().expect("oracle").intents[intent].key;
        let command = ExtendCommand { id: record_id(key), fencing_token: token, lease_ttl: Duration::from_secs(ttl_s) };
        let sent = self.now_ms();
        let answer = self.coordinator(replica).extend(command, Instant::now() + Duration::from_secs(10)).await;
        self.log(format!(
            "#{index} r{replica} extend i{intent} k{key} token {token} ttl {ttl_s}s (sent {sent}) -> {}",
            answer.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.to_string())
        ));
        let until = sent + ttl_s * 1_000;
        match answer {
            Ok(_) => self.oracle.lock().expect("oracle").extended(key, token, sent, until),
            Err(error) if !decided(&error) => self.oracle.lock().expect("oracle").extend_unknown(key, token, until),
            Err(_) => {}
        }
    }

    async fn lookup(&self, index: usize, key: usize, replica: usize) {
        let sent = self.now_ms();
        let answer = self.coordinator(replica).lookup(&record_id(key), Instant::now() + Duration::from_secs(10)).await;
        let seen = match &answer {
            Ok(view) => match view.state {
                PublicState::Completed => Answer::Replayed(
                    view.result
                        .as_ref()
                        .map(|r| match &r.body {
                            ResultBody::Response(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                            ResultBody::ResourceRef(reference) => reference.clone(),
                        })
                        .unwrap_or_default(),
                ),
                PublicState::Failed => {
                    Answer::Replayed(view.error.as_ref().map(|e| e.message.clone()).unwrap_or_default())
                }
                PublicState::InProgress => Answer::Busy,
            },
            Err(Error::NotFound) => Answer::NotFound,
            Err(_) => Answer::Error,
        };
        self.log(format!("#{index} r{replica} lookup k{key} (sent {sent}) -> {seen:?}"));
        let found = self.oracle.lock().expect("oracle").looked_up(key, sent, self.now_ms(), seen);
        self.violation(found);
    }

    async fn forget(&self, index: usize, key: usize, replica: usize) {
        let sent = self.now_ms();
        self.oracle.lock().expect("oracle").forget_sent(key, sent);
        let answer = self.coordinator(replica).forget(&record_id(key), Instant::now() + Duration::from_secs(10)).await;
        self.log(format!(
            "#{index} r{replica} forget k{key} (sent {sent}) -> {}",
            answer.as_ref().map(|v| format!("forgot token {}", v.fencing_token)).unwrap_or_else(|e| e.to_string())
        ));
        let deleted = match answer {
            Ok(view) => Some(view.fencing_token),
            // Certainly nothing deleted.
            Err(Error::NotFound | Error::RecordInProgress { .. }) => None,
            // It may have happened: the forget stays open.
            Err(_) => return,
        };
        self.oracle.lock().expect("oracle").forgotten(key, sent, deleted, self.now_ms());
    }

    /// The replicas' map steps, for the trace's end.
    pub fn steps(&self) -> BTreeSet<String> {
        self.processes.iter().map(|p| format!("{:?}", p.lock().expect("process").step)).collect()
    }
}

/// Whether an error says the call certainly did not happen (as opposed to
/// an error after which it may have).
fn decided(error: &Error) -> bool {
    matches!(error, Error::LeaseLost { .. } | Error::AlreadyFinished { .. } | Error::NotFound)
}
