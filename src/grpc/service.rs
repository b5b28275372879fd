//! The gRPC handlers: validate ([`crate::grpc::request`]), call the
//! coordinator, encode ([`crate::proto::convert`]). Failures become statuses
//! in one table ([`crate::grpc::status`]).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{Span, field, info, instrument, warn};

use crate::core::coordinator::Coordinator;
use crate::core::error::Error;
use crate::core::limits::Limits;
use crate::core::outcome::{Acquired, BeginOutcome, RecordView};
use crate::core::record::RecoveryReason;
use crate::core::store::RecordStore;
use crate::grpc::metadata::{deadline, trace_id};
use crate::grpc::request;
use crate::grpc::tenant::scoped_message;
use crate::proto::convert;
use crate::proto::v1::{self, coordinator_service_server::CoordinatorService};

/// Begin answers by `outcome` (a Prometheus counter).
pub const BEGIN_OUTCOMES: &str = "idempotency_begin_outcomes_total";
/// Attempts that took over an unfinished one, by `reason`.
pub const TAKEOVERS: &str = "idempotency_takeovers_total";
/// Complete, Fail and Extend calls refused with LEASE_LOST.
pub const LEASE_LOST: &str = "idempotency_lease_lost_total";

pub struct CoordinatorApi<S> {
    coordinator: Arc<Coordinator<S>>,
    limits: Limits,
}

impl<S> CoordinatorApi<S> {
    pub fn new(coordinator: Arc<Coordinator<S>>, limits: Limits) -> Self {
        Self { coordinator, limits }
    }
}

/// Logs failures at a level matching who must act, and converts them.
fn reject(error: Error) -> Status {
    Span::current().record("outcome", "error");
    match &error {
        Error::KeyReused { .. } => metrics::counter!(BEGIN_OUTCOMES, "outcome" => "key_reused").increment(1),
        Error::LeaseLost { .. } => metrics::counter!(LEASE_LOST).increment(1),
        _ => {}
    }
    match &error {
        Error::StoreUnavailable(_) | Error::Internal(_) => warn!(%error, "call failed"),
        _ => info!(%error, "call refused"),
    }
    error.into()
}

/// The outcome's name in logs and in the outcome counter.
fn outcome_name(outcome: &BeginOutcome) -> &'static str {
    match outcome {
        BeginOutcome::Acquired(a) if a.recovered.is_some() => "acquired_recovered",
        BeginOutcome::Acquired(_) => "acquired",
        BeginOutcome::Completed(_) => "replayed_completed",
        BeginOutcome::Failed(_) => "replayed_failed",
        BeginOutcome::InProgress(_) => "in_progress",
    }
}

fn record_begin_metrics(outcome: &BeginOutcome) {
    if let BeginOutcome::Acquired(Acquired { recovered: Some(recovered), .. }) = outcome {
        let reason = match recovered.reason {
            RecoveryReason::Released => "released",
            RecoveryReason::Abandoned => "abandoned",
        };
        metrics::counter!(TAKEOVERS, "reason" => reason).increment(1);
    }
    // Recovered or not, an acquisition counts as acquired.
    let name = match outcome {
        BeginOutcome::Acquired(_) => "acquired",
        other => outcome_name(other),
    };
    metrics::counter!(BEGIN_OUTCOMES, "outcome" => name).increment(1);
}

fn finished(record: RecordView, outcome: &'static str) -> v1::Record {
    Span::current().record("attempt", record.attempt).record("outcome", outcome);
    convert::record_message(record)
}

#[tonic::async_trait]
impl<S: RecordStore> CoordinatorService for CoordinatorApi<S> {
    #[instrument(skip_all, fields(trace_id = trace_id(&request), namespace = %request.get_ref().namespace, attempt = field::Empty, outcome = field::Empty))]
    async fn begin(&self, request: Request<v1::BeginRequest>) -> Result<Response<v1::BeginResponse>, Status> {
        let deadline = deadline(&request);
        let command = scoped_message(request).and_then(|m| request::begin(m, &self.limits)).map_err(reject)?;
        let outcome = self.coordinator.begin(&command, deadline).await.map_err(reject)?;
        Span::current().record("outcome", outcome_name(&outcome)).record("attempt", outcome.attempt());
        record_begin_metrics(&outcome);
        info!("begin answered");
        Ok(Response::new(v1::BeginResponse { outcome: Some(convert::outcome_message(outcome)) }))
    }

    #[instrument(skip_all, fields(trace_id = trace_id(&request), namespace = %request.get_ref().namespace, attempt = field::Empty, outcome = field::Empty))]
    async fn complete(&self, request: Request<v1::CompleteRequest>) -> Result<Response<v1::CompleteResponse>, Status> {
        let deadline = deadline(&request);
        let command = scoped_message(request).and_then(|m| request::complete(m, &self.limits)).map_err(reject)?;
        let record = self.coordinator.complete(command, deadline).await.map_err(reject)?;
        let record = finished(record, "completed");
        info!("complete answered");
        Ok(Response::new(v1::CompleteResponse { record: Some(record) }))
    }

    #[instrument(skip_all, fields(trace_id = trace_id(&request), namespace = %request.get_ref().namespace, retryable = request.get_ref().retryable, attempt = field::Empty, outcome = field::Empty))]
    async fn fail(&self, request: Request<v1::FailRequest>) -> Result<Response<v1::FailResponse>, Status> {
        let deadline = deadline(&request);
        let command = scoped_message(request).and_then(|m| request::fail(m, &self.limits)).map_err(reject)?;
        let record = self.coordinator.fail(command, deadline).await.map_err(reject)?;
        let record = finished(record, "failed");
        info!("fail answered");
        Ok(Response::new(v1::FailResponse { record: Some(record) }))
    }

    #[instrument(skip_all, fields(trace_id = trace_id(&request), namespace = %request.get_ref().namespace, outcome = field::Empty))]
    async fn extend(&self, request: Request<v1::ExtendRequest>) -> Result<Response<v1::ExtendResponse>, Status> {
        let deadline = deadline(&request);
        let command = scoped_message(request).and_then(|m| request::extend(m, &self.limits)).map_err(reject)?;
        let lease_expires_at = self.coordinator.extend(command, deadline).await.map_err(reject)?;
        Span::current().record("outcome", "extended");
        Ok(Response::new(v1::ExtendResponse { lease_expires_at: Some(convert::timestamp(lease_expires_at)) }))
    }

    #[instrument(skip_all, fields(trace_id = trace_id(&request), namespace = %request.get_ref().namespace, outcome = field::Empty))]
    async fn lookup(&self, request: Request<v1::LookupRequest>) -> Result<Response<v1::LookupResponse>, Status> {
        let deadline = deadline(&request);
        let id = scoped_message(request).and_then(request::lookup).map_err(reject)?;
        let record = self.coordinator.lookup(&id, deadline).await.map_err(reject)?;
        Span::current().record("outcome", "found");
        Ok(Response::new(v1::LookupResponse { record: Some(convert::record_message(record)) }))
    }
}
