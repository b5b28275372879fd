//! A bound on the bytes of coordinator requests held at once. `--max-in-flight`
//! bounds how many calls are admitted, but each may carry up to
//! `--max-message-bytes`, buffered while it arrives and then decoded: 4096
//! calls of 4 MiB would need 16 GiB. Every frame of a request body takes its
//! bytes (twice: buffered, then decoded) from one budget and gives them back
//! when the call has answered; a
//! frame the budget cannot take fails its call with RESOURCE_EXHAUSTED and
//! RetryInfo, like any shed call. Health checks are never counted.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::core::error::Error;
use crate::grpc::middleware::ResponseFuture;
use crate::grpc::overload::HEALTH_PATH;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bytes one call holds, given back when the last holder drops.
type Held = Arc<Mutex<Option<OwnedSemaphorePermit>>>;

#[derive(Clone)]
pub struct RequestBytesLayer {
    budget: Arc<Semaphore>,
}

impl RequestBytesLayer {
    pub fn new(max_bytes: usize) -> Self {
        Self { budget: Arc::new(Semaphore::new(max_bytes.min(Semaphore::MAX_PERMITS))) }
    }
}

impl<S> Layer<S> for RequestBytesLayer {
    type Service = RequestBytes<S>;

    fn layer(&self, inner: S) -> RequestBytes<S> {
        RequestBytes { budget: self.budget.clone(), inner }
    }
}

#[derive(Clone)]
pub struct RequestBytes<S> {
    budget: Arc<Semaphore>,
    inner: S,
}

impl<S, B> Service<http::Request<B>> for RequestBytes<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path().starts_with(HEALTH_PATH) {
            return Box::pin(self.inner.call(request.map(Body::new)));
        }
        let held: Held = Arc::default();
        let budget = self.budget.clone();
        let counted = held.clone();
        let response = self.inner.call(request.map(|inner| Body::new(Counted { inner, budget, held: counted })));
        Box::pin(async move {
            let answer = response.await;
            // The decoded request lived until the handler answered.
            drop(held);
            answer
        })
    }
}

pin_project_lite::pin_project! {
    /// A request body whose frames take their bytes from the budget.
    struct Counted<B> {
        #[pin]
        inner: B,
        budget: Arc<Semaphore>,
        held: Held,
    }
}

impl<B> http_body::Body for Counted<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            // Twice: the bytes are buffered, then decoded into a message of
            // about their size, and both live until the call answers.
            let bytes = u32::try_from(2 * data.len()).unwrap_or(u32::MAX);
            match this.budget.clone().try_acquire_many_owned(bytes) {
                Ok(permit) => {
                    let mut held = this.held.lock().expect("held bytes lock poisoned");
                    match held.as_mut() {
                        Some(all) => all.merge(permit),
                        None => *held = Some(permit),
                    }
                }
                Err(_) => {
                    tracing::debug!(bytes, "refusing a request: too many request bytes held");
                    return Poll::Ready(Some(Err(Box::new(tonic::Status::from(Error::Overloaded)))));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
