//! Load shedding: a global limit on coordinator calls in flight. A call over
//! the limit is refused at once with RESOURCE_EXHAUSTED and RetryInfo, before
//! its request body is even decoded, so that memory stays bounded however many
//! callers pile on and the calls already admitted keep their latency. Health
//! checks are never shed: a probe failing from load would restart a pod that
//! is merely busy.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::Error;

/// The path prefix of the gRPC health service.
const HEALTH_PATH: &str = "/grpc.health.v1.Health/";

#[derive(Clone)]
pub struct ShedLoadLayer {
    permits: Arc<Semaphore>,
}

impl ShedLoadLayer {
    pub fn new(max_in_flight: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(max_in_flight)) }
    }
}

impl<S> Layer<S> for ShedLoadLayer {
    type Service = ShedLoad<S>;

    fn layer(&self, inner: S) -> ShedLoad<S> {
        ShedLoad { inner, permits: self.permits.clone() }
    }
}

#[derive(Clone)]
pub struct ShedLoad<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody> Service<http::Request<ReqBody>> for ShedLoad<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if request.uri().path().starts_with(HEALTH_PATH) {
            return Box::pin(self.inner.call(request));
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    // Held until the handler has answered.
                    let answer = response.await;
                    drop(permit);
                    answer
                })
            }
            Err(_) => {
                tracing::debug!(path = request.uri().path(), "shedding a call: too many in flight");
                let refusal = tonic::Status::from(Error::Overloaded).into_http();
                Box::pin(async move { Ok(refusal) })
            }
        }
    }
}
