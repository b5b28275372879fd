//! Load shedding: a global limit on coordinator calls in flight. A call over
//! the limit is refused at once with RESOURCE_EXHAUSTED and RetryInfo, before
//! its request body is even decoded, so that memory stays bounded however many
//! callers pile on and the calls already admitted keep their latency. Health
//! checks are never shed: a probe failing from load would restart a pod that
//! is merely busy.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tonic::body::Body;
use tower_service::Service;

use crate::core::error::Error;
use crate::grpc::middleware::{Around, ResponseFuture};

/// The path prefix of the gRPC health service.
pub const HEALTH_PATH: &str = "/grpc.health.v1.Health/";

#[derive(Clone)]
pub struct ShedLoad {
    permits: Arc<Semaphore>,
}

impl ShedLoad {
    pub fn new(max_in_flight: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(max_in_flight)) }
    }
}

impl Around for ShedLoad {
    fn call<S, B>(&self, inner: &mut S, request: http::Request<B>) -> ResponseFuture<S::Error>
    where
        S: Service<http::Request<B>, Response = http::Response<Body>>,
        S::Future: Send + 'static,
    {
        if request.uri().path().starts_with(HEALTH_PATH) {
            return Box::pin(inner.call(request));
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let response = inner.call(request);
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
