//! The fallback layer's configuration errors.

/// A fallback configuration that cannot work, reported by `build()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `build()` was called before a fallback was given.
    #[error("no fallback was given: call `fallback(service)` before `build()`")]
    NoFallback,
}
