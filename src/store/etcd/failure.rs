//! What went wrong with one etcd call, and how calls are retried: transient
//! failures until the deadline, with backoff; everything else at once.

use std::time::Duration;

use tokio::time::{Instant, sleep};
use tracing::{debug, warn};

use crate::core::error::Error;
use crate::store::etcd::leases::LeasePool;

/// What went wrong with one etcd call, before deciding whether to retry.
#[derive(Debug, Clone)]
pub enum Failure {
    Transient(String),
    /// A pooled lease no longer exists in etcd.
    LeaseGone(String),
    /// The request, or its answer, was larger than etcd or the client take:
    /// send each call of the batch alone.
    TooLarge(String),
    /// The transaction may or may not have committed: read what etcd holds.
    Unknown(String),
    /// etcd's NOSPACE alarm is raised: it refuses every put and lease grant
    /// (and every transaction that holds one), and serves reads.
    Full(String),
    Permanent(String),
}

pub fn classify(error: etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    use tonic::Code;
    match error {
        E::TransportError(e) => Failure::Transient(e.to_string()),
        E::IoError(e) => Failure::Transient(e.to_string()),
        E::GRpcStatus(status) => match status.code() {
            // etcd answers Unavailable for "no leader", "leader changed" and
            // its own request timeouts; the channel answers Unavailable or
            // Unknown while reconnecting.
            // The client could not decode an answer over its size limit:
            // the transaction ran.
            Code::OutOfRange => Failure::TooLarge(status.message().to_owned()),
            // etcd's "request is too large" (over --max-request-bytes) and
            // its gRPC server's "received message larger than max".
            Code::ResourceExhausted if status.message().contains(NO_SPACE) => {
                Failure::Full(status.message().to_owned())
            }
            Code::InvalidArgument | Code::ResourceExhausted
                if status.message().contains("too large") || status.message().contains("larger than max") =>
            {
                Failure::TooLarge(status.message().to_owned())
            }
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::ResourceExhausted => {
                Failure::Transient(status.message().to_owned())
            }
            Code::NotFound if status.message().contains("lease not found") => {
                Failure::LeaseGone(status.message().to_owned())
            }
            _ => Failure::Permanent(format!("{:?}: {}", status.code(), status.message())),
        },
        other => Failure::Permanent(other.to_string()),
    }
}

/// etcd's answer while its NOSPACE alarm is raised.
pub const NO_SPACE: &str = "database space exceeded";

pub fn timed_out() -> Error {
    Error::StoreUnavailable("etcd did not answer in time".into())
}

/// Retry pacing for one call: exponential from 25 ms to 500 ms.
pub struct Backoff {
    delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { delay: Duration::from_millis(25) }
    }
}

impl Backoff {
    /// Sleeps before the next try, or returns the error if there is no time
    /// (or no point) left.
    pub async fn after(&mut self, failure: Failure, deadline: Instant, leases: &LeasePool) -> Result<(), Error> {
        let message = match failure {
            Failure::Permanent(message) => return Err(Error::Internal(format!("etcd refused the request: {message}"))),
            Failure::Full(message) => return Err(Error::StoreFull(message)),
            Failure::TooLarge(message) => {
                return Err(Error::Internal(format!("one call is larger than etcd takes on its own: {message}")));
            }
            // Only reads get here (writes read instead): asking again is safe.
            Failure::Unknown(message) => message,
            Failure::LeaseGone(message) => {
                warn!(%message, "a pooled lease no longer exists in etcd; forgetting pooled leases");
                leases.clear();
                message
            }
            Failure::Transient(message) => message,
        };
        if Instant::now() + self.delay >= deadline {
            return Err(Error::StoreUnavailable(message));
        }
        debug!(%message, delay = ?self.delay, "retrying an etcd request");
        sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_millis(500));
        Ok(())
    }
}
