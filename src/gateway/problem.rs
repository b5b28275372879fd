//! Every answer the gateway writes itself, as an RFC 9457 problem document
//! (`application/problem+json`): the status the Idempotency-Key draft names,
//! a `type` a client can branch on, and a `detail` a person can act on.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

use crate::gateway::key::HEADER;

/// What a client is told when the request may have reached the service
/// before the gateway lost it: the key is not released at once.
const HELD: &str = "This Idempotency-Key stays taken until the attempt's lease lapses; a retry after Retry-After runs it again, marked as recovered so the service can check what the first attempt did.";

#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// The route requires a key and the request has none.
    KeyMissing,
    /// The key header does not parse; the text says why.
    KeyMalformed(String),
    /// The path is one the service may read as another path; the text says why.
    PathAmbiguous(String),
    /// The request names no path the gateway forwards (authority form,
    /// CONNECT, `*` but for OPTIONS) or two hosts; the text says which.
    TargetUnsupported(String),
    /// The route scopes keys by caller and the request names none in `header`.
    IdentityMissing { header: String },
    /// The key was used for a different request.
    KeyReused,
    /// The first request with this key is still running.
    InProgress { retry_after: Duration },
    /// The request body is over the route's limit; nothing was begun.
    BodyTooLarge { limit: usize },
    /// The request body could not be read.
    BodyUnreadable(String),
    /// The request body did not arrive in time; nothing was begun.
    BodyTimedOut(String),
    /// The gateway's buffer budget is spent; nothing was begun.
    Overloaded { retry_after: Duration },
    /// A JSON body has a number that canonical JSON would change, at `pointer`.
    JsonNumberInexact { pointer: String },
    /// The request with this key finished, but its response could not be stored.
    NotReplayable { detail: String },
    /// The request with this key ended with a stored, final error.
    StoredFailure { code: String, message: String },
    /// The coordinator cannot be reached or is overloaded; nothing was forwarded.
    CoordinatorUnavailable { retry_after: Duration },
    /// The coordinator refused the gateway's call: a configuration error.
    CoordinatorRefused,
    /// The upstream could not be reached or broke off before its status line.
    /// `held`: the request may have reached it, so the key is held until its
    /// lease lapses (then a retry runs as a recovered attempt); `None`: the
    /// key was released, or there is none.
    UpstreamUnreachable { held: Option<Duration> },
    /// The upstream sent no status line in time; `held` as above.
    UpstreamTimeout { after: Duration, held: Option<Duration> },
    /// The upstream answered `status`, then its body broke off or stalled:
    /// the request was processed, and will not run again for this key.
    ResponseIncomplete { status: StatusCode },
    /// The gateway's own handling of the request failed (a bug); the log says where.
    GatewayFailed,
}

impl Problem {
    pub fn status(&self) -> StatusCode {
        match self {
            Problem::KeyMissing
            | Problem::KeyMalformed(_)
            | Problem::PathAmbiguous(_)
            | Problem::TargetUnsupported(_)
            | Problem::BodyUnreadable(_)
            | Problem::JsonNumberInexact { .. } => StatusCode::BAD_REQUEST,
            Problem::IdentityMissing { .. } => StatusCode::UNAUTHORIZED,
            Problem::BodyTimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            Problem::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Problem::InProgress { .. } | Problem::NotReplayable { .. } | Problem::StoredFailure { .. } => {
                StatusCode::CONFLICT
            }
            Problem::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Problem::CoordinatorUnavailable { .. } | Problem::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Problem::CoordinatorRefused | Problem::GatewayFailed => StatusCode::INTERNAL_SERVER_ERROR,
            Problem::UpstreamUnreachable { .. } | Problem::ResponseIncomplete { .. } => StatusCode::BAD_GATEWAY,
            Problem::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The last segment of the problem's `type` URI.
    pub fn name(&self) -> &'static str {
        match self {
            Problem::KeyMissing => "idempotency-key-missing",
            Problem::KeyMalformed(_) => "idempotency-key-malformed",
            Problem::PathAmbiguous(_) => "path-ambiguous",
            Problem::TargetUnsupported(_) => "request-target-unsupported",
            Problem::IdentityMissing { .. } => "identity-missing",
            Problem::BodyTimedOut(_) => "request-body-timeout",
            Problem::Overloaded { .. } => "gateway-overloaded",
            Problem::ResponseIncomplete { .. } => "upstream-response-incomplete",
            Problem::KeyReused => "idempotency-key-reused",
            Problem::InProgress { .. } => "request-in-progress",
            Problem::BodyTooLarge { .. } => "request-body-too-large",
            Problem::BodyUnreadable(_) => "request-body-unreadable",
            Problem::JsonNumberInexact { .. } => "json-number-inexact",
            Problem::NotReplayable { .. } => "response-not-replayable",
            Problem::StoredFailure { .. } => "request-failed",
            Problem::CoordinatorUnavailable { .. } => "coordinator-unavailable",
            Problem::CoordinatorRefused => "gateway-misconfigured",
            Problem::UpstreamUnreachable { .. } => "upstream-unreachable",
            Problem::UpstreamTimeout { .. } => "upstream-timeout",
            Problem::GatewayFailed => "gateway-failed",
        }
    }

    fn title_and_detail(&self) -> (&'static str, String) {
        match self {
            Problem::KeyMissing => (
                "Idempotency-Key is missing",
                format!("This request needs an {HEADER} header, e.g. {HEADER}: \"<uuid>\"."),
            ),
            Problem::KeyMalformed(why) => ("Idempotency-Key is malformed", why.clone()),
            Problem::PathAmbiguous(why) => (
                "The request path is ambiguous",
                format!(
                    "The path has {why}, which services read in different ways; send the path in its plain form (no //, dot segments, ';' parameters or percent-encoded unreserved characters)."
                ),
            ),
            Problem::TargetUnsupported(why) => (
                "The request target is not forwarded",
                format!("The request has {why}; the gateway forwards requests for a path on one host. Nothing was forwarded."),
            ),
            Problem::IdentityMissing { header } => (
                "The caller is not identified",
                format!(
                    "This route keeps each caller's Idempotency-Keys apart by the {header} header, and the request has none; nothing was forwarded."
                ),
            ),
            Problem::BodyTimedOut(why) => {
                ("The request body did not arrive in time", format!("{why}; nothing was forwarded."))
            }
            Problem::Overloaded { .. } => (
                "The idempotency gateway is busy",
                "The gateway holds as many request bodies as it may; nothing was forwarded. Retry after the time in Retry-After.".into(),
            ),
            Problem::ResponseIncomplete { status } => (
                "The service's answer broke off",
                format!(
                    "The service answered {status} and then its response broke off, so the request was processed; it will not run again for this Idempotency-Key, and a retry gets 409 response-not-replayable."
                ),
            ),
            Problem::KeyReused => (
                "Idempotency-Key was used for a different request",
                format!(
                    "This {HEADER} was already used with a different method, path, query, headers or body; use a new key for a new request."
                ),
            ),
            Problem::InProgress { .. } => (
                "A request with this Idempotency-Key is in progress",
                "Retry after the time in Retry-After; the first request's answer will be replayed.".into(),
            ),
            Problem::BodyTooLarge { limit } => {
                ("Request body too large", format!("The request body is over this route's limit of {limit} bytes."))
            }
            Problem::BodyUnreadable(why) => ("Request body could not be read", why.clone()),
            Problem::JsonNumberInexact { pointer } => (
                "A JSON number cannot be fingerprinted exactly",
                format!(
                    "The number at {pointer:?} would change in canonical JSON (RFC 8785 holds numbers as IEEE 754 doubles), so it could not be told apart from another number; send it as a string."
                ),
            ),
            Problem::NotReplayable { detail } => ("The response to this request cannot be replayed", detail.clone()),
            Problem::StoredFailure { code, message } => {
                ("The request with this Idempotency-Key failed", format!("{code}: {message}"))
            }
            Problem::CoordinatorUnavailable { .. } => (
                "Idempotency protection is unavailable",
                "The request was not forwarded, so it has not run; retry after the time in Retry-After.".into(),
            ),
            Problem::CoordinatorRefused => (
                "The idempotency gateway is misconfigured",
                "The request was not forwarded, so it has not run; the gateway's log says why.".into(),
            ),
            Problem::UpstreamUnreachable { held: None } => (
                "The service could not be reached",
                "The request may not have completed; retry with the same Idempotency-Key.".into(),
            ),
            Problem::UpstreamUnreachable { held: Some(_) } => (
                "The service broke off before answering",
                format!("The request may have reached the service. {HELD}"),
            ),
            Problem::UpstreamTimeout { after, held: None } => (
                "The service did not answer in time",
                format!("No answer within {after:?}; retry with the same Idempotency-Key."),
            ),
            Problem::UpstreamTimeout { after, held: Some(_) } => (
                "The service did not answer in time",
                format!("No answer within {after:?}, so the request may have reached the service. {HELD}"),
            ),
            // The failure may have come after the service was called: only the
            // key makes a retry safe, so say to keep it.
            Problem::GatewayFailed => (
                "The idempotency gateway failed",
                "The request may or may not have reached the service; retry with the same Idempotency-Key.".into(),
            ),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Problem::InProgress { retry_after }
            | Problem::CoordinatorUnavailable { retry_after }
            | Problem::Overloaded { retry_after }
            | Problem::UpstreamUnreachable { held: Some(retry_after) }
            | Problem::UpstreamTimeout { held: Some(retry_after), .. } => Some(*retry_after),
            _ => None,
        }
    }

    pub fn into_response(self) -> Response {
        let status = self.status();
        let (title, detail) = self.title_and_detail();
        let mut document = serde_json::json!({
            "type": format!("urn:idempotency-gateway:{}", self.name()),
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        });
        if matches!(self, Problem::KeyMissing | Problem::KeyMalformed(_)) {
            document["header"] = HEADER.into();
        }
        if let Problem::IdentityMissing { header } = &self {
            document["header"] = header.as_str().into();
        }
        if let Problem::JsonNumberInexact { pointer } = &self {
            document["pointer"] = pointer.as_str().into();
        }
        let mut response = Response::new(Body::from(document.to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(after) = self.retry_after() {
            // Whole seconds, rounded up: Retry-After: 0 would invite a busy loop.
            let seconds = after.as_millis().div_ceil(1000).max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds as u64));
        }
        response
    }
}
