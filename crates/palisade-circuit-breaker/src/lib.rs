//! A circuit breaker for any tower `Service`: it fails calls fast while the
//! downstream behind it is failing, instead of tying callers up, and probes
//! it back to health.
//!
//! Put it around a dependency you call (a client stack) or around routes (a
//! server stack). While **closed** it lets calls through and judges their
//! outcomes; when a trip rule fires it **opens** and rejects every call at
//! once with [`CircuitOpen`] (the breaker's name and the time left); after the
//! open duration the next call **half-opens** it, which lets a few probes
//! through: if they all succeed it closes, if one fails it opens again.
//!
//! # Install
//!
//! Through the facade, which re-exports this crate as
//! `palisade::circuit_breaker`:
//!
//! ```sh
//! cargo add palisade --features circuit-breaker
//! ```
//!
//! or on its own: `cargo add palisade-circuit-breaker`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_circuit_breaker::{CircuitBreakerBuilder, State};
//! use palisade_core::{BoxError, CircuitOpen};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! // 5 failures in a row open it for 30 s; 3 successful probes close it.
//! let breaker = CircuitBreakerBuilder::consecutive("payments").build()?;
//! let handle = breaker.handle();
//! let payments = ServiceBuilder::new()
//!     .layer(breaker)
//!     .service_fn(|amount: u32| async move {
//!         if amount > 100 { Err::<u32, BoxError>("declined upstream".into()) } else { Ok(amount) }
//!     });
//!
//! for _ in 0..5 {
//!     assert!(payments.clone().oneshot(500).await.is_err());
//! }
//! assert_eq!(handle.state(), State::Open);
//! let err = payments.clone().oneshot(10).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().expect("failed fast");
//! assert_eq!(open.name(), "payments");
//! assert!(open.retry_after() <= Duration::from_secs(30));
//! # Ok(())
//! # }
//! ```
//!
//! A failure-rate breaker for HTTP responses, in one call:
//!
//! ```
//! use std::time::Duration;
//! use palisade_circuit_breaker::CircuitBreakerBuilder;
//! use palisade_core::HttpClassifier;
//!
//! let breaker = CircuitBreakerBuilder::rate_based("inventory")
//!     .classifier(HttpClassifier)          // 5xx, 408, 429 and transport errors fail
//!     .slow_calls(80.0, Duration::from_secs(2))
//!     .open_duration_growing(Duration::from_secs(5), Duration::from_secs(120))
//!     .build()
//!     .expect("valid configuration");
//! # let _ = breaker;
//! ```
//!
//! # Trip rules
//!
//! Any combination of these; the first to fire opens the breaker.
//!
//! - **Failure rate**: at least `failure_rate` percent of the calls in the
//!   window failed.
//! - **Slow-call rate**: at least the given percent of the calls in the window
//!   took `slow_call_duration` or longer, whatever their outcome.
//! - **Consecutive failures**: `n` failures in a row; any success resets the count.
//!
//! Rates are judged only once the window holds `minimum_calls` calls, so one
//! early failure is not a 100 % failure rate. The window is either the last N
//! calls ([`Window::Count`]) or the calls of the last N seconds, kept in
//! buckets that expire whole ([`Window::Time`]). The window and the
//! consecutive count start empty each time the breaker closes.
//!
//! What fails is decided by a [`palisade_core::Classify`]er: by default
//! [`ErrorClassifier`](palisade_core::ErrorClassifier) (any error fails);
//! [`HttpClassifier`](palisade_core::HttpClassifier) and
//! [`GrpcClassifier`](palisade_core::GrpcClassifier) judge responses. palisade's
//! own local rejections (`BulkheadFull`, `BulkheadTimeout`, another breaker's
//! `CircuitOpen`) are [`Ignored`](palisade_core::Outcome::Ignored): they say
//! nothing about the downstream and are not counted at all.
//!
//! A gRPC call's status usually arrives in the response's trailers, after
//! the head: give the breaker `AtEos(GrpcClassifier)`
//! ([`palisade_core::eos::AtEos`]) and it records each call when its response
//! stream ends, by the status the trailers carry (or at the head, for a
//! trailers-only response), for unary and streaming calls alike. The response
//! body then carries the call's [`future::Record`]; a body dropped before its
//! end counts as neither success nor failure and gives a half-open probe slot
//! back.
//!
//! ```
//! use palisade_circuit_breaker::CircuitBreakerBuilder;
//! use palisade_core::{GrpcClassifier, eos::AtEos};
//!
//! let breaker = CircuitBreakerBuilder::consecutive("inventory")
//!     .classifier(AtEos(GrpcClassifier))
//!     .build()
//!     .expect("valid configuration");
//! # let _ = breaker;
//! ```
//!
//! # Defaults
//!
//! [`CircuitBreakerBuilder::rate_based`] (also [`CircuitBreakerLayer::builder`])
//! takes resilience4j's defaults, so a team moving from it sees the same behaviour:
//!
//! | setting | default | why |
//! |---|---|---|
//! | failure rate | 50 % | half the recent calls failing is an outage, not noise |
//! | window | last 100 calls | long enough to smooth noise, short enough to react within seconds at moderate traffic |
//! | `minimum_calls` | 100, or a count window's size when smaller | the rate of a full window (resilience4j caps it the same way); lower it for low-traffic downstreams |
//! | slow-call rate | off | it needs a clock read per call; a timeout inside the breaker turns hangs into failures anyway |
//! | consecutive failures | off | the rate rule covers it at volume |
//! | open duration | 60 s, fixed | long enough for a restarted dependency to come back |
//! | probes in half-open | 10 | enough successes to trust recovery, few enough not to hammer it |
//! | max time in half-open | none | probes that never finish are the timeout layer's business |
//! | jitter source | `fastrand::f64` | injectable with [`CircuitBreakerBuilder::random`] |
//! | keyed: max keys, idle timeout | 1024, 10 min | bounded memory for clients calling many hosts |
//!
//! [`CircuitBreakerBuilder::consecutive`] is the classic breaker: 5 failures in
//! a row open it for 30 s, then 3 successful probes close it.
//!
//! `build()` validates: thresholds within (0, 100] %, non-zero windows and
//! counts, a `minimum_calls` set no larger than a count window, buckets of at least
//! 1 ms, at least one rule, a growing open duration's base below its cap, a
//! multiplier of at least 1 and jitter within [0, 1]. Nothing panics at run time.
//!
//! # Open and half-open
//!
//! The open duration is fixed ([`CircuitBreakerBuilder::open_duration`]) or
//! grows on trips in a row, as Envoy and Finagle eject hosts
//! ([`CircuitBreakerBuilder::open_duration_growing`]: doubling from a base up
//! to a cap, shortened by up to 20 % jitter so many clients do not probe in
//! lockstep; [`OpenDuration::Growing`] sets each part). A trip from closed
//! uses the base again.
//!
//! No timer task runs: the first call after the open duration half-opens the
//! breaker. Half-open admits exactly `permitted_calls_in_half_open` probes and
//! rejects the rest (with a `Retry-After` of zero); it closes when all of them
//! succeed and reopens on the first failure (or slow call, with the slow-call
//! rule on). With [`CircuitBreakerBuilder::max_half_open_duration`], a
//! half-open breaker whose probes have not closed it in time reopens: the
//! next call finds it reopened, and a probe that succeeds past the limit
//! reopens it instead of closing it.
//!
//! # Errors
//!
//! The service's error is [`BoxError`](palisade_core::BoxError). A rejection is
//! a [`CircuitOpen`] (defined in palisade-core, where every layer finds it), which palisade-core maps
//! to `503 Service Unavailable` with `Retry-After` and an RFC 9457 body through
//! its `ToProblem` implementation
//! (`palisade_core::problem::handle_error` for axum's `HandleErrorLayer`,
//! `ProblemResponseLayer` for hyper). Errors of the inner service come back as
//! they were, boxed: `downcast_ref` and `source()` still find them.
//!
//! # In an axum server
//!
//! Two places, both below: around a dependency a handler calls (the usual
//! one: the handler answers `503` problem+json at once while payments is
//! down), and around routes, with `HandleErrorLayer` turning `CircuitOpen`
//! into its response. With palisade-core's `axum` feature a handler returns
//! `Result<_, Problem>`, and `problem_for_error` gives the problem of any
//! layer error.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, error_handling::HandleErrorLayer, extract::State, routing::{get, post}};
//! use palisade_circuit_breaker::CircuitBreakerLayer;
//! use palisade_core::{BoxError, problem::{Problem, handle_error, problem_for_error}};
//! use tower::{Layer, ServiceBuilder, ServiceExt, service_fn, util::BoxCloneSyncService};
//!
//! type Payments = BoxCloneSyncService<u64, String, BoxError>;
//!
//! /// Calls payments through the breaker; an open breaker, or any other
//! /// error, becomes the client's problem+json answer.
//! async fn pay(State(payments): State<Payments>) -> Result<String, Problem> {
//!     payments.oneshot(4200).await.map_err(|e| problem_for_error(&*e))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! // Around a dependency: the payments client.
//! let breaker = CircuitBreakerLayer::builder("payments").build()?;
//! let handle = breaker.handle();
//! let client = service_fn(|cents: u64| async move { Ok::<_, BoxError>(format!("charged {cents}")) });
//! let payments: Payments = BoxCloneSyncService::new(breaker.layer(client));
//!
//! // Around routes: `/report` fails fast while its own breaker is open.
//! let routes_breaker = CircuitBreakerLayer::builder("report").build()?;
//! let app = Router::new()
//!     .route("/pay", post(pay))
//!     .with_state(payments)
//!     .route(
//!         "/report",
//!         get(|| async { "report" }).layer(
//!             ServiceBuilder::new()
//!                 .layer(HandleErrorLayer::new(handle_error))
//!                 .layer(routes_breaker.clone()),
//!         ),
//!     );
//!
//! let post_pay = || http::Request::post("/pay").body(axum::body::Body::empty()).unwrap();
//! let res = app.clone().oneshot(post_pay()).await?;
//! assert_eq!(res.status(), 200);
//!
//! handle.force_open();
//! let res = app.clone().oneshot(post_pay()).await?;
//! assert_eq!(res.status(), 503);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! assert!(res.headers().contains_key("retry-after"));
//!
//! routes_breaker.handle().force_open();
//! let res = app.oneshot(http::Request::get("/report").body(axum::body::Body::empty())?).await?;
//! assert_eq!(res.status(), 503);
//! # Ok(())
//! # }
//! ```
//!
//! # Sharing, readiness and cancellation
//!
//! Every service made by one layer, and every clone of them, shares one
//! breaker (axum and hyper clone services per connection and per request):
//! build one layer per downstream.
//!
//! **Admission** is decided in `call`, against the breaker's state at that
//! moment, never against the state a caller found when it started waiting for
//! readiness. A caller that waited behind the inner service's backpressure
//! (a `ConcurrencyLimit`, a `Buffer`, a rate limit, a tonic `Channel`) while
//! the breaker opened is rejected with [`CircuitOpen`] when it calls, not
//! forwarded; half-open never has more than `permitted_calls_in_half_open`
//! probes reserved or in flight, whatever the inner service's readiness does.
//!
//! **Readiness**: `poll_ready` decides only whether to wait for the inner
//! service. While the breaker rejects (open and not yet due to half-open,
//! forced open, or half-open with every probe slot taken) it is ready at once
//! without polling the inner service, so callers fail fast; the call that
//! follows is rejected whatever the state has become meanwhile, since the
//! inner service was not made ready for it. Otherwise it waits for the inner
//! service, checking the breaker again each time it is polled. Once it has
//! answered ready it stays ready until the call, as tower's contract asks:
//! polling again returns ready at once and never turns into a wait.
//!
//! In half-open, `poll_ready` reserves a probe slot before waiting for the
//! inner service, and the next `call` uses it if the breaker is still in the
//! same half-open period (else that call is decided anew). The slot belongs
//! to that service value: a clone does not share it, and dropping the service,
//! waiting or readied, gives it back.
//!
//! A response future dropped before it completes records nothing, neither
//! success nor failure, and gives its half-open probe slot back. An outcome
//! that arrives after the breaker changed state (a slow call admitted while
//! closed that ends after the breaker half-opened) is not counted against the
//! new state.
//!
//! # Keyed mode
//!
//! [`CircuitBreakerBuilder::build_keyed`] makes one breaker per key computed
//! from the request (authority, route, tenant), so a client calling many hosts
//! isolates them. At most `max_keys` are kept: when a new key needs room, keys
//! idle for longer than `key_idle_timeout` go first, then the least recently
//! used closed breaker (one in any other state is kept while a closed one
//! can go, so an outage, a recovery under way or an operator's setting is
//! not forgotten). For the same reason an idle key stays while its breaker
//! is open with time left (callers told to come back later do not call
//! meanwhile), half-open or set by an operator, and while a call of the key
//! is in flight (a long call's failure must reach the key's breaker) or a
//! handle to its breaker is held. A call reads no clock to note that its key was used: a
//! sweep (making room for a new key, or
//! [`evict_idle`](KeyedCircuitBreakerHandle::evict_idle)) dates the keys
//! used since the previous sweep to its own time, so a key is never dropped
//! as idle before it is, and at most one interval between sweeps late; call
//! `evict_idle` periodically (say, every minute) to keep that bound short.
//! Each key's breaker is named `name[key]`;
//! [`KeyedCircuitBreakerHandle`] reports and controls them. The key is known
//! only with the request, so a keyed breaker's `poll_ready` waits for the
//! inner service alone; admission is decided in `call` by the same rule as
//! above, against the key's state at that moment (a rejection then leaves the
//! inner service's readiness unused).
//!
//! # Operator control and health
//!
//! A [`CircuitBreakerHandle`] (from the layer or the service) gives a
//! [`Snapshot`] (state, failure and slow-call rates, calls in the window,
//! consecutive failures, time until half-open, probes taken) for health
//! endpoints, and switches operator states at run time:
//! [`disable`](CircuitBreakerHandle::disable) (every call passes, nothing is
//! recorded), [`force_open`](CircuitBreakerHandle::force_open) (every call is
//! rejected), [`metrics_only`](CircuitBreakerHandle::metrics_only) (outcomes
//! are recorded and reported, the breaker never opens), and
//! [`reset`](CircuitBreakerHandle::reset) (closed, counts forgotten; also the
//! way out of an operator state).
//!
//! # Ordering with other layers
//!
//! Client stack, outermost first: total deadline → retry (with budget) →
//! **circuit breaker** → bulkhead → per-attempt timeout → HTTP client. The
//! retry policy sees the breaker's `CircuitOpen` and does not retry it; the
//! breaker sees the timeout's errors as failures and the bulkhead's
//! rejections as ignored. On a server, put the breaker around the routes that
//! depend on a fragile downstream, inside `HandleErrorLayer`.
//!
//! # Telemetry
//!
//! An event hook set with the builder's `on_event` hears of every state change and every call refused with `CircuitOpen` (`LayerEvent::BreakerTransition`, `LayerEvent::BreakerRejected`), on the
//! calling task ([`palisade_core::events`]); unset, it costs nothing.
//!
//! Metrics through the `metrics` facade, registered when the layer is built
//! (a transition's series on its first occurrence), so
//! [install the recorder before building the layer](palisade_core::telemetry#install-the-recorder-before-building-layers); named in `palisade_core::telemetry`:
//!
//! - `palisade_circuit_breaker_calls_total{name, outcome}`: `success`,
//!   `failure`, `ignored`, `rejected`, and `slow` (a slow call also counts
//!   under its outcome);
//! - `palisade_circuit_breaker_state{name, state}` (single breakers): one
//!   series per state (`closed`, `open`, `half_open`, `disabled`,
//!   `forced_open`, `metrics_only`), 1 for the current state and 0 for the
//!   others, so `palisade_circuit_breaker_state{state="open"} == 1` selects
//!   the open breakers;
//! - `palisade_circuit_breaker_transitions_total{name, from, to}`;
//! - `palisade_circuit_breaker_call_duration_seconds{name}`: a histogram of
//!   each admitted call's duration until its outcome, on tokio's clock.
//!   Timing reads the clock twice a call (a few tens of nanoseconds), and
//!   only when the histogram records somewhere: built with no recorder
//!   installed, a breaker reads no clock for it;
//!   [`CircuitBreakerBuilder::call_durations`]`(false)` turns it off, and
//!   the series is then not registered;
//! - `palisade_circuit_breaker_keys{name, state}` (keyed layers): how many
//!   keys are kept in each state (`closed`, `open`, `half_open`, `disabled`,
//!   `forced_open`, `metrics_only`).
//!
//! The `name` label is always the layer's name, and no label is taken from a
//! request: a keyed layer counts calls and transitions of all its keys under
//! its name, registers no series per key (it has no `state{name}` gauge), and
//! an evicted key leaves the `keys` gauge. A keyed layer's series are thus
//! bounded (5 call outcomes, 6 states, at most 36 transitions) however many
//! keys its requests bring; a key's own state is in its handle's
//! [`Snapshot`]. Every transition is a `tracing` event under the
//! target `palisade::circuit_breaker` with the fields `name` (`name[key]` for a
//! key's breaker), `from`, `to` and
//! `reason` (`failure_rate`, `slow_call_rate`, `consecutive_failures`,
//! `probe_failed`, `half_open_timeout`, `open_duration_elapsed`,
//! `probes_succeeded`, `operator`): `WARN` when it opens, `INFO` otherwise.
//!
//! # Performance
//!
//! The closed path takes no lock, allocates nothing and reads no clock unless
//! a rule needs time (the slow-call rule or the time-based window) or the
//! call-duration histogram records somewhere. The state
//! is one `AtomicU64` (kind, half-open probe counts and an epoch), which
//! `poll_ready` and `call` each load once (plain loads, no read-modify-write);
//! the count-based window is a ring of atomic outcome slots indexed by a
//! `fetch_add` counter with running failure and slow counts. A successful,
//! fast call into a full window holding no failure and no slow call leaves
//! it as it was, so it writes nothing there (cores calling a healthy breaker
//! share its lines without taking them from each other); otherwise it costs
//! one read-modify-write. Either way beyond the `Arc` its response future
//! holds. Transitions are rare and happen under a mutex, through a
//! compare-exchange, so exactly one caller trips, half-opens or closes the
//! breaker. The time-based window is a ring of buckets of atomic counters,
//! each claimed by the first call of its tick through a compare-exchange (a
//! call racing that claim may go uncounted; a window of many calls does not
//! notice).
//!
//! Most of a closed call's cost is the two atomic operations on the `Arc`
//! its response future holds, and the window index while the window holds a
//! failure or a slow call; the time window adds a
//! clock read and the sum of its buckets, the keyed breaker a map lookup under
//! the read lock of its thread's shard.
//!
//! **Headline cost**: closed, with a count window, 11 ns a call over a bare
//! service in a plain tokio loop and 18 ns in the criterion harness (tower's
//! `ConcurrencyLimit`: 15.5 and 16 ns; failsafe's breaker: 70 and 79 ns;
//! tower-resilience's: 222 and 219 ns and 3 allocations), 10 and 17 ns with
//! consecutive failures only, with no allocation, on an idle 2-core AMD EPYC;
//! the keyed breaker about 1.5 times the count window's (30 against 20 ns
//! and 36 against 25 ns in a run on an Intel Xeon, where `ConcurrencyLimit`
//! costs about twice what it does on the EPYC). Two tasks calling one
//! healthy count-window breaker run at 2.1 to 3.8 times
//! `ConcurrencyLimit`'s rate in the plain loop (1.7 times in the criterion
//! harness).
//! Every figure, beside its references and with the machine and load it was
//! measured on, is in the
//! [benchmark report](https://github.com/palisade-rs/palisade/blob/main/benches/REPORT.md).
//!
//! [`CircuitOpen`]: palisade_core::CircuitOpen

mod breaker;
mod builder;
mod config;
mod error;
pub mod future;
mod handle;
mod keyed;
mod layer;
mod registry;
mod service;
mod state;
mod sync;
mod telemetry;
mod window;

pub use builder::CircuitBreakerBuilder;
pub use config::{MAX_HALF_OPEN_CALLS, OpenDuration, Window};
pub use error::ConfigError;
pub use handle::{CircuitBreakerHandle, KeyedCircuitBreakerHandle};
pub use keyed::{KeyedCircuitBreaker, KeyedCircuitBreakerLayer};
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
pub use state::{Snapshot, State};
