//! The gateway's calls to the coordinator service, a gRPC caller like any
//! other: each call has its own deadline, and every answer is sorted into
//! what the gateway acts on.

use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::cli::Authorization;
use crate::core::fingerprint::Fingerprint;
use crate::gateway::routes::Route;
use crate::grpc::status::reason;
use crate::proto::convert;
use crate::proto::v1::{self, begin_response::Outcome, coordinator_service_client::CoordinatorServiceClient};

/// Deadline of a call that does not wait; a Begin that waits gets its wait
/// on top, and an Extend less when its lease has less left (`heartbeat`).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What to tell a client to wait when the coordinator gave no RetryInfo.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a call did not get its answer.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// Unreachable, overloaded, out of space or too slow: try again later.
    Unavailable { retry_after: Duration, why: String },
    /// The key was used with another fingerprint.
    KeyReused,
    /// Another attempt owns the record now.
    LeaseLost,
    /// The coordinator found the call malformed or over a limit.
    Invalid(String),
    /// Anything else: the gateway's settings or credentials are wrong.
    Refused(String),
}

impl From<tonic::Status> for CallError {
    fn from(status: tonic::Status) -> CallError {
        let details = status.get_error_details();
        let reason = details.error_info().map(|info| info.reason.as_str()).unwrap_or("");
        match status.code() {
            tonic::Code::FailedPrecondition if reason == reason::IDEMPOTENCY_KEY_REUSED => CallError::KeyReused,
            tonic::Code::FailedPrecondition if reason == reason::LEASE_LOST => CallError::LeaseLost,
            // A transport failure (refused connection, reset stream) surfaces as Unavailable or Unknown.
            tonic::Code::Unavailable
            | tonic::Code::ResourceExhausted
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
            | tonic::Code::Unknown => CallError::Unavailable {
                retry_after: details.retry_info().and_then(|info| info.retry_delay).unwrap_or(DEFAULT_RETRY_AFTER),
                why: format!("{:?}: {}", status.code(), status.message()),
            },
            tonic::Code::InvalidArgument => CallError::Invalid(status.message().to_owned()),
            code => CallError::Refused(format!("{code:?} {reason}: {}", status.message())),
        }
    }
}

type Client = CoordinatorServiceClient<InterceptedService<Channel, Authorization>>;

/// The coordinator as the gateway calls it.
#[derive(Clone)]
pub struct Coordinator {
    client: Client,
    tenant: String,
    owner: String,
}

/// The record a request's key names.
pub struct RecordName<'a> {
    pub route: &'a Route,
    /// The route's namespace scoped by the caller (`identity`).
    pub namespace: &'a str,
    pub key: &'a str,
}

impl Coordinator {
    /// Connects lazily, so the gateway starts (and answers 503) while the coordinator is down.
    pub fn new(channel: Channel, authorization: Authorization, tenant: String, owner: String) -> Coordinator {
        Coordinator { client: CoordinatorServiceClient::with_interceptor(channel, authorization), tenant, owner }
    }

    fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        request
    }

    pub async fn begin(
        &self,
        name: &RecordName<'_>,
        fingerprint: Fingerprint,
        request_id: &str,
    ) -> Result<Outcome, CallError> {
        let route = name.route;
        let message = v1::BeginRequest {
            tenant: self.tenant.clone(),
            namespace: name.namespace.to_owned(),
            key: name.key.to_owned(),
            request: Some(v1::begin_request::Request::Fingerprint(fingerprint.to_vec())),
            lease_ttl: Some(convert::duration(route.lease_ttl)),
            wait: route.wait.map(convert::duration),
            owner: self.owner.clone(),
            request_id: request_id.to_owned(),
        };
        let timeout = CALL_TIMEOUT + route.wait.unwrap_or_default();
        let response = self.client.clone().begin(Self::request(message, timeout)).await?;
        response.into_inner().outcome.ok_or_else(|| CallError::Refused("Begin answered no outcome".into()))
    }

    pub async fn complete(&self, name: &RecordName<'_>, token: u64, result: v1::Result) -> Result<(), CallError> {
        let message = v1::CompleteRequest {
            tenant: self.tenant.clone(),
            namespace: name.namespace.to_owned(),
            key: name.key.to_owned(),
            fencing_token: token,
            result: Some(result),
            retention: name.route.retention.map(convert::duration),
        };
        self.client.clone().complete(Self::request(message, CALL_TIMEOUT)).await?;
        Ok(())
    }

    pub async fn fail(
        &self,
        name: &RecordName<'_>,
        token: u64,
        code: &str,
        message: String,
        retryable: bool,
    ) -> Result<(), CallError> {
        let request = v1::FailRequest {
            tenant: self.tenant.clone(),
            namespace: name.namespace.to_owned(),
            key: name.key.to_owned(),
            fencing_token: token,
            error: Some(v1::Error { code: code.to_owned(), message, details: vec![] }),
            retryable,
            retention: name.route.retention.map(convert::duration),
        };
        self.client.clone().fail(Self::request(request, CALL_TIMEOUT)).await?;
        Ok(())
    }

    /// Extends the lease with a deadline of `timeout`; the new `lease_expires_at`.
    pub async fn extend(
        &self,
        name: &RecordName<'_>,
        token: u64,
        timeout: Duration,
    ) -> Result<Option<prost_types::Timestamp>, CallError> {
        let message = v1::ExtendRequest {
            tenant: self.tenant.clone(),
            namespace: name.namespace.to_owned(),
            key: name.key.to_owned(),
            fencing_token: token,
            lease_ttl: Some(convert::duration(name.route.lease_ttl)),
        };
        let response = self.client.clone().extend(Self::request(message, timeout)).await?;
        Ok(response.into_inner().lease_expires_at)
    }
}
