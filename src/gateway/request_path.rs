//! The path a request is routed by (issue 27, item 2). `POST //payments`,
//! `/payments/`, `/%70ayments` and `/payments;x` used to miss a
//! `key = "required"` route while the service behind served them as
//! `/payments`. Frameworks disagree on such forms: Starlette, Flask and
//! Express percent-decode before routing (`/%70ayments` is `/payments`);
//! Spring and Tomcat drop `;` parameters; nginx and Spring merge `//`; many
//! ignore a trailing slash or the case of the path. So the gateway:
//!
//! - refuses, with 400 `path-ambiguous`, on every path, forms the service
//!   may read as another path: an empty segment (`//`), a dot segment (`.`,
//!   `..`), a `;` or `\`, a percent-encoded unreserved character (`%70`),
//!   `/`, `\`, `;` or control character, and a malformed `%`;
//! - matches routes ignoring one trailing slash and ASCII case: protecting
//!   more is the safe side.
//!
//! The request goes upstream as sent, and its fingerprint holds the path as sent.

/// Why the gateway forwards no request like this one, if it does not: a
/// target that is not a path (authority form, CONNECT; `*` but for
/// OPTIONS), or, over HTTP/2, a `host` field that names another host than
/// `:authority` (RFC 9113 §8.3.1: such a request is malformed).
pub fn unsupported_target(request: &http::Request<impl Sized>) -> Option<String> {
    let (method, uri) = (request.method(), request.uri());
    if method == http::Method::CONNECT {
        return Some("the CONNECT method".into());
    }
    let path = uri.path();
    let path_or_options_star = path.starts_with('/') || (path == "*" && method == http::Method::OPTIONS);
    if !path_or_options_star {
        return Some(format!("the request target {:?}, which is not a path", uri.to_string()));
    }
    let host = request.headers().get(http::header::HOST).map(http::HeaderValue::as_bytes);
    match (request.version(), uri.authority(), host) {
        (http::Version::HTTP_2, Some(authority), Some(host))
            if !authority.as_str().as_bytes().eq_ignore_ascii_case(host) =>
        {
            Some("a host field that names another host than its :authority".into())
        }
        _ => None,
    }
}

/// The path routes are matched against, or why the path is refused.
pub fn for_matching(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        // `*` (OPTIONS *) names no route.
        return Ok(path.to_owned());
    }
    ambiguity(path).map_or(Ok(()), Err)?;
    let mut normal = path.to_ascii_lowercase();
    if normal.len() > 1 && normal.ends_with('/') {
        normal.pop();
    }
    Ok(normal)
}

/// What makes `path` one the service may read as another, if anything.
pub fn ambiguity(path: &str) -> Option<String> {
    if path.contains(';') {
        return Some("a ';' parameter".into());
    }
    if path.contains('\\') {
        return Some("a '\\'".into());
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            // One trailing slash is the path without it.
            "" if i == last => {}
            "" => return Some("an empty segment (//)".into()),
            "." | ".." => return Some(format!("a dot segment ({segment:?})")),
            _ => {}
        }
    }
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
            return Some(format!("a malformed percent-encoding at byte {i}"));
        };
        let unreserved = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~');
        if unreserved || matches!(byte, b'/' | b'\\' | b';') || byte.is_ascii_control() {
            return Some(format!("a percent-encoded {:?} ({})", byte as char, &path[i..i + 3]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_review_forms_are_refused_or_match_the_route() {
        for refused in ["//payments", "/%70ayments", "/payments;x", "/payments//", "/a/../payments", "/./payments"] {
            assert!(for_matching(refused).is_err(), "{refused}");
        }
        for same in ["/payments", "/payments/", "/PAYMENTS", "/Payments/"] {
            assert_eq!(for_matching(same).as_deref(), Ok("/payments"), "{same}");
        }
    }

    #[test]
    fn encodings_frameworks_may_decode_into_routing_are_refused_others_pass() {
        for refused in ["/a%2Fb", "/a%2fb", "/a%5Cb", "/a%3Bb", "/a%2E", "/a%7e", "/a%00", "/a%zz", "/a%4", "/a\\b"] {
            assert!(for_matching(refused).is_err(), "{refused}");
        }
        for kept in ["/files/a%20b", "/files/caf%C3%A9", "/q%3Fx", "/", "*"] {
            assert!(for_matching(kept).is_ok(), "{kept}");
        }
        assert_eq!(for_matching("/").as_deref(), Ok("/"));
    }
}
