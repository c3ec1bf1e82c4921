//! The retry layers' settings.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, Method, StatusCode};
use palisade_core::HttpClassifier;
use palisade_retry::{Backoff, ConfigError, HttpRequest, HttpRetryLayer, Jitter, RetryBudget, RetryBuilder};
use serde::Deserialize;

use super::values::{self, Switch};
use super::{KeyError, LayerSettings};

/// A retry layer's settings; a missing key keeps the builder's default (see
/// `palisade_retry`'s docs). The keys from `retry_methods` on apply to HTTP
/// retries only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Attempts at most, the first included.
    pub max_attempts: Option<u32>,
    /// The schedule of waits.
    pub backoff: Option<BackoffSettings>,
    /// How waits are randomised.
    pub jitter: Option<JitterSettings>,
    /// A total deadline over all attempts and waits.
    #[serde(with = "humantime_serde")]
    pub deadline: Option<Duration>,
    /// The retry budget, or `"off"`.
    pub budget: Option<Switch<BudgetSettings>>,
    /// HTTP: the methods retried without an `Idempotency-Key`.
    pub retry_methods: Option<Vec<String>>,
    /// HTTP: the header that makes any method retryable, or `"off"`.
    pub idempotency_key_header: Option<Switch<String>>,
    /// HTTP: statuses retried (`true`) or never (`false`), whatever the
    /// classifier says: `retry_status = { "404" = false, "409" = true }`.
    pub retry_status: Option<BTreeMap<String, bool>>,
    /// HTTP: the largest request body kept for replay, in bytes.
    pub replay_limit: Option<usize>,
    /// HTTP: the longest `Retry-After` honoured.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Option<Duration>,
    /// HTTP: a header carrying the attempt number on retries.
    pub attempt_header: Option<String>,
}

/// A backoff schedule.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BackoffSettings {
    /// The same wait every time.
    Constant {
        /// The wait.
        #[serde(with = "humantime_serde")]
        delay: Duration,
    },
    /// `base`, `base + step`, ..., at most `max`.
    Linear {
        /// The first wait.
        #[serde(with = "humantime_serde")]
        base: Duration,
        /// What each retry adds.
        #[serde(with = "humantime_serde")]
        step: Duration,
        /// The longest wait.
        #[serde(with = "humantime_serde")]
        max: Duration,
    },
    /// `base`, `base × multiplier`, ..., at most `max`.
    Exponential {
        /// The first wait.
        #[serde(with = "humantime_serde")]
        base: Duration,
        /// The growth per retry.
        multiplier: f64,
        /// The longest wait.
        #[serde(with = "humantime_serde")]
        max: Duration,
    },
}

/// A jitter: `"none"`, `"full"`, `"equal"`, `"decorrelated"` or
/// `{ shorten = 0.2 }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JitterSettings {
    /// [`Jitter::None`].
    None,
    /// [`Jitter::Full`].
    Full,
    /// [`Jitter::Equal`].
    Equal,
    /// [`Jitter::Decorrelated`].
    Decorrelated,
    /// [`Jitter::Shorten`].
    Shorten(f64),
}

/// A retry budget of the layer's own.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetSettings {
    /// Retries allowed per request.
    pub ratio: Option<f64>,
    /// Retries allowed per second whatever the traffic.
    pub min_per_sec: Option<u32>,
    /// How far back requests count.
    #[serde(with = "humantime_serde")]
    pub window: Option<Duration>,
}

impl RetrySettings {
    /// The first HTTP-only key this instance sets.
    pub(super) fn http_only_key(&self) -> Option<&'static str> {
        [
            ("retry_methods", self.retry_methods.is_some()),
            ("idempotency_key_header", self.idempotency_key_header.is_some()),
            ("retry_status", self.retry_status.is_some()),
            ("replay_limit", self.replay_limit.is_some()),
            ("max_retry_after", self.max_retry_after.is_some()),
            ("attempt_header", self.attempt_header.is_some()),
        ]
        .into_iter()
        .find_map(|(key, set)| set.then_some(key))
    }

    /// Applies the settings both kinds of retry have.
    pub(super) fn apply_common<C, K>(&self, mut builder: RetryBuilder<C, K>) -> RetryBuilder<C, K> {
        if let Some(n) = self.max_attempts {
            builder = builder.max_attempts(n);
        }
        if let Some(backoff) = self.backoff {
            builder = builder.backoff(match backoff {
                BackoffSettings::Constant { delay } => Backoff::constant(delay),
                BackoffSettings::Linear { base, step, max } => Backoff::linear(base, step, max),
                BackoffSettings::Exponential { base, multiplier, max } => Backoff::exponential(base, multiplier, max),
            });
        }
        if let Some(jitter) = self.jitter {
            builder = builder.jitter(match jitter {
                JitterSettings::None => Jitter::None,
                JitterSettings::Full => Jitter::Full,
                JitterSettings::Equal => Jitter::Equal,
                JitterSettings::Decorrelated => Jitter::Decorrelated,
                JitterSettings::Shorten(fraction) => Jitter::Shorten(fraction),
            });
        }
        if let Some(deadline) = self.deadline {
            builder = builder.deadline(deadline);
        }
        match self.budget {
            Some(Switch::Off(_)) => builder.no_budget(),
            // Checked at load time (`budget`), so the builder cannot fail here.
            Some(Switch::On(budget)) => match budget.build() {
                Ok(budget) => builder.budget(budget),
                Err(_) => builder,
            },
            None => builder,
        }
    }

    pub(super) fn apply_http(&self, name: &str) -> RetryBuilder<HttpClassifier, HttpRequest> {
        let mut builder = self.apply_common(HttpRetryLayer::builder(name));
        // Methods, headers and statuses were checked at load time (`http_values`).
        if let Ok(values) = self.http_values() {
            if let Some(methods) = values.methods {
                builder = builder.retry_methods(methods);
            }
            if let Some(header) = values.idempotency_key_header {
                builder = builder.idempotency_key_header(header);
            }
            for (status, retryable) in values.statuses {
                builder = builder.retry_status(status, retryable);
            }
            if let Some(header) = values.attempt_header {
                builder = builder.attempt_header(header);
            }
        }
        if let Some(limit) = self.replay_limit {
            builder = builder.replay_limit(limit);
        }
        if let Some(max) = self.max_retry_after {
            builder = builder.max_retry_after(max);
        }
        builder
    }

    /// The HTTP settings parsed into `http` types.
    fn http_values(&self) -> Result<HttpValues, KeyError> {
        let methods = self
            .retry_methods
            .as_deref()
            .map(|names| values::methods("retry_methods", names))
            .transpose()?;
        let idempotency_key_header = match &self.idempotency_key_header {
            None => None,
            Some(Switch::Off(_)) => Some(None),
            Some(Switch::On(name)) => Some(Some(values::header("idempotency_key_header", name)?)),
        };
        let statuses = self
            .retry_status
            .iter()
            .flatten()
            .map(|(status, retryable)| {
                status
                    .parse::<u16>()
                    .ok()
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .map(|s| (s, *retryable))
                    .ok_or((Some("retry_status"), format!("{status:?} is not an HTTP status code")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let attempt_header = self
            .attempt_header
            .as_deref()
            .map(|name| values::header("attempt_header", name))
            .transpose()?;
        Ok(HttpValues {
            methods,
            idempotency_key_header,
            statuses,
            attempt_header,
        })
    }
}

struct HttpValues {
    methods: Option<Vec<Method>>,
    idempotency_key_header: Option<Option<HeaderName>>,
    statuses: Vec<(StatusCode, bool)>,
    attempt_header: Option<HeaderName>,
}

impl BudgetSettings {
    /// Builds the budget once, naming the key at fault.
    pub(super) fn check(&self) -> Result<(), KeyError> {
        self.build().map(drop).map_err(|e| {
            let key = match e {
                ConfigError::BudgetWindow(_) => "budget.window",
                ConfigError::BudgetRatio(_) => "budget.ratio",
                _ => "budget.min_per_sec",
            };
            (Some(key), e.to_string())
        })
    }

    pub(super) fn build(&self) -> Result<RetryBudget, ConfigError> {
        let mut builder = RetryBudget::builder();
        if let Some(ratio) = self.ratio {
            builder = builder.ratio(ratio);
        }
        if let Some(min) = self.min_per_sec {
            builder = builder.min_per_sec(min);
        }
        if let Some(window) = self.window {
            builder = builder.window(window);
        }
        builder.build()
    }
}

impl LayerSettings for RetrySettings {
    const SECTION: &'static str = "retry";

    fn check(&self, name: &str) -> Result<(), KeyError> {
        self.http_values()?;
        if let Some(Switch::On(budget)) = &self.budget {
            budget.check()?;
        }
        let key = |error: &ConfigError| match error {
            ConfigError::ZeroAttempts => Some("max_attempts"),
            ConfigError::CapBelowBase { .. } | ConfigError::Multiplier(_) => Some("backoff"),
            ConfigError::JitterFraction(_) => Some("jitter"),
            ConfigError::ZeroDeadline => Some("deadline"),
            _ => None,
        };
        self.apply_http(name)
            .build()
            .map(drop)
            .map_err(|e| (key(&e), e.to_string()))
    }
}
