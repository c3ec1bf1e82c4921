//! The bulkhead's settings.

use std::time::Duration;

use palisade_bulkhead::{BulkheadBuilder, BulkheadLayer, ConfigError};
use serde::Deserialize;

use super::{KeyError, LayerSettings};

/// A fixed bulkhead's settings; a missing key keeps the builder's default
/// (see `palisade_bulkhead`'s docs). An adaptive limit is set in code, on
/// the builder [`Settings::bulkhead`](super::Settings::bulkhead) returns.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BulkheadSettings {
    /// Calls in flight at most.
    pub max_concurrent: Option<usize>,
    /// Calls waiting for a permit at most.
    pub max_queued: Option<usize>,
    /// How long a queued call waits at most.
    #[serde(with = "humantime_serde")]
    pub max_wait: Option<Duration>,
    /// The `Retry-After` rejections carry.
    #[serde(with = "humantime_serde")]
    pub retry_after: Option<Duration>,
    /// Keyed bulkheads: keys kept at most.
    pub max_keys: Option<usize>,
}

impl BulkheadSettings {
    pub(super) fn apply(&self, name: &str) -> BulkheadBuilder {
        let mut builder = BulkheadLayer::builder(name);
        if let Some(limit) = self.max_concurrent {
            builder = builder.max_concurrent(limit);
        }
        if let Some(queued) = self.max_queued {
            builder = builder.max_queued(queued);
        }
        if let Some(wait) = self.max_wait {
            builder = builder.max_wait(wait);
        }
        if let Some(after) = self.retry_after {
            builder = builder.retry_after(after);
        }
        if let Some(keys) = self.max_keys {
            builder = builder.max_keys(keys);
        }
        builder
    }
}

impl LayerSettings for BulkheadSettings {
    const SECTION: &'static str = "bulkhead";

    fn check(&self, name: &str) -> Result<(), KeyError> {
        let key = |error: &ConfigError| match error {
            ConfigError::MaxConcurrent(_) => Some("max_concurrent"),
            ConfigError::MaxQueued(_) => Some("max_queued"),
            ConfigError::ZeroMaxWait => Some("max_wait"),
            ConfigError::ZeroMaxKeys => Some("max_keys"),
            _ => None,
        };
        if self.max_keys == Some(0) {
            return Err((Some("max_keys"), ConfigError::ZeroMaxKeys.to_string()));
        }
        self.apply(name).build().map(drop).map_err(|e| (key(&e), e.to_string()))
    }
}
