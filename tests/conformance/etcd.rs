//! The conformance suite on the etcd store, against a real etcd on loopback.

use std::sync::Arc;

use idempotency_coordinator::core::clock::SystemClock;
use idempotency_coordinator::store::etcd::EtcdStore;

use crate::common::Etcd;
use crate::harness::Harness;

async fn harness() -> (Harness<EtcdStore>, Etcd) {
    let etcd = Etcd::start().await;
    let config = crate::common::etcd_config(&etcd, "/conformance/");
    let clock = Arc::new(SystemClock);
    let store = EtcdStore::connect(&config).await.expect("an etcd client");
    (Harness::new(Arc::new(store), clock), etcd)
}

crate::conformance_suite!(tokio::test, harness);
