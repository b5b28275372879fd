//! gRPC server reflection in both versions tools speak: v1, and v1alpha,
//! which grpcurl and many other clients still use. Besides this service's own
//! protos it serves health's and the `google.rpc` error details', so that a
//! tool can decode an error's ErrorInfo, BadRequest and RetryInfo without
//! proto files.

use tonic_reflection::server::{Builder, Error};

use crate::proto::FILE_DESCRIPTOR_SET;

/// The descriptors every reflection version serves: both reflection
/// services' own too, so that each lists both.
fn configured() -> Builder<'static> {
    Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// The v1 and v1alpha reflection services.
#[allow(clippy::type_complexity)] // the two generated server types, named once here
pub fn services() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    Error,
> {
    Ok((configured().build_v1()?, configured().build_v1alpha()?))
}
