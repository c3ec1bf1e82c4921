//! Request-wide deadlines: a budget set once at the edge, enforced there,
//! and carried by every downstream call.
//!
//! [`DeadlineLayer`] (server side) gives each request a total budget: the
//! shortest of a configured one, the caller's `grpc-timeout` and the
//! caller's HTTP header (`x-request-timeout-ms` by default), each capped.
//! It puts the resulting [`Deadline`](palisade_core::deadline::Deadline) in
//! the request's extensions and makes it the
//! [current](palisade_core::deadline::Deadline::current) one for the work
//! serving the request. When the deadline passes it drops the inner future,
//! cancelling the work, and answers `504 Gateway Timeout` with a problem
//! (HTTP) or `DEADLINE_EXCEEDED` (gRPC).
//!
//! [`PropagateDeadlineLayer`] (client side) bounds each attempt of an
//! outgoing call by the smallest of its own timeout, a budget the call
//! already carries (tonic's `Request::set_timeout` writes `grpc-timeout`),
//! and what is left of the request's deadline less a safety margin, and
//! sends that budget downstream (`grpc-timeout` on gRPC requests, the HTTP
//! header on others), so the next service inherits it. palisade-retry's policies read the same deadline and
//! never start a wait that would end past it.
//!
//! # Install
//!
//! Through the facade, which re-exports this crate as `palisade::deadline`:
//!
//! ```sh
//! cargo add palisade --features deadline
//! ```
//!
//! or on its own: `cargo add palisade-deadline`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use palisade_core::deadline::Deadline;
//! use palisade_deadline::DeadlineLayer;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let deadline = DeadlineLayer::builder("edge").timeout(Duration::from_millis(300)).build()?;
//! let app = Router::new()
//!     .route("/fast", get(|| async {
//!         // Handlers (and the clients they call) find the deadline.
//!         let left = Deadline::current().unwrap().remaining();
//!         format!("{} ms left", left.as_millis())
//!     }))
//!     .route("/slow", get(|| async {
//!         tokio::time::sleep(Duration::from_secs(5)).await;
//!         "never sent"
//!     }))
//!     .layer(deadline);
//!
//! let res = app.clone().oneshot(http::Request::get("/fast").body(axum::body::Body::empty())?).await?;
//! assert_eq!(res.status(), 200);
//!
//! // The caller asks for 100 ms: the shortest budget wins.
//! let req = http::Request::get("/slow").header("x-request-timeout-ms", "100").body(axum::body::Body::empty())?;
//! let started = tokio::time::Instant::now();
//! let res = app.oneshot(req).await?;
//! assert_eq!(res.status(), 504);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! assert_eq!(started.elapsed(), Duration::from_millis(100));
//! # Ok(())
//! # }
//! ```
//!
//! On the client, inside the retry layer so each attempt gets what is left:
//!
//! ```
//! use std::time::Duration;
//! use palisade_deadline::PropagateDeadlineLayer;
//! use palisade_retry::HttpRetryLayer;
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let http_client = tower::service_fn(|_req: http::Request<palisade_retry::ReplayBody<String>>| async {
//! #     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//! # });
//! let client = ServiceBuilder::new()
//!     .layer(HttpRetryLayer::builder("inventory").build()?)
//!     .layer(PropagateDeadlineLayer::builder("inventory").timeout(Duration::from_secs(2)).build()?)
//!     .service(http_client);
//! # let _ = client;
//! # Ok(())
//! # }
//! ```
//!
//! # Passing the deadline to a client
//!
//! The server layer sets the deadline two ways, and the client layer and
//! palisade-retry look in both ([`Deadline::of`](palisade_core::deadline::Deadline::of)):
//!
//! - **The task**: a handler's future runs with the deadline as
//!   [`Deadline::current`](palisade_core::deadline::Deadline::current), so a
//!   client called from the handler (awaited in it, not spawned) picks it up
//!   with nothing to do.
//! - **Extensions**: the request carries it (`Extension<Deadline>` in axum,
//!   `request.extensions()` in tonic and hyper). Work that leaves the task
//!   (`tokio::spawn`, a channel to a worker) does not see the task's
//!   deadline: copy it into the outgoing request,
//!   `outgoing.extensions_mut().insert(deadline)`.
//!
//! # Settings
//!
//! [`DeadlineBuilder`] (server):
//!
//! | setting | default | why |
//! |---|---|---|
//! | `timeout` | none | the service's own budget; without one only a caller's header sets a deadline |
//! | `max_timeout` | 5 minutes ([`DEFAULT_MAX_TIMEOUT`]) | a caller cannot ask for an absurd budget (`99999999H`); larger values are cut to it |
//! | `header` / `no_header` | `x-request-timeout-ms` | whole milliseconds, 1 to 12 ASCII digits |
//! | `grpc_timeout` | read | gRPC's own header: 1 to 8 digits and a unit `H`, `M`, `S`, `m`, `u`, `n` |
//!
//! The shortest of the configured budget, `grpc-timeout` and the header
//! wins (every value of a repeated header counts: a gateway may append its
//! own; and so does every element of the millisecond header's values
//! folded into one line with commas, as a proxy may, RFC 9110 §5.3), and
//! an enclosing deadline (an outer layer's) still holds. A malformed
//! header, or a malformed value among several, is refused: `400` with a problem of type
//! `urn:palisade:problem:malformed-timeout` over HTTP, `INVALID_ARGUMENT`
//! over gRPC (with `grpc-message` "malformed grpc-timeout", or "malformed
//! timeout header" for the HTTP header); the inner service is not called. A zero budget
//! (`grpc-timeout: 0m`) is answered as exceeded at once. A request is gRPC
//! when its `content-type` starts with `application/grpc`; its answers are
//! trailers-only: HTTP 200, `content-type: application/grpc`, `grpc-status`
//! and `grpc-message` in the headers, no body.
//!
//! [`PropagateDeadlineBuilder`] (client):
//!
//! | setting | default | why |
//! |---|---|---|
//! | `timeout` | none | an attempt's own bound, used when shorter than what the deadline leaves |
//! | `margin` | 10 ms ([`DEFAULT_MARGIN`]) | time kept for the answer to travel back and be handled |
//! | `header` / `no_header` | `x-request-timeout-ms` | where the budget goes on HTTP requests |
//! | `grpc_timeout` | sent | `grpc-timeout` on gRPC requests |
//!
//! An attempt whose budget is zero is not sent: it fails with
//! [`DeadlineExceeded`](palisade_core::deadline::DeadlineExceeded); so does
//! one whose budget is under a millisecond on HTTP, which the header (whole
//! milliseconds) could only say as `0`. A budget the call already carries
//! in the header the layer writes bounds it like the layer's own timeout
//! (cut with tower's `Elapsed`), and is replaced by a smaller one; with the
//! header repeated, the shortest value counts (a malformed one is no
//! budget), and one value goes on. An
//! attempt cut by the deadline fails with `DeadlineExceeded` too (a local
//! rejection: not retried, not counted by a breaker, 504 through
//! [`problem_for_error`](palisade_core::problem::problem_for_error)),
//! whether this layer cuts it or the downstream does, enforcing the budget
//! it was sent (a tonic channel fails at its `grpc-timeout` with a timeout
//! of its own, a palisade server answers `504` or a trailers-only
//! `DEADLINE_EXCEEDED`, which this layer sees at its bound, or up to the
//! millisecond the header rounds away before it; any error there is taken
//! for the deadline's, whatever its type); one cut by its own
//! shorter timeout fails with tower's `Elapsed`, which the retry policy may
//! retry. With neither a deadline nor a timeout the layer only
//! passes the call through. For a client outside tower,
//! [`attempt_timeout`](palisade_core::deadline::attempt_timeout) computes
//! the same bound.
//!
//! # Order with other layers
//!
//! - **Server stack**: the deadline is outermost, so its budget covers
//!   everything else (idempotency, load shedding, bulkheads, the handler),
//!   and a request refused for a malformed header costs nothing else.
//! - **Client stack**: deadline propagation sits inside the retry (or
//!   hedging) layer, so each attempt gets what is left of the budget and
//!   carries it downstream; the retry policy reads the same deadline and
//!   starts no wait that would end past it.
//!
//! # Telemetry
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `palisade_deadline_exceeded_total` | counter | name, side (`server`: answered 504 or `DEADLINE_EXCEEDED`; `client`: failed with `DeadlineExceeded`) |
//! | `palisade_deadline_malformed_total` | counter | name, reason (`grpc_timeout`, `header`) |
//!
//! Tracing target `palisade::deadline`: `debug` events for each exceeded
//! deadline and each malformed header, with the field `name` (and `reason`).
//!
//! # Guarantees
//!
//! - When the deadline passes, the inner future is dropped at once (not when
//!   the caller drops the response future), so whatever it held (bulkhead
//!   permits, connections, locks) is released and its downstream calls are
//!   cancelled.
//! - The deadline bounds the call until the response head; a streamed body
//!   that follows is not cut, and is polled with the deadline as the current
//!   one, so the calls a server-streaming handler makes while its stream is
//!   polled carry it too.
//! - A dropped response future drops the inner one; nothing is counted.
//! - Time comes from tokio's clock, so paused-time tests see deadlines pass
//!   exactly.
//!
//! # Performance
//!
//! A call reads two headers, makes one `Deadline` (one clock reading),
//! inserts it in the request's extensions (three allocations: the map, its
//! table and the value; tower-http's extension layers pay the same), and
//! arms one tokio timer, which is only registered if the call has to wait.
//! Measured on a loaded 2-core machine: about 0.25 µs over a bare HTTP
//! service with a budget of its own, against 0.05 µs for tower's `Timeout`
//! (no extension); 0.08 µs without any budget. See the benchmark report,
//! <https://github.com/palisade-rs/palisade/blob/main/benches/REPORT.md>.

mod body;
mod error;
pub mod future;
mod layer;
mod reply;
mod service;
mod state;

pub use body::DeadlineBody;
pub use error::ConfigError;
pub use layer::{
    DEFAULT_MARGIN, DEFAULT_MAX_TIMEOUT, DeadlineBuilder, DeadlineLayer, PropagateDeadlineBuilder,
    PropagateDeadlineLayer,
};
pub use service::{PropagateDeadline, SetDeadline};
