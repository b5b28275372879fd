//! The gateway's metrics, beside the coordinator's on the same conventions:
//! counters end in `_total`, durations are seconds, and label values come
//! from small fixed sets (never a key, path, namespace or tenant).

use std::time::Duration;

use http::StatusCode;

/// Requests by what the gateway did with them.
pub const REQUESTS: &str = "idempotency_gateway_requests_total";

/// Time from forwarding a request to the end of the response body the gateway
/// stores, by the answer's class.
pub const UPSTREAM_SECONDS: &str = "idempotency_gateway_upstream_duration_seconds";

/// What the gateway did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No route matches: forwarded as is.
    Passthrough,
    /// A route whose key is optional, and no key: forwarded unprotected.
    Unkeyed,
    /// Begun, forwarded, and its answer stored (or marked as not replayable).
    Executed,
    /// Answered from the stored response.
    Replayed,
    /// 409: the first request with the key is still running.
    InProgress,
    /// 422: the key was used for another request.
    KeyReused,
    /// 400: no key where one is required, a malformed key, an unreadable body.
    BadRequest,
    /// 413: the request body is over the route's limit.
    BodyTooLarge,
    /// 401: the route scopes keys by caller and the request names none.
    IdentityMissing,
    /// 503: the gateway's buffer budget is spent; nothing was begun.
    Overloaded,
    /// 409: the key's request finished but its answer cannot be replayed.
    NotReplayable,
    /// 503: the coordinator is unavailable; nothing was forwarded.
    CoordinatorUnavailable,
    /// 500: the coordinator refused the gateway's call.
    CoordinatorRefused,
    /// The coordinator is unavailable and the route fails open: forwarded unprotected.
    FailOpen,
    /// The upstream failed (unreachable, timed out, 5xx, a retryable 4xx): the key was released.
    UpstreamFailed,
    /// Forwarded and answered, but its outcome could not be stored (lease lost, coordinator gone).
    Unstored,
    /// 500: the gateway's own handling failed (a bug); the log says where.
    InternalError,
}

pub const OUTCOMES: [Outcome; 17] = [
    Outcome::Passthrough,
    Outcome::Unkeyed,
    Outcome::Executed,
    Outcome::Replayed,
    Outcome::InProgress,
    Outcome::KeyReused,
    Outcome::BadRequest,
    Outcome::BodyTooLarge,
    Outcome::IdentityMissing,
    Outcome::Overloaded,
    Outcome::NotReplayable,
    Outcome::CoordinatorUnavailable,
    Outcome::CoordinatorRefused,
    Outcome::FailOpen,
    Outcome::UpstreamFailed,
    Outcome::Unstored,
    Outcome::InternalError,
];

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passthrough => "passthrough",
            Outcome::Unkeyed => "unkeyed",
            Outcome::Executed => "executed",
            Outcome::Replayed => "replayed",
            Outcome::InProgress => "in_progress",
            Outcome::KeyReused => "key_reused",
            Outcome::BadRequest => "bad_request",
            Outcome::BodyTooLarge => "body_too_large",
            Outcome::IdentityMissing => "identity_missing",
            Outcome::Overloaded => "overloaded",
            Outcome::NotReplayable => "not_replayable",
            Outcome::CoordinatorUnavailable => "coordinator_unavailable",
            Outcome::CoordinatorRefused => "coordinator_refused",
            Outcome::FailOpen => "fail_open",
            Outcome::UpstreamFailed => "upstream_failed",
            Outcome::Unstored => "unstored",
            Outcome::InternalError => "internal_error",
        }
    }
}

pub fn count(outcome: Outcome) {
    metrics::counter!(REQUESTS, "outcome" => outcome.as_str()).increment(1);
}

/// The class of an upstream answer, or why there was none.
pub fn observe_upstream(class: &'static str, took: Duration) {
    metrics::histogram!(UPSTREAM_SECONDS, "class" => class).record(took.as_secs_f64());
}

pub fn class_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Every outcome at zero from the start (see `shell::metrics::export_at_zero`).
pub fn export_at_zero() {
    for outcome in OUTCOMES {
        metrics::counter!(REQUESTS, "outcome" => outcome.as_str()).absolute(0);
    }
}
