//! [`RetryBuilder`]: the settings of a [`RetryLayer`] or an [`HttpRetryLayer`].

use std::error::Error;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::{Method, StatusCode};
use palisade_core::backoff::{Backoff, Jitter, Random};
use palisade_core::events::{EventHook, LayerEvent};
use palisade_core::telemetry::{LABEL_NAME, LABEL_REASON, retry as names};
use palisade_core::{ErrorClassifier, GrpcClassifier, GrpcCode, HttpClassifier};

use crate::body::DEFAULT_REPLAY_LIMIT;
use crate::budget::RetryBudget;
use crate::error::ConfigError;
use crate::grpc::{GrpcRetryLayer, GrpcRetryPolicy};
use crate::layer::{HttpRetryLayer, RetryLayer};
use crate::policy::{Config, ErrorOverride, HttpRetryPolicy, IDEMPOTENCY_KEY, REASONS, RetryPolicy};

impl RetryLayer {
    /// A builder with the defaults (see the [crate documentation](crate)),
    /// for any request that can be cloned. `name` labels the layer's metrics
    /// and logs.
    pub fn builder(name: impl Into<Arc<str>>) -> RetryBuilder<ErrorClassifier, AnyRequest> {
        RetryBuilder::new(name.into(), ErrorClassifier)
    }
}

impl HttpRetryLayer {
    /// A builder with the defaults and [`HttpClassifier`], for
    /// `http::Request`s. `name` labels the layer's metrics and logs.
    pub fn builder(name: impl Into<Arc<str>>) -> RetryBuilder<HttpClassifier, HttpRequest> {
        RetryBuilder::new(name.into(), HttpClassifier)
    }
}

impl GrpcRetryLayer {
    /// A builder with the defaults and [`GrpcClassifier`] (for errors), for
    /// gRPC calls as `http::Request`s (a tonic `Channel`): retries the
    /// status codes of [`retry_codes`](RetryBuilder::retry_codes), default
    /// `UNAVAILABLE`. `name` labels the layer's metrics and logs.
    pub fn builder(name: impl Into<Arc<str>>) -> RetryBuilder<GrpcClassifier, GrpcRequest> {
        RetryBuilder::new(name.into(), GrpcClassifier)
    }
}

/// Marks a [`RetryBuilder`] that builds a [`GrpcRetryPolicy`].
#[derive(Debug, Clone, Copy)]
pub struct GrpcRequest;

/// Marks a [`RetryBuilder`] that builds a [`RetryPolicy`] (any request type).
#[derive(Debug, Clone, Copy)]
pub struct AnyRequest;

/// Marks a [`RetryBuilder`] that builds an [`HttpRetryPolicy`].
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest;

/// Builds a [`RetryLayer`], an [`HttpRetryLayer`] or a [`GrpcRetryLayer`];
/// `build()` validates.
///
/// Start from [`RetryLayer::builder`], [`HttpRetryLayer::builder`] or
/// [`GrpcRetryLayer::builder`].
pub struct RetryBuilder<C, K> {
    name: Arc<str>,
    max_attempts: u32,
    backoff: Backoff,
    jitter: Jitter,
    random: Random,
    deadline: Option<Duration>,
    budget: Option<Option<RetryBudget>>,
    classifier: C,
    error_override: Option<ErrorOverride>,
    status_overrides: Vec<(StatusCode, bool)>,
    retry_codes: Vec<GrpcCode>,
    methods: Vec<Method>,
    idempotency_key: Option<HeaderName>,
    replay_limit: usize,
    max_retry_after: Duration,
    attempt_header: Option<HeaderName>,
    events: EventHook,
    kind: PhantomData<K>,
}

impl<C, K> RetryBuilder<C, K> {
    fn new(name: Arc<str>, classifier: C) -> Self {
        Self {
            name,
            max_attempts: 3,
            backoff: Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(10)),
            jitter: Jitter::Full,
            random: Random::default(),
            deadline: None,
            budget: None,
            classifier,
            error_override: None,
            status_overrides: Vec::new(),
            retry_codes: vec![GrpcCode::Unavailable],
            methods: vec![
                Method::GET,
                Method::HEAD,
                Method::OPTIONS,
                Method::PUT,
                Method::DELETE,
                Method::TRACE,
            ],
            idempotency_key: Some(IDEMPOTENCY_KEY),
            replay_limit: DEFAULT_REPLAY_LIMIT,
            max_retry_after: Duration::from_secs(30),
            attempt_header: None,
            events: EventHook::none(),
            kind: PhantomData,
        }
    }

    /// Attempts at most, the first included (default 3; at least 1).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The schedule of waits (default exponential: 100 ms, doubling, capped at 10 s).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How waits are randomised (default [`Jitter::Full`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Five attempts: at once, then after 1 s, 2 s, 4 s and 8 s, without
    /// jitter. Add [`jitter`](Self::jitter) afterwards to spread them.
    pub fn exponential_1s_to_8s(self) -> Self {
        self.max_attempts(5)
            .backoff(Backoff::exponential(
                Duration::from_secs(1),
                2.0,
                Duration::from_secs(8),
            ))
            .jitter(Jitter::None)
    }

    /// The source of uniform numbers in `[0, 1)` for jitter (default
    /// `fastrand::f64`); tests pass a fixed one.
    pub fn random(mut self, random: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.random = Random::new(random);
        self
    }

    /// A total deadline over all attempts and waits, from the start of the
    /// first attempt: no wait is started that would end at or past it, and
    /// no retry is sent past it, however long the downstream takes to be
    /// ready for it (the call then ends with `DeadlineExceeded`; default
    /// none; an outer timeout can bound the whole call). Costs one clock
    /// reading per request.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Uses `budget`, which may be shared with other policies (default: a
    /// new [`RetryBudget::default`] for this policy and its clones).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(Some(budget));
        self
    }

    /// Turns the retry budget off: only the attempt cap and the deadline
    /// bound retries.
    pub fn no_budget(mut self) -> Self {
        self.budget = Some(None);
        self
    }

    /// Decides what is retryable with `classifier`'s
    /// [`retryable`](palisade_core::Classify::retryable).
    pub fn classifier<C2>(self, classifier: C2) -> RetryBuilder<C2, K> {
        RetryBuilder {
            name: self.name,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            jitter: self.jitter,
            random: self.random,
            deadline: self.deadline,
            budget: self.budget,
            classifier,
            error_override: self.error_override,
            status_overrides: self.status_overrides,
            retry_codes: self.retry_codes,
            methods: self.methods,
            idempotency_key: self.idempotency_key,
            replay_limit: self.replay_limit,
            max_retry_after: self.max_retry_after,
            attempt_header: self.attempt_header,
            events: self.events,
            kind: PhantomData,
        }
    }

    /// Calls `hook` before every retry's wait ([`LayerEvent::Retry`]: the
    /// attempt about to be made, the wait, the reason) and when the budget
    /// refuses one ([`LayerEvent::RetryBudgetExhausted`]), on the calling
    /// task; see [`palisade_core::events`]. Unset, it costs nothing.
    pub fn on_event(mut self, hook: impl Fn(&LayerEvent<'_>) + Send + Sync + 'static) -> Self {
        self.events = EventHook::new(hook);
        self
    }

    /// Overrides the classifier for errors: `f` answers `Some(retryable)` to
    /// decide, `None` to leave it to the classifier. palisade's own local
    /// rejections (`CircuitOpen`, `BulkheadFull`, `BulkheadTimeout`) are
    /// never retried whatever `f` says.
    pub fn retry_error(mut self, f: impl Fn(&(dyn Error + 'static)) -> Option<bool> + Send + Sync + 'static) -> Self {
        self.error_override = Some(Arc::new(f));
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::ZeroAttempts);
        }
        self.backoff.validate()?;
        self.jitter.validate()?;
        if self.deadline.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::ZeroDeadline);
        }
        Ok(())
    }

    fn into_config(self) -> Result<Arc<Config<C>>, ConfigError> {
        self.validate()?;
        let labels = [(LABEL_NAME, self.name.to_string())];
        let attempt_duration = metrics::histogram!(names::ATTEMPT_DURATION_SECONDS, &labels);
        Ok(Arc::new(Config {
            attempts_total: metrics::counter!(names::ATTEMPTS_TOTAL, &labels),
            time_attempts: palisade_core::telemetry::records(&attempt_duration),
            attempt_duration,
            budget_exhausted_total: metrics::counter!(names::BUDGET_EXHAUSTED_TOTAL, &labels),
            retries_total: REASONS.map(|reason| {
                metrics::counter!(names::RETRIES_TOTAL, LABEL_NAME => self.name.to_string(), LABEL_REASON => reason)
            }),
            name: self.name,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            jitter: self.jitter,
            random: self.random,
            deadline: self.deadline,
            budget: self.budget.unwrap_or_else(|| Some(RetryBudget::default())),
            classifier: self.classifier,
            error_override: self.error_override,
            status_overrides: self.status_overrides,
            retry_codes: self.retry_codes,
            methods: self.methods,
            idempotency_key: self.idempotency_key,
            replay_limit: self.replay_limit,
            max_retry_after: self.max_retry_after,
            attempt_header: self.attempt_header,
            events: self.events,
        }))
    }
}

impl<C> RetryBuilder<C, AnyRequest> {
    /// Validates the settings and makes the layer.
    pub fn build(self) -> Result<RetryLayer<C>, ConfigError> {
        Ok(RetryLayer::new(RetryPolicy::new(self.into_config()?)))
    }
}

impl<C> RetryBuilder<C, HttpRequest> {
    /// The methods retried without an `Idempotency-Key` (default the
    /// idempotent ones: GET, HEAD, OPTIONS, PUT, DELETE, TRACE).
    pub fn retry_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// The header whose presence makes a request of any method retryable
    /// (default `Idempotency-Key`); `None` retries only the
    /// [`retry_methods`](Self::retry_methods).
    pub fn idempotency_key_header(mut self, header: Option<HeaderName>) -> Self {
        self.idempotency_key = header;
        self
    }

    /// Retries responses with `status` (`true`) or never (`false`), whatever
    /// the classifier says.
    pub fn retry_status(mut self, status: StatusCode, retryable: bool) -> Self {
        self.status_overrides.retain(|(s, _)| *s != status);
        self.status_overrides.push((status, retryable));
        self
    }

    /// The largest request body kept for replay (default 64 KiB); a request
    /// with a longer or unknown-length body is sent once.
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.replay_limit = bytes;
        self
    }

    /// The longest wait a `Retry-After` may ask for (default 30 s); a longer
    /// one waits this long.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// Adds `header` with the attempt number (2 on the first retry) to every
    /// retry; see [`X_RETRY_ATTEMPT`](crate::X_RETRY_ATTEMPT) (default none).
    pub fn attempt_header(mut self, header: HeaderName) -> Self {
        self.attempt_header = Some(header);
        self
    }

    /// Validates the settings and makes the layer.
    pub fn build(self) -> Result<HttpRetryLayer<C>, ConfigError> {
        Ok(HttpRetryLayer::new(HttpRetryPolicy::new(self.into_config()?)))
    }
}

impl<C> RetryBuilder<C, GrpcRequest> {
    /// The status codes retried (default `UNAVAILABLE`, gRPC's own default
    /// and the one code that says the call was not processed). A call is
    /// only ever retried on a status its response head carries (a
    /// trailers-only response); once the head came without one, the call is
    /// committed.
    pub fn retry_codes(mut self, codes: impl IntoIterator<Item = GrpcCode>) -> Self {
        self.retry_codes = codes.into_iter().collect();
        self
    }

    /// The largest request a call keeps for replay (default 64 KiB): the
    /// encoded messages, whatever their stream's announced length; a call
    /// sending more is not retried.
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.replay_limit = bytes;
        self
    }

    /// The longest wait a server's `grpc-retry-pushback-ms` may ask for
    /// (default 30 s); a longer one waits this long.
    pub fn max_pushback(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// Validates the settings and makes the layer.
    pub fn build(self) -> Result<GrpcRetryLayer<C>, ConfigError> {
        Ok(GrpcRetryLayer::new(GrpcRetryPolicy::new(self.into_config()?)))
    }
}

impl<C: fmt::Debug, K> fmt::Debug for RetryBuilder<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBuilder")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("jitter", &self.jitter)
            .field("deadline", &self.deadline)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}
