//! The breaker's configuration errors. Its rejection, `CircuitOpen`, is
//! palisade-core's.

use palisade_core::backoff::BackoffError;

/// An impossible breaker configuration, reported by the builders' `build()`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A rate threshold outside `(0, 100]` percent (or not a number).
    #[error("{what} must be within (0, 100] percent, got {value}")]
    Threshold {
        /// Which threshold.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// A count that must be at least one was zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// A duration that must be positive was zero.
    #[error("{0} must be longer than zero")]
    ZeroDuration(&'static str),
    /// `minimum_calls` is larger than the count-based window, so rates could never be judged.
    #[error("minimum_calls ({minimum_calls}) exceeds the count-based window size ({window})")]
    MinimumCallsAboveWindow {
        /// The minimum number of calls.
        minimum_calls: u32,
        /// The window size.
        window: u32,
    },
    /// The time-based window cannot be split into that many buckets.
    #[error("a time-based window of {window:?} cannot be split into {buckets} buckets of at least 1 ms")]
    Buckets {
        /// The window's length.
        window: std::time::Duration,
        /// The number of buckets.
        buckets: u32,
    },
    /// A window larger than any breaker needs, whose memory is taken at build
    /// (for each key, in keyed mode).
    #[error("{what} may be at most {max}, got {value}")]
    TooLarge {
        /// Which setting.
        what: &'static str,
        /// The value given.
        value: u32,
        /// The largest allowed.
        max: u32,
    },
    /// No trip rule is enabled: the breaker could never open.
    #[error("no trip rule is enabled (failure rate, slow-call rate or consecutive failures)")]
    NoRule,
    /// The growing open duration's base exceeds its cap.
    #[error("the open duration's base ({base:?}) exceeds its maximum ({max:?})")]
    OpenDurationOrder {
        /// The first open duration.
        base: std::time::Duration,
        /// The cap.
        max: std::time::Duration,
    },
    /// The growth multiplier is below 1 or not a number.
    #[error("the open duration multiplier must be at least 1, got {0}")]
    Multiplier(f64),
    /// The jitter fraction is outside `[0, 1]`.
    #[error("the open duration jitter must be within [0, 1], got {0}")]
    Jitter(f64),
    /// More half-open probes than the breaker can account for.
    #[error("permitted_calls_in_half_open must be at most {max}, got {value}")]
    TooManyProbes {
        /// The value given.
        value: u32,
        /// The largest value allowed.
        max: u32,
    },
}

impl From<BackoffError> for ConfigError {
    fn from(error: BackoffError) -> Self {
        match error {
            BackoffError::CapBelowBase { base, cap } => Self::OpenDurationOrder { base, max: cap },
            BackoffError::Multiplier(m) => Self::Multiplier(m),
            BackoffError::Fraction(j) => Self::Jitter(j),
        }
    }
}
