//! An orders service on axum with palisade's layers, the way a user would
//! build one: idempotent order creation, payments charged through a
//! resilient client stack, events published through a transactional outbox.
//!
//! # Flags
//!
//! The `axum-orders` binary takes these flags (each also an environment
//! variable; `axum-orders --help` says the same):
//!
//! | flag | env | default | effect |
//! |---|---|---|---|
//! | `--listen` | `LISTEN` | `127.0.0.1:3000` | the service's address |
//! | `--database-url` | `DATABASE_URL` | `sqlite:axum-orders.db` | `sqlite:<file>` or `postgres://…` ([`Database`]); any other scheme is refused |
//! | `--redis-url` | `REDIS_URL` | none (memory) | idempotency and webhook replay stores in Redis |
//! | `--idempotency-keys` | `IDEMPOTENCY_KEYS` | `10000` | [`Config::idempotency_keys`]: keys the in-memory idempotency store holds; when they are all retained, a new key is answered 503 |
//! | `--nats-url` | `NATS_URL` | none (in-process channel) | outbox publishes to JetStream `orders.events.<type>`, stream `ORDERS` |
//! | `--payments-url` | `PAYMENTS_URL` | none (simulator) | a real payments service: `POST {url}/charges` and `POST {url}/refunds`, with a provider's idempotency rules ([`payments_sim`] keeps them) |
//! | `--payments-sim-listen` | `PAYMENTS_SIM_LISTEN` | `127.0.0.1:3001` | the built-in simulator's address |
//! | `--webhook-secret` | `WEBHOOK_SECRET` | generated, printed | Standard Webhooks `whsec_` secret |
//! | `--stripe-secret` | `STRIPE_SECRET` | generated, printed | Stripe `whsec_` secret |
//! | `--layers` | `PALISADE_LAYERS` | `on` | `off` drops every palisade layer ([`Layers`]), to measure their cost |
//! | `--request-timeout` | `REQUEST_TIMEOUT` | `10s` | [`Config::request_timeout`]: time allowed to one request on the orders routes (`500ms`, `10s`, `2m`: [`parse_duration`]) |
//! | `--abandon-after` | `ABANDON_AFTER` | `15m` | [`Config::abandon_after`]: an order unfinished this long after its last attempt is cancelled and refunded; must exceed the request timeout |
//! | `--queue-payments` | `QUEUE_PAYMENTS` | `on` | [`PaymentsConfig::queue_when_unavailable`]: queue charges while payments are unavailable; see [When payments are unavailable](#when-payments-are-unavailable) |
//! | `--config` | `PALISADE_CONFIG` | none (built-in) | layer settings from a TOML or YAML file; see [Configuration](#configuration) |
//!
//! A bad flag (an unsupported database URL, a secret without `whsec_`, an
//! unreachable Redis or NATS, an abandon delay within the request timeout)
//! stops the start with a message and exit code 1; a malformed duration is a
//! usage error (exit code 2). Messages show URLs with their password replaced
//! by `***` ([`redact_url`]); generated secrets are printed once, at start-up,
//! and [`Config`]'s `Debug` output shows neither secrets nor passwords.
//!
//! # Routes
//!
//! - `POST /orders`: JSON `{"customer_id", "items": [{"product_id", "quantity" ≥ 1}],
//!   "total_amount" ≥ 0, "currency"}` with a required `Idempotency-Key`. Stores the
//!   order, charges it through the client stack, then marks it `pending` and stages
//!   its `OrderCreated` event in one database transaction ([`palisade::outbox::stage()`])
//!   and answers 201 with the order (see "Creating an order" below for the steps and
//!   what each failure leaves). The answers, all failures `application/problem+json`
//!   and none carrying an internal error's text:
//!   - 400 malformed JSON or no key, 422 invalid fields, or the key already used
//!     for another order (by this caller);
//!   - 402 the payment was declined (payments answered 402), 422 payments refused
//!     the charge with another 4xx: final for this key, and never retried;
//!   - 202 with `Location: /orders/{id}` and the order, `payment_queued`, when
//!     the payments breaker is open or its bulkhead full: the charge is queued and
//!     made once payments take calls again (see [When payments are
//!     unavailable](#when-payments-are-unavailable));
//!   - 502 payments failed or could not be reached after the retries, 503 with
//!     `Retry-After` when payments asked to slow down (408, 409, 429), or are
//!     unavailable with `--queue-payments off`: the charge is unconfirmed, and a
//!     retry with the same key charges at most once;
//!   - 503 with `Retry-After` when the order could not be stored after its charge:
//!     a retry with the same key finishes it without charging again;
//!   - 409 when the order under this key was cancelled and refunded (see
//!     [`Config::abandon_after`]): a new order needs a new key;
//!   - 500 when the database fails before anything is charged.
//!
//!   A repeat of a stored answer is replayed with `Idempotent-Replayed: true`
//!   and charges nothing.
//! - `GET /orders/{id}` (200 or 404) and `GET /orders` (oldest first): the
//!   orders whose payment was taken or queued (`payment_queued`, `pending`,
//!   `paid`, `payment_failed`); an order still being created, declined or
//!   cancelled is not shown.
//! - `POST /webhooks/payments`: Standard Webhooks, verified by the webhook
//!   layer with a replay store (memory, or Redis with [`Config::redis_url`]); `{"type": "payment.succeeded" |
//!   "payment.failed", "data": {"order_id"}}` moves a `pending` order to
//!   `paid` / `payment_failed` and answers 204. Statuses only move forward:
//!   providers do not promise the order of their events, so an event for an
//!   order already `paid` or `payment_failed` is answered 200 (acknowledged,
//!   so it is not redelivered), changes nothing, and is counted
//!   ([`LATE_EVENTS_METRIC`], and `webhooks.late_events` in `/health`). A
//!   redelivery of a message already applied is answered 200 and not applied
//!   again; one arriving while the first delivery is still being applied is a
//!   409 with `Retry-After`, so the sender retries; a forged or tampered one is
//!   a 401, an unsigned one a 400, an unknown order (or one not yet charged) a 404.
//! - `POST /webhooks/stripe`: the same for Stripe's `Stripe-Signature` and
//!   `payment_intent.succeeded` / `payment_intent.payment_failed` with
//!   `data.object.metadata.order_id` (the event's `id` is the replay key).
//! - `GET /health`: JSON with `status`, `layers` (`"on"` / `"off"`), the server
//!   bulkhead (`api.bulkhead`: in flight, limit; `null` with the layers off), the payments
//!   breaker (state, failure rate, consecutive failures, time until half-open), the
//!   payments bulkhead (in flight, queued, limit; both `null` with the layers off),
//!   the outbox (`outbox`: `pending`, `published` by this process, `dead`
//!   (dead-lettered), and `publisher`: `"connected"` or `"disconnected"`, whether the
//!   relay's publisher reaches its broker now, from
//!   [`Relay::publisher_health`](palisade::outbox::Relay::publisher_health)) and the stores
//!   in use: `"database": {"backend": "sqlite" | "postgres", "up"}`, `"redis": {"up"}`
//!   with Redis, `"nats": {"up", "state"}` with NATS, `"idempotency"` and
//!   `"webhook_replay"` (`"memory"`, `"redis"`, or `"none"` with the layers off),
//!   `"outbox_publisher"`, and `"webhooks": {"late_events"}` (payment events
//!   ignored because their order was already settled), and `"palisade"`, the fragment
//!   [`palisade::health::Health`] builds from the layers' handles (every breaker and
//!   bulkhead snapshot by name, the outbox's backlog and publisher). The status:
//!   - 200 `"ok"`: everything answers;
//!   - 200 `"degraded"`: the NATS broker is unreachable (`outbox.publisher` is
//!     `"disconnected"`). Orders are still taken:
//!     their events wait in the outbox (`outbox.pending` grows) and leave once the
//!     client has reconnected, so a load balancer must keep sending traffic;
//!   - 503 `"unavailable"`: the database, or Redis, does not answer; orders fail.
//! - `GET /metrics`: Prometheus text exposition of every palisade metric
//!   (metrics-exporter-prometheus, installed as the global `metrics` recorder).
//!
//! # The server stack on the orders routes, outermost first
//!
//! `POST /orders`, `GET /orders` and `GET /orders/{id}` share one stack, in
//! palisade's canonical server order:
//!
//! 0. **Deadline** ([`Config::request_timeout`]): the request's deadline,
//!    current for all the work that serves it, so the payments client's retry
//!    starts no wait that would end past it (payments asking for a longer
//!    `Retry-After` is answered 503 with `Retry-After` at once) and each
//!    attempt is sent what is left. When it passes, the work is dropped and
//!    the answer is a 504 problem+json (`deadline-exceeded`).
//! 1. **Idempotency** (`POST` only; key required; scoped by the caller's
//!    `Authorization`; memory store, or with [`Config::redis_url`] a Redis
//!    store shared by every instance, so a retry landing on another instance is
//!    replayed too): a replay skips everything inside, so it neither charges,
//!    stages an event nor takes a bulkhead permit. 5xx answers are not stored,
//!    so a client may retry after a payments or database failure; the handler
//!    keeps that retry to one charge and one order on its own (below), whether
//!    or not this layer saw the first attempt finish. A client that disconnects
//!    does not stop its request: it runs to the end and its response is stored,
//!    so the retry gets 409 and then that response.
//! 2. **Outbox publish hook**: gives the handler the request's
//!    [`OutboxContext`] and, after a `POST`, wakes the relay when the response is
//!    ready, so the `OrderCreated` event leaves at once instead of at the next poll.
//! 3. **Server bulkhead** ([`API`]): at most [`Config::max_concurrent_requests`]
//!    requests in the handlers, no queue: the excess is a 503 problem+json with
//!    `Retry-After` at once, so an overload sheds instead of piling up. `/health`
//!    reports it under `api.bulkhead`.
//! 4. **Timeout** ([`Config::request_timeout`], `--request-timeout`): a 504
//!    problem+json, the same bound as the deadline's, for work that does not
//!    end when the deadline drops it; a request cut off never shows its order (the last
//!    transaction is dropped uncommitted), and a retry with the same key
//!    finishes it with the charge the first attempt may have made.
//! 5. The handler.
//!
//! Steps 0 to 4 are palisade's one-call server stack
//! (`palisade::stack::server`), its parts set from the [`Config`].
//!
//! The webhook routes are verified first (see the routes above); `/health` and
//! `/metrics` have no layer, so they answer under overload.
//!
//! # Creating an order: one charge, one order
//!
//! Whatever fails, and wherever, a client that retries `POST /orders` with the
//! same `Idempotency-Key` (and the same order) gets exactly one charge and one
//! order; a client that never comes back is refunded. The handler keeps this
//! by itself, with the database as the log of each step: it holds with the
//! layers off, on any instance, and when the first attempt was cut off by the
//! request timeout or a dropped connection.
//!
//! 1. **The order's id derives from the caller and the key**: `ord_` and 32
//!    hex digits of SHA-256 over the caller's principal (its `Authorization`
//!    header, or none) and the key. Every attempt of one order names the same
//!    row and the same charge; two callers using the same key never meet.
//!    Without a key (with the layers off) every request is a new order.
//! 2. **Stored first**: the order is inserted as `new` (unless its row exists)
//!    with a fingerprint of what was ordered, before anything is charged. A row
//!    from an earlier attempt is checked: another order under the key is a 422;
//!    one already finished is answered 201 as it was; one declined is the 402
//!    again; one cancelled a 409. Every attempt also leases the row (the time it
//!    began), which keeps step 5 away while it may still run.
//! 3. **Charged under the order's id**: `POST {payments_url}/charges` with
//!    `Idempotency-Key: <order id>` and the body `{"order_id", "amount",
//!    "currency"}`, both made from the stored row, so a retry sends the same key
//!    with the same body and a provider answers the first charge instead of
//!    making another (or refusing a reused key). A decline (4xx) marks the order
//!    `declined`; an unconfirmed charge leaves it `new` for the retry.
//! 4. **Finished in one transaction**: `new` becomes `pending` and the
//!    `OrderCreated` event is staged together. If that fails, the answer is a
//!    503 with `Retry-After`, and the retry finds the order `new`, charges it
//!    again under the same key (payments answers the first charge) and
//!    finishes it. Two attempts racing each other finish it once: the other
//!    answers the finished order.
//! 5. **The compensating step**: an order left `new` for
//!    [`Config::abandon_after`] (default 15 minutes) after its last attempt
//!    (the client gave up) is marked `refunding`, refunded with
//!    `POST {payments_url}/refunds` `{"order_id"}` (`Idempotency-Key:
//!    refund-<order id>`; a 404, nothing was charged, counts as done) and marked
//!    `cancelled`; a failed refund is tried again at the next run. It runs at
//!    start-up and every minute ([`App::cancel_abandoned`] runs it at once).
//!    A later retry of the key is a 409. The delay must exceed the request
//!    timeout, so no attempt can still be charging an order being refunded.
//!
//! An order's statuses: `new` → `pending` (charged) → `paid` or
//! `payment_failed` (webhooks); `new` → `payment_queued` → `pending` (charged
//! later, below) or `declined`; `new` → `declined`; `new` → `refunding` →
//! `cancelled`. Only `payment_queued`, `pending`, `paid` and `payment_failed`
//! are shown by the routes.
//!
//! # When payments are unavailable
//!
//! While the payments breaker is open (or its bulkhead full), a charge is not
//! sent, so nothing can have been charged; instead of refusing the order,
//! the service queues its charge, the circuit breaker pattern's fallback:
//!
//! 1. The payments client the handler calls is wrapped in palisade's
//!    [`FallbackLayer`](palisade::fallback::FallbackLayer) with the ready
//!    [`QueueForLater`](palisade::fallback::QueueForLater) fallback. On the
//!    breaker's `CircuitOpen` (or the bulkhead's `BulkheadFull`) it moves the
//!    order from `new` to `payment_queued` and stages a [`CHARGE_QUEUED`]
//!    command in the outbox, **in one transaction**
//!    ([`Queued::with_update`](palisade::fallback::Queued::with_update)): no
//!    order is marked queued without its command, and no command exists for
//!    an order that is not. The answer is `202 Accepted` with `Location:
//!    /orders/{id}`; `GET /orders/{id}` shows `payment_queued` until the charge
//!    is made. A retry of the `POST` with the same key answers the same 202.
//! 2. The outbox relay delivers the command: instead of a broker, it goes to
//!    payments, through the same client stack without the fallback, with the
//!    order's id as the `Idempotency-Key` and the same body as a direct charge,
//!    so payments makes at most one charge for the order whichever path and
//!    however many attempts reach it. While the breaker stays open the
//!    delivery fails at once and the relay tries again after its backoff
//!    (0.5 s doubling to 5 minutes, 10 attempts; after those the command is
//!    dead-lettered and the order stays `payment_queued` until an operator
//!    requeues it with `palisade-outbox dead requeue`).
//! 3. Once payments take the charge, the order moves from `payment_queued` to
//!    `pending` with its `OrderCreated` event (whose causation id is the
//!    command's id) in one transaction, as a direct charge does, and the
//!    payment webhook moves it to `paid`. A decline moves it to `declined`. A
//!    redelivered command finds the order no longer `payment_queued` and
//!    charges nothing.
//!
//! The compensating step never takes a `payment_queued` order: it only
//! refunds orders left `new` (a client that gave up mid-charge), and a queued
//! order is finished by the relay, however long payments stay away.
//! Other failures (payments answering 5xx after the retries, timeouts) are
//! not queued: the charge may have been made, and the client's retry with the
//! same key settles it. `--queue-payments off`
//! ([`PaymentsConfig::queue_when_unavailable`]) answers 503 with `Retry-After`
//! instead of queueing.
//!
//! # The payments client stack, outermost first
//!
//! Every charge carries the `Idempotency-Key` derived above, so a retried
//! charge (by the stack or by the client) charges once. The handler's charges
//! go through a queueing fallback outside the stack (see [When payments are
//! unavailable](#when-payments-are-unavailable)).
//!
//! 1. **Idempotency key** (the one set by the handler; a fresh one if none).
//! 2. **Retry** ([`HttpRetryLayer`]): 503, 429, 408, timeouts and connect
//!    errors, [`PaymentsConfig::max_attempts`] attempts with exponential backoff
//!    and full jitter. Outside the breaker, so an open breaker is never retried.
//! 3. **Circuit breaker**: opens after [`PaymentsConfig::breaker_failures`]
//!    failed attempts in a row, probes after [`PaymentsConfig::breaker_open`]
//!    and closes after three probes in a row succeed.
//! 4. **Bulkhead**: at most [`PaymentsConfig::max_concurrent`] charges in
//!    flight, no queue: a slow payments service rejects the excess at once.
//! 5. **Timeout per attempt** ([`PaymentsConfig::attempt_timeout`]), sent to
//!    the payments service in `x-request-timeout-ms`.
//! 6. hyper-util's pooled client.
//!
//! Steps 1 to 5 are palisade's one-call client stack
//! (`palisade::stack::client`), its parts set from the [`PaymentsConfig`].
//!
//! # Configuration
//!
//! `--config palisade.toml` reads the layers' settings from a file
//! ([`palisade::config`]), with `PALISADE__...` environment variables over it
//! (`PALISADE__BULKHEAD__PAYMENTS__MAX_CONCURRENT=8`). The instances the
//! service uses are `payments` (circuit breaker, retry, bulkhead, in the
//! client stack above), `orders-api` (the server bulkhead) and `orders` (the
//! Idempotency-Key layer, which always requires a key whatever the file says:
//! an order's id is made from it). The file replaces [`PaymentsConfig`] and
//! the server bulkhead's limit; a layer the file does not name takes the
//! layer's own defaults. `palisade.toml` beside this crate holds the built-in
//! settings, to start from. A mistake in the file stops the start with the
//! key and the rule (`circuit_breaker.payments.failure_rate: failure_rate
//! must be within (0, 100] percent, got 150`).
//!
//! # Without the layers
//!
//! [`Config::layers`] = [`Layers::Off`] (`--layers off`, env `PALISADE_LAYERS=off`)
//! serves the same routes with the same handlers and no palisade layer, so a load
//! benchmark can compare the cost of the layers against the bare service:
//!
//! - no idempotency layer: `Idempotency-Key` is not required and no answer is
//!   stored or replayed; a repeated key still names the same order, which the
//!   handler answers from the database without charging again, and an order
//!   without a key is always a new one;
//! - no outbox publish hook: events are still staged in the order's transaction,
//!   and the relay finds them at its next poll (every second) instead of at once;
//! - no server bulkhead: the orders routes keep only the request timeout;
//! - no webhook verify layer: both webhook routes **accept unsigned bodies** and
//!   apply redelivered ones again. Never expose a service running this way;
//! - the payments client is the plain hyper client with only the per-attempt
//!   timeout: no retry, no circuit breaker, no bulkhead (`/health` reports the
//!   breaker and bulkhead as `null`).
//!
//! # Databases
//!
//! [`Config::database_url`] picks the [`Database`]: `sqlite:<file>` (created
//! when missing) or `postgres://…`. With PostgreSQL the orders table and the
//! outbox ([`palisade::outbox::postgres`]) live in the connections'
//! `search_path`, so several services (or tests) can share one database, each in
//! its own schema, by naming it in the URL:
//! `postgres://host/db?options=-c%20search_path%3Dorders_eu`. Every instance on
//! the same schema wakes the others' relays through `NOTIFY` on a channel named
//! after the schema ([`Database::wakeup_channel`]), so an event leaves at once
//! whichever instance committed it.
//!
//! # Shared stores
//!
//! With [`Config::redis_url`] (`--redis-url`, env `REDIS_URL`) the idempotency
//! records and the webhook replay ids live in Redis under
//! [`Config::redis_prefix`] (default [`DEFAULT_REDIS_PREFIX`]), so several
//! instances behind a load balancer answer a repeated key or a redelivered
//! webhook the same way. Without it both stores are in memory, per process.
//! The connection is made and checked with a `PING` at start-up: a service
//! configured for Redis does not start without it.
//!
//! # Event publishing
//!
//! The outbox relay publishes every staged event to the in-process channel
//! [`App::events`] by default. With [`Config::nats_url`] (`--nats-url`, env
//! `NATS_URL`) it publishes to NATS JetStream instead, on
//! [`Config::nats_subject_prefix`] followed by the event type (default
//! `orders.events.OrderCreated`), waiting for the stream's ack; the stream
//! [`Config::nats_stream`] (default `ORDERS`) capturing `orders.events.>` is
//! created at start-up when missing. `/health` names the publisher in
//! `stores.outbox_publisher` (`"nats"` or `"in-process channel"`) and, with
//! NATS, the client's connection in `stores.nats`. The broker must answer at
//! start-up; once running, the client reconnects on its own after an outage,
//! and the relay retries the events it could not publish meanwhile.
//!
//! # Example
//!
//! ```no_run
//! use axum_orders::{Config, PaymentsSim, app, generate_secret, serve};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let sim = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let payments_url = format!("http://{}", sim.local_addr()?).parse()?;
//! tokio::spawn(axum::serve(sim, PaymentsSim::default().router()).into_future());
//! let config = Config::new("sqlite:orders-example.db", payments_url, generate_secret()?, generate_secret()?);
//! let app = app(&config).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! serve(listener, app, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```

mod database;
pub mod payments_sim;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use futures_util::future::Either;
use futures_util::{Stream, StreamExt as _};
use http::Request;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use palisade::bulkhead::{BulkheadBuilder, BulkheadHandle, BulkheadLayer};
use palisade::circuit_breaker::{CircuitBreakerBuilder, CircuitBreakerHandle};
use palisade::config::Settings;
use palisade::core::error::is_local_rejection;
use palisade::core::problem::Problem;
use palisade::core::problem::problem_for_error;
use palisade::fallback::{Failure, Queued, Reason};
use palisade::idempotency::redis::RedisStore;
use palisade::idempotency::{HeaderScope, IdempotencyLayer, MemoryStore};
use palisade::outbox::{
    ChannelPublisher, Event, OutboxContext, PublishError, PublishHookLayer, Publisher, RelayHandle, Wakeup,
};
use palisade::outbox::{NatsPublisher, PublisherHealth};
use palisade::prelude::*;
use palisade::retry::{Backoff, HttpRequest, HttpRetryLayer, Jitter, ReplayBody, RetryBuilder};
use palisade::webhook::{MemoryReplayStore, RedisReplayStore, Scheme, Verifier, VerifyLayer};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower::ServiceBuilder;
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;

use database::Transition;
pub use database::{Backend, Database, UnsupportedDatabase};
pub use payments_sim::{Mode, PaymentsSim};

/// The default database: an SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite:axum-orders.db";

/// The default key prefix in Redis: `axum-orders:`, then the idempotency
/// store's and the replay stores' own keys.
pub const DEFAULT_REDIS_PREFIX: &str = "axum-orders:";

/// The default NATS subject prefix: events go to `orders.events.<event type>`.
pub const DEFAULT_NATS_SUBJECT_PREFIX: &str = "orders.events.";

/// The default JetStream stream for the events.
pub const DEFAULT_NATS_STREAM: &str = "ORDERS";

/// The name of the payments breaker, bulkhead and retry policy in metrics and logs.
pub const PAYMENTS: &str = "payments";

/// The name of the server bulkhead of the orders routes in metrics and logs.
pub const API: &str = "orders-api";

/// The name of the Idempotency-Key layer of the orders routes in metrics and logs.
pub const ORDERS: &str = "orders";

/// The counter of payment events that arrived for an order already settled
/// (acknowledged and ignored).
pub const LATE_EVENTS_METRIC: &str = "axum_orders_webhook_late_events_total";

/// Whether the service runs with its palisade layers (see the crate docs,
/// "Without the layers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Layers {
    /// Every layer: idempotency, outbox publish hook, webhook verification,
    /// and retry, circuit breaker and bulkhead around payments.
    #[default]
    On,
    /// No palisade layer, for measuring what they cost: not for production.
    Off,
}

impl Layers {
    /// `"on"` or `"off"`, as `/health` reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

/// The service's settings. Its `Debug` output shows URLs with their
/// passwords replaced by `***` and the webhook secrets as `***`.
#[derive(Clone)]
pub struct Config {
    /// Where orders and the outbox live: `sqlite:<file>` (created when
    /// missing) or `postgres://…` (see [`Database`]).
    pub database_url: String,
    /// The payments service's base URL; charges go to `{payments_url}/charges`,
    /// refunds to `{payments_url}/refunds`.
    pub payments_url: Uri,
    /// Standard Webhooks secret (`whsec_...`) of `POST /webhooks/payments`.
    pub webhook_secret: String,
    /// Stripe endpoint secret (`whsec_...`) of `POST /webhooks/stripe`.
    pub stripe_secret: String,
    /// The payments client stack's settings.
    pub payments: PaymentsConfig,
    /// Redis URL (`redis://...`) for the idempotency and webhook replay
    /// stores; `None` (the default) keeps both in memory.
    pub redis_url: Option<String>,
    /// What every key this service writes in Redis starts with (default
    /// [`DEFAULT_REDIS_PREFIX`]); instances sharing state must share it.
    pub redis_prefix: String,
    /// Keys the in-memory idempotency store holds at most (default
    /// [`DEFAULT_MAX_KEYS`](palisade::idempotency::DEFAULT_MAX_KEYS), 10,000;
    /// `--idempotency-keys`, env `IDEMPOTENCY_KEYS`); unused with Redis. A
    /// response is kept for the layer's retention (24 h), and none is dropped
    /// early, since that would let a retried `POST` charge twice: once every
    /// key is retained, an order with a new key is answered 503 with the
    /// time until the oldest expires. Size it above a retention's orders.
    pub idempotency_keys: usize,
    /// NATS URL (`nats://...`): the outbox publishes to JetStream instead of
    /// the in-process channel. `None` by default.
    pub nats_url: Option<String>,
    /// The subject of an event is this followed by its type (default
    /// [`DEFAULT_NATS_SUBJECT_PREFIX`]); ends in `.`.
    pub nats_subject_prefix: String,
    /// The JetStream stream capturing `{nats_subject_prefix}>`, created when
    /// missing (default [`DEFAULT_NATS_STREAM`]).
    pub nats_stream: String,
    /// With or without the palisade layers (default [`Layers::On`]).
    pub layers: Layers,
    /// Requests the orders routes serve at once (default 256): the server
    /// bulkhead, which answers the excess 503 at once instead of queueing it.
    pub max_concurrent_requests: usize,
    /// Time allowed to one request on the orders routes (default 10 s, above
    /// the payments stack's worst case of three 2 s attempts and their backoff;
    /// `--request-timeout`, env `REQUEST_TIMEOUT`).
    pub request_timeout: Duration,
    /// How long an order may stay unfinished after its last attempt before
    /// it is cancelled and its payment, if any, refunded (default 15 minutes;
    /// must exceed [`Config::request_timeout`], so no attempt is still
    /// running; `--abandon-after`, env `ABANDON_AFTER`). See the crate docs,
    /// "Creating an order".
    pub abandon_after: Duration,
    /// Layer settings read from a file (`--config`, TOML or YAML; see the
    /// crate docs, "Configuration"). When given, the file's instances
    /// `payments` (circuit breaker, retry, bulkhead), `orders-api` (bulkhead)
    /// and `orders` (idempotency) replace [`Config::payments`] and
    /// [`Config::max_concurrent_requests`]; without it, those apply.
    pub layer_settings: Option<Settings>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("payments_url", &redact_url(&self.payments_url.to_string()))
            .field("webhook_secret", &"***")
            .field("stripe_secret", &"***")
            .field("payments", &self.payments)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("idempotency_keys", &self.idempotency_keys)
            .field("nats_url", &self.nats_url.as_deref().map(redact_url))
            .field("nats_subject_prefix", &self.nats_subject_prefix)
            .field("nats_stream", &self.nats_stream)
            .field("layers", &self.layers)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("request_timeout", &self.request_timeout)
            .field("abandon_after", &self.abandon_after)
            .field("layer_settings", &self.layer_settings.is_some())
            .finish()
    }
}

/// `url` with the password of its user info, if any, replaced by `***`: for
/// every message that shows a URL.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let Some(at) = url[scheme_end..authority_end].rfind('@').map(|i| scheme_end + i) else {
        return url.to_owned();
    };
    match url[scheme_end..at].find(':').map(|i| scheme_end + i) {
        Some(colon) => format!("{}:***{}", &url[..colon], &url[at..]),
        None => url.to_owned(),
    }
}

/// Reads a duration as the duration flags take it, written the way
/// palisade's settings files write them (humantime: `500ms`, `10s`, `15m`,
/// `2h`, `1h 30m`); zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err(format!("{text:?}: the duration must be above zero")),
        Ok(duration) => Ok(duration),
        Err(e) => Err(format!(
            "{text:?} is not a duration such as 500ms, 10s, 15m or 1h 30m: {e}"
        )),
    }
}

impl Config {
    /// The settings for a database and a payments service, with the default
    /// client stack and the given webhook secrets.
    pub fn new(
        database_url: impl Into<String>,
        payments_url: Uri,
        webhook_secret: String,
        stripe_secret: String,
    ) -> Self {
        Self {
            database_url: database_url.into(),
            payments_url,
            webhook_secret,
            stripe_secret,
            payments: PaymentsConfig::default(),
            redis_url: None,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            idempotency_keys: palisade::idempotency::DEFAULT_MAX_KEYS,
            nats_url: None,
            nats_subject_prefix: DEFAULT_NATS_SUBJECT_PREFIX.to_owned(),
            nats_stream: DEFAULT_NATS_STREAM.to_owned(),
            layers: Layers::On,
            max_concurrent_requests: 256,
            request_timeout: Duration::from_secs(10),
            abandon_after: Duration::from_secs(15 * 60),
            layer_settings: None,
        }
    }
}

/// The payments client stack's settings.
#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    /// Attempts per charge, the first included (default 3).
    pub max_attempts: u32,
    /// First backoff wait, doubling up to 500 ms (default 50 ms).
    pub retry_backoff: Duration,
    /// Failed attempts in a row that open the breaker (default 5).
    pub breaker_failures: u32,
    /// How long the breaker stays open before probing (default 10 s).
    pub breaker_open: Duration,
    /// Charges in flight at once (default 32; no queue, the excess is rejected).
    pub max_concurrent: usize,
    /// Time allowed to one attempt (default 2 s).
    pub attempt_timeout: Duration,
    /// Queue a charge for later when the payments breaker is open or its
    /// bulkhead full (default true; `--queue-payments`): the order is stored
    /// `payment_queued`, the answer is `202 Accepted`, and the outbox relay
    /// charges it once payments take calls again. False answers 503 with
    /// `Retry-After` instead. See the crate docs, "When payments are unavailable".
    pub queue_when_unavailable: bool,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            retry_backoff: Duration::from_millis(50),
            breaker_failures: 5,
            breaker_open: Duration::from_secs(10),
            max_concurrent: 32,
            attempt_timeout: Duration::from_secs(2),
            queue_when_unavailable: true,
        }
    }
}

/// The payments client stack: a charge request in, the answer with its whole body out.
pub type PaymentsClient = BoxCloneSyncService<Request<Full<Bytes>>, http::Response<Bytes>, BoxError>;

/// The running service: its routes and what runs beside them.
#[derive(Debug)]
pub struct App {
    /// The routes, ready for `axum::serve` or `tower::ServiceExt::oneshot`.
    pub router: Router,
    /// Events the outbox relay published (the in-process publisher's
    /// channel); take it to read them, or they stop flowing once it is full.
    /// `None` when the events go to NATS.
    pub events: Option<mpsc::Receiver<Event>>,
    /// The payments circuit breaker; `None` with [`Layers::Off`].
    pub breaker: Option<CircuitBreakerHandle>,
    /// The orders database.
    pub database: Database,
    relay: RelayHandle,
    wakeup_tasks: Vec<JoinHandle<()>>,
    compensation: Compensation,
}

impl App {
    /// Stops the outbox relay after the batch in flight, and the refunds of
    /// abandoned orders.
    pub async fn shutdown(self) {
        for task in &self.wakeup_tasks {
            task.abort();
        }
        self.relay.shutdown().await;
    }

    /// Cancels the orders left unfinished for longer than
    /// [`Config::abandon_after`] and refunds their payments; returns how many
    /// it cancelled. The service does this on its own at start-up and then
    /// every minute; this runs it now.
    pub async fn cancel_abandoned(&self) -> Result<usize, BoxError> {
        self.compensation.run().await
    }
}

/// The compensating step of order creation: refunds what an order that was
/// never finished may have been charged.
#[derive(Debug, Clone)]
struct Compensation {
    database: Database,
    payments: PaymentsClient,
    refunds_uri: Uri,
    abandon_after: Duration,
}

impl Compensation {
    async fn run(&self) -> Result<usize, BoxError> {
        let abandon_after = i64::try_from(self.abandon_after.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms().saturating_sub(abandon_after);
        let mut cancelled = 0;
        for (id, status) in self.database.abandoned(cutoff).await? {
            // A `new` order is taken over unless an attempt leased it since the cutoff.
            if status == "new" && !self.database.claim_for_refund(&id, cutoff).await? {
                continue;
            }
            if self.refund(&id).await? {
                self.database.refunded(&id).await?;
                cancelled += 1;
            }
        }
        Ok(cancelled)
    }

    /// Asks payments to refund the order's charge; true once nothing is left
    /// to refund (refunded now or before, or never charged).
    async fn refund(&self, order_id: &str) -> Result<bool, BoxError> {
        let body = json!({ "order_id": order_id });
        let req = Request::post(self.refunds_uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(palisade::retry::IDEMPOTENCY_KEY, format!("refund-{order_id}"))
            .body(Full::new(Bytes::from(body.to_string())))?;
        match self.payments.clone().oneshot(req).await {
            Ok(res) if res.status().is_success() || res.status() == StatusCode::NOT_FOUND => Ok(true),
            Ok(_) | Err(_) => Ok(false),
        }
    }

    /// Runs at once and then every minute, until aborted.
    fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.run().await {
                    eprintln!("axum-orders: cancelling abandoned orders failed: {e}");
                }
            }
        })
    }
}

#[derive(Clone)]
struct AppState {
    database: Database,
    /// Payment events that arrived for an order already settled.
    late_events: Arc<AtomicU64>,
    payments: PaymentsClient,
    charges_uri: Uri,
    guards: Option<PaymentsGuards>,
    api_bulkhead: Option<BulkheadHandle>,
    layers: Layers,
    published: Arc<AtomicU64>,
    publisher: &'static str,
    /// A clone of the relay's publisher, whose health `/health` reports.
    event_publisher: EventPublisher,
    metrics: PrometheusHandle,
    redis: Option<ConnectionManager>,
    nats: Option<async_nats::Client>,
}

/// The handles of the payments stack's breaker and bulkhead, for `/health`.
#[derive(Debug, Clone)]
struct PaymentsGuards {
    breaker: CircuitBreakerHandle,
    bulkhead: BulkheadHandle,
}

/// Where the relay publishes: the in-process channel or NATS JetStream,
/// counting what it published for `/health`; queued charges (the
/// [`CHARGE_QUEUED`] commands) are delivered to payments instead.
#[derive(Debug, Clone)]
struct EventPublisher {
    target: PublishTarget,
    published: Arc<AtomicU64>,
    charges: QueuedCharges,
}

#[derive(Debug, Clone)]
enum PublishTarget {
    Channel(ChannelPublisher),
    // Boxed: the JetStream context is large and the channel small.
    Nats(Box<NatsPublisher>),
}

impl Publisher for EventPublisher {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        if event.event_type == CHARGE_QUEUED {
            return self.charges.deliver(event).await;
        }
        match &self.target {
            PublishTarget::Channel(channel) => channel.publish(event).await?,
            PublishTarget::Nats(nats) => nats.publish(event).await?,
        }
        self.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    // Forwarded so `/health` reports whether NATS is reachable, not the default.
    fn health(&self) -> PublisherHealth {
        match &self.target {
            PublishTarget::Channel(channel) => channel.health(),
            PublishTarget::Nats(nats) => nats.health(),
        }
    }

    // Forwarded so NATS pipelines an aggregate's run instead of one ack at a time;
    // a run holding a queued charge goes one event at a time, in order.
    fn publish_run<'a>(&'a self, events: &'a [Event]) -> impl Stream<Item = Result<(), PublishError>> + Send + 'a {
        if events.iter().any(|event| event.event_type == CHARGE_QUEUED) {
            return Either::Left(futures_util::stream::iter(events).then(move |event| self.publish(event)));
        }
        let run = match &self.target {
            PublishTarget::Channel(channel) => Either::Left(channel.publish_run(events)),
            PublishTarget::Nats(nats) => Either::Right(nats.publish_run(events)),
        };
        Either::Right(run.inspect(|result| {
            if result.is_ok() {
                self.published.fetch_add(1, Ordering::Relaxed);
            }
        }))
    }
}

/// The type of the outbox command a queued charge is: staged with the order
/// marked `payment_queued`, delivered by the relay to payments.
pub const CHARGE_QUEUED: &str = "ChargeQueued";

/// What the queueing fallback makes of a failed charge: a [`CHARGE_QUEUED`]
/// command for the order, staged as the order moves from `new` to
/// `payment_queued`, when payments are unavailable (the breaker is open or
/// the bulkhead full: nothing was sent, so nothing can have been charged);
/// `None` (the failure goes back to the handler) for every other failure.
/// The order's id and the request's outbox context come with the charge
/// request ([`ChargeOf`]).
pub(crate) fn queued_charge(failure: &Failure<http::Response<Bytes>>) -> Option<Queued> {
    if !matches!(failure.reason(), Reason::CircuitOpen | Reason::BulkheadFull) {
        return None;
    }
    let ChargeOf { order_id, ctx } = failure.parts().extensions.get::<ChargeOf>()?;
    let event = ctx
        .event(
            CHARGE_QUEUED,
            "Order",
            order_id.clone(),
            json!({ "order_id": order_id }),
        )
        .with_destination(CHARGE_QUEUED);
    Some(Queued::new(event, format!("/orders/{order_id}")).with_update(database::QUEUE_CHARGE, [order_id.clone()]))
}

/// Carried by a charge request from the handler: the order being charged
/// and the request's outbox context, for [`queued_charge`].
#[derive(Debug, Clone)]
struct ChargeOf {
    order_id: String,
    ctx: OutboxContext,
}

/// Delivers queued charges: the relay hands it each [`CHARGE_QUEUED`]
/// command, and it charges the order through the payments stack (without
/// the queueing fallback) under the order's id, as the first attempt would
/// have. An error is transient: the relay tries again after its backoff.
#[derive(Debug, Clone)]
struct QueuedCharges {
    database: Database,
    payments: PaymentsClient,
    charges_uri: Uri,
}

impl QueuedCharges {
    async fn deliver(&self, command: &Event) -> Result<(), PublishError> {
        let row = self
            .database
            .order(&command.aggregate_id)
            .await
            .map_err(PublishError::transient)?;
        let Some(row) = row else {
            // Not visible: refunded, declined or unknown; nothing to charge.
            return Ok(());
        };
        let order = order_from_row(row).map_err(PublishError::permanent)?;
        if order.status != "payment_queued" {
            // Charged already (a redelivery, after the order was finished).
            return Ok(());
        }
        match charge(&self.payments, &self.charges_uri, &order, None).await {
            Charge::Made => {
                // The `OrderCreated` event carries the command's ids, and names it as its cause.
                let ctx = OutboxContext::caused_by(command, Some(Arc::from("axum-orders")));
                self.database
                    .complete(&ctx, &order, "payment_queued")
                    .await
                    .map(drop)
                    .map_err(PublishError::transient)
            }
            Charge::Declined(_) => self.database.decline(&order.id).await.map_err(PublishError::transient),
            Charge::Queued | Charge::Failed(_) => Err(PublishError::transient("payments did not take the charge")),
        }
    }
}

/// The process's Prometheus recorder, installed as the global `metrics`
/// recorder on first use. When the embedding program installed another
/// recorder first, the metrics go there and this exposition stays empty.
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Durations as Prometheus histograms (`_bucket` series), so
            // dashboards can aggregate them across instances.
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".to_owned()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    ],
                )
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                eprintln!("axum-orders: a metrics recorder was already installed; /metrics stays empty");
            }
            handle
        })
        .clone()
}

/// Opens the database (creating the tables when missing), builds the
/// payments client stack, starts the outbox relay and returns the routes.
pub async fn app(config: &Config) -> Result<App, BoxError> {
    if config.abandon_after <= config.request_timeout {
        return Err(
            "abandon_after (--abandon-after) must exceed request_timeout (--request-timeout): \
                    an order still being created is never cancelled"
                .into(),
        );
    }
    let database = Database::connect(&config.database_url).await?;
    let metrics = prometheus();
    let published = Arc::new(AtomicU64::new(0));
    let (target, events, nats) = match &config.nats_url {
        Some(url) => {
            let (client, publisher) = nats_publisher(url, &config.nats_subject_prefix, &config.nats_stream).await?;
            (PublishTarget::Nats(Box::new(publisher)), None, Some(client))
        }
        None => {
            let (channel, events) = ChannelPublisher::new(1024);
            (PublishTarget::Channel(channel), Some(events), None)
        }
    };
    let publisher_name = if nats.is_some() { "nats" } else { "in-process channel" };

    let (payments, guards) = match config.layers {
        Layers::On => {
            let (client, breaker, bulkhead) = payments_client(&config.payments, config.layer_settings.as_ref())?;
            (client, Some(PaymentsGuards { breaker, bulkhead }))
        }
        Layers::Off => (plain_payments_client(&config.payments), None),
    };
    let payments_base = config.payments_url.to_string();
    let charges_uri: Uri = format!("{}/charges", payments_base.trim_end_matches('/')).parse()?;
    let refunds_uri = format!("{}/refunds", payments_base.trim_end_matches('/')).parse()?;
    // Orders charge through the queueing fallback; queued charges and refunds
    // go straight to the stack (a queued charge is never queued again).
    let order_payments = if config.layers == Layers::On && config.payments.queue_when_unavailable {
        database.queue_charges(payments.clone())?
    } else {
        payments.clone()
    };

    let publisher = EventPublisher {
        target,
        published: published.clone(),
        charges: QueuedCharges {
            database: database.clone(),
            payments: payments.clone(),
            charges_uri: charges_uri.clone(),
        },
    };
    let wakeup = Wakeup::new();
    let event_publisher = publisher.clone();
    let (relay, wakeup_tasks) = database.spawn_relay(publisher, wakeup.clone()).await?;
    let late_events = Arc::new(AtomicU64::new(0));
    let redis = match &config.redis_url {
        Some(url) => Some(connect_redis(url).await?),
        None => None,
    };
    let (orders_api, api_bulkhead) = orders_api(config, redis.as_ref(), wakeup)?;
    let webhooks = |scheme: Scheme, secret: &str, sender: &str, shape: EventShape| {
        let replay = redis
            .as_ref()
            .map(|conn| RedisReplayStore::new(conn.clone(), format!("{}webhook:{sender}:", config.redis_prefix)));
        webhook_route(
            config.layers,
            scheme,
            secret,
            replay,
            database.clone(),
            late_events.clone(),
            shape,
        )
    };
    let payments_webhooks = webhooks(
        Scheme::StandardWebhooks,
        &config.webhook_secret,
        "payments",
        PAYMENTS_EVENTS,
    )?;
    let stripe_webhooks = webhooks(Scheme::Stripe, &config.stripe_secret, "stripe", STRIPE_EVENTS)?;

    let compensation = Compensation {
        database: database.clone(),
        payments: payments.clone(),
        refunds_uri,
        abandon_after: config.abandon_after,
    };
    let mut wakeup_tasks = wakeup_tasks;
    wakeup_tasks.push(compensation.clone().spawn());
    let state = AppState {
        database: database.clone(),
        late_events,
        payments: order_payments,
        charges_uri,
        guards: guards.clone(),
        api_bulkhead,
        layers: config.layers,
        published,
        publisher: publisher_name,
        event_publisher,
        metrics,
        redis,
        nats,
    };
    let router = orders_api
        .route("/health", get(health))
        .route("/metrics", get(render_metrics))
        .route_service("/webhooks/payments", payments_webhooks)
        .route_service("/webhooks/stripe", stripe_webhooks)
        .with_state(state);
    Ok(App {
        router,
        events,
        breaker: guards.map(|guards| guards.breaker),
        database,
        relay,
        wakeup_tasks,
        compensation,
    })
}

/// The orders routes behind the server stack, outermost first: idempotency
/// (in Redis when connected, else in memory; `POST` only, other methods pass
/// through), the outbox publish hook (waking the relay after a `POST`), the
/// server bulkhead, the request timeout. With the layers off, the timeout alone.
/// Returns the bulkhead's handle for `/health`.
fn orders_api(
    config: &Config,
    redis: Option<&ConnectionManager>,
    wakeup: Wakeup,
) -> Result<(Router<AppState>, Option<BulkheadHandle>), BoxError> {
    let routes = Router::new()
        .route("/orders", post(create_order).get(list_orders))
        .route("/orders/{id}", get(get_order));
    if config.layers == Layers::Off {
        let routes = routes.layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(palisade::core::problem::handle_error))
                .timeout(config.request_timeout),
        );
        return Ok((routes, None));
    }
    let bulkhead = match &config.layer_settings {
        Some(settings) => settings.bulkhead(API),
        None => BulkheadLayer::builder(API).max_concurrent(config.max_concurrent_requests),
    }
    .build()?;
    let handle = Some(bulkhead.handle());
    // The canonical server stack in one call: deadline → idempotency →
    // outbox hook → bulkhead → timeout, the last two answered as
    // problem+json. The deadline is the request's: the payments retry waits
    // only where an attempt can still fit in it (a `Retry-After` past it is
    // answered 503 at once, not cut by the timeout as a 504).
    let stack = palisade::stack::server(API)
        .deadline(config.request_timeout)
        .outbox_hook(PublishHookLayer::new(wakeup).source("axum-orders"))
        .bulkhead(bulkhead)
        .timeout(config.request_timeout);
    // Scoped by the caller's credentials, as the order ids are, and a key is
    // always required on `POST /orders`, in the header the handler reads: an
    // order's id is made from it, whatever the settings file says.
    let idempotency = match &config.layer_settings {
        Some(settings) => settings.idempotency(ORDERS),
        None => IdempotencyLayer::builder(ORDERS),
    }
    .methods([http::Method::POST])
    .header_name(palisade::retry::IDEMPOTENCY_KEY)
    .require_key(true)
    .scope(HeaderScope(http::header::AUTHORIZATION));
    let routes = match redis {
        Some(conn) => {
            let store = RedisStore::with_prefix(conn.clone(), format!("{}idempotency:", config.redis_prefix))?;
            routes.layer(stack.idempotency(idempotency.store(store)).build()?)
        }
        None => {
            let store = MemoryStore::builder().max_keys(config.idempotency_keys).build()?;
            routes.layer(stack.idempotency(idempotency.store(store)).build()?)
        }
    };
    Ok((routes, handle))
}

/// Connects to NATS, makes sure the stream capturing `{subject_prefix}>`
/// exists, and returns the client (for `/health`) and a JetStream publisher
/// on `subject_prefix`.
async fn nats_publisher(
    url: &str,
    subject_prefix: &str,
    stream: &str,
) -> Result<(async_nats::Client, NatsPublisher), BoxError> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", redact_url(url)))?;
    let jetstream = async_nats::jetstream::new(client.clone());
    jetstream
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: stream.to_owned(),
            subjects: vec![format!("{subject_prefix}>")],
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot create the JetStream stream {stream}: {e}"))?;
    // With the client, the publisher's health follows its connection.
    let publisher = NatsPublisher::from_context(jetstream)
        .with_client(client.clone())
        .with_prefix(subject_prefix);
    Ok((client, publisher))
}

/// Opens a connection to Redis that reconnects after it is lost (so the
/// stores serve again once Redis is back), once a first connection has shown
/// that Redis is there and answers a `PING`: a wrong URL fails start-up at
/// once instead of being retried in the background.
async fn connect_redis(url: &str) -> Result<ConnectionManager, BoxError> {
    let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL {:?}: {e}", redact_url(url)))?;
    let cannot_connect = |e: &dyn std::fmt::Display| format!("cannot connect to Redis at {}: {e}", redact_url(url));
    let mut probe = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| cannot_connect(&e))?;
    redis_ping(&mut probe)
        .await
        .map_err(|e| format!("Redis at {} does not answer PING: {e}", redact_url(url)))?;
    Ok(client.get_connection_manager().await.map_err(|e| cannot_connect(&e))?)
}

/// Whether Redis answers a `PING` within a second (a dead server must not
/// hold `/health` for the client's whole response timeout).
async fn redis_ping(conn: &mut impl redis::aio::ConnectionLike) -> Result<(), BoxError> {
    let ping = redis::cmd("PING");
    let ping = ping.query_async::<String>(conn);
    match tokio::time::timeout(Duration::from_secs(1), ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err("no answer within 1 s".into()),
    }
}

/// Serves the app on the listener until `shutdown` completes, then stops the relay.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    axum::serve(listener, app.router.clone())
        .with_graceful_shutdown(shutdown)
        .await?;
    app.shutdown().await;
    Ok(())
}

/// A fresh webhook secret: `whsec_` and 24 random bytes in base64.
pub fn generate_secret() -> Result<String, BoxError> {
    use base64::Engine as _;
    let mut key = [0_u8; 24];
    getrandom::fill(&mut key).map_err(|e| format!("no randomness for a webhook secret: {e}"))?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    ))
}

/// Sends a request through hyper-util's pooled client and collects the answer's body.
fn transport<B>() -> impl tower::Service<
    Request<B>,
    Response = http::Response<Bytes>,
    Error = BoxError,
    Future = impl Future<Output = Result<http::Response<Bytes>, BoxError>> + Send,
> + Clone
+ Send
+ Sync
+ 'static
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let client: Client<HttpConnector, B> = Client::builder(TokioExecutor::new()).build_http();
    tower::service_fn(move |req: Request<B>| {
        let sent = client.request(req);
        async move {
            let (parts, body) = sent.await?.into_parts();
            Ok::<_, BoxError>(http::Response::from_parts(parts, body.collect().await?.to_bytes()))
        }
    })
}

/// The builders of the payments client's breaker, retry and bulkhead from
/// `config`, without a settings file (`palisade.toml` says the same).
pub fn built_in_payments_layers(
    config: &PaymentsConfig,
) -> (
    CircuitBreakerBuilder,
    RetryBuilder<HttpClassifier, HttpRequest>,
    BulkheadBuilder,
) {
    (
        CircuitBreakerBuilder::consecutive(PAYMENTS)
            .consecutive_failures(config.breaker_failures)
            .open_duration(config.breaker_open),
        HttpRetryLayer::builder(PAYMENTS)
            .max_attempts(config.max_attempts)
            .backoff(Backoff::exponential(
                config.retry_backoff,
                2.0,
                Duration::from_millis(500),
            ))
            .jitter(Jitter::Full),
        BulkheadLayer::builder(PAYMENTS).max_concurrent(config.max_concurrent),
    )
}

/// Builds the payments client stack over hyper-util's client; with it the
/// handles of its breaker and bulkhead. The layers take the `payments`
/// instances of `settings` when given, else `config`.
pub fn payments_client(
    config: &PaymentsConfig,
    settings: Option<&Settings>,
) -> Result<(PaymentsClient, CircuitBreakerHandle, BulkheadHandle), BoxError> {
    let (breaker, retry, bulkhead) = match settings {
        Some(settings) => (
            settings.circuit_breaker(PAYMENTS),
            settings.http_retry(PAYMENTS),
            settings.bulkhead(PAYMENTS),
        ),
        None => built_in_payments_layers(config),
    };
    let breaker = breaker.classifier(HttpClassifier).build()?;
    let handle = breaker.handle();
    let bulkhead = bulkhead.build()?;
    let bulkhead_handle = bulkhead.handle();
    // The canonical client stack in one call, its parts set from the settings.
    let stack = palisade::stack::client(PAYMENTS)
        .retry(retry)
        .circuit_breaker(breaker)
        .bulkhead(bulkhead)
        .attempt_timeout(config.attempt_timeout)
        .build()?;
    let stack = tower::Layer::layer(&stack, transport::<ReplayBody<Full<Bytes>>>());
    Ok((BoxCloneSyncService::new(stack), handle, bulkhead_handle))
}

/// The payments client without palisade's layers ([`Layers::Off`]): hyper-util's
/// client with only the per-attempt timeout, one attempt per charge.
pub fn plain_payments_client(config: &PaymentsConfig) -> PaymentsClient {
    let stack = ServiceBuilder::new()
        .timeout(config.attempt_timeout)
        .service(transport::<Full<Bytes>>());
    BoxCloneSyncService::new(stack)
}

/// An order as the client sends it.
#[derive(Debug, Clone, Deserialize)]
struct NewOrder {
    customer_id: String,
    items: Vec<Item>,
    total_amount: i64,
    currency: String,
}

/// One line of an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Item {
    product_id: String,
    quantity: i64,
}

/// An order as stored and answered.
#[derive(Debug, Clone, Serialize)]
struct Order {
    id: String,
    status: String,
    customer_id: String,
    items: Vec<Item>,
    total_amount: i64,
    currency: String,
    created_at: String,
}

fn parse_order(body: &[u8]) -> Result<NewOrder, Problem> {
    let order: NewOrder = serde_json::from_slice(body).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        Problem::new(status)
            .with_title("Invalid order")
            .with_detail(e.to_string())
    })?;
    let invalid = |detail: &'static str| {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
            .with_title("Invalid order")
            .with_detail(detail)
    };
    if order.customer_id.trim().is_empty() {
        return Err(invalid("customer_id must not be empty"));
    }
    if order.items.is_empty() {
        return Err(invalid("items must not be empty"));
    }
    if order.items.iter().any(|item| item.product_id.trim().is_empty()) {
        return Err(invalid("every item needs a product_id"));
    }
    if order.items.iter().any(|item| item.quantity < 1) {
        return Err(invalid("every item's quantity must be at least 1"));
    }
    if order.total_amount < 0 {
        return Err(invalid("total_amount must not be negative"));
    }
    if order.currency.len() != 3 || !order.currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid("currency must be a three-letter ISO 4217 code"));
    }
    Ok(order)
}

/// The caller's principal: the credentials it sent in `Authorization` (as a
/// gateway in front checked them), or none. Orders, idempotency records and
/// the keys sent to payments are scoped by it, so callers with different
/// credentials never share an order or a charge, whatever keys they choose.
fn principal(headers: &HeaderMap) -> &[u8] {
    headers
        .get(http::header::AUTHORIZATION)
        .map_or(&[], http::HeaderValue::as_bytes)
}

/// The id of the order a principal's `Idempotency-Key` creates: `ord_` and 32
/// hex digits of SHA-256 over both (length-prefixed, so no two pairs meet).
/// Every attempt with the key names the same order, and the same charge.
fn order_id_for(principal: &[u8], key: &[u8]) -> String {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(b"axum-orders order\0");
    for part in [principal, key] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    format!("ord_{}", hex::encode(&digest[..16]))
}

/// The fingerprint of an order as requested (after validation, so spacing
/// and key order in the JSON do not matter): a retry under the same key must
/// ask for the same order.
fn request_hash(order: &NewOrder) -> String {
    use sha2::Digest as _;
    let canonical = json!({
        "customer_id": order.customer_id,
        "items": order.items,
        "total_amount": order.total_amount,
        "currency": order.currency.to_ascii_uppercase(),
    });
    hex::encode(sha2::Sha256::digest(canonical.to_string().as_bytes()))
}

/// Now, in Unix milliseconds (an order's lease).
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Now in RFC 3339, UTC, with microseconds: fixed width, so the text sorts in time order.
fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.microsecond()
    )
}

/// The answer for a server-side failure: the status and a fixed text, never
/// the error's own (which can name tables, files or hosts).
fn internal() -> Response {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR)
        .with_title("Internal error")
        .with_detail("the request failed inside the service")
        .into_response()
}

/// An order this principal created under this key, answered as created (also
/// to a retry whose first answer was lost or failed).
fn created(order: Order) -> Response {
    (StatusCode::CREATED, Json(order)).into_response()
}

async fn create_order(
    State(state): State<AppState>,
    hooked: Option<Extension<OutboxContext>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The publish hook gives the context; without the layers it is read from the headers here.
    let ctx = match hooked {
        Some(Extension(ctx)) => ctx,
        None => OutboxContext::from_headers(&headers, Some(Arc::from("axum-orders"))),
    };
    let new = match parse_order(&body) {
        Ok(new) => new,
        Err(problem) => return problem.into_response(),
    };
    // The key as the idempotency layer reads it (`"k1"` and `k1` are one key
    // there, so they must be one order here). Without one (only possible with
    // the layers off) every request is another order.
    let id = match headers
        .get(palisade::retry::IDEMPOTENCY_KEY)
        .and_then(palisade::idempotency::parse_key)
    {
        Some(key) => order_id_for(principal(&headers), &key),
        None => format!("ord_{}", uuid::Uuid::now_v7().simple()),
    };
    let hash = request_hash(&new);
    let order = Order {
        id,
        status: "new".to_owned(),
        currency: new.currency.to_ascii_uppercase(),
        customer_id: new.customer_id,
        items: new.items,
        total_amount: new.total_amount,
        created_at: timestamp(),
    };
    // 1. The order is stored (as `new`) before anything is charged, so a retry
    //    finds it and finishes it, or the compensation refunds it.
    let (row, first_hash) = match state.database.reserve(&order, &hash, now_ms()).await {
        Ok(Some(reserved)) => reserved,
        Ok(None) | Err(_) => return internal(),
    };
    if first_hash != hash {
        return Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
            .with_title("Idempotency-Key reused")
            .with_detail("this Idempotency-Key was first used for another order; use a new key for a new order")
            .into_response();
    }
    let Ok(order) = order_from_row(row) else {
        return internal();
    };
    if order.status != "new" {
        return answer_for(order);
    }
    // 2. The charge, under a key derived from the order's id: a retry sends the
    //    same key and the same body, so payments answers the first charge.
    match charge(&state.payments, &state.charges_uri, &order, Some(&ctx)).await {
        Charge::Made => {}
        Charge::Queued => {
            return queued(Order {
                status: "payment_queued".to_owned(),
                ..order
            });
        }
        Charge::Declined(status) => {
            // Best effort: if this write fails, a retry asks payments again and is declined again.
            let _ = state.database.decline(&order.id).await;
            return declined(status);
        }
        Charge::Failed(problem) => return problem.into_response(),
    }
    // 3. The order moves to `pending` with its event, in one transaction.
    match state.database.complete(&ctx, &order, "new").await {
        Ok(true) => created(Order {
            status: "pending".to_owned(),
            ..order
        }),
        // Finished meanwhile by a concurrent retry, or given up and refunded.
        Ok(false) => match state.database.order(&order.id).await {
            Ok(Some(row)) => order_from_row(row).map_or_else(|_| internal(), created),
            Ok(None) => cancelled(),
            Err(_) => internal(),
        },
        Err(_) => Problem::new(StatusCode::SERVICE_UNAVAILABLE)
            .with_title("The order could not be stored")
            .with_detail(
                "the payment was taken but the order could not be stored; retry with the same \
                 Idempotency-Key to finish it (the payment is not taken again)",
            )
            .with_retry_after(Duration::from_secs(1))
            .into_response(),
    }
}

/// An order whose charge is queued: `202 Accepted`, with the order and its
/// URL in `Location`, where its status can be polled.
fn queued(order: Order) -> Response {
    let location = format!("/orders/{}", order.id);
    (StatusCode::ACCEPTED, [(http::header::LOCATION, location)], Json(order)).into_response()
}

/// The answer for an order this key's earlier attempts took past `new`.
fn answer_for(order: Order) -> Response {
    match order.status.as_str() {
        "payment_queued" => queued(order),
        "pending" | "paid" | "payment_failed" => created(order),
        "declined" => declined(StatusCode::PAYMENT_REQUIRED),
        _ => cancelled(),
    }
}

/// A decline: 402 when payments said 402, else 422 with its status.
fn declined(status: StatusCode) -> Response {
    if status == StatusCode::PAYMENT_REQUIRED {
        Problem::new(StatusCode::PAYMENT_REQUIRED)
            .with_title("The payment was declined")
            .with_detail("the payments service declined the charge; use a new Idempotency-Key to try again")
            .into_response()
    } else {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
            .with_title("The payment was refused")
            .with_detail(format!(
                "the payments service refused the charge ({}); use a new Idempotency-Key to try again",
                status.as_u16()
            ))
            .into_response()
    }
}

fn cancelled() -> Response {
    Problem::new(StatusCode::CONFLICT)
        .with_title("The order was cancelled")
        .with_detail(
            "the order under this Idempotency-Key could not be finished and its payment was refunded; \
             use a new key for a new order",
        )
        .into_response()
}

/// What became of a charge.
enum Charge {
    /// Payments took it (now, or on an earlier attempt under the same key).
    Made,
    /// Payments answered a 4xx other than 408, 409 and 429: it will not take it.
    Declined(StatusCode),
    /// Payments are unavailable: the order is now `payment_queued` and its
    /// charge staged for the relay (the queueing fallback did both).
    Queued,
    /// Not confirmed: unreachable, failing, busy, or refused locally. A retry
    /// with the same key charges at most once.
    Failed(Problem),
}

/// Charges the order through `payments`; its `Idempotency-Key` is the
/// order's id, which derives from the principal and the client's key. With
/// the request's outbox context (`ctx`), a queueing fallback around
/// `payments` can queue the charge.
async fn charge(payments: &PaymentsClient, charges_uri: &Uri, order: &Order, ctx: Option<&OutboxContext>) -> Charge {
    let body = json!({ "order_id": order.id, "amount": order.total_amount, "currency": order.currency });
    let req = Request::post(charges_uri.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(palisade::retry::IDEMPOTENCY_KEY, order.id.as_str())
        .body(Full::new(Bytes::from(body.to_string())));
    let Ok(mut req) = req else {
        return Charge::Failed(Problem::new(StatusCode::INTERNAL_SERVER_ERROR));
    };
    if let Some(ctx) = ctx {
        req.extensions_mut().insert(ChargeOf {
            order_id: order.id.clone(),
            ctx: ctx.clone(),
        });
    }
    let unconfirmed = |detail: &'static str| {
        Charge::Failed(
            Problem::new(StatusCode::BAD_GATEWAY)
                .with_title("The payment failed")
                .with_detail(detail),
        )
    };
    match payments.clone().oneshot(req).await {
        Ok(res) if res.extensions().get::<Queued>().is_some() => Charge::Queued,
        Ok(res) if res.status().is_success() => Charge::Made,
        Ok(res)
            if matches!(
                res.status(),
                StatusCode::REQUEST_TIMEOUT | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS
            ) =>
        {
            Charge::Failed(
                Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                    .with_title("Payments are busy")
                    .with_detail("the payments service asked to retry later; retry with the same Idempotency-Key")
                    .with_retry_after(Duration::from_secs(1)),
            )
        }
        Ok(res) if res.status().is_client_error() => Charge::Declined(res.status()),
        Ok(_) => unconfirmed(
            "the payments service failed after the retries; retry with the same Idempotency-Key \
             (the payment is taken at most once)",
        ),
        Err(e) if is_local_rejection(&*e) => Charge::Failed(problem_for_error(&*e)),
        Err(_) => unconfirmed(
            "the payments service could not be reached; retry with the same Idempotency-Key \
             (the payment is taken at most once)",
        ),
    }
}

/// What a payment webhook says happened to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PaymentOutcome {
    /// The order's status becomes this.
    Status { order_id: String, status: &'static str },
    /// An event this service does not act on.
    Ignored,
}

/// Where a sender's payment events say what happened to which order.
#[derive(Debug, Clone, Copy)]
struct EventShape {
    /// The event type of a successful payment.
    succeeded: &'static str,
    /// The event type of a failed payment.
    failed: &'static str,
    /// JSON pointer to the order id.
    order_id_at: &'static str,
}

/// Standard Webhooks payment events: `{"type": "payment.succeeded" | "payment.failed", "data": {"order_id"}}`.
const PAYMENTS_EVENTS: EventShape = EventShape {
    succeeded: "payment.succeeded",
    failed: "payment.failed",
    order_id_at: "/data/order_id",
};

/// Stripe events: `payment_intent.succeeded` / `payment_intent.payment_failed`
/// with the order in `data.object.metadata.order_id`.
const STRIPE_EVENTS: EventShape = EventShape {
    succeeded: "payment_intent.succeeded",
    failed: "payment_intent.payment_failed",
    order_id_at: "/data/object/metadata/order_id",
};

impl EventShape {
    fn read(self, event: &serde_json::Value) -> Option<PaymentOutcome> {
        let kind = event.get("type")?.as_str()?;
        let status = if kind == self.succeeded {
            "paid"
        } else if kind == self.failed {
            "payment_failed"
        } else {
            return Some(PaymentOutcome::Ignored);
        };
        let order_id = event.pointer(self.order_id_at)?.as_str()?.to_owned();
        Some(PaymentOutcome::Status { order_id, status })
    }
}

/// A webhook route: with the layers, the receiver behind the verify layer
/// (with replay protection, so a redelivered message is answered without
/// being applied again; in Redis when `replay` is given, else in memory);
/// without them, the bare receiver, which applies any body it is sent.
fn webhook_route(
    layers: Layers,
    scheme: Scheme,
    secret: &str,
    replay: Option<RedisReplayStore>,
    database: Database,
    late_events: Arc<AtomicU64>,
    shape: EventShape,
) -> Result<BoxCloneSyncService<Request<axum::body::Body>, Response, Infallible>, BoxError> {
    if layers == Layers::Off {
        let receiver = tower::service_fn(move |req: Request<axum::body::Body>| {
            let database = database.clone();
            let late_events = late_events.clone();
            async move {
                Ok::<_, Infallible>(match req.into_body().collect().await {
                    Ok(body) => apply_webhook(&database, &late_events, &body.to_bytes(), shape).await,
                    Err(_) => Problem::new(StatusCode::BAD_REQUEST)
                        .with_title("Unreadable body")
                        .with_detail("the request body could not be read")
                        .into_response(),
                })
            }
        });
        return Ok(BoxCloneSyncService::new(receiver));
    }
    let verify = VerifyLayer::builder(Verifier::builder(scheme).secret(secret).build()?);
    let verify = match replay {
        Some(store) => verify.replay_store(store),
        None => verify.replay_store(MemoryReplayStore::new()),
    }
    .build()?;
    let receiver = tower::service_fn(move |req: Request<Full<Bytes>>| {
        let database = database.clone();
        let late_events = late_events.clone();
        async move {
            let body = match req.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(apply_webhook(&database, &late_events, &body, shape).await)
        }
    });
    Ok(BoxCloneSyncService::new(
        ServiceBuilder::new().webhook_verify(verify).service(receiver),
    ))
}

async fn apply_webhook(database: &Database, late_events: &AtomicU64, body: &[u8], shape: EventShape) -> Response {
    let event: Option<PaymentOutcome> = serde_json::from_slice(body)
        .ok()
        .as_ref()
        .and_then(|event| shape.read(event));
    let (order_id, status) = match event {
        Some(PaymentOutcome::Status { order_id, status }) => (order_id, status),
        Some(PaymentOutcome::Ignored) => return StatusCode::NO_CONTENT.into_response(),
        None => {
            return Problem::new(StatusCode::BAD_REQUEST)
                .with_title("Invalid payment event")
                .with_detail("the event needs a known type and the order id")
                .into_response();
        }
    };
    match database.settle(&order_id, status).await {
        Ok(Transition::Applied) => StatusCode::NO_CONTENT.into_response(),
        // Providers do not promise order: an event for a settled order came
        // late. Acknowledged, so it is not redelivered, and counted.
        Ok(Transition::Settled) => {
            late_events.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(LATE_EVENTS_METRIC).increment(1);
            StatusCode::OK.into_response()
        }
        Ok(Transition::Unknown) => Problem::new(StatusCode::NOT_FOUND)
            .with_title("No such order")
            .with_detail(format!("there is no order {order_id}"))
            .into_response(),
        Err(_) => internal(),
    }
}

/// The NATS client's connection state, as `/health` reports it.
fn nats_state(client: &async_nats::Client) -> (bool, &'static str) {
    match client.connection_state() {
        async_nats::connection::State::Connected => (true, "connected"),
        async_nats::connection::State::Disconnected => (false, "disconnected"),
        async_nats::connection::State::Pending => (false, "pending"),
    }
}

async fn health(State(state): State<AppState>) -> Response {
    let database_up = state.database.ping().await;
    let backlog = state.database.backlog().await;
    let redis_up = match state.redis.clone() {
        Some(mut conn) => Some(redis_ping(&mut conn).await.is_ok()),
        None => None,
    };
    let nats = state.nats.as_ref().map(nats_state);
    let publisher_up = state.event_publisher.health() == PublisherHealth::Connected;
    // The stores orders are written to decide availability; the broker only
    // delays events, which wait in the outbox meanwhile.
    let (status, code) = if !database_up || backlog.is_err() || redis_up == Some(false) {
        ("unavailable", StatusCode::SERVICE_UNAVAILABLE)
    } else if !publisher_up || nats.is_some_and(|(up, _)| !up) {
        ("degraded", StatusCode::OK)
    } else {
        ("ok", StatusCode::OK)
    };
    // Where idempotency records and webhook replay ids are kept, if anywhere.
    let shared = match (state.layers, redis_up) {
        (Layers::Off, _) => "none",
        (Layers::On, Some(_)) => "redis",
        (Layers::On, None) => "memory",
    };
    let backlog = backlog.ok();
    // palisade's own fragment, from the layers' handles: every breaker and
    // bulkhead by name, and the outbox.
    let mut layers = palisade::health::Health::new();
    if let Some(guards) = &state.guards {
        layers = layers.breaker(&guards.breaker).bulkhead(&guards.bulkhead);
    }
    if let Some(api) = &state.api_bulkhead {
        layers = layers.bulkhead(api);
    }
    let layers = layers.outbox(backlog.as_ref(), state.event_publisher.health());
    // The snapshots serialise with the fields this endpoint always had.
    let breaker = state.guards.as_ref().map(|guards| guards.breaker.snapshot());
    let bulkhead = state.guards.as_ref().map(|guards| guards.bulkhead.snapshot());
    let api_bulkhead = state.api_bulkhead.as_ref().map(|bulkhead| {
        let bulkhead = bulkhead.snapshot();
        json!({ "in_flight": bulkhead.in_flight, "limit": bulkhead.limit })
    });
    let body = json!({
        "status": status,
        "layers": state.layers.as_str(),
        "palisade": layers.to_json(),
        "api": { "bulkhead": api_bulkhead },
        "payments": { "breaker": breaker, "bulkhead": bulkhead },
        "webhooks": { "late_events": state.late_events.load(Ordering::Relaxed) },
        "outbox": {
            "pending": backlog.map(|b| b.pending),
            "published": state.published.load(Ordering::Relaxed),
            "dead": backlog.map(|b| b.dead_lettered),
            "publisher": if publisher_up { "connected" } else { "disconnected" },
        },
        "stores": {
            "database": { "backend": state.database.backend().as_str(), "up": database_up },
            "redis": redis_up.map(|up| json!({ "up": up })),
            "nats": nats.map(|(up, state)| json!({ "up": up, "state": state })),
            "idempotency": shared,
            "webhook_replay": shared,
            "outbox_publisher": state.publisher,
        },
    });
    (code, Json(body)).into_response()
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    state.metrics.run_upkeep();
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// An order's columns as stored: `items` is JSON text.
type OrderRow = (String, String, String, String, i64, String, String);

fn order_from_row(row: OrderRow) -> Result<Order, serde_json::Error> {
    let (id, status, customer_id, items, total_amount, currency, created_at) = row;
    Ok(Order {
        id,
        status,
        customer_id,
        items: serde_json::from_str(&items)?,
        total_amount,
        currency,
        created_at,
    })
}

async fn get_order(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let row = match state.database.order(&id).await {
        Ok(row) => row,
        Err(_) => return internal(),
    };
    match row.map(order_from_row) {
        Some(Ok(order)) => Json(order).into_response(),
        Some(Err(_)) => internal(),
        None => Problem::new(StatusCode::NOT_FOUND)
            .with_title("No such order")
            .with_detail(format!("there is no order {id}"))
            .into_response(),
    }
}

async fn list_orders(State(state): State<AppState>) -> Response {
    let rows = match state.database.orders().await {
        Ok(rows) => rows,
        Err(_) => return internal(),
    };
    match rows.into_iter().map(order_from_row).collect::<Result<Vec<_>, _>>() {
        Ok(orders) => Json(orders).into_response(),
        Err(_) => internal(),
    }
}
