//! One span per gRPC call that continues the caller's W3C `traceparent`, so
//! the coordinator's spans (the handler's, each etcd transaction's) join the
//! caller's trace when traces are exported (`--otlp-endpoint`). The span is
//! DEBUG: without an exporter nothing enables it and it costs a disabled
//! callsite check per call.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::body::Body;
use tower_service::Service;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::grpc::middleware::{Around, ResponseFuture};

#[derive(Clone, Default)]
pub struct TraceContext;

/// Reads `traceparent` and `tracestate` from the HTTP/2 headers.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

impl Around for TraceContext {
    fn call<S, B>(&self, inner: &mut S, request: http::Request<B>) -> ResponseFuture<S::Error>
    where
        S: Service<http::Request<B>, Response = http::Response<Body>>,
        S::Future: Send + 'static,
    {
        let path = request.uri().path();
        let span = tracing::debug_span!("grpc", otel.name = path, otel.kind = "server", rpc.system = "grpc");
        if span.is_disabled() {
            return Box::pin(inner.call(request));
        }
        // Before the span is entered: once started, its parent is fixed.
        let _ = span.set_parent(TraceContextPropagator::new().extract(&Headers(request.headers())));
        let response = span.in_scope(|| inner.call(request));
        Box::pin(response.instrument(span))
    }
}
