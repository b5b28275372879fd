//! Gateway settings: the `gateway` flags (each also an `IDEMPOTENCY_GATEWAY_*`
//! environment variable) and the routes file, checked once at startup into a
//! [`GatewayConfig`]. The coordinator's address, TLS and bearer token are the
//! command-line client's flags ([`crate::cli::ClientArgs`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use http::{HeaderName, Method, StatusCode, Uri};
use serde::Deserialize;

use crate::core::canonical_json;
use crate::core::limits::{MAX_SCOPE_BYTES, MIN_LEASE_TTL, check_scope_name};
use crate::gateway::identity::{self, IdentitySource};
use crate::gateway::routes::{KeyRule, Route, RouteTable};
use crate::shell::config::LogFormat;

/// The `gateway` flags, as parsed.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Address the HTTP/1.1 and HTTP/2 (cleartext) proxy listens on.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,

    /// The service behind the gateway, as http://host:port.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_UPSTREAM", default_value = "http://127.0.0.1:8080")]
    pub upstream: String,

    /// TOML file of the routes the gateway protects (see README, "HTTP gateway").
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_ROUTES")]
    pub routes: PathBuf,

    /// Plain-HTTP port for GET /metrics, /livez and /readyz.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_ADMIN_LISTEN", default_value = "0.0.0.0:9102")]
    pub admin_listen: SocketAddr,

    /// Tenant of every record (ignored by a coordinator with authentication on).
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_TENANT", default_value = "")]
    pub tenant: String,

    /// Owner label of the attempts this gateway begins (the pod's name, on Kubernetes).
    #[arg(long, env = "HOSTNAME", default_value = "gateway")]
    pub owner: String,

    /// On SIGTERM, how long in-flight requests get to finish.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "25s")]
    pub shutdown_grace: Duration,

    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "IDEMPOTENCY_LOG", default_value = "info")]
    pub log: String,

    /// Log line format.
    #[arg(long, env = "IDEMPOTENCY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Most client connections open at once; more wait in the listen backlog.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_MAX_CONNECTIONS", default_value = "512")]
    pub max_connections: usize,

    /// Most request and response bytes buffered at once for protected routes; over it, 503 with Retry-After.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_MAX_BUFFERED_BYTES", default_value = "33554432")]
    pub max_buffered_bytes: usize,

    /// Time a connection gets for a request's headers, counted from when it opened or its last answer went out.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub header_read_timeout: Duration,

    /// Longest pause between two reads of a request body, or two writes of an answer the client does not take.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_BODY_IDLE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub body_idle_timeout: Duration,

    /// Time a request body gets to arrive whole.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_BODY_READ_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub body_read_timeout: Duration,

    /// Largest request head (request line and headers; HTTP/2: the header list).
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_MAX_HEADER_BYTES", default_value = "32768")]
    pub max_header_bytes: usize,

    /// Most concurrent HTTP/2 streams on one connection.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_HTTP2_MAX_STREAMS", default_value = "64")]
    pub http2_max_streams: u32,

    /// Check the flags and the routes file, print the ports and routes as JSON, and exit (binds nothing).
    #[arg(long)]
    pub check: bool,
}

/// What one client may hold of the gateway: connections, time, buffered
/// bytes (issue 27, item 3). See README, "Slow and hostile clients".
#[derive(Debug, Clone, PartialEq)]
pub struct ClientLimits {
    pub max_connections: usize,
    pub max_buffered_bytes: usize,
    pub header_read_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub http2_max_streams: u32,
}

impl Default for ClientLimits {
    /// The flags' defaults.
    fn default() -> ClientLimits {
        ClientLimits {
            max_connections: 512,
            max_buffered_bytes: 32 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            max_header_bytes: 32 * 1024,
            http2_max_streams: 64,
        }
    }
}

/// hyper's HTTP/1 read buffer cannot be smaller.
const MIN_HEADER_BYTES: usize = 8192;

/// Everything the gateway runs with, checked.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Scheme and authority of the upstream; requests keep their own path.
    pub upstream: Uri,
    pub routes: RouteTable,
    pub tenant: String,
    pub owner: String,
    pub shutdown_grace: Duration,
    pub limits: ClientLimits,
}

impl GatewayArgs {
    pub fn validate(&self) -> Result<GatewayConfig, String> {
        let text = std::fs::read_to_string(&self.routes)
            .map_err(|e| format!("--routes: cannot read {}: {e}", self.routes.display()))?;
        let routes = parse_routes(&text).map_err(|e| format!("--routes {}: {e}", self.routes.display()))?;
        let positive = |flag: &str, value: usize| {
            if value == 0 { Err(format!("--{flag} must be above 0")) } else { Ok(value) }
        };
        let timeout = |flag: &str, value: Duration| {
            if value.is_zero() { Err(format!("--{flag} must be above 0")) } else { Ok(value) }
        };
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(format!(
                "--max-header-bytes must be at least {MIN_HEADER_BYTES} (got {})",
                self.max_header_bytes
            ));
        }
        let limits = ClientLimits {
            max_connections: positive("max-connections", self.max_connections)?,
            max_buffered_bytes: positive("max-buffered-bytes", self.max_buffered_bytes)?,
            header_read_timeout: timeout("header-read-timeout", self.header_read_timeout)?,
            body_idle_timeout: timeout("body-idle-timeout", self.body_idle_timeout)?,
            body_read_timeout: timeout("body-read-timeout", self.body_read_timeout)?,
            max_header_bytes: self.max_header_bytes,
            http2_max_streams: positive("http2-max-streams", self.http2_max_streams as usize)? as u32,
        };
        Ok(GatewayConfig {
            listen: self.listen,
            admin_listen: self.admin_listen,
            upstream: parse_upstream(&self.upstream)?,
            routes,
            tenant: self.tenant.clone(),
            owner: self.owner.clone(),
            shutdown_grace: self.shutdown_grace,
            limits,
        })
    }
}

impl GatewayConfig {
    /// What `--check` prints: the ports, and each route's name and namespace.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "listen": self.listen.to_string(),
            "admin_listen": self.admin_listen.to_string(),
            "upstream": self.upstream.to_string(),
            "routes": self.routes.summary(),
        })
    }
}

fn parse_upstream(text: &str) -> Result<Uri, String> {
    let uri: Uri = text.parse().map_err(|e| format!("--upstream {text:?} is not a URI: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(format!("--upstream {text:?} must be http://host:port (a sidecar reaches its service in the pod)"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("--upstream {text:?} must have no path: requests keep their own"));
    }
    Ok(uri)
}

/// Headers every route stores and replays: what a client needs to read the
/// body (type, encoding) and what a create answers with (Location, ETag).
const ALWAYS_REPLAYED: [&str; 4] = ["content-type", "content-encoding", "location", "etag"];

/// The routes file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(rename = "route", default)]
    routes: Vec<RouteEntry>,
}

/// One `[[route]]` table; every field but the first five has a default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry {
    name: String,
    methods: Vec<String>,
    path: String,
    namespace: String,
    /// Required, with no default: checked by [`check_route`] to name the route.
    identity: Option<String>,
    #[serde(default = "required")]
    key: KeyRule,
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    lease_ttl: Duration,
    #[serde(default, with = "humantime_serde")]
    wait: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    retention: Option<Duration>,
    #[serde(default)]
    fingerprint_headers: Vec<String>,
    #[serde(default)]
    ignore_fields: Vec<String>,
    #[serde(default)]
    replay_headers: Vec<String>,
    #[serde(default)]
    retryable_4xx: Vec<u16>,
    #[serde(default)]
    fail_open: bool,
    #[serde(default = "sixty_seconds", with = "humantime_serde")]
    upstream_timeout: Duration,
    #[serde(default = "one_mebibyte")]
    max_request_bytes: usize,
    #[serde(default = "stored_response_default")]
    max_stored_response_bytes: usize,
    #[serde(default = "fencing_token_header")]
    fencing_token_header: String,
    #[serde(default = "recovered_header")]
    recovered_header: String,
}

fn required() -> KeyRule {
    KeyRule::Required
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}
fn one_mebibyte() -> usize {
    1024 * 1024
}
/// Below the coordinator's default result limit (256 KiB), leaving room for the stored status line and headers.
fn stored_response_default() -> usize {
    192 * 1024
}
fn fencing_token_header() -> String {
    crate::gateway::routes::DEFAULT_FENCING_TOKEN_HEADER.into()
}
fn recovered_header() -> String {
    crate::gateway::routes::DEFAULT_RECOVERED_HEADER.into()
}

/// Parses and checks a routes file.
pub fn parse_routes(text: &str) -> Result<RouteTable, String> {
    let file: RoutesFile = toml::from_str(text).map_err(|e| e.to_string())?;
    if file.routes.is_empty() {
        return Err("no [[route]] is configured; the gateway would protect nothing".into());
    }
    let mut table = RouteTable::default();
    for entry in file.routes {
        let name = entry.name.clone();
        let methods = entry
            .methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.as_bytes()).map_err(|_| format!("route {name:?}: {m:?} is not an HTTP method"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if methods.is_empty() {
            return Err(format!("route {name:?}: methods must name at least one method"));
        }
        let path = entry.path.clone();
        let route = check_route(entry).map_err(|e| format!("route {name:?}: {e}"))?;
        table.add(&methods, &path, route).map_err(|e| format!("route {name:?}: {e}"))?;
    }
    Ok(table)
}

fn check_route(entry: RouteEntry) -> Result<Route, String> {
    check_scope_name(&entry.namespace).map_err(|e| format!("namespace {}", e))?;
    let Some(identity) = &entry.identity else {
        return Err(
            "identity is required: \"authorization\", \"header:<Name>\" (e.g. a header a trusted auth proxy sets), \
                    or \"none\" to let every caller share this route's keys (see README, \"Caller identity\")"
                .into(),
        );
    };
    let identity = IdentitySource::parse(identity).map_err(|e| format!("identity: {e}"))?;
    if identity != IdentitySource::None && entry.namespace.len() + identity::SUFFIX_BYTES > MAX_SCOPE_BYTES {
        return Err(format!(
            "namespace is {} bytes; with the caller's {}-byte suffix it must fit the coordinator's {MAX_SCOPE_BYTES}-byte namespace limit, so at most {}",
            entry.namespace.len(),
            identity::SUFFIX_BYTES,
            MAX_SCOPE_BYTES - identity::SUFFIX_BYTES
        ));
    }
    if entry.lease_ttl < MIN_LEASE_TTL || entry.lease_ttl.subsec_nanos() != 0 {
        return Err(format!("lease_ttl must be whole seconds, at least {MIN_LEASE_TTL:?} (got {:?})", entry.lease_ttl));
    }
    // An empty object has every field missing, so only a malformed pointer fails here.
    canonical_json::canonicalize(b"{}", &entry.ignore_fields).map_err(|e| format!("ignore_fields: {e}"))?;
    let header = |field: &str, name: &String| {
        HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("{field}: {name:?} is not a header name"))
    };
    let mut fingerprint_headers =
        entry.fingerprint_headers.iter().map(|h| header("fingerprint_headers", h)).collect::<Result<Vec<_>, _>>()?;
    fingerprint_headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    fingerprint_headers.dedup();
    let mut replay_headers: Vec<HeaderName> = ALWAYS_REPLAYED.iter().map(|h| HeaderName::from_static(h)).collect();
    for name in &entry.replay_headers {
        let name = header("replay_headers", name)?;
        if !replay_headers.contains(&name) {
            replay_headers.push(name);
        }
    }
    let retryable_4xx = entry
        .retryable_4xx
        .iter()
        .map(|&code| match StatusCode::from_u16(code) {
            Ok(status) if status.is_client_error() => Ok(status),
            _ => Err(format!("retryable_4xx: {code} is not a 4xx status")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if entry.max_request_bytes == 0 || entry.max_stored_response_bytes == 0 {
        return Err("max_request_bytes and max_stored_response_bytes must be above 0".into());
    }
    Ok(Route {
        name: entry.name,
        namespace: entry.namespace,
        identity,
        key: entry.key,
        lease_ttl: entry.lease_ttl,
        wait: entry.wait,
        retention: entry.retention,
        fingerprint_headers,
        ignore_fields: entry.ignore_fields,
        replay_headers,
        retryable_4xx,
        fail_open: entry.fail_open,
        upstream_timeout: entry.upstream_timeout,
        max_request_bytes: entry.max_request_bytes,
        max_stored_response_bytes: entry.max_stored_response_bytes,
        fencing_token_header: header("fencing_token_header", &entry.fencing_token_header)?,
        recovered_header: header("recovered_header", &entry.recovered_header)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[route]]
        name = "create-payment"
        methods = ["POST"]
        path = "/payments"
        namespace = "payments.create"
        identity = "authorization"
    "#;

    #[test]
    fn a_minimal_route_gets_the_documented_defaults() {
        let table = parse_routes(MINIMAL).expect("valid");
        let route = table.find(&Method::POST, "/payments").expect("matches");
        assert_eq!(route.key, KeyRule::Required);
        assert_eq!(route.lease_ttl, Duration::from_secs(30));
        assert!(!route.fail_open);
        assert!(route.retryable_4xx.is_empty(), "every 4xx is final unless configured");
        assert_eq!(route.fencing_token_header, "idempotency-fencing-token");
        assert_eq!(route.recovered_header, "idempotency-recovered");
        assert_eq!(route.identity, IdentitySource::Authorization);
        let replayed: Vec<_> = route.replay_headers.iter().map(|h| h.as_str()).collect();
        assert_eq!(replayed, ALWAYS_REPLAYED);
    }

    #[test]
    fn mistakes_name_the_route_and_the_field() {
        let cases = [
            (MINIMAL.replace("payments.create", "payments/create"), "route \"create-payment\": namespace"),
            (format!("{MINIMAL}lease_ttl = \"1500ms\""), "lease_ttl must be whole seconds"),
            (format!("{MINIMAL}retryable_4xx = [500]"), "retryable_4xx: 500 is not a 4xx"),
            (format!("{MINIMAL}ignore_fields = [\"nope\"]"), "ignore_fields"),
            (format!("{MINIMAL}colour = \"red\""), "unknown field `colour`"),
            (MINIMAL.replace("[\"POST\"]", "[\"P O\"]"), "is not an HTTP method"),
            (format!("{MINIMAL}{MINIMAL}"), "conflict"),
            (MINIMAL.replace("identity = \"authorization\"", ""), "route \"create-payment\": identity is required"),
            (MINIMAL.replace("\"authorization\"", "\"cookie\""), "route \"create-payment\": identity: \"cookie\""),
            (MINIMAL.replace("payments.create", &"n".repeat(96)), "namespace is 96 bytes"),
            (MINIMAL.replace("\"/payments\"", "\"/a//b\""), "an empty segment"),
            (String::new(), "no [[route]]"),
        ];
        for (text, expected) in cases {
            let error = parse_routes(&text).expect_err(expected);
            assert!(error.contains(expected), "{error:?} should contain {expected:?}");
        }
    }

    /// Issue 27, item 6: the README said overlapping routes were refused;
    /// matchit took `/payments/refunds` under `/payments/{id}` silently.
    #[test]
    fn routes_that_could_match_one_request_are_refused_naming_both() {
        let route = |name: &str, path: &str| {
            format!(
                "[[route]]\nname = \"{name}\"\nmethods = [\"POST\"]\npath = \"{path}\"\nnamespace = \"n\"\nidentity = \"none\"\n"
            )
        };
        for (a, b) in
            [("/payments/{id}", "/payments/refunds"), ("/payments", "/Payments/"), ("/files/{*rest}", "/files/a/b")]
        {
            let error = parse_routes(&(route("first", a) + &route("second", b))).expect_err(b);
            assert!(error.contains("route \"second\"") && error.contains("\"first\""), "{error}");
        }
        let apart = route("first", "/payments/{id}/refunds") + &route("second", "/payments/{id}/captures");
        assert!(parse_routes(&apart).is_ok());
        // Another method is another request.
        let other_method =
            route("first", "/payments/{id}") + &route("second", "/payments/refunds").replace("POST", "PUT");
        assert!(parse_routes(&other_method).is_ok());
    }

    #[test]
    fn the_upstream_must_be_plain_http_without_a_path() {
        assert!(parse_upstream("http://127.0.0.1:8080").is_ok());
        assert!(parse_upstream("https://127.0.0.1:8080").is_err());
        assert!(parse_upstream("http://127.0.0.1:8080/api").is_err());
        assert!(parse_upstream("127.0.0.1:8080").is_err());
    }
}
