//! Errors of the retry policy: invalid configuration, and the body replay
//! refusal.

use std::fmt;
use std::time::Duration;

use palisade_core::backoff::BackoffError;

/// An impossible retry configuration, reported by the builders' `build()`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_attempts` was zero: the first attempt counts, so at least one is needed.
    #[error("max_attempts must be at least 1 (it counts the first attempt)")]
    ZeroAttempts,
    /// A backoff's cap is below its base delay.
    #[error("backoff cap {cap:?} is below the base delay {base:?}")]
    CapBelowBase {
        /// The base delay.
        base: Duration,
        /// The cap.
        cap: Duration,
    },
    /// An exponential multiplier below 1 or not finite.
    #[error("backoff multiplier must be a finite number of at least 1, got {0}")]
    Multiplier(f64),
    /// A [`Jitter::Shorten`](crate::Jitter::Shorten) fraction outside `[0, 1]`.
    #[error("jitter fraction must be within [0, 1], got {0}")]
    JitterFraction(f64),
    /// The total deadline was zero.
    #[error("the total deadline must be greater than zero")]
    ZeroDeadline,
    /// The budget's window was outside 1 s ..= 60 s.
    #[error("retry budget window must be between 1 s and 60 s, got {0:?}")]
    BudgetWindow(Duration),
    /// The budget's ratio was negative, above 1000 or not finite.
    #[error("retry budget ratio must be between 0 and 1000, got {0}")]
    BudgetRatio(f64),
    /// The budget's floor was above 1,000,000 retries per second.
    #[error("retry budget floor must be at most 1000000 retries per second, got {0}")]
    BudgetFloor(u32),
}

impl From<BackoffError> for ConfigError {
    fn from(error: BackoffError) -> Self {
        match error {
            BackoffError::CapBelowBase { base, cap } => Self::CapBelowBase { base, cap },
            BackoffError::Multiplier(m) => Self::Multiplier(m),
            BackoffError::Fraction(f) => Self::JitterFraction(f),
        }
    }
}

/// The error a replayed request body yields when it cannot be replayed: the
/// first attempt read more than the replay cap, or its body failed.
///
/// The retry policy never retries such a request, so this only surfaces when
/// a [`ReplayBody`](crate::ReplayBody) is cloned and polled outside of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayUnavailable;

impl fmt::Display for ReplayUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body cannot be replayed: it exceeded the replay cap or failed")
    }
}

impl std::error::Error for ReplayUnavailable {}
