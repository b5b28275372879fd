//! A full etcd: its backend passes 80% of `--quota-backend-bytes` while it
//! still takes writes, and the size gauge says so (the warning comes first);
//! then it reaches the quota, raises the NOSPACE alarm and refuses every write. Begins and Completes that need a
//! write answer RESOURCE_EXHAUSTED / STORE_FULL at once (not INTERNAL, not a
//! hang); replays and Lookups keep working; "writable" health says so while
//! readiness stays SERVING; and after the operator's compaction,
//! defragmentation and alarm disarm (deploy/README.md, "When etcd is full")
//! service resumes with nothing lost.

mod common;

use std::time::{Duration, Instant};

use common::*;
use etcd_client::{AlarmAction, AlarmOptions, AlarmType, CompactionOptions};
use idempotency_coordinator::proto::v1::begin_response::Outcome;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// Small enough to fill in seconds with 200 KiB results.
const QUOTA_BYTES: &str = "--quota-backend-bytes=8388608";

fn store_full(status: &tonic::Status) -> bool {
    status.code() == Code::ResourceExhausted && reason(status) == "STORE_FULL"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_etcd_refuses_writes_clearly_serves_replays_and_resumes_after_the_operator_frees_space() {
    let etcd = Etcd::start_with("http", vec![QUOTA_BYTES.into()], None).await;
    let metrics_port = free_port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let server = Server::start(
        &etcd,
        &["--max-result-bytes", "262144", "--metrics-listen", &metrics_listen, "--etcd-quota-bytes", "8388608"],
    )
    .await;
    let url = server.url();
    let mut client = server.client().await;
    let kept = acquired(begin(&mut client, begin_request("kept", "cart", 30)).await);
    client.complete(complete_request("kept", kept.fencing_token, "kept")).await.unwrap();
    let pending = acquired(begin(&mut client, begin_request("pending", "cart", 120)).await);
    wait_for_health(&url, "writable", ServingStatus::Serving, Duration::from_secs(5)).await;

    // Fill etcd with records kept for 2 s, until it refuses; the size gauge
    // must pass 80% of the quota while etcd still takes writes.
    let filler = "x".repeat(200 * 1024);
    let mut refusal = None;
    let mut warned_while_writable = None;
    for i in 0..200 {
        let key = format!("filler-{i}");
        let started = Instant::now();
        let attempt = match client.begin(begin_request(&key, "cart", 30)).await {
            Ok(response) => acquired(response.into_inner().outcome.unwrap()),
            Err(status) => {
                refusal = Some((status, started.elapsed()));
                break;
            }
        };
        let mut complete = complete_request(&key, attempt.fencing_token, &filler);
        complete.retention = Some(secs(2));
        if let Err(status) = client.complete(complete).await {
            refusal = Some((status, started.elapsed()));
            break;
        }
        // Slower than the 200 ms health checks, so the gauge keeps up.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let scraped = scrape_metrics(metrics_port).await;
        let gauge = |name: &str| {
            let line = scraped.lines().find(|l| l.starts_with(&format!("{name}{{shard=\"default\"}} ")));
            line.and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).unwrap_or(0.0)
        };
        let (size, quota) = (gauge("idempotency_store_db_size_bytes"), gauge("idempotency_store_db_quota_bytes"));
        assert_eq!(quota, 8388608.0, "{scraped}");
        if warned_while_writable.is_none() && size > 0.8 * quota {
            warned_while_writable = Some(size);
        }
    }
    let (status, took) = refusal.expect("etcd never filled up");
    let size = warned_while_writable.expect("the size gauge passed 80% of the quota before etcd refused writes");
    eprintln!("the gauge passed 80% at {size} bytes while etcd still took writes");
    assert!(store_full(&status), "{status:?}");
    assert!(took < Duration::from_secs(2), "the refusal took {took:?}");

    // Writable health and the gauge follow; readiness does not, since
    // replays are still served.
    wait_for_health(&url, "writable", ServingStatus::NotServing, Duration::from_secs(5)).await;
    assert_eq!(health(&url, "readiness").await, Some(ServingStatus::Serving));
    let scraped = scrape_metrics(metrics_port).await;
    assert!(scraped.lines().any(|l| l == "idempotency_store_writable 0"), "{scraped}");

    // What needs a write is refused at once; what needs none is served, by a
    // replica with nothing cached too.
    let started = Instant::now();
    let new_key = client.begin(begin_request("new", "cart", 30)).await.unwrap_err();
    assert!(store_full(&new_key), "{new_key:?}");
    let complete = client.complete(complete_request("pending", pending.fencing_token, "paid")).await.unwrap_err();
    assert!(store_full(&complete), "{complete:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "refusals took {:?}", started.elapsed());
    let fresh = Server::start(&etcd, &[]).await;
    let mut fresh_client = fresh.client().await;
    for client in [&mut client, &mut fresh_client] {
        match begin(client, begin_request("kept", "cart", 30)).await {
            Outcome::Completed(replay) => assert_eq!(replay.attempt, 1),
            other => panic!("expected a replay from a full etcd, got {other:?}"),
        }
        let record = client.lookup(lookup_request("pending")).await.unwrap().into_inner().record.unwrap();
        assert_eq!(record.fencing_token, pending.fencing_token);
    }
    assert!(matches!(begin(&mut fresh_client, begin_request("pending", "cart", 30)).await, Outcome::InProgress(_)));

    // The operator: the 2 s records expire by themselves (deletes are allowed
    // while full); compact, defragment, disarm — as deploy/README.md says.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut operator = etcd_client::Client::connect([&etcd.client_url], None).await.unwrap();
    let revision = operator.status().await.unwrap().header().unwrap().revision();
    operator.compact(revision, Some(CompactionOptions::new().with_physical())).await.unwrap();
    operator.defragment().await.unwrap();
    let member = operator.status().await.unwrap().header().unwrap().member_id();
    let mut disarm = AlarmOptions::new();
    disarm.with_member(member);
    operator.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(disarm)).await.unwrap();

    wait_for_health(&url, "writable", ServingStatus::Serving, Duration::from_secs(5)).await;
    // The owner's retried Complete now lands; new keys work; nothing was lost.
    let record = client.complete(complete_request("pending", pending.fencing_token, "paid")).await.unwrap();
    assert_eq!(record.into_inner().record.unwrap().fencing_token, pending.fencing_token);
    acquired(begin(&mut client, begin_request("after", "cart", 30)).await);
    for key in ["kept", "pending"] {
        assert!(matches!(begin(&mut fresh_client, begin_request(key, "cart", 30)).await, Outcome::Completed(_)));
    }
}
