//! The gRPC edge: handlers ([`service`], and [`admin`] for operators) over validation ([`request`]),
//! tenant scoping ([`tenant`]), call metadata ([`metadata`]) and the one
//! error-to-status table ([`status`]); the codec ([`codec`]) and the tower
//! layers around every call ([`middleware`]: [`trace_context`],
//! [`grpc_metrics`], [`overload`], [`oversize`]).

pub mod admin;
pub mod codec;
pub mod grpc_metrics;
pub mod metadata;
pub mod middleware;
pub mod overload;
pub mod oversize;
pub mod request;
pub mod request_bytes;
pub mod service;
pub mod status;
pub mod tenant;
pub mod trace_context;
