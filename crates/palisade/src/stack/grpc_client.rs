//! The one-call gRPC client stack: [`GrpcClientStackBuilder`] and
//! [`GrpcClientStack`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_bulkhead::{BulkheadBuilder, BulkheadLayer, OnBodyEnd};
use palisade_circuit_breaker::{CircuitBreakerBuilder, CircuitBreakerLayer};
use palisade_core::eos::AtEos;
use palisade_core::{ErrorClassifier, GrpcClassifier};
use palisade_grpc::{GrpcStatusBuilder, GrpcStatusLayer};
use palisade_retry::{GrpcRequest, GrpcRetryLayer, RetryBuilder};
use tower::layer::Layer;
use tower::layer::util::Identity;

use super::client::{ATTEMPT_TIMEOUT, CLIENT_MAX_CONCURRENT};
use super::handle::StackHandle;
use super::part::{Assembly, ConfigError, Part, slot};

/// Builds the canonical gRPC client stack; made by
/// [`grpc_client`](super::grpc_client).
///
/// Each slot holds a [`Part`]: a palisade layer, its builder (built by
/// [`build`](Self::build)), or `Identity` when removed. The methods named
/// after a slot replace its part, the `no_` methods empty it; the order of
/// the slots stays the canonical one whatever order the methods are called
/// in.
pub struct GrpcClientStackBuilder<
    S = GrpcStatusBuilder,
    D = Identity,
    R = RetryBuilder<GrpcClassifier, GrpcRequest>,
    B = CircuitBreakerBuilder<AtEos<GrpcClassifier>>,
    H = BulkheadBuilder<ErrorClassifier, OnBodyEnd>,
    T = Duration,
> {
    name: Arc<str>,
    grpc_status: S,
    deadline: D,
    retry: R,
    circuit_breaker: B,
    bulkhead: H,
    attempt_timeout: T,
}

impl GrpcClientStackBuilder {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self {
            grpc_status: GrpcStatusLayer::builder(name.clone()),
            deadline: Identity::new(),
            retry: GrpcRetryLayer::builder(name.clone()),
            circuit_breaker: CircuitBreakerLayer::builder(name.clone()).classifier(AtEos(GrpcClassifier)),
            // A streaming call is in flight until its stream ends.
            bulkhead: BulkheadLayer::builder(&name)
                .max_concurrent(CLIENT_MAX_CONCURRENT)
                .hold_permit_until_body_end(),
            attempt_timeout: ATTEMPT_TIMEOUT,
            name,
        }
    }
}

impl<S, D, R, B, H, T> GrpcClientStackBuilder<S, D, R, B, H, T> {
    slot_methods!(GrpcClientStackBuilder, grpc_status, GrpcStatus, no_grpc_status, "gRPC status", [], [D, R, B, H, T], {grpc_status, deadline, retry, circuit_breaker, bulkhead, attempt_timeout});
    slot_methods!(GrpcClientStackBuilder, deadline, GrpcDeadline, no_deadline, "total deadline", [S], [R, B, H, T], {grpc_status, deadline, retry, circuit_breaker, bulkhead, attempt_timeout});
    slot_methods!(GrpcClientStackBuilder, retry, GrpcRetry, no_retry, "gRPC retry", [S, D], [B, H, T], {grpc_status, deadline, retry, circuit_breaker, bulkhead, attempt_timeout});
    slot_methods!(GrpcClientStackBuilder, circuit_breaker, CircuitBreaker, no_circuit_breaker, "circuit breaker", [S, D, R], [H, T], {grpc_status, deadline, retry, circuit_breaker, bulkhead, attempt_timeout});
    slot_methods!(GrpcClientStackBuilder, bulkhead, Bulkhead, no_bulkhead, "bulkhead", [S, D, R, B], [T], {grpc_status, deadline, retry, circuit_breaker, bulkhead, attempt_timeout});
    slot_methods!(GrpcClientStackBuilder, attempt_timeout, AttemptTimeout, no_attempt_timeout, "per-attempt timeout (a `Duration`)", [S, D, R, B, H], [], {grpc_status, deadline, retry, circuit_breaker, bulkhead, attempt_timeout});

    /// Builds every part and returns the stack, or the first part's
    /// configuration error.
    #[allow(clippy::type_complexity)]
    pub fn build(
        self,
    ) -> Result<GrpcClientStack<S::Layer, D::Layer, R::Layer, B::Layer, H::Layer, T::Layer>, ConfigError>
    where
        S: Part<slot::GrpcStatus>,
        D: Part<slot::GrpcDeadline>,
        R: Part<slot::GrpcRetry>,
        B: Part<slot::CircuitBreaker>,
        H: Part<slot::Bulkhead>,
        T: Part<slot::AttemptTimeout>,
    {
        let mut parts = Assembly::new(&self.name);
        let grpc_status = parts.add::<slot::GrpcStatus, _>("grpc_status", self.grpc_status)?;
        let deadline = parts.add::<slot::GrpcDeadline, _>("deadline", self.deadline)?;
        let retry = parts.add::<slot::GrpcRetry, _>("retry", self.retry)?;
        let circuit_breaker = parts.add::<slot::CircuitBreaker, _>("circuit_breaker", self.circuit_breaker)?;
        let bulkhead = parts.add::<slot::Bulkhead, _>("bulkhead", self.bulkhead)?;
        let attempt_timeout = parts.add::<slot::AttemptTimeout, _>("attempt_timeout", self.attempt_timeout)?;
        Ok(GrpcClientStack {
            handle: parts.finish(),
            grpc_status,
            deadline,
            retry,
            circuit_breaker,
            bulkhead,
            attempt_timeout,
        })
    }
}

/// The canonical gRPC client stack as one layer: gRPC statuses → total
/// deadline → gRPC retry → circuit breaker judging at the end of the stream
/// → bulkhead → per-attempt timeout (sent as `grpc-timeout`), around the
/// channel it is layered on; with the [`StackHandle`] reporting its parts.
///
/// With the status layer in, the stack never fails: the layers' rejections
/// are statuses a tonic client reads. Cheap to clone: every part is.
#[derive(Clone)]
pub struct GrpcClientStack<S, D, R, B, H, T> {
    handle: StackHandle,
    grpc_status: S,
    deadline: D,
    retry: R,
    circuit_breaker: B,
    bulkhead: H,
    attempt_timeout: T,
}

impl<C, S, D, R, B, H, T> Layer<C> for GrpcClientStack<S, D, R, B, H, T>
where
    T: Layer<C>,
    H: Layer<T::Service>,
    B: Layer<H::Service>,
    R: Layer<B::Service>,
    D: Layer<R::Service>,
    S: Layer<D::Service>,
{
    type Service = S::Service;

    fn layer(&self, channel: C) -> Self::Service {
        let attempt = self.attempt_timeout.layer(channel);
        let attempt = self.bulkhead.layer(attempt);
        let attempt = self.circuit_breaker.layer(attempt);
        let call = self.retry.layer(attempt);
        let call = self.deadline.layer(call);
        self.grpc_status.layer(call)
    }
}

stack_common!(GrpcClientStackBuilder, GrpcClientStack, [S, D, R, B, H, T]);
