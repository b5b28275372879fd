//! Logs from the real binary: JSON lines that carry the caller's W3C trace id
//! and never the key or payload; per-call lines only at DEBUG, refusals at
//! INFO.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;
use idempotency_coordinator::proto::v1::coordinator_service_client::CoordinatorServiceClient;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Starts the binary with `--log <filter>`, sends a Begin and then the same
/// key with another payload (refused as reused), both with a traceparent,
/// and returns what it logged until SIGTERM.
async fn logs_of_a_begin_and_a_reuse(etcd: &Etcd, filter: &str) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let process: Child = Command::new(env!("CARGO_BIN_EXE_idempotency-coordinator"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--etcd-endpoints", &etcd.client_url])
        .args(["--log-format", "json", "--metrics-listen", "127.0.0.1:0", "--log", filter])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server binary starts");
    let mut client = CoordinatorServiceClient::new(connect_when_up(&url).await);
    let key = format!("secret-key-0a1b-{filter}");
    for payload in ["secret-payload-9z", "secret-payload-other"] {
        let mut request = tonic::Request::new(begin_request(&key, payload, 5));
        request.metadata_mut().insert("traceparent", TRACEPARENT.parse().unwrap());
        let _ = client.begin(request).await;
    }
    Command::new("kill").args(["-TERM", &process.id().to_string()]).status().unwrap();
    let output = tokio::task::spawn_blocking(move || process.wait_with_output()).await.unwrap().unwrap();
    let logs = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!logs.contains("secret-key-0a1b") && !logs.contains("secret-payload"), "a key or payload was logged");
    logs
}

fn line<'a>(logs: &'a str, message: &str) -> Option<serde_json::Value> {
    let found: Option<&'a str> = logs.lines().find(|l| l.contains(message));
    found.map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
}

#[tokio::test]
async fn per_call_lines_are_debug_and_carry_the_trace_id() {
    let etcd = Etcd::start().await;
    let logs = logs_of_a_begin_and_a_reuse(&etcd, "info,idempotency_coordinator=debug").await;
    let begin = line(&logs, "begin answered").unwrap_or_else(|| panic!("no begin log line in:\n{logs}"));
    assert_eq!(begin["level"], "DEBUG", "{begin}");
    assert_eq!(begin["span"]["trace_id"], TRACE_ID, "{begin}");
    assert_eq!(begin["span"]["namespace"], "payments.create", "{begin}");
}

#[tokio::test]
async fn at_info_only_refusals_are_logged_per_call_with_the_trace_id() {
    let etcd = Etcd::start().await;
    let logs = logs_of_a_begin_and_a_reuse(&etcd, "info").await;
    assert!(line(&logs, "begin answered").is_none(), "a per-call line at INFO:\n{logs}");
    let refused = line(&logs, "call refused").unwrap_or_else(|| panic!("no refusal line in:\n{logs}"));
    assert_eq!(refused["level"], "INFO", "{refused}");
    assert_eq!(refused["trace_id"], TRACE_ID, "{refused}");
    assert_eq!(refused["namespace"], "payments.create", "{refused}");
}
