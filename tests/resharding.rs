//! The review's map-change findings (issue 25), each replayed on real etcd
//! clusters with replicas at different rollout steps, driven as in-process
//! coordinators over sharded etcd stores: tokens across clusters, settle
//! refused until nothing is left behind, a forwarding record left over from
//! an earlier change, and a replica two steps behind.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use idempotency_coordinator::core::clock::SystemClock;
use idempotency_coordinator::core::command::{BeginCommand, CompleteCommand};
use idempotency_coordinator::core::coordinator::{Coordinator, REPLAY_CLOCK_MARGIN, Settings};
use idempotency_coordinator::core::error::Error;
use idempotency_coordinator::core::limits::Limits;
use idempotency_coordinator::core::outcome::BeginOutcome;
use idempotency_coordinator::core::record::{CallResult, RecordId, ResultBody};
use idempotency_coordinator::core::store::RecordStore;
use idempotency_coordinator::store::etcd::EtcdStore;
use idempotency_coordinator::store::sharded::ShardedStore;
use idempotency_coordinator::store::sharded::shard_map::{Neighbour, Placement, ShardMap};
use tokio::time::Instant;

type Replica = Coordinator<ShardedStore<EtcdStore>>;

const FORWARDING_LASTS: Duration = Duration::from_secs(60);

fn placement(epoch: u64, shards: &[&str]) -> Placement {
    Placement { epoch, shards: shards.iter().map(|s| s.to_string()).collect() }
}

fn settled(epoch: u64, shards: &[&str]) -> ShardMap {
    ShardMap { place: placement(epoch, shards), neighbour: None }
}

fn announce(epoch: u64, shards: &[&str], next: &[&str]) -> ShardMap {
    ShardMap { place: placement(epoch, shards), neighbour: Some(Neighbour::Next(placement(epoch + 1, next))) }
}

fn switch(epoch: u64, shards: &[&str], previous: &[&str]) -> ShardMap {
    ShardMap { place: placement(epoch, shards), neighbour: Some(Neighbour::Previous(placement(epoch - 1, previous))) }
}

fn limits() -> Limits {
    Limits {
        default_lease_ttl: Duration::from_secs(5),
        max_lease_ttl: Duration::from_secs(10),
        max_wait: Duration::from_secs(5),
        default_retention: Duration::from_secs(20),
        max_retention: Duration::from_secs(20),
        max_payload_bytes: 4096,
        max_result_bytes: 4096,
    }
}

/// The clusters, named a and c as in the review, each its own etcd.
struct Clusters {
    etcds: Vec<(&'static str, Etcd)>,
}

impl Clusters {
    async fn start() -> Self {
        Self { etcds: vec![("a", Etcd::start().await), ("c", Etcd::start().await)] }
    }

    /// A replica running `map` (a new process, as a rollout starts one).
    async fn replica(&self, map: ShardMap) -> Arc<Replica> {
        self.replica_timed(map, Duration::from_secs(10)).await
    }

    /// [`Self::replica`] with `request_timeout` for its calls.
    async fn replica_timed(&self, map: ShardMap, request_timeout: Duration) -> Arc<Replica> {
        let mut stores = BTreeMap::new();
        for (name, etcd) in &self.etcds {
            let store = EtcdStore::connect(&etcd_config(etcd, "/idempotency/")).await.expect("etcd store");
            stores.insert(name.to_string(), Arc::new(store));
        }
        let store = Arc::new(ShardedStore::new(stores, map, FORWARDING_LASTS).expect("a valid map"));
        // A server's first health check: it brings every shard to the
        // replica's step (or logs why it cannot).
        store.ping(Duration::from_secs(2)).await.expect("the shards answer");
        let settings = Settings {
            limits: limits(),
            replay_cache_bytes: 0,
            request_timeout,
            max_waits_per_tenant: 64,
            replay_clock_margin: REPLAY_CLOCK_MARGIN,
        };
        Arc::new(Coordinator::new(store, Arc::new(SystemClock), settings, Default::default()))
    }
}

/// A key whose home is a under [a] and c under [a, c], as the review's k3.
fn moving_key() -> RecordId {
    moving_key_of("default")
}

fn moving_key_of(tenant: &str) -> RecordId {
    let (one, two) = (placement(1, &["a"]), placement(2, &["a", "c"]));
    (0..)
        .map(|i| RecordId { tenant: tenant.into(), namespace: "payments.create".into(), key: format!("k{i}") })
        .find(|id| one.home(id) == "a" && two.home(id) == "c")
        .expect("some key moves")
}

fn begin_command(id: &RecordId, owner: &str, ttl_s: u64) -> BeginCommand {
    BeginCommand {
        id: id.clone(),
        fingerprint: [7; 32],
        members: Vec::new(),
        lease_ttl: Duration::from_secs(ttl_s),
        wait: Duration::ZERO,
        owner: owner.into(),
        request_id: String::new(),
    }
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

async fn acquire(replica: &Replica, id: &RecordId, owner: &str, ttl_s: u64) -> u64 {
    match replica.begin(&begin_command(id, owner, ttl_s), deadline()).await {
        Ok(BeginOutcome::Acquired(acquired)) => acquired.fencing_token,
        other => panic!("{owner}: expected to acquire, got {other:?}"),
    }
}

async fn complete(replica: &Replica, id: &RecordId, token: u64, body: &str, retention_s: u64) -> Result<(), Error> {
    let result = CallResult {
        body: ResultBody::Response(body.as_bytes().to_vec()),
        content_type: "text/plain".into(),
        status_code: 0,
    };
    let command =
        CompleteCommand { id: id.clone(), fencing_token: token, result, retention: Duration::from_secs(retention_s) };
    replica.complete(command, deadline()).await.map(drop)
}

/// Issue 25, 1: owner-1 (token on a) is taken over by owner-2, who
/// completes; the record is forgotten; after the switch to [a, c] owner-3
/// gets the key on c. Its token must be above both, and owner-1's late
/// Complete must be refused: c's revisions once started again from 2.
#[tokio::test]
async fn a_key_moved_to_another_cluster_keeps_growing_tokens_and_refuses_a_stale_owner() {
    let clusters = Clusters::start().await;
    let id = moving_key();
    let old = clusters.replica(settled(1, &["a"])).await;
    let owner_1 = acquire(&old, &id, "owner-1", 2).await;
    let takeover = BeginCommand { wait: Duration::from_secs(5), ..begin_command(&id, "owner-2", 5) };
    let owner_2 = match old.begin(&takeover, deadline()).await {
        Ok(BeginOutcome::Acquired(acquired)) => acquired.fencing_token,
        other => panic!("owner-2 takes over once owner-1's lease lapses: {other:?}"),
    };
    assert!(owner_2 > owner_1);
    complete(&old, &id, owner_2, "owner-2", 20).await.expect("owner-2 completes");
    old.forget(&id, deadline()).await.expect("forgotten");

    let announced = clusters.replica(announce(1, &["a"], &["a", "c"])).await;
    announced.lookup(&id, deadline()).await.expect_err("forgotten: not found");
    let switched = clusters.replica(switch(2, &["a", "c"], &["a"])).await;
    let owner_3 = acquire(&switched, &id, "owner-3", 5).await;
    assert!(owner_3 > owner_2, "tokens must grow across the move: owner-2 {owner_2}, owner-3 {owner_3}");
    let late = complete(&switched, &id, owner_1, "owner-1", 20).await;
    assert!(matches!(late, Err(Error::LeaseLost { .. })), "owner-1's late Complete: {late:?}");
    complete(&switched, &id, owner_3, "owner-3", 20).await.expect("owner-3 completes");
    let view = switched.lookup(&id, deadline()).await.expect("the record");
    assert_eq!(view.fencing_token, owner_3);
}

/// Where `id`'s record is, read from each cluster (the operator's view):
/// the shards holding a real record and those holding a forwarding record.
async fn where_is(clusters: &Clusters, id: &RecordId) -> (Vec<&'static str>, Vec<&'static str>) {
    let (mut records, mut forwarding) = (Vec::new(), Vec::new());
    for (name, etcd) in &clusters.etcds {
        let mut kv = etcd_client::Client::connect([etcd.client_url.as_str()], None).await.expect("etcd");
        let key = format!("/idempotency/default/payments.create/{}/record", id.key);
        let answer = kv.get(key, None).await.expect("read");
        if let Some(held) = answer.kvs().first() {
            let forwards = held.value().windows(b"%forwarding".len()).any(|w| w == b"%forwarding");
            (if forwards { &mut forwarding } else { &mut records }).push(*name);
        }
    }
    (records, forwarding)
}

/// Issue 25, 2: a record begun under [a] and completed late, after the
/// switch to [a, c], still lives on a. Settling then made it new again. Now
/// a settled replica refuses to act until `shards status` on a replica of
/// the switch step finds nothing left behind.
#[tokio::test]
async fn settle_waits_for_shards_status_to_find_nothing_left_behind() {
    let clusters = Clusters::start().await;
    let id = moving_key();
    let old = clusters.replica(settled(1, &["a"])).await;
    let token = acquire(&old, &id, "owner-1", 10).await;
    clusters.replica(announce(1, &["a"], &["a", "c"])).await.lookup(&id, deadline()).await.expect("in progress");
    let switched = clusters.replica(switch(2, &["a", "c"], &["a"])).await;
    complete(&switched, &id, token, "done late", 20).await.expect("the owner completes after the switch");
    assert_eq!(where_is(&clusters, &id).await, (vec!["a"], vec![]), "it stays at its old home");

    let status = switched.map_status(false, deadline()).await.expect("status").expect("sharded");
    assert_eq!((status.left_behind, status.settle_safe), (1, false), "{status:?}");
    assert!(status.last_expires_at_ms.is_some(), "{status:?}");

    let settled_too_soon = clusters.replica(settled(2, &["a", "c"])).await;
    let refused = settled_too_soon.lookup(&id, deadline()).await;
    match refused {
        Err(Error::StoreUnavailable(why)) => assert!(why.contains("shards status"), "{why}"),
        other => panic!("a settled replica must not answer before the check: {other:?}"),
    }
    let refused = settled_too_soon.begin(&begin_command(&id, "owner-2", 5), deadline()).await;
    assert!(matches!(refused, Err(Error::StoreUnavailable(_))), "{refused:?}");

    switched.forget(&id, deadline()).await.expect("the operator forgets it");
    let status = switched.map_status(false, deadline()).await.expect("status").expect("sharded");
    assert!(status.settle_safe, "{status:?}");
    assert!(status.shards.iter().all(|s| s.settle_checked), "{status:?}");
    let settled = clusters.replica(settled(2, &["a", "c"])).await;
    assert!(matches!(settled.lookup(&id, deadline()).await, Err(Error::NotFound)));
    acquire(&settled, &id, "owner-2", 5).await;
    assert_eq!(where_is(&clusters, &id).await, (vec!["c"], vec![]));
}

/// Issue 25, 3: a forwarding record from the change that added c still
/// sits on a when c is removed again. Followed, it put the new record on c,
/// the shard being removed. It counts only for its own change now.
#[tokio::test]
async fn a_forwarding_record_left_from_an_earlier_change_is_replaced_not_followed() {
    let clusters = Clusters::start().await;
    let id = moving_key();
    // Add c: the key is created on c, behind a forwarding record on a.
    clusters.replica(announce(1, &["a"], &["a", "c"])).await.lookup(&id, deadline()).await.expect_err("nothing yet");
    let adding = clusters.replica(switch(2, &["a", "c"], &["a"])).await;
    let token = acquire(&adding, &id, "owner-1", 5).await;
    complete(&adding, &id, token, "first", 20).await.expect("completes");
    assert_eq!(where_is(&clusters, &id).await, (vec!["c"], vec!["a"]));
    adding.forget(&id, deadline()).await.expect("forgotten");
    assert!(adding.map_status(false, deadline()).await.expect("status").expect("sharded").settle_safe);
    clusters.replica(settled(2, &["a", "c"])).await.lookup(&id, deadline()).await.expect_err("forgotten");

    // Remove c again, while a still holds the forwarding record to c.
    clusters.replica(announce(2, &["a", "c"], &["a"])).await.lookup(&id, deadline()).await.expect_err("nothing");
    let removing = clusters.replica(switch(3, &["a"], &["a", "c"])).await;
    let token = acquire(&removing, &id, "owner-2", 5).await;
    complete(&removing, &id, token, "second", 20).await.expect("completes");
    // On a, the record replaced the old forwarding record; on c, this
    // change's forwarding record points back to a.
    assert_eq!(where_is(&clusters, &id).await, (vec!["a"], vec!["c"]), "created at its home under [a]");
    assert!(removing.map_status(false, deadline()).await.expect("status").expect("sharded").settle_safe);
    let settled = clusters.replica(settled(3, &["a"])).await;
    match settled.begin(&begin_command(&id, "owner-3", 5), deadline()).await {
        Ok(BeginOutcome::Completed(_)) => {}
        other => panic!("the settled map must replay the second result: {other:?}"),
    }
}

/// Issue 25, 4: a replica left on the settled old map while the others
/// switched wrote at the old home. It is refused now, naming both steps;
/// so is a switch started before the announce step reached the shards.
#[tokio::test]
async fn a_replica_two_steps_away_is_refused_naming_both_steps() {
    let clusters = Clusters::start().await;
    let laggard = clusters.replica(settled(1, &["a"])).await;
    let key = |i: u32| RecordId { tenant: "default".into(), namespace: "payments.create".into(), key: format!("n{i}") };
    acquire(&laggard, &key(0), "laggard", 5).await;

    let too_soon = clusters.replica(switch(2, &["a", "c"], &["a"])).await;
    match too_soon.begin(&begin_command(&key(1), "early", 5), deadline()).await {
        Err(Error::StoreUnavailable(why)) => assert!(why.contains("epoch 1, settled"), "{why}"),
        other => panic!("a switch before the announce step must be refused: {other:?}"),
    }

    clusters.replica(announce(1, &["a"], &["a", "c"])).await.lookup(&key(0), deadline()).await.expect("there");
    let switched = clusters.replica(switch(2, &["a", "c"], &["a"])).await;
    acquire(&switched, &key(2), "switched", 5).await;
    match laggard.begin(&begin_command(&key(3), "laggard", 5), deadline()).await {
        Err(Error::StoreUnavailable(why)) => {
            assert!(why.contains("epoch 1, settled") && why.contains("epoch 2, switch"), "{why}")
        }
        other => panic!("the laggard must be refused: {other:?}"),
    }
}

/// Found by the final review: a replica of the announce step that learned
/// of the switch while placing a record still wrote it at its old home,
/// after `shards status` had said settling was safe. It starts the call
/// again under the switch step's map now.
#[tokio::test]
async fn an_announce_replica_meeting_the_switch_places_by_the_new_map() {
    let clusters = Clusters::start().await;
    let id = moving_key();
    let announced = clusters.replica(announce(1, &["a"], &["a", "c"])).await;
    announced.lookup(&id, deadline()).await.expect_err("nothing yet");
    let switched = clusters.replica(switch(2, &["a", "c"], &["a"])).await;
    assert!(switched.map_status(false, deadline()).await.expect("status").expect("sharded").settle_safe);
    acquire(&announced, &id, "owner-1", 5).await;
    assert_eq!(
        where_is(&clusters, &id).await,
        (vec!["c"], vec!["a"]),
        "placed by the new map, behind a forwarding record"
    );
}

/// Found by the final review: the scan skipped every tenant whose encoded
/// name starts with `%` (`:` is `%3A`), so such a record left behind went
/// uncounted and settling made the key new again.
#[tokio::test]
async fn shards_status_counts_records_of_every_tenant() {
    let clusters = Clusters::start().await;
    let id = moving_key_of(":t2");
    let old = clusters.replica(settled(1, &["a"])).await;
    let token = acquire(&old, &id, "owner-1", 5).await;
    complete(&old, &id, token, "done", 20).await.expect("completes");
    clusters.replica(announce(1, &["a"], &["a", "c"])).await.lookup(&id, deadline()).await.expect("there");
    let switched = clusters.replica(switch(2, &["a", "c"], &["a"])).await;
    let status = switched.map_status(false, deadline()).await.expect("status").expect("sharded");
    assert_eq!((status.left_behind, status.settle_safe), (1, false), "{status:?}");
}

/// Found by the final review: two map files with the same epoch but other
/// shards ran side by side. A shard keeps a digest of each placement that
/// brought it to its step, and a replica whose map differs is refused.
#[tokio::test]
async fn two_maps_with_one_epoch_are_refused() {
    let clusters = Clusters::start().await;
    let id = moving_key();
    let first = clusters.replica(settled(1, &["a"])).await;
    acquire(&first, &id, "owner-1", 5).await;
    let other = clusters.replica(settled(1, &["a", "c"])).await;
    match other.lookup(&id, deadline()).await {
        Err(Error::StoreUnavailable(why)) => assert!(why.contains("names other shards"), "{why}"),
        other => panic!("a second map for epoch 1 must be refused: {other:?}"),
    }
}

/// A finished record left at its previous home need not be waited out:
/// `shards status --migrate` moves it to its new home behind a forwarding
/// record, and the settled map replays it. One still in progress stays
/// until it finishes.
#[tokio::test]
async fn finished_records_move_to_their_new_home_and_the_map_settles_at_once() {
    let clusters = Clusters::start().await;
    let (done, running) = (moving_key(), moving_key_of("other"));
    let old = clusters.replica(settled(1, &["a"])).await;
    let token = acquire(&old, &done, "owner-1", 10).await;
    complete(&old, &done, token, "the result", 20).await.expect("completes");
    let running_token = acquire(&old, &running, "owner-2", 10).await;
    clusters.replica(announce(1, &["a"], &["a", "c"])).await.lookup(&done, deadline()).await.expect("there");
    let switched = clusters.replica(switch(2, &["a", "c"], &["a"])).await;

    let status = switched.map_status(true, deadline()).await.expect("status").expect("sharded");
    assert_eq!((status.migrated, status.left_behind, status.settle_safe), (1, 1, false), "{status:?}");
    assert_eq!(where_is(&clusters, &done).await, (vec!["c"], vec!["a"]), "moved, a forwarding record in its place");
    let view = switched.lookup(&done, deadline()).await.expect("found at its new home");
    assert_eq!(view.fencing_token, token, "the record is unchanged");
    // The owner's repeated Complete still finds its record.
    complete(&switched, &done, token, "the result", 20).await.expect("a repeat is answered as before");

    complete(&switched, &running, running_token, "later", 20).await.expect("the running one completes");
    let status = switched.map_status(true, deadline()).await.expect("status").expect("sharded");
    assert_eq!((status.migrated, status.left_behind, status.settle_safe), (1, 0, true), "{status:?}");
    let settled = clusters.replica(settled(2, &["a", "c"])).await;
    for (id, body) in [(&done, "the result"), (&running, "later")] {
        match settled.begin(&begin_command(id, "retry", 5), deadline()).await {
            Ok(BeginOutcome::Completed(replay)) => {
                assert_eq!(
                    replay.result.map(|r| r.body),
                    Some(ResultBody::Response(body.as_bytes().to_vec())),
                    "{id:?}"
                )
            }
            other => panic!("{id:?}: the settled map must replay it: {other:?}"),
        }
    }
}

/// `shards status --migrate` until it has moved `count` records (an
/// abandoned attempt moves once etcd has revoked its lock's lease).
async fn migrate_until(replica: &Replica, count: u64) -> idempotency_coordinator::core::store::MapStatus {
    let started = Instant::now();
    let mut migrated = 0;
    loop {
        let status = replica.map_status(true, deadline()).await.expect("status").expect("sharded");
        migrated += status.migrated;
        if migrated >= count {
            return status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "only {migrated} of {count} moved: {status:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The map-change fault run waited forever for attempts whose owners had
/// crashed: nobody held them, but only finished records moved. Now an
/// abandoned attempt moves too and the map settles; its late owner's
/// Complete still counts (DESIGN.md: a late completion is the truth when
/// nobody took over), and a takeover at the new home says what it
/// recovered, with the token the late owner holds.
#[tokio::test]
async fn an_abandoned_attempt_moves_and_its_late_owner_still_completes() {
    let clusters = Clusters::start().await;
    let (late, taken) = (moving_key(), moving_key_of("other"));
    let old = clusters.replica(settled(1, &["a"])).await;
    let late_token = acquire(&old, &late, "owner-1", 1).await;
    let taken_token = acquire(&old, &taken, "owner-2", 1).await;
    clusters.replica(announce(1, &["a"], &["a", "c"])).await.lookup(&late, deadline()).await.expect("there");
    let switched = clusters.replica(switch(2, &["a", "c"], &["a"])).await;

    let status = migrate_until(&switched, 2).await;
    assert!(status.settle_safe, "{status:?}");
    assert_eq!(where_is(&clusters, &late).await, (vec!["c"], vec!["a"]), "moved, a forwarding record in its place");
    let view = switched.lookup(&late, deadline()).await.expect("found at its new home");
    assert_eq!(view.fencing_token, late_token, "the attempt keeps the token its owner holds");

    complete(&switched, &late, late_token, "late but true", 20).await.expect("the late owner completes");
    let takeover = match switched.begin(&begin_command(&taken, "owner-3", 5), deadline()).await {
        Ok(BeginOutcome::Acquired(acquired)) => acquired,
        other => panic!("the abandoned attempt is taken over: {other:?}"),
    };
    let recovered = takeover.recovered.expect("a takeover says what it recovered");
    assert_eq!((recovered.previous_attempt, recovered.previous_token), (1, taken_token));
    assert!(takeover.fencing_token > taken_token, "{} after {taken_token}", takeover.fencing_token);
    let stale = complete(&switched, &taken, taken_token, "stale", 20).await;
    assert!(matches!(stale, Err(Error::LeaseLost { .. })), "owner-2 was taken over: {stale:?}");

    let settled = clusters.replica(settled(2, &["a", "c"])).await;
    match settled.begin(&begin_command(&late, "retry", 5), deadline()).await {
        Ok(BeginOutcome::Completed(replay)) => {
            assert_eq!(replay.result.map(|r| r.body), Some(ResultBody::Response(b"late but true".to_vec())))
        }
        other => panic!("the settled map replays the late owner's result: {other:?}"),
    }
}

/// A migration that stopped after its copy (a lost reply, a second status
/// run) leaves a copy whose original may then change or go. Such a copy is
/// never read, and `shards status --migrate` removes it before the map may
/// settle: otherwise the settled map would replay a forgotten result.
#[tokio::test]
async fn a_copy_whose_original_went_is_never_read_and_is_removed_before_settling() {
    use idempotency_coordinator::core::store::{Expect, LeaseWant, LockChange, RecordLease, Write};
    let clusters = Clusters::start().await;
    let id = moving_key();
    let old = clusters.replica(settled(1, &["a"])).await;
    let token = acquire(&old, &id, "owner-1", 5).await;
    complete(&old, &id, token, "forgotten later", 20).await.expect("completes");
    clusters.replica(announce(1, &["a"], &["a", "c"])).await.lookup(&id, deadline()).await.expect("there");
    let switched = clusters.replica(switch(2, &["a", "c"], &["a"])).await;

    // What a migration's first half writes at c, the key's new home.
    let config = |name: &str| {
        let (_, etcd) = clusters.etcds.iter().find(|(n, _)| *n == name).expect("a cluster");
        etcd_config(etcd, "/idempotency/")
    };
    let (a, c) =
        (EtcdStore::connect(&config("a")).await.expect("a"), EtcdStore::connect(&config("c")).await.expect("c"));
    let original = a.read(&id, deadline()).await.expect("read").record.expect("on a");
    let copy = idempotency_coordinator::core::record::Record { moved_in_epoch: 2, ..original.value };
    let lease = LeaseWant { lasts: Duration::from_secs(60), slack: Duration::from_secs(2) };
    let write =
        Write { expect: Expect::Absent, record: Some((copy, RecordLease::Until(lease))), lock: LockChange::Keep };
    c.write(&id, &write, deadline()).await.expect("the copy");
    assert_eq!(where_is(&clusters, &id).await, (vec!["a", "c"], vec![]));

    switched.forget(&id, deadline()).await.expect("the original is forgotten");
    let gone = switched.lookup(&id, deadline()).await;
    assert!(matches!(gone, Err(Error::NotFound)), "the copy alone must not be read: {gone:?}");
    let status = switched.map_status(false, deadline()).await.expect("status").expect("sharded");
    assert_eq!((status.left_behind, status.settle_safe), (1, false), "the copy blocks settling: {status:?}");
    let status = switched.map_status(true, deadline()).await.expect("status").expect("sharded");
    assert!(status.settle_safe, "removed, the map may settle: {status:?}");
    assert_eq!(where_is(&clusters, &id).await, (vec![], vec![]));
    let settled = clusters.replica(settled(2, &["a", "c"])).await;
    let gone = settled.lookup(&id, deadline()).await;
    assert!(matches!(gone, Err(Error::NotFound)), "{gone:?}");
}

/// The time to live etcd gives `id`'s record key on cluster `name`.
async fn record_ttl(clusters: &Clusters, name: &str, id: &RecordId) -> i64 {
    let (_, etcd) = clusters.etcds.iter().find(|(n, _)| *n == name).expect("a cluster");
    let mut client = etcd_client::Client::connect([etcd.client_url.as_str()], None).await.expect("etcd");
    let key = format!("/idempotency/{}/payments.create/{}/record", id.tenant, id.key);
    let kv = client.get(key, None).await.expect("read").kvs().first().cloned().expect("the record key");
    client.lease_time_to_live(kv.lease(), None).await.expect("ttl").ttl()
}

/// A copy lived as long as the migrating replica's clock said the record
/// had left (plus 60 s): on a clock 120 s ahead, a record with 150 s
/// retention was gone after 96 s (review). Its forwarding record, on that
/// replica's `--max-retention`, could go before it. Now both are measured by
/// etcd: the copy lives as long as etcd would have kept the record, and the
/// forwarding record longer.
#[tokio::test]
async fn a_moved_record_lives_as_long_as_etcd_would_have_kept_it_whatever_the_clocks() {
    let clusters = Clusters::start().await;
    let id = moving_key();
    let old = clusters.replica(settled(1, &["a"])).await;
    let token = acquire(&old, &id, "owner-1", 10).await;
    complete(&old, &id, token, "kept", 20).await.expect("completes");
    let before = record_ttl(&clusters, "a", &id).await;
    clusters.replica(announce(1, &["a"], &["a", "c"])).await.lookup(&id, deadline()).await.expect("there");
    let switched = clusters.replica(switch(2, &["a", "c"], &["a"])).await;
    let status = switched.map_status(true, deadline()).await.expect("status").expect("sharded");
    assert_eq!(status.migrated, 1, "{status:?}");
    let (copy, forwarding) = (record_ttl(&clusters, "c", &id).await, record_ttl(&clusters, "a", &id).await);
    assert!(copy >= before, "the copy lives {copy} s, the record had {before} s left");
    assert!(forwarding > copy, "the forwarding record lives {forwarding} s, its copy {copy} s");
}

/// The etcd store of cluster `name`, for writing what a migration run
/// leaves behind as it would.
async fn raw_store(clusters: &Clusters, name: &str) -> EtcdStore {
    let (_, etcd) = clusters.etcds.iter().find(|(n, _)| *n == name).expect("a cluster");
    EtcdStore::connect(&etcd_config(etcd, "/idempotency/")).await.expect("etcd store")
}

/// Writes `record` at `id` on `store` as a migration's unconfirmed copy of
/// the change to `epoch`; its revision there.
async fn put_copy(
    store: &EtcdStore,
    id: &RecordId,
    record: idempotency_coordinator::core::record::Record,
    epoch: u64,
) -> i64 {
    use idempotency_coordinator::core::store::{Expect, LeaseWant, LockChange, RecordLease, Write, Written};
    let copy = idempotency_coordinator::core::record::Record { moved_in_epoch: epoch, ..record };
    let lease = RecordLease::Until(LeaseWant { lasts: Duration::from_secs(60), slack: Duration::from_secs(2) });
    let write = Write { expect: Expect::Absent, record: Some((copy, lease)), lock: LockChange::Keep };
    match store.write(id, &write, deadline()).await.expect("the copy") {
        Written::Committed { revision } => revision,
        Written::Conflict(there) => panic!("{id:?} is taken: {there:?}"),
    }
}

/// Second review: a run still in flight when another said "settle: safe"
/// can write its copy of a record forgotten meanwhile. Unconfirmed, it is
/// read by no one, but the next change's `--migrate` moved it like a record
/// and confirmed it, replaying the forgotten result; and before that, a
/// Begin of its key timed out, its claim meeting the copy it could not see.
#[tokio::test]
async fn a_copy_left_unconfirmed_by_an_earlier_change_is_never_moved_nor_in_the_way() {
    let clusters = Clusters::start().await;
    let (begun, moved) = (moving_key(), moving_key_of("other"));
    clusters.replica(announce(1, &["a"], &["a", "c"])).await.lookup(&begun, deadline()).await.expect_err("none");
    let adding = clusters.replica(switch(2, &["a", "c"], &["a"])).await;
    assert!(adding.map_status(true, deadline()).await.expect("status").expect("sharded").settle_safe);
    let added = clusters.replica(settled(2, &["a", "c"])).await;
    let c = raw_store(&clusters, "c").await;
    for id in [&begun, &moved] {
        let token = acquire(&added, id, "owner-1", 5).await;
        complete(&added, id, token, "forgotten", 20).await.expect("completes");
        let record = c.read(id, deadline()).await.expect("read").record.expect("on c").value;
        added.forget(id, deadline()).await.expect("forgotten");
        // What the late run writes after the check said safe.
        put_copy(&c, id, record, 2).await;
        assert!(matches!(added.lookup(id, deadline()).await, Err(Error::NotFound)), "never read");
    }

    clusters.replica(announce(2, &["a", "c"], &["a"])).await.lookup(&begun, deadline()).await.expect_err("none");
    let removing = clusters.replica(switch(3, &["a"], &["a", "c"])).await;
    let started = Instant::now();
    let fresh = acquire(&removing, &begun, "owner-2", 5).await;
    assert!(started.elapsed() < Duration::from_secs(2), "the Begin took {:?}", started.elapsed());
    let status = removing.map_status(true, deadline()).await.expect("status").expect("sharded");
    assert_eq!((status.migrated, status.settle_safe), (0, true), "the copy is not a record: {status:?}");
    for replica in [&removing, &clusters.replica(settled(3, &["a"])).await] {
        let found = replica.lookup(&moved, deadline()).await;
        assert!(matches!(found, Err(Error::NotFound)), "the forgotten result came back: {found:?}");
    }
    complete(&removing, &begun, fresh, "new", 20).await.expect("the new attempt completes");
}

/// Second review: between a migration's forwarding record and the
/// confirmation of its copy (or for good, if the confirmation is lost),
/// ListRecords left the record out, though Lookup found it.
#[tokio::test]
async fn a_moved_record_is_listed_before_its_copy_is_confirmed() {
    use idempotency_coordinator::core::store::{Expect, LeaseWant, LockChange, Page, RecordLease, Write};
    use idempotency_coordinator::store::sharded::forwarding;
    let clusters = Clusters::start().await;
    let id = moving_key();
    let old = clusters.replica(settled(1, &["a"])).await;
    let token = acquire(&old, &id, "owner-1", 5).await;
    complete(&old, &id, token, "moved", 20).await.expect("completes");
    clusters.replica(announce(1, &["a"], &["a", "c"])).await.lookup(&id, deadline()).await.expect("there");
    let switched = clusters.replica(switch(2, &["a", "c"], &["a"])).await;

    // A migration stopped after its forwarding record, before confirming.
    let (a, c) = (raw_store(&clusters, "a").await, raw_store(&clusters, "c").await);
    let original = a.read(&id, deadline()).await.expect("read").record.expect("on a");
    let copy = put_copy(&c, &id, original.value, 2).await;
    let lease = RecordLease::Until(LeaseWant { lasts: Duration::from_secs(120), slack: Duration::from_secs(2) });
    let replace = Write {
        expect: Expect::Unchanged { record_revision: original.revision, lock_revision: None },
        record: Some((forwarding::record("c", 2, copy), lease)),
        lock: LockChange::Keep,
    };
    a.write(&id, &replace, deadline()).await.expect("the forwarding record");

    let page = Page { tenant: id.tenant.clone(), namespace: id.namespace.clone(), after: String::new(), limit: 10 };
    let (listed, _) = switched.list(&page, deadline()).await.expect("a page");
    assert_eq!(listed.iter().map(|(key, _)| key.as_str()).collect::<Vec<_>>(), [id.key.as_str()]);
    let status = switched.map_status(true, deadline()).await.expect("status").expect("sharded");
    assert!(status.settle_safe, "the copy is confirmed: {status:?}");
    let (listed, _) = switched.list(&page, deadline()).await.expect("a page");
    assert_eq!(listed.len(), 1);
}

/// Third review: one `shards status` pass (every shard read, every record
/// moved) was capped at one request timeout, whatever the caller's
/// deadline: under load it failed after 5.1 s every time. The caller's
/// deadline bounds the pass now; the store bounds each call.
#[tokio::test]
async fn a_status_pass_is_bounded_by_the_callers_deadline_not_one_request_timeout() {
    let clusters = Clusters::start().await;
    let (one, two) = (placement(1, &["a"]), placement(2, &["a", "c"]));
    let ids: Vec<RecordId> = (0..)
        .map(|i| RecordId { tenant: "bulk".into(), namespace: "payments.create".into(), key: format!("b{i}") })
        .filter(|id| one.home(id) == "a" && two.home(id) == "c")
        .take(60)
        .collect();
    let old = clusters.replica(settled(1, &["a"])).await;
    for id in &ids {
        let token = acquire(&old, id, "owner", 5).await;
        complete(&old, id, token, "done", 20).await.expect("completes");
    }
    clusters.replica(announce(1, &["a"], &["a", "c"])).await.lookup(&ids[0], deadline()).await.expect("there");
    let request_timeout = Duration::from_millis(50);
    let switched = clusters.replica_timed(switch(2, &["a", "c"], &["a"]), request_timeout).await;
    let started = Instant::now();
    let status = switched.map_status(true, Instant::now() + Duration::from_secs(60)).await.expect("one whole pass");
    let status = status.expect("sharded");
    let took = started.elapsed();
    assert_eq!((status.migrated, status.settle_safe), (60, true), "{status:?}");
    assert!(took > request_timeout, "the pass took {took:?}: too quick to show the bound");
}
