//! The builder of breaker layers: validates a configuration and builds a
//! layer, or a keyed layer, from it.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::ErrorClassifier;
use palisade_core::backoff::{Jitter, Random};
use palisade_core::events::{EventHook, LayerEvent};

use crate::config::{Config, MAX_HALF_OPEN_CALLS, OpenDuration, SlowRule, Window};
use crate::error::ConfigError;
use crate::keyed::KeyedCircuitBreakerLayer;
use crate::layer::CircuitBreakerLayer;

impl CircuitBreakerLayer {
    /// A builder with the failure-rate defaults (see
    /// [`CircuitBreakerBuilder::rate_based`]).
    pub fn builder(name: impl Into<Arc<str>>) -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::rate_based(name)
    }
}

/// Builds a [`CircuitBreakerLayer`] (or a [`KeyedCircuitBreakerLayer`]).
///
/// Start from [`CircuitBreakerBuilder::rate_based`] (also
/// [`CircuitBreakerLayer::builder`]) or [`CircuitBreakerBuilder::consecutive`];
/// the crate docs list every default and why.
#[derive(Debug, Clone)]
pub struct CircuitBreakerBuilder<C = ErrorClassifier> {
    name: Arc<str>,
    classifier: C,
    failure_rate: Option<f64>,
    slow: Option<SlowRule>,
    consecutive: Option<u32>,
    window: Window,
    /// `None`: [`DEFAULT_MINIMUM_CALLS`], capped at a count window's size.
    minimum_calls: Option<u32>,
    open: OpenDuration,
    half_open_calls: u32,
    max_half_open: Option<Duration>,
    random: Random,
    max_keys: usize,
    key_idle_timeout: Duration,
    events: EventHook,
    call_durations: bool,
}

/// The calls a window must hold before its rates are judged, unless set: the
/// rate of a full default window.
const DEFAULT_MINIMUM_CALLS: u32 = 100;
/// The most calls a count window holds: a byte each, taken at build (for
/// each key, in keyed mode).
const MAX_WINDOW_CALLS: u32 = 1_000_000;
/// The most buckets a time window is split into: a few words each, taken at build.
const MAX_BUCKETS: u32 = 10_000;

impl CircuitBreakerBuilder<ErrorClassifier> {
    /// A failure-rate breaker with resilience4j's defaults: trips when at least
    /// 50 % of the last 100 calls failed (judged once 100 calls were seen), stays
    /// open 60 s, then lets 10 probes through and closes when all succeed.
    pub fn rate_based(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            classifier: ErrorClassifier,
            failure_rate: Some(50.0),
            slow: None,
            consecutive: None,
            window: Window::Count(100),
            minimum_calls: None,
            open: OpenDuration::Fixed(Duration::from_secs(60)),
            half_open_calls: 10,
            max_half_open: None,
            random: Random::default(),
            max_keys: 1_024,
            key_idle_timeout: Duration::from_secs(600),
            events: EventHook::none(),
            call_durations: true,
        }
    }

    /// The classic breaker: trips after 5 consecutive failures, stays open 30 s,
    /// then lets 3 probes through and closes when all 3 succeed.
    pub fn consecutive(name: impl Into<Arc<str>>) -> Self {
        Self {
            failure_rate: None,
            consecutive: Some(5),
            open: OpenDuration::Fixed(Duration::from_secs(30)),
            half_open_calls: 3,
            ..Self::rate_based(name)
        }
    }
}

impl<C> CircuitBreakerBuilder<C> {
    /// Decides which results are failures (default [`ErrorClassifier`]: any error;
    /// use `HttpClassifier` or `GrpcClassifier` for responses).
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerBuilder<C2> {
        CircuitBreakerBuilder {
            name: self.name,
            classifier,
            failure_rate: self.failure_rate,
            slow: self.slow,
            consecutive: self.consecutive,
            window: self.window,
            minimum_calls: self.minimum_calls,
            open: self.open,
            half_open_calls: self.half_open_calls,
            max_half_open: self.max_half_open,
            random: self.random,
            max_keys: self.max_keys,
            key_idle_timeout: self.key_idle_timeout,
            events: self.events,
            call_durations: self.call_durations,
        }
    }

    /// Trips when at least `percent` of the calls in the window failed.
    pub fn failure_rate(mut self, percent: f64) -> Self {
        self.failure_rate = Some(percent);
        self
    }

    /// Turns the failure-rate rule off.
    pub fn no_failure_rate(mut self) -> Self {
        self.failure_rate = None;
        self
    }

    /// Trips when at least `percent` of the calls in the window took `duration`
    /// or longer, whatever their outcome. A slow probe in half-open counts as failed.
    pub fn slow_calls(mut self, percent: f64, duration: Duration) -> Self {
        self.slow = Some(SlowRule {
            rate: percent,
            duration,
        });
        self
    }

    /// Trips after `n` failures in a row (a success resets the count).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive = Some(n);
        self
    }

    /// Turns the consecutive-failures rule off.
    pub fn no_consecutive_failures(mut self) -> Self {
        self.consecutive = None;
        self
    }

    /// Judges rates over the last `calls` calls (at most 1,000,000).
    pub fn count_window(mut self, calls: u32) -> Self {
        self.window = Window::Count(calls);
        self
    }

    /// Judges rates over the calls of the last `length`, kept in `buckets`
    /// buckets (at most 10,000, each at least 1 ms long).
    pub fn time_window(mut self, length: Duration, buckets: u32) -> Self {
        self.window = Window::Time { length, buckets };
        self
    }

    /// Sets the window exactly.
    pub fn window(mut self, window: Window) -> Self {
        self.window = window;
        self
    }

    /// Rates are judged only once the window holds this many calls (default
    /// 100, or a count window's size when smaller, as resilience4j does). A
    /// value set here larger than a count window is refused by `build()`.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = Some(calls);
        self
    }

    /// Stays open for `duration` after every trip.
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.open = OpenDuration::Fixed(duration);
        self
    }

    /// Stays open `base` after a trip from closed, doubling on each trip in a row
    /// up to `max`, with up to 20 % jitter (see [`OpenDuration::Growing`]).
    pub fn open_duration_growing(mut self, base: Duration, max: Duration) -> Self {
        self.open = OpenDuration::Growing {
            base,
            max,
            multiplier: 2.0,
            jitter: 0.2,
        };
        self
    }

    /// Sets the open duration exactly.
    pub fn open_duration_with(mut self, open: OpenDuration) -> Self {
        self.open = open;
        self
    }

    /// Where jitter's random numbers in `[0, 1)` come from (default `fastrand::f64`);
    /// tests pass a fixed source.
    pub fn random(mut self, random: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.random = Random::new(random);
        self
    }

    /// How many probes half-open admits; it closes when all of them succeed.
    pub fn permitted_calls_in_half_open(mut self, calls: u32) -> Self {
        self.half_open_calls = calls;
        self
    }

    /// Reopens a breaker whose probes have not closed it within `duration`.
    pub fn max_half_open_duration(mut self, duration: Duration) -> Self {
        self.max_half_open = Some(duration);
        self
    }

    /// Calls `hook` on every state change and every call refused with
    /// `CircuitOpen` ([`LayerEvent::BreakerTransition`],
    /// [`LayerEvent::BreakerRejected`]), on the calling task; see
    /// [`palisade_core::events`]. Unset, it costs nothing. Transitions are
    /// reported in order, under the breaker's transition lock: the hook must
    /// not call this breaker's handle (or, keyed, the keyed handle), which
    /// would wait for that lock forever.
    pub fn on_event(mut self, hook: impl Fn(&LayerEvent<'_>) + Send + Sync + 'static) -> Self {
        self.events = EventHook::new(hook);
        self
    }

    /// Keyed mode: at most this many keys are kept (default 1024); the least
    /// recently used goes first.
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.max_keys = keys;
        self
    }

    /// Keyed mode: a key unused for this long is dropped when a new key needs
    /// room, or by
    /// [`evict_idle`](crate::KeyedCircuitBreakerHandle::evict_idle) (default
    /// 10 minutes), unless its breaker is open with time left, half-open or
    /// set by an operator; see the crate docs for how a key's use is dated.
    pub fn key_idle_timeout(mut self, idle: Duration) -> Self {
        self.key_idle_timeout = idle;
        self
    }

    /// Whether each admitted call's duration goes into the
    /// `palisade_circuit_breaker_call_duration_seconds` histogram (default
    /// on). Timing a call reads the clock when it is sent and when it ends;
    /// turn it off where a call costs less than that matters.
    pub fn call_durations(mut self, on: bool) -> Self {
        self.call_durations = on;
        self
    }

    /// Validates the configuration and builds the layer.
    pub fn build(self) -> Result<CircuitBreakerLayer<C>, ConfigError> {
        let config = self.config()?;
        Ok(CircuitBreakerLayer::from_config(Arc::new(config), self.classifier))
    }

    /// Validates the configuration and builds a keyed layer: one breaker per key
    /// that `key` computes from the request.
    pub fn build_keyed<K, F, Req>(self, key: F) -> Result<KeyedCircuitBreakerLayer<K, F, C>, ConfigError>
    where
        F: Fn(&Req) -> K,
        K: Hash + Eq + Clone + fmt::Display,
    {
        let config = self.config()?;
        if self.max_keys == 0 {
            return Err(ConfigError::Zero("max_keys"));
        }
        if self.key_idle_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration("key_idle_timeout"));
        }
        Ok(KeyedCircuitBreakerLayer::from_config(
            Arc::new(config),
            self.classifier,
            key,
            self.max_keys,
            self.key_idle_timeout,
        ))
    }

    fn config(&self) -> Result<Config, ConfigError> {
        fn threshold(what: &'static str, value: f64) -> Result<f64, ConfigError> {
            if value > 0.0 && value <= 100.0 {
                Ok(value)
            } else {
                Err(ConfigError::Threshold { what, value })
            }
        }
        let failure_rate = self.failure_rate.map(|t| threshold("failure_rate", t)).transpose()?;
        if let Some(slow) = self.slow {
            threshold("slow_call_rate", slow.rate)?;
            if slow.duration.is_zero() {
                return Err(ConfigError::ZeroDuration("slow_call_duration"));
            }
        }
        if self.consecutive == Some(0) {
            return Err(ConfigError::Zero("consecutive_failures"));
        }
        if failure_rate.is_none() && self.slow.is_none() && self.consecutive.is_none() {
            return Err(ConfigError::NoRule);
        }
        if self.minimum_calls == Some(0) {
            return Err(ConfigError::Zero("minimum_calls"));
        }
        let minimum_calls = match (self.minimum_calls, self.window) {
            (Some(calls), _) => calls,
            (None, Window::Count(window)) => DEFAULT_MINIMUM_CALLS.min(window),
            (None, Window::Time { .. }) => DEFAULT_MINIMUM_CALLS,
        };
        let has_rate = failure_rate.is_some() || self.slow.is_some();
        // Only the rate rules have a window: a consecutive-only breaker keeps
        // none, whatever window settings it was given (a shared default's).
        match self.window {
            _ if !has_rate => {}
            Window::Count(0) => return Err(ConfigError::Zero("count_window")),
            Window::Count(window) if window > MAX_WINDOW_CALLS => {
                return Err(ConfigError::TooLarge {
                    what: "count_window",
                    value: window,
                    max: MAX_WINDOW_CALLS,
                });
            }
            Window::Time { buckets, .. } if buckets > MAX_BUCKETS => {
                return Err(ConfigError::TooLarge {
                    what: "time_window buckets",
                    value: buckets,
                    max: MAX_BUCKETS,
                });
            }
            Window::Count(window) if minimum_calls > window => {
                return Err(ConfigError::MinimumCallsAboveWindow { minimum_calls, window });
            }
            Window::Count(_) => {}
            Window::Time { length, buckets } => {
                if buckets == 0 || length < Duration::from_millis(1) * buckets {
                    return Err(ConfigError::Buckets {
                        window: length,
                        buckets,
                    });
                }
            }
        }
        match self.open {
            OpenDuration::Fixed(d) if d.is_zero() => return Err(ConfigError::ZeroDuration("open_duration")),
            OpenDuration::Fixed(_) => {}
            OpenDuration::Growing { base, jitter, .. } => {
                if base.is_zero() {
                    return Err(ConfigError::ZeroDuration("open_duration"));
                }
                self.open.backoff().validate()?;
                Jitter::Shorten(jitter).validate()?;
            }
        }
        if self.half_open_calls == 0 {
            return Err(ConfigError::Zero("permitted_calls_in_half_open"));
        }
        if self.half_open_calls > MAX_HALF_OPEN_CALLS {
            return Err(ConfigError::TooManyProbes {
                value: self.half_open_calls,
                max: MAX_HALF_OPEN_CALLS,
            });
        }
        if self.max_half_open.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::ZeroDuration("max_half_open_duration"));
        }
        let window = has_rate.then_some(self.window);
        Ok(Config {
            name: self.name.clone(),
            failure_rate,
            slow: self.slow,
            consecutive: self.consecutive,
            window,
            minimum_calls,
            open: self.open,
            half_open_calls: self.half_open_calls,
            max_half_open: self.max_half_open,
            random: self.random.clone(),
            needs_clock: self.slow.is_some() || matches!(window, Some(Window::Time { .. })),
            events: self.events.clone(),
            call_durations: self.call_durations,
        })
    }
}
