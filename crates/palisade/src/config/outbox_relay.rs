//! The outbox relay's settings.

use std::time::Duration;

use palisade_outbox::{ConfigError, Relay, RelayBuilder};
use serde::Deserialize;

use super::{KeyError, LayerSettings};

/// An outbox relay's settings; a missing key keeps the relay's default (see
/// `palisade_outbox`'s docs). The store, the publisher, the wake-up signal
/// and an event hook are set in code.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxRelaySettings {
    /// Events claimed per batch.
    pub batch_size: Option<usize>,
    /// Batch loops run side by side.
    pub workers: Option<usize>,
    /// Aggregates published concurrently within a batch.
    pub concurrency: Option<usize>,
    /// How often an idle relay looks for events it was not woken for.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Option<Duration>,
    /// Attempts before an event is dead-lettered.
    pub max_attempts: Option<u32>,
    /// The backoff between attempts: `{ initial = "500ms", max = "5m", multiplier = 2.0 }`.
    pub backoff: Option<RelayBackoffSettings>,
    /// How long the relay waits for one event's result.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Option<Duration>,
    /// How long a claim lasts.
    #[serde(with = "humantime_serde")]
    pub lease: Option<Duration>,
    /// How long the relay waits for one store operation.
    #[serde(with = "humantime_serde")]
    pub store_timeout: Option<Duration>,
    /// How long published events are kept; `"0s"` deletes them on publish
    /// (the default).
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// How often published events past their retention are purged.
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Option<Duration>,
    /// How often the backlog gauges are refreshed.
    #[serde(with = "humantime_serde")]
    pub backlog_interval: Option<Duration>,
}

/// The relay's exponential backoff: the first wait, the cap and the growth
/// factor, all three given.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayBackoffSettings {
    /// The first wait.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// The longest wait.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    /// The growth factor from one wait to the next.
    pub multiplier: f64,
}

impl OutboxRelaySettings {
    pub(super) fn apply<S, P>(&self, name: &str, store: S, publisher: P) -> RelayBuilder<S, P> {
        let mut builder = Relay::builder(store, publisher).name(name);
        if let Some(size) = self.batch_size {
            builder = builder.batch_size(size);
        }
        if let Some(workers) = self.workers {
            builder = builder.workers(workers);
        }
        if let Some(concurrency) = self.concurrency {
            builder = builder.concurrency(concurrency);
        }
        if let Some(interval) = self.poll_interval {
            builder = builder.poll_interval(interval);
        }
        if let Some(attempts) = self.max_attempts {
            builder = builder.max_attempts(attempts);
        }
        if let Some(RelayBackoffSettings {
            initial,
            max,
            multiplier,
        }) = self.backoff
        {
            builder = builder.backoff(initial, max, multiplier);
        }
        if let Some(timeout) = self.publish_timeout {
            builder = builder.publish_timeout(timeout);
        }
        if let Some(lease) = self.lease {
            builder = builder.lease(lease);
        }
        if let Some(timeout) = self.store_timeout {
            builder = builder.store_timeout(timeout);
        }
        if let Some(retention) = self.retention {
            builder = builder.retention(retention);
        }
        if let Some(interval) = self.cleanup_interval {
            builder = builder.cleanup_interval(interval);
        }
        if let Some(interval) = self.backlog_interval {
            builder = builder.backlog_interval(interval);
        }
        builder
    }
}

impl LayerSettings for OutboxRelaySettings {
    const SECTION: &'static str = "outbox_relay";

    fn check(&self, name: &str) -> Result<(), KeyError> {
        let key = |error: &ConfigError| match error {
            ConfigError::ZeroBatchSize => Some("batch_size"),
            // One rule covers both counts: name the one that is zero.
            ConfigError::ZeroConcurrency if self.workers == Some(0) => Some("workers"),
            ConfigError::ZeroConcurrency => Some("concurrency"),
            ConfigError::ZeroPollInterval => Some("poll_interval"),
            ConfigError::ZeroCleanupInterval => Some("cleanup_interval"),
            ConfigError::ZeroBacklogInterval => Some("backlog_interval"),
            ConfigError::ZeroMaxAttempts => Some("max_attempts"),
            ConfigError::Backoff(_) => Some("backoff"),
            ConfigError::ZeroPublishTimeout => Some("publish_timeout"),
            ConfigError::LeaseTooShort { .. } => Some("lease"),
            ConfigError::ZeroStoreTimeout | ConfigError::StoreTimeoutTooLong { .. } => Some("store_timeout"),
            _ => None,
        };
        // The store and the publisher are set in code: the rules do not involve them.
        self.apply(name, (), ()).check().map_err(|e| (key(&e), e.to_string()))
    }
}
