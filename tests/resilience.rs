//! etcd outages and process lifecycle: UNAVAILABLE (never a hang, never a
//! guess) while etcd is down, readiness that follows it, recovery without a
//! restart, and a SIGTERM drain that exits 0.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use idempotency_coordinator::proto::v1::{
    self, begin_response::Outcome, coordinator_service_client::CoordinatorServiceClient,
};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

#[tokio::test]
async fn an_etcd_outage_is_unavailable_then_recovers_by_itself() {
    let (mut etcd, server, mut client) = start().await;
    let url = server.url();
    wait_for_health(&url, "readiness", ServingStatus::Serving, Duration::from_secs(5)).await;
    // Something acknowledged before the outage.
    let before = acquired(begin(&mut client, begin_request("before-outage", "cart", 30)).await);
    client.complete(complete_request("before-outage", before.fencing_token, "kept")).await.unwrap();

    etcd.stop();
    // Readiness follows etcd; liveness does not.
    for service in ["readiness", "idempotency.v1.CoordinatorService"] {
        wait_for_health(&url, service, ServingStatus::NotServing, Duration::from_secs(5)).await;
    }
    for service in ["", "liveness"] {
        assert_eq!(
            health(&url, service).await,
            Some(ServingStatus::Serving),
            "liveness {service:?} must not depend on etcd"
        );
    }

    // Every RPC answers UNAVAILABLE with RetryInfo, within the etcd request timeout (2 s).
    let started = Instant::now();
    let status = assert_status(
        client.begin(begin_request("during-outage", "cart", 5)).await,
        Code::Unavailable,
        "STORE_UNAVAILABLE",
    );
    assert!(status.get_error_details().retry_info().and_then(|r| r.retry_delay).is_some(), "no RetryInfo");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_status(client.lookup(lookup_request("before-outage")).await, Code::Unavailable, "STORE_UNAVAILABLE");
    assert_status(client.complete(complete_request("x", 5, "x")).await, Code::Unavailable, "STORE_UNAVAILABLE");

    // A caller's shorter deadline is honoured too.
    assert_short_deadline_is_kept(&mut client, "during-outage").await;

    etcd.restart().await;
    wait_for_health(&url, "readiness", ServingStatus::Serving, Duration::from_secs(10)).await;
    // The same client and server work again, and nothing acknowledged was lost.
    let record = client.lookup(lookup_request("before-outage")).await.expect("lookup after recovery").into_inner();
    assert_eq!(record.record.unwrap().state(), v1::State::Completed);
    acquired(begin(&mut client, begin_request("after-outage", "cart", 5)).await);
}

#[tokio::test]
async fn sigterm_drains_in_flight_calls_and_exits_zero() {
    let etcd = Etcd::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let mut process = Command::new(env!("CARGO_BIN_EXE_idempotency-coordinator"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--etcd-endpoints", &etcd.client_url])
        .args(["--shutdown-grace", "5s", "--health-check-interval", "100ms", "--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the server binary starts");
    let started = Instant::now();
    while Channel::from_shared(url.clone()).unwrap().connect().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "the server did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_health(&url, "readiness", ServingStatus::Serving, Duration::from_secs(5)).await;

    let mut owner = CoordinatorServiceClient::connect(url.clone()).await.unwrap();
    acquired(begin(&mut owner, begin_request("drain", "cart", 30)).await);
    // An in-flight call: a Begin waiting up to 20 s for the owner.
    let mut waiter = CoordinatorServiceClient::connect(url.clone()).await.unwrap();
    let in_flight = tokio::spawn(async move {
        let mut request = begin_request("drain", "cart", 5);
        request.wait = Some(secs(20));
        waiter.begin(request).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!in_flight.is_finished());

    let signalled = Instant::now();
    let kill = Command::new("kill").args(["-TERM", &process.id().to_string()]).status().expect("kill runs");
    assert!(kill.success());

    // The waiting call is answered (not cut off) as soon as the drain starts.
    let answer = in_flight.await.unwrap().expect("the in-flight call is answered during the drain");
    assert!(matches!(answer.into_inner().outcome, Some(Outcome::InProgress(_))));
    assert!(signalled.elapsed() < Duration::from_secs(2), "drain took {:?}", signalled.elapsed());

    let exit = tokio::task::spawn_blocking(move || process.wait()).await.unwrap().expect("wait for the server");
    assert!(exit.success(), "exit status {exit:?}");
    assert!(signalled.elapsed() < Duration::from_secs(5), "exit took {:?}", signalled.elapsed());

    // Locks live in etcd: a restarted server still knows the owner.
    let server = Server::start(&etcd, &[]).await;
    let mut client = server.client().await;
    assert!(matches!(begin(&mut client, begin_request("drain", "cart", 5)).await, Outcome::InProgress(_)));
}
