//! The shared state of one breaker: a lock-free closed path, and transitions
//! made by exactly one caller.
//!
//! The state lives in one `AtomicU64`: the state kind (3 bits), the half-open
//! probes taken (16 bits) and succeeded (16 bits), and an epoch (29 bits,
//! wrapping) bumped by every transition. A call remembers the epoch it was
//! admitted in, so an outcome that arrives after the breaker moved on is not
//! counted against the new state. Transitions happen under a mutex (they are
//! rare) but only ever through a compare-exchange on the word, so probe-slot
//! accounting, which runs without the mutex, can never be lost.

use std::sync::Arc;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::time::Duration;

use palisade_core::events::LayerEvent;
use palisade_core::nanos;
use palisade_core::sync::Unpoison;
use palisade_core::{CircuitOpen, Outcome};
use tokio::time::Instant;

use crate::config::{Config, Window};
use crate::state::{Snapshot, State};
use crate::sync::{AtomicU32, AtomicU64, Mutex};
use crate::telemetry::{CallCounters, StateGauge};
use crate::window::{CountWindow, TimeWindow, Totals};

const KIND_MASK: u64 = 0b111;
const CLOSED_BITS: u64 = 0;
const TAKEN_SHIFT: u32 = 3;
const SUCCESS_SHIFT: u32 = 19;
const EPOCH_SHIFT: u32 = 35;
const FIELD_MASK: u64 = 0xFFFF;
const EPOCH_MASK: u64 = (1 << (64 - EPOCH_SHIFT)) - 1;
const TAKEN_ONE: u64 = 1 << TAKEN_SHIFT;
const SUCCESS_ONE: u64 = 1 << SUCCESS_SHIFT;

fn kind(word: u64) -> State {
    State::from_bits(word & KIND_MASK)
}

fn epoch(word: u64) -> u64 {
    word >> EPOCH_SHIFT
}

fn taken(word: u64) -> u32 {
    ((word >> TAKEN_SHIFT) & FIELD_MASK) as u32
}

fn successes(word: u64) -> u32 {
    ((word >> SUCCESS_SHIFT) & FIELD_MASK) as u32
}

/// The word of a fresh state after `word`: next epoch, no probes.
fn next_word(word: u64, to: State) -> u64 {
    (((epoch(word) + 1) & EPOCH_MASK) << EPOCH_SHIFT) | to.bits()
}

/// Why the breaker opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    FailureRate,
    SlowCallRate,
    ConsecutiveFailures,
    ProbeFailed,
    HalfOpenTimeout,
    OpenDurationElapsed,
    ProbesSucceeded,
    Operator,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::FailureRate => "failure_rate",
            Reason::SlowCallRate => "slow_call_rate",
            Reason::ConsecutiveFailures => "consecutive_failures",
            Reason::ProbeFailed => "probe_failed",
            Reason::HalfOpenTimeout => "half_open_timeout",
            Reason::OpenDurationElapsed => "open_duration_elapsed",
            Reason::ProbesSucceeded => "probes_succeeded",
            Reason::Operator => "operator",
        }
    }
}

/// One breaker's shared state.
///
/// Laid out so that what every call writes (the `Arc`'s reference count, the
/// count window's index) and the state word share the first cache line: with
/// several threads calling, one line moves between cores per call, not three.
/// What calls only read comes after.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Breaker {
    state: AtomicU64,
    count_window: Option<CountWindow>,
    consecutive: AtomicU32,
    config: Arc<Config>,
    name: Arc<str>,
    base: Instant,
    /// When an open breaker may half-open, in nanoseconds since `base`; written
    /// before the word that makes it current is published.
    open_until: AtomicU64,
    half_open_since: AtomicU64,
    /// The consecutive-failures limit, 0 when the rule is off (copied out of
    /// the configuration for the hot path).
    consecutive_limit: u32,
    /// Whether calls read the clock when they end (copied out of the configuration).
    needs_clock: bool,
    /// Whether calls read the clock when they start too: to time slow calls
    /// and for the duration histogram.
    times_calls: bool,
    /// Whether call durations go into the duration histogram.
    call_durations: bool,
    time_window: Option<TimeWindow>,
    /// The transition lock; holds how many times in a row the breaker tripped.
    trips: Mutex<u32>,
    /// Held inline, not behind another pointer, so the hot path reads only
    /// this allocation's read-mostly lines.
    calls: CallCounters,
    gauge: StateGauge,
    /// `minimum_calls`, copied out of the configuration for the hot path.
    minimum_calls: u32,
}

/// What a call may do, decided before it is sent.
#[derive(Debug)]
pub(crate) enum Admission {
    /// The breaker is disabled: call, record nothing.
    Pass,
    /// Call, and record the outcome.
    Admit(Recorder),
    /// Fail fast.
    Reject(CircuitOpen),
}

impl Breaker {
    /// A closed breaker named `name` (`layer[key]` for a key's), counting its
    /// calls in `calls` and reporting its state through `gauge`.
    pub(crate) fn new(config: Arc<Config>, name: Arc<str>, calls: CallCounters, gauge: StateGauge) -> Self {
        let (count_window, time_window) = match config.window {
            Some(Window::Count(size)) => (Some(CountWindow::new(size)), None),
            Some(Window::Time { length, buckets }) => (None, Some(TimeWindow::new(length, buckets))),
            None => (None, None),
        };
        let consecutive_limit = config.consecutive.unwrap_or(0);
        let needs_clock = config.needs_clock;
        // A histogram recording nowhere needs no clock readings.
        let call_durations = config.call_durations && palisade_core::telemetry::records(&calls.duration);
        let times_calls = config.slow.is_some() || call_durations;
        let minimum_calls = config.minimum_calls;
        Self {
            config,
            name,
            base: Instant::now(),
            state: AtomicU64::new(State::Closed.bits()),
            open_until: AtomicU64::new(0),
            half_open_since: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            consecutive_limit,
            needs_clock,
            times_calls,
            call_durations,
            count_window,
            time_window,
            trips: Mutex::new(0),
            calls,
            gauge,
            minimum_calls,
        }
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    #[inline]
    pub(crate) fn now_nanos(&self) -> u64 {
        nanos::since(self.base)
    }

    fn reject(&self, retry_after: Duration) -> Admission {
        self.calls.rejected.increment(1);
        self.config.events.emit(|| LayerEvent::BreakerRejected {
            name: &self.name,
            retry_after,
        });
        Admission::Reject(CircuitOpen::new(self.name.clone(), retry_after))
    }

    /// Decides whether a call may go through now, against the state at this
    /// moment; an admitted call's recorder keeps a reference.
    pub(crate) fn admit(self: &Arc<Self>) -> Admission {
        self.admit_slow(self.state.load(Acquire), None)
    }

    /// The epoch of the breaker when it is closed, the common case: a call
    /// goes in, recorded by a [`Recorder::sent`] of that epoch.
    ///
    /// Callers build the recorder after the inner call, in the response
    /// future, instead of going through an [`Admission`]: a recorder built
    /// before the call was kept in memory across it and copied into the future
    /// with wide loads that waited on the narrower stores that had just built
    /// it, a few nanoseconds a call on x86.
    #[inline]
    pub(crate) fn closed_epoch(&self) -> Option<u64> {
        let word = self.state.load(Acquire);
        (word & KIND_MASK == CLOSED_BITS).then(|| epoch(word))
    }

    /// When a call sent now started, for the rules that need call durations
    /// (0 when none does).
    #[inline]
    pub(crate) fn call_start(&self) -> u64 {
        if self.times_calls { self.now_nanos() } else { 0 }
    }

    /// Decides whether a call holding the probe slot `reserved` by
    /// [`gate`](Self::gate) may go through now: the slot is used only if the
    /// half-open period it was reserved in is still the current one.
    pub(crate) fn admit_probe(self: &Arc<Self>, reserved: Recorder) -> Admission {
        self.admit_slow(self.state.load(Acquire), Some(reserved))
    }

    #[inline(never)]
    fn admit_slow(self: &Arc<Self>, word: u64, mut reserved: Option<Recorder>) -> Admission {
        match self.settle(word, &mut reserved) {
            Err(retry_after) => self.reject(retry_after),
            // `settle` leaves a probe slot exactly when the call goes in half-open.
            Ok(word) => match (kind(word), reserved) {
                (State::Disabled, _) => Admission::Pass,
                (_, reserved) => {
                    let mut recorder = reserved.unwrap_or_else(|| Recorder::new(self, epoch(word), false));
                    recorder.start_clock();
                    Admission::Admit(recorder)
                }
            },
        }
    }

    /// Whether a caller waits for the inner service's readiness (true) or is
    /// ready at once, to be rejected by its call (false). In half-open, `probe`
    /// keeps or takes the probe slot the call will use.
    #[inline]
    pub(crate) fn gate(self: &Arc<Self>, probe: &mut Option<Recorder>) -> bool {
        let word = self.state.load(Acquire);
        if word & KIND_MASK == CLOSED_BITS && probe.is_none() {
            return true;
        }
        self.settle(word, probe).is_ok()
    }

    /// The rejection of a call readied without its inner service (the breaker
    /// rejected then): whatever the state now, it is not sent, and a retry may
    /// come after the time left open, if any.
    pub(crate) fn reject_unready(&self) -> Admission {
        let word = self.state.load(Acquire);
        let retry_after = if kind(word) == State::Open {
            Duration::from_nanos(self.open_until.load(Acquire).saturating_sub(self.now_nanos()))
        } else {
            Duration::ZERO
        };
        self.reject(retry_after)
    }

    /// Brings the state up to date from `word` (an open breaker past its
    /// duration half-opens, a half-open one past its limit reopens) and decides
    /// on it: the word a call may go in, or the time to wait when it may not.
    /// In half-open the call goes with a probe slot: the one in `probe` if it
    /// belongs to this half-open period, else a free one taken into `probe`.
    /// Anything else in `probe` is given back.
    fn settle(self: &Arc<Self>, mut word: u64, probe: &mut Option<Recorder>) -> Result<u64, Duration> {
        loop {
            if kind(word) != State::HalfOpen {
                // A slot of an earlier half-open period: giving it back changes nothing.
                *probe = None;
            }
            match kind(word) {
                State::Closed | State::MetricsOnly | State::Disabled => return Ok(word),
                State::ForcedOpen => return Err(Duration::ZERO),
                State::Open => {
                    let now = self.now_nanos();
                    let until = self.open_until.load(Acquire);
                    if now < until {
                        return Err(Duration::from_nanos(until - now));
                    }
                    self.enter_half_open(word, now);
                    word = self.state.load(Acquire);
                }
                State::HalfOpen => {
                    if let Some(max) = self.config.max_half_open {
                        let now = self.now_nanos();
                        if now.saturating_sub(self.half_open_since.load(Acquire)) >= nanos::saturating(max) {
                            self.trip(word, now, Reason::HalfOpenTimeout);
                            word = self.state.load(Acquire);
                            continue;
                        }
                    }
                    if probe.as_ref().is_some_and(|p| p.epoch == epoch(word)) {
                        return Ok(word);
                    }
                    *probe = None;
                    if taken(word) >= self.config.half_open_calls {
                        return Err(Duration::ZERO);
                    }
                    match self
                        .state
                        .compare_exchange_weak(word, word + TAKEN_ONE, AcqRel, Acquire)
                    {
                        Ok(_) => {
                            *probe = Some(Recorder::new(self, epoch(word), true));
                            return Ok(word);
                        }
                        Err(current) => word = current,
                    }
                }
            }
        }
    }

    /// Moves the word from `expected`'s state and epoch to `to`; called with the
    /// transition lock held, so only probe counts can change under it.
    fn replace(&self, expected: u64, to: State) -> bool {
        let mut word = self.state.load(Acquire);
        loop {
            if epoch(word) != epoch(expected) || kind(word) != kind(expected) {
                return false;
            }
            match self
                .state
                .compare_exchange_weak(word, next_word(word, to), AcqRel, Acquire)
            {
                Ok(_) => return true,
                Err(current) => word = current,
            }
        }
    }

    fn still(&self, expected: u64) -> bool {
        let word = self.state.load(Acquire);
        epoch(word) == epoch(expected) && kind(word) == kind(expected)
    }

    fn enter_half_open(&self, expected: u64, now: u64) {
        let _trips = self.trips.lock().unpoison();
        if !self.still(expected) || now < self.open_until.load(Acquire) {
            return;
        }
        self.half_open_since.store(now, Release);
        if self.replace(expected, State::HalfOpen) {
            self.transitioned(State::Open, State::HalfOpen, Reason::OpenDurationElapsed);
        }
    }

    /// Opens the breaker if it is still in `expected`'s state and epoch.
    fn trip(&self, expected: u64, now: u64, reason: Reason) {
        let mut trips = self.trips.lock().unpoison();
        if !self.still(expected) {
            return;
        }
        let in_a_row = if kind(expected) == State::Closed { 0 } else { *trips };
        let duration = self.config.open.for_trip(in_a_row, self.config.random.unit());
        *trips = in_a_row.saturating_add(1);
        self.open_until
            .store(now.saturating_add(nanos::saturating(duration)), Release);
        if self.replace(expected, State::Open) {
            self.transitioned(kind(expected), State::Open, reason);
        }
    }

    fn close(&self, expected: u64) {
        let mut trips = self.trips.lock().unpoison();
        if !self.still(expected) {
            return;
        }
        self.clear_counts();
        *trips = 0;
        if self.replace(expected, State::Closed) {
            self.transitioned(State::HalfOpen, State::Closed, Reason::ProbesSucceeded);
        }
    }

    fn clear_counts(&self) {
        if let Some(window) = &self.count_window {
            window.clear();
        }
        if let Some(window) = &self.time_window {
            window.clear();
        }
        self.consecutive.store(0, Relaxed);
    }

    /// A keyed layer no longer keeps this breaker: it leaves the layer's
    /// keys-by-state gauge, and nothing it does later is counted there.
    pub(crate) fn forget(&self) {
        let _trips = self.trips.lock().unpoison();
        self.gauge.forget(kind(self.state.load(Acquire)));
    }

    /// Puts the breaker into `to` whatever state it is in (operator control).
    pub(crate) fn force(&self, to: State) {
        let mut trips = self.trips.lock().unpoison();
        let from = kind(self.state.load(Acquire));
        if from == to && to != State::Closed {
            return;
        }
        if matches!(to, State::Closed | State::MetricsOnly) {
            self.clear_counts();
            *trips = 0;
        }
        let mut word = self.state.load(Acquire);
        while let Err(current) = self
            .state
            .compare_exchange_weak(word, next_word(word, to), AcqRel, Acquire)
        {
            word = current;
        }
        if from != to {
            self.transitioned(from, to, Reason::Operator);
        }
    }

    /// Reports a transition; called with the transition lock held.
    fn transitioned(&self, from: State, to: State, reason: Reason) {
        self.gauge.transition(from, to);
        self.calls.transitions.count(from, to);
        self.config.events.emit(|| LayerEvent::BreakerTransition {
            name: &self.name,
            from: from.as_str(),
            to: to.as_str(),
        });
        if to == State::Open {
            tracing::warn!(
                target: palisade_core::telemetry::circuit_breaker::TARGET,
                name = %self.name,
                from = from.as_str(),
                to = to.as_str(),
                reason = reason.as_str(),
                "circuit breaker opened"
            );
        } else {
            tracing::info!(
                target: palisade_core::telemetry::circuit_breaker::TARGET,
                name = %self.name,
                from = from.as_str(),
                to = to.as_str(),
                reason = reason.as_str(),
                "circuit breaker changed state"
            );
        }
    }

    /// Applies `change` to the word while it is still the half-open state of
    /// `probe_epoch`; returns the word it changed.
    fn update_half_open(&self, probe_epoch: u64, change: impl Fn(u64) -> Option<u64>) -> Option<u64> {
        let mut word = self.state.load(Acquire);
        loop {
            if epoch(word) != probe_epoch || kind(word) != State::HalfOpen {
                return None;
            }
            let next = change(word)?;
            match self.state.compare_exchange_weak(word, next, AcqRel, Acquire) {
                Ok(_) => return Some(word),
                Err(current) => word = current,
            }
        }
    }

    fn release_probe(&self, probe_epoch: u64) {
        self.update_half_open(probe_epoch, |word| (taken(word) > 0).then(|| word - TAKEN_ONE));
    }

    fn probe_succeeded(&self, probe_epoch: u64) {
        if let Some(word) = self.update_half_open(probe_epoch, |word| Some(word + SUCCESS_ONE))
            && successes(word) + 1 >= self.config.half_open_calls
        {
            let word = word + SUCCESS_ONE;
            if let Some(max) = self.config.max_half_open {
                // Closing late is not closing in time, whether or not another
                // call came by to notice the limit passing.
                let now = self.now_nanos();
                if now.saturating_sub(self.half_open_since.load(Acquire)) >= nanos::saturating(max) {
                    self.trip(word, now, Reason::HalfOpenTimeout);
                    return;
                }
            }
            self.close(word);
        }
    }

    /// Judges the rate rules on `totals`.
    fn rates_exceeded(&self, totals: Totals) -> Option<Reason> {
        if totals.calls < u64::from(self.config.minimum_calls) {
            return None;
        }
        let calls = totals.calls as f64;
        if self
            .config
            .failure_rate
            .is_some_and(|rate| totals.failures as f64 * 100.0 >= rate * calls)
        {
            return Some(Reason::FailureRate);
        }
        if self
            .config
            .slow
            .is_some_and(|slow| totals.slow as f64 * 100.0 >= slow.rate * calls)
        {
            return Some(Reason::SlowCallRate);
        }
        None
    }

    /// Records a fast success of a call admitted closed, when no rule reads the
    /// clock: the hot path.
    #[inline]
    fn record_success(&self, call_epoch: u64) {
        self.calls.success.increment(1);
        let word = self.state.load(Acquire);
        if epoch(word) != call_epoch {
            return;
        }
        if self.consecutive_limit != 0 && self.consecutive.load(Relaxed) != 0 {
            self.consecutive.store(0, Relaxed);
        }
        if let Some(window) = &self.count_window
            && window.record_success(self.minimum_calls)
        {
            self.reached_minimum(word);
        }
    }

    /// The window just reached `minimum_calls`: judge it.
    #[cold]
    fn reached_minimum(&self, word: u64) {
        if let Some(window) = &self.count_window
            && let Some(reason) = self.rates_exceeded(window.totals())
            && kind(word) == State::Closed
        {
            self.trip(word, self.now_nanos(), reason);
        }
    }

    /// Records a finished call admitted in `call_epoch`. `now` is the time it
    /// finished when the configuration reads the clock, else zero.
    #[inline(never)]
    fn record(&self, call_epoch: u64, probe: bool, outcome: Outcome, slow: bool, now: u64) {
        match outcome {
            Outcome::Success => self.calls.success.increment(1),
            Outcome::Failure => self.calls.failure.increment(1),
            Outcome::Ignored => self.calls.ignored.increment(1),
        }
        if slow {
            self.calls.slow.increment(1);
        }
        let failed = match outcome {
            Outcome::Ignored => {
                if probe {
                    self.release_probe(call_epoch);
                }
                return;
            }
            Outcome::Failure => true,
            Outcome::Success => false,
        };
        if probe {
            if failed || slow {
                let word = self.state.load(Acquire);
                if epoch(word) == call_epoch && kind(word) == State::HalfOpen {
                    let now = if self.config.needs_clock { now } else { self.now_nanos() };
                    self.trip(word, now, Reason::ProbeFailed);
                }
            } else {
                self.probe_succeeded(call_epoch);
            }
            return;
        }
        let word = self.state.load(Acquire);
        if epoch(word) != call_epoch {
            // Admitted before the breaker last changed state: says nothing about this one.
            return;
        }
        let mut reason = None;
        if let Some(limit) = self.config.consecutive {
            if failed {
                if self.consecutive.fetch_add(1, Relaxed).saturating_add(1) >= limit {
                    reason = Some(Reason::ConsecutiveFailures);
                }
            } else if self.consecutive.load(Relaxed) != 0 {
                self.consecutive.store(0, Relaxed);
            }
        }
        if let Some(window) = &self.count_window {
            if failed || slow {
                reason = reason.or_else(|| self.rates_exceeded(window.record(failed, slow)));
            } else if window.record_success(self.config.minimum_calls) {
                reason = reason.or_else(|| self.rates_exceeded(window.totals()));
            }
        } else if let Some(window) = &self.time_window {
            reason = reason.or_else(|| self.rates_exceeded(window.record(now, failed, slow)));
        }
        if let Some(reason) = reason
            && kind(word) == State::Closed
        {
            let now = if self.config.needs_clock { now } else { self.now_nanos() };
            self.trip(word, now, reason);
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let word = self.state.load(Acquire);
        let now = self.now_nanos();
        let totals = match (&self.count_window, &self.time_window) {
            (Some(window), _) => window.totals(),
            (None, Some(window)) => window.totals(now),
            (None, None) => Totals::default(),
        };
        let rate = |n: u64| {
            if totals.calls == 0 {
                0.0
            } else {
                n as f64 * 100.0 / totals.calls as f64
            }
        };
        let state = kind(word);
        Snapshot {
            name: self.name.clone(),
            state,
            failure_rate: rate(totals.failures),
            slow_call_rate: rate(totals.slow),
            calls_in_window: totals.calls,
            failed_calls: totals.failures,
            slow_calls: totals.slow,
            consecutive_failures: self.consecutive.load(Relaxed),
            time_until_half_open: (state == State::Open)
                .then(|| Duration::from_nanos(self.open_until.load(Acquire).saturating_sub(now))),
            half_open_probes: if state == State::HalfOpen { taken(word) } else { 0 },
        }
    }
}

/// Records the outcome of one admitted call into the breaker that admitted it.
/// Dropped before [`finish`](Self::finish) (a cancelled call), it records
/// nothing and gives a half-open probe slot back.
#[derive(Debug)]
pub(crate) struct Recorder {
    breaker: Arc<Breaker>,
    epoch: u64,
    probe: bool,
    settled: bool,
    start: u64,
}

impl Recorder {
    /// A recorder whose call is not sent yet: [`start_clock`](Self::start_clock)
    /// when it is.
    fn new(breaker: &Arc<Breaker>, epoch: u64, probe: bool) -> Self {
        Self {
            breaker: breaker.clone(),
            epoch,
            probe,
            settled: false,
            start: 0,
        }
    }

    /// The recorder of a call sent at `start` ([`Breaker::call_start`]) while
    /// the breaker was closed in `epoch` ([`Breaker::closed_epoch`]).
    #[inline]
    pub(crate) fn sent(breaker: Arc<Breaker>, epoch: u64, start: u64) -> Self {
        Self {
            breaker,
            epoch,
            probe: false,
            settled: false,
            start,
        }
    }

    /// Starts the clock of a call sent now, a probe slot reserved earlier
    /// included.
    fn start_clock(&mut self) {
        self.start = self.breaker.call_start();
    }

    /// Records the call's outcome; a second call records nothing.
    #[inline]
    pub(crate) fn finish(&mut self, outcome: Outcome) {
        if self.settled {
            return;
        }
        self.settled = true;
        let breaker = &self.breaker;
        let end = if breaker.times_calls { breaker.now_nanos() } else { 0 };
        if breaker.call_durations {
            // Into the histogram handle registered at build: no lookup, no allocation.
            breaker
                .calls
                .duration
                .record(end.saturating_sub(self.start) as f64 / 1e9);
        }
        if !breaker.needs_clock && !self.probe && outcome == Outcome::Success {
            breaker.record_success(self.epoch);
            return;
        }
        let (slow, now) = if breaker.needs_clock {
            // A time window without the slow-call rule does not time calls.
            let now = if breaker.times_calls { end } else { breaker.now_nanos() };
            let slow = breaker
                .config
                .slow
                .is_some_and(|rule| now.saturating_sub(self.start) >= nanos::saturating(rule.duration));
            (slow, now)
        } else {
            (false, 0)
        };
        breaker.record(self.epoch, self.probe, outcome, slow, now);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.breaker.release_probe(self.epoch);
        }
    }
}
