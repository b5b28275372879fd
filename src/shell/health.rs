//! gRPC health as DESIGN.md specifies: liveness ("" and "liveness") says the
//! process runs and never depends on etcd, or an etcd blip would restart every
//! pod; readiness ("readiness" and the coordinator's service name) is SERVING
//! only while the store answers (for etcd, a quorum read) and the process is
//! not draining. "writable" is SERVING while the store also takes writes:
//! a full etcd (NOSPACE alarm) still serves replays and Lookups, so its
//! replicas stay ready, and this name and a gauge say that writes are refused.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

use crate::core::store::{Capacity, RecordStore};

pub const LIVENESS: &str = "liveness";
pub const READINESS: &str = "readiness";
pub const COORDINATOR_SERVICE: &str = "idempotency.v1.CoordinatorService";
pub const WRITABLE: &str = "writable";

/// The names that report liveness: SERVING while the process runs.
pub const LIVENESS_NAMES: [&str; 2] = ["", LIVENESS];

/// The names that report readiness: SERVING while the store answers.
pub const READINESS_NAMES: [&str; 2] = [READINESS, COORDINATOR_SERVICE];

/// 1 while readiness is SERVING (the store answers), 0 otherwise (a
/// Prometheus gauge): the "etcd unavailable" alert watches it.
pub const STORE_READY: &str = "idempotency_store_ready";

/// 1 while the store takes writes, 0 while it is unreachable or full (a
/// Prometheus gauge): the "etcd full" alert watches it.
pub const STORE_WRITABLE: &str = "idempotency_store_writable";

/// Sets the initial statuses: alive, not yet ready.
pub async fn init(reporter: &HealthReporter) {
    for name in LIVENESS_NAMES {
        reporter.set_service_status(name, ServingStatus::Serving).await;
    }
    set_readiness(reporter, ServingStatus::NotServing).await;
    set_writable(reporter, false).await;
}

async fn set_writable(reporter: &HealthReporter, writable: bool) {
    metrics::gauge!(STORE_WRITABLE).set(if writable { 1.0 } else { 0.0 });
    let status = if writable { ServingStatus::Serving } else { ServingStatus::NotServing };
    reporter.set_service_status(WRITABLE, status).await;
}

async fn set_readiness(reporter: &HealthReporter, status: ServingStatus) {
    metrics::gauge!(STORE_READY).set(if status == ServingStatus::Serving { 1.0 } else { 0.0 });
    for name in READINESS_NAMES {
        reporter.set_service_status(name, status).await;
    }
}

/// Checks the store every `interval` and reports readiness, until
/// `draining`; then reports NOT_SERVING for good.
pub async fn track_readiness<S: RecordStore>(
    store: Arc<S>,
    reporter: HealthReporter,
    interval: Duration,
    draining: CancellationToken,
) {
    let mut ready = false;
    let mut full = false;
    loop {
        let check = tokio::select! {
            result = store.ping(interval.max(Duration::from_secs(1))) => result,
            _ = draining.cancelled() => break,
        };
        match (&check, ready) {
            (Ok(_), false) => info!("store reachable: ready"),
            (Err(error), true) => warn!(%error, "store unreachable: not ready"),
            _ => {}
        }
        match (&check, full) {
            (Ok(Capacity::Full(why)), false) => {
                warn!(%why, "the store refuses writes: new Begins and Completes fail with STORE_FULL")
            }
            (Ok(Capacity::Writable), true) => info!("the store takes writes again"),
            _ => {}
        }
        ready = check.is_ok();
        full = matches!(check, Ok(Capacity::Full(_)));
        set_readiness(&reporter, if ready { ServingStatus::Serving } else { ServingStatus::NotServing }).await;
        set_writable(&reporter, matches!(check, Ok(Capacity::Writable))).await;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = draining.cancelled() => break,
        }
    }
    set_readiness(&reporter, ServingStatus::NotServing).await;
    set_writable(&reporter, false).await;
}
