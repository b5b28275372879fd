//! Generates the gRPC and storage types from `proto/`, plus the descriptor set
//! that gRPC server reflection serves.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Undecodable requests are INVALID_ARGUMENT naming the field.
        .codec_path("crate::grpc::codec::RequestCodec")
        .file_descriptor_set_path(out_dir.join("idempotency_descriptor.bin"))
        .compile_protos(
            &[
                "proto/idempotency/v1/coordinator.proto",
                "proto/idempotency/v1/admin.proto",
                "proto/idempotency/storage/v1/record.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
