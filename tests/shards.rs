//! A coordinator over three real etcd clusters (`--shard-map`): every record
//! on its shard and only there; one shard stopped makes only its records
//! UNAVAILABLE while readiness stays SERVING and the shard gauge says which
//! shard is down; and two replicas on neighbouring map epochs, racing on the
//! same keys, never put a record on two shards.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use idempotency_coordinator::core::record::RecordId;
use idempotency_coordinator::proto::v1::{self, begin_response::Outcome};
use idempotency_coordinator::store::sharded::shard_map::Placement;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

const NAMES: [&str; 3] = ["a", "b", "c"];

/// Metrics are process-wide, and both tests have a shard named b: one test
/// at a time, so that one's gauges are not the other's.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn id(key: &str) -> RecordId {
    RecordId { tenant: "default".into(), namespace: "payments.create".into(), key: key.into() }
}

fn placement(epoch: u64, names: &[&str]) -> Placement {
    Placement { epoch, shards: names.iter().map(|n| n.to_string()).collect() }
}

/// A shard-map file naming `clusters` as shards a, b, c; `map` holds its
/// epoch, shards and neighbour lines.
fn shard_map(dir: &tempfile::TempDir, file: &str, clusters: &[Etcd], map: &str) -> String {
    let mut text = map.to_owned();
    for (name, etcd) in NAMES.iter().zip(clusters) {
        text.push_str(&format!("\n[shard.{name}]\nendpoints = [\"{}\"]\n", etcd.client_url));
    }
    let path = dir.path().join(file);
    std::fs::write(&path, text).expect("write the shard map");
    path.display().to_string()
}

async fn clusters() -> Vec<Etcd> {
    let mut clusters = Vec::new();
    for _ in NAMES {
        clusters.push(Etcd::start().await);
    }
    clusters
}

/// Per key, the shards holding its record, and those holding a forwarding
/// record for it, read straight from each cluster's etcd.
async fn where_records_are(
    clusters: &[Etcd],
) -> (BTreeMap<String, Vec<&'static str>>, BTreeMap<String, Vec<&'static str>>) {
    let (mut records, mut forwarding) = (BTreeMap::new(), BTreeMap::new());
    for (name, etcd) in NAMES.iter().zip(clusters) {
        let mut kv = etcd_client::Client::connect([etcd.client_url.as_str()], None).await.expect("etcd");
        let answer = kv.get("/idempotency/", Some(etcd_client::GetOptions::new().with_prefix())).await.expect("read");
        for held in answer.kvs() {
            let Some(path) = held.key_str().expect("utf-8 key").strip_suffix("/record") else { continue };
            let key = path.rsplit('/').next().expect("a key").to_owned();
            let forwards = held.value().windows(b"%forwarding".len()).any(|w| w == b"%forwarding");
            (if forwards { &mut forwarding } else { &mut records }).entry(key).or_insert_with(Vec::new).push(*name);
        }
    }
    (records, forwarding)
}

#[tokio::test]
async fn records_live_on_their_shard_only_and_a_shard_down_spares_the_others() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let clusters = clusters().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let map = shard_map(&dir, "map.toml", &clusters, "epoch = 1\nshards = [\"a\", \"b\", \"c\"]");
    let metrics_port = free_port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let server = Server::start(&clusters[0], &["--shard-map", &map, "--metrics-listen", &metrics_listen]).await;
    let mut client = server.client().await;

    let current = placement(1, &NAMES);
    let keys: Vec<String> = (0..30).map(|i| format!("order-{i}")).collect();
    for key in &keys {
        let owner = acquired(begin(&mut client, begin_request(key, "cart", 30)).await);
        client.complete(complete_request(key, owner.fencing_token, "ok")).await.expect("complete");
    }
    let (records, forwarding) = where_records_are(&clusters).await;
    assert!(forwarding.is_empty(), "no map change, no forwarding records: {forwarding:?}");
    assert_eq!(records.len(), keys.len());
    for key in &keys {
        assert_eq!(records[key], [current.home(&id(key))], "{key}");
    }
    assert!(NAMES.iter().all(|n| records.values().any(|shards| shards[0] == *n)), "every shard holds records");

    // Stopped, not killed: its connections stay open and it answers nothing.
    clusters[1].signal("STOP");
    let shard_ready = |name: &str, ready: u8| format!("idempotency_store_shard_ready{{shard=\"{name}\"}} {ready}");
    let seen_down = async {
        while !scrape_metrics(metrics_port).await.contains(&shard_ready("b", 0)) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), seen_down).await.expect("a health check finds shard b down");
    for key in &keys {
        let asked = std::time::Instant::now();
        let answer = client.lookup(lookup_request(key)).await;
        if current.home(&id(key)) == "b" {
            let status = answer.expect_err("shard b is down");
            let retry = status.get_error_details().retry_info().and_then(|r| r.retry_delay);
            assert_eq!(retry, Some(Duration::from_secs(1)), "RetryInfo in {status:?}");
            assert_status::<()>(Err(status), Code::Unavailable, "STORE_UNAVAILABLE");
            // Refused at once, from the last health check, not after the
            // 2 s request timeout.
            assert!(asked.elapsed() < Duration::from_secs(2), "{:?}", asked.elapsed());
        } else {
            answer.expect("the other shards keep answering");
        }
    }
    assert_eq!(health(&server.url(), "readiness").await, Some(ServingStatus::Serving));
    let metrics = scrape_metrics(metrics_port).await;
    for (name, ready) in [("a", 1), ("b", 0), ("c", 1)] {
        assert!(metrics.contains(&shard_ready(name, ready)), "{} in\n{metrics}", shard_ready(name, ready));
    }
    assert!(metrics.contains(r#"idempotency_store_shard_map_epoch{step="settled"} 1"#), "{metrics}");
    clusters[1].signal("CONT");
}

/// Replica `announced` runs map epoch 1 (a, b) with epoch 2 announced;
/// replica `switched` runs epoch 2 (a, b, c) with epoch 1 as the previous
/// map. Before `switched` starts, `announced` places by the old map. Once a
/// shard says the switch began, it acts as a replica of the switch step:
/// each replica creates keys alone, which the other finishes; then both
/// Begin the same keys at once: exactly one attempt runs per key, the other
/// replica finishes it, both replay it, and every record is on one shard. A
/// record at its new home left a forwarding record at its old one.
#[tokio::test]
async fn two_replicas_on_neighbouring_map_epochs_never_put_a_record_on_two_shards() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let clusters = clusters().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let announced = shard_map(
        &dir,
        "announced.toml",
        &clusters,
        "epoch = 1\nshards = [\"a\", \"b\"]\n[next]\nepoch = 2\nshards = [\"a\", \"b\", \"c\"]",
    );
    let switched = shard_map(
        &dir,
        "switched.toml",
        &clusters,
        "epoch = 2\nshards = [\"a\", \"b\", \"c\"]\n[previous]\nepoch = 1\nshards = [\"a\", \"b\"]",
    );
    let first = Server::start(&clusters[0], &["--shard-map", &announced]).await;
    let (old, new) = (placement(1, &["a", "b"]), placement(2, &NAMES));
    let before: Vec<String> = (0..20).map(|i| format!("before-{i}")).collect();
    for key in &before {
        let owner = acquired(begin(&mut first.client().await, begin_request(key, "cart", 30)).await);
        first.client().await.complete(complete_request(key, owner.fencing_token, key)).await.expect("complete");
    }
    let servers = [first, Server::start(&clusters[0], &["--shard-map", &switched]).await];
    let clients = [servers[0].client().await, servers[1].client().await];
    // Its first call brings every shard to the switch step.
    acquired(begin(&mut clients[1].clone(), begin_request("first-switched", "cart", 30)).await);

    // Alone: even keys by the announced replica, odd ones by the switched one.
    let solo: Vec<String> = (0..40).map(|i| format!("solo-{i}")).collect();
    for (i, key) in solo.iter().enumerate() {
        let mut creator = clients[i % 2].clone();
        let owner = acquired(begin(&mut creator, begin_request(key, "cart", 30)).await);
        let finish = clients[1 - i % 2].clone().complete(complete_request(key, owner.fencing_token, key)).await;
        finish.unwrap_or_else(|e| panic!("{key}: {e}"));
    }

    // Together.
    let raced: Vec<String> = (0..120).map(|i| format!("race-{i}")).collect();
    let mut races = tokio::task::JoinSet::new();
    for key in raced.clone() {
        let (mut first, mut second) = (clients[0].clone(), clients[1].clone());
        races.spawn(async move {
            let outcomes = tokio::join!(
                begin(&mut first, begin_request(&key, "cart", 30)),
                begin(&mut second, begin_request(&key, "cart", 30))
            );
            (key, outcomes)
        });
    }
    let mut won_by = [0; 2];
    for (key, outcomes) in races.join_all().await {
        let (winner, owner) = match outcomes {
            (Outcome::Acquired(owner), Outcome::InProgress(_)) => (0, owner),
            (Outcome::InProgress(_), Outcome::Acquired(owner)) => (1, owner),
            other => panic!("{key}: exactly one replica must own the attempt: {other:?}"),
        };
        won_by[winner] += 1;
        let finish = clients[1 - winner].clone().complete(complete_request(&key, owner.fencing_token, &key)).await;
        finish.unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    eprintln!("races won by the announced replica {}, by the switched one {}", won_by[0], won_by[1]);

    for client in &clients {
        for key in solo.iter().chain(&raced) {
            match begin(&mut client.clone(), begin_request(key, "cart", 30)).await {
                Outcome::Completed(replay) => {
                    let body = replay.result.expect("a result").body;
                    assert_eq!(body, Some(v1::result::Body::Response(key.as_bytes().to_vec())), "{key}");
                }
                other => panic!("{key}: expected the replay, got {other:?}"),
            }
        }
    }

    let (records, forwarding) = where_records_are(&clusters).await;
    assert_eq!(records.len(), before.len() + 1 + solo.len() + raced.len());
    for key in &before {
        assert_eq!(records[key], [old.home(&id(key))], "{key} was placed by the old map");
    }
    for key in solo.iter().chain(&raced) {
        let (old_home, new_home) = (old.home(&id(key)), new.home(&id(key)));
        let shards = &records[key];
        assert_eq!(shards.len(), 1, "{key} is on one shard: {shards:?}");
        assert!(shards[0] == old_home || shards[0] == new_home, "{key} on {shards:?}");
        if shards[0] == old_home {
            assert!(!forwarding.contains_key(key), "{key} stayed at its old home and forwards nowhere");
        } else {
            assert_eq!(
                forwarding.get(key).map(Vec::as_slice),
                Some(&[old_home][..]),
                "{key} forwards from its old home"
            );
        }
    }
    // Since the switch began, both replicas place by the new map.
    for key in solo.iter().chain(&raced) {
        assert_eq!(records[key], [new.home(&id(key))], "{key}");
    }
    assert!(solo.iter().any(|key| records[key] == ["c"]), "some records went to the new shard");
}
