//! What a record costs in etcd, measured (deploy/README.md, "Capacity"):
//! for each result size, a fresh etcd takes `RECORDS` records (Begin then
//! Complete, a JSON payload of four members, 24 h retention), then is
//! compacted and defragmented; the backend's size before and after, less an
//! empty etcd's, divided by the records, is printed. Ignored in normal runs
//! (it measures, it checks nothing): scripts/measure-capacity.sh runs it.

mod common;

use common::*;
use idempotency_coordinator::proto::v1;

const RECORDS: usize = 4000;
const CALLERS: usize = 32;

/// The backend's size (physical, as the quota counts it) after a compaction
/// at the current revision and a defragmentation.
async fn compacted_size(etcd: &Etcd) -> (i64, i64) {
    let mut client = etcd_client::Client::connect([etcd.client_url.as_str()], None).await.expect("etcd");
    let before = client.status().await.expect("status").db_size();
    let revision = client.get("/", None).await.expect("read").header().expect("a header").revision();
    client.compact(revision, Some(etcd_client::CompactionOptions::new().with_physical())).await.expect("compact");
    client.defragment().await.expect("defragment");
    (before, client.status().await.expect("status").db_size())
}

fn payload(i: usize) -> v1::Payload {
    v1::Payload {
        data: format!(r#"{{"amount":{},"currency":"EUR","customer":"cus_{i:08}","order":"ord_{i:08}"}}"#, 100 + i)
            .into_bytes(),
        canonicalization: v1::Canonicalization::Json as i32,
        ignore_fields: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: scripts/measure-capacity.sh"]
async fn bytes_per_record_in_etcd() {
    println!("| result | records | backend before compaction | after compaction + defrag | per record, after |");
    println!("|---|---|---|---|---|");
    for result_bytes in [0usize, 256, 2048, 16384] {
        let etcd = Etcd::start().await;
        let empty = compacted_size(&etcd).await.1;
        let server = Server::start(&etcd, &["--default-retention", "24h"]).await;
        let client = server.client().await;
        let mut callers = tokio::task::JoinSet::new();
        for caller in 0..CALLERS {
            let mut client = client.clone();
            callers.spawn(async move {
                for i in (caller..RECORDS).step_by(CALLERS) {
                    let key = format!("order-{i:08}");
                    let request = v1::BeginRequest {
                        request: Some(v1::begin_request::Request::Payload(payload(i))),
                        ..begin_request(&key, "", 30)
                    };
                    let owner = acquired(begin(&mut client, request).await);
                    let mut complete = complete_request(&key, owner.fencing_token, "");
                    complete.result = Some(if result_bytes == 0 {
                        v1::Result {
                            body: Some(v1::result::Body::ResourceRef(format!("/orders/ord_{i:08}"))),
                            ..Default::default()
                        }
                    } else {
                        v1::Result {
                            body: Some(v1::result::Body::Response(vec![b'x'; result_bytes])),
                            content_type: "application/json".into(),
                            status_code: 201,
                        }
                    });
                    client.complete(complete).await.expect("complete");
                }
            });
        }
        callers.join_all().await;
        let (before, after) = compacted_size(&etcd).await;
        let label = if result_bytes == 0 { "a resource_ref".to_owned() } else { format!("{result_bytes} B") };
        println!(
            "| {label} | {RECORDS} | {:.1} MiB | {:.1} MiB | {} B |",
            (before - empty) as f64 / (1 << 20) as f64,
            (after - empty) as f64 / (1 << 20) as f64,
            (after - empty) / RECORDS as i64
        );
        server.shutdown().await;
    }
}
