//! [`Part`]: what can fill a slot of a one-call stack, and how it reports.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use palisade_bulkhead::{BulkheadBuilder, BulkheadLayer, KeyedBulkheadLayer};
use palisade_circuit_breaker::{CircuitBreakerBuilder, CircuitBreakerLayer, KeyedCircuitBreakerLayer};
use palisade_deadline::{
    DEFAULT_MAX_TIMEOUT, DeadlineBuilder, DeadlineLayer, PropagateDeadlineBuilder, PropagateDeadlineLayer,
};
use palisade_idempotency::client::SetIdempotencyKeyLayer;
use palisade_retry::{HttpRequest, HttpRetryLayer, RetryBudget, RetryBuilder};
use serde_json::{Map, Value};
use tower::layer::util::Identity;
use tower::timeout::TimeoutLayer;

use super::handle::{Reporter, StackHandle};

/// The slots of the one-call stacks, as marker types: a [`Part`] says which
/// slots it fits.
pub mod slot {
    /// Client: the total deadline, outermost.
    #[derive(Debug)]
    pub enum Deadline {}
    /// Server: the request's deadline, outermost.
    #[derive(Debug)]
    pub enum ServerDeadline {}
    /// Client: the `Idempotency-Key` added to unsafe requests.
    #[derive(Debug)]
    pub enum IdempotencyKey {}
    /// Client: the HTTP retry, with its budget.
    #[derive(Debug)]
    pub enum Retry {}
    /// Client: the circuit breaker.
    #[derive(Debug)]
    pub enum CircuitBreaker {}
    /// Both: the bulkhead.
    #[derive(Debug)]
    pub enum Bulkhead {}
    /// Client: the timeout of one attempt, and the deadline's propagation.
    #[derive(Debug)]
    pub enum AttemptTimeout {}
    /// Server: the webhook signature check.
    #[derive(Debug)]
    pub enum WebhookVerify {}
    /// Server: the `Idempotency-Key` replay.
    #[derive(Debug)]
    pub enum Idempotency {}
    /// Server: the outbox publish hook.
    #[derive(Debug)]
    pub enum OutboxHook {}
    /// Server: the timeout of one request.
    #[derive(Debug)]
    pub enum Timeout {}
    /// gRPC, both: the layers' errors answered as gRPC statuses, outermost.
    #[cfg(feature = "grpc")]
    #[derive(Debug)]
    pub enum GrpcStatus {}
    /// gRPC client: the total deadline, read from the call's `grpc-timeout`.
    #[cfg(feature = "grpc")]
    #[derive(Debug)]
    pub enum GrpcDeadline {}
    /// gRPC client: the gRPC retry, with its budget.
    #[cfg(feature = "grpc")]
    #[derive(Debug)]
    pub enum GrpcRetry {}
}

/// A setting the one-call stacks could not build: the layer's own
/// configuration error, under the slot it was for.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The retry's settings.
    Retry(palisade_retry::ConfigError),
    /// The circuit breaker's settings.
    CircuitBreaker(palisade_circuit_breaker::ConfigError),
    /// The bulkhead's settings.
    Bulkhead(palisade_bulkhead::ConfigError),
    /// The idempotency layer's settings.
    Idempotency(palisade_idempotency::ConfigError),
    /// The deadline's, the per-attempt timeout's or the server's request
    /// timeout's settings.
    Deadline(palisade_deadline::ConfigError),
    /// The gRPC status layer's settings.
    #[cfg(feature = "grpc")]
    GrpcStatus(palisade_grpc::ConfigError),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Retry(e) => write!(f, "retry: {e}"),
            ConfigError::CircuitBreaker(e) => write!(f, "circuit breaker: {e}"),
            ConfigError::Bulkhead(e) => write!(f, "bulkhead: {e}"),
            ConfigError::Idempotency(e) => write!(f, "idempotency: {e}"),
            ConfigError::Deadline(e) => write!(f, "deadline: {e}"),
            #[cfg(feature = "grpc")]
            ConfigError::GrpcStatus(e) => write!(f, "gRPC statuses: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Retry(e) => Some(e),
            ConfigError::CircuitBreaker(e) => Some(e),
            ConfigError::Bulkhead(e) => Some(e),
            ConfigError::Idempotency(e) => Some(e),
            ConfigError::Deadline(e) => Some(e),
            #[cfg(feature = "grpc")]
            ConfigError::GrpcStatus(e) => Some(e),
        }
    }
}

/// What fills the slot `Slot` of a one-call stack: a built layer, a builder
/// the stack's `build()` builds, or [`Identity`] for an empty slot.
///
/// Implemented for palisade's layers and their builders (each for its own
/// slot), for `Duration` in the deadline and timeout slots (a layer named
/// after the stack with that budget; a deadline's may be longer than the
/// 5 minutes a caller's budget is capped at, and then caps it instead), and
/// for `Identity` in every slot. Implement it for a layer of your own to put
/// it in a slot: the reporter's fields join the [`StackHandle`](super::StackHandle)'s
/// snapshot.
pub trait Part<Slot> {
    /// The layer that goes in the stack.
    type Layer;

    /// Builds the layer and, unless the slot is empty, what reports its
    /// state. `stack` is the stack's name, for parts that take one (a
    /// `Duration` becomes a layer named after the stack).
    fn into_part(self, stack: &str) -> Result<(Self::Layer, Option<Reporter>), ConfigError>;
}

/// Builds a stack's parts in order, keeping the reports of those present.
pub(crate) struct Assembly {
    name: Arc<str>,
    reports: Vec<(&'static str, Reporter)>,
}

impl Assembly {
    pub(crate) fn new(name: &Arc<str>) -> Self {
        Self {
            name: name.clone(),
            reports: Vec::new(),
        }
    }

    /// Builds `part` for the slot `S`, reported as `layer`.
    pub(crate) fn add<S, P: Part<S>>(&mut self, layer: &'static str, part: P) -> Result<P::Layer, ConfigError> {
        let (built, report) = part.into_part(&self.name)?;
        if let Some(report) = report {
            self.reports.push((layer, report));
        }
        Ok(built)
    }

    pub(crate) fn finish(self) -> StackHandle {
        StackHandle::new(self.name, self.reports)
    }
}

fn reporter(report: impl Fn() -> Map<String, Value> + Send + Sync + 'static) -> Option<Reporter> {
    Some(Arc::new(report))
}

fn fields<const N: usize>(entries: [(&str, Value); N]) -> Map<String, Value> {
    entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn millis(duration: Duration) -> Value {
    Value::from(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// A stateless part: reports nothing but its presence.
fn present() -> Option<Reporter> {
    reporter(Map::new)
}

impl<Slot> Part<Slot> for Identity {
    type Layer = Identity;

    fn into_part(self, _stack: &str) -> Result<(Identity, Option<Reporter>), ConfigError> {
        Ok((self, None))
    }
}

impl Part<slot::IdempotencyKey> for SetIdempotencyKeyLayer {
    type Layer = Self;

    fn into_part(self, _stack: &str) -> Result<(Self, Option<Reporter>), ConfigError> {
        Ok((self, present()))
    }
}

/// Reports a retry's `name` and its `budget` (`null` without one).
fn retry_report(name: &str, budget: Option<&RetryBudget>) -> Option<Reporter> {
    let name = Value::from(name);
    let budget = budget.cloned();
    reporter(move || {
        let budget = budget.as_ref().map_or(Value::Null, |b| {
            serde_json::to_value(b.snapshot()).unwrap_or(Value::Null)
        });
        fields([("name", name.clone()), ("budget", budget)])
    })
}

impl<C> Part<slot::Retry> for HttpRetryLayer<C> {
    type Layer = Self;

    fn into_part(self, _stack: &str) -> Result<(Self, Option<Reporter>), ConfigError> {
        let report = retry_report(self.policy().name(), self.budget());
        Ok((self, report))
    }
}

impl<C> Part<slot::Retry> for RetryBuilder<C, HttpRequest> {
    type Layer = HttpRetryLayer<C>;

    fn into_part(self, stack: &str) -> Result<(Self::Layer, Option<Reporter>), ConfigError> {
        self.build().map_err(ConfigError::Retry)?.into_part(stack)
    }
}

/// A snapshot as its `Serialize` writes it, the form every health report uses.
fn snapshot_fields(snapshot: &impl serde::Serialize) -> Map<String, Value> {
    match serde_json::to_value(snapshot) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    }
}

impl<C> Part<slot::CircuitBreaker> for CircuitBreakerLayer<C> {
    type Layer = Self;

    fn into_part(self, _stack: &str) -> Result<(Self, Option<Reporter>), ConfigError> {
        let handle = self.handle();
        Ok((self, reporter(move || snapshot_fields(&handle.snapshot()))))
    }
}

impl<C> Part<slot::CircuitBreaker> for CircuitBreakerBuilder<C> {
    type Layer = CircuitBreakerLayer<C>;

    fn into_part(self, stack: &str) -> Result<(Self::Layer, Option<Reporter>), ConfigError> {
        self.build().map_err(ConfigError::CircuitBreaker)?.into_part(stack)
    }
}

impl<K, F, C> Part<slot::CircuitBreaker> for KeyedCircuitBreakerLayer<K, F, C>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    type Layer = Self;

    /// Reports `{"keys": {"<key>": {<a breaker's fields>}, ...}}`.
    fn into_part(self, _stack: &str) -> Result<(Self, Option<Reporter>), ConfigError> {
        let handle = self.handle();
        let report = reporter(move || {
            let keys = handle
                .keys()
                .into_iter()
                .filter_map(|key| {
                    Some((
                        key.to_string(),
                        Value::Object(snapshot_fields(&handle.get(&key)?.snapshot())),
                    ))
                })
                .collect();
            fields([("keys", Value::Object(keys))])
        });
        Ok((self, report))
    }
}

impl<C, M> Part<slot::Bulkhead> for BulkheadLayer<C, M> {
    type Layer = Self;

    fn into_part(self, _stack: &str) -> Result<(Self, Option<Reporter>), ConfigError> {
        let handle = self.handle();
        Ok((self, reporter(move || snapshot_fields(&handle.snapshot()))))
    }
}

impl<C, M> Part<slot::Bulkhead> for BulkheadBuilder<C, M> {
    type Layer = BulkheadLayer<C, M>;

    fn into_part(self, stack: &str) -> Result<(Self::Layer, Option<Reporter>), ConfigError> {
        self.build().map_err(ConfigError::Bulkhead)?.into_part(stack)
    }
}

impl<K, F, C, M> Part<slot::Bulkhead> for KeyedBulkheadLayer<K, F, C, M>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    type Layer = Self;

    /// Reports `{"keys": {"<key>": {<a bulkhead's fields>}, ...}}`.
    fn into_part(self, _stack: &str) -> Result<(Self, Option<Reporter>), ConfigError> {
        let handle = self.handle();
        let report = reporter(move || {
            let keys = handle
                .snapshots()
                .into_iter()
                .map(|(key, snapshot)| (key.to_string(), Value::Object(snapshot_fields(&snapshot))))
                .collect();
            fields([("keys", Value::Object(keys))])
        });
        Ok((self, report))
    }
}

fn timeout_report(timeout: Duration) -> Option<Reporter> {
    reporter(move || fields([("timeout_ms", millis(timeout))]))
}

fn named(name: &str) -> Option<Reporter> {
    let name = Value::from(name);
    reporter(move || fields([("name", name.clone())]))
}

fn deadline_of(builder: DeadlineBuilder, budget: Duration) -> Result<(DeadlineLayer, Option<Reporter>), ConfigError> {
    // `max_timeout` caps what callers ask for; a budget given in code is not
    // a caller's, so it raises the cap rather than fail against it (callers
    // still get no more than the budget).
    let layer = builder
        .timeout(budget)
        .max_timeout(budget.max(DEFAULT_MAX_TIMEOUT))
        .build()
        .map_err(ConfigError::Deadline)?;
    Ok((layer, timeout_report(budget)))
}

/// Client: the total deadline, a [`DeadlineLayer`] named after the stack
/// with this budget, reading no header from the outgoing request.
impl Part<slot::Deadline> for Duration {
    type Layer = DeadlineLayer;

    fn into_part(self, stack: &str) -> Result<(DeadlineLayer, Option<Reporter>), ConfigError> {
        deadline_of(DeadlineLayer::builder(stack).no_header().grpc_timeout(false), self)
    }
}

/// Server: the deadline, a [`DeadlineLayer`] named after the stack with
/// this budget, shortened by the caller's `x-request-timeout-ms` or
/// `grpc-timeout`.
impl Part<slot::ServerDeadline> for Duration {
    type Layer = DeadlineLayer;

    fn into_part(self, stack: &str) -> Result<(DeadlineLayer, Option<Reporter>), ConfigError> {
        deadline_of(DeadlineLayer::builder(stack), self)
    }
}

macro_rules! deadline_parts {
    ($($slot:ident),*) => {$(
        impl Part<slot::$slot> for DeadlineLayer {
            type Layer = Self;

            fn into_part(self, _stack: &str) -> Result<(Self, Option<Reporter>), ConfigError> {
                let report = named(self.name());
                Ok((self, report))
            }
        }

        impl Part<slot::$slot> for DeadlineBuilder {
            type Layer = DeadlineLayer;

            fn into_part(self, stack: &str) -> Result<(DeadlineLayer, Option<Reporter>), ConfigError> {
                Part::<slot::$slot>::into_part(self.build().map_err(ConfigError::Deadline)?, stack)
            }
        }
    )*};
}

deadline_parts!(Deadline, ServerDeadline);
#[cfg(feature = "grpc")]
deadline_parts!(GrpcDeadline);

/// gRPC client: the total deadline, a [`DeadlineLayer`] named after the
/// stack with this budget, shortened by the `grpc-timeout` the call carries
/// (tonic's `Request::set_timeout`).
#[cfg(feature = "grpc")]
impl Part<slot::GrpcDeadline> for Duration {
    type Layer = DeadlineLayer;

    fn into_part(self, stack: &str) -> Result<(DeadlineLayer, Option<Reporter>), ConfigError> {
        deadline_of(DeadlineLayer::builder(stack).no_header(), self)
    }
}

#[cfg(feature = "grpc")]
impl Part<slot::GrpcStatus> for palisade_grpc::GrpcStatusLayer {
    type Layer = Self;

    fn into_part(self, _stack: &str) -> Result<(Self, Option<Reporter>), ConfigError> {
        Ok((self, present()))
    }
}

#[cfg(feature = "grpc")]
impl Part<slot::GrpcStatus> for palisade_grpc::GrpcStatusBuilder {
    type Layer = palisade_grpc::GrpcStatusLayer;

    fn into_part(self, stack: &str) -> Result<(Self::Layer, Option<Reporter>), ConfigError> {
        self.build().map_err(ConfigError::GrpcStatus)?.into_part(stack)
    }
}

#[cfg(feature = "grpc")]
impl<C> Part<slot::GrpcRetry> for palisade_retry::GrpcRetryLayer<C> {
    type Layer = Self;

    fn into_part(self, _stack: &str) -> Result<(Self, Option<Reporter>), ConfigError> {
        let report = retry_report(self.policy().name(), self.budget());
        Ok((self, report))
    }
}

#[cfg(feature = "grpc")]
impl<C> Part<slot::GrpcRetry> for RetryBuilder<C, palisade_retry::GrpcRequest> {
    type Layer = palisade_retry::GrpcRetryLayer<C>;

    fn into_part(self, stack: &str) -> Result<(Self::Layer, Option<Reporter>), ConfigError> {
        self.build().map_err(ConfigError::Retry)?.into_part(stack)
    }
}

/// Client: each attempt bounded by this timeout or what is left of the
/// request's deadline, whichever is shorter, and the budget sent downstream
/// (a [`PropagateDeadlineLayer`] named after the stack).
impl Part<slot::AttemptTimeout> for Duration {
    type Layer = PropagateDeadlineLayer;

    fn into_part(self, stack: &str) -> Result<(PropagateDeadlineLayer, Option<Reporter>), ConfigError> {
        let layer = PropagateDeadlineLayer::builder(stack)
            .timeout(self)
            .build()
            .map_err(ConfigError::Deadline)?;
        Ok((layer, timeout_report(self)))
    }
}

impl Part<slot::AttemptTimeout> for PropagateDeadlineLayer {
    type Layer = Self;

    fn into_part(self, _stack: &str) -> Result<(Self, Option<Reporter>), ConfigError> {
        let report = named(self.name());
        Ok((self, report))
    }
}

impl Part<slot::AttemptTimeout> for PropagateDeadlineBuilder {
    type Layer = PropagateDeadlineLayer;

    fn into_part(self, stack: &str) -> Result<(PropagateDeadlineLayer, Option<Reporter>), ConfigError> {
        self.build().map_err(ConfigError::Deadline)?.into_part(stack)
    }
}

/// Server: the request timeout, a tower `TimeoutLayer` (504 through the
/// stack's problem responses).
impl Part<slot::Timeout> for Duration {
    type Layer = TimeoutLayer;

    fn into_part(self, _stack: &str) -> Result<(TimeoutLayer, Option<Reporter>), ConfigError> {
        // A zero timeout answers every request that waits for anything 504.
        if self.is_zero() {
            return Err(ConfigError::Deadline(palisade_deadline::ConfigError::ZeroTimeout));
        }
        Ok((TimeoutLayer::new(self), timeout_report(self)))
    }
}

impl<St, Sc, D> Part<slot::Idempotency> for palisade_idempotency::IdempotencyLayer<St, Sc, D> {
    type Layer = Self;

    fn into_part(self, _stack: &str) -> Result<(Self, Option<Reporter>), ConfigError> {
        Ok((self, present()))
    }
}

impl<St, Sc, D> Part<slot::Idempotency> for palisade_idempotency::IdempotencyBuilder<St, Sc, D> {
    type Layer = palisade_idempotency::IdempotencyLayer<St, Sc, D>;

    fn into_part(self, stack: &str) -> Result<(Self::Layer, Option<Reporter>), ConfigError> {
        self.build().map_err(ConfigError::Idempotency)?.into_part(stack)
    }
}

#[cfg(feature = "webhook")]
impl Part<slot::WebhookVerify> for palisade_webhook::VerifyLayer {
    type Layer = Self;

    fn into_part(self, _stack: &str) -> Result<(Self, Option<Reporter>), ConfigError> {
        Ok((self, present()))
    }
}

#[cfg(feature = "outbox")]
impl Part<slot::OutboxHook> for palisade_outbox::PublishHookLayer {
    type Layer = Self;

    fn into_part(self, _stack: &str) -> Result<(Self, Option<Reporter>), ConfigError> {
        Ok((self, present()))
    }
}
