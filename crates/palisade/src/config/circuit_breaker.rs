//! The circuit breaker's settings.

use std::time::Duration;

use palisade_circuit_breaker::{CircuitBreakerBuilder, CircuitBreakerLayer, ConfigError};
use serde::Deserialize;

use super::values::Switch;
use super::{KeyError, LayerSettings};

/// A circuit breaker's settings; every key is optional, and a missing one
/// keeps the builder's default (see `palisade_circuit_breaker`'s docs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerSettings {
    /// Trips when at least this percentage of the window failed, or `"off"`.
    pub failure_rate: Option<Switch<f64>>,
    /// Trips when at least this percentage of the window was slow
    /// (needs `slow_call_duration`).
    pub slow_call_rate: Option<f64>,
    /// What counts as slow (needs `slow_call_rate`).
    #[serde(with = "humantime_serde")]
    pub slow_call_duration: Option<Duration>,
    /// Trips after this many failures in a row, or `"off"`.
    pub consecutive_failures: Option<Switch<u32>>,
    /// The window: `{ count = 100 }` or `{ time = "60s", buckets = 10 }`.
    pub window: Option<WindowSettings>,
    /// Calls the window must hold before a rate is judged (default 100, or a
    /// count window's size when smaller).
    pub minimum_calls: Option<u32>,
    /// How long the breaker stays open after a trip.
    #[serde(with = "humantime_serde")]
    pub open_duration: Option<Duration>,
    /// When set, the open duration grows from `open_duration` (doubling on
    /// each trip in a row) up to this.
    #[serde(with = "humantime_serde")]
    pub open_duration_max: Option<Duration>,
    /// Probes half-open admits.
    pub permitted_calls_in_half_open: Option<u32>,
    /// Reopens when the probes have not closed the breaker within this.
    #[serde(with = "humantime_serde")]
    pub max_half_open_duration: Option<Duration>,
    /// Keyed breakers: keys kept at most.
    pub max_keys: Option<usize>,
    /// Keyed breakers: a key unused this long is dropped.
    #[serde(with = "humantime_serde")]
    pub key_idle_timeout: Option<Duration>,
}

/// A breaker's window: the last `count` calls, or the calls of the last
/// `time` in `buckets` buckets.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSettings {
    /// The last this many calls.
    pub count: Option<u32>,
    /// The calls of the last this long.
    #[serde(default, with = "humantime_serde")]
    pub time: Option<Duration>,
    /// With `time`: into how many buckets it is split (default 10).
    pub buckets: Option<u32>,
}

impl CircuitBreakerSettings {
    pub(super) fn apply(&self, name: &str) -> CircuitBreakerBuilder {
        let mut builder = CircuitBreakerLayer::builder(name);
        builder = match self.failure_rate {
            Some(Switch::On(percent)) => builder.failure_rate(percent),
            Some(Switch::Off(_)) => builder.no_failure_rate(),
            None => builder,
        };
        if let (Some(rate), Some(duration)) = (self.slow_call_rate, self.slow_call_duration) {
            builder = builder.slow_calls(rate, duration);
        }
        builder = match self.consecutive_failures {
            Some(Switch::On(n)) => builder.consecutive_failures(n),
            Some(Switch::Off(_)) => builder.no_consecutive_failures(),
            None => builder,
        };
        match self.window {
            Some(WindowSettings { count: Some(calls), .. }) => builder = builder.count_window(calls),
            Some(WindowSettings {
                time: Some(length),
                buckets,
                ..
            }) => builder = builder.time_window(length, buckets.unwrap_or(10)),
            _ => {}
        }
        if let Some(calls) = self.minimum_calls {
            builder = builder.minimum_calls(calls);
        }
        builder = match (self.open_duration, self.open_duration_max) {
            (Some(base), Some(max)) => builder.open_duration_growing(base, max),
            (Some(duration), None) => builder.open_duration(duration),
            (None, _) => builder,
        };
        if let Some(calls) = self.permitted_calls_in_half_open {
            builder = builder.permitted_calls_in_half_open(calls);
        }
        if let Some(duration) = self.max_half_open_duration {
            builder = builder.max_half_open_duration(duration);
        }
        if let Some(keys) = self.max_keys {
            builder = builder.max_keys(keys);
        }
        if let Some(idle) = self.key_idle_timeout {
            builder = builder.key_idle_timeout(idle);
        }
        builder
    }
}

impl LayerSettings for CircuitBreakerSettings {
    const SECTION: &'static str = "circuit_breaker";

    fn check(&self, name: &str) -> Result<(), KeyError> {
        match (self.slow_call_rate, self.slow_call_duration) {
            (Some(_), None) => return Err((Some("slow_call_duration"), "must be set with slow_call_rate".into())),
            (None, Some(_)) => return Err((Some("slow_call_rate"), "must be set with slow_call_duration".into())),
            _ => {}
        }
        if let Some(window) = self.window {
            match (window.count, window.time, window.buckets) {
                (Some(_), None, None) | (None, Some(_), _) => {}
                (Some(_), _, _) => {
                    return Err((Some("window"), "a count window takes neither time nor buckets".into()));
                }
                (None, None, _) => return Err((Some("window"), "set either count or time".into())),
            }
        }
        if self.open_duration_max.is_some() && self.open_duration.is_none() {
            return Err((Some("open_duration"), "must be set with open_duration_max".into()));
        }
        // Whether an instance is keyed is decided in code, and only `build_keyed` refuses
        // these: checked here, so a keyed instance fails at load like any other.
        let keyed = match (self.max_keys, self.key_idle_timeout) {
            (Some(0), _) => Err(ConfigError::Zero("max_keys")),
            (_, Some(idle)) if idle.is_zero() => Err(ConfigError::ZeroDuration("key_idle_timeout")),
            _ => Ok(()),
        };
        keyed
            .and_then(|()| self.apply(name).build().map(drop))
            .map_err(|e| (key_of(&e), e.to_string()))
    }
}

/// The key a builder error is about.
fn key_of(error: &ConfigError) -> Option<&'static str> {
    Some(match error {
        ConfigError::Threshold { what, .. } => match *what {
            "failure_rate" => "failure_rate",
            _ => "slow_call_rate",
        },
        ConfigError::Zero("count_window") | ConfigError::Buckets { .. } => "window",
        ConfigError::Zero(key) | ConfigError::ZeroDuration(key) => key,
        ConfigError::MinimumCallsAboveWindow { .. } => "minimum_calls",
        ConfigError::OpenDurationOrder { .. } => "open_duration_max",
        ConfigError::TooManyProbes { .. } => "permitted_calls_in_half_open",
        _ => return None,
    })
}
