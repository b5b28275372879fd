//! The protected routes and which one, if any, a request falls under: per method, a path router
//! (`/orders/{id}`, `/files/{*rest}`; see the `matchit` crate) over paths
//! in the form [`request_path::for_matching`] gives (lower case, no
//! trailing slash). Two routes that could match one request are refused,
//! also where `matchit` would prefer the static one (`/payments/refunds`
//! under `/payments/{id}`): which protection applies must not depend on
//! route priority rules.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method, StatusCode};
use serde::Deserialize;

use crate::gateway::identity::IdentitySource;
use crate::gateway::request_path;

/// Whether a matching request must carry an `Idempotency-Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRule {
    /// Without a key: 400.
    Required,
    /// Without a key: forwarded unprotected, as the client chose.
    Optional,
}

/// One protected route, as checked.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub namespace: String,
    /// Whose records a key names: the route's namespace is scoped by it.
    pub identity: IdentitySource,
    pub key: KeyRule,
    pub lease_ttl: Duration,
    /// Hold a retry while the first request runs, up to this long, instead of answering 409.
    pub wait: Option<Duration>,
    pub retention: Option<Duration>,
    /// Request headers that are part of the fingerprint, lower case, in a fixed order.
    pub fingerprint_headers: Vec<HeaderName>,
    /// JSON Pointers left out of a JSON body's fingerprint.
    pub ignore_fields: Vec<String>,
    /// Response headers stored and replayed: Content-Type, Content-Encoding, Location, ETag and the configured ones.
    pub replay_headers: Vec<HeaderName>,
    /// 4xx answers that release the key for another try instead of being stored.
    pub retryable_4xx: Vec<StatusCode>,
    /// Forward requests unprotected while the coordinator is unavailable (counted and logged).
    pub fail_open: bool,
    pub upstream_timeout: Duration,
    pub max_request_bytes: usize,
    pub max_stored_response_bytes: usize,
    /// The header that carries the fencing token to the upstream.
    pub fencing_token_header: HeaderName,
    /// The header that says `true` upstream when an attempt took over an unfinished one.
    pub recovered_header: HeaderName,
}

/// The header the fencing token goes upstream in unless a route names another.
pub const DEFAULT_FENCING_TOKEN_HEADER: &str = "idempotency-fencing-token";

/// The header that marks a recovered attempt unless a route names another.
pub const DEFAULT_RECOVERED_HEADER: &str = "idempotency-recovered";

#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    by_method: HashMap<Method, matchit::Router<Arc<Route>>>,
    listed: Vec<(Vec<Method>, String, Arc<Route>)>,
}

/// One segment of a route's path pattern.
#[derive(Debug, PartialEq)]
enum Segment<'a> {
    Static(&'a str),
    /// `{id}` (or a segment with a parameter in it): any one segment.
    Parameter,
    /// `{*rest}`: one or more segments.
    CatchAll,
}

fn segments(pattern: &str) -> Vec<Segment<'_>> {
    fn parse(segment: &str) -> Segment<'_> {
        match segment {
            s if s.starts_with("{*") => Segment::CatchAll,
            s if s.contains('{') => Segment::Parameter,
            s => Segment::Static(s),
        }
    }
    pattern.split('/').skip(1).filter(|s| !s.is_empty()).map(parse).collect()
}

/// Whether some path matches both patterns.
fn overlap(a: &[Segment<'_>], b: &[Segment<'_>]) -> bool {
    match (a.first(), b.first()) {
        (None, None) => true,
        (Some(Segment::CatchAll), Some(_)) | (Some(_), Some(Segment::CatchAll)) => true,
        (None, _) | (_, None) => false,
        (Some(x), Some(y)) => {
            let one = match (x, y) {
                (Segment::Static(x), Segment::Static(y)) => x == y,
                _ => true,
            };
            one && overlap(&a[1..], &b[1..])
        }
    }
}

impl RouteTable {
    /// Adds `route` for each of `methods` at `path`; two routes that could
    /// match the same request are refused.
    pub fn add(&mut self, methods: &[Method], path: &str, route: Route) -> Result<(), String> {
        if !path.starts_with('/') {
            return Err(format!("path {path:?} must start with /"));
        }
        if let Some(why) = request_path::ambiguity(path) {
            return Err(format!("path {path:?} has {why}; requests with such paths are refused"));
        }
        let pattern = request_path::for_matching(path).map_err(|why| format!("path {path:?}: {why}"))?;
        for (others, other_path, other) in &self.listed {
            let shared = methods.iter().find(|m| others.contains(m));
            let other_pattern = request_path::for_matching(other_path).unwrap_or_default();
            if let Some(method) = shared
                && overlap(&segments(&pattern), &segments(&other_pattern))
            {
                return Err(format!(
                    "{method} {path} conflicts with route {:?} ({other_path}): one request could match both \
                     (paths match ignoring case and one trailing slash)",
                    other.name
                ));
            }
        }
        let route = Arc::new(route);
        for method in methods {
            self.by_method
                .entry(method.clone())
                .or_default()
                .insert(&pattern, route.clone())
                .map_err(|e| format!("{method} {path}: {e}"))?;
        }
        self.listed.push((methods.to_vec(), path.to_owned(), route));
        Ok(())
    }

    /// Each route's name, methods, path and namespace, in the file's order.
    pub fn summary(&self) -> Vec<serde_json::Value> {
        let describe = |(methods, path, route): &(Vec<Method>, String, Arc<Route>)| {
            let methods: Vec<&str> = methods.iter().map(Method::as_str).collect();
            let identity = match &route.identity {
                IdentitySource::Authorization => "authorization".to_owned(),
                IdentitySource::Header(name) => format!("header:{name}"),
                IdentitySource::None => "none".to_owned(),
            };
            serde_json::json!({
                "name": route.name, "methods": methods, "path": path,
                "namespace": route.namespace, "identity": identity,
            })
        };
        self.listed.iter().map(describe).collect()
    }

    /// Removes every header any route carries the fencing token or the
    /// recovered mark in, and the default ones: a client must never choose
    /// the token the service sees (issue 27: a spoofed 18446744073709551615
    /// pushes a ledger's highest token beyond every real one), nor tell it
    /// to reconcile, whether or not its request is protected.
    /// Names compare with `_` as `-` too: servers in the CGI tradition
    /// (PHP-FPM, some WSGI servers) read `Idempotency_Fencing_Token` as the
    /// same header.
    pub fn strip_edge_headers(&self, headers: &mut http::HeaderMap) {
        let guarded = |name: &str| {
            let name = name.replace('_', "-");
            name == DEFAULT_FENCING_TOKEN_HEADER
                || name == DEFAULT_RECOVERED_HEADER
                || self.listed.iter().any(|(_, _, route)| {
                    name == route.fencing_token_header.as_str() || name == route.recovered_header.as_str()
                })
        };
        let spoofed: Vec<http::HeaderName> = headers.keys().filter(|name| guarded(name.as_str())).cloned().collect();
        for name in spoofed {
            headers.remove(name);
        }
    }

    /// The routes that scope nothing by caller (`identity = "none"`), by name.
    pub fn unscoped(&self) -> impl Iterator<Item = &str> {
        self.listed.iter().filter(|(_, _, r)| r.identity == IdentitySource::None).map(|(_, _, r)| r.name.as_str())
    }

    /// The route `method` and `path` fall under; `path` as [`request_path::for_matching`] gives it.
    pub fn find(&self, method: &Method, path: &str) -> Option<Arc<Route>> {
        let router = self.by_method.get(method)?;
        router.at(path).ok().map(|found| found.value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlapping(a: &str, b: &str) -> bool {
        overlap(&segments(a), &segments(b))
    }

    #[test]
    fn a_static_path_under_a_pattern_overlaps_it() {
        assert!(overlapping("/payments/refunds", "/payments/{id}"));
        assert!(overlapping("/files/{*rest}", "/files/a/b"));
        assert!(overlapping("/{a}/x", "/y/{b}"));
        assert!(!overlapping("/payments", "/payments/{id}"));
        assert!(!overlapping("/payments/{id}/refunds", "/payments/{id}/captures"));
        assert!(!overlapping("/files", "/files/{*rest}"));
    }
}
