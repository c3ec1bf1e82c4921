//! The deadline layers' configuration errors. Their rejection,
//! `DeadlineExceeded`, is palisade-core's
//! ([`palisade_core::deadline::DeadlineExceeded`]), shared with every palisade crate.

use std::time::Duration;

/// A deadline configuration that cannot work, reported by `build()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A timeout must be greater than zero.
    #[error("the timeout must be greater than zero")]
    ZeroTimeout,
    /// An attempt's own timeout under a millisecond cannot be sent in the
    /// millisecond header, so every HTTP attempt would be refused unsent.
    #[error("the timeout ({0:?}) is under the millisecond the budget header counts in; send no header to allow it")]
    TimeoutUnderHeaderUnit(Duration),
    /// The cap on a caller's budget must be greater than zero.
    #[error("max_timeout must be greater than zero")]
    ZeroMaxTimeout,
    /// The configured budget must not exceed the cap on a caller's budget.
    #[error("the timeout ({timeout:?}) must not exceed max_timeout ({max:?})")]
    TimeoutOverMax {
        /// The timeout given.
        timeout: Duration,
        /// The cap given.
        max: Duration,
    },
}
