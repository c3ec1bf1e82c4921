//! A safe retry policy for tower: backoff with jitter, a retry budget, the
//! server's `Retry-After`, and HTTP retries that never repeat an unsafe
//! request.
//!
//! The policies implement `tower::retry::Policy`, so they also run in tower's
//! own `Retry` service; the layers put them in services of their own.
//! `RetryLayer::builder(name)`
//! and `HttpRetryLayer::builder(name)` return a [`RetryBuilder`] whose
//! `build()` validates the settings and makes the layer.
//!
//! - [`RetryLayer`] retries any request that is `Clone` (gRPC messages,
//!   commands, plain values) with a [`RetryPolicy`], in a [`Retry`], classifying results with a palisade-core
//!   [`Classify`](palisade_core::Classify) (default
//!   [`ErrorClassifier`](palisade_core::ErrorClassifier): errors are retried,
//!   responses are not).
//! - [`HttpRetryLayer`] retries `http::Request`s with an [`HttpRetryPolicy`]:
//!   it also checks the method, replays the body, honours `Retry-After` and
//!   can number attempts in a header. It makes an [`HttpRetry`], which wraps
//!   each request body in a [`ReplayBody`] before its [`Retry`] sees it.
//!
//! # Install
//!
//! Through the facade, which re-exports this crate as `palisade::retry`:
//!
//! ```sh
//! cargo add palisade --features retry
//! ```
//!
//! or on its own: `cargo add palisade-retry`.
//!
//! # Example
//!
//! An HTTP client stack that rides out a downstream answering 503 twice:
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use palisade_core::BoxError;
//! use palisade_retry::{HttpRetryLayer, ReplayBody, X_RETRY_ATTEMPT};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! // Stands in for an HTTP client (hyper-util's `Client`, mapped to `BoxError`).
//! let downstream = tower::service_fn(move |_req: Request<ReplayBody<Full<Bytes>>>| {
//!     let status = if seen.fetch_add(1, Ordering::SeqCst) < 2 { 503 } else { 200 };
//!     async move { Ok::<_, BoxError>(Response::builder().status(status).body(()).unwrap()) }
//! });
//!
//! let retry = HttpRetryLayer::builder("payments")
//!     .exponential_1s_to_8s() // five attempts: at once, then after 1 s, 2 s, 4 s, 8 s
//!     .deadline(Duration::from_secs(10))
//!     .attempt_header(X_RETRY_ATTEMPT)
//!     .build()?;
//! let client = ServiceBuilder::new().layer(retry).service(downstream);
//!
//! let started = tokio::time::Instant::now();
//! let req = Request::get("http://payments.internal/balance").body(Full::new(Bytes::new()))?;
//! let res = client.oneshot(req).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! assert_eq!(started.elapsed(), Duration::from_secs(3)); // waited 1 s, then 2 s
//! # Ok(())
//! # }
//! ```
//!
//! Any cloneable request:
//!
//! ```
//! use palisade_core::BoxError;
//! use palisade_retry::{Backoff, Jitter, RetryLayer};
//! use std::time::Duration;
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let retry = RetryLayer::builder("inventory")
//!     .max_attempts(4)
//!     .backoff(Backoff::exponential(Duration::from_millis(50), 2.0, Duration::from_secs(1)))
//!     .jitter(Jitter::Equal)
//!     .build()?;
//! let always_down = tower::service_fn(|n: u64| async move { Err::<u64, BoxError>(format!("no {n}").into()) });
//! let err = retry.layer(always_down).oneshot(7).await.unwrap_err();
//! assert_eq!(err.to_string(), "no 7"); // the last attempt's error, as it was
//! # Ok(())
//! # }
//! ```
//!
//! # What is retried
//!
//! A result is retried when all of these hold:
//!
//! 1. It is retryable. [`HttpRetryLayer`] uses
//!    [`HttpClassifier`](palisade_core::HttpClassifier) by default: 408, 429,
//!    500, 502, 503, 504, connect errors and timeouts; never another 4xx, and
//!    never a transport error after which the server may have acted (a
//!    reset). A 409 to a request carrying an `Idempotency-Key` is retried
//!    too, after its `Retry-After`: the server is still running an earlier
//!    attempt with that key (one this side timed out on) and will replay its
//!    answer (palisade-idempotency answers so). [`RetryBuilder::retry_status`] and [`RetryBuilder::retry_error`]
//!    override single statuses and errors; [`RetryBuilder::classifier`]
//!    replaces the classifier. palisade's own local rejections
//!    ([`CircuitOpen`], [`BulkheadFull`], [`BulkheadTimeout`]) are never
//!    retried, whatever the overrides: an open breaker must get its rest.
//! 2. (HTTP) The request is safe to repeat: its method is GET, HEAD, OPTIONS,
//!    PUT, DELETE or TRACE, or it carries an `Idempotency-Key` header
//!    (both configurable), and its body can be replayed (see below).
//! 3. Attempts are left: [`max_attempts`](RetryBuilder::max_attempts) counts
//!    the first one.
//! 4. The wait ends before the [`deadline`](RetryBuilder::deadline), if one
//!    is set: it covers all attempts and waits from the start of the first
//!    attempt, and no wait starts that would end at or past it. Nor is a
//!    retry sent at or past it: should the downstream not be ready for the
//!    retry by then (a full bulkhead, a busy connection), the call ends at
//!    the deadline with [`DeadlineExceeded`](palisade_core::deadline::DeadlineExceeded)
//!    (the last attempt's result was let go when the retry was decided: a
//!    request waiting to retry holds nothing of it, no connection, no
//!    permit). tower's own `Retry`, given these policies, waits for
//!    readiness without this bound. The same
//!    holds for the request's own deadline, a
//!    [`Deadline`](palisade_core::deadline::Deadline) in its extensions (HTTP)
//!    or set for the task serving it (palisade-deadline's server layer sets
//!    both): a wait that would end at or past it is not taken. A gRPC call
//!    without one takes its own `grpc-timeout` (tonic's
//!    `Request::set_timeout`) as its deadline from its first attempt, as
//!    gRPC's retry design has it cover every attempt; the attempts after the
//!    first carry it, so palisade-deadline's `PropagateDeadline` sends each
//!    what is left.
//! 5. The [`RetryBudget`] has a retry left.
//!
//! Otherwise the caller gets the last attempt's response or error unchanged
//! (its `source()` chain intact).
//!
//! # Errors of any type
//!
//! The inner service may fail with any error that is `Into<BoxError>`:
//! `reqwest::Error`, hyper-util's client error, an application's own type.
//! The layers box it (in [`Retry`], or with [`BoxErrors`] inside tower's
//! `Retry`) before the policy sees it, so no
//! `map_err` and no impl per error type is needed, and the retried service
//! fails with `BoxError`. The classifier walks the error's `source()` chain,
//! so a timeout or a connect error wrapped in a foreign error is still
//! recognised, and palisade's own rejections pass through unchanged and are
//! never retried. (A policy used in tower's `Retry` directly, without the
//! layers, needs a `BoxError` or a [`palisade_core::AsError`] type.)
//!
//! # Waits
//!
//! A [`Backoff`] schedule (constant, linear or exponential, capped) spread by
//! a [`Jitter`] (none, full, equal, decorrelated, as in AWS's "Exponential
//! Backoff and Jitter", or shortened by up to a fraction), the schedules of
//! `palisade_core::backoff` that every palisade layer uses. The randomness is injectable
//! ([`RetryBuilder::random`]), so tests are deterministic. A retryable HTTP
//! response with `Retry-After` (delay-seconds or an HTTP-date) waits what it
//! asks instead, at most [`max_retry_after`](RetryBuilder::max_retry_after);
//! a 503 or 429 without one uses the schedule. Waits use `tokio::time`; a
//! non-zero wait needs a tokio runtime (without one the result is returned
//! instead of retried).
//!
//! # The retry budget
//!
//! On by default: every logical request deposits once (when its first
//! attempt is sent; a service hands its deposits over in batches of 16 and
//! when it is dropped), every retry withdraws once, and while the budget is
//! empty failures come back instead of being retried. A retry that is never
//! sent gives its withdrawal back: its call was dropped during the backoff or
//! while the downstream was not ready for it, or the downstream refused it
//! in `poll_ready`. Over its window
//! (10 s) retries stay within 20 % of the requests plus a floor of 10 per
//! second, so a dead downstream sees about 1.2 times the load (plus the
//! floor) instead of `max_attempts` times. Clones of a
//! policy share its budget; pass one [`RetryBudget`] to several policies to
//! share it across stacks. See [`RetryBudget`] for the details.
//!
//! # Request bodies
//!
//! [`HttpRetry`] wraps each body in a [`ReplayBody`]. An empty body costs
//! nothing. A body whose length is known to be at most the replay limit
//! (default 64 KiB, as linkerd) streams through on the first attempt while
//! its chunks are kept, and every retry sends exactly the same bytes and
//! trailers, even when the first attempt was answered before it read the
//! body. A longer body, or one of unknown length (a stream), is sent once,
//! never buffered whole, and that request is not retried. tonic's request
//! bodies are such streams: [`GrpcRetry`] keeps them anyway, up to the
//! replay limit (see [gRPC](#grpc)).
//!
//! # gRPC
//!
//! [`GrpcRetryLayer`] retries gRPC calls as gRPC's own retry design (gRFC
//! A6) does, at the HTTP level, so it goes around a tonic `Channel`:
//!
//! - a call is retried only on a status in its response's head (a
//!   trailers-only response), among the codes of
//!   [`retry_codes`](RetryBuilder::retry_codes) (default `UNAVAILABLE`,
//!   which says the call was not processed). A head without a status (`200 OK`
//!   and messages) commits the call: what the server sent is passed on and
//!   never retried, whatever status its trailers carry;
//! - the server's `grpc-retry-pushback-ms` sets the wait (capped by
//!   [`max_pushback`](RetryBuilder::max_pushback), default 30 s); a negative
//!   or malformed value stops retries;
//! - each retry carries [`GRPC_PREVIOUS_RPC_ATTEMPTS`];
//! - the request stream, whose length tonic never announces, is kept for
//!   replay up to the replay limit; a call that sends more is not retried;
//! - an error is retried only when it proves the call was not processed (a
//!   connect error, a stream the server refused or left above its `GOAWAY`,
//!   once palisade-grpc's `channel_error` marks it); a timed-out attempt is
//!   not, as gRPC retries none: it may have been processed;
//! - no method check: every gRPC call is a `POST`, and which methods are safe
//!   to retry is the caller's choice of where to put the layer;
//! - the [`RetryBudget`] is the same as HTTP's: pass one budget to an
//!   [`HttpRetryLayer`] and a [`GrpcRetryLayer`] to cap their retries together.
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::GrpcCode;
//! use palisade_retry::{GrpcRetryLayer, HttpRetryLayer, RetryBudget};
//!
//! let budget = RetryBudget::default();
//! let grpc = GrpcRetryLayer::builder("inventory")
//!     .max_attempts(4)
//!     .retry_codes([GrpcCode::Unavailable])
//!     .budget(budget.clone())
//!     .build()
//!     .unwrap();
//! let http = HttpRetryLayer::builder("payments").budget(budget).build().unwrap();
//! // A tonic client stack (outermost first): deadline → retry → breaker →
//! // bulkhead → per-attempt timeout → `tonic::transport::Channel`; see
//! // examples/tonic-stack.
//! # let _ = (grpc, http, Duration::ZERO);
//! ```
//!
//! # Cancellation
//!
//! Dropping the response future stops everything: no further attempt is
//! made, and a retry whose wait was cut short gives its withdrawal back to
//! the budget. A dropped call is counted neither as a success nor as a
//! failure anywhere; having been sent, it still counts as a request for the
//! budget.
//!
//! # Defaults
//!
//! | setting | default | why |
//! |---|---|---|
//! | max attempts | 3 | two retries cure most transient failures; more mostly add load |
//! | backoff | exponential, 100 ms doubling, capped at 10 s | quick first retry for interactive calls, fast growth under trouble |
//! | jitter | full | spreads clients the most (AWS's analysis) |
//! | deadline | none | the client stack's outer timeout bounds the whole call; set one to stop futile waits |
//! | budget | 20 % of requests + 10/s over 10 s | Finagle's and linkerd's defaults |
//! | HTTP methods | GET, HEAD, OPTIONS, PUT, DELETE, TRACE | idempotent by RFC 9110 |
//! | `Idempotency-Key` | makes any method retryable | the server de-duplicates it |
//! | replay limit | 64 KiB | bounds memory per request, as linkerd |
//! | max `Retry-After` | 30 s | honours rate limits without parking requests for minutes |
//! | attempt header | off | not every server wants it; [`X_RETRY_ATTEMPT`] when on |
//!
//! # Order with other layers
//!
//! Client stack, outermost first: total deadline → **retry** → circuit
//! breaker → bulkhead → per-attempt timeout → the HTTP client. Retry sits
//! outside the breaker so it sees the breaker's fast [`CircuitOpen`] and does
//! not retry it, and outside the bulkhead so a request waiting in backoff
//! holds no permit. The per-attempt timeout goes inside, so a slow attempt
//! becomes a timeout, retried when the request is safe to repeat (HTTP; a
//! gRPC call's timed-out attempt is not retried: it may have been processed).
//!
//! # Telemetry
//!
//! An event hook set with the builder's `on_event` hears of every retry before its wait (`LayerEvent::Retry`: attempt, wait, reason) and every retry the budget refuses (`LayerEvent::RetryBudgetExhausted`), on the
//! calling task ([`palisade_core::events`]); unset, it costs nothing.
//!
//! Metrics (names from `palisade_core::telemetry::retry`, label `name`):
//! `palisade_retry_attempts_total` (every attempt, the first included),
//! `palisade_retry_retries_total` (label `reason`: `status_503`, ...,
//! `status_other`, `timeout`, `connect`, `error`, `response`),
//! `palisade_retry_budget_exhausted_total` and
//! `palisade_retry_attempt_duration_seconds` (histogram of each attempt's
//! duration, from sending it to its result (the first from the response
//! future's first poll); attempts of a request that may
//! not be retried, such as an unsafe HTTP request, are not timed). Every
//! metric, one
//! per reason included, is registered when the layer is built, so
//! [install the recorder before building the layer](palisade_core::telemetry#install-the-recorder-before-building-layers).
//!
//! Tracing, target `palisade::retry`: a `debug` event per retry with the
//! fields `name`, `attempt` (the attempt about to be made), `reason` and
//! `wait_ms`; `debug` events when attempts run out, the deadline or the body
//! prevents a retry; `info` when the budget refuses one. Each attempt of a
//! request the policy could retry (not an unsafe method's, nor one whose body
//! cannot be replayed) is a `debug` span `palisade.retry.attempt` with the
//! fields `name`, `attempt` (1 for the first) and `retried` (`true` once the
//! policy decided to retry it), open from sending the attempt to its result,
//! and is timed in the attempt histogram. The first attempt is timed and its
//! span opened when the response future is first polled (so the span's parent
//! is the span current at that poll); later attempts, when they are sent. See
//! [`spans`](palisade_core::telemetry::spans) for exporting them to
//! OpenTelemetry.
//!
//! # Performance
//!
//! When the first attempt succeeds, a request costs a copy of itself and no
//! heap allocation: the response future of [`Retry`] (which [`HttpRetry`] and
//! [`GrpcRetry`] run in too) holds the copy, a clone of the inner service and
//! a policy of the request's own, which reaches the shared settings through
//! one `Arc`, an atomic increment and decrement. Its first attempt's timer and
//! span begin when the future is first polled, so building the future writes
//! nothing that moving it must wait for. The budget adds little on top: a service deposits
//! its requests in batches of 16, so the deposit's atomic add is paid once per
//! 16 requests instead of on each. A deadline adds one clock reading per
//! request and the larger per-request state. Timing each attempt adds two
//! clock readings and a histogram record per attempt, when the histogram
//! records somewhere (a recorder was installed before the layer was built;
//! with none, attempts are not timed at all); the attempt span costs
//! a level check unless a subscriber records `debug` spans of
//! `palisade::retry` (or, with none set, tracing's `log` fallback logs at
//! `debug`), and then one allocation per attempt. A retry that waits
//! allocates its timer, kept out of line so that every request's response
//! future stays small.
//!
//! Through [`HttpRetry`], an empty body costs nothing to replay; a request
//! pays for the spare copy [`Retry`] keeps for a retry (method, URI,
//! headers and extensions cloned; the URI clone allocates once). Keeping a
//! body for replay adds its shared state (one `Arc` with a mutex), the boxed
//! original body and the chunk list, and a lock per frame read; the chunks
//! themselves are shared `Bytes`, not copied.
//!
//! **Headline cost**: about 11 ns a call over a bare service with the budget
//! on, in a plain tokio loop, and no allocation, on a 2-core AMD EPYC: less
//! than tower's `Retry` with tower's own `TpsBudget` (31 ns in the same loop)
//! and tower-resilience's retry (92 ns, 2 allocations). tower's `Retry` with a
//! policy that holds nothing and never retries costs under 1 ns: most of the
//! difference is the `Arc` of the settings that each request's future holds,
//! and the attempt counter. Every figure, beside
//! its references and with the machine and load it was measured on, is in the
//! [benchmark report](https://github.com/palisade-rs/palisade/blob/main/benches/REPORT.md).
//!
//! [`CircuitOpen`]: palisade_core::CircuitOpen
//! [`BulkheadFull`]: palisade_core::BulkheadFull
//! [`BulkheadTimeout`]: palisade_core::BulkheadTimeout

mod body;
mod budget;
mod builder;
mod error;
pub mod future;
mod grpc;
mod layer;
mod policy;
mod service;
mod sync;
mod wait;

pub use body::{DEFAULT_REPLAY_LIMIT, ReplayBody};
pub use budget::{BudgetSnapshot, RetryBudget, RetryBudgetBuilder, Withdrawal};
pub use builder::{AnyRequest, GrpcRequest, HttpRequest, RetryBuilder};
pub use error::{ConfigError, ReplayUnavailable};
pub use grpc::{
    GRPC_PREVIOUS_RPC_ATTEMPTS, GRPC_RETRY_PUSHBACK_MS, GrpcResponseFuture, GrpcRetry, GrpcRetryLayer, GrpcRetryPolicy,
};
pub use layer::{HttpRetryLayer, RetryLayer};
pub use palisade_core::backoff::{Backoff, Jitter};
pub use policy::{HttpRetryPolicy, IDEMPOTENCY_KEY, RetryPolicy, X_RETRY_ATTEMPT};
pub use service::{BoxErrors, HttpRetry, Retry};
