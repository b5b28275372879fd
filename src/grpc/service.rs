//! The gRPC handlers: validate ([`crate::grpc::request`]), call the
//! coordinator, encode ([`crate::proto::convert`]). Failures become statuses
//! in one table ([`crate::grpc::status`]).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use metrics::Counter;

use tonic::{Request, Response, Status};
use tracing::{Span, debug, field, info, instrument, warn};

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

/// Who a call's log lines are about: the caller's trace and the namespace.
/// Carried by the refusal and failure lines themselves, because the per-call
/// span is a DEBUG span and absent at the default INFO level.
struct Call {
    trace_id: String,
    namespace: String,
}

impl Call {
    fn of<T>(request: &Request<T>, namespace: &str) -> Self {
        Self { trace_id: trace_id(request), namespace: namespace.to_owned() }
    }

    /// Logs a failure at a level matching who must act, and converts it.
    fn reject(&self, error: Error) -> Status {
        Span::current().record("outcome", "error");
        match &error {
            Error::KeyReused { .. } => outcome_counter("key_reused").increment(1),
            Error::LeaseLost { .. } => LEASE_LOST_COUNTER.increment(1),
            _ => {}
        }
        let (trace_id, namespace) = (&self.trace_id, &self.namespace);
        match &error {
            Error::StoreUnavailable(_) | Error::ShardStateMoved | Error::Internal(_) => {
                warn!(trace_id, namespace, %error, "call failed")
            }
            _ => info!(trace_id, namespace, %error, "call refused"),
        }
        error.into()
    }
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

/// The `outcome` values of [`BEGIN_OUTCOMES`]: what [`outcome_name`] gives
/// (an acquisition counts as `acquired`, recovered or not), and `key_reused`.
pub const OUTCOMES: [&str; 5] = ["acquired", "replayed_completed", "replayed_failed", "in_progress", "key_reused"];

/// The Begin outcome counters, looked up once: the `counter!` macro would
/// hash and compare its name and labels against the registry on every call.
fn outcome_counter(outcome: &'static str) -> &'static Counter {
    static COUNTERS: LazyLock<HashMap<&'static str, Counter>> = LazyLock::new(|| {
        OUTCOMES.iter().map(|name| (*name, metrics::counter!(BEGIN_OUTCOMES, "outcome" => *name))).collect()
    });
    &COUNTERS[outcome]
}

static LEASE_LOST_COUNTER: LazyLock<Counter> = LazyLock::new(|| metrics::counter!(LEASE_LOST));

fn record_begin_metrics(outcome: &BeginOutcome) {
    if let BeginOutcome::Acquired(Acquired { recovered: Some(recovered), attempt, .. }) = outcome {
        let reason = match recovered.reason {
            RecoveryReason::Released => "released",
            RecoveryReason::Abandoned => "abandoned",
        };
        // Rare, and worth an operator's attention: the earlier attempt's
        // side effect may have half-happened.
        info!(reason, attempt, "took over an unfinished attempt");
        metrics::counter!(TAKEOVERS, "reason" => reason).increment(1);
    }
    // Recovered or not, an acquisition counts as acquired.
    let name = match outcome {
        BeginOutcome::Acquired(_) => "acquired",
        other => outcome_name(other),
    };
    outcome_counter(name).increment(1);
}

fn finished(record: RecordView, outcome: &'static str) -> v1::Record {
    Span::current().record("attempt", record.attempt).record("outcome", outcome);
    convert::record_message(record)
}

#[tonic::async_trait]
impl<S: RecordStore> CoordinatorService for CoordinatorApi<S> {
    #[instrument(level = "debug", skip_all, fields(trace_id = trace_id(&request), namespace = %request.get_ref().namespace, attempt = field::Empty, outcome = field::Empty))]
    async fn begin(&self, request: Request<v1::BeginRequest>) -> Result<Response<v1::BeginResponse>, Status> {
        let (deadline, call) = (deadline(&request), Call::of(&request, &request.get_ref().namespace));
        let command =
            scoped_message(request).and_then(|m| request::begin(m, &self.limits)).map_err(|e| call.reject(e))?;
        let outcome = self.coordinator.begin(&command, deadline).await.map_err(|e| call.reject(e))?;
        Span::current().record("outcome", outcome_name(&outcome)).record("attempt", outcome.attempt());
        record_begin_metrics(&outcome);
        debug!("begin answered");
        Ok(Response::new(v1::BeginResponse { outcome: Some(convert::outcome_message(outcome)) }))
    }

    #[instrument(level = "debug", skip_all, fields(trace_id = trace_id(&request), namespace = %request.get_ref().namespace, attempt = field::Empty, outcome = field::Empty))]
    async fn complete(&self, request: Request<v1::CompleteRequest>) -> Result<Response<v1::CompleteResponse>, Status> {
        let (deadline, call) = (deadline(&request), Call::of(&request, &request.get_ref().namespace));
        let command =
            scoped_message(request).and_then(|m| request::complete(m, &self.limits)).map_err(|e| call.reject(e))?;
        let record = self.coordinator.complete(command, deadline).await.map_err(|e| call.reject(e))?;
        let record = finished(record, "completed");
        debug!("complete answered");
        Ok(Response::new(v1::CompleteResponse { record: Some(record) }))
    }

    #[instrument(level = "debug", skip_all, fields(trace_id = trace_id(&request), namespace = %request.get_ref().namespace, retryable = request.get_ref().retryable, attempt = field::Empty, outcome = field::Empty))]
    async fn fail(&self, request: Request<v1::FailRequest>) -> Result<Response<v1::FailResponse>, Status> {
        let (deadline, call) = (deadline(&request), Call::of(&request, &request.get_ref().namespace));
        let command =
            scoped_message(request).and_then(|m| request::fail(m, &self.limits)).map_err(|e| call.reject(e))?;
        let record = self.coordinator.fail(command, deadline).await.map_err(|e| call.reject(e))?;
        let record = finished(record, "failed");
        debug!("fail answered");
        Ok(Response::new(v1::FailResponse { record: Some(record) }))
    }

    #[instrument(level = "debug", skip_all, fields(trace_id = trace_id(&request), namespace = %request.get_ref().namespace, outcome = field::Empty))]
    async fn extend(&self, request: Request<v1::ExtendRequest>) -> Result<Response<v1::ExtendResponse>, Status> {
        let (deadline, call) = (deadline(&request), Call::of(&request, &request.get_ref().namespace));
        let command =
            scoped_message(request).and_then(|m| request::extend(m, &self.limits)).map_err(|e| call.reject(e))?;
        let lease_expires_at = self.coordinator.extend(command, deadline).await.map_err(|e| call.reject(e))?;
        Span::current().record("outcome", "extended");
        Ok(Response::new(v1::ExtendResponse { lease_expires_at: Some(convert::timestamp(lease_expires_at)) }))
    }

    #[instrument(level = "debug", skip_all, fields(trace_id = trace_id(&request), namespace = %request.get_ref().namespace, outcome = field::Empty))]
    async fn lookup(&self, request: Request<v1::LookupRequest>) -> Result<Response<v1::LookupResponse>, Status> {
        let (deadline, call) = (deadline(&request), Call::of(&request, &request.get_ref().namespace));
        let id = scoped_message(request).and_then(request::lookup).map_err(|e| call.reject(e))?;
        let record = self.coordinator.lookup(&id, deadline).await.map_err(|e| call.reject(e))?;
        Span::current().record("outcome", "found");
        Ok(Response::new(v1::LookupResponse { record: Some(convert::record_message(record)) }))
    }

    #[instrument(level = "debug", skip_all, fields(trace_id = trace_id(&request)))]
    async fn fingerprint(
        &self,
        request: Request<v1::FingerprintRequest>,
    ) -> Result<Response<v1::FingerprintResponse>, Status> {
        let call = Call::of(&request, "");
        let digest = request::fingerprint(request.into_inner(), &self.limits).map_err(|e| call.reject(e))?;
        Ok(Response::new(v1::FingerprintResponse {
            fingerprint: digest.fingerprint.to_vec(),
            canonical: digest.canonical,
            members: digest
                .members
                .into_iter()
                .map(|m| v1::MemberDigest { name: m.name, digest: m.digest.to_vec() })
                .collect(),
        }))
    }
}
