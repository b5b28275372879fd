//! What the gateway does with one request: pass it through when no route
//! protects it; otherwise Begin with the request's key and fingerprint, then
//! replay, refuse, or forward it and store the service's answer.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Request, StatusCode, header};
use tracing::{error, info, warn};

use crate::gateway::bodies::{self, RequestBodyError, ResponseBody};
use crate::gateway::buffer_budget::BufferBudget;
use crate::gateway::coordinator::{CallError, Coordinator, RecordName};
use crate::gateway::gateway_metrics::{self as gm, Outcome};
use crate::gateway::heartbeat::{Lease, heartbeat};
use crate::gateway::key;
use crate::gateway::problem::Problem;
use crate::gateway::request_fingerprint;
use crate::gateway::request_path;
use crate::gateway::routes::RouteTable;
use crate::gateway::routes::{KeyRule, Route};
use crate::gateway::stored_response::{self, StoredResponse};
use crate::gateway::upstream::{Upstream, UpstreamError};
use crate::proto::convert;
use crate::proto::v1::{self, begin_response::Outcome as Begun};

/// Marks a replayed answer, as the Idempotency-Key draft's implementations do.
const REPLAYED: &str = "idempotent-replayed";

/// The error code of the terminal record stored when an answer was too large
/// to store: a retry learns the request ran, and that its answer is gone.
pub const RESPONSE_NOT_STORED: &str = "RESPONSE_NOT_STORED";

/// How long an in-progress or busy answer tells a client to wait when nothing names a time.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// An acquired attempt.
struct Attempt {
    token: u64,
    /// It took over an unfinished attempt: the service must reconcile.
    recovered: bool,
    lease: Lease,
}

pub struct Gateway {
    pub routes: RouteTable,
    pub upstream: Upstream,
    pub coordinator: Coordinator,
    /// Bytes protected requests may buffer, all together.
    pub budget: BufferBudget,
}

/// Statuses that say the request was not processed, so they release the
/// key for the next retry (issue 27, item 6), beside every 5xx and a
/// route's `retryable_4xx`: unauthenticated, forbidden, proxy
/// authentication, request timeout, too early, too many requests.
pub const RELEASING_4XX: [u16; 6] = [401, 403, 407, 408, 425, 429];

/// Whether `status` releases the key instead of being stored.
pub fn releases(status: StatusCode, route: &Route) -> bool {
    status.is_server_error()
        || status.is_informational()
        || RELEASING_4XX.contains(&status.as_u16())
        || route.retryable_4xx.contains(&status)
}

/// Every request, as the connection hands it over.
pub async fn handle(gateway: Arc<Gateway>, request: Request<Body>) -> Response {
    let (response, outcome) = gateway.answer(request).await;
    gm::count(outcome);
    response
}

/// A request with a key on a protected route, read whole.
struct Keyed {
    route: Arc<Route>,
    /// The route's namespace scoped by the caller.
    namespace: String,
    key: String,
    parts: Parts,
    body: Bytes,
}

impl Gateway {
    async fn answer(self: Arc<Self>, mut request: Request<Body>) -> (Response, Outcome) {
        // Set only on an acquired attempt, never passed on from a client.
        self.routes.strip_edge_headers(request.headers_mut());
        if let Some(why) = request_path::unsupported_target(&request) {
            return (Problem::TargetUnsupported(why).into_response(), Outcome::BadRequest);
        }
        let path = match request_path::for_matching(request.uri().path()) {
            Ok(path) => path,
            Err(why) => return (Problem::PathAmbiguous(why).into_response(), Outcome::BadRequest),
        };
        let Some(route) = self.routes.find(request.method(), &path) else {
            return (self.forward(request, None).await, Outcome::Passthrough);
        };
        let key = match key::idempotency_key(request.headers()) {
            Ok(Some(key)) => key,
            Ok(None) if route.key == KeyRule::Optional => {
                let response = self.forward(request, Some(route.upstream_timeout)).await;
                return (no_store(response), Outcome::Unkeyed);
            }
            Ok(None) => return (Problem::KeyMissing.into_response(), Outcome::BadRequest),
            Err(why) => return (Problem::KeyMalformed(why).into_response(), Outcome::BadRequest),
        };
        let Some(namespace) = route.identity.scoped_namespace(&route.namespace, request.headers()) else {
            let header = route.identity.header().map(|h| h.to_string()).unwrap_or_default();
            return (no_store(Problem::IdentityMissing { header }.into_response()), Outcome::IdentityMissing);
        };
        let (parts, body) = request.into_parts();
        // Held until the answer is handed to the connection.
        let declared = bodies::declared_length(&parts.headers).map_or(route.max_request_bytes, |length| {
            usize::try_from(length).unwrap_or(usize::MAX).min(route.max_request_bytes)
        });
        let Some(_reserved) = self.budget.reserve(declared.saturating_add(route.max_stored_response_bytes)) else {
            let problem = Problem::Overloaded { retry_after: DEFAULT_RETRY_AFTER };
            return (problem.into_response(), Outcome::Overloaded);
        };
        let body = match bodies::read_request(&parts.headers, body, route.max_request_bytes).await {
            Ok(body) => body,
            Err(RequestBodyError::TooLarge) => {
                let problem = Problem::BodyTooLarge { limit: route.max_request_bytes };
                return (problem.into_response(), Outcome::BodyTooLarge);
            }
            Err(RequestBodyError::TimedOut(why)) => {
                return (Problem::BodyTimedOut(why).into_response(), Outcome::BadRequest);
            }
            Err(RequestBodyError::Unreadable(why)) => {
                return (Problem::BodyUnreadable(why).into_response(), Outcome::BadRequest);
            }
        };
        // A client that hangs up must not cancel the attempt: the service may
        // already be acting on it, and its answer must still be stored.
        let keyed = Keyed { route, namespace, key, parts, body };
        let attempt = tokio::spawn(self.clone().protect(keyed));
        match attempt.await {
            Ok((response, outcome)) => (no_store(response), outcome),
            Err(panicked) => {
                error!(error = %panicked, "the request's task failed");
                (Problem::GatewayFailed.into_response(), Outcome::InternalError)
            }
        }
    }

    async fn protect(self: Arc<Self>, request: Keyed) -> (Response, Outcome) {
        let route = request.route.clone();
        let fingerprint = match request_fingerprint::of_request(&request.parts, &request.body, &route) {
            Ok(fingerprint) => fingerprint,
            Err(problem) => return (problem.into_response(), Outcome::BadRequest),
        };
        let name = RecordName { route: &route, namespace: &request.namespace, key: &request.key };
        let request_id = uuid::Uuid::new_v4().to_string();
        let sent_at = tokio::time::Instant::now();
        match self.coordinator.begin(&name, fingerprint, &request_id).await {
            Ok(Begun::Acquired(acquired)) => {
                // Timed from the lease it was handed, not a full TTL (`heartbeat`).
                let lease =
                    Lease::answered(sent_at, acquired.lease_expires_at.as_ref(), SystemTime::now(), route.lease_ttl);
                let attempt = Attempt { token: acquired.fencing_token, recovered: acquired.recovered.is_some(), lease };
                self.execute(&request, attempt).await
            }
            Ok(Begun::Completed(completed)) => replay(completed.result),
            Ok(Begun::Failed(failed)) => {
                let error = failed.error.unwrap_or_default();
                let problem = if error.code == RESPONSE_NOT_STORED {
                    Problem::NotReplayable { detail: error.message }
                } else {
                    Problem::StoredFailure { code: error.code, message: error.message }
                };
                (problem.into_response(), Outcome::NotReplayable)
            }
            Ok(Begun::InProgress(busy)) => {
                let retry_after =
                    busy.retry_after.as_ref().and_then(convert::std_duration).unwrap_or(DEFAULT_RETRY_AFTER);
                (Problem::InProgress { retry_after }.into_response(), Outcome::InProgress)
            }
            Err(CallError::KeyReused) => (Problem::KeyReused.into_response(), Outcome::KeyReused),
            Err(CallError::Unavailable { why, .. }) if route.fail_open => {
                warn!(route = %route.name, %why, "coordinator unavailable: forwarding WITHOUT idempotency protection (fail_open)");
                let forwarded = Request::from_parts(request.parts, Body::from(request.body));
                (self.forward(forwarded, Some(route.upstream_timeout)).await, Outcome::FailOpen)
            }
            Err(CallError::Unavailable { retry_after, why }) => {
                warn!(route = %route.name, %why, "coordinator unavailable: refusing with 503");
                (Problem::CoordinatorUnavailable { retry_after }.into_response(), Outcome::CoordinatorUnavailable)
            }
            Err(refused @ (CallError::LeaseLost | CallError::Invalid(_) | CallError::Refused(_))) => {
                error!(route = %route.name, error = ?refused, "the coordinator refused Begin: check the route and the gateway's credentials");
                (Problem::CoordinatorRefused.into_response(), Outcome::CoordinatorRefused)
            }
        }
    }

    /// Forwards an acquired request with its fencing token, heartbeating
    /// while the service works, and stores or releases by its answer.
    /// Only a failure known to come before the request was sent releases
    /// the key; once a status line has arrived it is never released unless
    /// the status says the request was not processed ([`releases`]).
    async fn execute(&self, request: &Keyed, attempt: Attempt) -> (Response, Outcome) {
        let route = &request.route;
        let name = RecordName { route, namespace: &request.namespace, key: &request.key };
        let token = attempt.token;
        // Stopped when this returns, after the outcome is stored.
        let _heartbeat = heartbeat(
            self.coordinator.clone(),
            route.clone(),
            request.namespace.clone(),
            request.key.clone(),
            token,
            attempt.lease,
        );
        let started = Instant::now();
        let forwarded = Request::from_parts(request.parts.clone(), Body::from(request.body.clone()));
        let mut marks = vec![(route.fencing_token_header.clone(), HeaderValue::from(token))];
        if attempt.recovered {
            marks.push((route.recovered_header.clone(), HeaderValue::from_static("true")));
        }
        let response = match self.upstream.send(forwarded, marks, Some(route.upstream_timeout)).await {
            Ok(response) => response,
            Err(UpstreamError::NotSent(why)) => {
                warn!(route = %route.name, %why, "upstream unreachable");
                gm::observe_upstream("unreachable", started.elapsed());
                self.release(&name, token, "UPSTREAM_UNREACHABLE", &why).await;
                return (Problem::UpstreamUnreachable { held: None }.into_response(), Outcome::UpstreamFailed);
            }
            // The request may have reached the service: the key is not
            // released, so a retry cannot run beside it. The heartbeat
            // stops, the lease lapses, and a retry after that takes over
            // as a recovered attempt.
            Err(UpstreamError::Unreachable(why)) => {
                warn!(route = %route.name, %why, "upstream broke off before answering; the key is held until its lease lapses");
                gm::observe_upstream("unreachable", started.elapsed());
                let held = Some(route.lease_ttl);
                return (Problem::UpstreamUnreachable { held }.into_response(), Outcome::UpstreamFailed);
            }
            Err(UpstreamError::TimedOut(after)) => {
                gm::observe_upstream("timeout", started.elapsed());
                let problem = Problem::UpstreamTimeout { after, held: Some(route.lease_ttl) };
                return (problem.into_response(), Outcome::UpstreamFailed);
            }
        };
        let status = response.status();
        let class = gm::class_of(status);
        let (head, body) = response.into_parts();
        if releases(status, route) {
            gm::observe_upstream(class, started.elapsed());
            self.release(&name, token, "UPSTREAM_STATUS", &format!("the service answered {status}")).await;
            return (Response::from_parts(head, Body::new(body)), Outcome::UpstreamFailed);
        }
        let left = route.upstream_timeout.saturating_sub(started.elapsed());
        let read = tokio::time::timeout(left, bodies::read_response(body, route.max_stored_response_bytes)).await;
        gm::observe_upstream(class, started.elapsed());
        match read {
            Ok(Ok(ResponseBody::Whole(bytes))) => {
                let stored = StoredResponse::keep(status, &head.headers, &route.replay_headers, bytes.clone());
                let outcome = self.store(&name, token, &stored).await;
                (Response::from_parts(head, Body::from(bytes)), outcome)
            }
            Ok(Ok(ResponseBody::TooLarge(whole))) => {
                let why = format!("more than the {} bytes this route stores", route.max_stored_response_bytes);
                self.mark_not_replayable(&name, token, status, &why).await;
                (Response::from_parts(head, whole), Outcome::Executed)
            }
            // The status line says the service processed the request: it is
            // never run again for this key (issue 27, item 4).
            Ok(Err(broken)) => {
                warn!(route = %route.name, error = %broken, %status, "upstream broke off its response after the status line");
                self.mark_not_replayable(&name, token, status, &format!("it broke off: {broken}")).await;
                (Problem::ResponseIncomplete { status }.into_response(), Outcome::NotReplayable)
            }
            Err(_) => {
                warn!(route = %route.name, %status, "upstream's response body stalled after the status line");
                let why = format!("its body did not arrive within {:?}", route.upstream_timeout);
                self.mark_not_replayable(&name, token, status, &why).await;
                (Problem::ResponseIncomplete { status }.into_response(), Outcome::NotReplayable)
            }
        }
    }

    /// Completes the record with `stored`; the client gets the service's
    /// answer whatever happens here, since the work is done.
    async fn store(&self, name: &RecordName<'_>, token: u64, stored: &StoredResponse) -> Outcome {
        let result = v1::Result {
            body: Some(v1::result::Body::Response(stored.encode())),
            content_type: stored_response::MEDIA_TYPE.into(),
            status_code: stored.status.as_u16().into(),
        };
        let patience = name.route.lease_ttl;
        match retrying(patience, || self.coordinator.complete(name, token, result.clone())).await {
            Ok(()) => Outcome::Executed,
            // The coordinator's result limit is below this route's: the answer cannot be kept.
            Err(CallError::Invalid(why)) => {
                self.mark_not_replayable(name, token, stored.status, &why).await;
                Outcome::Executed
            }
            Err(CallError::LeaseLost) => {
                warn!(route = %name.route.name, token, "another attempt took over while the service worked; its answer is passed on but not stored (the fencing token lets the service tell the two apart)");
                Outcome::Unstored
            }
            // The service answered: a retry must not run it again (issue 27, item 4).
            Err(error) => {
                error!(route = %name.route.name, ?error, "cannot store the service's answer; marking the record as not replayable");
                let why = format!("storing it failed: {error:?}");
                self.mark_not_replayable(name, token, stored.status, &why).await;
                Outcome::Unstored
            }
        }
    }

    /// Ends the attempt with a terminal marker: the request ran, its answer is not kept.
    async fn mark_not_replayable(&self, name: &RecordName<'_>, token: u64, status: StatusCode, why: &str) {
        let message = format!(
            "the request was processed (status {status}), but its response ({why}) was not stored, so it cannot be replayed"
        );
        let patience = name.route.lease_ttl;
        let marked =
            retrying(patience, || self.coordinator.fail(name, token, RESPONSE_NOT_STORED, message.clone(), false));
        if let Err(error) = marked.await {
            error!(route = %name.route.name, ?error, "cannot mark the record as not replayable");
        }
    }

    /// Frees the key for the next retry: this attempt's request did not finish.
    async fn release(&self, name: &RecordName<'_>, token: u64, code: &str, why: &str) {
        let message = format!("the gateway released the key: {why}");
        let patience = name.route.lease_ttl;
        let released = retrying(patience, || self.coordinator.fail(name, token, code, message.clone(), true));
        if let Err(error) = released.await {
            // The lease lapses on its own; the next retry takes over as attempt n+1.
            warn!(route = %name.route.name, ?error, "cannot release the key; it frees itself when the lease lapses");
        }
    }

    /// Passes a request through unprotected.
    async fn forward(&self, request: Request<Body>, timeout: Option<Duration>) -> Response {
        match self.upstream.send(request, vec![], timeout).await {
            Ok(response) => response.map(Body::new),
            Err(UpstreamError::TimedOut(after)) => Problem::UpstreamTimeout { after, held: None }.into_response(),
            Err(UpstreamError::NotSent(why) | UpstreamError::Unreachable(why)) => {
                warn!(%why, "upstream unreachable");
                Problem::UpstreamUnreachable { held: None }.into_response()
            }
        }
    }
}

/// The stored answer, marked as a replay.
fn replay(result: Option<v1::Result>) -> (Response, Outcome) {
    let stored = match result {
        Some(v1::Result { body: Some(v1::result::Body::Response(bytes)), content_type, .. })
            if content_type == stored_response::MEDIA_TYPE =>
        {
            StoredResponse::decode(&bytes)
        }
        _ => Err("the stored outcome was not written by the gateway (no message/http response)".into()),
    };
    match stored {
        Ok(stored) => {
            let mut response = Response::new(Body::from(stored.body));
            *response.status_mut() = stored.status;
            *response.headers_mut() = stored.headers;
            response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
            (response, Outcome::Replayed)
        }
        Err(why) => {
            warn!(%why, "cannot replay a completed record");
            (Problem::NotReplayable { detail: why }.into_response(), Outcome::NotReplayable)
        }
    }
}

/// Calls `call` until it succeeds or fails for good, retrying an unavailable
/// coordinator with backoff for up to `patience`: Complete and Fail are
/// idempotent, so a repeat is safe.
async fn retrying<F, Fut>(patience: Duration, mut call: F) -> Result<(), CallError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), CallError>>,
{
    let give_up = Instant::now() + patience;
    let mut pause = Duration::from_millis(100);
    loop {
        match call().await {
            Err(CallError::Unavailable { why, .. }) if Instant::now() + pause < give_up => {
                info!(%why, retry_in = ?pause, "coordinator unavailable; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            done => return done,
        }
    }
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
