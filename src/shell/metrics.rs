//! Prometheus metrics on a separate plain-HTTP port (`GET /metrics`).
//!
//! gRPC traffic uses the go-grpc-prometheus names (see
//! [`crate::grpc::grpc_metrics`]); the domain metrics say what the coordinator
//! decided, each named where it is recorded ([`crate::grpc::service`],
//! [`crate::core::coordinator`], [`crate::store::etcd::batch`]). No label ever
//! carries a key, namespace or tenant: label values come from small fixed sets.

use std::future::Future;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// Latency buckets in seconds, shared by every histogram.
const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The process-wide recorder; installed on first use (metrics are global).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder =
            PrometheusBuilder::new().set_buckets(BUCKETS).expect("the bucket list is not empty").build_recorder();
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

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
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
    let app = axum::Router::new().route("/metrics", axum::routing::get(move || async move { handle.render() }));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
