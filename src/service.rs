//! The gRPC edge: decode and validate, call the coordinator, encode. Handlers
//! stay thin; everything they know about time is the caller's deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::{Span, field, info, instrument, warn};

use crate::auth::scoped_message;
use crate::config::Limits;
use crate::coordinator::Coordinator;
use crate::error::Error;
use crate::metrics as m;
use crate::proto::v1::{self, begin_response::Outcome, coordinator_service_server::CoordinatorService};
use crate::request;

/// Time kept back from the caller's deadline so that our answer (say, the
/// in-progress state at the end of a wait) arrives before the caller gives up.
const DEADLINE_MARGIN: Duration = Duration::from_millis(50);

/// Deadline of a call without `grpc-timeout`: waits are still bounded by
/// `--max-wait`, and each etcd request by `--etcd-request-timeout`.
const NO_DEADLINE: Duration = Duration::from_secs(3600);

pub struct CoordinatorApi {
    coordinator: Arc<Coordinator>,
    limits: Limits,
}

impl CoordinatorApi {
    pub fn new(coordinator: Arc<Coordinator>, limits: Limits) -> Self {
        Self { coordinator, limits }
    }
}

/// When this call must have answered, from its `grpc-timeout` header.
fn deadline<T>(request: &Request<T>) -> Instant {
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map(|t| t.saturating_sub(DEADLINE_MARGIN))
        .unwrap_or(NO_DEADLINE);
    Instant::now() + timeout
}

/// The trace id of a W3C `traceparent` header ("00-<32 hex>-<16 hex>-<2 hex>"),
/// so that log lines join the caller's trace. Empty when absent or malformed.
fn trace_id<T>(request: &Request<T>) -> String {
    let Some(header) = request.metadata().get("traceparent").and_then(|v| v.to_str().ok()) else {
        return String::new();
    };
    let parts: Vec<&str> = header.trim().split('-').collect();
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    match parts.as_slice() {
        [version, trace, parent, flags]
            if hex(version, 2)
                && *version != "ff"
                && hex(trace, 32)
                && hex(parent, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0') =>
        {
            (*trace).to_owned()
        }
        _ => String::new(),
    }
}

/// Parses the gRPC wire format of a timeout: up to 8 digits and a unit.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Logs failures at a level matching who must act, and converts them.
fn reject(error: Error) -> Status {
    Span::current().record("outcome", "error");
    match &error {
        Error::KeyReused { .. } => metrics::counter!(m::BEGIN_OUTCOMES, "outcome" => "key_reused").increment(1),
        Error::LeaseLost { .. } => metrics::counter!(m::LEASE_LOST).increment(1),
        _ => {}
    }
    match &error {
        Error::StoreUnavailable(_) | Error::Internal(_) => warn!(%error, "call failed"),
        _ => info!(%error, "call refused"),
    }
    error.into()
}

fn record_begin_metrics(outcome: &Outcome) {
    let name = match outcome {
        Outcome::Acquired(acquired) => {
            if let Some(recovered) = &acquired.recovered {
                let reason = match recovered.reason() {
                    v1::RecoveryReason::Released => "released",
                    _ => "abandoned",
                };
                metrics::counter!(m::TAKEOVERS, "reason" => reason).increment(1);
            }
            "acquired"
        }
        Outcome::Completed(_) => "replayed_completed",
        Outcome::Failed(_) => "replayed_failed",
        Outcome::InProgress(_) => "in_progress",
    };
    metrics::counter!(m::BEGIN_OUTCOMES, "outcome" => name).increment(1);
}

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Acquired(a) if a.recovered.is_some() => "acquired_recovered",
        Outcome::Acquired(_) => "acquired",
        Outcome::Completed(_) => "replayed_completed",
        Outcome::Failed(_) => "replayed_failed",
        Outcome::InProgress(_) => "in_progress",
    }
}

#[tonic::async_trait]
impl CoordinatorService for CoordinatorApi {
    #[instrument(skip_all, fields(trace_id = trace_id(&request), namespace = %request.get_ref().namespace, attempt = field::Empty, outcome = field::Empty))]
    async fn begin(&self, request: Request<v1::BeginRequest>) -> Result<Response<v1::BeginResponse>, Status> {
        let deadline = deadline(&request);
        let command = scoped_message(request).and_then(|m| request::begin(m, &self.limits)).map_err(reject)?;
        let outcome = self.coordinator.begin(&command, deadline).await.map_err(reject)?;
        let span = Span::current();
        span.record("outcome", outcome_name(&outcome));
        record_begin_metrics(&outcome);
        let attempt = match &outcome {
            Outcome::Acquired(a) => a.attempt,
            Outcome::Completed(c) => c.attempt,
            Outcome::Failed(f) => f.attempt,
            Outcome::InProgress(p) => p.attempt,
        };
        span.record("attempt", attempt);
        info!("begin answered");
        Ok(Response::new(v1::BeginResponse { outcome: Some(outcome) }))
    }

    #[instrument(skip_all, fields(trace_id = trace_id(&request), namespace = %request.get_ref().namespace, attempt = field::Empty, outcome = field::Empty))]
    async fn complete(&self, request: Request<v1::CompleteRequest>) -> Result<Response<v1::CompleteResponse>, Status> {
        let deadline = deadline(&request);
        let command = scoped_message(request).and_then(|m| request::complete(m, &self.limits)).map_err(reject)?;
        let record = self.coordinator.complete(command, deadline).await.map_err(reject)?;
        Span::current().record("attempt", record.attempt).record("outcome", "completed");
        info!("complete answered");
        Ok(Response::new(v1::CompleteResponse { record: Some(record) }))
    }

    #[instrument(skip_all, fields(trace_id = trace_id(&request), namespace = %request.get_ref().namespace, retryable = request.get_ref().retryable, attempt = field::Empty, outcome = field::Empty))]
    async fn fail(&self, request: Request<v1::FailRequest>) -> Result<Response<v1::FailResponse>, Status> {
        let deadline = deadline(&request);
        let command = scoped_message(request).and_then(|m| request::fail(m, &self.limits)).map_err(reject)?;
        let record = self.coordinator.fail(command, deadline).await.map_err(reject)?;
        Span::current().record("attempt", record.attempt).record("outcome", "failed");
        info!("fail answered");
        Ok(Response::new(v1::FailResponse { record: Some(record) }))
    }

    #[instrument(skip_all, fields(trace_id = trace_id(&request), namespace = %request.get_ref().namespace, outcome = field::Empty))]
    async fn extend(&self, request: Request<v1::ExtendRequest>) -> Result<Response<v1::ExtendResponse>, Status> {
        let deadline = deadline(&request);
        let command = scoped_message(request).and_then(|m| request::extend(m, &self.limits)).map_err(reject)?;
        let lease_expires_at = self.coordinator.extend(command, deadline).await.map_err(reject)?;
        Span::current().record("outcome", "extended");
        Ok(Response::new(v1::ExtendResponse { lease_expires_at: Some(lease_expires_at) }))
    }

    #[instrument(skip_all, fields(trace_id = trace_id(&request), namespace = %request.get_ref().namespace, outcome = field::Empty))]
    async fn lookup(&self, request: Request<v1::LookupRequest>) -> Result<Response<v1::LookupResponse>, Status> {
        let deadline = deadline(&request);
        let id = scoped_message(request).and_then(request::lookup).map_err(reject)?;
        let record = self.coordinator.lookup(&id, deadline).await.map_err(reject)?;
        Span::current().record("outcome", "found");
        Ok(Response::new(v1::LookupResponse { record: Some(record) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        let with = |value: &str| {
            let mut request = Request::new(());
            request.metadata_mut().insert("traceparent", value.parse().unwrap());
            trace_id(&request)
        };
        assert_eq!(with("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(with(bad), "", "{bad}");
        }
        assert_eq!(trace_id(&Request::new(())), "");
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "10", "10x", "123456789S", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
