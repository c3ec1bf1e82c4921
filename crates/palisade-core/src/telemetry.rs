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
//! | `palisade_circuit_breaker_state` | gauge | name, state (`closed`, `open`, `half_open`, `disabled`, `forced_open`, `metrics_only`) | a single breaker's state: one series per state, 1 for the current one, 0 for the others |
//! | `palisade_circuit_breaker_call_duration_seconds` | histogram | name | duration of each call the breaker let through, until its outcome (unless turned off with `call_durations(false)`) |
//! | `palisade_circuit_breaker_transitions_total` | counter | name, from, to | state changes |
//! | `palisade_circuit_breaker_keys` | gauge | name, state | keys a keyed breaker keeps in each state |
//! | `palisade_bulkhead_in_flight` | gauge | name | calls holding a permit |
//! | `palisade_bulkhead_queued` | gauge | name | calls waiting for a permit |
//! | `palisade_bulkhead_limit` | gauge | name | the current concurrency limit |
//! | `palisade_bulkhead_rejections_total` | counter | name, reason (`full`, `timeout`) | rejected calls |
//! | `palisade_bulkhead_wait_seconds` | histogram | name | time waited for a permit |
//! | `palisade_bulkhead_call_duration_seconds` | histogram | name | time a call held its permit, from admission to completion |
//! | `palisade_retry_attempts_total` | counter | name | attempts, the first included |
//! | `palisade_retry_retries_total` | counter | name, reason | retries, by what made them retry |
//! | `palisade_retry_budget_exhausted_total` | counter | name | retries refused by the budget |
//! | `palisade_grpc_rejections_total` | counter | name, reason (`circuit_open`, `bulkhead_full`, `bulkhead_timeout`, `overloaded`, `timeout`, `deadline`, `unreachable`, `other`) | errors a gRPC server answered with a status |
//! | `palisade_deadline_exceeded_total` | counter | name, side (`server`, `client`) | requests answered 504 or `DEADLINE_EXCEEDED` (server), calls failed with `DeadlineExceeded` (client) |
//! | `palisade_deadline_malformed_total` | counter | name, reason (`grpc_timeout`, `header`) | requests refused for a malformed timeout header |
//! | `palisade_hedge_hedges_total` | counter | name | hedged attempts sent |
//! | `palisade_hedge_wins_total` | counter | name, winner (`original`, `hedge`) | calls answered, by which attempt answered |
//! | `palisade_hedge_budget_exhausted_total` | counter | name | hedges not sent because the retry budget was empty |
//! | `palisade_fallback_calls_total` | counter | name, reason (`failure`, `circuit_open`, `bulkhead_full`, `bulkhead_timeout`, `deadline_exceeded`) | calls answered by the fallback |
//! | `palisade_retry_attempt_duration_seconds` | histogram | name | duration of each attempt, the first included |
//! | `palisade_idempotency_requests_total` | counter | name, outcome (`first`, `replayed`, `conflict`, `mismatch`, `invalid`, `store_error`); reason on `invalid` (`missing_key`, `malformed_key`, `body_too_large`, `unreadable_body`) and `store_error` (`fail_closed`, `fail_open`) | requests carrying a key |
//! | `palisade_idempotency_store_duration_seconds` | histogram | name, operation (`begin`, `complete`, `release`) | one store operation, failed or not |
//! | `palisade_webhook_verifications_total` | counter | name, scheme, outcome (`verified`, `duplicate`, reject reasons) | inbound webhooks |
//! | `palisade_outbox_pending` | gauge | name | events not yet published |
//! | `palisade_outbox_lag_seconds` | gauge | name | age of the oldest pending event |
//! | `palisade_outbox_published_total` | counter | name | events published |
//! | `palisade_outbox_failed_total` | counter | name | failed publish attempts |
//! | `palisade_outbox_dead_lettered_total` | counter | name | events moved to the dead-letter state |
//! | `palisade_outbox_publish_lag_seconds` | histogram | name | from an event's commit (its `occurred_at`) to its publication |
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
//!
//! A duration histogram costs two clock readings per call. A layer whose
//! histogram handle records nowhere ([`records`] is false: no recorder was
//! installed when it was built) reads no clock for it.

use std::cell::Cell;

/// Whether `histogram` records anywhere. `false` for the handle a layer got
/// when no recorder was installed at its `build()` (or from a recorder that
/// keeps no such series): such a handle drops every value for good, so a
/// layer may skip measuring what it would record.
pub fn records(histogram: &metrics::Histogram) -> bool {
    /// A value that notes when a handle converts it, which only a handle
    /// that forwards values to a recorder does.
    struct Probe<'a>(&'a Cell<bool>);

    impl metrics::IntoF64 for Probe<'_> {
        fn into_f64(self) -> f64 {
            self.0.set(true);
            0.0
        }
    }

    let forwarded = Cell::new(false);
    // Recorded zero times: the recorder is asked for nothing.
    histogram.record_many(Probe(&forwarded), 0);
    forwarded.get()
}

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
/// Label: a store operation (`begin`, `complete`, `release`).
pub const LABEL_OPERATION: &str = "operation";

/// Tracing spans, with their stable fields.
///
/// | span | target | fields |
/// |---|---|---|
/// | `palisade.retry.attempt` (debug) | `palisade::retry` | `name`, `attempt` (1 for the first), `retried` (`true` once the policy retries it) |
/// | `palisade.outbox.batch` (info) | `palisade::outbox` | `name`, `claimed` (events in the batch), `published`, `failed`, `dead_lettered` (recorded when the batch ends) |
///
/// They are ordinary `tracing` spans, so any subscriber sees them; to export
/// them to an OpenTelemetry collector, put a `tracing-opentelemetry` layer in
/// the subscriber:
///
/// ```text
/// use opentelemetry::trace::TracerProvider as _;
/// use tracing_subscriber::prelude::*;
///
/// let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
/// let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
///     .with_batch_exporter(exporter)
///     .build();
/// tracing_subscriber::registry()
///     .with(tracing_subscriber::EnvFilter::new("info,palisade=debug"))
///     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("my-service")))
///     .init();
/// ```
///
/// Each retry attempt is then a child of the request's span, and each outbox
/// batch a root span of the relay, with the fields above as attributes.
pub mod spans {
    /// One attempt of a retried call.
    pub const RETRY_ATTEMPT: &str = "palisade.retry.attempt";
    /// One batch of the outbox relay.
    pub const OUTBOX_BATCH: &str = "palisade.outbox.batch";
    /// Span field: whether the policy retried an attempt.
    pub const FIELD_RETRIED: &str = "retried";
    /// Span field: events claimed in a batch.
    pub const FIELD_CLAIMED: &str = "claimed";
}

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
    /// Histogram of the duration of admitted calls, in seconds.
    pub const CALL_DURATION_SECONDS: &str = "palisade_circuit_breaker_call_duration_seconds";
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
    /// Histogram of the time a call held its permit, in seconds.
    pub const CALL_DURATION_SECONDS: &str = "palisade_bulkhead_call_duration_seconds";
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
    /// Histogram of the duration of each attempt, in seconds.
    pub const ATTEMPT_DURATION_SECONDS: &str = "palisade_retry_attempt_duration_seconds";
}

/// Metric and target names of the gRPC status layer (`palisade-grpc`).
pub mod grpc {
    /// Tracing target.
    pub const TARGET: &str = "palisade::grpc";
    /// Counter of errors answered with a gRPC status, by reason.
    pub const REJECTIONS_TOTAL: &str = "palisade_grpc_rejections_total";
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
    /// Histogram of store operations by operation, in seconds.
    pub const STORE_DURATION_SECONDS: &str = "palisade_idempotency_store_duration_seconds";
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
    /// Histogram of the time from an event's commit to its publication, in seconds.
    pub const PUBLISH_LAG_SECONDS: &str = "palisade_outbox_publish_lag_seconds";
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::records;

    #[test]
    fn a_handle_without_a_recorder_records_nowhere() {
        assert!(!records(&metrics::histogram!("palisade_test_seconds")));
        assert!(!records(&metrics::Histogram::noop()));
    }

    #[test]
    fn a_handle_from_a_recorder_records_and_the_probe_adds_no_value() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let histogram = metrics::with_local_recorder(&recorder, || metrics::histogram!("palisade_test_seconds"));
        assert!(records(&histogram));
        let values: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(_, _, _, value)| value)
            .collect();
        assert_eq!(values, vec![DebugValue::Histogram(Vec::new())]);
    }
}
