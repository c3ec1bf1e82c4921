//! The retry policies: tower `Policy`s sharing one [`Config`] per layer.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use metrics::{Counter, Histogram};
use palisade_core::backoff::{Backoff, Jitter, Random};
use palisade_core::deadline::Deadline;
use palisade_core::error::{is_connect_error, is_local_rejection, is_timeout};
use palisade_core::events::{EventHook, LayerEvent};
use palisade_core::sync::Unpoison;
use palisade_core::telemetry::retry as names;
use palisade_core::{AsError, BoxError, Classify, ErrorClassifier, GrpcCode, HttpClassifier};
use tokio::time::Instant;
use tower::retry::Policy;

use crate::body::ReplayBody;
use crate::budget::RetryBudget;
use crate::wait::Wait;

/// The header [`RetryBuilder::attempt_header`](crate::RetryBuilder::attempt_header) is usually given: the attempt
/// number (2 on the first retry).
pub const X_RETRY_ATTEMPT: HeaderName = HeaderName::from_static("x-retry-attempt");

/// The header that makes a request of any method retryable.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Requests a policy counts before depositing them in the budget at once.
const DEPOSIT_BATCH: u32 = 16;

pub(crate) type ErrorOverride = Arc<dyn Fn(&(dyn Error + 'static)) -> Option<bool> + Send + Sync>;

/// What made a call worth retrying (the `reason` of metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Status(StatusCode),
    Response,
    Timeout,
    Connect,
    Error,
}

impl Reason {
    pub(crate) fn of_error(error: &(dyn Error + 'static)) -> Self {
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

    pub(crate) fn label(self) -> &'static str {
        REASONS[self.index()]
    }
}

/// The `reason` label of every retry, in [`Reason::index`] order.
pub(crate) const REASONS: [&str; 11] = [
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
pub(crate) struct Config<C> {
    pub(crate) name: Arc<str>,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) jitter: Jitter,
    pub(crate) random: Random,
    pub(crate) deadline: Option<Duration>,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) classifier: C,
    pub(crate) error_override: Option<ErrorOverride>,
    pub(crate) status_overrides: Vec<(StatusCode, bool)>,
    /// The gRPC status codes a gRPC policy retries.
    pub(crate) retry_codes: Vec<GrpcCode>,
    pub(crate) methods: Vec<Method>,
    pub(crate) idempotency_key: Option<HeaderName>,
    pub(crate) replay_limit: usize,
    pub(crate) max_retry_after: Duration,
    pub(crate) attempt_header: Option<HeaderName>,
    pub(crate) attempts_total: Counter,
    pub(crate) attempt_duration: Histogram,
    /// Whether `attempt_duration` records anywhere: attempts read the clock only then.
    pub(crate) time_attempts: bool,
    pub(crate) budget_exhausted_total: Counter,
    /// `palisade_retry_retries_total` by reason, in [`REASONS`] order.
    pub(crate) retries_total: [Counter; REASONS.len()],
    pub(crate) events: EventHook,
}

/// State of one logical request: lives in the request's own policy, in the
/// response future of [`Retry`](crate::Retry) (or in the policy clone
/// tower's `Retry` makes for each request, where a policy is used there).
#[derive(Debug, Clone, Default)]
pub(crate) struct Attempts {
    /// Attempts whose result was seen.
    pub(crate) done: u32,
    /// When the first attempt started (only tracked with a deadline).
    started: Option<Instant>,
    /// The previous wait, for decorrelated jitter.
    previous_wait: Duration,
    /// When the attempt in flight was sent.
    attempt_started: Option<Instant>,
    /// The span of the attempt in flight, when a subscriber wants it. In a
    /// slot that clones share: tower's `Retry` begins the first attempt on the
    /// service's own policy and then clones it into the request's, which takes
    /// the span out when the attempt ends, so the service's copy never keeps a
    /// finished attempt's span open.
    span: Option<Arc<std::sync::Mutex<Option<tracing::Span>>>>,
}

impl Attempts {
    /// The state of a request whose first attempt was sent at `started`
    /// (see [`Config::request_started`]).
    #[inline]
    pub(crate) fn starting(started: Option<Instant>) -> Self {
        Self {
            started,
            ..Self::default()
        }
    }
}

/// Whether an attempt's span would go anywhere: to a subscriber recording
/// `debug` spans or, with none set, to tracing's `log` fallback at `debug`.
/// A span going nowhere is not made: where tracing's `log` feature is on,
/// even a disabled span costs its value set and its drop.
#[inline]
fn spans_wanted() -> bool {
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    let debug = tracing::Level::DEBUG;
    (debug <= STATIC_MAX_LEVEL && debug <= LevelFilter::current())
        || (!tracing::dispatcher::has_been_set() && log::max_level() >= log::LevelFilter::Debug)
}

impl<C> Config<C> {
    /// Called before each attempt is sent: [`count_attempt`](Self::count_attempt)
    /// and [`observe_attempt`](Self::observe_attempt).
    pub(crate) fn begin_attempt(&self, attempts: &mut Attempts, deposits: &mut u32, retryable: bool) {
        if attempts.done == 0 {
            attempts.started = self.request_started();
        }
        self.count_attempt(attempts.done == 0, deposits);
        self.observe_attempt(attempts, retryable);
    }

    /// When a request's first attempt is sent, as its deadline counts it:
    /// `None` without a deadline, when the clock need not be read.
    #[inline]
    pub(crate) fn request_started(&self) -> Option<Instant> {
        self.deadline.map(|_| Instant::now())
    }

    /// Counts an attempt in the metrics and, the `first` of a request, in
    /// the budget.
    #[inline]
    pub(crate) fn count_attempt(&self, first: bool, deposits: &mut u32) {
        self.attempts_total.increment(1);
        if first && let Some(budget) = &self.budget {
            // Requests are counted where the service keeps its count and reach
            // the shared budget in batches, saving an atomic operation per request.
            *deposits += 1;
            if *deposits >= DEPOSIT_BATCH {
                budget.deposit_many(std::mem::take(deposits));
            }
        }
    }

    /// Starts what the end of an attempt reads: its timer and its span. Only an attempt that
    /// may be `retryable` (the policy kept a copy of its request) is timed and
    /// has a span: tower hands the policy the result of no other, so nothing
    /// would close its span until the service's next attempt.
    #[inline]
    pub(crate) fn observe_attempt(&self, attempts: &mut Attempts, retryable: bool) {
        if self.time_attempts && retryable {
            attempts.attempt_started = Some(Instant::now());
        }
        attempts.span = if retryable && spans_wanted() {
            self.attempt_span(attempts.done + 1)
        } else {
            None
        };
    }

    #[inline(never)]
    fn attempt_span(&self, attempt: u32) -> Option<Arc<std::sync::Mutex<Option<tracing::Span>>>> {
        let span = tracing::debug_span!(
            target: names::TARGET,
            "palisade.retry.attempt",
            name = &*self.name,
            attempt,
            retried = false,
        );
        // No allocation unless a subscriber records the span.
        (!span.is_disabled()).then(|| Arc::new(std::sync::Mutex::new(Some(span))))
    }

    /// Called when an attempt's result arrives: the attempt's span, which
    /// closes when the policy has decided whether another attempt follows.
    #[inline]
    pub(crate) fn end_attempt(&self, attempts: &mut Attempts) -> Option<tracing::Span> {
        attempts.done = attempts.done.saturating_add(1);
        if attempts.attempt_started.is_none() && attempts.span.is_none() {
            return None;
        }
        self.end_observed_attempt(attempts)
    }

    /// Ends an attempt after which no other follows (its result is final).
    // Not `drop(self.end_attempt(attempts))`: that drops an empty span out of line, about
    // 2 ns a request.
    #[inline]
    pub(crate) fn last_attempt(&self, attempts: &mut Attempts) {
        attempts.done = attempts.done.saturating_add(1);
        if attempts.attempt_started.is_some() || attempts.span.is_some() {
            drop(self.end_observed_attempt(attempts));
        }
    }

    /// The rest of [`end_attempt`](Self::end_attempt) for an attempt that was timed or has a span.
    #[inline(never)]
    fn end_observed_attempt(&self, attempts: &mut Attempts) -> Option<tracing::Span> {
        if let Some(started) = attempts.attempt_started.take() {
            self.attempt_duration.record(started.elapsed());
        }
        attempts.span.take().and_then(|slot| slot.lock().unpoison().take())
    }

    pub(crate) fn flush_deposits(&self, deposits: u32) {
        if deposits > 0
            && let Some(budget) = &self.budget
        {
            budget.deposit_many(deposits);
        }
    }

    pub(crate) fn error_reason(
        &self,
        error: &(dyn Error + 'static),
        classify: impl FnOnce() -> bool,
    ) -> Option<Reason> {
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
    ///
    /// `request_deadline` is the request's own [`Deadline`] (palisade-deadline's):
    /// no wait that would end at or past it.
    pub(crate) fn decide(
        &self,
        attempts: &mut Attempts,
        ended: Option<tracing::Span>,
        reason: Reason,
        retry_after: Option<Duration>,
        request_deadline: Option<Deadline>,
    ) -> Option<Wait> {
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
        // A deadline too far to represent is none.
        let deadline_at = attempts
            .started
            .zip(self.deadline)
            .and_then(|(started, deadline)| started.checked_add(deadline));
        if let Some(deadline_at) = deadline_at
            && Instant::now().checked_add(wait).is_none_or(|end| end >= deadline_at)
        {
            tracing::debug!(target: names::TARGET, name, attempt = attempts.done, reason = reason.label(), wait_ms = wait.as_millis() as u64, "not retrying: the wait would end past the deadline");
            return None;
        }
        if request_deadline.is_some_and(|d| d.cannot_fit(wait)) {
            tracing::debug!(target: names::TARGET, name, attempt = attempts.done, reason = reason.label(), wait_ms = wait.as_millis() as u64, "not retrying: the wait would end past the request's deadline");
            return None;
        }
        // The retry must also be sent before them: the downstream may not be
        // ready for it when the wait ends.
        let send_by = deadline_at
            .into_iter()
            .chain(request_deadline.map(|d| d.instant()))
            .min();
        if !wait.is_zero() && tokio::runtime::Handle::try_current().is_err() {
            tracing::warn!(target: names::TARGET, name, "not retrying: no tokio runtime to wait on");
            return None;
        }
        let withdrawal = match &self.budget {
            None => None,
            Some(budget) => {
                let Some(withdrawal) = budget.withdrawal() else {
                    self.budget_exhausted_total.increment(1);
                    tracing::info!(target: names::TARGET, name, attempt = attempts.done, reason = reason.label(), "not retrying: retry budget exhausted");
                    self.events.emit(|| LayerEvent::RetryBudgetExhausted { name });
                    return None;
                };
                Some(withdrawal)
            }
        };
        attempts.previous_wait = wait;
        if let Some(span) = ended {
            span.record("retried", true);
        }
        self.retries_total[reason.index()].increment(1);
        tracing::debug!(target: names::TARGET, name, attempt = attempts.done + 1, reason = reason.label(), wait_ms = wait.as_millis() as u64, "retrying");
        self.events.emit(|| LayerEvent::Retry {
            name,
            attempt: attempts.done + 1,
            wait,
            reason: reason.label(),
        });
        Some(Wait::new(wait, send_by, withdrawal))
    }

    /// Whether an HTTP response is retried: its status's override, else the classifier.
    fn status_retryable<B, ReqB>(&self, res: &Response<B>, req: &Request<ReqB>) -> bool
    where
        C: Classify<Response<B>>,
    {
        let status = res.status();
        match self.status_overrides.iter().find(|(s, _)| *s == status) {
            Some(&(_, retryable)) => retryable,
            None => self.classifier.retryable(Ok(res)) || self.is_in_flight_conflict(status, req),
        }
    }

    /// A 409 to a request carrying an idempotency key: the server is still
    /// running an earlier attempt with that key (a retry sent after a timeout
    /// on this side), and answers it once that attempt is done.
    fn is_in_flight_conflict<B>(&self, status: StatusCode, req: &Request<B>) -> bool {
        status == StatusCode::CONFLICT && self.carries_key(req)
    }

    fn is_safe<B>(&self, req: &Request<B>) -> bool {
        self.methods.contains(req.method()) || self.carries_key(req)
    }

    /// Whether `req` carries the idempotency key header (when one is set).
    fn carries_key<B>(&self, req: &Request<B>) -> bool {
        self.idempotency_key
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
/// (made by [`HttpRetryLayer`](crate::HttpRetryLayer)) wraps the bodies.
pub struct HttpRetryPolicy<C = HttpClassifier> {
    config: Arc<Config<C>>,
    attempts: Attempts,
    /// Requests not yet deposited in the budget.
    deposits: u32,
}

/// What [`Retry`](crate::Retry) asks of a policy besides
/// `tower::retry::Policy`: a policy of each request's own, and the copy of
/// its first attempt. palisade's three policies implement it.
pub trait RequestPolicy<Req>: Sized {
    /// The policy of one request, its first attempt counted.
    fn for_request(&mut self) -> Self;

    /// The copy of a request's first attempt kept to send again, or `None`
    /// when it may not be retried.
    fn first_copy(&self, req: &Req) -> Option<Req>;

    /// Starts the first attempt's timer and span (`retryable`: a copy was
    /// kept), when the response future is first polled.
    fn observe_first(&mut self, retryable: bool);
}

macro_rules! request_policy {
    () => {
        #[inline]
        fn for_request(&mut self) -> Self {
            self.begin_request()
        }

        #[inline]
        fn observe_first(&mut self, retryable: bool) {
            self.observe_first_attempt(retryable);
        }
    };
}

pub(crate) use request_policy;

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
            /// The policy of one request, its first attempt counted here (and
            /// deposited in the budget in batches from here).
            #[inline]
            pub(crate) fn begin_request(&mut self) -> Self {
                self.config.count_attempt(true, &mut self.deposits);
                Self {
                    config: self.config.clone(),
                    attempts: $crate::policy::Attempts::starting(self.config.request_started()),
                    deposits: 0,
                }
            }

            /// Starts the first attempt's timer and span.
            #[inline]
            pub(crate) fn observe_first_attempt(&mut self, retryable: bool) {
                self.config.observe_attempt(&mut self.attempts, retryable);
            }

            pub(crate) fn new(config: Arc<Config<C>>) -> Self {
                Self {
                    config,
                    attempts: Attempts::default(),
                    deposits: 0,
                }
            }

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

pub(crate) use policy_common;

policy_common!(RetryPolicy);

policy_common!(HttpRetryPolicy);

impl<Req, Res, E, C> Policy<Req, Res, E> for RetryPolicy<C>
where
    Req: Clone,
    E: AsError,
    C: Classify<Res>,
{
    type Future = Wait;

    // Inlined into the response future, deciding first whether the result is retried at
    // all: the usual end then takes no call, and a small result is not spilled to memory and
    // copied back. The HTTP and gRPC policies have the same shape.
    #[inline]
    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Wait> {
        let config = &*self.config;
        if let Ok(res) = result
            && !config.classifier.retryable(Ok(res))
        {
            config.last_attempt(&mut self.attempts);
            return None;
        }
        let ended = config.end_attempt(&mut self.attempts);
        let reason = match result {
            Ok(_) => Reason::Response,
            Err(e) => {
                let e = e.as_error();
                config.error_reason(e, || config.classifier.retryable(Err(e)))?
            }
        };
        config.decide(&mut self.attempts, ended, reason, None, Deadline::current())
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        self.config.begin_attempt(&mut self.attempts, &mut self.deposits, true);
        Some(req.clone())
    }
}

impl<Req: Clone, C> RequestPolicy<Req> for RetryPolicy<C> {
    request_policy!();

    #[inline]
    fn first_copy(&self, req: &Req) -> Option<Req> {
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

    #[inline]
    fn retry(&mut self, req: &mut Request<ReplayBody<B>>, result: &mut Result<Response<ResB>, E>) -> Option<Wait> {
        let config = &*self.config;
        if let Ok(res) = result
            && !config.status_retryable(res, req)
        {
            config.last_attempt(&mut self.attempts);
            return None;
        }
        let ended = config.end_attempt(&mut self.attempts);
        let (reason, retry_after) = match result {
            Ok(res) => (Reason::Status(res.status()), retry_after(res)),
            Err(e) => {
                let e = e.as_error();
                (config.error_reason(e, || config.classifier.retryable(Err(e)))?, None)
            }
        };
        if !req.body().is_replayable() {
            tracing::debug!(target: names::TARGET, name = &*config.name, reason = reason.label(), "not retrying: the request body exceeded the replay cap");
            return None;
        }
        let wait = config.decide(&mut self.attempts, ended, reason, retry_after, Deadline::of(req))?;
        if let Some(header) = &config.attempt_header {
            req.headers_mut()
                .insert(header.clone(), HeaderValue::from(self.attempts.done + 1));
        }
        Some(wait)
    }

    fn clone_request(&mut self, req: &Request<ReplayBody<B>>) -> Option<Request<ReplayBody<B>>> {
        let copy = if self.attempts.done == 0 {
            self.first_copy(req)
        } else {
            clone_request(req)
        };
        self.config
            .begin_attempt(&mut self.attempts, &mut self.deposits, copy.is_some());
        copy
    }
}

impl<B, C> RequestPolicy<Request<ReplayBody<B>>> for HttpRetryPolicy<C>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    request_policy!();

    /// None for a request that is not safe to repeat.
    fn first_copy(&self, req: &Request<ReplayBody<B>>) -> Option<Request<ReplayBody<B>>> {
        if self.config.is_safe(req) {
            clone_request(req)
        } else {
            None
        }
    }
}

/// A copy of `req` whose body sends it again from its start; `None` when
/// the body cannot be replayed.
pub(crate) fn clone_request<B>(req: &Request<ReplayBody<B>>) -> Option<Request<ReplayBody<B>>> {
    let mut clone = Request::new(req.body().try_clone()?);
    *clone.method_mut() = req.method().clone();
    *clone.uri_mut() = req.uri().clone();
    *clone.version_mut() = req.version();
    *clone.headers_mut() = req.headers().clone();
    *clone.extensions_mut() = req.extensions().clone();
    Some(clone)
}

impl<C> HttpRetryPolicy<C> {
    pub(crate) fn replay_limit(&self) -> usize {
        self.config.replay_limit
    }
}
