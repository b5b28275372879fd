//! Prometheus metrics on a separate plain-HTTP port (`GET /metrics`).
//!
//! gRPC traffic uses the go-grpc-prometheus names (see
//! [`crate::grpc::grpc_metrics`]); the domain metrics say what the coordinator
//! decided, each named where it is recorded ([`crate::grpc::service`],
//! [`crate::core::coordinator`], [`crate::store::etcd::batch`]). No label ever
//! carries a key, namespace or tenant: label values come from small fixed sets.

use std::future::Future;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::core::coordinator::{WAITS, WAITS_REFUSED};
use crate::grpc::service::{BEGIN_OUTCOMES, LEASE_LOST, OUTCOMES, TAKEOVERS};
use crate::store::etcd::batch::{ETCD_BATCH_CALLS, ETCD_ERROR_KINDS, ETCD_ERRORS};

/// Latency buckets in seconds, for every histogram but the batch sizes.
/// 0.25 is the Begin latency SLO of deploy/monitoring's burn-rate alert.
const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Calls per etcd transaction: powers of two up to the largest group commit.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// The process-wide recorder; installed on first use (metrics are global).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(ETCD_BATCH_CALLS.into()), BATCH_BUCKETS))
            .expect("the bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed; then ours stays unused
        // and /metrics shows what it has (nothing), which the tests would catch.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// How often histogram samples are folded into their buckets. The recorder
/// keeps every sample until then: without this, nothing but a scrape would
/// free them, and a server nobody scrapes grew by 8 bytes per sample (three
/// samples per call) without bound.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Exports every counter at zero from the start, with each label value it
/// can take: a series that appears only with its first event hides that
/// event from `rate()`, and alerts and dashboards could not tell "none yet"
/// from "not exported" (tests/monitoring.rs checks them against a scrape).
pub fn export_at_zero() {
    for outcome in OUTCOMES {
        metrics::counter!(BEGIN_OUTCOMES, "outcome" => outcome).absolute(0);
    }
    for reason in ["abandoned", "released"] {
        metrics::counter!(TAKEOVERS, "reason" => reason).absolute(0);
    }
    for kind in ETCD_ERROR_KINDS {
        metrics::counter!(ETCD_ERRORS, "kind" => kind).absolute(0);
    }
    for name in [LEASE_LOST, WAITS, WAITS_REFUSED] {
        metrics::counter!(name).absolute(0);
    }
}

/// Serves `/metrics`, and `routes` beside it, on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    routes: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = handle();
    let upkeep = tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    });
    // Stopped with the server.
    let _upkeep = tokio_util::task::AbortOnDropHandle::new(upkeep);
    let app =
        axum::Router::new().route("/metrics", axum::routing::get(move || async move { handle.render() })).merge(routes);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
