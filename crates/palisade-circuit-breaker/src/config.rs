//! The validated configuration a breaker runs with.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::backoff::{Backoff, Jitter, Random};
use palisade_core::events::EventHook;

/// The most half-open probes a breaker accounts for (they share one atomic word with the state).
pub const MAX_HALF_OPEN_CALLS: u32 = 0xFFFF;

/// How the breaker remembers recent calls for its rate rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last `length`, kept in `buckets` buckets of `length / buckets`
    /// each; a whole bucket expires at once.
    Time {
        /// How far back the window reaches.
        length: Duration,
        /// Into how many buckets it is split.
        buckets: u32,
    },
}

/// How long the breaker stays open after tripping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OpenDuration {
    /// Always the same.
    Fixed(Duration),
    /// `base * multiplier^k` for the `k`-th trip in a row without closing in between
    /// (k = 0 for a trip from closed), capped at `max`, then shortened by up to
    /// `jitter` (a fraction) times a random number so breakers of many clients do
    /// not probe in lockstep: palisade-core's
    /// [`Backoff::exponential`](palisade_core::backoff::Backoff::exponential) with
    /// [`Jitter::Shorten`](palisade_core::backoff::Jitter::Shorten).
    Growing {
        /// The first open duration.
        base: Duration,
        /// The cap.
        max: Duration,
        /// The growth per trip.
        multiplier: f64,
        /// The largest fraction cut off by jitter.
        jitter: f64,
    },
}

impl OpenDuration {
    /// The duration of the `trip`-th trip in a row, with `random` in `[0, 1)` for jitter.
    pub(crate) fn for_trip(&self, trip: u32, random: f64) -> Duration {
        match *self {
            OpenDuration::Fixed(d) => d,
            OpenDuration::Growing { jitter, .. } => {
                Jitter::Shorten(jitter).apply(&self.backoff(), trip.saturating_add(1), Duration::ZERO, random)
            }
        }
    }

    /// The schedule of a growing open duration (a fixed one never grows).
    pub(crate) fn backoff(&self) -> Backoff {
        match *self {
            OpenDuration::Fixed(d) => Backoff::constant(d),
            OpenDuration::Growing {
                base, max, multiplier, ..
            } => Backoff::exponential(base, multiplier, max),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SlowRule {
    pub(crate) rate: f64,
    pub(crate) duration: Duration,
}

/// The validated configuration one breaker (or every breaker of a keyed layer) runs with.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) name: Arc<str>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow: Option<SlowRule>,
    pub(crate) consecutive: Option<u32>,
    /// `None` when no rate rule needs a window.
    pub(crate) window: Option<Window>,
    pub(crate) minimum_calls: u32,
    pub(crate) open: OpenDuration,
    pub(crate) half_open_calls: u32,
    pub(crate) max_half_open: Option<Duration>,
    pub(crate) random: Random,
    /// Whether a call must read the clock: only for the slow-call rule and the time-based window.
    pub(crate) needs_clock: bool,
    pub(crate) events: EventHook,
    /// Whether call durations go into the duration histogram.
    pub(crate) call_durations: bool,
}
