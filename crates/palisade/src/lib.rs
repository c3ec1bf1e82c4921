//! palisade: tower middleware that keeps services and their clients standing
//! when things around them fail.
//!
//! This facade re-exports each layer crate behind a cargo feature of the same
//! name, so an application depends on one crate and compiles only the layers
//! it uses; `full` turns every layer on. Backends (Postgres, Redis, NATS,
//! RabbitMQ) are separate features of the layers that use them, never on by
//! default.
//!
//! | feature | module (crate) | what it protects |
//! |---|---|---|
//! | (always) | [`core`] (`palisade-core`) | classification, rejection responses, telemetry names |
//! | `circuit-breaker` | `circuit_breaker` (`palisade-circuit-breaker`) | callers, from a failing dependency: fail fast, probe back to health |
//! | `bulkhead` | `bulkhead` (`palisade-bulkhead`) | everything else, from one slow dependency or tenant: cap its concurrency |
//! | `retry` | `retry` (`palisade-retry`) | requests, from transient failures, without retry storms or duplicated unsafe requests |
//! | `idempotency` | `idempotency` (`palisade-idempotency`) | customers, from double charges: a retried POST gets the first result |
//! | `outbox` | `outbox` (`palisade-outbox`) | events, from loss: staged in the handler's transaction, published within milliseconds |
//! | `webhook` | `webhook` (`palisade-webhook`) | webhook handlers, from forged, stale, replayed or altered payloads |
//!
//! Backend features: `idempotency-redis`, `idempotency-postgres`,
//! `webhook-redis`, `outbox-sqlite`, `outbox-postgres`, `outbox-nats`,
//! `outbox-rabbitmq`, `outbox-redis`, `outbox-http`. `outbox` alone brings the
//! publish hook, the relay and the in-process channel publisher, and compiles
//! no database driver: staging and the inbox come with `outbox-sqlite` or
//! `outbox-postgres`.
//!
//! # Install
//!
//! ```sh
//! cargo add palisade --features full
//! ```
//!
//! or only what a service uses, with its backends, for example
//! `cargo add palisade --features circuit-breaker,retry,idempotency-redis,outbox-postgres,outbox-nats`;
//! `axum` makes [`Problem`] an axum response.
//!
//! # Canonical order (outermost first)
//!
//! - **Client stack**: idempotency key → retry (with budget) → circuit breaker →
//!   bulkhead → per-attempt timeout → the HTTP client. The key is added once,
//!   outside the retries, so every attempt carries the same key. Retries see the
//!   breaker's fast `CircuitOpen` and do not retry it; the breaker does not
//!   count the bulkhead's local rejections as failures of the downstream; each
//!   attempt takes its own bulkhead permit, so a request waiting in backoff
//!   holds none. A total deadline, when wanted, goes outside the retry.
//! - **Server stack**: tracing / request id → webhook verify (webhook routes) →
//!   idempotency (state-changing routes; a replay skips everything inside) →
//!   outbox hook → bulkhead (per route or tenant) → timeout → handler.
//!
//! [`ServiceBuilderExt`] adds one method per layer to `tower::ServiceBuilder`;
//! call them in the order above.
#![cfg_attr(
    feature = "full",
    doc = r#"
# Example

```
use std::time::Duration;
use palisade::prelude::*;
use palisade::{bulkhead::BulkheadLayer, circuit_breaker::CircuitBreakerLayer, retry::RetryPolicy};
use tower::{service_fn, ServiceBuilder, ServiceExt};

# #[tokio::main(flavor = "current_thread")]
# async fn main() -> Result<(), BoxError> {
let client = ServiceBuilder::new()
    .retry_policy(RetryPolicy::builder().name("inventory").build()?)
    .circuit_breaker(CircuitBreakerLayer::builder("inventory").build()?)
    .bulkhead(BulkheadLayer::builder("inventory").max_concurrent(16).build()?)
    .timeout(Duration::from_secs(2))
    .service(service_fn(|sku: u32| async move { Ok::<_, BoxError>(sku * 2) }));
assert_eq!(client.oneshot(21).await?, 42);
# Ok(())
# }
```
"#
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use palisade_core as core;
pub use palisade_core::{BoxError, Classify, ErrorClassifier, GrpcClassifier, HttpClassifier, Outcome, Problem};

#[cfg(feature = "bulkhead")]
#[cfg_attr(docsrs, doc(cfg(feature = "bulkhead")))]
pub use palisade_bulkhead as bulkhead;
#[cfg(feature = "circuit-breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
pub use palisade_circuit_breaker as circuit_breaker;
#[cfg(feature = "idempotency")]
#[cfg_attr(docsrs, doc(cfg(feature = "idempotency")))]
pub use palisade_idempotency as idempotency;
#[cfg(feature = "outbox")]
#[cfg_attr(docsrs, doc(cfg(feature = "outbox")))]
pub use palisade_outbox as outbox;
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub use palisade_retry as retry;
#[cfg(feature = "webhook")]
#[cfg_attr(docsrs, doc(cfg(feature = "webhook")))]
pub use palisade_webhook as webhook;

pub mod health;

use tower::ServiceBuilder;
use tower::layer::util::Stack;

/// The names most stacks need.
pub mod prelude {
    // Brought into scope without its name, so a glob import of the prelude
    // beside tower-http's own `ServiceBuilderExt` keeps both traits' methods.
    pub use crate::ServiceBuilderExt as _;
    pub use palisade_core::{
        BoxError, BulkheadFull, BulkheadTimeout, CircuitOpen, Classify, ErrorClassifier, GrpcClassifier,
        HttpClassifier, Outcome,
    };
}

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

/// Extends `tower::ServiceBuilder` with one method per palisade layer enabled
/// by the crate's features, named for the layer, documented with where it
/// goes in a stack.
///
/// Sealed: implemented for `ServiceBuilder` only.
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// Server: verifies inbound webhook signatures; outermost on webhook routes.
    ///
    /// Takes a configured `VerifyLayer`, or a `Verifier` for the defaults.
    #[cfg(feature = "webhook")]
    #[cfg_attr(docsrs, doc(cfg(feature = "webhook")))]
    fn webhook_verify(
        self,
        layer: impl Into<palisade_webhook::VerifyLayer>,
    ) -> ServiceBuilder<Stack<palisade_webhook::VerifyLayer, L>>;

    /// Server: answers a repeated `Idempotency-Key` with the first response;
    /// after webhook verify, before the outbox hook.
    #[cfg(feature = "idempotency")]
    #[cfg_attr(docsrs, doc(cfg(feature = "idempotency")))]
    fn idempotency<St, Sc, D>(
        self,
        layer: palisade_idempotency::IdempotencyLayer<St, Sc, D>,
    ) -> ServiceBuilder<Stack<palisade_idempotency::IdempotencyLayer<St, Sc, D>, L>>;

    /// Server: gives handlers an outbox context and wakes the relay once the
    /// response exists; after idempotency, before the bulkhead.
    ///
    /// Takes a configured `PublishHookLayer`, or the relay's `Wakeup`
    /// (`relay.wakeup()`) for the defaults.
    #[cfg(feature = "outbox")]
    #[cfg_attr(docsrs, doc(cfg(feature = "outbox")))]
    fn outbox_hook(
        self,
        layer: impl Into<palisade_outbox::PublishHookLayer>,
    ) -> ServiceBuilder<Stack<palisade_outbox::PublishHookLayer, L>>;

    /// Client: adds an `Idempotency-Key` to unsafe requests that lack one;
    /// outermost, so every retry carries the same key.
    #[cfg(feature = "idempotency")]
    #[cfg_attr(docsrs, doc(cfg(feature = "idempotency")))]
    fn idempotency_key(self) -> ServiceBuilder<Stack<palisade_idempotency::client::IdempotencyKeyLayer, L>>;

    /// Client: retries with a palisade policy (`RetryPolicy` or
    /// `HttpRetryPolicy`); outside the circuit breaker.
    ///
    /// Not named `retry`: tower's own `ServiceBuilder::retry` would take
    /// precedence and build tower's `Retry` without the request-body replay an
    /// HTTP policy needs.
    #[cfg(feature = "retry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
    fn retry_policy<P>(self, policy: P) -> ServiceBuilder<Stack<palisade_retry::RetryLayer<P>, L>>;

    /// Client: fails calls fast while the downstream fails; inside retry,
    /// outside the bulkhead.
    #[cfg(feature = "circuit-breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
    fn circuit_breaker<C>(
        self,
        layer: palisade_circuit_breaker::CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<palisade_circuit_breaker::CircuitBreakerLayer<C>, L>>;

    /// Client: one circuit breaker per key (host, route, tenant).
    #[cfg(feature = "circuit-breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
    fn keyed_circuit_breaker<K, F, C>(
        self,
        layer: palisade_circuit_breaker::KeyedCircuitBreakerLayer<K, F, C>,
    ) -> ServiceBuilder<Stack<palisade_circuit_breaker::KeyedCircuitBreakerLayer<K, F, C>, L>>;

    /// Both: caps concurrency; inside the breaker (client) or the outbox hook
    /// (server), outside the timeout.
    #[cfg(feature = "bulkhead")]
    #[cfg_attr(docsrs, doc(cfg(feature = "bulkhead")))]
    fn bulkhead<C, M>(
        self,
        layer: palisade_bulkhead::BulkheadLayer<C, M>,
    ) -> ServiceBuilder<Stack<palisade_bulkhead::BulkheadLayer<C, M>, L>>;

    /// Both: one bulkhead compartment per key (downstream, tenant, route).
    #[cfg(feature = "bulkhead")]
    #[cfg_attr(docsrs, doc(cfg(feature = "bulkhead")))]
    fn keyed_bulkhead<K, F, C, M>(
        self,
        layer: palisade_bulkhead::KeyedBulkheadLayer<K, F, C, M>,
    ) -> ServiceBuilder<Stack<palisade_bulkhead::KeyedBulkheadLayer<K, F, C, M>, L>>;

    /// Client: signs outbound webhooks; innermost, so the signature covers
    /// the bytes that are sent.
    ///
    /// Takes a `SignLayer` or the `Signer` itself.
    #[cfg(feature = "webhook")]
    #[cfg_attr(docsrs, doc(cfg(feature = "webhook")))]
    fn webhook_sign(
        self,
        layer: impl Into<palisade_webhook::SignLayer>,
    ) -> ServiceBuilder<Stack<palisade_webhook::SignLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "webhook")]
    fn webhook_verify(
        self,
        layer: impl Into<palisade_webhook::VerifyLayer>,
    ) -> ServiceBuilder<Stack<palisade_webhook::VerifyLayer, L>> {
        self.layer(layer.into())
    }

    #[cfg(feature = "idempotency")]
    fn idempotency<St, Sc, D>(
        self,
        layer: palisade_idempotency::IdempotencyLayer<St, Sc, D>,
    ) -> ServiceBuilder<Stack<palisade_idempotency::IdempotencyLayer<St, Sc, D>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "outbox")]
    fn outbox_hook(
        self,
        layer: impl Into<palisade_outbox::PublishHookLayer>,
    ) -> ServiceBuilder<Stack<palisade_outbox::PublishHookLayer, L>> {
        self.layer(layer.into())
    }

    #[cfg(feature = "idempotency")]
    fn idempotency_key(self) -> ServiceBuilder<Stack<palisade_idempotency::client::IdempotencyKeyLayer, L>> {
        self.layer(palisade_idempotency::client::IdempotencyKeyLayer::new())
    }

    #[cfg(feature = "retry")]
    fn retry_policy<P>(self, policy: P) -> ServiceBuilder<Stack<palisade_retry::RetryLayer<P>, L>> {
        self.layer(palisade_retry::RetryLayer::new(policy))
    }

    #[cfg(feature = "circuit-breaker")]
    fn circuit_breaker<C>(
        self,
        layer: palisade_circuit_breaker::CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<palisade_circuit_breaker::CircuitBreakerLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "circuit-breaker")]
    fn keyed_circuit_breaker<K, F, C>(
        self,
        layer: palisade_circuit_breaker::KeyedCircuitBreakerLayer<K, F, C>,
    ) -> ServiceBuilder<Stack<palisade_circuit_breaker::KeyedCircuitBreakerLayer<K, F, C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "bulkhead")]
    fn bulkhead<C, M>(
        self,
        layer: palisade_bulkhead::BulkheadLayer<C, M>,
    ) -> ServiceBuilder<Stack<palisade_bulkhead::BulkheadLayer<C, M>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "bulkhead")]
    fn keyed_bulkhead<K, F, C, M>(
        self,
        layer: palisade_bulkhead::KeyedBulkheadLayer<K, F, C, M>,
    ) -> ServiceBuilder<Stack<palisade_bulkhead::KeyedBulkheadLayer<K, F, C, M>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "webhook")]
    fn webhook_sign(
        self,
        layer: impl Into<palisade_webhook::SignLayer>,
    ) -> ServiceBuilder<Stack<palisade_webhook::SignLayer, L>> {
        self.layer(layer.into())
    }
}
