//! The configuration errors of [`GrpcStatusBuilder::build`](crate::GrpcStatusBuilder::build).

use palisade_core::GrpcCode;

/// An impossible configuration of the gRPC status layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A full bulkhead may answer `UNAVAILABLE` or `RESOURCE_EXHAUSTED`, no other code.
    #[error("a full bulkhead answers UNAVAILABLE or RESOURCE_EXHAUSTED, not {0}")]
    BulkheadCode(GrpcCode),
}
