//! The pieces every palisade layer shares.
//!
//! - [`backoff`]: [`Backoff`](backoff::Backoff) schedules, [`Jitter`](backoff::Jitter)
//!   and the injectable [`Random`](backoff::Random) source, for every wait that
//!   grows between attempts (retries, a breaker's open duration, redeliveries).
//! - [`classify`]: one trait, [`Classify`], that decides whether a call
//!   succeeded, failed or does not count, and separately whether it may be
//!   retried; ready classifiers for "any error", HTTP and gRPC, and closures.
//! - [`error`]: [`BoxError`], the layers' rejection types ([`CircuitOpen`],
//!   [`BulkheadFull`], [`BulkheadTimeout`]) and [`find`](error::find) to spot
//!   them anywhere in a `source()` chain.
//! - [`keyed`]: [`KeyedMap`](keyed::KeyedMap), the bounded per-key state of
//!   keyed layers, with idle or least-recently-used eviction.
//! - [`sync`]: [`Unpoison`](sync::Unpoison), taking over poisoned locks.
//! - [`problem`]: RFC 9457 `application/problem+json` responses, [`ToProblem`](problem::ToProblem)
//!   (the one way from a layer's rejection to its response), and the
//!   mapping from layer errors to HTTP (503 with `Retry-After` for an open
//!   breaker or a full bulkhead), for axum's `HandleErrorLayer`; and
//!   [`response::ProblemResponseLayer`], the same for a plain hyper server.
//! - [`telemetry`]: the metric names, labels and tracing targets of every layer.
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

pub mod backoff;
pub mod classify;
pub mod error;
pub mod keyed;
pub mod problem;
pub mod response;
pub mod sync;
pub mod telemetry;

pub use classify::{
    CallResult, Classify, ClassifyFn, ErrorClassifier, GrpcClassifier, GrpcCode, HttpClassifier, Outcome, classify_fn,
};
pub use error::{AsError, BoxError, BulkheadFull, BulkheadTimeout, CircuitOpen};
pub use problem::Problem;
