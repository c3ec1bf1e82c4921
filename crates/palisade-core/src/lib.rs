//! The pieces every palisade layer shares.
//!
//! - [`backoff`]: [`Backoff`](backoff::Backoff) schedules, [`Jitter`](backoff::Jitter)
//!   and the injectable [`Random`](backoff::Random) source, for every wait that
//!   grows between attempts (retries, a breaker's open duration, redeliveries).
//! - [`body`]: [`Collected`](body::Collected), reading a body into one
//!   `Bytes` up to a limit, a single frame without copying.
//! - classification: one trait, [`Classify`], that decides whether a call
//!   succeeded, failed or does not count, and separately whether it may be
//!   retried; ready classifiers for "any error", HTTP and gRPC, and closures.
//! - [`eos`]: classification at the end of a response stream: a gRPC call
//!   judged by the status in its trailers ([`AtEos`](eos::AtEos),
//!   [`EosBody`](eos::EosBody)), through the [`Judge`](eos::Judge) trait the
//!   breaker records its outcomes with.
//! - [`deadline`]: [`Deadline`](deadline::Deadline), a request's whole
//!   budget, found in its extensions or the serving task;
//!   [`DeadlineExceeded`](deadline::DeadlineExceeded); the `grpc-timeout`
//!   and `x-request-timeout-ms` wire formats.
//! - [`BoxError`], [`AsError`], and [`error`]: [`find`](error::find) to spot the layers'
//!   rejections ([`CircuitOpen`], [`BulkheadFull`], [`BulkheadTimeout`], at
//!   the crate root) anywhere in a `source()` chain, and the markers
//!   [`TimedOut`](error::TimedOut) and [`ConnectFailed`](error::ConnectFailed)
//!   with which client adapters (palisade-reqwest) make a client's timeouts
//!   and connect errors recognisable.
//! - [`events`]: [`EventHook`](events::EventHook), the callback every
//!   layer's builder takes with `on_event`, and the [`LayerEvent`](events::LayerEvent)s it gets.
//! - [`keyed`]: [`KeyedMap`](keyed::KeyedMap), the bounded per-key state of
//!   keyed layers, with idle or least-recently-used eviction.
//! - [`lease`]: [`Lease`](lease::Lease), the fencing token of a key's
//!   in-flight mark in the idempotency and webhook stores.
//! - [`sync`]: [`Unpoison`](sync::Unpoison), taking over poisoned locks.
//! - [`problem`]: RFC 9457 `application/problem+json` responses, [`ToProblem`](problem::ToProblem)
//!   (the one way from a layer's rejection to its response), and the
//!   mapping from layer errors to HTTP (503 with `Retry-After` for an open
//!   breaker or a full bulkhead), for axum's `HandleErrorLayer`; and
//!   [`response::ProblemResponseLayer`], the same for a plain hyper server.
//! - [`telemetry`]: the metric names, labels and tracing targets of every layer.
//!
//! # Install
//!
//! ```sh
//! cargo add palisade --features axum
//! ```
//!
//! or on its own: `cargo add palisade-core`. The facade always brings
//! palisade-core (as `palisade::core`); its `axum` feature makes [`Problem`](problem::Problem)
//! and the rejections axum responses.
//!
//! # The shape of a layer
//!
//! Every palisade layer is configured and named the same way; a new layer
//! copies this:
//!
//! - `XLayer::builder(name)` returns an `XBuilder`; its `build()` validates
//!   and returns `Result<XLayer, ConfigError>`, the crate's own `ConfigError`
//!   with one variant per check, named for what it checks. A keyed variant is
//!   built by the same builder: `build_keyed(key_fn)` returns
//!   `Result<KeyedXLayer, ConfigError>`.
//! - The layer makes an `X` service (`KeyedX` when keyed); `handle()` on
//!   either gives an `XHandle` (`KeyedXHandle`) for snapshots and control.
//!   Response futures live in the crate's public `future` module.
//! - Jitter comes from a [`Random`](backoff::Random) set with the builder
//!   method `random`; waits that grow are a [`Backoff`](backoff::Backoff).
//! - Metric handles are registered in `build()`
//!   (see [`telemetry`](telemetry#install-the-recorder-before-building-layers)),
//!   per-key state lives in a [`KeyedMap`](keyed::KeyedMap), locks are taken
//!   with [`Unpoison`](sync::Unpoison), and a rejection answers HTTP through
//!   [`ToProblem`](problem::ToProblem).
//! - Each public type has one path: the rejections shared by several layers
//!   ([`CircuitOpen`], [`BulkheadFull`], [`BulkheadTimeout`]) and [`BoxError`]
//!   are reached at this crate's root and are not re-exported by the layer
//!   crates; a layer crate exports its own types at its root, with only its
//!   `future` module public. The one exception is a type a layer's builder
//!   takes as its vocabulary (the retry policy's `Backoff` and `Jitter`).
//!
//! The breaker (`CircuitBreakerLayer::builder`, `CircuitBreakerBuilder`,
//! `CircuitBreaker`) and the bulkhead (`BulkheadLayer::builder`,
//! `BulkheadBuilder`, `Bulkhead`) follow it, and so does retry
//! (`RetryLayer::builder`/`HttpRetryLayer::builder`, `RetryBuilder`, `Retry`
//! and `HttpRetry`, with the `tower::retry::Policy` reachable through the
//! layer's `policy()`).
//!
//! # Example
//!
//! Classify a call's result and answer a rejection over HTTP:
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::{BoxError, CircuitOpen, Classify, HttpClassifier, Outcome};
//!
//! let res = http::Response::builder().status(503).body(()).unwrap();
//! assert_eq!(HttpClassifier.classify(Ok(&res)), Outcome::Failure);
//! assert!(HttpClassifier.retryable(Ok(&res)));
//!
//! let rejected: BoxError = CircuitOpen::new("payments", Duration::from_secs(12)).into();
//! let response: http::Response<String> = palisade_core::problem::problem_for_error(&*rejected)
//!     .into_response_with(|b| String::from_utf8_lossy(&b).into_owned());
//! assert_eq!(response.status(), 503);
//! assert_eq!(response.headers()["retry-after"], "12");
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backoff;
pub mod body;
mod boxed;
mod classify;
pub mod deadline;
pub mod eos;
pub mod error;
pub mod events;
pub mod keyed;
pub mod lease;
pub mod nanos;
pub mod problem;
mod rejection;
pub mod response;
pub mod sync;
pub mod telemetry;
pub mod timed;
mod transport;

pub use boxed::{AsError, BoxError};
pub use classify::{
    CallResult, Classify, ClassifyFn, ErrorClassifier, GrpcClassifier, GrpcCode, HttpClassifier, Outcome, classify_fn,
    downstream_outcome, is_grpc,
};
pub use rejection::{BulkheadFull, BulkheadTimeout, CircuitOpen};
