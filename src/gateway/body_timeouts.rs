//! A request body that must keep arriving (issue 27, item 3): each read
//! within an idle timeout, the whole body within a total one. Without
//! them a client that sends a partial body (or a partial chunk) held the
//! gateway's buffer and its connection for as long as it liked.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Why a request body stopped: the client was too slow.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyTimedOut {
    #[error("no part of the request body arrived for {0:?}")]
    Idle(Duration),
    #[error("the request body did not arrive whole within {0:?}")]
    Total(Duration),
}

/// `inner`, failing with [`BodyTimedOut`] once a read waits longer than
/// `idle` or the body takes longer than `total` from when it was wrapped.
pub struct TimedBody {
    inner: Body,
    idle: Duration,
    total: Duration,
    /// Reset by each frame; started at the first read, so time the gateway
    /// itself spends before reading (waiting for the upstream) is not the client's.
    idle_deadline: Option<Pin<Box<Sleep>>>,
    total_deadline: Pin<Box<Sleep>>,
}

impl TimedBody {
    pub fn new(inner: Body, idle: Duration, total: Duration) -> TimedBody {
        TimedBody { inner, idle, total, idle_deadline: None, total_deadline: Box::pin(tokio::time::sleep(total)) }
    }
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(deadline) = &mut this.idle_deadline {
                deadline.as_mut().reset(Instant::now() + this.idle);
            }
            return Poll::Ready(frame);
        }
        if this.total_deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut::Total(this.total)))));
        }
        let idle = this.idle;
        let deadline = this.idle_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut::Idle(idle)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The [`BodyTimedOut`] behind a body error, if that is what it was.
pub fn timed_out<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyTimedOut> {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(found) = error.downcast_ref::<BodyTimedOut>() {
            return Some(found);
        }
        source = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn stalled_after(first: &'static [u8]) -> Body {
        let stream = tokio_stream::StreamExt::chain(
            tokio_stream::once(Ok::<_, std::io::Error>(Bytes::from_static(first))),
            tokio_stream::pending(),
        );
        Body::from_stream(stream)
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_fails_after_the_idle_timeout() {
        let body = TimedBody::new(stalled_after(b"{\"amount\":"), Duration::from_secs(2), Duration::from_secs(60));
        let error = body.collect().await.expect_err("it stalls");
        assert_eq!(timed_out(&error), Some(&BodyTimedOut::Idle(Duration::from_secs(2))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_trickles_fails_after_the_total_timeout() {
        let trickle = tokio_stream::StreamExt::throttle(
            tokio_stream::iter((0..1000).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(b"x")))),
            Duration::from_secs(1),
        );
        let body = TimedBody::new(Body::from_stream(trickle), Duration::from_secs(2), Duration::from_secs(10));
        let started = Instant::now();
        let error = body.collect().await.expect_err("it trickles");
        assert_eq!(timed_out(&error), Some(&BodyTimedOut::Total(Duration::from_secs(10))));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_arrives_is_passed_on_whole() {
        let body = TimedBody::new(Body::from("{}"), Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(body.collect().await.expect("whole").to_bytes(), Bytes::from_static(b"{}"));
    }
}
