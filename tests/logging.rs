//! Logs from the real binary: JSON lines that carry the caller's W3C trace id
//! and never the key or payload.

mod common;

use std::process::{Command, Stdio};

use common::*;
use idempotency_coordinator::proto::v1::coordinator_service_client::CoordinatorServiceClient;

#[tokio::test]
async fn json_logs_carry_the_trace_id_and_no_key_or_payload() {
    let etcd = Etcd::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let process = Command::new(env!("CARGO_BIN_EXE_idempotency-coordinator"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--etcd-endpoints", &etcd.client_url])
        .args(["--log-format", "json", "--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server binary starts");
    let channel = connect_when_up(&url).await;
    let mut client = CoordinatorServiceClient::new(channel);
    let mut request = tonic::Request::new(begin_request("secret-key-0a1b", "secret-payload-9z", 5));
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    request.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    client.begin(request).await.expect("begin answers");

    Command::new("kill").args(["-TERM", &process.id().to_string()]).status().unwrap();
    let output = tokio::task::spawn_blocking(move || process.wait_with_output()).await.unwrap().unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    let begin_line =
        logs.lines().find(|l| l.contains("begin answered")).unwrap_or_else(|| panic!("no begin log line in:\n{logs}"));
    let parsed: serde_json::Value = serde_json::from_str(begin_line).expect("a JSON log line");
    assert_eq!(parsed["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{begin_line}");
    assert_eq!(parsed["span"]["namespace"], "payments.create", "{begin_line}");
    assert!(!logs.contains("secret-key-0a1b") && !logs.contains("secret-payload-9z"), "a key or payload was logged");
}
