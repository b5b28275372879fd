//! The fingerprint of an HTTP request: method, path, query, the route's chosen
//! headers and the body — a JSON body in its canonical form (RFC 8785) without
//! the route's ignored fields, anything else as sent with its Content-Type. Two requests with one
//! key and different fingerprints are a reused key (422), never a replay; a
//! JSON body with a number its canonical form would change is refused (400),
//! since it could not be told apart from another number.

use http::request::Parts;
use sha2::{Digest, Sha256};

use crate::core::canonical_json::{self, CanonicalJsonError};
use crate::core::fingerprint::Fingerprint;
use crate::gateway::problem::Problem;
use crate::gateway::routes::Route;

/// Version tag of the layout below; a change of layout must change it, so
/// that records stored by an older gateway are not compared with a new digest.
/// Version 2 added a non-JSON body's Content-Type (issue 27, item 6): a
/// retry of a key begun by a version-1 gateway gets 422 once.
const LAYOUT: &[u8] = b"idempotency-gateway/2\n";

pub fn of_request(parts: &Parts, body: &[u8], route: &Route) -> Result<Fingerprint, Problem> {
    let mut digest = Sha256::new();
    digest.update(LAYOUT);
    // No line break can occur in a method, path, query or header value, so
    // newlines keep the fields apart unambiguously.
    for field in [parts.method.as_str(), parts.uri.path(), parts.uri.query().unwrap_or("")] {
        digest.update(field.as_bytes());
        digest.update(b"\n");
    }
    for name in &route.fingerprint_headers {
        digest.update(name.as_str().as_bytes());
        for value in parts.headers.get_all(name) {
            digest.update(b":");
            digest.update(value.as_bytes());
        }
        digest.update(b"\n");
    }
    // A body that says it is JSON but is not is fingerprinted as sent; the
    // service will refuse it, and that answer is replayed like any other. A
    // number canonical JSON would change is refused here instead: the service
    // may well take it, and two such numbers would share one fingerprint.
    let canonical = match is_json(parts).then(|| canonical_json::canonicalize(body, &route.ignore_fields)) {
        Some(Err(CanonicalJsonError::InexactNumber { pointer })) => return Err(Problem::JsonNumberInexact { pointer }),
        Some(Ok(canonical)) => Some(canonical),
        Some(Err(_)) | None => None,
    };
    match canonical {
        Some(canonical) => {
            digest.update(b"json\n");
            digest.update(Sha256::digest(&canonical));
        }
        // The same bytes as text/csv and as application/octet-stream are
        // different requests to the service.
        None => {
            digest.update(b"raw\n");
            for value in parts.headers.get_all(http::header::CONTENT_TYPE) {
                digest.update(value.as_bytes());
                digest.update(b"\n");
            }
            digest.update(Sha256::digest(body));
        }
    }
    Ok(digest.finalize().into())
}

/// `application/json` or any `+json` type.
fn is_json(parts: &Parts) -> bool {
    let Some(content_type) = parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::config::parse_routes;
    use http::Method;

    fn route(extra: &str) -> std::sync::Arc<Route> {
        let text = format!(
            "[[route]]\nname = \"r\"\nmethods = [\"POST\"]\npath = \"/orders\"\nnamespace = \"orders\"\nidentity = \"none\"\n{extra}"
        );
        parse_routes(&text).expect("valid").find(&Method::POST, "/orders").expect("matches")
    }

    fn fingerprint(uri: &str, headers: &[(&str, &str)], body: &str, route: &Route) -> Fingerprint {
        let mut request = http::Request::post(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (parts, ()) = request.body(()).expect("a request").into_parts();
        of_request(&parts, body.as_bytes(), route).expect("a body the gateway fingerprints")
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[test]
    fn json_bodies_compare_by_content_without_ignored_fields() {
        let route = route("ignore_fields = [\"/sent_at\"]");
        let a = fingerprint("/orders", &[JSON], r#"{"cart":[1,2],"sent_at":"09:00"}"#, &route);
        let b = fingerprint("/orders", &[JSON], r#"{ "sent_at": "09:05", "cart": [1, 2] }"#, &route);
        let c = fingerprint("/orders", &[JSON], r#"{"cart":[1,3],"sent_at":"09:00"}"#, &route);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_number_canonical_json_would_change_is_refused_naming_it() {
        let route = route("ignore_fields = [\"/sent_at\"]");
        let (parts, ()) =
            http::Request::post("/orders").header(JSON.0, JSON.1).body(()).expect("a request").into_parts();
        for (body, pointer) in [
            (r#"{"account_id":1234567890123456789}"#, "/account_id"),
            (r#"{"cart":[1,0.10000000000000000001]}"#, "/cart/1"),
            (r#"{"sent_at":1234567890123456789}"#, "/sent_at"),
        ] {
            assert_eq!(
                of_request(&parts, body.as_bytes(), &route),
                Err(Problem::JsonNumberInexact { pointer: pointer.into() }),
                "{body}"
            );
        }
        // Not JSON by its content type: the bytes count as sent.
        let text = ("content-type", "text/plain");
        let digits = r#"{"account_id":1234567890123456789}"#;
        assert_ne!(
            fingerprint("/orders", &[text], digits, &route),
            fingerprint("/orders", &[text], r#"{"account_id":1234567890123456788}"#, &route)
        );
    }

    #[test]
    fn other_bodies_compare_byte_for_byte() {
        let route = route("");
        let text = ("content-type", "text/plain");
        assert_ne!(fingerprint("/orders", &[text], "a b", &route), fingerprint("/orders", &[text], "a  b", &route));
        // The same bytes as JSON and as text are different requests.
        assert_ne!(fingerprint("/orders", &[JSON], "{}", &route), fingerprint("/orders", &[text], "{}", &route));
        // And under two non-JSON types (issue 27, item 6: they fingerprinted alike).
        let csv = ("content-type", "text/csv");
        assert_ne!(fingerprint("/orders", &[csv], "a,b", &route), fingerprint("/orders", &[text], "a,b", &route));
        assert_ne!(fingerprint("/orders", &[csv], "a,b", &route), fingerprint("/orders", &[], "a,b", &route));
    }

    #[test]
    fn method_path_query_and_chosen_headers_count_other_headers_do_not() {
        let route = route("fingerprint_headers = [\"X-Account\"]");
        let base = fingerprint("/orders?a=1", &[("x-account", "7")], "", &route);
        assert_eq!(base, fingerprint("/orders?a=1", &[("x-account", "7"), ("user-agent", "curl")], "", &route));
        assert_ne!(base, fingerprint("/orders?a=2", &[("x-account", "7")], "", &route));
        assert_ne!(base, fingerprint("/orders/?a=1", &[("x-account", "7")], "", &route));
        assert_ne!(base, fingerprint("/orders?a=1", &[("x-account", "8")], "", &route));
        assert_ne!(base, fingerprint("/orders?a=1", &[], "", &route));
    }
}
