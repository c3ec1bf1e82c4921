//! The bulkhead's configuration errors. Its rejections, `BulkheadFull` and
//! `BulkheadTimeout`, are palisade-core's, shared with every palisade crate.

/// A bulkhead or limit configuration that cannot work, reported by `build()`
/// (or by a handle asked for an impossible change).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_concurrent` must be at least 1 and at most 2³¹ − 1.
    #[error("max_concurrent must be between 1 and 2147483647, got {0}")]
    MaxConcurrent(usize),
    /// `max_queued` must be at most 2³¹ − 1.
    #[error("max_queued must be at most 2147483647, got {0}")]
    MaxQueued(usize),
    /// `max_wait` must not be zero (use `max_queued(0)` to never wait).
    #[error("max_wait must be greater than zero; use max_queued(0) to reject at once instead")]
    ZeroMaxWait,
    /// A keyed bulkhead must keep at least one key.
    #[error("max_keys must be at least 1")]
    ZeroMaxKeys,
    /// An adaptive limit needs `1 ≤ min ≤ initial ≤ max ≤ 2³¹ − 1`.
    #[error(
        "adaptive limits need 1 <= min <= initial <= max <= 2147483647, got min {min}, initial {initial}, max {max}"
    )]
    LimitBounds {
        /// The minimum given.
        min: usize,
        /// The initial limit given.
        initial: usize,
        /// The maximum given.
        max: usize,
    },
    /// AIMD's backoff ratio must be strictly between 0 and 1.
    #[error("backoff_ratio must be strictly between 0 and 1, got {0}")]
    BackoffRatio(f64),
    /// AIMD's timeout must not be zero.
    #[error("the timeout of an AIMD limit must be greater than zero")]
    ZeroTimeout,
    /// Gradient2's smoothing must be in (0, 1].
    #[error("smoothing must be in (0, 1], got {0}")]
    Smoothing(f64),
    /// Gradient2's RTT tolerance must be at least 1.
    #[error("rtt_tolerance must be a finite number of at least 1, got {0}")]
    Tolerance(f64),
    /// Gradient2's long window must hold at least one sample.
    #[error("long_window must be at least 1 sample")]
    ZeroWindow,
    /// An adaptive bulkhead sets its own limit; it cannot be resized by hand.
    #[error("the limit of an adaptive bulkhead cannot be set by hand")]
    AdaptiveLimit,
}
