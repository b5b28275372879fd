//! The process shell around the coordinator: one tonic server with the
//! coordinator (behind authentication), gRPC health and reflection — over TLS
//! when configured, with health also on a plaintext port for kubelet probes;
//! readiness tracking; and a drain bounded by a grace period when `shutdown`
//! resolves.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tracing::{info, warn};

use crate::core::clock::{Clock, SystemClock};
use crate::core::coordinator::{Coordinator, Settings};
use crate::core::error::Error;
use crate::core::store::RecordStore;
use crate::grpc::admin::AdminApi;
use crate::grpc::grpc_metrics::GrpcMetrics;
use crate::grpc::middleware::AroundLayer;
use crate::grpc::overload::ShedLoad;
use crate::grpc::oversize::Oversize;
use crate::grpc::request_bytes::RequestBytesLayer;
use crate::grpc::service::CoordinatorApi;
use crate::grpc::trace_context::TraceContext;
use crate::proto::v1::admin_service_server::AdminServiceServer;
use crate::proto::v1::coordinator_service_server::CoordinatorServiceServer;
use crate::shell::auth::{Authenticator, TokenTable};
use crate::shell::config::{Config, StoreKind};
use crate::shell::nodelay::without_nagle;
use crate::shell::tls::incoming::incoming;
use crate::shell::{health, reflection, reload};
use crate::store::etcd::EtcdStore;
use crate::store::memory::MemoryStore;
use crate::store::sharded::ShardedStore;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Store(#[from] crate::core::error::Error),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot listen for metrics on {0}: {1}")]
    Metrics(std::net::SocketAddr, std::io::Error),
    #[error("cannot listen for plaintext health checks on {0}: {1}")]
    Health(std::net::SocketAddr, std::io::Error),
}

/// Serves on `listener` until `shutdown` resolves, then drains: readiness goes
/// NOT_SERVING, waiting Begins answer at once, new connections are refused and
/// in-flight calls get `config.shutdown_grace` to finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    crate::shell::metrics::handle(); // before anything records a metric
    crate::shell::metrics::export_at_zero();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    match config.store {
        StoreKind::Etcd if let Some(sharded) = &config.sharded => {
            let mut stores = BTreeMap::new();
            for (name, shard) in &sharded.shards {
                stores.insert(name.clone(), Arc::new(EtcdStore::connect(shard).await?));
            }
            info!(shards = stores.len(), epoch = sharded.map.place.epoch, "records sharded over etcd clusters");
            // A forwarding record must outlast the longest-lived record it stands for.
            let forwarding_lasts = config.limits.max_retention + config.limits.max_lease_ttl;
            let store = ShardedStore::new(stores, sharded.map.clone(), forwarding_lasts)
                .map_err(|e| ServeError::Store(Error::Internal(e)))?;
            serve(Arc::new(store), clock, config, listener, shutdown).await
        }
        StoreKind::Etcd => {
            let store = EtcdStore::connect(&config.etcd).await?;
            serve(Arc::new(store), clock, config, listener, shutdown).await
        }
        StoreKind::Memory => {
            warn!(
                "--store memory: records live in this process only; they are lost when it exits and are not \
                 shared with other replicas. For local development and tests, never for production."
            );
            serve(Arc::new(MemoryStore::new(clock.clone())), clock, config, listener, shutdown).await
        }
    }
}

/// [`run`] on a store.
async fn serve<S: RecordStore>(
    store: Arc<S>,
    clock: Arc<dyn Clock>,
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let draining = CancellationToken::new();
    let settings = Settings {
        limits: config.limits.clone(),
        replay_cache_bytes: config.replay_cache_bytes,
        request_timeout: config.etcd.request_timeout,
        max_waits_per_tenant: config.max_waits_per_tenant,
        replay_clock_margin: crate::core::coordinator::REPLAY_CLOCK_MARGIN,
    };
    let coordinator = Arc::new(Coordinator::new(store.clone(), clock, settings, draining.clone()));

    let (reporter, health_service) = tonic_health::server::health_reporter();
    health::init(&reporter).await;
    // Aborted when the server has stopped.
    let mut background =
        vec![tokio::spawn(health::track_readiness(store, reporter, config.health_check_interval, draining.clone()))];

    let (reflection, reflection_v1alpha) = reflection::services()?;
    if let Some(tokens) = &config.auth.tokens {
        let path = tokens.path.clone();
        let watch = reload::watch(tokens.current.clone(), vec![path.clone()], config.reload_interval, "tokens file", {
            move || TokenTable::load(&path)
        });
        background.push(tokio::spawn(watch));
    }
    // Off unless configured; the same authenticator names its callers.
    let admin_service = (!config.admin_tenants.is_empty()).then(|| {
        info!(admins = ?config.admin_tenants, "admin service on");
        InterceptedService::new(
            AdminServiceServer::new(AdminApi::new(coordinator.clone(), config.admin_tenants.clone())),
            Authenticator::new(config.auth.clone()),
        )
    });
    background.push(coordinator.follow_forgets());
    let coordinator_service = InterceptedService::new(
        CoordinatorServiceServer::new(CoordinatorApi::new(coordinator, config.limits))
            .max_decoding_message_size(config.max_message_bytes),
        Authenticator::new(config.auth),
    );

    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|e| ServeError::Metrics(config.metrics_listen, e))?;
    let metrics_stop = draining.clone();
    tokio::spawn(crate::shell::metrics::serve(metrics_listener, axum::Router::new(), async move {
        metrics_stop.cancelled().await
    }));

    if let Some(tls) = &config.tls {
        let files = tls.files.clone();
        let watch = reload::watch(tls.current.clone(), files.paths(), config.reload_interval, "TLS certificate", {
            move || files.load()
        });
        background.push(tokio::spawn(watch));
        let health_listener =
            TcpListener::bind(config.health_listen).await.map_err(|e| ServeError::Health(config.health_listen, e))?;
        info!(address = %config.health_listen, "plaintext health checks");
        // Outlives the drain on purpose: probes must see readiness go NOT_SERVING.
        let plaintext_health = Server::builder()
            .add_service(health_service.clone())
            .serve_with_incoming(TcpListenerStream::new(health_listener));
        background.push(tokio::spawn(async move {
            if let Err(error) = plaintext_health.await {
                warn!(%error, "the plaintext health server failed");
            }
        }));
    }

    info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), metrics = %config.metrics_listen, tls = config.tls.is_some(), "serving");
    let drain_started = {
        let draining = draining.clone();
        async move {
            shutdown.await;
            info!(grace = ?config.shutdown_grace, "draining: not ready, finishing in-flight calls");
            draining.cancel();
        }
    };
    let router = Server::builder()
        .layer(AroundLayer(TraceContext))
        .layer(AroundLayer(GrpcMetrics))
        .layer(AroundLayer(ShedLoad::new(config.max_in_flight)))
        .layer(RequestBytesLayer::new(config.max_request_bytes_held))
        .layer(AroundLayer(Oversize))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(coordinator_service)
        .add_optional_service(admin_service);
    // Two connection types, so two server futures of different types.
    let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> = match &config.tls {
        Some(tls) => {
            let connections = incoming(listener, tls.current.clone(), draining.clone());
            Box::pin(router.serve_with_incoming_shutdown(connections, drain_started))
        }
        None => {
            let connections = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |accepted| {
                accepted.inspect(without_nagle)
            });
            Box::pin(router.serve_with_incoming_shutdown(connections, drain_started))
        }
    };
    tokio::pin!(server);
    let grace_over = async {
        draining.cancelled().await;
        tokio::time::sleep(config.shutdown_grace).await;
    };
    tokio::select! {
        result = &mut server => result?,
        _ = grace_over => warn!("grace period over with calls still in flight; exiting anyway"),
    }
    for task in background {
        task.abort();
    }
    info!("stopped");
    Ok(())
}
