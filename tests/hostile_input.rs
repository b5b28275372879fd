//! Hostile input: property tests over request validation, fingerprint
//! canonicalization and the etcd key layout, and the nastiest cases sent over
//! the wire. Never a panic; always INVALID_ARGUMENT naming the field; never a
//! record outside its (tenant, namespace) scope.

mod common;

use common::*;
use idempotency_coordinator::core::canonical_json::{CanonicalJsonError, canonicalize};
use idempotency_coordinator::core::error::Error;
use idempotency_coordinator::core::limits::Limits;
use idempotency_coordinator::core::record::RecordId;
use idempotency_coordinator::grpc::request;
use idempotency_coordinator::proto::v1;
use idempotency_coordinator::store::etcd::keys::RecordKeys;
use percent_encoding::percent_decode_str;
use proptest::prelude::*;
use tonic::Code;

fn limits() -> Limits {
    Limits {
        default_lease_ttl: std::time::Duration::from_secs(30),
        max_lease_ttl: std::time::Duration::from_secs(3600),
        max_wait: std::time::Duration::from_secs(60),
        default_retention: std::time::Duration::from_secs(86_400),
        max_retention: std::time::Duration::from_secs(7 * 86_400),
        max_payload_bytes: 1024 * 1024,
        max_result_bytes: 256 * 1024,
    }
}

/// Arbitrary JSON text, built from a value tree so that it is valid.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        // Integers a double holds; the others are refused (see below).
        (-(1i64 << 53)..=(1i64 << 53)).prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| serde_json::json!(f)),
        any::<String>().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The same value written with members in reverse order and loose spacing.
fn rewrite_loosely(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(members) => {
            let parts: Vec<String> = members
                .iter()
                .rev()
                .map(|(k, v)| format!(" {} :\n {} ", serde_json::to_string(k).unwrap(), rewrite_loosely(v)))
                .collect();
            format!("{{ {} }}", parts.join(" ,\t"))
        }
        serde_json::Value::Array(items) => {
            format!("[ {} ]", items.iter().map(rewrite_loosely).collect::<Vec<_>>().join(" , "))
        }
        other => other.to_string(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn canonicalization_never_panics_and_is_a_fixed_point(data in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(canonical) = canonicalize(&data, &[]) {
            prop_assert_eq!(canonicalize(&canonical, &[]).expect("canonical output is valid JSON"), canonical);
        }
    }

    #[test]
    fn member_order_and_whitespace_never_change_the_canonical_form(value in json_value()) {
        let compact = serde_json::to_vec(&value).unwrap();
        let loose = rewrite_loosely(&value);
        prop_assert_eq!(canonicalize(&compact, &[]).unwrap(), canonicalize(loose.as_bytes(), &[]).unwrap());
    }

    /// Issue 26: an integer is kept exactly or refused, never fingerprinted
    /// as another integer.
    #[test]
    fn an_integer_is_kept_as_itself_or_refused(n in any::<i64>(), shift in 0u32..12) {
        let n = n >> shift << shift; // some with low bits clear, which doubles hold
        match canonicalize(n.to_string().as_bytes(), &[]) {
            // Below 1e21 the canonical form is plain digits: the same integer.
            Ok(canonical) => prop_assert_eq!(String::from_utf8(canonical).expect("ascii"), n.to_string()),
            Err(error) => prop_assert_eq!(error, CanonicalJsonError::InexactNumber { pointer: String::new() }),
        }
    }

    #[test]
    fn arbitrary_pointers_never_panic(value in json_value(), pointers in prop::collection::vec(".{0,24}", 0..4)) {
        let _ = canonicalize(&serde_json::to_vec(&value).unwrap(), &pointers);
    }

    #[test]
    fn validation_never_panics_and_names_only_request_fields(
        tenant in ".{0,140}", namespace in ".{0,140}", key in ".{0,300}",
        fingerprint in prop::collection::vec(any::<u8>(), 0..40),
        ttl_seconds in -5i64..5000, ttl_nanos in -1i32..1_000_000_001, wait in -5i64..100,
    ) {
        let req = v1::BeginRequest {
            tenant, namespace, key,
            request: Some(v1::begin_request::Request::Fingerprint(fingerprint)),
            lease_ttl: Some(prost_types::Duration { seconds: ttl_seconds, nanos: ttl_nanos }),
            wait: Some(secs(wait)),
            ..Default::default()
        };
        match request::begin(req, &limits()) {
            Ok(command) => {
                prop_assert!(!command.id.key.is_empty() && command.id.key.len() <= 255);
                let invisible = |c: char| c.is_control() || matches!(c, '\u{200B}' | '\u{202E}' | '\u{2028}' | '\u{FEFF}');
                prop_assert!(!command.id.key.chars().any(invisible));
                prop_assert!(!command.id.key.chars().all(char::is_whitespace));
            }
            Err(Error::InvalidRequest(violations)) => {
                prop_assert!(!violations.is_empty());
                for v in violations {
                    prop_assert!(["tenant", "namespace", "key", "fingerprint", "lease_ttl", "wait"].contains(&v.field.as_str()), "{}", v.field);
                }
            }
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    #[test]
    fn every_accepted_id_stays_in_its_scope_and_maps_back(key in "\\PC{1,64}", separators in prop::sample::select(vec!["/", "%2F", "..", "%", "/record", "\\", " "])) {
        let key = format!("{separators}{key}{separators}");
        let id = RecordId { tenant: "acme".into(), namespace: "payments.create".into(), key: key.clone() };
        if request::lookup(v1::LookupRequest { tenant: id.tenant.clone(), namespace: id.namespace.clone(), key: key.clone() }).is_err() {
            return Ok(()); // refused keys write nothing
        }
        let keys = RecordKeys::new("/idem/", &id);
        let inside = keys.scope.strip_prefix("/idem/acme/payments.create/").expect("record stays under its tenant and namespace");
        let encoded_key = inside.strip_suffix('/').expect("scope ends with /");
        prop_assert!(!encoded_key.contains('/'));
        prop_assert_eq!(percent_decode_str(encoded_key).decode_utf8().unwrap(), key.as_str());
        prop_assert_eq!(keys.record, format!("{}record", keys.scope));
    }
}

#[test]
fn nasty_json_is_refused_or_canonicalized_never_a_crash() {
    let nested_array = "[".repeat(1_000_000) + &"]".repeat(1_000_000);
    let nested_object = "{\"a\":".repeat(100_000) + "1" + &"}".repeat(100_000);
    for refused in [
        nested_array.as_str(),
        nested_object.as_str(),
        r#"{"amount":1,"amount":1}"#,
        "1e400",
        "-1e400",
        r#""\udc00""#,
        "\u{feff}{}",
        // Numbers canonical JSON would change (issue 26).
        &"1".repeat(300),
        "0.1e-400",
        &format!("0.{}1", "0".repeat(100_000)),
    ] {
        assert!(canonicalize(refused.as_bytes(), &[]).is_err(), "accepted {:.40}", refused);
    }
    // As Node prints Number("1.1111111111111112e299").
    assert_eq!(canonicalize(b"1.1111111111111112e299", &[]).unwrap(), b"1.1111111111111112e+299");
    assert_eq!(canonicalize(b"-0.0e-999999999999999999999999999999", &[]).unwrap(), b"0");
}

/// BeginRequest with `key` declared as bytes: lets the test send a key that
/// is not UTF-8, which a well-behaved client cannot.
#[derive(Clone, PartialEq, prost::Message)]
struct RawBeginRequest {
    #[prost(string, tag = "2")]
    namespace: String,
    #[prost(bytes = "vec", tag = "3")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    fingerprint: Vec<u8>,
}

#[tokio::test]
async fn undecodable_and_oversize_requests_are_invalid_arguments_naming_the_field() {
    let (_etcd, server, mut client) = start().await;

    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let raw =
        RawBeginRequest { namespace: "payments.create".into(), key: vec![b'k', 0xff, 0xfe], fingerprint: vec![1; 32] };
    let path = http::uri::PathAndQuery::from_static("/idempotency.v1.CoordinatorService/Begin");
    let codec = tonic_prost::ProstCodec::<RawBeginRequest, v1::BeginResponse>::default();
    let status = grpc.unary(tonic::Request::new(raw), path, codec).await.expect_err("invalid UTF-8 is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(violated_fields(&status), ["key"]);

    // 10 MB payload: over the message limit (4 MiB), refused before buffering.
    let status = client.begin(begin_request("big", &"x".repeat(10 << 20), 5)).await.expect_err("10 MB is refused");
    assert_eq!((status.code(), reason(&status).as_str()), (Code::InvalidArgument, "INVALID_REQUEST"));
    assert_eq!(violated_fields(&status), ["payload.data"]);
    // 2 MB: under the message limit, over the payload limit (1 MiB).
    let status = client.begin(begin_request("big", &"x".repeat(2 << 20), 5)).await.expect_err("2 MB is refused");
    assert_eq!(violated_fields(&status), ["payload.data"]);
    assert!(status.message().contains("at most 1048576 bytes"), "{}", status.message());

    // Separators and control bytes in ids: refused, or kept inside their scope.
    for (namespace, key) in
        [("payments.create", "../../other/ns/k"), ("payments.create", "a/record"), ("payments.create", "%2F")]
    {
        let mut request = begin_request(key, "cart", 5);
        request.namespace = namespace.into();
        acquired(begin(&mut client, request).await);
    }
    assert_status(client.lookup(lookup_request("a")).await, Code::NotFound, "RECORD_NOT_FOUND");
    assert_status(client.lookup(lookup_request("/")).await, Code::NotFound, "RECORD_NOT_FOUND");

    // Deeply nested JSON over the wire: refused, and the server still serves.
    let mut deep = begin_request("deep", "", 5);
    deep.request = Some(v1::begin_request::Request::Payload(v1::Payload {
        data: ("[".repeat(100_000) + &"]".repeat(100_000)).into_bytes(),
        canonicalization: v1::Canonicalization::Json as i32,
        ignore_fields: vec![],
    }));
    let status = client.begin(deep).await.expect_err("deep JSON is refused");
    assert_eq!(violated_fields(&status), ["payload.data"]);
    acquired(begin(&mut client, begin_request("still-serving", "cart", 5)).await);
}
