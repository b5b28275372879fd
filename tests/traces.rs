//! OpenTelemetry traces from the real binary (`--otlp-endpoint`) reach an
//! OTLP/gRPC receiver started by the test, and continue the caller's trace:
//! the call's span is a child of the caller's `traceparent`, with the
//! handler's and the etcd transaction's spans in the same trace.

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;
use idempotency_coordinator::proto::v1::coordinator_service_client::CoordinatorServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;

/// An OTLP trace receiver that keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
        self.0.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn spans_reach_the_collector_in_the_callers_trace() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let etcd = Etcd::start().await;
    let port = free_port();
    let process = Command::new(env!("CARGO_BIN_EXE_idempotency-coordinator"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--etcd-endpoints", &etcd.client_url])
        .args(["--metrics-listen", "127.0.0.1:0", "--otlp-endpoint", &collector])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server binary starts");
    let mut client = CoordinatorServiceClient::new(connect_when_up(&format!("http://127.0.0.1:{port}")).await);
    let (trace_id, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut request = tonic::Request::new(begin_request("traced-key", "cart", 5));
    request.metadata_mut().insert("traceparent", format!("00-{trace_id}-{caller_span}-01").parse().unwrap());
    client.begin(request).await.expect("begin answers");

    // SIGTERM: the server flushes its last spans before it exits.
    Command::new("kill").args(["-TERM", &process.id().to_string()]).status().unwrap();
    let output = tokio::task::spawn_blocking(move || process.wait_with_output()).await.unwrap().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let spans = receiver.0.lock().unwrap().clone();
    let in_trace: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == trace_id).collect();
    let names: Vec<&str> = in_trace.iter().map(|s| s.name.as_str()).collect();
    let call = in_trace
        .iter()
        .find(|s| s.name == "/idempotency.v1.CoordinatorService/Begin")
        .unwrap_or_else(|| panic!("no span of the call in the caller's trace; got {names:?} of {} spans", spans.len()));
    assert_eq!(hex(&call.parent_span_id), caller_span, "the call's span continues the caller's");
    assert!(names.contains(&"begin"), "no handler span in {names:?}");
    assert!(names.contains(&"etcd.txn"), "no etcd transaction span in {names:?}");
}
