//! The rejections of the protocol-agnostic layers, reached at the crate root
//! (`palisade_core::CircuitOpen`, ...): defined here, in palisade-core, so
//! any layer crate can produce or recognise them and [`crate::problem`] can
//! answer them over HTTP without depending on the layer crates.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Defines a rejection that carries the rejecting layer's name and how long
/// until a call may be admitted again.
macro_rules! named_rejection {
    (
        $(#[$doc:meta])*
        $ty:ident, $layer:literal, $display:literal,
        new: $new_doc:literal,
        retry_after: $retry_doc:literal $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $ty {
            name: Arc<str>,
            retry_after: Duration,
        }

        impl $ty {
            #[doc = $new_doc]
            pub fn new(name: impl Into<Arc<str>>, retry_after: Duration) -> Self {
                Self {
                    name: name.into(),
                    retry_after,
                }
            }

            #[doc = concat!("The ", $layer, "'s name.")]
            pub fn name(&self) -> &str {
                &self.name
            }

            #[doc = $retry_doc]
            pub fn retry_after(&self) -> Duration {
                self.retry_after
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, $display, self.name)
            }
        }

        impl Error for $ty {}
    };
}

named_rejection! {
    /// A circuit breaker rejected the call without calling the downstream.
    ///
    /// Carries the breaker's name and how long until it may admit a call again;
    /// [`crate::problem`] maps it to `503 Service Unavailable` with `Retry-After`.
    CircuitOpen, "breaker", "circuit breaker `{}` is open",
    new: "A rejection by the breaker `name`, which may admit again after `retry_after`.",
    retry_after: "How long until the breaker may admit a call (zero when it admits probes \
                  now but all half-open slots are taken, or when forced open).",
}

named_rejection! {
    /// A bulkhead rejected the call at once: every permit was taken and the queue
    /// was full (or queueing is off).
    ///
    /// Carries the bulkhead's name and a hint for when to retry; mapped to
    /// `503 Service Unavailable` with `Retry-After`.
    BulkheadFull, "bulkhead", "bulkhead `{}` is full",
    new: "A rejection by the bulkhead `name`; `retry_after` is the hint given to callers.",
    retry_after: "The hint for when to try again.",
}

/// A call waited in a bulkhead's queue longer than its `max_wait` and was
/// rejected without calling the downstream.
///
/// Mapped to `503 Service Unavailable` with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkheadTimeout {
    name: Arc<str>,
    waited: Duration,
    retry_after: Duration,
}

impl BulkheadTimeout {
    /// A rejection by the bulkhead `name` after waiting `waited`.
    pub fn new(name: impl Into<Arc<str>>, waited: Duration, retry_after: Duration) -> Self {
        Self {
            name: name.into(),
            waited,
            retry_after,
        }
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long the call waited for a permit.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The hint for when to try again.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for BulkheadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bulkhead `{}` timed out after waiting {:?} for a permit",
            self.name, self.waited
        )
    }
}

impl Error for BulkheadTimeout {}
