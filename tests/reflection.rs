//! Server reflection as tools use it: the v1alpha protocol (grpcurl's) lists
//! every service and resolves the `google.rpc` error details, and v1 still
//! answers.

mod common;

use common::*;
use tokio_stream::StreamExt;
use tonic_reflection::pb::{v1, v1alpha};

/// What the v1alpha service answers to one request.
async fn ask_v1alpha(
    server: &Server,
    request: v1alpha::server_reflection_request::MessageRequest,
) -> v1alpha::server_reflection_response::MessageResponse {
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1alpha::ServerReflectionRequest { host: String::new(), message_request: Some(request) };
    let mut answers = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    answers.next().await.expect("an answer").expect("not an error").message_response.expect("a response")
}

#[tokio::test]
async fn both_reflection_versions_list_every_service_and_resolve_error_details() {
    let (_etcd, server, _client) = start().await;
    use v1alpha::server_reflection_request::MessageRequest;
    use v1alpha::server_reflection_response::MessageResponse;

    let MessageResponse::ListServicesResponse(list) =
        ask_v1alpha(&server, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list")
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for wanted in [
        "idempotency.v1.CoordinatorService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }

    // The error details a failed call carries can be decoded from reflection alone.
    for symbol in ["google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RetryInfo"] {
        let answer = ask_v1alpha(&server, MessageRequest::FileContainingSymbol(symbol.into())).await;
        match answer {
            MessageResponse::FileDescriptorResponse(files) => {
                assert!(!files.file_descriptor_proto.is_empty(), "{symbol}")
            }
            other => panic!("{symbol}: {other:?}"),
        }
    }

    // v1 answers too.
    let mut v1_client = v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::FileContainingSymbol(
            "idempotency.v1.CoordinatorService".into(),
        )),
    };
    let mut answers = v1_client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let answer = answers.next().await.expect("an answer").expect("not an error").message_response;
    assert!(
        matches!(answer, Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(_))),
        "{answer:?}"
    );
}
