//! A response as the gateway stores it for replay: the `message/http` media
//! type (RFC 9112 §10.1) — status line, the headers that matter on replay, a
//! blank line, the body — so any caller can read it back with an HTTP parser.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// The `content_type` of a stored response in the coordinator's result.
pub const MEDIA_TYPE: &str = "message/http";

/// Most headers a stored response may carry; a stored response with more is
/// not one this gateway wrote.
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl StoredResponse {
    /// `status`, the headers of `all_headers` named in `keep`, and `body`.
    pub fn keep(status: StatusCode, all_headers: &HeaderMap, keep: &[HeaderName], body: Bytes) -> StoredResponse {
        let mut headers = HeaderMap::new();
        for name in keep {
            for value in all_headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        StoredResponse { status, headers, body }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 256);
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(data: &[u8]) -> Result<StoredResponse, String> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut slots);
        let head = match parsed.parse(data) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Err("the stored response ends inside its head".into()),
            Err(e) => return Err(format!("the stored response is not message/http: {e}")),
        };
        let status = parsed
            .code
            .and_then(|code| StatusCode::from_u16(code).ok())
            .ok_or("the stored response has no valid status")?;
        let mut headers = HeaderMap::new();
        for header in parsed.headers.iter() {
            let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|e| e.to_string())?;
            headers.append(name, HeaderValue::from_bytes(header.value).map_err(|e| e.to_string())?);
        }
        Ok(StoredResponse { status, headers, body: Bytes::copy_from_slice(&data[head..]) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_response_round_trips_with_only_the_kept_headers() {
        let mut all = HeaderMap::new();
        all.insert("location", HeaderValue::from_static("/orders/7"));
        all.insert("content-type", HeaderValue::from_static("application/json"));
        all.insert("set-cookie", HeaderValue::from_static("session=secret"));
        let keep = [HeaderName::from_static("content-type"), HeaderName::from_static("location")];
        let body = Bytes::from_static(b"{\"id\":7}\r\n\r\nbinary \x00 tail");
        let stored = StoredResponse::keep(StatusCode::CREATED, &all, &keep, body.clone());
        let encoded = stored.encode();
        assert!(encoded.starts_with(b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n"));
        let decoded = StoredResponse::decode(&encoded).expect("round trip");
        assert_eq!(decoded, stored);
        assert_eq!(decoded.body, body);
        assert!(decoded.headers.get("set-cookie").is_none(), "only the kept headers are stored");
    }

    #[test]
    fn something_else_is_an_error_not_a_guess() {
        assert!(StoredResponse::decode(b"{\"id\":7}").is_err());
        assert!(StoredResponse::decode(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n").is_err());
    }
}
