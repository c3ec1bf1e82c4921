//! The metric names, labels and tracing targets every palisade layer uses.
//!
//! Metrics go through the [`metrics`](https://docs.rs/metrics) facade, so any
//! exporter (Prometheus, StatsD, OpenTelemetry) picks them up; with no
//! recorder installed they cost a few nanoseconds. Every metric carries the
//! layer instance's [`LABEL_NAME`]; every rejection carries a [`LABEL_REASON`].
//! Names follow Prometheus conventions: `palisade_<layer>_<what>`, counters end
//! in `_total`, durations are histograms in seconds.
//!
//! | metric | kind | labels | meaning |
//! |---|---|---|---|
//! | `palisade_circuit_breaker_calls_total` | counter | name, outcome (`success`, `failure`, `ignored`, `slow`, `rejected`) | calls seen by a breaker |
//! | `palisade_circuit_breaker_state` | gauge | name | a single breaker's state: 0 closed, 1 open, 2 half-open, 3 disabled, 4 forced open, 5 metrics only |
//! | `palisade_circuit_breaker_transitions_total` | counter | name, from, to | state changes |
//! | `palisade_circuit_breaker_keys` | gauge | name, state | keys a keyed breaker keeps in each state |
//! | `palisade_bulkhead_in_flight` | gauge | name | calls holding a permit |
//! | `palisade_bulkhead_queued` | gauge | name | calls waiting for a permit |
//! | `palisade_bulkhead_limit` | gauge | name | the current concurrency limit |
//! | `palisade_bulkhead_rejections_total` | counter | name, reason (`full`, `timeout`) | rejected calls |
//! | `palisade_bulkhead_wait_seconds` | histogram | name | time waited for a permit |
//! | `palisade_retry_attempts_total` | counter | name | attempts, the first included |
//! | `palisade_retry_retries_total` | counter | name, reason | retries, by what made them retry |
//! | `palisade_retry_budget_exhausted_total` | counter | name | retries refused by the budget |
//! | `palisade_deadline_exceeded_total` | counter | name, side (`server`, `client`) | requests answered 504 or `DEADLINE_EXCEEDED` (server), calls failed with `DeadlineExceeded` (client) |
//! | `palisade_deadline_malformed_total` | counter | name, reason (`grpc_timeout`, `header`) | requests refused for a malformed timeout header |
//! | `palisade_hedge_hedges_total` | counter | name | hedged attempts sent |
//! | `palisade_hedge_wins_total` | counter | name, winner (`original`, `hedge`) | calls answered, by which attempt answered |
//! | `palisade_hedge_budget_exhausted_total` | counter | name | hedges not sent because the retry budget was empty |
//! | `palisade_fallback_calls_total` | counter | name, reason (`failure`, `circuit_open`, `bulkhead_full`, `bulkhead_timeout`, `deadline_exceeded`) | calls answered by the fallback |
//! | `palisade_idempotency_requests_total` | counter | name, outcome (`first`, `replayed`, `conflict`, `mismatch`, `invalid`, `store_error`); reason on `invalid` (`missing_key`, `malformed_key`, `body_too_large`, `unreadable_body`) and `store_error` (`fail_closed`, `fail_open`) | requests carrying a key |
//! | `palisade_webhook_verifications_total` | counter | name, scheme, outcome (`verified`, `duplicate`, reject reasons) | inbound webhooks |
//! | `palisade_outbox_pending` | gauge | name | events not yet published |
//! | `palisade_outbox_lag_seconds` | gauge | name | age of the oldest pending event |
//! | `palisade_outbox_published_total` | counter | name | events published |
//! | `palisade_outbox_failed_total` | counter | name | failed publish attempts |
//! | `palisade_outbox_dead_lettered_total` | counter | name | events moved to the dead-letter state |
//!
//! # Install the recorder before building layers
//!
//! Every palisade layer registers its metric handles once, when its builder's
//! `build()` runs (or, for a series that appears only when it happens, such as
//! a breaker's transition from one state to another, on its first
//! occurrence), and keeps them in the layer's shared state: a call only bumps
//! a handle it already holds, cloning no label and looking nothing up. The
//! handles belong to the recorder installed at that moment, so install the
//! recorder (`metrics::set_global_recorder`, an exporter's `install()`)
//! before building any layer. A layer built earlier reports to the recorder
//! that was current then (with none, to nowhere), whatever is installed later.
//!
//! Tracing: each layer logs under its own target (`palisade::circuit_breaker`,
//! ...), so `RUST_LOG=palisade::bulkhead=debug` selects one layer; events use
//! the field names [`FIELD_NAME`], [`FIELD_REASON`] and friends.

/// Label: the layer instance's name (the breaker, bulkhead or retry policy it came from).
pub const LABEL_NAME: &str = "name";
/// Label: a call's outcome.
pub const LABEL_OUTCOME: &str = "outcome";
/// Label: why a call was rejected or retried.
pub const LABEL_REASON: &str = "reason";
/// Label: the webhook scheme.
pub const LABEL_SCHEME: &str = "scheme";
/// Label: the state a transition left.
pub const LABEL_FROM: &str = "from";
/// Label: the state a transition entered.
pub const LABEL_TO: &str = "to";
/// Label: the side of a deadline (`server`, `client`).
pub const LABEL_SIDE: &str = "side";
/// Label: which attempt answered a hedged call (`original`, `hedge`).
pub const LABEL_WINNER: &str = "winner";
/// Label: a state (`closed`, `open`, ...).
pub const LABEL_STATE: &str = "state";

/// Tracing field: the layer instance's name.
pub const FIELD_NAME: &str = "name";
/// Tracing field: the reason of a rejection or retry.
pub const FIELD_REASON: &str = "reason";
/// Tracing field: the attempt number (1 for the first).
pub const FIELD_ATTEMPT: &str = "attempt";
/// Tracing field: a wait, in milliseconds.
pub const FIELD_WAIT_MS: &str = "wait_ms";

/// Metric and target names of the circuit breaker.
pub mod circuit_breaker {
    /// Tracing target.
    pub const TARGET: &str = "palisade::circuit_breaker";
    /// Counter of calls by outcome.
    pub const CALLS_TOTAL: &str = "palisade_circuit_breaker_calls_total";
    /// Gauge of the state.
    pub const STATE: &str = "palisade_circuit_breaker_state";
    /// Counter of state transitions.
    pub const TRANSITIONS_TOTAL: &str = "palisade_circuit_breaker_transitions_total";
    /// Gauge of the keys a keyed breaker keeps, by state.
    pub const KEYS: &str = "palisade_circuit_breaker_keys";
}

/// Metric and target names of the bulkhead.
pub mod bulkhead {
    /// Tracing target.
    pub const TARGET: &str = "palisade::bulkhead";
    /// Gauge of calls in flight.
    pub const IN_FLIGHT: &str = "palisade_bulkhead_in_flight";
    /// Gauge of calls queued.
    pub const QUEUED: &str = "palisade_bulkhead_queued";
    /// Gauge of the concurrency limit.
    pub const LIMIT: &str = "palisade_bulkhead_limit";
    /// Counter of rejections by reason.
    pub const REJECTIONS_TOTAL: &str = "palisade_bulkhead_rejections_total";
    /// Histogram of time waited for a permit, in seconds.
    pub const WAIT_SECONDS: &str = "palisade_bulkhead_wait_seconds";
}

/// Metric and target names of the retry policy.
pub mod retry {
    /// Tracing target.
    pub const TARGET: &str = "palisade::retry";
    /// Counter of attempts.
    pub const ATTEMPTS_TOTAL: &str = "palisade_retry_attempts_total";
    /// Counter of retries by reason.
    pub const RETRIES_TOTAL: &str = "palisade_retry_retries_total";
    /// Counter of retries refused by the budget.
    pub const BUDGET_EXHAUSTED_TOTAL: &str = "palisade_retry_budget_exhausted_total";
}

/// Metric and target names of the deadline layers.
pub mod deadline {
    /// Tracing target.
    pub const TARGET: &str = "palisade::deadline";
    /// Counter of requests and calls whose deadline passed, by side.
    pub const EXCEEDED_TOTAL: &str = "palisade_deadline_exceeded_total";
    /// Counter of requests refused for a malformed timeout header, by reason.
    pub const MALFORMED_TOTAL: &str = "palisade_deadline_malformed_total";
}

/// Metric and target names of the hedging layer.
pub mod hedge {
    /// Tracing target.
    pub const TARGET: &str = "palisade::hedge";
    /// Counter of hedged attempts sent.
    pub const HEDGES_TOTAL: &str = "palisade_hedge_hedges_total";
    /// Counter of answered calls, by the attempt that answered.
    pub const WINS_TOTAL: &str = "palisade_hedge_wins_total";
    /// Counter of hedges not sent for an empty retry budget.
    pub const BUDGET_EXHAUSTED_TOTAL: &str = "palisade_hedge_budget_exhausted_total";
}

/// Metric and target names of the fallback layer.
pub mod fallback {
    /// Tracing target.
    pub const TARGET: &str = "palisade::fallback";
    /// Counter of calls answered by the fallback, by reason.
    pub const CALLS_TOTAL: &str = "palisade_fallback_calls_total";
}

/// Metric and target names of the Idempotency-Key layer.
pub mod idempotency {
    /// Tracing target.
    pub const TARGET: &str = "palisade::idempotency";
    /// Counter of keyed requests by outcome.
    pub const REQUESTS_TOTAL: &str = "palisade_idempotency_requests_total";
}

/// Metric and target names of the webhook layers.
pub mod webhook {
    /// Tracing target.
    pub const TARGET: &str = "palisade::webhook";
    /// Counter of verifications by scheme and outcome.
    pub const VERIFICATIONS_TOTAL: &str = "palisade_webhook_verifications_total";
}

/// Metric and target names of the outbox.
pub mod outbox {
    /// Tracing target.
    pub const TARGET: &str = "palisade::outbox";
    /// Gauge of pending events.
    pub const PENDING: &str = "palisade_outbox_pending";
    /// Gauge of the oldest pending event's age, in seconds.
    pub const LAG_SECONDS: &str = "palisade_outbox_lag_seconds";
    /// Counter of published events.
    pub const PUBLISHED_TOTAL: &str = "palisade_outbox_published_total";
    /// Counter of failed publish attempts.
    pub const FAILED_TOTAL: &str = "palisade_outbox_failed_total";
    /// Counter of dead-lettered events.
    pub const DEAD_LETTERED_TOTAL: &str = "palisade_outbox_dead_lettered_total";
}
