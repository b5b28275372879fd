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
