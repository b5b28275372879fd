//! The request fingerprint: a SHA-256 digest that tells a retry of the same
//! request from a different request reusing the key.

use sha2::{Digest, Sha256};

use crate::core::canonical_json::{self, CanonicalJsonError};

/// A SHA-256 digest.
pub type Fingerprint = [u8; 32];

/// How the coordinator derives a fingerprint from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canonicalization {
    /// The bytes as sent.
    Raw,
    /// RFC 8785 canonical JSON after removing ignored fields.
    Json,
}

/// Digest of `data` under `canonicalization`. `ignore_fields` must be empty
/// for `Raw` (the caller checks that, since it names the request field).
pub fn of_payload(
    data: &[u8],
    canonicalization: Canonicalization,
    ignore_fields: &[String],
) -> Result<Fingerprint, CanonicalJsonError> {
    match canonicalization {
        Canonicalization::Raw => Ok(Sha256::digest(data).into()),
        Canonicalization::Json => {
            let canonical = canonical_json::canonicalize(data, ignore_fields)?;
            Ok(Sha256::digest(&canonical).into())
        }
    }
}

/// Most top-level members whose digests are kept; a request with more keeps
/// none, so a record's size does not grow with what a caller sends.
pub const MAX_MEMBER_DIGESTS: usize = 64;

/// Longest member name whose digest is kept; a request with a longer one keeps none.
pub const MAX_MEMBER_NAME_BYTES: usize = 128;

/// Bytes of a stored member digest: enough to tell members apart, and no
/// more than a record needs to carry.
const STORED_MEMBER_DIGEST_BYTES: usize = 16;

/// The SHA-256 digest of one top-level member's canonical value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDigest {
    pub name: String,
    pub digest: [u8; 32],
}

/// A payload's fingerprint, with what explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadDigest {
    pub fingerprint: Fingerprint,
    /// The bytes that were hashed: the canonical form, or the raw bytes.
    pub canonical: Vec<u8>,
    /// Each top-level member's digest, for a JSON object within the bounds
    /// above; empty otherwise.
    pub members: Vec<MemberDigest>,
}

/// [`of_payload`], with the member digests, and with the canonical bytes if
/// `keep_canonical` (else `canonical` is empty: a Begin needs no copy).
pub fn digest_payload(
    data: &[u8],
    canonicalization: Canonicalization,
    ignore_fields: &[String],
    keep_canonical: bool,
) -> Result<PayloadDigest, CanonicalJsonError> {
    let kept = |bytes: Vec<u8>| if keep_canonical { bytes } else { Vec::new() };
    match canonicalization {
        Canonicalization::Raw => Ok(PayloadDigest {
            fingerprint: Sha256::digest(data).into(),
            canonical: kept(data.to_vec()),
            members: vec![],
        }),
        Canonicalization::Json => {
            let canonical = canonical_json::canonicalize_members(data, ignore_fields)?;
            let members = match canonical.members {
                Some(members)
                    if members.len() <= MAX_MEMBER_DIGESTS
                        && members.iter().all(|(name, _)| name.len() <= MAX_MEMBER_NAME_BYTES) =>
                {
                    members
                        .into_iter()
                        .map(|(name, value)| MemberDigest { name, digest: Sha256::digest(&value).into() })
                        .collect()
                }
                _ => vec![],
            };
            let fingerprint = Sha256::digest(&canonical.bytes).into();
            Ok(PayloadDigest { fingerprint, canonical: kept(canonical.bytes), members })
        }
    }
}

/// What a record stores of a request's members: each digest keyed by the
/// record's fingerprint and shortened, so that a stored digest matches
/// nothing outside its own record (no table of digests of common values
/// works across records). Never a value.
pub fn stored_member_digests(fingerprint: &[u8], members: &[MemberDigest]) -> Vec<(String, Vec<u8>)> {
    members.iter().map(|m| (m.name.clone(), keyed(fingerprint, m))).collect()
}

fn keyed(fingerprint: &[u8], member: &MemberDigest) -> Vec<u8> {
    let mut digest = Sha256::new();
    digest.update(fingerprint);
    digest.update((member.name.len() as u64).to_be_bytes());
    digest.update(member.name.as_bytes());
    digest.update(member.digest);
    digest.finalize()[..STORED_MEMBER_DIGEST_BYTES].to_vec()
}

/// The top-level members in which a request differs from the one a record
/// was made by (present in one only, or with another value), sorted; None
/// when either side kept no member digests.
pub fn differing_members(
    stored: &[(String, Vec<u8>)],
    record_fingerprint: &[u8],
    request: &[MemberDigest],
) -> Option<Vec<String>> {
    if stored.is_empty() || request.is_empty() {
        return None;
    }
    let mut differing: Vec<String> = request
        .iter()
        .filter(|m| !stored.iter().any(|(name, digest)| *name == m.name && *digest == keyed(record_fingerprint, m)))
        .map(|m| m.name.clone())
        .chain(stored.iter().filter(|(name, _)| !request.iter().any(|m| m.name == *name)).map(|(n, _)| n.clone()))
        .collect();
    differing.sort();
    differing.dedup();
    Some(differing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_is_sha256_of_the_bytes() {
        let digest = of_payload(b"abc", Canonicalization::Raw, &[]).expect("raw never fails");
        assert_eq!(hex::encode(digest), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn json_fingerprints_agree_across_formatting_and_differ_across_content() {
        let a = of_payload(br#"{"b":1,"a":true}"#, Canonicalization::Json, &[]).expect("valid");
        let b = of_payload(br#"{ "a": true, "b": 1 }"#, Canonicalization::Json, &[]).expect("valid");
        let c = of_payload(br#"{ "a": true, "b": 2 }"#, Canonicalization::Json, &[]).expect("valid");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, <[u8; 32]>::from(Sha256::digest(br#"{"a":true,"b":1}"#)));
    }

    /// The vectors every client language tests against (generated by an
    /// independent implementation: testdata/generate-fingerprints.mjs).
    /// A golden vector's `ignore_fields`.
    fn ignore_fields(vector: &serde_json::Value) -> Vec<String> {
        let pointers = vector["ignore_fields"].as_array().expect("ignore_fields");
        pointers.iter().map(|p| p.as_str().expect("a pointer").to_owned()).collect()
    }

    #[test]
    fn golden_vectors_match() {
        let golden: serde_json::Value =
            serde_json::from_str(include_str!("../../testdata/fingerprints.json")).expect("valid golden file");
        let vectors = golden["vectors"].as_array().expect("a vectors array");
        assert!(vectors.len() >= 10);
        for v in vectors {
            let name = v["name"].as_str().unwrap_or_default();
            let payload = v["payload"].as_str().expect("payload").as_bytes();
            let ignore = ignore_fields(v);
            let canonicalization = match v["canonicalization"].as_str() {
                Some("RAW") => Canonicalization::Raw,
                Some("JSON") => Canonicalization::Json,
                other => panic!("{name}: unknown canonicalization {other:?}"),
            };
            if let Some(expected) = v["canonical"].as_str() {
                let canonical = crate::core::canonical_json::canonicalize(payload, &ignore).expect("valid vector");
                assert_eq!(String::from_utf8(canonical).unwrap(), expected, "{name}");
            }
            let digest = of_payload(payload, canonicalization, &ignore).expect("valid vector");
            assert_eq!(hex::encode(digest), v["sha256"].as_str().expect("sha256"), "{name}");
        }
        let refused = golden["refused"].as_array().expect("a refused array");
        assert!(refused.len() >= 10);
        for v in refused {
            let name = v["name"].as_str().unwrap_or_default();
            let payload = v["payload"].as_str().expect("payload").as_bytes();
            let ignore = ignore_fields(v);
            let pointer = v["pointer"].as_str().expect("pointer").to_owned();
            assert_eq!(
                of_payload(payload, Canonicalization::Json, &ignore),
                Err(CanonicalJsonError::InexactNumber { pointer }),
                "{name}"
            );
        }
    }

    /// Issue 26: `{"account_id":1234567890123456789}` and `…788` are two
    /// accounts; canonical JSON made both `1234567890123456800`, so the second
    /// request was answered with the first's result.
    #[test]
    fn two_different_numbers_never_share_a_fingerprint() {
        let pairs = [
            (r#"{"account_id":1234567890123456789}"#, r#"{"account_id":1234567890123456788}"#),
            (r#"{"account_id":1234567890123456789}"#, r#"{"account_id":1234567890123456800}"#),
            ("[0.10000000000000000001]", "[0.1]"),
            ("1152921504606846976", "1152921504606847000"),
            ("1e-400", "0"),
        ];
        for (a, b) in pairs {
            let first = of_payload(a.as_bytes(), Canonicalization::Json, &[]);
            let second = of_payload(b.as_bytes(), Canonicalization::Json, &[]);
            assert!(first.is_err() || second.is_err() || first != second, "{a} and {b} share a fingerprint");
        }
    }

    #[test]
    fn ignored_fields_make_volatile_requests_equal() {
        let ignore = vec!["/sent_at".to_string()];
        let first = of_payload(br#"{"amount":5,"sent_at":1}"#, Canonicalization::Json, &ignore).expect("valid");
        let retry = of_payload(br#"{"sent_at":2,"amount":5}"#, Canonicalization::Json, &ignore).expect("valid");
        assert_eq!(first, retry);
    }

    fn digest(json: &str) -> PayloadDigest {
        digest_payload(json.as_bytes(), Canonicalization::Json, &[], false).expect("valid")
    }

    #[test]
    fn differing_members_names_what_changed_and_never_stores_values() {
        let first = digest(r#"{"amount":100,"currency":"EUR","cart":[1,2]}"#);
        let stored = stored_member_digests(&first.fingerprint, &first.members);
        assert!(stored.iter().all(|(_, d)| d.len() == 16 && !d.windows(3).any(|w| w == b"100")));
        let second = digest(r#"{"currency":"EUR","amount":200,"cart":[1,2],"note":"x"}"#);
        assert_eq!(
            differing_members(&stored, &first.fingerprint, &second.members),
            Some(vec!["amount".to_owned(), "note".to_owned()])
        );
        let third = digest(r#"{"currency":"EUR","amount":100}"#);
        assert_eq!(differing_members(&stored, &first.fingerprint, &third.members), Some(vec!["cart".to_owned()]));
        assert_eq!(differing_members(&[], &first.fingerprint, &second.members), None);
    }

    #[test]
    fn the_same_member_value_is_stored_differently_in_two_records() {
        let a = digest(r#"{"amount":100,"order":1}"#);
        let b = digest(r#"{"amount":100,"order":2}"#);
        assert_eq!(a.members[0].digest, b.members[0].digest, "unkeyed digests of one value agree");
        assert_ne!(
            stored_member_digests(&a.fingerprint, &a.members)[0],
            stored_member_digests(&b.fingerprint, &b.members)[0]
        );
    }

    #[test]
    fn member_digests_are_bounded() {
        let many =
            format!("{{{}}}", (0..=MAX_MEMBER_DIGESTS).map(|i| format!("\"m{i}\":{i}")).collect::<Vec<_>>().join(","));
        assert!(digest(&many).members.is_empty());
        let long_name = format!("{{\"{}\":1}}", "n".repeat(MAX_MEMBER_NAME_BYTES + 1));
        assert!(digest(&long_name).members.is_empty());
        assert!(digest("[1,2]").members.is_empty());
        assert_eq!(
            digest(r#"{"a":1}"#).fingerprint,
            of_payload(br#"{"a":1}"#, Canonicalization::Json, &[]).expect("valid")
        );
    }
}
