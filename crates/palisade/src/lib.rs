//! palisade: tower middleware that keeps services and their clients standing
//! when things around them fail.
//!
//! This facade re-exports each layer crate behind a cargo feature of the same
//! name, so an application depends on one crate and compiles only the layers
//! it uses; `full` turns every layer on. Backends (Postgres, Redis, NATS,
//! RabbitMQ) are separate features of the layers that use them, never on by
//! default.
//!
//! | feature | crate | what it protects |
//! |---|---|---|
//! | (always) | [`core`] (`palisade-core`) | classification, rejection responses, telemetry names |
//!
//! # Canonical order (outermost first)
//!
//! - Client stack: total deadline → retry (with budget) → circuit breaker →
//!   bulkhead → per-attempt timeout → the HTTP client. Retries see the
//!   breaker's fast `CircuitOpen` and do not retry it; the breaker does not
//!   count the bulkhead's local rejections as failures of the downstream;
//!   each attempt takes its own bulkhead permit, so a request waiting in
//!   backoff holds none.
//! - Server stack: tracing / request id → webhook verify (webhook routes) →
//!   idempotency (state-changing routes; a replay skips everything inside) →
//!   outbox hook → bulkhead (per route or tenant) → timeout → handler.
//!
//! [`ServiceBuilderExt`] adds one method per layer to `tower::ServiceBuilder`;
//! call them in the order above.

pub use palisade_core as core;
pub use palisade_core::{BoxError, Classify, ErrorClassifier, GrpcClassifier, HttpClassifier, Outcome, Problem};

/// The names most stacks need.
pub mod prelude {
    pub use crate::ServiceBuilderExt;
    pub use palisade_core::{BoxError, Classify, ErrorClassifier, GrpcClassifier, HttpClassifier, Outcome};
}

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

/// Extends `tower::ServiceBuilder` with one method per palisade layer enabled
/// by the crate's features.
///
/// Sealed: implemented for `ServiceBuilder` only.
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {}

impl<L> ServiceBuilderExt<L> for tower::ServiceBuilder<L> {}
