//! edgeinfer's gRPC API: the code generated from `proto/` and the pieces every crate shares.
//!
//! # Layout
//!
//! - [`v1`]: the native API, package `edgeinfer.v1` (`Inference`, `EdgeAdmin`).
//! - [`inference`]: the Open Inference Protocol v2, package `inference`
//!   (`GRPCInferenceService`), with the public field numbers, and its model repository
//!   extension (`inference.model_repository.ModelRepositoryService`).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors of every file under `proto/`, served by
//!   reflection so that grpcurl and other tools need no `.proto` files.
//! - [`oip`]: helpers for Open Inference Protocol parameters.
//!
//! This crate knows nothing of models, links or routing: it is the contract between them and
//! the outside world.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The native API, package `edgeinfer.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("edgeinfer.v1");
}

/// The Open Inference Protocol v2, package `inference`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod inference {
    tonic::include_proto!("inference");

    /// The model repository extension, package `inference.model_repository`.
    pub mod model_repository {
        tonic::include_proto!("inference.model_repository");
    }
}

pub mod oip;

/// Encoded `FileDescriptorSet` of every file under `proto/`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/edgeinfer_descriptor.bin"));

/// Fully qualified names of the gRPC services defined here, as health checks and reflection
/// name them.
pub mod service_names {
    /// The native inference service.
    pub const INFERENCE: &str = "edgeinfer.v1.Inference";
    /// The edge administration service.
    pub const EDGE_ADMIN: &str = "edgeinfer.v1.EdgeAdmin";
    /// The model control service (both nodes' admin listeners).
    pub const MODEL_ADMIN: &str = "edgeinfer.v1.ModelAdmin";
    /// The model repository extension of the Open Inference Protocol (admin listeners).
    pub const MODEL_REPOSITORY: &str = "inference.model_repository.ModelRepositoryService";
    /// The Open Inference Protocol service.
    pub const OIP: &str = "inference.GRPCInferenceService";
}

/// The canonical upper-case name of a gRPC status code (`INVALID_ARGUMENT`, ...), as other
/// gRPC tools print it and as metrics label refusals.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
