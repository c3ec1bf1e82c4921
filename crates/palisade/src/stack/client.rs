//! The one-call client stack: [`ClientStackBuilder`] and [`ClientStack`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_bulkhead::{BulkheadBuilder, BulkheadLayer, OnBodyEnd};
use palisade_circuit_breaker::{CircuitBreakerBuilder, CircuitBreakerLayer};
use palisade_core::{ErrorClassifier, HttpClassifier};
use palisade_idempotency::client::SetIdempotencyKeyLayer;
use palisade_retry::{HttpRequest, HttpRetryLayer, RetryBuilder};
use tower::layer::Layer;
use tower::layer::util::Identity;

use super::handle::StackHandle;
use super::part::{Assembly, ConfigError, Part, slot};

/// The client stack's default in-flight limit.
pub const CLIENT_MAX_CONCURRENT: usize = 100;

/// The client stack's default timeout of one attempt (shorter when the
/// request's deadline leaves less).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the canonical client stack; made by [`client`](super::client).
///
/// Each slot holds a [`Part`]: a palisade layer, its builder (built by
/// [`build`](Self::build)), or `Identity` when removed. The methods named
/// after a slot replace its part, the `no_` methods empty it; the order of
/// the slots stays the canonical one whatever order the methods are called
/// in.
pub struct ClientStackBuilder<
    D = Identity,
    K = SetIdempotencyKeyLayer,
    R = RetryBuilder<HttpClassifier, HttpRequest>,
    B = CircuitBreakerBuilder<HttpClassifier>,
    H = BulkheadBuilder<ErrorClassifier, OnBodyEnd>,
    T = Duration,
> {
    name: Arc<str>,
    deadline: D,
    idempotency_key: K,
    retry: R,
    circuit_breaker: B,
    bulkhead: H,
    attempt_timeout: T,
}

impl ClientStackBuilder {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self {
            deadline: Identity::new(),
            idempotency_key: SetIdempotencyKeyLayer::new(),
            retry: HttpRetryLayer::builder(name.clone()),
            circuit_breaker: CircuitBreakerLayer::builder(name.clone()).classifier(HttpClassifier),
            // An attempt holds its socket until the response body ends.
            bulkhead: BulkheadLayer::builder(&name)
                .max_concurrent(CLIENT_MAX_CONCURRENT)
                .hold_permit_until_body_end(),
            attempt_timeout: ATTEMPT_TIMEOUT,
            name,
        }
    }
}

impl<D, K, R, B, H, T> ClientStackBuilder<D, K, R, B, H, T> {
    slot_methods!(ClientStackBuilder, deadline, Deadline, no_deadline, "total deadline", [], [K, R, B, H, T], {deadline, idempotency_key, retry, circuit_breaker, bulkhead, attempt_timeout});
    slot_methods!(ClientStackBuilder, idempotency_key, IdempotencyKey, no_idempotency_key, "idempotency key", [D], [R, B, H, T], {deadline, idempotency_key, retry, circuit_breaker, bulkhead, attempt_timeout});
    slot_methods!(ClientStackBuilder, retry, Retry, no_retry, "retry", [D, K], [B, H, T], {deadline, idempotency_key, retry, circuit_breaker, bulkhead, attempt_timeout});
    slot_methods!(ClientStackBuilder, circuit_breaker, CircuitBreaker, no_circuit_breaker, "circuit breaker", [D, K, R], [H, T], {deadline, idempotency_key, retry, circuit_breaker, bulkhead, attempt_timeout});
    slot_methods!(ClientStackBuilder, bulkhead, Bulkhead, no_bulkhead, "bulkhead", [D, K, R, B], [T], {deadline, idempotency_key, retry, circuit_breaker, bulkhead, attempt_timeout});
    slot_methods!(ClientStackBuilder, attempt_timeout, AttemptTimeout, no_attempt_timeout, "per-attempt timeout (a `Duration`)", [D, K, R, B, H], [], {deadline, idempotency_key, retry, circuit_breaker, bulkhead, attempt_timeout});

    /// Builds every part and returns the stack, or the first part's
    /// configuration error.
    #[allow(clippy::type_complexity)]
    pub fn build(self) -> Result<ClientStack<D::Layer, K::Layer, R::Layer, B::Layer, H::Layer, T::Layer>, ConfigError>
    where
        D: Part<slot::Deadline>,
        K: Part<slot::IdempotencyKey>,
        R: Part<slot::Retry>,
        B: Part<slot::CircuitBreaker>,
        H: Part<slot::Bulkhead>,
        T: Part<slot::AttemptTimeout>,
    {
        let mut parts = Assembly::new(&self.name);
        let deadline = parts.add::<slot::Deadline, _>("deadline", self.deadline)?;
        let idempotency_key = parts.add::<slot::IdempotencyKey, _>("idempotency_key", self.idempotency_key)?;
        let retry = parts.add::<slot::Retry, _>("retry", self.retry)?;
        let circuit_breaker = parts.add::<slot::CircuitBreaker, _>("circuit_breaker", self.circuit_breaker)?;
        let bulkhead = parts.add::<slot::Bulkhead, _>("bulkhead", self.bulkhead)?;
        let attempt_timeout = parts.add::<slot::AttemptTimeout, _>("attempt_timeout", self.attempt_timeout)?;
        Ok(ClientStack {
            handle: parts.finish(),
            deadline,
            idempotency_key,
            retry,
            circuit_breaker,
            bulkhead,
            attempt_timeout,
        })
    }
}

/// The canonical client stack as one layer: total deadline → idempotency
/// key → retry → circuit breaker → bulkhead → per-attempt timeout, around
/// the HTTP client it is layered on; with the [`StackHandle`] reporting its
/// parts.
///
/// Cheap to clone: every part is.
#[derive(Clone)]
pub struct ClientStack<D, K, R, B, H, T> {
    handle: StackHandle,
    deadline: D,
    idempotency_key: K,
    retry: R,
    circuit_breaker: B,
    bulkhead: H,
    attempt_timeout: T,
}

impl<S, D, K, R, B, H, T> Layer<S> for ClientStack<D, K, R, B, H, T>
where
    T: Layer<S>,
    H: Layer<T::Service>,
    B: Layer<H::Service>,
    R: Layer<B::Service>,
    K: Layer<R::Service>,
    D: Layer<K::Service>,
{
    type Service = D::Service;

    fn layer(&self, client: S) -> Self::Service {
        let attempt = self.attempt_timeout.layer(client);
        let attempt = self.bulkhead.layer(attempt);
        let attempt = self.circuit_breaker.layer(attempt);
        let request = self.retry.layer(attempt);
        let request = self.idempotency_key.layer(request);
        self.deadline.layer(request)
    }
}

stack_common!(ClientStackBuilder, ClientStack, [D, K, R, B, H, T]);
