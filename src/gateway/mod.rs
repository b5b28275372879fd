//! The HTTP idempotency gateway (`idempotency-coordinator gateway`): a reverse
//! proxy, meant as a sidecar, that enforces the IETF httpapi `Idempotency-Key`
//! header draft in front of any HTTP service, as a gRPC caller of the
//! coordinator service.
//!
//! - [`server`]: the process — proxy and admin ports, drain;
//!   [`connections`], [`body_timeouts`], [`buffer_budget`]: what a slow or
//!   hostile client may hold.
//! - [`proxy`]: one request's way through — pass through, Begin, replay,
//!   refuse, or forward with the fencing token and store the answer.
//! - [`config`] and [`routes`]: the flags, the routes file, route matching;
//!   [`request_path`]: the path routes match, and the ones refused.
//! - [`key`], [`identity`], [`request_fingerprint`], [`bodies`]: reading the request.
//! - [`stored_response`]: the `message/http` form answers are stored in.
//! - [`problem`]: the RFC 9457 answers the gateway writes itself.
//! - [`coordinator`], [`upstream`]: the two things it calls; [`heartbeat`]:
//!   when it extends a lease while the service works.
//! - [`gateway_metrics`]: what it counts.

pub mod bodies;
pub mod body_timeouts;
pub mod buffer_budget;
pub mod config;
pub mod connections;
pub mod coordinator;
pub mod gateway_metrics;
pub mod heartbeat;
pub mod identity;
pub mod key;
pub mod problem;
pub mod proxy;
pub mod request_fingerprint;
pub mod request_path;
pub mod routes;
pub mod server;
pub mod stored_response;
pub mod upstream;
