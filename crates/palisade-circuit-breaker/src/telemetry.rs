//! Metric handles, registered once per breaker so a call only bumps a counter.

use metrics::{Counter, Gauge};
use palisade_core::telemetry::circuit_breaker::{CALLS_TOTAL, STATE, TRANSITIONS_TOTAL};
use palisade_core::telemetry::{LABEL_FROM, LABEL_NAME, LABEL_OUTCOME, LABEL_TO};

use crate::handle::State;

/// `palisade_circuit_breaker_calls_total` by outcome. Cloning shares the counters.
#[derive(Debug, Clone)]
pub(crate) struct CallCounters {
    pub(crate) success: Counter,
    pub(crate) failure: Counter,
    pub(crate) ignored: Counter,
    pub(crate) slow: Counter,
    pub(crate) rejected: Counter,
}

impl CallCounters {
    pub(crate) fn new(name: &str) -> Self {
        let counter = |outcome: &'static str| metrics::counter!(CALLS_TOTAL, LABEL_NAME => name.to_owned(), LABEL_OUTCOME => outcome);
        Self {
            success: counter("success"),
            failure: counter("failure"),
            ignored: counter("ignored"),
            slow: counter("slow"),
            rejected: counter("rejected"),
        }
    }
}

/// `palisade_circuit_breaker_state`.
#[derive(Debug)]
pub(crate) struct StateGauge(Gauge);

impl StateGauge {
    pub(crate) fn new(name: &str) -> Self {
        Self(metrics::gauge!(STATE, LABEL_NAME => name.to_owned()))
    }

    pub(crate) fn set(&self, state: State) {
        self.0.set(f64::from(state.gauge_value()));
    }
}

/// Counts a transition in `palisade_circuit_breaker_transitions_total`.
pub(crate) fn transition(name: &str, from: State, to: State) {
    metrics::counter!(
        TRANSITIONS_TOTAL,
        LABEL_NAME => name.to_owned(),
        LABEL_FROM => from.as_str(),
        LABEL_TO => to.as_str()
    )
    .increment(1);
}
