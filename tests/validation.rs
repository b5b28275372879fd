//! Bad input over the wire: INVALID_ARGUMENT naming each field and its limit,
//! never a panic, never a record written.

mod common;

use common::*;
use idempotency_coordinator::proto::v1;
use tonic::Code;

fn invalid_fields<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Vec<String> {
    let status = assert_status(result, Code::InvalidArgument, "INVALID_REQUEST");
    violated_fields(&status)
}

#[tokio::test]
async fn malformed_keys_namespaces_and_tenants_are_refused() {
    let (_etcd, _server, mut client) = start().await;
    for key in ["", "bell\u{7}", "line\nbreak", &"k".repeat(256)] {
        assert_eq!(invalid_fields(client.begin(begin_request(key, "cart", 5)).await), ["key"], "key {key:?}");
    }
    for namespace in ["", "pay/ments", "pay ments", &"n".repeat(129)] {
        let mut request = begin_request("k", "cart", 5);
        request.namespace = namespace.into();
        assert_eq!(invalid_fields(client.begin(request).await), ["namespace"], "namespace {namespace:?}");
    }
    let mut request = begin_request("k", "cart", 5);
    request.tenant = "../other".into();
    assert_eq!(invalid_fields(client.begin(request).await), ["tenant"]);

    let mut lookup = lookup_request("");
    lookup.namespace = "a/b".into();
    assert_eq!(invalid_fields(client.lookup(lookup).await), ["namespace", "key"]);
}

#[tokio::test]
async fn bad_ttls_and_waits_name_the_limit() {
    let (_etcd, _server, mut client) = start_with(&["--max-lease-ttl", "60s", "--max-wait", "10s"]).await;
    for ttl in [
        prost_types::Duration { seconds: 1, nanos: 0 },
        prost_types::Duration { seconds: 61, nanos: 0 },
        prost_types::Duration { seconds: 3, nanos: 5 },
    ] {
        let mut request = begin_request("k", "cart", 5);
        request.lease_ttl = Some(ttl);
        let status = client.begin(request).await.unwrap_err();
        assert_eq!(violated_fields(&status), ["lease_ttl"]);
        assert!(status.message().contains("from 2s to 60s"), "{}", status.message());
    }
    let mut request = begin_request("k", "cart", 5);
    request.wait = Some(secs(11));
    assert_eq!(invalid_fields(client.begin(request).await), ["wait"]);
    assert_eq!(invalid_fields(client.extend(extend_request("k", 5, 61)).await), ["lease_ttl"]);
}

#[tokio::test]
async fn oversize_payloads_and_results_are_refused_with_their_limit() {
    let (_etcd, _server, mut client) = start_with(&["--max-payload-bytes", "1024", "--max-result-bytes", "512"]).await;
    let status = client.begin(begin_request("big", &"x".repeat(1025), 5)).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["payload.data"]);
    assert!(status.message().contains("at most 1024 bytes"), "{}", status.message());

    let owner = acquired(begin(&mut client, begin_request("big-result", "cart", 5)).await);
    let status =
        client.complete(complete_request("big-result", owner.fencing_token, &"r".repeat(513))).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["result.response"]);
    // The attempt is untouched and can still complete with a fitting result.
    client.complete(complete_request("big-result", owner.fencing_token, "ok")).await.expect("a fitting result");
}

#[tokio::test]
async fn fingerprints_and_payloads_must_be_well_formed() {
    let (_etcd, _server, mut client) = start().await;
    let mut request = begin_request("fp", "cart", 5);
    request.request = Some(v1::begin_request::Request::Fingerprint(vec![0; 16]));
    assert_eq!(invalid_fields(client.begin(request.clone()).await), ["fingerprint"]);
    request.request = None;
    assert_eq!(invalid_fields(client.begin(request.clone()).await), ["fingerprint"]);
    request.request = Some(v1::begin_request::Request::Payload(v1::Payload {
        data: br#"{"amount": 1, "amount": 2}"#.to_vec(),
        canonicalization: v1::Canonicalization::Json as i32,
        ignore_fields: vec![],
    }));
    let status = client.begin(request.clone()).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["payload.data"]);
    assert!(status.message().contains("duplicate object member"), "{}", status.message());
    // Issue 26: a number canonical JSON would change, named by its pointer.
    request.request = Some(v1::begin_request::Request::Payload(v1::Payload {
        data: br#"{"account_id": 1234567890123456789}"#.to_vec(),
        canonicalization: v1::Canonicalization::Json as i32,
        ignore_fields: vec![],
    }));
    let status = client.begin(request.clone()).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["payload.data"]);
    assert!(
        status.message().contains(r#""/account_id""#) && status.message().contains("send it as a string"),
        "{}",
        status.message()
    );
    // Nothing was written by any refused call.
    assert_status(client.lookup(lookup_request("fp")).await, Code::NotFound, "RECORD_NOT_FOUND");
}

#[tokio::test]
async fn finishing_calls_need_a_token_and_an_outcome() {
    let (_etcd, _server, mut client) = start().await;
    let mut complete = complete_request("k", 0, "x");
    complete.result = None;
    assert_eq!(invalid_fields(client.complete(complete).await), ["fencing_token", "result.body"]);
    let mut fail = fail_request("k", 3, "", false);
    fail.error.as_mut().unwrap().message = "m".repeat(4097);
    assert_eq!(invalid_fields(client.fail(fail).await), ["error.code", "error.message"]);
}
