//! A coordinator over three real etcd clusters (`--etcd-shards`, WORK IN
//! PROGRESS for issue 16): every record on the shard its key hashes to; one
//! shard stopped makes only its records UNAVAILABLE, readiness stays
//! SERVING, and the shard gauge says which shard is down.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use idempotency_coordinator::core::clock::SystemClock;
use idempotency_coordinator::core::record::RecordId;
use idempotency_coordinator::store::memory::MemoryStore;
use idempotency_coordinator::store::sharded::ShardedStore;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const NAMES: [&str; 3] = ["a", "b", "c"];

/// Which shard a key lives on: routing depends on the shard names only.
fn shard_of(key: &str) -> usize {
    let clock = Arc::new(SystemClock);
    let shards = NAMES.map(|n| (n.to_owned(), Arc::new(MemoryStore::new(clock.clone())))).to_vec();
    let router = ShardedStore::new(shards).expect("shards");
    router.shard_of(&RecordId { tenant: "default".into(), namespace: "payments.create".into(), key: key.into() })
}

#[tokio::test]
async fn one_shard_down_makes_only_its_records_unavailable() {
    let mut clusters = Vec::new();
    for _ in NAMES {
        clusters.push(Etcd::start().await);
    }
    let shards =
        NAMES.iter().zip(&clusters).map(|(n, e)| format!("{n}={}", e.client_url)).collect::<Vec<_>>().join(",");
    let metrics_port = free_port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let server = Server::start(&clusters[0], &["--etcd-shards", &shards, "--metrics-listen", &metrics_listen]).await;
    let mut client = server.client().await;

    let keys: Vec<String> = (0..30).map(|i| format!("order-{i}")).collect();
    let mut per_shard = [0; 3];
    for key in &keys {
        let owner = acquired(begin(&mut client, begin_request(key, "cart", 30)).await);
        client.complete(complete_request(key, owner.fencing_token, "ok")).await.expect("complete");
        per_shard[shard_of(key)] += 1;
    }
    assert!(per_shard.iter().all(|&n| n > 0), "every shard holds records: {per_shard:?}");
    // Each record is in its own shard's etcd, and only there.
    for (index, etcd) in clusters.iter().enumerate() {
        let mut kv = etcd_client::Client::connect([etcd.client_url.as_str()], None).await.expect("etcd");
        let held = kv
            .get("/idempotency/", Some(etcd_client::GetOptions::new().with_prefix().with_keys_only()))
            .await
            .expect("read")
            .kvs()
            .iter()
            .filter(|kv| kv.key().ends_with(b"/record"))
            .count();
        assert_eq!(held, per_shard[index], "shard {}", NAMES[index]);
    }

    clusters[1].stop();
    tokio::time::sleep(Duration::from_millis(800)).await;
    for key in &keys {
        let answer = client.lookup(lookup_request(key)).await;
        if shard_of(key) == 1 {
            assert_status(answer, Code::Unavailable, "STORE_UNAVAILABLE");
        } else {
            answer.expect("the other shards keep answering");
        }
    }
    assert_eq!(health(&server.url(), "readiness").await, Some(ServingStatus::Serving));
    let metrics = scrape_metrics(metrics_port).await;
    for (name, ready) in [("a", 1), ("b", 0), ("c", 1)] {
        let line = format!("idempotency_store_shard_ready{{shard=\"{name}\"}} {ready}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}
