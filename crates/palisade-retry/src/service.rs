//! [`Retry`], the service palisade's policies retry in; [`HttpRetry`], a
//! `Retry` with request bodies made replayable; and [`BoxErrors`], which lets
//! the policies classify any error `Into<BoxError>`.

use std::fmt;
use std::task::{Context, Poll};

use http::Request;
use http_body::Body;
use palisade_core::BoxError;
use palisade_core::deadline::DeadlineExceeded;
use tower::retry::Policy;
use tower_service::Service;

use crate::body::ReplayBody;
use crate::future::{BoxErrorsFuture, ResponseFuture, RetryFuture};
use crate::policy::{HttpRetryPolicy, RequestPolicy};
use crate::wait::Wait;

/// The service [`RetryLayer`](crate::RetryLayer) and [`HttpRetry`] retry:
/// `S` with its errors turned into [`BoxError`].
///
/// The policies see every error as a `BoxError`, so any error type that is
/// `Into<BoxError>` (`reqwest::Error`, `hyper_util`'s, an application's own)
/// is classified through its `source()` chain without a `map_err` or an
/// impl per type; a `BoxError` passes through unchanged, so palisade's own
/// rejections stay findable by `downcast_ref`.
#[derive(Debug, Clone)]
pub struct BoxErrors<S> {
    inner: S,
}

impl<S> BoxErrors<S> {
    /// Boxes the errors of `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for BoxErrors<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxErrorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        BoxErrorsFuture::new(self.inner.call(req))
    }
}

/// An HTTP service retried by an [`HttpRetryPolicy`] in a [`Retry`].
///
/// Takes `http::Request<B>` and hands the inner service
/// `http::Request<ReplayBody<B>>`, so a body can be sent again (see
/// [`ReplayBody`]). Its errors are [`BoxError`]s: the inner service's error
/// boxed (see [`BoxErrors`]).
pub struct HttpRetry<S, C> {
    retry: Retry<BoxErrors<S>, HttpRetryPolicy<C>>,
    replay_limit: usize,
}

impl<S, C> HttpRetry<S, C> {
    /// Retries `inner` with `policy`.
    pub fn new(inner: S, policy: HttpRetryPolicy<C>) -> Self {
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

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.retry.get_mut().get_mut()
    }

    /// The inner service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.retry.into_inner().into_inner()
    }
}

impl<S: Clone, C> Clone for HttpRetry<S, C> {
    fn clone(&self) -> Self {
        Self {
            retry: self.retry.clone(),
            replay_limit: self.replay_limit,
        }
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for HttpRetry<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRetry")
            .field("retry", &self.retry)
            .field("replay_limit", &self.replay_limit)
            .finish()
    }
}

impl<S, C, B> Service<Request<B>> for HttpRetry<S, C>
where
    B: Body,
    B::Error: Into<BoxError>,
    S: Service<Request<ReplayBody<B>>> + Clone,
    S::Error: Into<BoxError>,
    HttpRetryPolicy<C>: Policy<Request<ReplayBody<B>>, S::Response, BoxError, Future = Wait>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<C, S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.retry.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limit = self.replay_limit;
        self.retry.call(req.map(|body| ReplayBody::new(body, limit)))
    }
}

/// A service retried by one of palisade's policies: [`RetryPolicy`](crate::RetryPolicy) (made by
/// [`RetryLayer`](crate::RetryLayer), around [`BoxErrors`]), and inside
/// [`HttpRetry`] and [`GrpcRetry`](crate::GrpcRetry).
///
/// Each request gets a policy of its own, which keeps the copy of the
/// request that a retry sends (none when the request may not be retried) and
/// counts its attempts.
///
/// The inner service's errors take a [`DeadlineExceeded`] (a `BoxError`
/// does): a retry whose deadline passes while the inner service is not yet
/// ready for it ends with one.
pub struct Retry<S, P> {
    inner: S,
    policy: P,
}

impl<S, P> Retry<S, P> {
    /// Retries `inner` with `policy`.
    pub fn new(inner: S, policy: P) -> Self {
        Self { inner, policy }
    }

    /// The policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

// Nothing in a `Retry` is ever pinned (its futures hold clones), so it moves
// freely whatever it holds, as tower's `Retry` does.
impl<S, P> Unpin for Retry<S, P> {}

impl<S: Clone, P: Clone> Clone for Retry<S, P> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.policy.clone())
    }
}

impl<S: fmt::Debug, P: fmt::Debug> fmt::Debug for Retry<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish()
    }
}

impl<S, P, Req> Service<Req> for Retry<S, P>
where
    S: Service<Req> + Clone,
    S::Error: From<DeadlineExceeded>,
    P: Policy<Req, S::Response, S::Error, Future = Wait> + RequestPolicy<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RetryFuture<S, Req, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        // The request's policy goes straight into the future: taken by
        // reference first, it would be written to the stack and copied.
        let copy = self.policy.first_copy(&req);
        let future = self.inner.call(req);
        RetryFuture::new(future, copy, self.inner.clone(), self.policy.for_request())
    }
}
