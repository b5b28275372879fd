//! Reading bodies with a limit: a request body whole or not at all (413), an
//! upstream's response body whole when it fits the store, or else what was
//! read so far chained to the rest, so the client still gets all of it.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::{BodyExt, BodyStream, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio_stream::StreamExt;

use crate::gateway::body_timeouts;

/// Why a request body was not read.
#[derive(Debug)]
pub enum RequestBodyError {
    TooLarge,
    /// The client was too slow (`body_timeouts`).
    TimedOut(String),
    Unreadable(String),
}

/// The body length a request declares in Content-Length, if it does.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
}

/// The whole request body, refused early when Content-Length is over the limit.
pub async fn read_request(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, RequestBodyError> {
    if declared_length(headers).is_some_and(|length| length > limit as u64) {
        return Err(RequestBodyError::TooLarge);
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(RequestBodyError::TooLarge),
        Err(error) => match body_timeouts::timed_out(error.as_ref()) {
            Some(slow) => Err(RequestBodyError::TimedOut(slow.to_string())),
            None => Err(RequestBodyError::Unreadable(error.to_string())),
        },
    }
}

/// An upstream response body, read up to a limit.
pub enum ResponseBody {
    /// All of it.
    Whole(Bytes),
    /// Over the limit: the client still gets every byte, but it cannot be stored.
    TooLarge(Body),
}

/// Reads `body` up to `limit` bytes; an error means the upstream broke off.
pub async fn read_response(mut body: Incoming, limit: usize) -> Result<ResponseBody, hyper::Error> {
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        // Trailers are not stored or replayed; a service that needs them is not one to put behind this gateway.
        let Ok(data) = frame?.into_data() else { continue };
        read.extend_from_slice(&data);
        if read.len() > limit {
            let first = tokio_stream::once(Ok::<_, hyper::Error>(Frame::data(read.freeze())));
            return Ok(ResponseBody::TooLarge(Body::new(StreamBody::new(first.chain(BodyStream::new(body))))));
        }
    }
    Ok(ResponseBody::Whole(read.freeze()))
}
