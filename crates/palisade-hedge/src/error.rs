//! The hedging layer's configuration errors.

/// A hedging configuration that cannot work, reported by `build()`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// At least two attempts (the original and one hedge) must be allowed.
    #[error("max_attempts must be at least 2 (the original and one hedge), got {0}")]
    MaxAttempts(u32),
    /// A fixed delay must be greater than zero (every request would be sent twice at once).
    #[error("the hedging delay must be greater than zero")]
    ZeroDelay,
    /// The percentile must be strictly between 0 and 1.
    #[error("the latency percentile must be strictly between 0 and 1, got {0}")]
    Percentile(f64),
    /// The latency window must keep at least as many samples as it needs.
    #[error("the latency window must hold at least min_samples ({min_samples}) and at least 1, got {samples}")]
    Samples {
        /// The window size given.
        samples: usize,
        /// The minimum given.
        min_samples: usize,
    },
    /// A latency window larger than any percentile needs, whose memory is taken at build.
    #[error("the latency window may hold at most {max} samples, got {samples}")]
    TooManySamples {
        /// The window size given.
        samples: usize,
        /// The largest allowed.
        max: usize,
    },
}
