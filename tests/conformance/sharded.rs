//! The conformance suite on sharded stores: three memory shards on tokio's
//! paused clock; the same in the middle of a map change (epoch 2 over a, b,
//! c with epoch 1 over a, b as the previous map), where a third of the
//! records are created at a new home behind a forwarding record; and three
//! single-member etcd clusters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use idempotency_coordinator::core::clock::{SystemClock, TokioClock};
use idempotency_coordinator::store::etcd::EtcdStore;
use idempotency_coordinator::store::memory::MemoryStore;
use idempotency_coordinator::store::sharded::ShardedStore;
use idempotency_coordinator::store::sharded::shard_map::{Neighbour, Placement, ShardMap};

use crate::common::Etcd;
use crate::harness::Harness;

const FORWARDING_LASTS: Duration = Duration::from_secs(3600);

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn memory_shards(map: ShardMap) -> (Harness<ShardedStore<MemoryStore>>, ()) {
    let clock = Arc::new(TokioClock::new());
    let stores = ["a", "b", "c"].map(|n| (n.to_owned(), Arc::new(MemoryStore::new(clock.clone())))).into();
    let store = ShardedStore::new(stores, map, FORWARDING_LASTS).expect("shards");
    (Harness::new(Arc::new(store), clock), ())
}

pub mod on_memory {
    use super::*;

    async fn harness() -> (Harness<ShardedStore<MemoryStore>>, ()) {
        memory_shards(ShardMap::single(1, names(&["a", "b", "c"])))
    }

    crate::conformance_suite!(tokio::test(start_paused = true), harness);
}

pub mod on_memory_while_resharding {
    use super::*;

    async fn harness() -> (Harness<ShardedStore<MemoryStore>>, ()) {
        let previous = Placement { epoch: 1, shards: names(&["a", "b"]) };
        memory_shards(ShardMap {
            place: Placement { epoch: 2, shards: names(&["a", "b", "c"]) },
            neighbour: Some(Neighbour::Previous(previous)),
        })
    }

    crate::conformance_suite!(tokio::test(start_paused = true), harness);
}

pub mod on_etcd {
    use super::*;

    async fn harness() -> (Harness<ShardedStore<EtcdStore>>, Vec<Etcd>) {
        let (mut clusters, mut stores) = (Vec::new(), BTreeMap::new());
        for name in ["a", "b", "c"] {
            let etcd = Etcd::start().await;
            let config = crate::common::etcd_config(&etcd, "/conformance/");
            stores.insert(name.to_owned(), Arc::new(EtcdStore::connect(&config).await.expect("an etcd client")));
            clusters.push(etcd);
        }
        let store = ShardedStore::new(stores, ShardMap::single(1, names(&["a", "b", "c"])), FORWARDING_LASTS);
        (Harness::new(Arc::new(store.expect("shards")), Arc::new(SystemClock)), clusters)
    }

    crate::conformance_suite!(tokio::test, harness);
}
