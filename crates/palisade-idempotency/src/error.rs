//! The errors of the Idempotency-Key layer: configuration mistakes caught by
//! the builders, and store failures.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use palisade_core::BoxError;
use palisade_core::timed::TimedOut;

/// An impossible configuration, reported by a builder's `build()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The in-flight lock would expire at once.
    #[error("the in-flight lock expiry must be greater than zero")]
    ZeroLockExpiry,
    /// Completed responses would be forgotten at once.
    #[error("the retention of completed responses must be greater than zero")]
    ZeroRetention,
    /// A completed response would be forgotten before a crashed request's lock expires.
    #[error("the retention ({retention:?}) must be at least the lock expiry ({lock_expiry:?})")]
    RetentionShorterThanLock {
        /// The configured retention.
        retention: Duration,
        /// The configured lock expiry.
        lock_expiry: Duration,
    },
    /// Every store call would time out at once.
    #[error("the store timeout must be greater than zero")]
    ZeroStoreTimeout,
    /// No method would be protected.
    #[error("at least one method must be protected")]
    NoMethods,
    /// The memory store could hold nothing.
    #[error("the memory store must hold at least one key")]
    ZeroCapacity,
    /// A store key prefix that is empty would mix the layer's keys with others.
    #[error("the store key prefix must not be empty")]
    EmptyPrefix,
}

/// What kind of failure a [`StoreError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The backend (Redis, Postgres, ...) failed or could not be reached.
    Backend,
    /// The store is full of keys that have not expired.
    Full,
    /// A stored record could not be decoded.
    Corrupt,
    /// The store did not answer within the layer's
    /// [store timeout](crate::IdempotencyBuilder::store_timeout).
    TimedOut,
}

/// A store operation failed. The layer answers 503 (or passes the request
/// through when fail-open is configured); the cause stays in
/// [`source()`](Error::source) and in the logs, never in the response.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    source: Option<BoxError>,
    retry_after: Option<Duration>,
}

impl StoreError {
    /// A backend failure caused by `source`.
    pub fn backend(source: impl Into<BoxError>) -> Self {
        Self {
            kind: StoreErrorKind::Backend,
            source: Some(source.into()),
            retry_after: None,
        }
    }

    /// The store has no room for another key.
    pub fn full() -> Self {
        Self {
            kind: StoreErrorKind::Full,
            source: None,
            retry_after: None,
        }
    }

    /// The store has no room for another key until `retry_after` has
    /// passed (when its oldest record expires).
    pub fn full_for(retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::full()
        }
    }

    /// A stored record is not in the expected format.
    pub fn corrupt(what: &'static str) -> Self {
        Self {
            kind: StoreErrorKind::Corrupt,
            source: Some(what.into()),
            retry_after: None,
        }
    }

    /// The store did not answer within `after` (the layer's store timeout).
    pub fn timed_out(after: Duration) -> Self {
        Self::from(TimedOut::new(after))
    }

    /// The kind of failure.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// How long until the store may succeed, when it knows: the `Retry-After`
    /// of the layer's 503.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl From<TimedOut> for StoreError {
    fn from(timed_out: TimedOut) -> Self {
        Self {
            kind: StoreErrorKind::TimedOut,
            source: Some(Box::new(timed_out)),
            retry_after: None,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            StoreErrorKind::Backend => "idempotency store backend failed",
            StoreErrorKind::Full => "idempotency store is full of unexpired keys",
            StoreErrorKind::Corrupt => "idempotency store holds a record it cannot decode",
            StoreErrorKind::TimedOut => "idempotency store did not answer in time",
        })
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_keep_their_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = StoreError::backend(io);
        assert_eq!(err.kind(), StoreErrorKind::Backend);
        let source = err.source().expect("a source");
        assert_eq!(
            source.downcast_ref::<std::io::Error>().map(std::io::Error::kind),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        assert_eq!(err.to_string(), "idempotency store backend failed");
        assert!(StoreError::full().source().is_none());
        assert_eq!(err.retry_after(), None);
        let full = StoreError::full_for(Duration::from_secs(3));
        assert_eq!(full.kind(), StoreErrorKind::Full);
        assert_eq!(full.retry_after(), Some(Duration::from_secs(3)));
    }
}
