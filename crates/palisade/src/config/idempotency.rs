//! The Idempotency-Key layer's settings.

use std::time::Duration;

use http::{HeaderName, Method};
use palisade_idempotency::{ConfigError, IdempotencyBuilder, IdempotencyLayer};
use serde::Deserialize;

use super::{KeyError, LayerSettings, values};

/// An Idempotency-Key layer's settings; a missing key keeps the builder's
/// default (see `palisade_idempotency`'s docs). The store, the scope and
/// which statuses are stored are set in code.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencySettings {
    /// The methods protected.
    pub methods: Option<Vec<String>>,
    /// The request header carrying the key.
    pub header_name: Option<String>,
    /// Refuse (400) a protected request without a key.
    pub require_key: Option<bool>,
    /// How long an in-flight request holds its key.
    #[serde(with = "humantime_serde")]
    pub lock_expiry: Option<Duration>,
    /// How long a completed response is kept for replays.
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// The largest request body fingerprinted, in bytes.
    pub max_request_body: Option<usize>,
    /// The largest response body stored, in bytes.
    pub max_response_body: Option<usize>,
    /// Store `Set-Cookie` headers with the response.
    pub store_set_cookie: Option<bool>,
    /// Let requests through when the store is down.
    pub fail_open: Option<bool>,
    /// The `Retry-After` of a 409 for a key in flight.
    #[serde(with = "humantime_serde")]
    pub conflict_retry_after: Option<Duration>,
    /// The `Retry-After` of a 503 when the store is down.
    #[serde(with = "humantime_serde")]
    pub unavailable_retry_after: Option<Duration>,
    /// How long a store call may take.
    #[serde(with = "humantime_serde")]
    pub store_timeout: Option<Duration>,
}

impl IdempotencySettings {
    pub(super) fn apply(&self, name: &str) -> IdempotencyBuilder {
        let mut builder = IdempotencyLayer::builder(name);
        // Methods and the header name were checked at load time (`parsed`).
        if let Ok((methods, header)) = self.parsed() {
            if let Some(methods) = methods {
                builder = builder.methods(methods);
            }
            if let Some(header) = header {
                builder = builder.header_name(header);
            }
        }
        if let Some(require) = self.require_key {
            builder = builder.require_key(require);
        }
        if let Some(expiry) = self.lock_expiry {
            builder = builder.lock_expiry(expiry);
        }
        if let Some(retention) = self.retention {
            builder = builder.retention(retention);
        }
        if let Some(bytes) = self.max_request_body {
            builder = builder.max_request_body(bytes);
        }
        if let Some(bytes) = self.max_response_body {
            builder = builder.max_response_body(bytes);
        }
        if let Some(store) = self.store_set_cookie {
            builder = builder.store_set_cookie(store);
        }
        if let Some(open) = self.fail_open {
            builder = builder.fail_open(open);
        }
        if let Some(after) = self.conflict_retry_after {
            builder = builder.conflict_retry_after(after);
        }
        if let Some(after) = self.unavailable_retry_after {
            builder = builder.unavailable_retry_after(after);
        }
        if let Some(timeout) = self.store_timeout {
            builder = builder.store_timeout(timeout);
        }
        builder
    }

    fn parsed(&self) -> Result<(Option<Vec<Method>>, Option<HeaderName>), KeyError> {
        let methods = self
            .methods
            .as_deref()
            .map(|names| values::methods("methods", names))
            .transpose()?;
        let header = self
            .header_name
            .as_deref()
            .map(|name| values::header("header_name", name))
            .transpose()?;
        Ok((methods, header))
    }
}

impl LayerSettings for IdempotencySettings {
    const SECTION: &'static str = "idempotency";

    fn check(&self, name: &str) -> Result<(), KeyError> {
        self.parsed()?;
        let key = |error: &ConfigError| match error {
            ConfigError::ZeroLockExpiry => Some("lock_expiry"),
            ConfigError::ZeroRetention | ConfigError::RetentionShorterThanLock { .. } => Some("retention"),
            ConfigError::ZeroStoreTimeout => Some("store_timeout"),
            ConfigError::NoMethods => Some("methods"),
            _ => None,
        };
        self.apply(name).build().map(drop).map_err(|e| (key(&e), e.to_string()))
    }
}
