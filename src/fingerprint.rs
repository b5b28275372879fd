//! The request fingerprint: a SHA-256 digest that tells a retry of the same
//! request from a different request reusing the key.

use sha2::{Digest, Sha256};

use crate::canonical_json::{self, CanonicalJsonError};

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

    #[test]
    fn ignored_fields_make_volatile_requests_equal() {
        let ignore = vec!["/sent_at".to_string()];
        let first = of_payload(br#"{"amount":5,"sent_at":1}"#, Canonicalization::Json, &ignore).expect("valid");
        let retry = of_payload(br#"{"sent_at":2,"amount":5}"#, Canonicalization::Json, &ignore).expect("valid");
        assert_eq!(first, retry);
    }
}
