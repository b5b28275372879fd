//! Whose records a request's key names (issue 27, item 1): each protected
//! route scopes its records by a caller identity taken from the request, so
//! one caller's key never replays another caller's answer, and a caller
//! cannot learn whether another caller used a key (a different identity is a
//! different record: it runs, it never gets 422).
//!
//! The coordinator namespace of a record is `<route namespace>:<suffix>`,
//! the suffix 32 lowercase hex characters, the first 16 bytes of
//! SHA-256(`source` NUL `value`), where `source` is `authorization` or
//! `header:<lower-case name>`. The key stays what the client sent. The
//! Python and Node middlewares compute the same namespace.

use http::{HeaderMap, HeaderName, header};
use sha2::{Digest, Sha256};

/// Where a route reads its caller's identity from: the routes file's `identity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// The `Authorization` header's value.
    Authorization,
    /// A header's value: an API key, or one a trusted auth proxy sets (an
    /// account id, an mTLS proxy's `X-Forwarded-Client-Cert`).
    Header(HeaderName),
    /// Records are not scoped by caller: every caller shares the route's keys.
    None,
}

/// The length of `:<32 hex>`, added to the route's namespace.
pub const SUFFIX_BYTES: usize = 33;

impl IdentitySource {
    /// Reads `authorization`, `header:<Name>` or `none`.
    pub fn parse(text: &str) -> Result<IdentitySource, String> {
        if text == "authorization" {
            return Ok(IdentitySource::Authorization);
        }
        if text == "none" {
            return Ok(IdentitySource::None);
        }
        if let Some(name) = text.strip_prefix("header:") {
            return HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map(IdentitySource::Header)
                .map_err(|_| format!("{name:?} is not a header name"));
        }
        Err(format!("{text:?} is none of \"authorization\", \"header:<Name>\", \"none\""))
    }

    /// The header a request must carry, as the 401 names it; `None` for `none`.
    pub fn header(&self) -> Option<&HeaderName> {
        match self {
            IdentitySource::Authorization => Some(&header::AUTHORIZATION),
            IdentitySource::Header(name) => Some(name),
            IdentitySource::None => None,
        }
    }

    /// The coordinator namespace of the caller of a request with `headers`
    /// on a route whose namespace is `namespace`; `None` when the identity
    /// header is absent or empty.
    pub fn scoped_namespace(&self, namespace: &str, headers: &HeaderMap) -> Option<String> {
        let Some(name) = self.header() else { return Some(namespace.to_owned()) };
        // Repeated fields are one value joined by ", " (RFC 9110 §5.3).
        let values: Vec<&[u8]> = headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
        let value = values.join(&b", "[..]);
        if value.iter().all(|b| matches!(b, b' ' | b'\t' | b',')) {
            return None;
        }
        let source = match self {
            IdentitySource::Authorization => "authorization".to_owned(),
            _ => format!("header:{}", name.as_str()),
        };
        let mut digest = Sha256::new();
        digest.update(source.as_bytes());
        digest.update([0]);
        digest.update(&value);
        Some(format!("{namespace}:{}", hex::encode(&digest.finalize()[..16])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_bytes(name.as_bytes()).expect("a name"), value.parse().expect("a value"));
        }
        map
    }

    #[test]
    fn the_namespace_is_the_routes_plus_a_hash_of_source_and_value() {
        let alice = headers(&[("authorization", "Bearer alice")]);
        let scoped = IdentitySource::Authorization.scoped_namespace("payments", &alice).expect("an identity");
        // SHA-256("authorization\0Bearer alice"), first 16 bytes: the vector the middlewares test too.
        let expected = hex::encode(&Sha256::digest(b"authorization\0Bearer alice")[..16]);
        assert_eq!(scoped, format!("payments:{expected}"));
        assert_eq!(scoped.len(), "payments".len() + SUFFIX_BYTES);
        let bob = headers(&[("authorization", "Bearer bob")]);
        assert_ne!(IdentitySource::Authorization.scoped_namespace("payments", &bob), Some(scoped.clone()));
        // The same value in another header is another caller.
        let api_key = IdentitySource::parse("header:X-Api-Key").expect("valid");
        let as_key = headers(&[("x-api-key", "Bearer alice")]);
        assert_ne!(api_key.scoped_namespace("payments", &as_key), Some(scoped));
    }

    #[test]
    fn an_absent_or_empty_identity_is_none_and_none_scopes_nothing() {
        let source = IdentitySource::parse("header:X-Authenticated-User").expect("valid");
        assert_eq!(source.scoped_namespace("p", &HeaderMap::new()), None);
        assert_eq!(source.scoped_namespace("p", &headers(&[("x-authenticated-user", "")])), None);
        assert_eq!(IdentitySource::None.scoped_namespace("p", &HeaderMap::new()), Some("p".into()));
    }

    #[test]
    fn only_the_three_forms_parse() {
        assert_eq!(
            IdentitySource::parse("header:X-Api-Key"),
            Ok(IdentitySource::Header("x-api-key".parse().expect("a name")))
        );
        for bad in ["", "Authorization", "header:", "header:a b", "cookie"] {
            assert!(IdentitySource::parse(bad).is_err(), "{bad:?}");
        }
    }
}
