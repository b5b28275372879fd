//! The one table that turns every [`Error`] into a gRPC status with a
//! `google.rpc.ErrorInfo` reason (DESIGN.md, "Errors"), and RetryInfo where
//! a retry can help.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::core::error::Error;

/// The `ErrorInfo.domain` of every error this service reports.
pub const ERROR_DOMAIN: &str = "idempotency.v1";

/// `ErrorInfo.reason` values; callers branch on these, so they never change.
pub mod reason {
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    pub const IDEMPOTENCY_KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";
    pub const LEASE_LOST: &str = "LEASE_LOST";
    pub const ALREADY_FINISHED: &str = "ALREADY_FINISHED";
    pub const RECORD_NOT_FOUND: &str = "RECORD_NOT_FOUND";
    pub const RECORD_IN_PROGRESS: &str = "RECORD_IN_PROGRESS";
    pub const STORE_UNAVAILABLE: &str = "STORE_UNAVAILABLE";
    pub const STORE_FULL: &str = "STORE_FULL";
    pub const OVERLOADED: &str = "OVERLOADED";
    pub const INTERNAL: &str = "INTERNAL";
}

/// How long a caller should wait before retrying after the store was
/// unreachable: long enough for an etcd leader election to finish.
const STORE_RETRY_DELAY: Duration = Duration::from_secs(1);

/// How long a caller should wait after the store refused a write for lack of
/// space: an operator has to act, so not soon.
const STORE_FULL_RETRY_DELAY: Duration = Duration::from_secs(30);

/// How long a shed caller should back off: short, since admitted calls finish
/// in milliseconds, and callers add their own jitter.
const OVERLOAD_RETRY_DELAY: Duration = Duration::from_millis(200);

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let message = error.to_string();
        let info = |reason: &str, metadata: Vec<(&str, String)>| {
            let metadata: std::collections::HashMap<String, String> =
                metadata.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata)
        };
        let (code, details) = match error {
            // DESIGN.md gives these no ErrorInfo reason: the code says it all.
            Error::Unauthenticated(_) => return Status::unauthenticated(message),
            Error::PermissionDenied(_) => return Status::permission_denied(message),
            Error::InvalidRequest(violations) => {
                let mut details = info(reason::INVALID_REQUEST, vec![]);
                details.set_bad_request(
                    violations.into_iter().map(|v| FieldViolation::new(v.field, v.description)).collect::<Vec<_>>(),
                );
                (Code::InvalidArgument, details)
            }
            Error::KeyReused { attempt, differing } => {
                let mut metadata = vec![("attempt", attempt.to_string())];
                if let Some(names) = differing {
                    // A JSON array: member names may contain any character, a comma too.
                    metadata.push(("differing_members", serde_json::to_string(&names).unwrap_or_default()));
                }
                (Code::FailedPrecondition, info(reason::IDEMPOTENCY_KEY_REUSED, metadata))
            }
            Error::LeaseLost { current_attempt } => (
                Code::FailedPrecondition,
                info(reason::LEASE_LOST, vec![("current_attempt", current_attempt.to_string())]),
            ),
            Error::AlreadyFinished { attempt, state } => (
                Code::FailedPrecondition,
                info(reason::ALREADY_FINISHED, vec![("attempt", attempt.to_string()), ("state", state.to_owned())]),
            ),
            Error::NotFound => (Code::NotFound, info(reason::RECORD_NOT_FOUND, vec![])),
            Error::RecordInProgress { attempt } => {
                (Code::FailedPrecondition, info(reason::RECORD_IN_PROGRESS, vec![("attempt", attempt.to_string())]))
            }
            Error::StoreUnavailable(_) | Error::ShardStateMoved => {
                let mut details = info(reason::STORE_UNAVAILABLE, vec![]);
                details.set_retry_info(Some(STORE_RETRY_DELAY));
                (Code::Unavailable, details)
            }
            // RESOURCE_EXHAUSTED as gRPC defines it ("the entire file system
            // is out of space"); retryable, but only after an operator acts.
            Error::StoreFull(_) => {
                let mut details = info(reason::STORE_FULL, vec![]);
                details.set_retry_info(Some(STORE_FULL_RETRY_DELAY));
                (Code::ResourceExhausted, details)
            }
            Error::Overloaded => {
                let mut details = info(reason::OVERLOADED, vec![]);
                details.set_retry_info(Some(OVERLOAD_RETRY_DELAY));
                (Code::ResourceExhausted, details)
            }
            Error::Internal(_) => (Code::Internal, info(reason::INTERNAL, vec![])),
        };
        Status::with_error_details(code, message, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::error::Violation;

    #[test]
    fn invalid_requests_name_every_field() {
        let status = Status::from(Error::InvalidRequest(vec![
            Violation::new("key", "must be 1..255 bytes"),
            Violation::new("lease_ttl", "must be whole seconds"),
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        assert_eq!(details.error_info().map(|i| i.reason.as_str()), Some(reason::INVALID_REQUEST));
        let fields: Vec<&str> = details
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(fields, ["key", "lease_ttl"]);
    }

    #[test]
    fn store_unavailable_carries_retry_info() {
        let status = Status::from(Error::StoreUnavailable("etcd timed out".into()));
        assert_eq!(status.code(), Code::Unavailable);
        let details = status.get_error_details();
        assert_eq!(details.error_info().map(|i| i.reason.as_str()), Some(reason::STORE_UNAVAILABLE));
        assert_eq!(details.retry_info().and_then(|r| r.retry_delay), Some(STORE_RETRY_DELAY));
    }

    #[test]
    fn lease_lost_names_the_current_attempt() {
        let status = Status::from(Error::LeaseLost { current_attempt: 3 });
        assert_eq!(status.code(), Code::FailedPrecondition);
        let info = status.get_error_details().error_info().cloned().expect("error info");
        assert_eq!(info.reason, reason::LEASE_LOST);
        assert_eq!(info.metadata.get("current_attempt").map(String::as_str), Some("3"));
    }
}
