//! The service behind the gateway, reached over HTTP/1.1 with a pooled
//! client: requests keep their method, path, query, headers and body, minus
//! the hop-by-hop headers a proxy must not pass on (RFC 9110 §7.6.1). An
//! HTTP/2 request's `:authority` becomes its Host and its cookie fields one
//! `cookie` header (RFC 9113 §8.2.3, §8.3.1), and every message the gateway
//! passes on either way carries its `Via` (RFC 9110 §7.6.3).

use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why the upstream gave no answer.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection: the request was not sent.
    NotSent(String),
    /// Reset or broken off before a response head: the request may have reached the service.
    Unreachable(String),
    /// No response head within the route's timeout.
    TimedOut(Duration),
}

#[derive(Clone)]
pub struct Upstream {
    base: Uri,
    client: Client<HttpConnector, Body>,
}

impl Upstream {
    pub fn new(base: Uri) -> Upstream {
        // Nagle off, as on the connections the gateway accepts (shell::nodelay).
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Upstream { base, client: Client::builder(TokioExecutor::new()).build(connector) }
    }

    /// Sends `request` (its URI is the one the client sent) with `extra` headers set.
    pub async fn send(
        &self,
        mut request: Request<Body>,
        extra: Vec<(HeaderName, HeaderValue)>,
        timeout: Option<Duration>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        strip_hop_by_hop(request.headers_mut());
        let client_version = request.version();
        if !request.headers().contains_key(header::HOST)
            && let Some(authority) = request.uri().authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            request.headers_mut().insert(header::HOST, host);
        }
        join_cookies(request.headers_mut());
        append_via(request.headers_mut(), client_version);
        let mut uri = self.base.clone().into_parts();
        uri.path_and_query = request.uri().path_and_query().cloned();
        *request.uri_mut() = Uri::from_parts(uri).map_err(|e| UpstreamError::NotSent(e.to_string()))?;
        // HTTP/2 from the client is HTTP/1.1 to the service; the pooled client speaks the latter.
        *request.version_mut() = Version::HTTP_11;
        for (name, value) in extra {
            request.headers_mut().insert(name, value);
        }
        let sent = self.client.request(request);
        let answered = match timeout {
            Some(limit) => tokio::time::timeout(limit, sent).await.map_err(|_| UpstreamError::TimedOut(limit))?,
            None => sent.await,
        };
        let mut response = answered.map_err(|e| {
            if e.is_connect() {
                UpstreamError::NotSent(error_chain(&e))
            } else {
                UpstreamError::Unreachable(error_chain(&e))
            }
        })?;
        strip_hop_by_hop(response.headers_mut());
        let version = response.version();
        append_via(response.headers_mut(), version);
        // The client's connection has its own version: an HTTP/1.0 service
        // must not turn the gateway's answer into an HTTP/1.0 one.
        *response.version_mut() = Version::default();
        Ok(response)
    }
}

/// How the gateway names itself in `Via`.
pub const VIA_NAME: &str = "idempotency-gateway";

/// Adds this hop, received as `version`, to the message's `Via`.
fn append_via(headers: &mut HeaderMap, version: Version) {
    let protocol = match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    let hop = format!("{protocol} {VIA_NAME}");
    let earlier: Vec<&[u8]> = headers.get_all(header::VIA).iter().map(HeaderValue::as_bytes).collect();
    let mut value = earlier.join(&b", "[..]);
    if !value.is_empty() {
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(hop.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&value) {
        headers.insert(header::VIA, value);
    }
}

/// One `cookie` header from several, joined with "; " (RFC 9113 §8.2.3):
/// HTTP/2 clients may split cookies into fields an HTTP/1.1 service reads as one.
fn join_cookies(headers: &mut HeaderMap) {
    let cookies: Vec<&[u8]> = headers.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes).collect();
    if cookies.len() < 2 {
        return;
    }
    if let Ok(joined) = HeaderValue::from_bytes(&cookies.join(&b"; "[..])) {
        headers.insert(header::COOKIE, joined);
    }
}

/// Removes the headers that describe one connection, not the message, and
/// the ones named by its `Connection` header.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// The error with its causes: hyper's own message is often only "client error (Connect)".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert("idempotency-key", HeaderValue::from_static("\"k\""));
        strip_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["idempotency-key"]);
    }

    #[test]
    fn via_names_this_hop_after_earlier_ones_and_cookies_become_one_field() {
        let mut headers = HeaderMap::new();
        append_via(&mut headers, Version::HTTP_2);
        assert_eq!(headers[header::VIA], "2 idempotency-gateway");
        let mut headers = HeaderMap::new();
        headers.insert(header::VIA, HeaderValue::from_static("1.1 edge"));
        append_via(&mut headers, Version::HTTP_11);
        assert_eq!(headers[header::VIA], "1.1 edge, 1.1 idempotency-gateway");
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut headers);
        let cookies: Vec<_> = headers.get_all(header::COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1; b=2"]);
    }
}
