//! palisade: tower middleware that keeps services and their clients standing
//! when things around them fail.
//!
//! # The stacks in one call
//!
//! axum services, tonic services and reqwest clients each get their stack in
//! one call: [`stack::server`] and [`stack::client`] for HTTP,
//! `stack::grpc_server` and `stack::grpc_client` for gRPC (features `stack`
//! and `grpc`, both in `full`) assemble the layers in the canonical order with
//! documented defaults; every part can be replaced or removed, and one
//! [`stack::StackHandle`] reports them all for `/health`.
//!
//! An axum service: idempotent POSTs, a bulkhead that sheds load with 503,
//! a request timeout answering 504, all as `application/problem+json`:
#![cfg_attr(
    feature = "full",
    doc = r#"
```
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{Request, StatusCode};
use tower::ServiceExt;

# #[tokio::main(flavor = "current_thread")]
# async fn main() -> Result<(), palisade::core::BoxError> {
let api = palisade::stack::server("orders").build()?;
let health = api.handle();
let app = Router::new()
    .route("/orders", post(|| async { (StatusCode::CREATED, "order 1") }))
    .layer(api)
    .route("/health", get(move || async move { Json(health.snapshot()) }));

let order = || Request::post("/orders").header("idempotency-key", "order-4c1f").body(axum::body::Body::empty());
let first = app.clone().oneshot(order()?).await?;
let again = app.oneshot(order()?).await?;
assert_eq!(first.status(), StatusCode::CREATED);
assert_eq!(again.headers()["idempotent-replayed"], "true");
# Ok(())
# }
```
"#
)]
#![cfg_attr(
    all(feature = "full", feature = "reqwest"),
    doc = r##"
A reqwest client (feature `reqwest`): the idempotency key, retries with a
budget, a circuit breaker, a bulkhead and a per-attempt timeout, reqwest's
own timeouts and connect errors recognised:

```no_run
use palisade::reqwest::ReqwestService;
use tower::{Layer, ServiceExt};

# #[tokio::main(flavor = "current_thread")]
# async fn main() -> Result<(), palisade::core::BoxError> {
let payments = palisade::stack::client("payments").build()?;
let health = payments.handle(); // for /health
let client = payments.layer(ReqwestService::new(reqwest::Client::new()));

let charge = http::Request::post("http://payments.internal/charges").body(String::from(r#"{"amount":10}"#))?;
let res = client.oneshot(charge).await?;
# let _ = (res, health);
# Ok(())
# }
```
"##
)]
#![cfg_attr(
    feature = "full",
    doc = r#"
A tonic server (`Server::builder().layer(..)`): a full bulkhead and a
passed deadline answered trailers-only with their gRPC statuses. tonic's
services are `http` services, so one over `http` types stands in for them
here:

```
use std::time::Duration;
use palisade::bulkhead::BulkheadLayer;
use tower::{Layer, ServiceExt};

# #[tokio::main(flavor = "current_thread", start_paused = true)]
# async fn main() -> Result<(), palisade::core::BoxError> {
let inventory = palisade::stack::grpc_server("inventory")
    .bulkhead(BulkheadLayer::builder("inventory").max_concurrent(64))
    .build()?;
let health = inventory.handle();
// With tonic: Server::builder().layer(inventory).add_service(InventoryServer::new(..))
let service = inventory.layer(tower::service_fn(|_req: http::Request<String>| async {
    tokio::time::sleep(Duration::from_secs(1)).await; // a slow handler
    Ok::<_, palisade::core::BoxError>(http::Response::new(String::new()))
}));

let call = http::Request::post("/inventory.v1.Inventory/GetStock")
    .header("content-type", "application/grpc")
    .header("grpc-timeout", "100m") // the caller's deadline: 100 ms
    .body(String::new())?;
let res = service.oneshot(call).await?;
assert_eq!(res.headers()["grpc-status"], "4"); // DEADLINE_EXCEEDED, trailers-only
assert_eq!(health.layers(), ["grpc_status", "deadline", "bulkhead", "timeout"]);
# Ok(())
# }
```

A tonic client: `grpc_client(name)` around the `Channel`. The retry keeps
requests replayable, so the channel is handed tonic's body, and
`palisade::grpc::channel_error` (feature `tonic` of `palisade-grpc`) reads
its timeouts. Here a stand-in answers `UNAVAILABLE` once, then `OK`:

```
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use palisade::retry::ReplayBody;
use tower::{Layer, ServiceExt};

# #[tokio::main(flavor = "current_thread", start_paused = true)]
# async fn main() -> Result<(), palisade::core::BoxError> {
let calls = Arc::new(AtomicU32::new(0));
let seen = calls.clone();
// With tonic: ServiceBuilder::new().map_err(channel_error)
//     .map_request(|r: http::Request<ReplayBody<Body>>| r.map(Body::new)).service(channel)
let channel = tower::service_fn(move |req: http::Request<ReplayBody<String>>| {
    assert!(req.headers().contains_key("grpc-timeout")); // the attempt's budget, sent on
    let code = if seen.fetch_add(1, Ordering::SeqCst) == 0 { "14" } else { "0" };
    async move {
        let res = http::Response::builder().header("content-type", "application/grpc");
        Ok::<_, palisade::core::BoxError>(res.header("grpc-status", code).body(String::new())?)
    }
});
let inventory = palisade::stack::grpc_client("inventory").build()?;
let client = inventory.layer(channel); // then InventoryClient::new(client)

let call = http::Request::post("/inventory.v1.Inventory/GetStock")
    .header("content-type", "application/grpc")
    .body(String::new())?;
let res = client.oneshot(call).await?;
assert_eq!(res.headers()["grpc-status"], "0");
assert_eq!(calls.load(Ordering::SeqCst), 2); // UNAVAILABLE was retried
# Ok(())
# }
```

`examples/tonic-stack` builds its client, its server and its upstream call
this way.
"#
)]
//!
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
//! | `deadline` | `deadline` (`palisade-deadline`) | every hop of a request, from working past its caller's patience: one budget, set at the edge, carried downstream |
//! | `fallback` | `fallback` (`palisade-fallback`) | users, from an error page: a failed or rejected call is answered from a fallback, or queued for later through the outbox |
//! | `hedge` | `hedge` (`palisade-hedge`) | callers, from the slow tail: a safe request not answered within a percentile of the latencies seen gets a second attempt, paid from the retry budget |
//! | `retry` | `retry` (`palisade-retry`) | requests, from transient failures, without retry storms or duplicated unsafe requests |
//! | `idempotency` | `idempotency` (`palisade-idempotency`) | customers, from double charges: a retried POST gets the first result |
//! | `outbox` | `outbox` (`palisade-outbox`) | events, from loss: staged in the handler's transaction, published within milliseconds |
//! | `webhook` | `webhook` (`palisade-webhook`) | webhook handlers, from forged, stale, replayed or altered payloads |
//! | `grpc` | `grpc` (`palisade-grpc`) | gRPC callers, from resets and `UNKNOWN`s: rejections answered as gRPC statuses with pushback |
//! | `stack` | `stack` | the canonical client and server stacks in one call, with one handle for `/health` (brings the breaker, bulkhead, retry and idempotency); with `grpc`, the gRPC ones too |
//! | `reqwest` (not in `full`) | `reqwest` (`palisade-reqwest`) | reqwest's `Client` as a tower service, its timeouts and connect errors recognised; `reqwest-http2` adds reqwest's HTTP/2, its refusals of requests it did not process marked as never sent |
//!
//! Backend features: `idempotency-redis`, `idempotency-postgres`,
//! `webhook-redis`, `outbox-sqlite`, `outbox-postgres`, `outbox-nats`,
//! `outbox-rabbitmq`, `outbox-redis`, `outbox-kafka`, `outbox-http`, `outbox-admin` (the
//! outbox's admin router for an admin port), `fallback-outbox-sqlite`,
//! `fallback-outbox-postgres`. `outbox` alone brings the
//! publish hook, the relay and the in-process channel publisher, and compiles
//! no database driver: staging and the inbox come with `outbox-sqlite` or
//! `outbox-postgres`.
//!
//! The `config` feature adds [`config`](crate::config): the settings of the
//! enabled layers for named instances, from TOML, YAML or environment
//! variables (`[circuit_breaker.payments] failure_rate = 25`).
//!
//! # Install
//!
//! ```sh
//! cargo add palisade --features full
//! ```
//!
//! or only what a service uses, with its backends, for example
//! `cargo add palisade --features circuit-breaker,retry,idempotency-redis,outbox-postgres,outbox-nats`;
//! `axum` makes [`Problem`](core::problem::Problem) an axum response.
//!
//! # Canonical order (outermost first)
//!
//! - **Client stack**: total deadline → idempotency key → fallback → retry or hedging (with budget) → circuit breaker →
//!   bulkhead → per-attempt timeout and deadline propagation → the HTTP
//!   client. The key is added once,
//!   outside the retries, so every attempt carries the same key, and
//!   outside the fallback, so the work it queues for later carries it too. Retries see the
//!   breaker's fast `CircuitOpen` and do not retry it; the breaker does not
//!   count the bulkhead's local rejections as failures of the downstream; each
//!   attempt takes its own bulkhead permit, so a request waiting in backoff
//!   holds none. The request's deadline (its own total deadline, or the one
//!   the server stack set for the request being served) bounds the whole
//!   call: the retry policy starts no wait that would end past it, and each
//!   attempt gets what is left of it, sent downstream.
//! - **Server stack**: deadline (outermost: its budget covers everything) →
//!   tracing / request id → webhook verify (webhook routes) →
//!   idempotency (state-changing routes; a replay skips everything inside) →
//!   outbox hook → bulkhead (per route or tenant) → timeout → handler.
//!
//! - **gRPC client stack** (around a tonic `Channel`): gRPC statuses →
//!   deadline → gRPC retry → circuit breaker judging at the end of the
//!   stream → bulkhead → per-attempt timeout → the channel. The status layer
//!   turns the layers' rejections into statuses the tonic client reads (an
//!   open breaker is `UNAVAILABLE` with its pushback, not `UNKNOWN`); the
//!   retry (`retry::GrpcRetryLayer`) follows gRPC's retry design and never
//!   retries a call whose messages arrived; the breaker, given
//!   `AtEos(GrpcClassifier)` (`core::eos`), counts a call by the status in its
//!   trailers, the way nearly every gRPC error arrives.
//! - **gRPC server stack** (`tonic::transport::Server::builder().layer(..)`,
//!   first given outermost): gRPC statuses → deadline (from `grpc-timeout`) →
//!   bulkhead → timeout → the services. Every rejection is answered
//!   trailers-only with the right code (see `grpc`), never as a reset stream.
//!
//! `examples/tonic-stack` builds both around an inventory service.
//!
//! [`stack::client`] and [`stack::server`] build these in one call, and
//! `stack::grpc_client` and `stack::grpc_server` the gRPC ones;
//! [`ServiceBuilderExt`] adds one method per layer to `tower::ServiceBuilder`
//! for stacks built by hand: call them in the order above.
#![cfg_attr(
    feature = "full",
    doc = r#"
# Example

```
use std::time::Duration;
use palisade::prelude::*;
use palisade::{bulkhead::BulkheadLayer, circuit_breaker::CircuitBreakerLayer, retry::RetryLayer};
use tower::{service_fn, ServiceBuilder, ServiceExt};

# #[tokio::main(flavor = "current_thread")]
# async fn main() -> Result<(), BoxError> {
let client = ServiceBuilder::new()
    .retry_layer(RetryLayer::builder("inventory").build()?)
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
#![cfg_attr(
    feature = "full",
    doc = r#"
A gRPC client stack, around a stand-in for a tonic `Channel` that answers
`UNAVAILABLE` twice (trailers-only) and then `OK` with the status in its
trailers:

```
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use palisade::prelude::*;
use palisade::core::eos::AtEos;
use palisade::{bulkhead::BulkheadLayer, circuit_breaker::CircuitBreakerLayer};
use palisade::{grpc::GrpcStatusLayer, retry::{GrpcRetryLayer, ReplayBody}};
use tower::{ServiceBuilder, ServiceExt};

# #[tokio::main(flavor = "current_thread", start_paused = true)]
# async fn main() -> Result<(), BoxError> {
let calls = Arc::new(AtomicU32::new(0));
let seen = calls.clone();
let channel = tower::service_fn(move |_req: http::Request<ReplayBody<String>>| {
    let status = if seen.fetch_add(1, Ordering::SeqCst) < 2 { Some("14") } else { None };
    async move {
        let mut res = http::Response::builder().header("content-type", "application/grpc");
        if let Some(code) = status {
            res = res.header("grpc-status", code); // trailers-only
        }
        Ok::<_, BoxError>(res.body(String::new())?)
    }
});
let client = ServiceBuilder::new()
    .grpc_status(GrpcStatusLayer::builder("inventory").build()?)
    .grpc_retry_layer(GrpcRetryLayer::builder("inventory").build()?)
    .circuit_breaker(CircuitBreakerLayer::builder("inventory").classifier(AtEos(GrpcClassifier)).build()?)
    .bulkhead(BulkheadLayer::builder("inventory").max_concurrent(16).build()?)
    .timeout(Duration::from_secs(2))
    .service(channel);
let res = client.oneshot(http::Request::post("/inventory.v1.Inventory/GetStock").body(String::new())?).await?;
assert!(res.headers().get("grpc-status").is_none()); // 200 OK, the status will come in the trailers
assert_eq!(calls.load(Ordering::SeqCst), 3);
# Ok(())
# }
```
"#
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use palisade_core as core;

#[cfg(feature = "bulkhead")]
#[cfg_attr(docsrs, doc(cfg(feature = "bulkhead")))]
pub use palisade_bulkhead as bulkhead;
#[cfg(feature = "circuit-breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
pub use palisade_circuit_breaker as circuit_breaker;
#[cfg(feature = "deadline")]
pub use palisade_deadline as deadline;
#[cfg(feature = "fallback")]
pub use palisade_fallback as fallback;
#[cfg(feature = "grpc")]
pub use palisade_grpc as grpc;
#[cfg(feature = "hedge")]
pub use palisade_hedge as hedge;
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

#[cfg(all(
    feature = "config",
    any(
        feature = "circuit-breaker",
        feature = "bulkhead",
        feature = "retry",
        feature = "idempotency",
        feature = "deadline",
        feature = "hedge",
        feature = "webhook",
        feature = "outbox"
    )
))]
pub mod config;
#[cfg(feature = "reqwest")]
pub use palisade_reqwest as reqwest;

pub mod health;
#[cfg(feature = "stack")]
pub mod stack;

use tower::ServiceBuilder;
#[cfg(any(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "retry",
    feature = "idempotency",
    feature = "outbox",
    feature = "webhook",
    feature = "grpc",
    feature = "deadline",
    feature = "hedge",
    feature = "fallback"
))]
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
    /// Both, gRPC: answers the errors of every layer inside it with
    /// trailers-only gRPC statuses; outermost.
    #[cfg(feature = "grpc")]
    fn grpc_status(
        self,
        layer: palisade_grpc::GrpcStatusLayer,
    ) -> ServiceBuilder<Stack<palisade_grpc::GrpcStatusLayer, L>>;

    /// Server: sets each request's total budget and answers 504 or
    /// `DEADLINE_EXCEEDED` when it passes; outermost.
    #[cfg(feature = "deadline")]
    fn deadline(
        self,
        layer: palisade_deadline::DeadlineLayer,
    ) -> ServiceBuilder<Stack<palisade_deadline::DeadlineLayer, L>>;

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
    /// inside the total deadline, outside the fallback and the retry, so
    /// every retry and the fallback's failure carry the same key.
    #[cfg(feature = "idempotency")]
    #[cfg_attr(docsrs, doc(cfg(feature = "idempotency")))]
    fn idempotency_key(self) -> ServiceBuilder<Stack<palisade_idempotency::client::SetIdempotencyKeyLayer, L>>;

    /// Client: answers failed or rejected calls from a fallback
    /// (`FallbackLayer`); inside the idempotency key, outside the retry and
    /// the circuit breaker, so it sees their last failure and their rejections.
    #[cfg(feature = "fallback")]
    fn fallback<F, C>(
        self,
        layer: palisade_fallback::FallbackLayer<F, C>,
    ) -> ServiceBuilder<Stack<palisade_fallback::FallbackLayer<F, C>, L>>;

    /// Client: retries any cloneable request (`RetryLayer`); outside the
    /// circuit breaker.
    ///
    /// Not named `retry`: tower's own `ServiceBuilder::retry`, which takes a
    /// bare `tower::retry::Policy`, would take precedence.
    #[cfg(feature = "retry")]
    fn retry_layer<C>(
        self,
        layer: palisade_retry::RetryLayer<C>,
    ) -> ServiceBuilder<Stack<palisade_retry::RetryLayer<C>, L>>;

    /// Client: retries HTTP requests, replaying their bodies
    /// (`HttpRetryLayer`); outside the circuit breaker.
    #[cfg(feature = "retry")]
    fn http_retry_layer<C>(
        self,
        layer: palisade_retry::HttpRetryLayer<C>,
    ) -> ServiceBuilder<Stack<palisade_retry::HttpRetryLayer<C>, L>>;

    /// Client, gRPC: retries gRPC calls as gRPC's retry design does
    /// (`GrpcRetryLayer`); outside the circuit breaker.
    #[cfg(feature = "retry")]
    fn grpc_retry_layer<C>(
        self,
        layer: palisade_retry::GrpcRetryLayer<C>,
    ) -> ServiceBuilder<Stack<palisade_retry::GrpcRetryLayer<C>, L>>;

    /// Client: hedges safe HTTP requests (`HedgeLayer`); where the retry
    /// layer sits, outside the circuit breaker.
    #[cfg(feature = "hedge")]
    fn hedge<C>(self, layer: palisade_hedge::HedgeLayer<C>) -> ServiceBuilder<Stack<palisade_hedge::HedgeLayer<C>, L>>;

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

    /// Client: bounds each attempt by what is left of the request's
    /// deadline and sends that budget downstream; inside the bulkhead, where
    /// the per-attempt timeout goes.
    #[cfg(feature = "deadline")]
    fn propagate_deadline(
        self,
        layer: palisade_deadline::PropagateDeadlineLayer,
    ) -> ServiceBuilder<Stack<palisade_deadline::PropagateDeadlineLayer, L>>;

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
    #[cfg(feature = "grpc")]
    fn grpc_status(
        self,
        layer: palisade_grpc::GrpcStatusLayer,
    ) -> ServiceBuilder<Stack<palisade_grpc::GrpcStatusLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "deadline")]
    fn deadline(
        self,
        layer: palisade_deadline::DeadlineLayer,
    ) -> ServiceBuilder<Stack<palisade_deadline::DeadlineLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "deadline")]
    fn propagate_deadline(
        self,
        layer: palisade_deadline::PropagateDeadlineLayer,
    ) -> ServiceBuilder<Stack<palisade_deadline::PropagateDeadlineLayer, L>> {
        self.layer(layer)
    }

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
    fn idempotency_key(self) -> ServiceBuilder<Stack<palisade_idempotency::client::SetIdempotencyKeyLayer, L>> {
        self.layer(palisade_idempotency::client::SetIdempotencyKeyLayer::new())
    }

    #[cfg(feature = "fallback")]
    fn fallback<F, C>(
        self,
        layer: palisade_fallback::FallbackLayer<F, C>,
    ) -> ServiceBuilder<Stack<palisade_fallback::FallbackLayer<F, C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "retry")]
    fn retry_layer<C>(
        self,
        layer: palisade_retry::RetryLayer<C>,
    ) -> ServiceBuilder<Stack<palisade_retry::RetryLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "retry")]
    fn http_retry_layer<C>(
        self,
        layer: palisade_retry::HttpRetryLayer<C>,
    ) -> ServiceBuilder<Stack<palisade_retry::HttpRetryLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "retry")]
    fn grpc_retry_layer<C>(
        self,
        layer: palisade_retry::GrpcRetryLayer<C>,
    ) -> ServiceBuilder<Stack<palisade_retry::GrpcRetryLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "hedge")]
    fn hedge<C>(self, layer: palisade_hedge::HedgeLayer<C>) -> ServiceBuilder<Stack<palisade_hedge::HedgeLayer<C>, L>> {
        self.layer(layer)
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
