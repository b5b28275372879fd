//! The protected routes and which one, if any, a request falls under: per method, a path router
//! (`/orders/{id}`, `/files/{*rest}`; see the `matchit` crate).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method, StatusCode};
use serde::Deserialize;

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
}

/// The header the fencing token goes upstream in unless a route names another.
pub const DEFAULT_FENCING_TOKEN_HEADER: &str = "idempotency-fencing-token";

#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    by_method: HashMap<Method, matchit::Router<Arc<Route>>>,
    listed: Vec<(Vec<Method>, String, Arc<Route>)>,
}

impl RouteTable {
    /// Adds `route` for each of `methods` at `path`; two routes that could
    /// match the same request are refused.
    pub fn add(&mut self, methods: &[Method], path: &str, route: Route) -> Result<(), String> {
        if !path.starts_with('/') {
            return Err(format!("path {path:?} must start with /"));
        }
        let route = Arc::new(route);
        for method in methods {
            self.by_method
                .entry(method.clone())
                .or_default()
                .insert(path, route.clone())
                .map_err(|e| format!("{method} {path}: {e}"))?;
        }
        self.listed.push((methods.to_vec(), path.to_owned(), route));
        Ok(())
    }

    /// Each route's name, methods, path and namespace, in the file's order.
    pub fn summary(&self) -> Vec<serde_json::Value> {
        let describe = |(methods, path, route): &(Vec<Method>, String, Arc<Route>)| {
            let methods: Vec<&str> = methods.iter().map(Method::as_str).collect();
            serde_json::json!({ "name": route.name, "methods": methods, "path": path, "namespace": route.namespace })
        };
        self.listed.iter().map(describe).collect()
    }

    /// Removes every header any route carries the fencing token in, and the
    /// default one: a client must never choose the token the service sees
    /// (issue 27: a spoofed 18446744073709551615 pushes a ledger's highest
    /// token beyond every real one), whether or not its request is protected.
    pub fn strip_fencing_tokens(&self, headers: &mut http::HeaderMap) {
        headers.remove(DEFAULT_FENCING_TOKEN_HEADER);
        for (_, _, route) in &self.listed {
            headers.remove(&route.fencing_token_header);
        }
    }

    /// The route `method` and `path` fall under.
    pub fn find(&self, method: &Method, path: &str) -> Option<Arc<Route>> {
        let router = self.by_method.get(method)?;
        router.at(path).ok().map(|found| found.value.clone())
    }
}
