//! Code generated from `proto/` by `build.rs`, and [`convert`]: between its
//! messages and the core's types, for the gRPC edge and the stored format
//! alike. Module paths mirror the proto packages so that cross-package
//! references resolve.

pub mod convert;

#[allow(clippy::all, missing_docs)]
pub mod idempotency {
    /// The public gRPC contract, package `idempotency.v1`.
    pub mod v1 {
        tonic::include_proto!("idempotency.v1");
    }

    /// How records are laid out in etcd, package `idempotency.storage.v1`.
    pub mod storage {
        pub mod v1 {
            tonic::include_proto!("idempotency.storage.v1");
        }
    }
}

pub use idempotency::storage::v1 as storage;
pub use idempotency::v1;

/// The encoded descriptor set served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("idempotency_descriptor");
