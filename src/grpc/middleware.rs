//! The one piece of tower plumbing the HTTP-level steps around every gRPC
//! call share ([`crate::grpc::grpc_metrics`], [`crate::grpc::overload`],
//! [`crate::grpc::oversize`]): each says only what it does with a request and the
//! service behind it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tower_layer::Layer;
use tower_service::Service;

pub type ResponseFuture<E> = Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>>;

/// A step around each call: handle `request`, calling `inner` or not.
pub trait Around: Clone {
    fn call<S, B>(&self, inner: &mut S, request: http::Request<B>) -> ResponseFuture<S::Error>
    where
        S: Service<http::Request<B>, Response = http::Response<Body>>,
        S::Future: Send + 'static;
}

/// Makes an [`Around`] a tower layer.
#[derive(Clone)]
pub struct AroundLayer<A>(pub A);

impl<A: Clone, S> Layer<S> for AroundLayer<A> {
    type Service = Wrapped<A, S>;

    fn layer(&self, inner: S) -> Wrapped<A, S> {
        Wrapped { around: self.0.clone(), inner }
    }
}

#[derive(Clone)]
pub struct Wrapped<A, S> {
    around: A,
    inner: S,
}

impl<A, S, B> Service<http::Request<B>> for Wrapped<A, S>
where
    A: Around,
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.around.call(&mut self.inner, request)
    }
}
