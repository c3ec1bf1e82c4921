//! Retries for gRPC, following gRPC's retry design (gRFC A6):
//! [`GrpcRetryLayer`], [`GrpcRetry`] and [`GrpcRetryPolicy`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::Body;
use palisade_core::deadline::{Deadline, GRPC_TIMEOUT};
use palisade_core::{AsError, BoxError, Classify, GrpcClassifier, GrpcCode};
use tower::retry::Policy;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::ReplayBody;
use crate::budget::RetryBudget;
use crate::policy::{Attempts, Config, Reason, RequestPolicy, clone_request, policy_common, request_policy};
use crate::service::{BoxErrors, Retry};
use crate::wait::Wait;

/// The header a server sets to direct a client's retry: milliseconds to
/// wait (a non-negative integer), or anything else for "do not retry".
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// The header a retried call carries: how many attempts came before it.
pub const GRPC_PREVIOUS_RPC_ATTEMPTS: HeaderName = HeaderName::from_static("grpc-previous-rpc-attempts");

/// A `tower::retry::Policy` for gRPC calls (`http::Request`s over a tonic
/// `Channel` or any HTTP/2 client), as gRPC's retry design (A6) describes:
///
/// - a response is retried only when its head carries a status (a
///   trailers-only response, or a non-200 HTTP status) among the
///   [retryable codes](crate::RetryBuilder::retry_codes), default
///   `UNAVAILABLE`. A head without a status (`200 OK`, messages to follow)
///   commits the call: its messages are passed on, never retried;
/// - the server's pushback is honoured: `grpc-retry-pushback-ms` with a
///   non-negative integer waits that long instead of the backoff (capped
///   by [`max_pushback`](crate::RetryBuilder::max_pushback)); a negative or
///   malformed value means the call is not retried;
/// - each retry carries `grpc-previous-rpc-attempts`, the number of
///   attempts before it;
/// - errors (no response) are retried as the classifier says (by default
///   [`GrpcClassifier`]: only errors that prove the call was not processed,
///   a connect error or a stream the server refused; a timed-out attempt
///   may have been), never palisade's own local rejections;
/// - attempts, the total deadline and the [`RetryBudget`] (which may be
///   shared with HTTP policies) apply as for every palisade retry policy.
///
/// It retries `http::Request<ReplayBody<B>>`; [`GrpcRetry`] wraps the
/// bodies, keeping up to the replay limit of a request stream of any length.
pub struct GrpcRetryPolicy<C = GrpcClassifier> {
    config: Arc<Config<C>>,
    attempts: Attempts,
    /// Requests not yet deposited in the budget.
    deposits: u32,
}

policy_common!(GrpcRetryPolicy);

/// What the server's pushback says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pushback {
    /// No pushback: the backoff decides.
    None,
    /// Wait this long.
    Wait(Duration),
    /// A negative or malformed value: do not retry.
    Stop,
}

impl Pushback {
    fn of<B>(res: &Response<B>) -> Self {
        let Some(value) = res.headers().get(GRPC_RETRY_PUSHBACK_MS) else {
            return Pushback::None;
        };
        match value.to_str().ok().map(str::trim) {
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                Pushback::Wait(v.parse::<u64>().map_or(Duration::MAX, Duration::from_millis))
            }
            _ => Pushback::Stop,
        }
    }
}

impl<B, ResB, E, C> Policy<Request<ReplayBody<B>>, Response<ResB>, E> for GrpcRetryPolicy<C>
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
        // No status in the head: the call is committed.
        if let Ok(res) = result
            && !GrpcCode::of_response(res).is_some_and(|code| config.retry_codes.contains(&code))
        {
            config.last_attempt(&mut self.attempts);
            return None;
        }
        let ended = config.end_attempt(&mut self.attempts);
        let (reason, pushback) = match result {
            Ok(res) => match Pushback::of(res) {
                Pushback::Stop => {
                    tracing::debug!(target: palisade_core::telemetry::retry::TARGET, name = &*config.name, "not retrying: the server's pushback says not to");
                    return None;
                }
                Pushback::Wait(wait) => (Reason::Response, Some(wait)),
                Pushback::None => (Reason::Response, None),
            },
            Err(e) => {
                let e = e.as_error();
                (config.error_reason(e, || config.classifier.retryable(Err(e)))?, None)
            }
        };
        if !req.body().is_replayable() {
            tracing::debug!(target: palisade_core::telemetry::retry::TARGET, name = &*config.name, reason = reason.label(), "not retrying: the request exceeded the replay cap");
            return None;
        }
        let wait = config.decide(&mut self.attempts, ended, reason, pushback, Deadline::of(req))?;
        req.headers_mut()
            .insert(GRPC_PREVIOUS_RPC_ATTEMPTS, HeaderValue::from(self.attempts.done));
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

impl<B, C> RequestPolicy<Request<ReplayBody<B>>> for GrpcRetryPolicy<C>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    request_policy!();

    /// The copy carries the call's own deadline (see [`own_deadline`]).
    fn first_copy(&self, req: &Request<ReplayBody<B>>) -> Option<Request<ReplayBody<B>>> {
        let mut copy = clone_request(req)?;
        own_deadline(&mut copy);
        Some(copy)
    }
}

/// Gives the copy kept for retries the call's own `grpc-timeout` (tonic's
/// `Request::set_timeout`) as its [`Deadline`], from the first attempt's
/// start, when it has none: gRPC's deadline covers every attempt of a call,
/// so no wait may end past it, and an attempt after one is sent with what
/// is left (palisade-deadline's `PropagateDeadline` reads it).
fn own_deadline<B>(copy: &mut Request<B>) {
    if Deadline::of(copy).is_some() {
        return;
    }
    let budget = copy
        .headers()
        .get(GRPC_TIMEOUT)
        .and_then(|value| palisade_core::deadline::parse_grpc_timeout(value.as_bytes()).ok());
    if let Some(budget) = budget {
        copy.extensions_mut().insert(Deadline::after(budget));
    }
}

impl<C> GrpcRetryPolicy<C> {
    pub(crate) fn replay_limit(&self) -> usize {
        self.config.replay_limit
    }
}

/// Retries gRPC calls: puts a [`GrpcRetryPolicy`] into a [`GrpcRetry`].
///
/// Built by [`GrpcRetryLayer::builder`]. Clones share the policy's settings
/// and budget.
#[derive(Debug, Clone)]
pub struct GrpcRetryLayer<C = GrpcClassifier> {
    policy: GrpcRetryPolicy<C>,
}

impl<C> GrpcRetryLayer<C> {
    pub(crate) fn new(policy: GrpcRetryPolicy<C>) -> Self {
        Self { policy }
    }

    /// The policy.
    pub fn policy(&self) -> &GrpcRetryPolicy<C> {
        &self.policy
    }

    /// The retry budget, when one is on: a handle to inspect it or to share
    /// it with another layer.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.policy.budget()
    }
}

impl<S, C> Layer<S> for GrpcRetryLayer<C> {
    type Service = GrpcRetry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcRetry::new(inner, self.policy.clone())
    }
}

/// A gRPC service retried by a [`GrpcRetryPolicy`] in a [`Retry`].
///
/// Takes `http::Request<B>` and hands the inner service
/// `http::Request<ReplayBody<B>>`, keeping each request's stream for replay
/// up to the replay limit ([`ReplayBody::up_to`]). Its errors are
/// [`BoxError`]s, as [`HttpRetry`](crate::HttpRetry)'s: the inner service's
/// error boxed (see [`BoxErrors`](crate::BoxErrors)).
pub struct GrpcRetry<S, C> {
    retry: Retry<BoxErrors<S>, GrpcRetryPolicy<C>>,
    replay_limit: usize,
}

/// The response future of [`GrpcRetry`]: a [`RetryFuture`](crate::future::RetryFuture).
pub type GrpcResponseFuture<C, S, B> =
    crate::future::RetryFuture<BoxErrors<S>, Request<ReplayBody<B>>, GrpcRetryPolicy<C>>;

impl<S, C> GrpcRetry<S, C> {
    /// Retries `inner` with `policy`.
    pub fn new(inner: S, policy: GrpcRetryPolicy<C>) -> Self {
        let replay_limit = policy.replay_limit();
        Self {
            retry: Retry::new(BoxErrors::new(inner), policy),
            replay_limit,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        self.retry.get_ref().get_ref()
    }
}

impl<S: Clone, C> Clone for GrpcRetry<S, C> {
    fn clone(&self) -> Self {
        Self {
            retry: self.retry.clone(),
            replay_limit: self.replay_limit,
        }
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for GrpcRetry<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcRetry")
            .field("retry", &self.retry)
            .field("replay_limit", &self.replay_limit)
            .finish()
    }
}

impl<S, C, B> Service<Request<B>> for GrpcRetry<S, C>
where
    B: Body,
    B::Error: Into<BoxError>,
    S: Service<Request<ReplayBody<B>>> + Clone,
    S::Error: Into<BoxError>,
    GrpcRetryPolicy<C>: Policy<Request<ReplayBody<B>>, S::Response, BoxError, Future = Wait>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = GrpcResponseFuture<C, S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.retry.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limit = self.replay_limit;
        self.retry.call(req.map(|body| ReplayBody::up_to(body, limit)))
    }
}
