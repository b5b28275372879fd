//! The gateway process: the proxy on one port (HTTP/1.1 and cleartext
//! HTTP/2), `/metrics`, `/livez` and `/readyz` on another, and a drain
//! bounded by a grace period when `shutdown` resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use http::StatusCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::ClientArgs;
use crate::gateway::buffer_budget::BufferBudget;
use crate::gateway::config::GatewayConfig;
use crate::gateway::connections;
use crate::gateway::coordinator::Coordinator;
use crate::gateway::gateway_metrics;
use crate::gateway::proxy::Gateway;
use crate::gateway::upstream::Upstream;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("coordinator: {0}")]
    Coordinator(String),
    #[error("cannot listen for metrics and health on {0}: {1}")]
    Admin(SocketAddr, std::io::Error),
}

/// Serves on `listener` until `shutdown` resolves, then drains: /readyz
/// answers 503, new connections are refused and in-flight requests get
/// `config.shutdown_grace` to finish.
pub async fn run(
    config: GatewayConfig,
    coordinator: &ClientArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    crate::shell::metrics::handle(); // before anything records a metric
    gateway_metrics::export_at_zero();
    // Lazily, so the gateway starts, and answers 503, while the coordinator is down.
    let channel = coordinator.endpoint().map_err(GatewayError::Coordinator)?.connect_lazy();
    let authorization = coordinator.authorization().map_err(GatewayError::Coordinator)?;
    for route in config.routes.unscoped() {
        warn!(route, "identity = \"none\": every caller shares this route's keys");
    }
    let gateway = Arc::new(Gateway {
        budget: BufferBudget::new(config.limits.max_buffered_bytes),
        routes: config.routes,
        upstream: Upstream::new(config.upstream.clone()),
        coordinator: Coordinator::new(channel, authorization, config.tenant, config.owner),
    });

    let draining = CancellationToken::new();
    let admin_listener =
        TcpListener::bind(config.admin_listen).await.map_err(|e| GatewayError::Admin(config.admin_listen, e))?;
    let probes = {
        let draining = draining.clone();
        axum::Router::new().route("/livez", get(|| async { "ok" })).route(
            "/readyz",
            get(move || {
                let draining = draining.is_cancelled();
                async move {
                    if draining { (StatusCode::SERVICE_UNAVAILABLE, "draining") } else { (StatusCode::OK, "ok") }
                }
            }),
        )
    };
    // Outlives the drain on purpose: probes must see /readyz fail. Aborted at the end.
    let admin = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(crate::shell::metrics::serve(
        admin_listener,
        probes,
        std::future::pending(),
    )));

    info!(
        address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        upstream = %config.upstream,
        coordinator = %coordinator.addr,
        admin = %config.admin_listen,
        "gateway serving"
    );
    let drain_started = {
        let draining = draining.clone();
        async move {
            shutdown.await;
            info!(grace = ?config.shutdown_grace, "draining: not ready, finishing in-flight requests");
            draining.cancel();
        }
    };
    let _drain = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(drain_started));
    let server = connections::serve(listener, gateway, config.limits, draining.clone());
    let grace_over = async {
        draining.cancelled().await;
        tokio::time::sleep(config.shutdown_grace).await;
    };
    tokio::select! {
        () = server => {}
        _ = grace_over => warn!("grace period over with requests still in flight; exiting anyway"),
    }
    drop(admin);
    info!("gateway stopped");
    Ok(())
}
