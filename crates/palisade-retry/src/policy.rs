//! The retry policies and their builder.

use std::error::Error;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use metrics::{Counter, Histogram};
use palisade_core::backoff::{Backoff, Jitter, Random};
use palisade_core::error::{is_connect_error, is_local_rejection, is_timeout};
use palisade_core::sync::Unpoison;
use palisade_core::telemetry::{LABEL_NAME, LABEL_REASON, retry as names};
use palisade_core::{AsError, BoxError, Classify, ErrorClassifier, HttpClassifier};
use tokio::time::Instant;
use tower::retry::Policy;

use crate::body::{DEFAULT_REPLAY_LIMIT, ReplayBody};
use crate::budget::RetryBudget;
use crate::error::ConfigError;
use crate::future::Wait;

/// The header [`RetryBuilder::attempt_header`] adds by default: the attempt
/// number (2 on the first retry).
pub const X_RETRY_ATTEMPT: HeaderName = HeaderName::from_static("x-retry-attempt");

/// The header that makes a request of any method retryable.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Requests a policy counts before depositing them in the budget at once.
const DEPOSIT_BATCH: u32 = 16;

type ErrorOverride = Arc<dyn Fn(&(dyn Error + 'static)) -> Option<bool> + Send + Sync>;

/// What made a call worth retrying (the `reason` of metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Status(StatusCode),
    Response,
    Timeout,
    Connect,
    Error,
}

impl Reason {
    fn of_error(error: &(dyn Error + 'static)) -> Self {
        if is_timeout(error) {
            Reason::Timeout
        } else if is_connect_error(error) {
            Reason::Connect
        } else {
            Reason::Error
        }
    }

    /// The reason's position in [`REASONS`].
    fn index(self) -> usize {
        match self {
            Reason::Status(status) => match status.as_u16() {
                408 => 0,
                429 => 1,
                500 => 2,
                502 => 3,
                503 => 4,
                504 => 5,
                _ => 6,
            },
            Reason::Response => 7,
            Reason::Timeout => 8,
            Reason::Connect => 9,
            Reason::Error => 10,
        }
    }

    fn label(self) -> &'static str {
        REASONS[self.index()]
    }
}

/// The `reason` label of every retry, in [`Reason::index`] order.
const REASONS: [&str; 11] = [
    "status_408",
    "status_429",
    "status_500",
    "status_502",
    "status_503",
    "status_504",
    "status_other",
    "response",
    "timeout",
    "connect",
    "error",
];

/// Settings shared by every clone of a policy.
struct Config<C> {
    name: Arc<str>,
    max_attempts: u32,
    backoff: Backoff,
    jitter: Jitter,
    random: Random,
    deadline: Option<Duration>,
    budget: Option<RetryBudget>,
    classifier: C,
    error_override: Option<ErrorOverride>,
    status_overrides: Vec<(StatusCode, bool)>,
    methods: Vec<Method>,
    idempotency_key: Option<HeaderName>,
    replay_limit: usize,
    max_retry_after: Duration,
    attempt_header: Option<HeaderName>,
    attempts_total: Counter,
    attempt_duration: Histogram,
    budget_exhausted_total: Counter,
    /// `palisade_retry_retries_total` by reason, in [`REASONS`] order.
    retries_total: [Counter; REASONS.len()],
}

/// State of one logical request: lives in the policy clone tower's `Retry`
/// makes for each request.
#[derive(Debug, Clone, Default)]
struct Attempts {
    /// Attempts whose result was seen.
    done: u32,
    /// When the first attempt started (only tracked with a deadline).
    started: Option<Instant>,
    /// The previous wait, for decorrelated jitter.
    previous_wait: Duration,
    /// When the attempt in flight was sent.
    attempt_started: Option<Instant>,
    /// The span of the attempt in flight, when a subscriber wants it. tower's
    /// `Retry` begins the first attempt on the service's own policy and then
    /// clones it into the request's, so the span sits in a slot both share and
    /// the request's takes it out when the attempt ends: the service's copy
    /// never keeps a finished attempt's span open.
    span: Option<Arc<std::sync::Mutex<Option<tracing::Span>>>>,
    /// The span of the attempt that just ended, until the policy decides
    /// whether another follows.
    ended: Option<tracing::Span>,
}

impl<C> Config<C> {
    /// Called before each attempt is sent.
    fn begin_attempt(&self, attempts: &mut Attempts, deposits: &mut u32) {
        self.attempts_total.increment(1);
        attempts.attempt_started = Some(Instant::now());
        let span = tracing::debug_span!(
            target: names::TARGET,
            "palisade.retry.attempt",
            name = &*self.name,
            attempt = attempts.done + 1,
            retried = false,
        );
        // No allocation unless a subscriber records the span.
        attempts.span = (!span.is_disabled()).then(|| Arc::new(std::sync::Mutex::new(Some(span))));
        if attempts.done == 0 {
            if let Some(budget) = &self.budget {
                // tower's `Retry` asks the service's own policy for the first
                // attempt, so the count builds up there and reaches the shared
                // budget in batches, saving an atomic operation per request.
                *deposits += 1;
                if *deposits >= DEPOSIT_BATCH {
                    budget.deposit_many(std::mem::take(deposits));
                }
            }
            if self.deadline.is_some() {
                attempts.started = Some(Instant::now());
            }
        }
    }

    /// Called when an attempt's result arrives.
    fn end_attempt(&self, attempts: &mut Attempts) {
        attempts.done = attempts.done.saturating_add(1);
        if let Some(started) = attempts.attempt_started.take() {
            self.attempt_duration.record(started.elapsed());
        }
        attempts.ended = attempts.span.take().and_then(|slot| slot.lock().unpoison().take());
    }

    fn flush_deposits(&self, deposits: u32) {
        if deposits > 0
            && let Some(budget) = &self.budget
        {
            budget.deposit_many(deposits);
        }
    }

    fn error_reason(&self, error: &(dyn Error + 'static), classify: impl FnOnce() -> bool) -> Option<Reason> {
        // palisade's own rejections say nothing about the downstream, and an
        // open breaker must not be hammered: never retried, whatever the overrides.
        if is_local_rejection(error) {
            return None;
        }
        let retryable = self
            .error_override
            .as_ref()
            .and_then(|f| f(error))
            .unwrap_or_else(classify);
        retryable.then(|| Reason::of_error(error))
    }

    /// Decides whether to retry and how long to wait first.
    fn decide(&self, attempts: &mut Attempts, reason: Reason, retry_after: Option<Duration>) -> Option<Wait> {
        let name = &*self.name;
        if attempts.done >= self.max_attempts {
            tracing::debug!(target: names::TARGET, name, attempt = attempts.done, reason = reason.label(), "not retrying: attempts exhausted");
            return None;
        }
        let wait = match retry_after {
            Some(wait) => wait.min(self.max_retry_after),
            None => self
                .jitter
                .apply(&self.backoff, attempts.done, attempts.previous_wait, self.random.unit()),
        };
        if let (Some(deadline), Some(started)) = (self.deadline, attempts.started)
            && let Some(deadline_at) = started.checked_add(deadline)
            && Instant::now().checked_add(wait).is_none_or(|end| end >= deadline_at)
        {
            tracing::debug!(target: names::TARGET, name, attempt = attempts.done, reason = reason.label(), wait_ms = wait.as_millis() as u64, "not retrying: the wait would end past the deadline");
            return None;
        }
        if !wait.is_zero() && tokio::runtime::Handle::try_current().is_err() {
            tracing::warn!(target: names::TARGET, name, "not retrying: no tokio runtime to wait on");
            return None;
        }
        if let Some(budget) = &self.budget
            && !budget.withdraw()
        {
            self.budget_exhausted_total.increment(1);
            tracing::info!(target: names::TARGET, name, attempt = attempts.done, reason = reason.label(), "not retrying: retry budget exhausted");
            return None;
        }
        attempts.previous_wait = wait;
        if let Some(span) = attempts.ended.take() {
            span.record("retried", true);
        }
        self.retries_total[reason.index()].increment(1);
        tracing::debug!(target: names::TARGET, name, attempt = attempts.done + 1, reason = reason.label(), wait_ms = wait.as_millis() as u64, "retrying");
        Some(Wait::new(wait, self.budget.clone()))
    }

    fn is_safe<B>(&self, req: &Request<B>) -> bool {
        self.methods.contains(req.method())
            || self
                .idempotency_key
                .as_ref()
                .is_some_and(|key| req.headers().contains_key(key))
    }
}

/// `Retry-After` as a wait from now: delay-seconds or an HTTP-date (a date
/// in the past means now). `None` when absent or malformed.
fn retry_after<B>(res: &Response<B>) -> Option<Duration> {
    let value = res.headers().get(RETRY_AFTER)?.to_str().ok()?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse::<u64>().map_or(Duration::MAX, Duration::from_secs));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// A `tower::retry::Policy` for any request that can be cloned: backoff with
/// jitter, a cap on attempts, an optional total deadline and a retry budget.
///
/// Retries the results the classifier calls retryable (by default
/// [`ErrorClassifier`]: every error, never a response), except palisade's own
/// local rejections. For `http::Request`s use [`HttpRetryPolicy`], which also
/// checks methods, replays bodies and honours `Retry-After`.
pub struct RetryPolicy<C = ErrorClassifier> {
    config: Arc<Config<C>>,
    attempts: Attempts,
    /// Requests not yet deposited in the budget.
    deposits: u32,
}

/// A `tower::retry::Policy` for HTTP: everything [`RetryPolicy`] does, plus
/// only safe requests, body replay up to a cap, `Retry-After`, per-status
/// overrides and the attempt header.
///
/// It retries `http::Request<ReplayBody<B>>`; [`HttpRetry`](crate::HttpRetry)
/// (made by [`RetryLayer`](crate::RetryLayer)) wraps the bodies.
pub struct HttpRetryPolicy<C = HttpClassifier> {
    config: Arc<Config<C>>,
    attempts: Attempts,
    /// Requests not yet deposited in the budget.
    deposits: u32,
}

macro_rules! policy_common {
    ($policy:ident) => {
        impl<C> Clone for $policy<C> {
            fn clone(&self) -> Self {
                // Undeposited requests stay with the original.
                Self {
                    config: self.config.clone(),
                    attempts: self.attempts.clone(),
                    deposits: 0,
                }
            }
        }

        impl<C> Drop for $policy<C> {
            fn drop(&mut self) {
                self.config.flush_deposits(self.deposits);
            }
        }

        impl<C: fmt::Debug> fmt::Debug for $policy<C> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($policy))
                    .field("name", &self.config.name)
                    .field("max_attempts", &self.config.max_attempts)
                    .field("backoff", &self.config.backoff)
                    .field("jitter", &self.config.jitter)
                    .field("deadline", &self.config.deadline)
                    .field("budget", &self.config.budget)
                    .field("classifier", &self.config.classifier)
                    .field("attempts", &self.attempts.done)
                    .finish_non_exhaustive()
            }
        }

        impl<C> $policy<C> {
            /// The policy's name (the `name` label of its metrics).
            pub fn name(&self) -> &str {
                &self.config.name
            }

            /// The retry budget, when one is on: a handle to inspect it or
            /// to share it with another policy.
            pub fn budget(&self) -> Option<&RetryBudget> {
                self.config.budget.as_ref()
            }
        }
    };
}

policy_common!(RetryPolicy);
policy_common!(HttpRetryPolicy);

impl RetryPolicy {
    /// A builder with the defaults (see the [crate documentation](crate)).
    pub fn builder() -> RetryBuilder<ErrorClassifier, AnyRequest> {
        RetryBuilder::new(ErrorClassifier)
    }
}

impl HttpRetryPolicy {
    /// A builder with the defaults and [`HttpClassifier`].
    pub fn builder() -> RetryBuilder<HttpClassifier, HttpRequest> {
        RetryBuilder::new(HttpClassifier)
    }
}

impl<Req, Res, E, C> Policy<Req, Res, E> for RetryPolicy<C>
where
    Req: Clone,
    E: AsError,
    C: Classify<Res>,
{
    type Future = Wait;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Wait> {
        let config = &*self.config;
        config.end_attempt(&mut self.attempts);
        let reason = match result {
            Ok(res) => config.classifier.retryable(Ok(res)).then_some(Reason::Response),
            Err(e) => {
                let e = e.as_error();
                config.error_reason(e, || config.classifier.retryable(Err(e)))
            }
        }?;
        config.decide(&mut self.attempts, reason, None)
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        self.config.begin_attempt(&mut self.attempts, &mut self.deposits);
        Some(req.clone())
    }
}

impl<B, ResB, E, C> Policy<Request<ReplayBody<B>>, Response<ResB>, E> for HttpRetryPolicy<C>
where
    B: Body,
    B::Error: Into<BoxError>,
    E: AsError,
    C: Classify<Response<ResB>>,
{
    type Future = Wait;

    fn retry(&mut self, req: &mut Request<ReplayBody<B>>, result: &mut Result<Response<ResB>, E>) -> Option<Wait> {
        let config = &*self.config;
        config.end_attempt(&mut self.attempts);
        let (reason, retry_after) = match result {
            Ok(res) => {
                let status = res.status();
                let retryable = match config.status_overrides.iter().find(|(s, _)| *s == status) {
                    Some(&(_, retryable)) => retryable,
                    None => config.classifier.retryable(Ok(res)),
                };
                if !retryable {
                    return None;
                }
                (Reason::Status(status), retry_after(res))
            }
            Err(e) => {
                let e = e.as_error();
                (config.error_reason(e, || config.classifier.retryable(Err(e)))?, None)
            }
        };
        if !req.body().is_replayable() {
            tracing::debug!(target: names::TARGET, name = &*config.name, reason = reason.label(), "not retrying: the request body exceeded the replay cap");
            return None;
        }
        let wait = config.decide(&mut self.attempts, reason, retry_after)?;
        if let Some(header) = &config.attempt_header {
            req.headers_mut()
                .insert(header.clone(), HeaderValue::from(self.attempts.done + 1));
        }
        Some(wait)
    }

    fn clone_request(&mut self, req: &Request<ReplayBody<B>>) -> Option<Request<ReplayBody<B>>> {
        let config = &*self.config;
        config.begin_attempt(&mut self.attempts, &mut self.deposits);
        if self.attempts.done == 0 && !config.is_safe(req) {
            return None;
        }
        let mut clone = Request::new(req.body().try_clone()?);
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}

impl<C> HttpRetryPolicy<C> {
    pub(crate) fn replay_limit(&self) -> usize {
        self.config.replay_limit
    }
}

/// Marks a [`RetryBuilder`] that builds a [`RetryPolicy`] (any request type).
#[derive(Debug, Clone, Copy)]
pub struct AnyRequest;

/// Marks a [`RetryBuilder`] that builds an [`HttpRetryPolicy`].
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest;

/// Builds a [`RetryPolicy`] or an [`HttpRetryPolicy`]; `build()` validates.
///
/// Start from [`RetryPolicy::builder`] or [`HttpRetryPolicy::builder`].
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
    methods: Vec<Method>,
    idempotency_key: Option<HeaderName>,
    replay_limit: usize,
    max_retry_after: Duration,
    attempt_header: Option<HeaderName>,
    kind: PhantomData<K>,
}

impl<C, K> RetryBuilder<C, K> {
    fn new(classifier: C) -> Self {
        Self {
            name: Arc::from("retry"),
            max_attempts: 3,
            backoff: Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(10)),
            jitter: Jitter::Full,
            random: Random::default(),
            deadline: None,
            budget: None,
            classifier,
            error_override: None,
            status_overrides: Vec::new(),
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
            kind: PhantomData,
        }
    }

    /// The policy's name: the `name` label of its metrics and the `name`
    /// field of its logs (default `"retry"`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
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
    /// first attempt: no wait is started that would end at or past it
    /// (default none; an outer timeout can bound the whole call). Costs one
    /// clock reading per request.
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
    /// [`retryable`](Classify::retryable).
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
            methods: self.methods,
            idempotency_key: self.idempotency_key,
            replay_limit: self.replay_limit,
            max_retry_after: self.max_retry_after,
            attempt_header: self.attempt_header,
            kind: PhantomData,
        }
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
        Ok(Arc::new(Config {
            attempts_total: metrics::counter!(names::ATTEMPTS_TOTAL, &labels),
            attempt_duration: metrics::histogram!(names::ATTEMPT_DURATION_SECONDS, &labels),
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
            methods: self.methods,
            idempotency_key: self.idempotency_key,
            replay_limit: self.replay_limit,
            max_retry_after: self.max_retry_after,
            attempt_header: self.attempt_header,
        }))
    }
}

impl<C> RetryBuilder<C, AnyRequest> {
    /// Validates the settings and makes the policy.
    pub fn build(self) -> Result<RetryPolicy<C>, ConfigError> {
        Ok(RetryPolicy {
            config: self.into_config()?,
            attempts: Attempts::default(),
            deposits: 0,
        })
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
    /// retry; see [`X_RETRY_ATTEMPT`] (default none).
    pub fn attempt_header(mut self, header: HeaderName) -> Self {
        self.attempt_header = Some(header);
        self
    }

    /// Validates the settings and makes the policy.
    pub fn build(self) -> Result<HttpRetryPolicy<C>, ConfigError> {
        Ok(HttpRetryPolicy {
            config: self.into_config()?,
            attempts: Attempts::default(),
            deposits: 0,
        })
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
