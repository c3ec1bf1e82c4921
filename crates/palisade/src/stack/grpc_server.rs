//! The one-call gRPC server stack: [`GrpcServerStackBuilder`] and
//! [`GrpcServerStack`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_bulkhead::{BulkheadBuilder, BulkheadLayer, OnBodyEnd};
use palisade_core::ErrorClassifier;
use palisade_deadline::{DeadlineBuilder, DeadlineLayer};
use palisade_grpc::{GrpcStatusBuilder, GrpcStatusLayer};
use tower::layer::Layer;
use tower::layer::util::Identity;

use super::handle::StackHandle;
use super::part::{Assembly, ConfigError, Part, slot};
use super::server::{REQUEST_TIMEOUT, SERVER_MAX_CONCURRENT};

/// Builds the canonical gRPC server stack; made by
/// [`grpc_server`](super::grpc_server).
///
/// Each slot holds a [`Part`]: a palisade layer, its builder (built by
/// [`build`](Self::build)), or `Identity` when removed. The methods named
/// after a slot replace its part, the `no_` methods empty it; the order
/// stays the canonical one.
pub struct GrpcServerStackBuilder<
    S = GrpcStatusBuilder,
    L = DeadlineBuilder,
    H = BulkheadBuilder<ErrorClassifier, OnBodyEnd>,
    T = Duration,
> {
    name: Arc<str>,
    grpc_status: S,
    deadline: L,
    bulkhead: H,
    timeout: T,
}

impl GrpcServerStackBuilder {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self {
            grpc_status: GrpcStatusLayer::builder(name.clone()),
            deadline: DeadlineLayer::builder(&name),
            // A streaming call is in flight until its stream ends.
            bulkhead: BulkheadLayer::builder(&name)
                .max_concurrent(SERVER_MAX_CONCURRENT)
                .hold_permit_until_body_end(),
            timeout: REQUEST_TIMEOUT,
            name,
        }
    }
}

impl<S, L, H, T> GrpcServerStackBuilder<S, L, H, T> {
    slot_methods!(GrpcServerStackBuilder, grpc_status, GrpcStatus, no_grpc_status, "gRPC status", [], [L, H, T], {grpc_status, deadline, bulkhead, timeout});
    slot_methods!(GrpcServerStackBuilder, deadline, ServerDeadline, no_deadline, "request deadline", [S], [H, T], {grpc_status, deadline, bulkhead, timeout});
    slot_methods!(GrpcServerStackBuilder, bulkhead, Bulkhead, no_bulkhead, "bulkhead", [S, L], [T], {grpc_status, deadline, bulkhead, timeout});
    slot_methods!(GrpcServerStackBuilder, timeout, Timeout, no_timeout, "request timeout (a `Duration`)", [S, L, H], [], {grpc_status, deadline, bulkhead, timeout});

    /// Builds every part and returns the stack, or the first part's
    /// configuration error.
    #[allow(clippy::type_complexity)]
    pub fn build(self) -> Result<GrpcServerStack<S::Layer, L::Layer, H::Layer, T::Layer>, ConfigError>
    where
        S: Part<slot::GrpcStatus>,
        L: Part<slot::ServerDeadline>,
        H: Part<slot::Bulkhead>,
        T: Part<slot::Timeout>,
    {
        let mut parts = Assembly::new(&self.name);
        let grpc_status = parts.add::<slot::GrpcStatus, _>("grpc_status", self.grpc_status)?;
        let deadline = parts.add::<slot::ServerDeadline, _>("deadline", self.deadline)?;
        let bulkhead = parts.add::<slot::Bulkhead, _>("bulkhead", self.bulkhead)?;
        let timeout = parts.add::<slot::Timeout, _>("timeout", self.timeout)?;
        Ok(GrpcServerStack {
            handle: parts.finish(),
            grpc_status,
            deadline,
            bulkhead,
            timeout,
        })
    }
}

/// The canonical gRPC server stack as one layer: gRPC statuses → deadline
/// (from `grpc-timeout`) → bulkhead → timeout, around the services; with
/// the [`StackHandle`] reporting its parts.
///
/// Every rejection is answered trailers-only with its gRPC status (a full
/// bulkhead `UNAVAILABLE` with `grpc-retry-pushback-ms`, a timeout
/// `DEADLINE_EXCEEDED`), so the stack never fails: give it to
/// `tonic::transport::Server::builder().layer(..)`. Cheap to clone.
#[derive(Clone)]
pub struct GrpcServerStack<S, L, H, T> {
    handle: StackHandle,
    grpc_status: S,
    deadline: L,
    bulkhead: H,
    timeout: T,
}

impl<Svc, S, L, H, T> Layer<Svc> for GrpcServerStack<S, L, H, T>
where
    T: Layer<Svc>,
    H: Layer<T::Service>,
    L: Layer<H::Service>,
    S: Layer<L::Service>,
{
    type Service = S::Service;

    fn layer(&self, services: Svc) -> Self::Service {
        let inner = self.timeout.layer(services);
        let inner = self.bulkhead.layer(inner);
        let inner = self.deadline.layer(inner);
        self.grpc_status.layer(inner)
    }
}

stack_common!(GrpcServerStackBuilder, GrpcServerStack, [S, L, H, T]);
