//! Hedged requests: when a safe request has not been answered within a
//! delay, another attempt goes out, and the first good answer wins.
//!
//! [`HedgeLayer`] cuts the tail latency a few slow calls cause (a cold
//! cache, a garbage-collecting replica, a lost packet) without waiting for
//! them to fail: past the delay, a fixed one or a percentile of the
//! latencies it observed, it sends a hedge; another after each further
//! delay, up to `max_attempts` in flight. The first answer the classifier
//! calls a success is returned and the other attempts are dropped, which
//! cancels them and releases what they held (a bulkhead permit, a
//! connection). Only safe requests are hedged: idempotent methods, requests
//! with an `Idempotency-Key`, or those a predicate allows. Each hedge draws
//! on a [`RetryBudget`](palisade_retry::RetryBudget), shared with the retry
//! layer if wanted, so a slow dependency is not sent twice the load.
//! Request bodies are replayed as palisade-retry replays them
//! ([`ReplayBody`](palisade_retry::ReplayBody)).
//!
//! # Install
//!
//! Through the facade, which re-exports this crate as `palisade::hedge`:
//!
//! ```sh
//! cargo add palisade --features hedge
//! ```
//!
//! or on its own: `cargo add palisade-hedge`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_hedge::HedgeLayer;
//! use palisade_retry::HttpRetryLayer;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One budget for retries and hedges.
//! let retry = HttpRetryLayer::builder("search").build()?;
//! let hedge = HedgeLayer::builder("search")
//!     .percentile(0.95, 1000, 100)
//!     .budget(retry.budget().unwrap().clone())
//!     .build()?;
//! assert_eq!(hedge.current_delay(), None, "no hedging before 100 latencies were seen");
//!
//! let fixed = HedgeLayer::builder("search").delay(Duration::from_millis(50)).build()?;
//! assert_eq!(fixed.current_delay(), Some(Duration::from_millis(50)));
//! # Ok(())
//! # }
//! ```
//!
//! # Settings
//!
//! | setting | default | why |
//! |---|---|---|
//! | delay | 95th percentile of the last 1000 attempts, once 100 were seen | hedges only the slowest 5 %: about 5 % more load for a much shorter tail |
//! | `max_attempts` | 2 | the original and one hedge: the second attempt does most of the good |
//! | budget | a [`RetryBudget`](palisade_retry::RetryBudget) of its own (20 % of requests, at least 10/s), which each request deposits in; another with [`own_budget`](HedgeBuilder::own_budget), or the retry layer's with [`budget`](HedgeBuilder::budget) | caps the extra load when the dependency is slow for everyone |
//! | classifier | [`HttpClassifier`](palisade_core::HttpClassifier) | a 5xx or a transport error does not win; the other attempts go on |
//! | safe requests | GET, HEAD, OPTIONS, PUT, DELETE, TRACE, or an `Idempotency-Key` | a hedge is a duplicate: only requests that may run twice |
//! | `hedge_if` | none | replaces the method and key check (gRPC calls are POSTs: decide by path) |
//! | `replay_limit` | 64 KiB | larger bodies are sent once and not hedged; a gRPC request stream, whose length is unknown until it ends, is kept while it stays within it |
//!
//! When every attempt sent has failed, the first failure is returned. Two
//! answers to a hedge are no answer at all, and the attempts in flight go
//! on: a refusal on this side (a local rejection such as a full bulkhead's
//! or an open breaker's, whose draw on the budget is given back, since no
//! duplicate went out), a hedge ended by the deadline (`DeadlineExceeded`,
//! whose draw stands: it may have gone out, and the error does not tell a
//! hedge cut in flight from one refused for lack of time), and a 409 to a
//! hedge carrying the idempotency key (the server is running the original
//! under that key, and a palisade-idempotency server answers a repeat so
//! until it is done). The same 409 to the original while a keyed hedge is
//! in flight is no answer either: the hedge reached the server first and
//! runs under the key, and no further hedge is sent. That 409 counts as a
//! failure: should every attempt fail, the first failure answers. A
//! hedge waits for the inner service's readiness (a `Buffer` or tower's
//! `ConcurrencyLimit` at capacity delays it; the attempts in flight go on
//! meanwhile); a readiness error gives up on hedging. The percentile is recomputed every tenth of the window's
//! samples; each attempt that completes (winners and failures; not a local
//! rejection such as an open breaker's, which takes no time and would pull
//! the percentile towards zero) adds its latency. An original that a hedge
//! beat adds the time it ran before it was dropped: it was at least that
//! slow, past the delay, and without it the slow calls the hedges cut short
//! would vanish from the window, the percentile would sink to that of the
//! fast calls, and more requests would be hedged than the percentile says.
//! Hedges that lost add nothing (their time ran from a later start).
//!
//! A hedge sent while the request body is still arriving reads it beside
//! the original attempt: each attempt gets every byte, whichever reads
//! first. Should a gRPC request stream outgrow the replay limit meanwhile,
//! only the attempt furthest along goes on, as gRPC's own hedging commits
//! to one attempt when its buffer overflows.
//!
//! # Order with other layers
//!
//! Where the retry layer sits in the client stack: outside the circuit
//! breaker and the bulkhead, so an open breaker answers a hedge at once (a
//! local rejection is not a good answer) and each attempt takes its own
//! bulkhead permit; inside the request's deadline, and with deadline
//! propagation inside it, so each hedge carries what is left of the budget.
//! Hedging and retrying the same call are rarely both wanted; if they are,
//! put the retry layer outside this one and hand this one its budget
//! ([`budget`](HedgeBuilder::budget)): the retry layer deposits once for
//! each request, and retries and hedges withdraw from the same share.
//!
//! # Telemetry
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `palisade_hedge_hedges_total` | counter | name |
//! | `palisade_hedge_wins_total` | counter | name, winner (`original`, `hedge`) |
//! | `palisade_hedge_budget_exhausted_total` | counter | name |
//!
//! Tracing target `palisade::hedge`: `debug` events for each hedge (field
//! `attempt`) and each hedge refused by the budget, with the field `name`.
//!
//! # Guarantees
//!
//! - The losers are dropped the moment a winner answers, so whatever they
//!   held is released then; dropping the response future drops every attempt.
//! - An unsafe request is never hedged; neither is one whose body is over
//!   the replay limit.
//! - No hedge is sent without a withdrawal from the budget (when one is on);
//!   a hedge refused on this side gives it back.
//!
//! # Performance
//!
//! A call that needs no hedge costs a body wrapper, a request template (its
//! head cloned), one timer and, with a percentile delay, one lock to record
//! its latency; it allocates nothing. A hedge allocates its future. Measured
//! on a loaded 2-core machine: about 0.31 µs over a bare HTTP service with a
//! fixed delay, 0.38 µs with a percentile; against a bimodal downstream (95 %
//! of calls 1 ms, 5 % 50 ms, 32 in flight) a p90 hedge brought the p99 from
//! 51 ms to 5.8 ms for 4.8 % more calls. See the benchmark report,
//! <https://github.com/palisade-rs/palisade/blob/main/benches/REPORT.md>.

mod error;
pub mod future;
mod latency;
mod layer;
mod service;
mod state;

pub use error::ConfigError;
pub use layer::{HedgeBuilder, HedgeLayer};
pub use service::Hedge;
