//! Metric handles, registered once per layer so a call only bumps a counter.
//!
//! Every series is labelled with the layer's name and nothing taken from a
//! request: a keyed layer registers nothing per key, so its series stay
//! bounded however many keys its requests bring.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram};
use palisade_core::telemetry::circuit_breaker::{CALL_DURATION_SECONDS, CALLS_TOTAL, KEYS, STATE, TRANSITIONS_TOTAL};
use palisade_core::telemetry::{LABEL_FROM, LABEL_NAME, LABEL_OUTCOME, LABEL_STATE, LABEL_TO};

use crate::state::State;
use crate::sync::AtomicBool;

/// `palisade_circuit_breaker_calls_total` by outcome, and the layer's
/// transition counters. Cloning shares the counters.
#[derive(Debug, Clone)]
pub(crate) struct CallCounters {
    pub(crate) success: Counter,
    pub(crate) failure: Counter,
    pub(crate) ignored: Counter,
    pub(crate) slow: Counter,
    pub(crate) rejected: Counter,
    /// `palisade_circuit_breaker_call_duration_seconds{name}`.
    pub(crate) duration: Histogram,
    pub(crate) transitions: Arc<Transitions>,
}

impl CallCounters {
    /// The layer's counters; the duration histogram is registered only when
    /// `timed`, so a breaker that does not time its calls reports no series.
    pub(crate) fn new(name: &str, timed: bool) -> Self {
        let counter = |outcome: &'static str| metrics::counter!(CALLS_TOTAL, LABEL_NAME => name.to_owned(), LABEL_OUTCOME => outcome);
        Self {
            success: counter("success"),
            failure: counter("failure"),
            ignored: counter("ignored"),
            slow: counter("slow"),
            rejected: counter("rejected"),
            duration: if timed {
                metrics::histogram!(CALL_DURATION_SECONDS, LABEL_NAME => name.to_owned())
            } else {
                Histogram::noop()
            },
            transitions: Arc::new(Transitions::new(name)),
        }
    }
}

/// `palisade_circuit_breaker_transitions_total{name, from, to}`. A pair's
/// counter is registered by its first transition and held from then on, so
/// a transition clones no label and pairs that never happen report no series.
#[derive(Debug)]
pub(crate) struct Transitions {
    name: Arc<str>,
    counters: [[OnceLock<Counter>; 6]; 6],
}

impl Transitions {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            counters: Default::default(),
        }
    }

    /// Counts a transition from `from` to `to`.
    pub(crate) fn count(&self, from: State, to: State) {
        self.counters[from.index()][to.index()]
            .get_or_init(|| {
                metrics::counter!(
                    TRANSITIONS_TOTAL,
                    LABEL_NAME => self.name.to_string(),
                    LABEL_FROM => from.as_str(),
                    LABEL_TO => to.as_str()
                )
            })
            .increment(1);
    }
}

/// Every state, in gauge-value order.
const STATES: [State; 6] = [
    State::Closed,
    State::Open,
    State::HalfOpen,
    State::Disabled,
    State::ForcedOpen,
    State::MetricsOnly,
];

/// `palisade_circuit_breaker_keys{name, state}`: how many keys of a keyed
/// layer are kept in each state.
#[derive(Debug)]
pub(crate) struct KeyStates([Gauge; 6]);

impl KeyStates {
    pub(crate) fn new(name: &str) -> Self {
        Self(STATES.map(|state| metrics::gauge!(KEYS, LABEL_NAME => name.to_owned(), LABEL_STATE => state.as_str())))
    }

    fn gauge(&self, state: State) -> &Gauge {
        &self.0[state.index()]
    }
}

/// Where a breaker reports its state.
#[derive(Debug)]
pub(crate) enum StateGauge {
    /// A layer's one breaker: `palisade_circuit_breaker_state{name, state}`,
    /// one series per state, 1 for the current state and 0 for the others.
    Single([Gauge; 6]),
    /// A key's breaker: counted in its layer's [`KeyStates`] while the key is
    /// kept. `kept` changes only under the breaker's transition lock, as the
    /// state does.
    Key { states: Arc<KeyStates>, kept: AtomicBool },
}

impl StateGauge {
    /// The gauge of a layer's breaker, which starts closed.
    pub(crate) fn single(name: &str) -> Self {
        let gauges =
            STATES.map(|state| metrics::gauge!(STATE, LABEL_NAME => name.to_owned(), LABEL_STATE => state.as_str()));
        for (state, gauge) in STATES.iter().zip(&gauges) {
            gauge.set(if *state == State::Closed { 1.0 } else { 0.0 });
        }
        Self::Single(gauges)
    }

    /// A new key's breaker, which starts closed.
    pub(crate) fn key(states: &Arc<KeyStates>) -> Self {
        states.gauge(State::Closed).increment(1.0);
        Self::Key {
            states: states.clone(),
            kept: AtomicBool::new(true),
        }
    }

    /// The breaker moved from `from` to `to`; called under its transition lock.
    pub(crate) fn transition(&self, from: State, to: State) {
        match self {
            Self::Single(gauges) => {
                gauges[from.index()].set(0.0);
                gauges[to.index()].set(1.0);
            }
            Self::Key { states, kept } => {
                if kept.load(Relaxed) {
                    states.gauge(from).decrement(1.0);
                    states.gauge(to).increment(1.0);
                }
            }
        }
    }

    /// The key's breaker, now in `state`, is no longer kept; called under its
    /// transition lock. Whatever it does later is not counted.
    pub(crate) fn forget(&self, state: State) {
        if let Self::Key { states, kept } = self
            && kept.swap(false, Relaxed)
        {
            states.gauge(state).decrement(1.0);
        }
    }
}
