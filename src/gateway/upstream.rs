//! The service behind the gateway, reached over HTTP/1.1 with a pooled
//! client: requests keep their method, path, query, headers and body, minus
//! the hop-by-hop headers a proxy must not pass on (RFC 9110 §7.6.1).

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
    /// Refused, reset or broken off before a response head.
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

    /// Sends `request` (its URI is the one the client sent) with `extra` headers added.
    pub async fn send(
        &self,
        mut request: Request<Body>,
        extra: Option<(HeaderName, HeaderValue)>,
        timeout: Option<Duration>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut uri = self.base.clone().into_parts();
        uri.path_and_query = request.uri().path_and_query().cloned();
        *request.uri_mut() = Uri::from_parts(uri).map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        // HTTP/2 from the client is HTTP/1.1 to the service; the pooled client speaks the latter.
        *request.version_mut() = Version::HTTP_11;
        strip_hop_by_hop(request.headers_mut());
        if let Some((name, value)) = extra {
            request.headers_mut().insert(name, value);
        }
        let sent = self.client.request(request);
        let answered = match timeout {
            Some(limit) => tokio::time::timeout(limit, sent).await.map_err(|_| UpstreamError::TimedOut(limit))?,
            None => sent.await,
        };
        let mut response = answered.map_err(|e| UpstreamError::Unreachable(error_chain(&e)))?;
        // The client's connection has its own version: an HTTP/1.0 service
        // must not turn the gateway's answer into an HTTP/1.0 one.
        *response.version_mut() = Version::default();
        strip_hop_by_hop(response.headers_mut());
        Ok(response)
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
}
