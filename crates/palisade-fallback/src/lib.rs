//! Fallbacks: when a call fails, or palisade refuses to make it, answer
//! from somewhere else.
//!
//! [`FallbackLayer`] watches the inner service's result. When the
//! classifier calls it a failure (a 5xx, a transport error), or it is one of
//! palisade's local rejections (an open breaker's `CircuitOpen`, a
//! bulkhead's `BulkheadFull` or `BulkheadTimeout`, a deadline's
//! `DeadlineExceeded`), the fallback service answers instead. It receives a
//! [`Failure`]: the request's head (method, URI, headers, extensions), the
//! failed result and the [`Reason`]. It answers a response, or declines by
//! giving the failure back, and the caller then gets the original result
//! unchanged: a rejection is still found by `downcast_ref` or
//! [`palisade_core::error::find`].
//!
//! With the `outbox-sqlite` or `outbox-postgres` feature, [`QueueForLater`]
//! is a ready fallback for work that may happen later: it stages a command in
//! the outbox (palisade-outbox's `stage`, in a transaction of its own) and
//! answers `202 Accepted` with a `Location` the client can poll; the relay
//! delivers the command once the dependency is back. With
//! [`Queued::with_update`] the application's own row changes in the same
//! transaction (an order marked `payment_queued` with its charge command, or
//! neither), and the answer carries the [`Queued`] in its extensions, so a
//! handler calling a client wrapped in the fallback knows its call was queued.
//! examples/axum-orders queues its charges this way while the payments breaker
//! is open.
//!
//! # Install
//!
//! Through the facade, which re-exports this crate as `palisade::fallback`:
//!
//! ```sh
//! cargo add palisade --features fallback
//! ```
//!
//! or on its own: `cargo add palisade-fallback`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use palisade_core::{BoxError, CircuitOpen};
//! use palisade_fallback::{Failure, FallbackLayer, Reason};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let fallback = FallbackLayer::builder("recommendations")
//!     .fallback(service_fn(|failure: Failure<Response<String>>| async move {
//!         match failure.reason() {
//!             // The breaker is open: answer the cached best-sellers.
//!             Reason::CircuitOpen => Ok(Response::new("best-sellers".to_owned())),
//!             // Anything else: decline, the caller gets the original result.
//!             _ => Err(failure),
//!         }
//!     }))
//!     .build()?;
//! let open = service_fn(|_req: Request<()>| async {
//!     Err::<Response<String>, BoxError>(CircuitOpen::new("recommendations", Duration::from_secs(5)).into())
//! });
//! let res = fallback.layer(open).oneshot(Request::new(())).await?;
//! assert_eq!(res.body(), "best-sellers");
//! # Ok(())
//! # }
//! ```
//!
//! # Settings
//!
//! | setting | default | why |
//! |---|---|---|
//! | `fallback` | none: `build()` refuses | the answer of last resort is the application's |
//! | `classifier` | [`HttpClassifier`](palisade_core::HttpClassifier) | 5xx, 408, 429 and transport errors are failures; other 4xx are answers |
//!
//! Local rejections always reach the fallback, whatever the classifier
//! says. Errors the classifier ignores (other than the local rejections)
//! pass through. A readiness error of the inner service passes through: the
//! fallback answers calls, not readiness. A fallback whose own readiness
//! fails declines.
//!
//! # Order with other layers
//!
//! Outside the circuit breaker (and the bulkhead, and retry or hedging), so
//! it sees their rejections and the last failure after retries; inside the
//! deadline, so its answer is bounded too; inside the layer that adds the
//! `Idempotency-Key` (palisade-idempotency's `SetIdempotencyKeyLayer`), so
//! the [`Failure`]'s head carries the key every attempt was sent with, and a
//! command queued for later can do the work under it, once. In a server stack it wraps the
//! handler's route, or the client call inside the handler.
//!
//! Inside the deadline, a fallback answering the deadline's own
//! `DeadlineExceeded` has only what is left of it: the client's per-attempt
//! layer (palisade-deadline's `PropagateDeadline`) gives an attempt up its
//! margin (10 ms by default) before the deadline, and the deadline layer
//! outside then drops whatever still runs and answers 504. Answer that
//! reason from memory or decline it; a fallback that needs time for it
//! ([`QueueForLater`], which commits to a database, could be cut after its
//! commit, the command queued while the caller gets 504) should decline
//! [`Reason::DeadlineExceeded`], or sit outside the deadline.
//!
//! # Telemetry
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `palisade_fallback_calls_total` | counter | name, reason (`failure`, `circuit_open`, `bulkhead_full`, `bulkhead_timeout`, `deadline_exceeded`) |
//!
//! Counted when the fallback is called. Tracing target `palisade::fallback`:
//! a `debug` event per fallback call, fields `name` and `reason`.
//!
//! # Guarantees
//!
//! - The fallback is called at most once per request, after the inner
//!   future completed (never while it runs).
//! - Dropping the response future drops whichever of the inner call and the
//!   fallback's call is running.
//! - A declined failure comes back exactly as the inner service produced it.
//!
//! # Performance
//!
//! A successful call costs one clone of the request's head (its header map
//! and extensions, kept for the fallback) and one classification; the
//! fallback's own cost comes on failures only. See the benchmark report,
//! <https://github.com/palisade-rs/palisade/blob/main/benches/REPORT.md>.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod failure;
pub mod future;
mod layer;
#[cfg(any(feature = "outbox-sqlite", feature = "outbox-postgres"))]
mod queue;
mod service;
mod state;

pub use error::ConfigError;
pub use failure::{Cause, Failure, Reason};
pub use layer::{FallbackBuilder, FallbackLayer, NoFallback};
#[cfg(any(feature = "outbox-sqlite", feature = "outbox-postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "outbox-sqlite", feature = "outbox-postgres"))))]
pub use queue::{QueueDatabase, QueueForLater, Queued};
pub use service::Fallback;
