//! The conformance suite on a sharded store: three memory stores on tokio's
//! paused clock, and three single-member etcd clusters (WORK IN PROGRESS,
//! issue 16).

use std::sync::Arc;

use idempotency_coordinator::core::clock::{SystemClock, TokioClock};
use idempotency_coordinator::store::etcd::EtcdStore;
use idempotency_coordinator::store::memory::MemoryStore;
use idempotency_coordinator::store::sharded::ShardedStore;

use crate::common::Etcd;
use crate::harness::Harness;

pub mod on_memory {
    use super::*;

    async fn harness() -> (Harness<ShardedStore<MemoryStore>>, ()) {
        let clock = Arc::new(TokioClock::new());
        let shards = ["a", "b", "c"].map(|n| (n.to_owned(), Arc::new(MemoryStore::new(clock.clone())))).to_vec();
        (Harness::new(Arc::new(ShardedStore::new(shards).expect("shards")), clock), ())
    }

    crate::conformance_suite!(tokio::test(start_paused = true), harness);
}

pub mod on_etcd {
    use super::*;

    async fn harness() -> (Harness<ShardedStore<EtcdStore>>, Vec<Etcd>) {
        let mut clusters = Vec::new();
        let mut shards = Vec::new();
        for name in ["a", "b", "c"] {
            let etcd = Etcd::start().await;
            let config = crate::common::etcd_config(&etcd, "/conformance/");
            shards.push((name.to_owned(), Arc::new(EtcdStore::connect(&config).await.expect("an etcd client"))));
            clusters.push(etcd);
        }
        let store = ShardedStore::new(shards).expect("shards");
        (Harness::new(Arc::new(store), Arc::new(SystemClock)), clusters)
    }

    crate::conformance_suite!(tokio::test, harness);
}
