//! The Prometheus endpoint after real calls: go-grpc-prometheus names with
//! Go code spellings, domain counters that moved, no key in any label.

mod common;

use std::time::Duration;

use common::*;
use idempotency_coordinator::proto::v1::begin_response::Outcome;

/// The value of the sample whose name and labels contain all of `parts`.
fn value(metrics: &str, name: &str, parts: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_move_with_real_calls() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let (_etcd, _server, mut client) = start_with(&["--metrics-listen", &listen]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = scrape_metrics(port).await;

    let owner = acquired(begin(&mut client, begin_request("metered-key-7f3a", "cart", 5)).await);
    assert!(matches!(begin(&mut client, begin_request("metered-key-7f3a", "cart", 5)).await, Outcome::InProgress(_)));
    client.complete(complete_request("metered-key-7f3a", owner.fencing_token, "ok")).await.unwrap();
    assert!(matches!(begin(&mut client, begin_request("metered-key-7f3a", "cart", 5)).await, Outcome::Completed(_)));
    assert!(client.begin(begin_request("metered-key-7f3a", "other cart", 5)).await.is_err());
    assert!(client.complete(complete_request("metered-key-7f3a", owner.fencing_token + 1, "x")).await.is_err());
    assert!(client.begin(begin_request("", "cart", 5)).await.is_err());

    let after = scrape_metrics(port).await;
    let moved = |name: &str, parts: &[&str]| value(&after, name, parts) - value(&before, name, parts);
    let begin = ["grpc_service=\"idempotency.v1.CoordinatorService\"", "grpc_method=\"Begin\"", "grpc_type=\"unary\""];
    assert_eq!(moved("grpc_server_started_total", &begin), 5.0);
    assert_eq!(moved("grpc_server_handled_total", &[begin[1], "grpc_code=\"OK\""]), 3.0);
    assert_eq!(moved("grpc_server_handled_total", &[begin[1], "grpc_code=\"FailedPrecondition\""]), 1.0);
    assert_eq!(moved("grpc_server_handled_total", &[begin[1], "grpc_code=\"InvalidArgument\""]), 1.0);
    assert_eq!(moved("grpc_server_handling_seconds_count", &[begin[1]]), 5.0);
    assert!(after.contains("grpc_server_handling_seconds_bucket{"), "no histogram buckets");
    for outcome in ["acquired", "in_progress", "replayed_completed", "key_reused"] {
        let label = format!("outcome=\"{outcome}\"");
        assert_eq!(moved("idempotency_begin_outcomes_total", &[&label]), 1.0, "{outcome}");
    }
    assert_eq!(moved("idempotency_lease_lost_total", &[]), 1.0);
    assert!(moved("idempotency_etcd_request_seconds_count", &[]) >= 4.0);
    assert!(!after.contains("metered-key-7f3a"), "a key leaked into a label");
}
