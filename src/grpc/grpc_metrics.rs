//! gRPC server metrics with the go-grpc-prometheus names, so existing
//! dashboards work: `grpc_server_started_total`, `grpc_server_handled_total`
//! (label `grpc_code` with Go's spellings) and the
//! `grpc_server_handling_seconds` histogram, labelled by service, method and
//! type.

use std::time::Instant;

use tonic::body::Body;
use tower_service::Service;

use crate::grpc::middleware::{Around, ResponseFuture};

#[derive(Clone, Default)]
pub struct GrpcMetrics;

/// Go's names for gRPC codes, as go-grpc-prometheus reports them.
fn go_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Service and method from a gRPC path, e.g. "/pkg.Service/Method".
fn service_and_method(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default().to_owned();
    let method = parts.next().unwrap_or_default().to_owned();
    (service, method)
}

impl Around for GrpcMetrics {
    fn call<S, B>(&self, inner: &mut S, request: http::Request<B>) -> ResponseFuture<S::Error>
    where
        S: Service<http::Request<B>, Response = http::Response<Body>>,
        S::Future: Send + 'static,
    {
        let (service, method) = service_and_method(request.uri().path());
        // Every RPC of these services is unary, except the health Watch.
        let kind = if method == "Watch" || method == "ServerReflectionInfo" { "server_stream" } else { "unary" };
        let labels = [("grpc_service", service), ("grpc_method", method), ("grpc_type", kind.to_owned())];
        metrics::counter!("grpc_server_started_total", &labels).increment(1);
        let started = Instant::now();
        let response = inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // An error is a trailers-only response: its status is in the
            // headers. A unary success sends OK in the trailers.
            let code = tonic::Status::from_header_map(response.headers()).map(|s| s.code()).unwrap_or(tonic::Code::Ok);
            let [service, method, kind] = labels;
            let handled = [service, method, kind, ("grpc_code", go_code_name(code).to_owned())];
            metrics::counter!("grpc_server_handled_total", &handled).increment(1);
            let [service, method, kind, _] = handled;
            metrics::histogram!("grpc_server_handling_seconds", &[service, method, kind]).record(started.elapsed());
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_codes_use_go_grpc_prometheus_spellings() {
        assert_eq!(
            service_and_method("/idempotency.v1.CoordinatorService/Begin"),
            ("idempotency.v1.CoordinatorService".to_owned(), "Begin".to_owned())
        );
        assert_eq!(go_code_name(tonic::Code::Ok), "OK");
        assert_eq!(go_code_name(tonic::Code::Cancelled), "Canceled");
        assert_eq!(go_code_name(tonic::Code::FailedPrecondition), "FailedPrecondition");
    }
}
