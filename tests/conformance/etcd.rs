//! The conformance suite on the etcd store, against a real etcd on loopback.

use std::sync::Arc;
use std::time::Duration;

use idempotency_coordinator::core::clock::SystemClock;
use idempotency_coordinator::store::etcd::EtcdStore;
use idempotency_coordinator::store::etcd::config::EtcdConfig;

use crate::common::Etcd;
use crate::harness::Harness;

async fn harness() -> (Harness<EtcdStore>, Etcd) {
    let etcd = Etcd::start().await;
    let config = EtcdConfig {
        endpoints: vec![etcd.client_url.clone()],
        prefix: "/conformance/".into(),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        tls: None,
        credentials: None,
    };
    let clock = Arc::new(SystemClock);
    let store = EtcdStore::connect(&config, clock.clone()).await.expect("an etcd client");
    (Harness::new(Arc::new(store), clock), etcd)
}

crate::conformance_suite!(tokio::test, harness);
