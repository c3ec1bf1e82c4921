//! The futures of the retry policy and the HTTP retry service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use palisade_core::{BoxError, Classify};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::policy::{Attempts, Config};
pub use crate::wait::Wait;
use std::sync::Arc;

/// The response future of [`HttpRetry`](crate::HttpRetry): tower's own
/// `Retry` future over the request with a [`ReplayBody`](crate::ReplayBody).
pub type ResponseFuture<C, S, B> = tower::retry::future::ResponseFuture<
    crate::HttpRetryPolicy<C>,
    crate::BoxErrors<S>,
    http::Request<crate::ReplayBody<B>>,
>;

pin_project! {
    /// The response future of [`BoxErrors`](crate::BoxErrors): the inner
    /// future, its error boxed.
    #[derive(Debug)]
    pub struct BoxErrorsFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F> BoxErrorsFuture<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self { inner }
    }
}

impl<F, T, E> Future for BoxErrorsFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map_err(Into::into)
    }
}

pin_project! {
    /// The response future of [`Retry`](crate::Retry): the attempt in
    /// flight, the wait before the next, and what the next needs (a copy of
    /// the request, the service, the policy's settings).
    pub struct RetryFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        #[pin]
        state: RetryState<S::Future>,
        request: Req,
        service: S,
        config: Arc<Config<C>>,
        attempts: Attempts,
        // Whether the attempt in flight has begun its timer and span: the
        // first does when first polled, so that the future is built without
        // writing the attempt state through a call (moving the state right
        // after such writes costs more than the whole fast path).
        observed: bool,
    }
}

pin_project! {
    #[project = RetryStateProj]
    enum RetryState<F> {
        Called {
            #[pin]
            future: F,
        },
        Waiting {
            #[pin]
            wait: Wait,
        },
        Retrying,
    }
}

impl<S, Req, C> RetryFuture<S, Req, C>
where
    S: Service<Req>,
{
    #[inline]
    pub(crate) fn new(future: S::Future, request: Req, service: S, config: Arc<Config<C>>, attempts: Attempts) -> Self {
        Self {
            state: RetryState::Called { future },
            request,
            service,
            config,
            attempts,
            observed: false,
        }
    }
}

impl<S, Req, C> Future for RetryFuture<S, Req, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: Clone,
    C: Classify<S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                RetryStateProj::Called { future } => {
                    if !*this.observed {
                        *this.observed = true;
                        this.config.observe_attempt(this.attempts, true);
                    }
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    match this.config.retry_any(this.attempts, &result) {
                        Some(wait) => this.state.set(RetryState::Waiting { wait }),
                        None => return Poll::Ready(result),
                    }
                }
                RetryStateProj::Waiting { wait } => {
                    ready!(wait.poll(cx));
                    this.state.set(RetryState::Retrying);
                }
                RetryStateProj::Retrying => {
                    ready!(this.service.poll_ready(cx)).map_err(Into::into)?;
                    this.config.count_attempt(false, &mut 0);
                    this.config.observe_attempt(this.attempts, true);
                    let future = this.service.call(this.request.clone());
                    this.state.set(RetryState::Called { future });
                }
            }
        }
    }
}

impl<S, Req, C> fmt::Debug for RetryFuture<S, Req, C>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryFuture")
            .field("name", &&*self.config.name)
            .field("attempts", &self.attempts.done)
            .finish_non_exhaustive()
    }
}
