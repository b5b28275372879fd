//! `serve --store memory`: the real binary with no etcd anywhere — it serves,
//! reports ready, warns that records are not durable, and forgets everything
//! when it exits.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use idempotency_coordinator::proto::v1::begin_response::Outcome;
use idempotency_coordinator::proto::v1::coordinator_service_client::CoordinatorServiceClient;
use tonic_health::pb::health_check_response::ServingStatus;

/// The binary on `port` with the memory store, and a client once it answers.
async fn serve_in_memory(port: u16) -> (Child, Client) {
    let process = Command::new(env!("CARGO_BIN_EXE_idempotency-coordinator"))
        .args(["serve", "--store", "memory", "--listen", &format!("127.0.0.1:{port}")])
        // An etcd address where nothing listens: the memory store must not need it.
        .args(["--etcd-endpoints", &format!("http://127.0.0.1:{}", free_port())])
        .args(["--metrics-listen", "127.0.0.1:0", "--health-check-interval", "100ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server binary starts");
    let url = format!("http://127.0.0.1:{port}");
    let channel = connect_when_up(&url).await;
    wait_for_health(&url, "readiness", ServingStatus::Serving, Duration::from_secs(5)).await;
    (process, CoordinatorServiceClient::new(channel))
}

/// Stops the server with SIGTERM; what it logged.
async fn stop(process: Child) -> String {
    Command::new("kill").args(["-TERM", &process.id().to_string()]).status().unwrap();
    let output = tokio::task::spawn_blocking(move || process.wait_with_output()).await.unwrap().unwrap();
    assert!(output.status.success(), "the server exited with {}", output.status);
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn the_memory_store_serves_without_etcd_and_forgets_on_exit() {
    let port = free_port();
    let (process, mut client) = serve_in_memory(port).await;
    let first = acquired(begin(&mut client, begin_request("order-1", "cart", 5)).await);
    client.complete(complete_request("order-1", first.fencing_token, "paid")).await.expect("complete");
    assert!(matches!(begin(&mut client, begin_request("order-1", "cart", 5)).await, Outcome::Completed(_)));
    let logs = stop(process).await;
    assert!(logs.contains("--store memory") && logs.contains("lost when it exits"), "no warning in:\n{logs}");

    // A new process on the same port knows nothing of the record.
    let (process, mut client) = serve_in_memory(port).await;
    assert_status(client.lookup(lookup_request("order-1")).await, tonic::Code::NotFound, "RECORD_NOT_FOUND");
    let again = acquired(begin(&mut client, begin_request("order-1", "cart", 5)).await);
    assert_eq!(again.attempt, 1);
    stop(process).await;
}
