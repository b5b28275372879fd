//! Validated requests. The gRPC edge turns each protobuf request into one of
//! these or into `INVALID_ARGUMENT` listing every bad field; the coordinator
//! only ever sees values that satisfy DESIGN.md's limits.

use std::time::Duration;

use crate::core::command::{BeginCommand, CompleteCommand, ExtendCommand, FailCommand};
use crate::core::error::{Error, Violation};
use crate::core::fingerprint::{self, Canonicalization, PayloadDigest};
use crate::core::limits::{DEFAULT_TENANT, Limits, MIN_LEASE_TTL, check_scope_name};
use crate::core::record::RecordId;
use crate::core::store::Page;
use crate::proto::convert;
use crate::proto::v1;

const MAX_KEY_BYTES: usize = 255;
const MAX_OWNER_BYTES: usize = 255;
const MAX_REQUEST_ID_BYTES: usize = 128;
const MAX_RESOURCE_REF_BYTES: usize = 2048;
const MAX_CONTENT_TYPE_BYTES: usize = 255;
const MAX_ERROR_CODE_BYTES: usize = 128;
const MAX_ERROR_MESSAGE_BYTES: usize = 4096;
const MAX_ERROR_DETAILS_BYTES: usize = 16 * 1024;
const MAX_IGNORE_FIELDS: usize = 64;
const MAX_POINTER_BYTES: usize = 1024;

/// Collects every violation of one request, so the caller can fix them all
/// at once.
#[derive(Default)]
struct Violations(Vec<Violation>);

impl Violations {
    fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(Violation::new(field, description));
    }

    fn check(&mut self, ok: bool, field: &str, description: impl FnOnce() -> String) {
        if !ok {
            self.add(field, description());
        }
    }

    fn finish<T>(self, value: T) -> Result<T, Error> {
        if self.0.is_empty() { Ok(value) } else { Err(Error::InvalidRequest(self.0)) }
    }
}

/// Validates the flat (tenant, namespace, key) fields every request carries.
fn record_id(v: &mut Violations, tenant: &str, namespace: &str, key: &str) -> RecordId {
    let tenant = if tenant.is_empty() { DEFAULT_TENANT } else { tenant };
    for (field, name) in [("tenant", tenant), ("namespace", namespace)] {
        if let Err(why) = check_scope_name(name) {
            v.add(field, why);
        }
    }
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        v.add("key", format!("must be 1..{MAX_KEY_BYTES} bytes (got {})", key.len()));
    } else if let Some((c, kind)) = key.chars().find_map(|c| unprintable(c).map(|kind| (c, kind))) {
        v.add("key", format!("must be printable text; contains U+{:04X}, a {kind}", c as u32));
    } else if key.chars().all(char::is_whitespace) {
        v.add("key", "must be printable text, not only whitespace");
    }
    RecordId { tenant: tenant.to_owned(), namespace: namespace.to_owned(), key: key.to_owned() }
}

/// What makes `c` unprintable in a key, if it is: control characters,
/// invisible format characters (zero-width spaces, bidirectional overrides,
/// byte order marks) and line or paragraph separators all let two keys that
/// look the same differ, or a key rewrite how a log line reads.
fn unprintable(c: char) -> Option<&'static str> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    match c.general_category() {
        GeneralCategory::Control => Some("control character"),
        GeneralCategory::Format => Some("invisible format character"),
        GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => Some("line or paragraph separator"),
        GeneralCategory::Surrogate | GeneralCategory::Unassigned => Some("unassigned code point"),
        _ => None,
    }
}

fn check_len(v: &mut Violations, field: &str, len: usize, max: usize) {
    v.check(len <= max, field, || format!("must be at most {max} bytes (got {len})"));
}

fn check_token(v: &mut Violations, token: u64) {
    v.check(token != 0, "fencing_token", || "is required: pass the token Begin returned".into());
}

/// A protobuf Duration as a std Duration, or None (with a violation) if it is
/// negative or malformed.
fn duration(v: &mut Violations, field: &str, d: &prost_types::Duration) -> Option<Duration> {
    let converted = convert::std_duration(d);
    if converted.is_none() {
        v.add(field, "must be a non-negative duration");
    }
    converted
}

fn lease_ttl(v: &mut Violations, requested: Option<&prost_types::Duration>, limits: &Limits) -> Duration {
    let Some(requested) = requested else { return limits.default_lease_ttl };
    let Some(ttl) = duration(v, "lease_ttl", requested) else { return limits.default_lease_ttl };
    if ttl.subsec_nanos() != 0 || ttl < MIN_LEASE_TTL || ttl > limits.max_lease_ttl {
        v.add(
            "lease_ttl",
            format!(
                "must be whole seconds from {}s to {}s (got {ttl:?})",
                MIN_LEASE_TTL.as_secs(),
                limits.max_lease_ttl.as_secs()
            ),
        );
    }
    ttl
}

fn retention(v: &mut Violations, requested: Option<&prost_types::Duration>, limits: &Limits) -> Duration {
    let Some(requested) = requested else { return limits.default_retention };
    match duration(v, "retention", requested) {
        Some(d) if d.is_zero() => {
            v.add("retention", "must be positive (leave it unset for the default)");
            d
        }
        // DESIGN.md: retention is capped by the configured maximum.
        Some(d) => d.min(limits.max_retention),
        None => limits.default_retention,
    }
}

pub fn begin(req: v1::BeginRequest, limits: &Limits) -> Result<BeginCommand, Error> {
    let mut v = Violations::default();
    let id = record_id(&mut v, &req.tenant, &req.namespace, &req.key);
    let (fingerprint, members) = match &req.request {
        None => {
            v.add("fingerprint", "one of fingerprint or payload is required");
            ([0; 32], vec![])
        }
        Some(v1::begin_request::Request::Fingerprint(digest)) => match <[u8; 32]>::try_from(digest.as_slice()) {
            Ok(digest) => (digest, vec![]),
            Err(_) => {
                v.add("fingerprint", format!("must be a 32-byte SHA-256 digest (got {} bytes)", digest.len()));
                ([0; 32], vec![])
            }
        },
        Some(v1::begin_request::Request::Payload(payload)) => {
            let digest = payload_digest(&mut v, payload, limits, false);
            (digest.fingerprint, digest.members)
        }
    };
    let lease_ttl = lease_ttl(&mut v, req.lease_ttl.as_ref(), limits);
    let wait = match req.wait.as_ref() {
        None => Duration::ZERO,
        Some(d) => {
            let wait = duration(&mut v, "wait", d).unwrap_or_default();
            v.check(wait <= limits.max_wait, "wait", || {
                format!("must be at most {}s (got {wait:?})", limits.max_wait.as_secs())
            });
            wait
        }
    };
    check_len(&mut v, "owner", req.owner.len(), MAX_OWNER_BYTES);
    check_len(&mut v, "request_id", req.request_id.len(), MAX_REQUEST_ID_BYTES);
    v.finish(BeginCommand { id, fingerprint, members, lease_ttl, wait, owner: req.owner, request_id: req.request_id })
}

/// A Fingerprint call's payload, digested as Begin would.
pub fn fingerprint(req: v1::FingerprintRequest, limits: &Limits) -> Result<PayloadDigest, Error> {
    let mut v = Violations::default();
    let digest = match &req.payload {
        Some(payload) => payload_digest(&mut v, payload, limits, req.include_canonical),
        None => {
            v.add("payload", "is required");
            PayloadDigest { fingerprint: [0; 32], canonical: vec![], members: vec![] }
        }
    };
    v.finish(digest)
}

/// The payload's digest; a zero digest when it broke a rule (the violation is recorded).
fn payload_digest(v: &mut Violations, payload: &v1::Payload, limits: &Limits, keep_canonical: bool) -> PayloadDigest {
    let none = || PayloadDigest { fingerprint: [0; 32], canonical: vec![], members: vec![] };
    if payload.data.len() > limits.max_payload_bytes {
        v.add(
            "payload.data",
            format!("must be at most {} bytes (got {})", limits.max_payload_bytes, payload.data.len()),
        );
        return none();
    }
    let canonicalization = match v1::Canonicalization::try_from(payload.canonicalization) {
        Ok(v1::Canonicalization::Raw) => Canonicalization::Raw,
        Ok(v1::Canonicalization::Json) => Canonicalization::Json,
        _ => {
            v.add("payload.canonicalization", "must be CANONICALIZATION_RAW or CANONICALIZATION_JSON");
            return none();
        }
    };
    if canonicalization == Canonicalization::Raw && !payload.ignore_fields.is_empty() {
        v.add("payload.ignore_fields", "only applies to CANONICALIZATION_JSON");
        return none();
    }
    if payload.ignore_fields.len() > MAX_IGNORE_FIELDS {
        v.add("payload.ignore_fields", format!("must list at most {MAX_IGNORE_FIELDS} pointers"));
        return none();
    }
    if let Some(long) = payload.ignore_fields.iter().find(|p| p.len() > MAX_POINTER_BYTES) {
        v.add(
            "payload.ignore_fields",
            format!("pointers must be at most {MAX_POINTER_BYTES} bytes (got {})", long.len()),
        );
        return none();
    }
    match fingerprint::digest_payload(&payload.data, canonicalization, &payload.ignore_fields, keep_canonical) {
        Ok(digest) => digest,
        Err(crate::core::canonical_json::CanonicalJsonError::Invalid(why)) => {
            v.add("payload.data", format!("is not valid I-JSON: {why}"));
            none()
        }
        Err(inexact @ crate::core::canonical_json::CanonicalJsonError::InexactNumber { .. }) => {
            v.add("payload.data", inexact.to_string());
            none()
        }
        Err(bad_pointer) => {
            v.add("payload.ignore_fields", bad_pointer.to_string());
            none()
        }
    }
}

pub fn complete(req: v1::CompleteRequest, limits: &Limits) -> Result<CompleteCommand, Error> {
    let mut v = Violations::default();
    let id = record_id(&mut v, &req.tenant, &req.namespace, &req.key);
    check_token(&mut v, req.fencing_token);
    let result = req.result.unwrap_or_default();
    match &result.body {
        None => v.add("result.body", "one of result.response or result.resource_ref is required"),
        Some(v1::result::Body::Response(bytes)) => {
            check_len(&mut v, "result.response", bytes.len(), limits.max_result_bytes)
        }
        Some(v1::result::Body::ResourceRef(r)) => {
            check_len(&mut v, "result.resource_ref", r.len(), MAX_RESOURCE_REF_BYTES);
            v.check(!r.is_empty(), "result.resource_ref", || "must not be empty".into());
        }
    }
    check_len(&mut v, "result.content_type", result.content_type.len(), MAX_CONTENT_TYPE_BYTES);
    let retention = retention(&mut v, req.retention.as_ref(), limits);
    let Some(result) = convert::call_result(result) else { return Err(Error::InvalidRequest(v.0)) };
    v.finish(CompleteCommand { id, fencing_token: req.fencing_token, result, retention })
}

pub fn fail(req: v1::FailRequest, limits: &Limits) -> Result<FailCommand, Error> {
    let mut v = Violations::default();
    let id = record_id(&mut v, &req.tenant, &req.namespace, &req.key);
    check_token(&mut v, req.fencing_token);
    let error = req.error.unwrap_or_default();
    v.check(!error.code.is_empty(), "error.code", || "is required".into());
    check_len(&mut v, "error.code", error.code.len(), MAX_ERROR_CODE_BYTES);
    check_len(&mut v, "error.message", error.message.len(), MAX_ERROR_MESSAGE_BYTES);
    check_len(&mut v, "error.details", error.details.len(), MAX_ERROR_DETAILS_BYTES);
    let retention = retention(&mut v, req.retention.as_ref(), limits);
    let error = convert::call_error(error);
    v.finish(FailCommand { id, fencing_token: req.fencing_token, error, retryable: req.retryable, retention })
}

pub fn extend(req: v1::ExtendRequest, limits: &Limits) -> Result<ExtendCommand, Error> {
    let mut v = Violations::default();
    let id = record_id(&mut v, &req.tenant, &req.namespace, &req.key);
    check_token(&mut v, req.fencing_token);
    let lease_ttl = lease_ttl(&mut v, req.lease_ttl.as_ref(), limits);
    v.finish(ExtendCommand { id, fencing_token: req.fencing_token, lease_ttl })
}

/// Most records per ListRecords page, and the page size when none is asked for.
pub const MAX_PAGE_SIZE: u32 = 1000;
pub const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_TOKEN_BYTES: usize = 1024;
const MAX_FORGET_REASON_BYTES: usize = 1024;

/// A ListRecords request: the page it asks for.
pub fn list_records(req: v1::ListRecordsRequest) -> Result<Page, Error> {
    let mut v = Violations::default();
    // Any valid key will do: only the tenant and namespace are checked here.
    let id = record_id(&mut v, &req.tenant, &req.namespace, "-");
    v.check(req.page_size <= MAX_PAGE_SIZE, "page_size", || {
        format!("must be at most {MAX_PAGE_SIZE} (got {})", req.page_size)
    });
    check_len(&mut v, "page_token", req.page_token.len(), MAX_PAGE_TOKEN_BYTES);
    let page_size = if req.page_size == 0 { DEFAULT_PAGE_SIZE } else { req.page_size } as usize;
    v.finish(Page { tenant: id.tenant, namespace: id.namespace, after: req.page_token, limit: page_size })
}

/// A ForgetRecord request: the record and why.
pub fn forget_record(req: v1::ForgetRecordRequest) -> Result<(RecordId, String), Error> {
    let mut v = Violations::default();
    let id = record_id(&mut v, &req.tenant, &req.namespace, &req.key);
    check_len(&mut v, "reason", req.reason.len(), MAX_FORGET_REASON_BYTES);
    v.finish((id, req.reason))
}

pub fn lookup(req: v1::LookupRequest) -> Result<RecordId, Error> {
    let mut v = Violations::default();
    let id = record_id(&mut v, &req.tenant, &req.namespace, &req.key);
    v.finish(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            default_lease_ttl: Duration::from_secs(30),
            max_lease_ttl: Duration::from_secs(600),
            max_wait: Duration::from_secs(60),
            default_retention: Duration::from_secs(86_400),
            max_retention: Duration::from_secs(7 * 86_400),
            max_payload_bytes: 1024,
            max_result_bytes: 512,
        }
    }

    fn begin_request(key: &str) -> v1::BeginRequest {
        v1::BeginRequest {
            namespace: "payments.create".into(),
            key: key.into(),
            request: Some(v1::begin_request::Request::Fingerprint(vec![7; 32])),
            ..Default::default()
        }
    }

    fn violated_fields(error: Error) -> Vec<String> {
        match error {
            Error::InvalidRequest(violations) => violations.into_iter().map(|v| v.field).collect(),
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }

    #[test]
    fn a_minimal_begin_gets_the_defaults() {
        let command = begin(begin_request("order-1"), &limits()).expect("valid");
        assert_eq!(command.id.tenant, DEFAULT_TENANT);
        assert_eq!(command.lease_ttl, Duration::from_secs(30));
        assert_eq!(command.wait, Duration::ZERO);
    }

    #[test]
    fn keys_must_be_printable_and_bounded() {
        let invisible = ["\u{2028}", "a\u{202E}b", "zero\u{200B}width", "\u{FEFF}bom", "   ", "\u{3000}"];
        for bad in ["", "a\u{0}b", "tab\there", "new\nline", &"k".repeat(256)].into_iter().chain(invisible) {
            assert_eq!(violated_fields(begin(begin_request(bad), &limits()).unwrap_err()), ["key"], "key {bad:?}");
        }
        for good in ["550e8400-e29b-41d4-a716-446655440000", "a/b", "with space", "ключ", &"k".repeat(255)] {
            assert!(begin(begin_request(good), &limits()).is_ok(), "key {good:?}");
        }
    }

    #[test]
    fn namespaces_and_tenants_cannot_carry_separators() {
        let mut req = begin_request("k");
        req.namespace = "payments/../refunds".into();
        req.tenant = "acme/evil".into();
        assert_eq!(violated_fields(begin(req, &limits()).unwrap_err()), ["tenant", "namespace"]);
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let mut req = begin_request("");
        req.request = Some(v1::begin_request::Request::Fingerprint(vec![1; 31]));
        req.lease_ttl = Some(prost_types::Duration { seconds: 1, nanos: 0 });
        req.wait = Some(prost_types::Duration { seconds: 61, nanos: 0 });
        assert_eq!(violated_fields(begin(req, &limits()).unwrap_err()), ["key", "fingerprint", "lease_ttl", "wait"]);
    }

    #[test]
    fn lease_ttls_are_whole_seconds_within_bounds() {
        for (seconds, nanos) in [(1, 0), (2, 500_000_000), (601, 0), (-5, 0)] {
            let mut req = begin_request("k");
            req.lease_ttl = Some(prost_types::Duration { seconds, nanos });
            assert_eq!(violated_fields(begin(req, &limits()).unwrap_err()), ["lease_ttl"], "{seconds}s {nanos}ns");
        }
    }

    #[test]
    fn oversize_and_malformed_payloads_name_the_field() {
        let mut req = begin_request("k");
        req.request = Some(v1::begin_request::Request::Payload(v1::Payload {
            data: vec![b'x'; 1025],
            canonicalization: v1::Canonicalization::Raw as i32,
            ignore_fields: vec![],
        }));
        assert_eq!(violated_fields(begin(req.clone(), &limits()).unwrap_err()), ["payload.data"]);

        req.request = Some(v1::begin_request::Request::Payload(v1::Payload {
            data: br#"{"a":1,"a":2}"#.to_vec(),
            canonicalization: v1::Canonicalization::Json as i32,
            ignore_fields: vec![],
        }));
        assert_eq!(violated_fields(begin(req.clone(), &limits()).unwrap_err()), ["payload.data"]);

        req.request = Some(v1::begin_request::Request::Payload(v1::Payload {
            data: b"{}".to_vec(),
            canonicalization: v1::Canonicalization::Unspecified as i32,
            ignore_fields: vec![],
        }));
        assert_eq!(violated_fields(begin(req, &limits()).unwrap_err()), ["payload.canonicalization"]);
    }

    #[test]
    fn results_are_bounded_and_retention_is_capped() {
        let req = v1::CompleteRequest {
            namespace: "ns".into(),
            key: "k".into(),
            fencing_token: 9,
            result: Some(v1::Result { body: Some(v1::result::Body::Response(vec![0; 513])), ..Default::default() }),
            retention: None,
            ..Default::default()
        };
        assert_eq!(violated_fields(complete(req.clone(), &limits()).unwrap_err()), ["result.response"]);

        let mut ok = req;
        ok.result =
            Some(v1::Result { body: Some(v1::result::Body::ResourceRef("orders/1".into())), ..Default::default() });
        ok.retention = Some(prost_types::Duration { seconds: 30 * 86_400, nanos: 0 });
        assert_eq!(complete(ok, &limits()).expect("valid").retention, Duration::from_secs(7 * 86_400));
    }

    #[test]
    fn tokens_and_error_codes_are_required() {
        let req = v1::FailRequest { namespace: "ns".into(), key: "k".into(), ..Default::default() };
        assert_eq!(violated_fields(fail(req, &limits()).unwrap_err()), ["fencing_token", "error.code"]);
    }
}
