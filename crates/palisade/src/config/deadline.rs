//! The server deadline layer's settings.

use std::time::Duration;

use palisade_deadline::{ConfigError, DeadlineBuilder, DeadlineLayer};
use serde::Deserialize;

use super::values::{self, Switch};
use super::{KeyError, LayerSettings};

/// A server deadline layer's settings; a missing key keeps the builder's
/// default (see `palisade_deadline`'s docs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadlineSettings {
    /// The budget every request gets at most.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// The cap on a budget a caller asks for.
    #[serde(with = "humantime_serde")]
    pub max_timeout: Option<Duration>,
    /// The HTTP header a caller's budget is read from (whole milliseconds),
    /// or `"off"`.
    pub header: Option<Switch<String>>,
    /// Whether a caller's `grpc-timeout` is read.
    pub grpc_timeout: Option<bool>,
}

impl DeadlineSettings {
    pub(super) fn apply(&self, name: &str) -> DeadlineBuilder {
        let mut builder = DeadlineLayer::builder(name);
        if let Some(timeout) = self.timeout {
            builder = builder.timeout(timeout);
        }
        if let Some(max) = self.max_timeout {
            builder = builder.max_timeout(max);
        }
        match &self.header {
            Some(Switch::Off(_)) => builder = builder.no_header(),
            // Checked at load time (`check`).
            Some(Switch::On(name)) => {
                if let Ok(header) = values::header("header", name) {
                    builder = builder.header(header);
                }
            }
            None => {}
        }
        if let Some(read) = self.grpc_timeout {
            builder = builder.grpc_timeout(read);
        }
        builder
    }
}

impl LayerSettings for DeadlineSettings {
    const SECTION: &'static str = "deadline";

    fn check(&self, name: &str) -> Result<(), KeyError> {
        if let Some(Switch::On(header)) = &self.header {
            values::header("header", header)?;
        }
        let key = |error: &ConfigError| match error {
            ConfigError::ZeroTimeout | ConfigError::TimeoutOverMax { .. } => Some("timeout"),
            ConfigError::ZeroMaxTimeout => Some("max_timeout"),
            _ => None,
        };
        self.apply(name).build().map(drop).map_err(|e| (key(&e), e.to_string()))
    }
}
