//! Requests larger than `--max-message-bytes` are refused by tonic before any
//! handler runs (so they are never buffered whole), as OUT_OF_RANGE. This layer
//! restates that refusal in the service's contract: INVALID_ARGUMENT, reason
//! INVALID_REQUEST, naming the one field of each RPC that can be that large.

use tonic::body::Body;
use tower_service::Service;

use crate::core::error::Error;
use crate::grpc::middleware::{Around, ResponseFuture};

/// tonic's message for a request over the decoding limit.
const TOO_LARGE: &str = "Error, decoded message length too large";

#[derive(Clone, Default)]
pub struct Oversize;

/// The field that makes a request of this RPC large.
fn large_field(path: &str) -> &'static str {
    match path.rsplit('/').next() {
        Some("Begin") => "payload.data",
        Some("Complete") => "result.response",
        Some("Fail") => "error.details",
        _ => "(message)",
    }
}

impl Around for Oversize {
    fn call<S, B>(&self, inner: &mut S, request: http::Request<B>) -> ResponseFuture<S::Error>
    where
        S: Service<http::Request<B>, Response = http::Response<Body>>,
        S::Future: Send + 'static,
    {
        let field = large_field(request.uri().path());
        let response = inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // A refusal before the handler is a trailers-only response: its
            // status is in the headers.
            let Some(status) = tonic::Status::from_header_map(response.headers()) else { return Ok(response) };
            if status.code() != tonic::Code::OutOfRange || !status.message().starts_with(TOO_LARGE) {
                return Ok(response);
            }
            let why = status.message().trim_start_matches(TOO_LARGE).trim_start_matches(':').trim();
            let refusal = Error::invalid(field, format!("makes the request too large for --max-message-bytes ({why})"));
            Ok(tonic::Status::from(refusal).into_http())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rpc_names_its_large_field() {
        assert_eq!(large_field("/idempotency.v1.CoordinatorService/Begin"), "payload.data");
        assert_eq!(large_field("/idempotency.v1.CoordinatorService/Complete"), "result.response");
        assert_eq!(large_field("/idempotency.v1.CoordinatorService/Lookup"), "(message)");
    }
}
