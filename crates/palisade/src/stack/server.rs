//! The one-call server stack: [`ServerStackBuilder`] and [`ServerStack`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_bulkhead::{BulkheadBuilder, BulkheadLayer};
use palisade_core::response::{ProblemResponse, ProblemResponseLayer};
use palisade_idempotency::{IdempotencyBuilder, IdempotencyLayer};
use tower::layer::Layer;
use tower::layer::util::Identity;

use super::handle::StackHandle;
use super::part::{Assembly, ConfigError, Part, slot};

/// The server stack's default in-flight limit.
pub const SERVER_MAX_CONCURRENT: usize = 100;

/// The server stack's default timeout of one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the canonical server stack; made by [`server`](super::server).
///
/// Each slot holds a [`Part`]: a palisade layer, its builder (built by
/// [`build`](Self::build)), or `Identity` when removed or not configured.
/// The methods named after a slot replace its part, the `no_` methods empty
/// it; the order stays the canonical one.
pub struct ServerStackBuilder<
    L = Identity,
    W = Identity,
    I = IdempotencyBuilder,
    O = Identity,
    H = BulkheadBuilder,
    T = Duration,
> {
    name: Arc<str>,
    deadline: L,
    webhook_verify: W,
    idempotency: I,
    outbox_hook: O,
    bulkhead: H,
    timeout: T,
}

impl ServerStackBuilder {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self {
            deadline: Identity::new(),
            webhook_verify: Identity::new(),
            idempotency: IdempotencyLayer::builder(Arc::clone(&name).to_string()),
            outbox_hook: Identity::new(),
            bulkhead: BulkheadLayer::builder(&name).max_concurrent(SERVER_MAX_CONCURRENT),
            timeout: REQUEST_TIMEOUT,
            name,
        }
    }
}

impl<L, W, I, O, H, T> ServerStackBuilder<L, W, I, O, H, T> {
    slot_methods!(ServerStackBuilder, deadline, ServerDeadline, no_deadline, "request deadline", [], [W, I, O, H, T], {deadline, webhook_verify, idempotency, outbox_hook, bulkhead, timeout});
    slot_methods!(ServerStackBuilder, #[cfg(feature = "webhook")] webhook_verify, WebhookVerify, no_webhook_verify, "webhook verification", [L], [I, O, H, T], {deadline, webhook_verify, idempotency, outbox_hook, bulkhead, timeout});
    slot_methods!(ServerStackBuilder, idempotency, Idempotency, no_idempotency, "idempotency", [L, W], [O, H, T], {deadline, webhook_verify, idempotency, outbox_hook, bulkhead, timeout});
    slot_methods!(ServerStackBuilder, #[cfg(feature = "outbox")] outbox_hook, OutboxHook, no_outbox_hook, "outbox publish hook", [L, W, I], [H, T], {deadline, webhook_verify, idempotency, outbox_hook, bulkhead, timeout});
    slot_methods!(ServerStackBuilder, bulkhead, Bulkhead, no_bulkhead, "bulkhead", [L, W, I, O], [T], {deadline, webhook_verify, idempotency, outbox_hook, bulkhead, timeout});
    slot_methods!(ServerStackBuilder, timeout, Timeout, no_timeout, "request timeout (a `Duration`)", [L, W, I, O, H], [], {deadline, webhook_verify, idempotency, outbox_hook, bulkhead, timeout});

    /// Builds every part and returns the stack, or the first part's
    /// configuration error.
    #[allow(clippy::type_complexity)]
    pub fn build(self) -> Result<ServerStack<L::Layer, W::Layer, I::Layer, O::Layer, H::Layer, T::Layer>, ConfigError>
    where
        L: Part<slot::ServerDeadline>,
        W: Part<slot::WebhookVerify>,
        I: Part<slot::Idempotency>,
        O: Part<slot::OutboxHook>,
        H: Part<slot::Bulkhead>,
        T: Part<slot::Timeout>,
    {
        let mut parts = Assembly::new(&self.name);
        let deadline = parts.add::<slot::ServerDeadline, _>("deadline", self.deadline)?;
        let webhook_verify = parts.add::<slot::WebhookVerify, _>("webhook_verify", self.webhook_verify)?;
        let idempotency = parts.add::<slot::Idempotency, _>("idempotency", self.idempotency)?;
        let outbox_hook = parts.add::<slot::OutboxHook, _>("outbox_hook", self.outbox_hook)?;
        let bulkhead = parts.add::<slot::Bulkhead, _>("bulkhead", self.bulkhead)?;
        let timeout = parts.add::<slot::Timeout, _>("timeout", self.timeout)?;
        Ok(ServerStack {
            handle: parts.finish(),
            deadline,
            webhook_verify,
            idempotency,
            outbox_hook,
            bulkhead,
            timeout,
        })
    }
}

/// The canonical server stack as one layer: deadline → webhook verify → idempotency →
/// outbox hook → bulkhead → timeout, around the handler; with the
/// [`StackHandle`] reporting its parts.
///
/// The bulkhead's and the timeout's errors become responses right outside
/// the bulkhead ([`ProblemResponseLayer`]: 503 with `Retry-After` for a full
/// bulkhead, 504 for a timeout, as `application/problem+json`), so the stack
/// never fails and serves as an axum `Router::layer` or a hyper service
/// directly. Cheap to clone.
#[derive(Clone)]
pub struct ServerStack<L, W, I, O, H, T> {
    handle: StackHandle,
    deadline: L,
    webhook_verify: W,
    idempotency: I,
    outbox_hook: O,
    bulkhead: H,
    timeout: T,
}

impl<S, L, W, I, O, H, T> Layer<S> for ServerStack<L, W, I, O, H, T>
where
    T: Layer<S>,
    H: Layer<T::Service>,
    O: Layer<ProblemResponse<H::Service>>,
    I: Layer<O::Service>,
    W: Layer<I::Service>,
    L: Layer<W::Service>,
{
    type Service = L::Service;

    fn layer(&self, handler: S) -> Self::Service {
        let inner = self.timeout.layer(handler);
        let inner = ProblemResponseLayer::new().layer(self.bulkhead.layer(inner));
        let inner = self.outbox_hook.layer(inner);
        let inner = self.idempotency.layer(inner);
        let inner = self.webhook_verify.layer(inner);
        self.deadline.layer(inner)
    }
}

stack_common!(ServerStackBuilder, ServerStack, [L, W, I, O, H, T]);
