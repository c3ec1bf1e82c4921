//! [`HttpRetry`]: tower's `Retry` with request bodies made replayable.

use std::fmt;
use std::task::{Context, Poll};

use http::Request;
use http_body::Body;
use palisade_core::BoxError;
use tower::retry::{Policy, Retry};
use tower_service::Service;

use crate::body::ReplayBody;
use crate::future::ResponseFuture;
use crate::policy::HttpRetryPolicy;

/// An HTTP service retried by an [`HttpRetryPolicy`] in tower's `Retry`.
///
/// Takes `http::Request<B>` and hands the inner service
/// `http::Request<ReplayBody<B>>`, so a body can be sent again (see
/// [`ReplayBody`]).
pub struct HttpRetry<S, C> {
    retry: Retry<HttpRetryPolicy<C>, S>,
    replay_limit: usize,
}

impl<S, C> HttpRetry<S, C> {
    /// Retries `inner` with `policy`.
    pub fn new(inner: S, policy: HttpRetryPolicy<C>) -> Self {
        let replay_limit = policy.replay_limit();
        Self {
            retry: Retry::new(policy, inner),
            replay_limit,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        self.retry.get_ref()
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.retry.get_mut()
    }

    /// The inner service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.retry.into_inner()
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
    HttpRetryPolicy<C>: Policy<Request<ReplayBody<B>>, S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<C, S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.retry.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limit = self.replay_limit;
        self.retry.call(req.map(|body| ReplayBody::new(body, limit)))
    }
}
