//! A bulkhead for tower services: each downstream, route or tenant gets its
//! own compartment of concurrency, so one slow dependency cannot take the
//! workers and connections every other request needs.
//!
//! A compartment lets at most `max_concurrent` calls in flight. A call that
//! finds every permit taken waits in a first-come first-served queue of at
//! most `max_queued` calls, for at most `max_wait`; when the queue is full
//! the call fails at once with [`BulkheadFull`], and when its wait runs out
//! it fails with [`BulkheadTimeout`]. Both carry the bulkhead's name and a
//! retry hint, and palisade-core maps both to `503 Service Unavailable` with
//! `Retry-After` and an RFC 9457 problem body.
//!
//! The permit is taken by the response future, not in `poll_ready`: axum
//! and hyper call a service without waiting for readiness, so a limit taken
//! in `poll_ready` would not limit them. `poll_ready` drives the inner
//! service's readiness only. A call that has to wait in the queue lets go of
//! the inner service it was polled ready with, so what that reserved (a
//! `ConcurrencyLimit`'s permit, a `Buffer`'s slot, a breaker's probe) serves
//! other calls meanwhile, and polls a clone ready once admitted, holding its
//! permit (within `max_wait`, past which it is rejected with
//! [`BulkheadTimeout`] and the permit goes back). The permit is released when the call completes,
//! fails, or its future is dropped at any point, queued or running; with
//! [`BulkheadBuilder::hold_permit_until_body_end`] an `http::Response`'s body holds it
//! until the body has been sent.
//!
//! # Install
//!
//! Through the facade, which re-exports this crate as `palisade::bulkhead`:
//!
//! ```sh
//! cargo add palisade --features bulkhead
//! ```
//!
//! or on its own: `cargo add palisade-bulkhead`.
//!
//! # Modes
//!
//! - **Fixed** ([`BulkheadBuilder::max_concurrent`]): a limit an operator can change
//!   at run time through [`BulkheadHandle::set_max_concurrent`]. A larger
//!   limit admits queued calls at once; a smaller one lets the calls in
//!   flight finish and admits no new call until fewer than the new limit run.
//! - **Keyed** ([`BulkheadBuilder::build_keyed`]): one compartment per key of the
//!   request (downstream host, tenant, route), each with the full limit and
//!   queue, at most `max_keys` kept. At that bound, every compartment nobody
//!   is using is forgotten at once to make room (one sweep serves many new
//!   keys; an adaptive compartment's learned limit goes with it, and the key
//!   starts again from the initial limit: keep `max_keys` above the keys you
//!   serve); if every kept key is busy, a new key is rejected with
//!   [`BulkheadFull`], so the memory a flood of keys can take stays bounded.
//! - **Adaptive** ([`BulkheadBuilder::adaptive`]): the limit follows the downstream,
//!   set after every completed call by a [`Limit`] algorithm between its
//!   minimum and maximum: [`Aimd`] or [`Gradient2`] (after Netflix's
//!   concurrency-limits), or your own. The [classifier](BulkheadBuilder::classifier)
//!   decides which outcomes are drops (default: any error; use
//!   `palisade_core::HttpClassifier` to count 5xx, 408 and 429 responses);
//!   local rejections of other palisade layers and cancelled calls are not
//!   sampled at all. A sample's round trip runs from admission to the
//!   response (its head, for `http::Response`s). The current limit is in the
//!   handle and the `palisade_bulkhead_limit` gauge.
//!
//! # Defaults, and why
//!
//! | setting | default | why |
//! |---|---|---|
//! | `max_concurrent` | 10 | a small compartment; size it from the downstream's capacity (its pool, its workers) |
//! | `max_queued` | 0 | a server sheds load at once instead of piling up requests that will time out anyway; give clients a short queue |
//! | `max_wait` | none | only matters with a queue; set it below the caller's own timeout |
//! | `retry_after` | 1 s | the hint sent as `Retry-After`: a compartment drains in about a call's duration |
//! | `max_keys` | 1024 | enough for hosts or routes; raise it for tenants |
//! | classifier | `ErrorClassifier` | only used by adaptive limits |
//! | `Aimd` | initial 20, min 1, max 200, backoff 0.9, timeout 5 s | Netflix's values, with a minimum of 1 so a failing downstream is probed by one call; it adjusts once per window of about one round trip, as TCP does |
//! | `Gradient2` | initial 20, min 1, max 200, smoothing 0.2, tolerance 1.5, long window 600, queue size 4 | Netflix's values, same minimum and windows; start it at or below the downstream's capacity (see [`Gradient2`]) |
//!
//! `build()` rejects impossible settings with a [`ConfigError`]: a limit of
//! 0, a zero `max_wait` (use `max_queued(0)` to never wait), zero
//! `max_keys`, adaptive bounds outside `1 ≤ min ≤ initial ≤ max`.
//! `max_wait` uses a Tokio timer, so a bulkhead with a `max_wait` must run
//! inside a Tokio runtime with its timer enabled.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_bulkhead::BulkheadLayer;
//! use palisade_core::BulkheadFull;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), palisade_core::BoxError> {
//! let payments = BulkheadLayer::builder("payments")
//!     .max_concurrent(2)
//!     .max_queued(4)
//!     .max_wait(Duration::from_millis(100))
//!     .build()?;
//! let handle = payments.handle();
//! let charge = payments.layer(service_fn(|cents: u64| async move {
//!     Ok::<_, std::io::Error>(format!("charged {cents}"))
//! }));
//!
//! assert_eq!(charge.clone().oneshot(250).await?, "charged 250");
//! assert_eq!(handle.snapshot().in_flight, 0);
//!
//! // Callers find the rejections by type, wherever they were wrapped.
//! let no_queue = BulkheadLayer::builder("reports").max_concurrent(1).build()?;
//! let report = no_queue.layer(service_fn(|_: ()| std::future::pending::<Result<(), std::io::Error>>()));
//! let running = tokio::spawn(report.clone().oneshot(()));
//! tokio::task::yield_now().await;
//! let err = report.oneshot(()).await.unwrap_err();
//! assert_eq!(err.downcast_ref::<BulkheadFull>().unwrap().name(), "reports");
//! # running.abort();
//! # Ok(())
//! # }
//! ```
//!
//! With axum, one bulkhead per route, rejections answered as problem+json:
//!
//! ```
//! use axum::{error_handling::HandleErrorLayer, routing::get, Router};
//! use palisade_bulkhead::BulkheadLayer;
//! use tower::ServiceBuilder;
//!
//! let reports = BulkheadLayer::builder("reports").max_concurrent(8).build().unwrap();
//! let app: Router = Router::new().route(
//!     "/reports",
//!     get(|| async { "report" }).layer(
//!         ServiceBuilder::new()
//!             .layer(HandleErrorLayer::new(palisade_core::problem::handle_error))
//!             .layer(reports),
//!     ),
//! );
//! # let _ = app;
//! ```
//!
//! Keyed by tenant, adaptive:
//!
//! ```
//! use palisade_bulkhead::{BulkheadLayer, Gradient2};
//!
//! let limit = Gradient2::builder().min_limit(2).initial_limit(10).max_limit(100).build().unwrap();
//! let per_tenant = BulkheadLayer::builder("tenants")
//!     .adaptive(limit)
//!     .max_keys(10_000)
//!     .build_keyed(|req: &http::Request<()>| {
//!         req.headers().get("x-tenant").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
//!     })
//!     .unwrap();
//! # let _ = per_tenant;
//! ```
//!
//! # Order with the other layers
//!
//! - Client stack: total deadline → retry → circuit breaker → **bulkhead** →
//!   per-attempt timeout → the HTTP client. Each attempt takes its own
//!   permit, so a request waiting in retry backoff holds none; the breaker
//!   and the retry policy treat [`BulkheadFull`] and [`BulkheadTimeout`] as
//!   local rejections (not a downstream failure, not retried).
//! - Server stack: tracing → webhook verify → idempotency → outbox hook →
//!   **bulkhead** (per route or tenant) → timeout → handler. Put axum's
//!   `HandleErrorLayer::new(palisade_core::problem::handle_error)` directly
//!   above it. A timeout inside the bulkhead bounds how long a permit is
//!   held; a replayed idempotent response, outside it, takes no permit.
//!
//! # Telemetry
//!
//! An event hook set with the builder's `on_event` hears of every call the bulkhead refuses (`LayerEvent::BulkheadRejected`, reason `full` or `timeout`), on the
//! calling task ([`palisade_core::events`]); unset, it costs nothing.
//!
//! Metrics, through the `metrics` facade (names in
//! `palisade_core::telemetry::bulkhead`), labelled with the bulkhead's
//! `name`: `palisade_bulkhead_in_flight` and `palisade_bulkhead_queued`
//! (gauges), `palisade_bulkhead_limit` (gauge), `palisade_bulkhead_rejections_total`
//! (counter, `reason` = `full` or `timeout`) and `palisade_bulkhead_wait_seconds`
//! (histogram of the time queued calls waited until sent or timed out, the
//! wait for the inner service's readiness after admission included; a call
//! dropped while it waits records nothing), and
//! `palisade_bulkhead_call_duration_seconds` (histogram of the time each
//! call held its permit, until its body ended with `OnBodyEnd`; it costs two
//! clock reads a call, read only when the histogram records somewhere, so a
//! bulkhead built with no recorder installed reads no clock). Handles are
//! registered when the layer is built, so [install the recorder before building the layer](palisade_core::telemetry#install-the-recorder-before-building-layers). A
//! keyed bulkhead reports the sums over its keys; its limit gauge shows the
//! last limit set on any key. Rejections are logged at `debug` under the
//! target `palisade::bulkhead` with the fields `name` and `reason` (`full`,
//! `timeout` with `wait_ms`, or `keys` when a keyed bulkhead keeps as many
//! busy keys as it may; counted and reported to the hook as `full`).
//!
//! [`BulkheadHandle::snapshot`] and [`KeyedBulkheadHandle::snapshots`] give
//! the limit, calls in flight and queued, for a health endpoint.
//!
//! # Performance
//!
//! An admitted call takes one exchange on a counter word where tower's
//! `ConcurrencyLimit` takes a semaphore and, on release, its mutex, and
//! allocates nothing (see [Cost model](#cost-model)). A keyed bulkhead also
//! looks its key up under the read lock of its thread's shard (threads write
//! no lock word in common); an adaptive one contends on the limit's mutex, so
//! under two threads it trails the fixed one, and reads the clock twice per
//! call.
//!
//! **Headline cost**: the fixed bulkhead, uncontended, 12 ns a call over a
//! bare service in a plain tokio loop and 20 ns in the criterion harness
//! (tower's `ConcurrencyLimit`: 15.5 and 17 ns; tower-resilience's bulkhead:
//! 191 and 194 ns and 3 allocations) with no allocation, on an idle 2-core
//! AMD EPYC; the keyed bulkhead 22 and 27 ns. Every figure, beside its
//! references and with the machine and load it was measured on, is in the
//! [benchmark report](https://github.com/palisade-rs/palisade/blob/main/benches/REPORT.md).
//!
//! # Cost model
//!
//! An admitted call costs one compare-and-swap on a word holding both the
//! in-flight and the queued count, one reference-count increment, and one
//! `fetch_sub` and one decrement when it ends, on counters laid out next to
//! each other (so usually on one cache line); it allocates nothing. The queue
//! (a mutex and a FIFO of reusable slots) is touched only when someone waits;
//! a call that waits is boxed (its request, its timer: one allocation), so
//! that the response future of an admitted call stays small. A keyed
//! bulkhead adds a read-locked hash lookup; an adaptive one reads the clock
//! twice and updates its limit under a mutex when a call ends.
//!
//! [`BulkheadFull`]: palisade_core::BulkheadFull
//! [`BulkheadTimeout`]: palisade_core::BulkheadTimeout

mod body;
mod compartments;
mod error;
pub mod future;
mod gate;
mod handle;
mod layer;
mod limit;
mod release;
mod service;
mod sync;

pub use body::PermitBody;
pub use error::ConfigError;
pub use gate::Permit;
pub use handle::{BulkheadHandle, KeyedBulkheadHandle, Snapshot};
pub use layer::{BulkheadBuilder, BulkheadLayer, KeyedBulkheadLayer};
pub use limit::{Aimd, AimdBuilder, Gradient2, Gradient2Builder, Limit, Sample};
pub use release::{OnBodyEnd, OnResponse, PermitRelease};
pub use service::{Bulkhead, KeyedBulkhead};
