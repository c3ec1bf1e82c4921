//! The canonical stacks in one call (feature `stack`): [`client`] and
//! [`server`] assemble palisade's layers in the canonical order with
//! documented defaults; every part can be replaced or removed, and one
//! [`StackHandle`] reports all of them for a health endpoint. With the
//! feature `grpc` too, `grpc_client` and `grpc_server` do the same for
//! tonic clients and servers, from the same parts.
//!
//! # The client stack
//!
//! ```text
//! total deadline → idempotency key → retry (with budget) → circuit breaker → bulkhead → per-attempt timeout → the HTTP client
//! ```
//!
//! | slot | default | replace with | why there |
//! |---|---|---|---|
//! | `deadline` | none: the deadline of the request being served, if a server stack set one, still bounds the call | a `Duration` (a [`DeadlineLayer`](palisade_deadline::DeadlineLayer) named after the stack), a `DeadlineLayer` or its builder | bounds the whole call: the retry starts no wait that would end past it, each attempt gets what is left; when it passes, a 504 problem response |
//! | `idempotency_key` | [`SetIdempotencyKeyLayer`](palisade_idempotency::client::SetIdempotencyKeyLayer): a UUIDv7 key on POST and PATCH without one | a configured `SetIdempotencyKeyLayer` | outside the retry, so every attempt carries the same key, which also makes the POST retryable |
//! | `retry` | [`HttpRetryLayer`](palisade_retry::HttpRetryLayer)'s defaults named after the stack: 3 attempts, exponential backoff from 100 ms with full jitter, the budget (20 % + 10/s), `Retry-After` honoured up to 30 s | an `HttpRetryLayer` or its builder | outside the breaker, so it sees `CircuitOpen` and does not retry it; outside the bulkhead, so a request in backoff holds no permit |
//! | `circuit_breaker` | the breaker's failure-rate defaults with [`HttpClassifier`](palisade_core::HttpClassifier) (5xx, 408, 429 and transport errors fail) | a `CircuitBreakerLayer`, its builder, or a `KeyedCircuitBreakerLayer` | counts each attempt; does not count the bulkhead's local rejections |
//! | `bulkhead` | [`CLIENT_MAX_CONCURRENT`] (100) attempts in flight, each until its response body ends ([`hold_permit_until_body_end`](palisade_bulkhead::BulkheadBuilder::hold_permit_until_body_end)), no queue | a `BulkheadLayer`, its builder, or a `KeyedBulkheadLayer` | caps the sockets and memory one slow downstream can take, a body it streams slowly included; rejects at once rather than queueing behind it |
//! | `attempt_timeout` | [`ATTEMPT_TIMEOUT`] (10 s), or less when the deadline leaves less, sent downstream in `x-request-timeout-ms` ([`PropagateDeadlineLayer`](palisade_deadline::PropagateDeadlineLayer)) | a `Duration`, a `PropagateDeadlineLayer` or its builder | a slow attempt becomes a timeout, which the breaker counts and the retry retries; an attempt cut by the deadline is not retried |
//!
//! The deadline and the attempt timeout bound the wait for the response
//! head, as tower's `Timeout` does; a body the downstream streams slowly is
//! bounded by the HTTP client's own read timeout (reqwest's `read_timeout`
//! or `timeout`), and counts against the bulkhead until it ends or is
//! dropped.
//!
//! Layered on an HTTP client taking `http::Request<ReplayBody<B>>` (the
//! retry makes bodies replayable): hyper-util's client, or reqwest through
//! [`ReqwestService`](crate::reqwest::ReqwestService) (feature `reqwest`),
//! whose timeouts and connect errors the retry and the breaker recognise.
//! Its errors are `BoxError`s.
//!
//! # The server stack
//!
//! ```text
//! deadline → webhook verify → idempotency → outbox hook → bulkhead → timeout → the handler
//! ```
//!
//! | slot | default | replace with | why there |
//! |---|---|---|---|
//! | `deadline` | none | a `Duration` (a `DeadlineLayer` named after the stack with that budget, shortened by the caller's `x-request-timeout-ms` or `grpc-timeout`), a `DeadlineLayer` or its builder | its budget covers everything; handlers and the clients they call see it; 504 when it passes |
//! | `webhook_verify` | none (it needs the senders' secrets) | a `VerifyLayer` (feature `webhook`) | rejects forged or replayed deliveries before anything else runs |
//! | `idempotency` | [`IdempotencyLayer`](palisade_idempotency::IdempotencyLayer)'s defaults: in memory, POST and PATCH, key optional | an `IdempotencyLayer` or its builder (a Redis or PostgreSQL store for several instances) | a replay is answered before the handler's work and the limits, at little cost |
//! | `outbox_hook` | none (it needs the relay's `Wakeup`) | a `PublishHookLayer` (feature `outbox`) | wakes the relay once the response exists |
//! | `bulkhead` | [`SERVER_MAX_CONCURRENT`] (100) requests in flight, no queue: 503 with `Retry-After` at once | a `BulkheadLayer`, its builder, or a `KeyedBulkheadLayer` | sheds load instead of queueing it |
//! | `timeout` | [`REQUEST_TIMEOUT`] (10 s): 504 | a `Duration` | bounds the work a request can hold a permit for; a keyed request it cuts answers 504, which is not stored, so the client's retry runs the handler again: a handler whose effects must not repeat passes its key on (`examples/axum-orders` gives it to the payments provider) |
//!
//! The bulkhead's and the timeout's errors are answered right outside the
//! bulkhead as `application/problem+json` (503 with `Retry-After`, 504), so
//! the server stack never fails: it is an axum `Router::layer` or wraps a
//! hyper service as it is.
//!
//! # The gRPC client stack
//!
//! `grpc_client(name)`, with the feature `grpc`:
//!
//! ```text
//! gRPC statuses → total deadline → gRPC retry (with budget) → circuit breaker (at the end of the stream) → bulkhead → per-attempt timeout → the channel
//! ```
//!
//! | slot | default | replace with | why there |
//! |---|---|---|---|
//! | `grpc_status` | `GrpcStatusLayer` named after the stack | a `GrpcStatusLayer` or its builder | outermost: the layers' rejections become statuses a tonic client reads (an open breaker is `UNAVAILABLE` with its pushback), never `UNKNOWN` |
//! | `deadline` | none: the deadline of the call being served, if a server stack set one, still bounds the call | a `Duration` (a `DeadlineLayer` named after the stack with that budget, shortened by the call's own `grpc-timeout`, which tonic's `Request::set_timeout` sets), a `DeadlineLayer` or its builder | bounds the whole call, retries and waits included; `DEADLINE_EXCEEDED` when it passes |
//! | `retry` | `GrpcRetryLayer`'s defaults named after the stack: 3 attempts, exponential backoff with full jitter, the budget, the server's pushback honoured | a `GrpcRetryLayer` or its builder | retries `UNAVAILABLE` answered trailers-only and errors that prove the call was not processed (a connect error, a refused stream), never a timed-out attempt (a method may not be safe to repeat) nor a call whose messages arrived; outside the breaker, so it sees `CircuitOpen` and does not retry it |
//! | `circuit_breaker` | the breaker's failure-rate defaults with `AtEos(GrpcClassifier)` ([`eos`](palisade_core::eos)): a call counts by its final status, in the trailers where nearly every gRPC error arrives | a `CircuitBreakerLayer`, its builder, or a `KeyedCircuitBreakerLayer` | counts each attempt; not the bulkhead's local rejections |
//! | `bulkhead` | [`CLIENT_MAX_CONCURRENT`] (100) attempts in flight, each until its response stream ends, no queue | a `BulkheadLayer`, its builder, or a `KeyedBulkheadLayer` | a call in backoff holds no permit; a streaming call holds one while it streams |
//! | `attempt_timeout` | [`ATTEMPT_TIMEOUT`] (10 s), or less when the deadline leaves less, sent as `grpc-timeout` | a `Duration`, a `PropagateDeadlineLayer` or its builder | a stalled attempt ends as a timeout the breaker counts, not retried (it may have been processed); the server knows its budget |
//!
//! Layered on a service taking `http::Request<ReplayBody<B>>`: a tonic
//! `Channel` behind `.map_request(|r| r.map(tonic::body::Body::new))` and,
//! for its timeouts, `.map_err(palisade::grpc::channel_error)` (feature
//! `tonic` of `palisade-grpc`). With the status layer in, the stack never
//! fails, as tonic's generated clients want.
//!
//! # The gRPC server stack
//!
//! `grpc_server(name)`, with the feature `grpc`, for
//! `tonic::transport::Server::builder().layer(..)`:
//!
//! ```text
//! gRPC statuses → deadline (from grpc-timeout) → bulkhead → timeout → the services
//! ```
//!
//! | slot | default | replace with | why there |
//! |---|---|---|---|
//! | `grpc_status` | `GrpcStatusLayer` named after the stack | a `GrpcStatusLayer` or its builder | every rejection answered trailers-only with its code, never a reset stream |
//! | `deadline` | a `DeadlineLayer` named after the stack, with no budget of its own: the caller's `grpc-timeout` (capped at 5 minutes) sets it | a `Duration` (a budget of the server's own, shortened by the caller's), a `DeadlineLayer` or its builder, or `no_deadline()` | handlers and the calls they make see it; `DEADLINE_EXCEEDED` when it passes |
//! | `bulkhead` | [`SERVER_MAX_CONCURRENT`] (100) calls in flight, each until its response stream ends, no queue: `UNAVAILABLE` with `grpc-retry-pushback-ms` at once | a `BulkheadLayer`, its builder, or a `KeyedBulkheadLayer` (`hold_permit_until_body_end()` keeps the default's count of streams) | sheds load instead of queueing calls that would miss their deadlines; a server-streaming call, whose head goes out at once, counts while it streams |
//! | `timeout` | [`REQUEST_TIMEOUT`] (10 s): `DEADLINE_EXCEEDED` | a `Duration` | bounds the work a call can hold a permit for, until its response starts |
//!
//! # The handle
//!
//! [`StackHandle::snapshot`] is JSON: `{"name": ..., "layers": [...]}`,
//! one object per layer present, outermost first, each with `"layer"` (the
//! slot's name) and its state:
//!
//! - `retry`: `name`, and `budget` (`available`, `ratio`, `min_per_sec`,
//!   `window_ms`; `null` without a budget);
//! - `circuit_breaker`: `name`, `state` (`closed`, `open`, `half_open`, ...),
//!   `failure_rate`, `slow_call_rate`, `calls_in_window`, `failed_calls`,
//!   `slow_calls`, `consecutive_failures`, `time_until_half_open_ms`,
//!   `half_open_probes`; keyed: `keys`, an object of those per key;
//! - `bulkhead`: `name`, `limit`, `in_flight`, `queued`, `adaptive`; keyed:
//!   `keys`;
//! - `grpc_status`: nothing but its presence;
//! - `deadline`, `attempt_timeout`, `timeout`: `timeout_ms` when set by a
//!   `Duration`, else the layer's `name`;
//! - the others: the name alone.
//!
//! To control a part (force a breaker open, resize a bulkhead), build it
//! yourself, keep its handle, and pass the layer.
#![cfg_attr(
    feature = "reqwest",
    doc = r#"
# Example

A reqwest client behind the canonical client stack, and its health report:

```
use palisade::reqwest::ReqwestService;
use palisade::retry::HttpRetryLayer;
use palisade::stack;
use tower::Layer;

# fn main() -> Result<(), palisade::core::BoxError> {
let payments = stack::client("payments")
    .retry(HttpRetryLayer::builder("payments").max_attempts(4))
    .build()?;
let health = payments.handle();
let client = payments.layer(ReqwestService::new(reqwest::Client::new()));
# let _ = client;

let report = health.snapshot();
assert_eq!(report["layers"][1]["layer"], "retry");
assert_eq!(report["layers"][2]["state"], "closed");
# Ok(())
# }
```
"#
)]
//!
//! A server stack on axum routes is in the [crate docs](crate#the-stacks-in-one-call).

/// The methods of one slot of a stack builder: `$field(part)` puts a part
/// in it, `$no()` empties it; the other slots keep their parts.
macro_rules! slot_methods {
    ($builder:ident, $(#[$cfg:meta])* $field:ident, $slot:ident, $no:ident, $what:literal,
     [$($before:ident),*], [$($after:ident),*], {$($all:ident),*}) => {
        $(#[$cfg])*
        #[doc = concat!("Puts `part` in the ", $what, " slot: a layer, its builder, or any [`Part`] of that slot.")]
        pub fn $field<P: Part<slot::$slot>>(self, part: P) -> $builder<$($before,)* P $(, $after)*> {
            let Self { name, $($all),* } = self;
            let _ = $field;
            let $field = part;
            $builder { name, $($all),* }
        }

        #[doc = concat!("Leaves the ", $what, " out.")]
        pub fn $no(self) -> $builder<$($before,)* Identity $(, $after)*> {
            let Self { name, $($all),* } = self;
            let _ = $field;
            let $field = Identity::new();
            $builder { name, $($all),* }
        }
    };
}

/// What every stack shares: its builder's and its own `Debug` (the name,
/// the handle), and `handle()`.
macro_rules! stack_common {
    ($builder:ident, $stack:ident, [$($p:ident),*]) => {
        impl<$($p),*> fmt::Debug for $builder<$($p),*> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($builder))
                    .field("name", &self.name)
                    .finish_non_exhaustive()
            }
        }

        impl<$($p),*> $stack<$($p),*> {
            /// The handle reporting every part's state.
            pub fn handle(&self) -> StackHandle {
                self.handle.clone()
            }
        }

        impl<$($p),*> fmt::Debug for $stack<$($p),*> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($stack))
                    .field("handle", &self.handle)
                    .finish_non_exhaustive()
            }
        }
    };
}

mod client;
#[cfg(feature = "grpc")]
mod grpc_client;
#[cfg(feature = "grpc")]
mod grpc_server;
mod handle;
mod part;
mod server;

use std::sync::Arc;

pub use client::{ATTEMPT_TIMEOUT, CLIENT_MAX_CONCURRENT, ClientStack, ClientStackBuilder};
#[cfg(feature = "grpc")]
pub use grpc_client::{GrpcClientStack, GrpcClientStackBuilder};
#[cfg(feature = "grpc")]
pub use grpc_server::{GrpcServerStack, GrpcServerStackBuilder};
pub use handle::{Reporter, StackHandle};
pub use part::{ConfigError, Part, slot};
pub use server::{REQUEST_TIMEOUT, SERVER_MAX_CONCURRENT, ServerStack, ServerStackBuilder};

/// The canonical client stack named `name` (the name of its retry, breaker
/// and bulkhead metrics), with the defaults in the [module docs](self).
pub fn client(name: impl Into<Arc<str>>) -> ClientStackBuilder {
    ClientStackBuilder::new(name.into())
}

/// The canonical server stack named `name` (the name of its bulkhead's
/// metrics), with the defaults in the [module docs](self).
pub fn server(name: impl Into<Arc<str>>) -> ServerStackBuilder {
    ServerStackBuilder::new(name.into())
}

/// The canonical gRPC client stack named `name` (feature `grpc` with
/// `stack`), for a tonic `Channel`, with the defaults in the
/// [module docs](self#the-grpc-client-stack).
#[cfg(feature = "grpc")]
pub fn grpc_client(name: impl Into<Arc<str>>) -> GrpcClientStackBuilder {
    GrpcClientStackBuilder::new(name.into())
}

/// The canonical gRPC server stack named `name` (feature `grpc` with
/// `stack`), for `tonic::transport::Server::builder().layer(..)`, with the
/// defaults in the [module docs](self#the-grpc-server-stack).
#[cfg(feature = "grpc")]
pub fn grpc_server(name: impl Into<Arc<str>>) -> GrpcServerStackBuilder {
    GrpcServerStackBuilder::new(name.into())
}
