//! "Why was my key rejected as reused?": a key-reuse error names the
//! top-level JSON members that differ (ErrorInfo metadata
//! `differing_members`), from member digests the record keeps (never the
//! values); and the Fingerprint RPC shows what Begin hashes, changing nothing.

mod common;

use common::{Client, acquired, begin, complete_request, start};
use idempotency_coordinator::proto::v1;
use sha2::{Digest, Sha256};
use tonic_types::StatusExt;

fn json_begin(key: &str, json: &str) -> v1::BeginRequest {
    v1::BeginRequest {
        namespace: "payments.create".into(),
        key: key.into(),
        request: Some(v1::begin_request::Request::Payload(json_payload(json))),
        lease_ttl: Some(common::secs(30)),
        ..Default::default()
    }
}

fn json_payload(json: &str) -> v1::Payload {
    v1::Payload {
        data: json.as_bytes().to_vec(),
        canonicalization: v1::Canonicalization::Json as i32,
        ignore_fields: vec!["/sent_at".into()],
    }
}

/// The members a refused Begin names, or None when it names none.
async fn differing(client: &mut Client, key: &str, json: &str) -> Option<Vec<String>> {
    let status = client.begin(json_begin(key, json)).await.expect_err("the key was used for another request");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let info = status.get_error_details().error_info().cloned().expect("ErrorInfo");
    assert_eq!(info.reason, "IDEMPOTENCY_KEY_REUSED");
    info.metadata.get("differing_members").map(|names| serde_json::from_str(names).expect("a JSON array"))
}

fn names(list: &[&str]) -> Option<Vec<String>> {
    Some(list.iter().map(|s| s.to_string()).collect())
}

#[tokio::test]
async fn a_reused_key_names_the_members_that_differ_in_every_state() {
    let (_etcd, _server, mut client) = start().await;
    let original = r#"{"amount":100,"currency":"EUR","cart":["book"],"sent_at":"09:00"}"#;
    let token = acquired(begin(&mut client, json_begin("order-1", original)).await).fencing_token;

    // In progress: read from etcd.
    let changed = r#"{"amount":200,"currency":"EUR","cart":["book"],"note":"gift","sent_at":"09:05"}"#;
    assert_eq!(differing(&mut client, "order-1", changed).await, names(&["amount", "note"]));

    client.complete(complete_request("order-1", token, "{}")).await.expect("complete");
    // Completed: the first refusal reads etcd, the next is answered from the replay cache.
    for _ in 0..2 {
        let fewer = r#"{"amount":100,"currency":"USD"}"#;
        assert_eq!(differing(&mut client, "order-1", fewer).await, names(&["cart", "currency"]));
    }
    // Only an ignored field differs: the same request, replayed.
    let replay = begin(
        &mut client,
        json_begin("order-1", r#"{"sent_at":"10:00","cart":["book"],"currency":"EUR","amount":100}"#),
    )
    .await;
    assert!(matches!(replay, v1::begin_response::Outcome::Completed(_)), "{replay:?}");
}

#[tokio::test]
async fn without_member_digests_on_either_side_nothing_is_named() {
    let (_etcd, _server, mut client) = start().await;
    // A raw payload keeps no member digests.
    acquired(begin(&mut client, common::begin_request("raw-1", r#"{"amount":100}"#, 30)).await);
    assert_eq!(differing(&mut client, "raw-1", r#"{"amount":200}"#).await, None);
    // A JSON array has no members.
    acquired(begin(&mut client, json_begin("array-1", "[1,2]")).await);
    assert_eq!(differing(&mut client, "array-1", "[1,3]").await, None);
}

#[tokio::test]
async fn records_keep_digests_of_members_never_their_values() {
    let (etcd, _server, mut client) = start().await;
    let secret = "card-4242-4242-secret";
    let json = format!(r#"{{"card":"{secret}","amount":100}}"#);
    acquired(begin(&mut client, json_begin("card-1", &json)).await);
    let mut etcd_client = etcd_client::Client::connect([etcd.client_url.as_str()], None).await.expect("etcd");
    let everything =
        etcd_client.get("", Some(etcd_client::GetOptions::new().with_all_keys())).await.expect("read etcd");
    assert!(!everything.kvs().is_empty());
    for kv in everything.kvs() {
        assert!(!kv.value().windows(secret.len()).any(|w| w == secret.as_bytes()), "a value reached etcd");
    }
    // The names are kept, to be named in a refusal.
    assert_eq!(differing(&mut client, "card-1", r#"{"card":"other","amount":100}"#).await, names(&["card"]));
}

#[tokio::test]
async fn fingerprint_shows_what_begin_hashes_and_changes_nothing() {
    let (_etcd, _server, mut client) = start().await;
    let json = r#"{ "b": [1.0, 2], "a": "x", "sent_at": "now" }"#;
    let answer = client
        .fingerprint(v1::FingerprintRequest { payload: Some(json_payload(json)), include_canonical: true })
        .await
        .expect("fingerprint")
        .into_inner();
    assert_eq!(answer.canonical, br#"{"a":"x","b":[1,2]}"#);
    assert_eq!(answer.fingerprint, Sha256::digest(&answer.canonical).to_vec());
    let members: Vec<(String, Vec<u8>)> = answer.members.into_iter().map(|m| (m.name, m.digest)).collect();
    assert_eq!(
        members,
        vec![("a".into(), Sha256::digest(br#""x""#).to_vec()), ("b".into(), Sha256::digest(b"[1,2]").to_vec())]
    );

    // Nothing was created, and Begin computes the same fingerprint.
    let lookup = client
        .lookup(v1::LookupRequest { namespace: "payments.create".into(), key: "fp-1".into(), ..Default::default() })
        .await;
    assert_eq!(lookup.expect_err("no record").code(), tonic::Code::NotFound);
    acquired(begin(&mut client, json_begin("fp-1", json)).await);
    let record = client
        .lookup(v1::LookupRequest { namespace: "payments.create".into(), key: "fp-1".into(), ..Default::default() })
        .await
        .expect("lookup")
        .into_inner()
        .record
        .expect("a record");
    assert_eq!(record.fingerprint, answer.fingerprint);

    // Without include_canonical, no canonical bytes; a raw payload has no members.
    let raw = client
        .fingerprint(v1::FingerprintRequest {
            payload: Some(v1::Payload {
                data: b"abc".to_vec(),
                canonicalization: v1::Canonicalization::Raw as i32,
                ignore_fields: vec![],
            }),
            include_canonical: false,
        })
        .await
        .expect("fingerprint")
        .into_inner();
    assert_eq!(hex::encode(raw.fingerprint), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert!(raw.canonical.is_empty() && raw.members.is_empty());
}

#[tokio::test]
async fn fingerprint_refuses_what_begin_refuses_naming_the_field() {
    let (_etcd, _server, mut client) = start().await;
    let cases = [
        (None, "payload"),
        (Some(json_payload("{not json")), "payload.data"),
        (Some(v1::Payload { ignore_fields: vec!["no-slash".into()], ..json_payload("{}") }), "payload.ignore_fields"),
        (Some(v1::Payload { canonicalization: 0, ..json_payload("{}") }), "payload.canonicalization"),
        (Some(json_payload(&format!("\"{}\"", "x".repeat(2 * 1024 * 1024)))), "payload.data"),
    ];
    for (payload, field) in cases {
        let status =
            client.fingerprint(v1::FingerprintRequest { payload, include_canonical: true }).await.expect_err(field);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(common::violated_fields(&status), [field]);
    }
}
