//! Log output — human-readable text by default, one JSON object per line for
//! log pipelines — and, with `--otlp-endpoint`, OpenTelemetry traces exported
//! over OTLP/gRPC: a span per RPC (continuing the caller's `traceparent`,
//! [`crate::grpc::trace_context`]) with the handler's and each etcd
//! transaction's spans inside it.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::shell::config::LogFormat;

/// Spans of this crate at DEBUG and above go to the trace exporter whatever
/// the log filter says: the per-call spans are DEBUG so that logs at INFO
/// stay quiet, and traces still get them.
const TRACED: &str = env!("CARGO_CRATE_NAME");

/// What must outlive the server: the trace exporter, flushed on [`Self::shutdown`].
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered. The provider's shutdown blocks until
    /// the exporter, a task on this runtime, has flushed: so it waits on a
    /// blocking thread, never on a runtime worker.
    pub async fn shutdown(self) {
        let Some(provider) = self.traces else { return };
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Err(error) = flushed.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
            tracing::warn!(%error, "could not flush the last spans");
        }
    }
}

/// Installs the global subscriber. Fails if `filter` is not a valid filter or
/// the OTLP exporter cannot be built (a malformed endpoint). Call it within
/// the tokio runtime: the exporter sends from it.
pub fn init(format: LogFormat, filter: &str, otlp_endpoint: Option<&str>) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("--log {filter:?} is not a valid log filter: {e}"))?;
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(colour);
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(true).boxed(),
    };
    let traces = otlp_endpoint.map(provider).transpose()?;
    let trace_layer = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(TRACED))
            .with_filter(Targets::new().with_target(TRACED, Level::DEBUG))
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(trace_layer)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(Telemetry { traces })
}

/// A tracer provider exporting to `endpoint` (e.g. `http://otel-collector:4317`)
/// in batches from the tokio runtime, so a slow collector never holds up a call.
fn provider(endpoint: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("--otlp-endpoint {endpoint:?}: {e}"))?;
    let batches = BatchSpanProcessor::builder(exporter, Tokio).build();
    let resource = Resource::builder().with_service_name("idempotency-coordinator").build();
    Ok(SdkTracerProvider::builder().with_span_processor(batches).with_resource(resource).build())
}
