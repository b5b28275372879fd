//! gRPC server metrics with the go-grpc-prometheus names, so existing
//! dashboards work: `grpc_server_started_total`, `grpc_server_handled_total`
//! (label `grpc_code` with Go's spellings) and the
//! `grpc_server_handling_seconds` histogram, labelled by service, method and
//! type.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, OnceLock, RwLock};
use std::time::Instant;

use metrics::{Counter, Histogram};

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

/// One method's series: registered once, then updated without a registry
/// lookup (the `counter!` macro hashes and compares name and labels on every
/// call, and these labels would be three fresh strings per call).
struct MethodMetrics {
    started: Counter,
    seconds: Histogram,
    /// `grpc_server_handled_total` by code, registered on first use.
    handled: [OnceLock<Counter>; 17],
    labels: [(&'static str, String); 3],
}

impl MethodMetrics {
    fn new(path: &str) -> Self {
        let (service, method) = service_and_method(path);
        // Every RPC of these services is unary, except the health Watch.
        let kind = if method == "Watch" || method == "ServerReflectionInfo" { "server_stream" } else { "unary" };
        let labels = [("grpc_service", service), ("grpc_method", method), ("grpc_type", kind.to_owned())];
        Self {
            started: metrics::counter!("grpc_server_started_total", &labels),
            seconds: metrics::histogram!("grpc_server_handling_seconds", &labels),
            handled: Default::default(),
            labels,
        }
    }

    fn handled(&self, code: tonic::Code) -> &Counter {
        self.handled[code as usize].get_or_init(|| {
            let [service, method, kind] = self.labels.clone();
            let labels = [service, method, kind, ("grpc_code", go_code_name(code).to_owned())];
            metrics::counter!("grpc_server_handled_total", &labels)
        })
    }
}

/// The paths seen so far. Bounded: a client can send any path (answered
/// UNIMPLEMENTED), and past the bound new paths are registered per call
/// instead of kept.
const MAX_PATHS: usize = 64;

fn method_metrics(path: &str) -> Arc<MethodMetrics> {
    static PATHS: LazyLock<RwLock<HashMap<String, Arc<MethodMetrics>>>> = LazyLock::new(Default::default);
    if let Some(found) = PATHS.read().expect("metrics cache poisoned").get(path) {
        return found.clone();
    }
    let created = Arc::new(MethodMetrics::new(path));
    let mut paths = PATHS.write().expect("metrics cache poisoned");
    if paths.len() < MAX_PATHS {
        paths.entry(path.to_owned()).or_insert_with(|| created.clone());
    }
    created
}

impl Around for GrpcMetrics {
    fn call<S, B>(&self, inner: &mut S, request: http::Request<B>) -> ResponseFuture<S::Error>
    where
        S: Service<http::Request<B>, Response = http::Response<Body>>,
        S::Future: Send + 'static,
    {
        let metrics = method_metrics(request.uri().path());
        metrics.started.increment(1);
        let started = Instant::now();
        let response = inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // An error is a trailers-only response: its status is in the
            // headers. A unary success sends OK in the trailers.
            let code = tonic::Status::from_header_map(response.headers()).map(|s| s.code()).unwrap_or(tonic::Code::Ok);
            metrics.handled(code).increment(1);
            metrics.seconds.record(started.elapsed());
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
