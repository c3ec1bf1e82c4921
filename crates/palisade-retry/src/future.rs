//! The futures of the retry policy and the HTTP retry service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use palisade_core::BoxError;
use palisade_core::deadline::DeadlineExceeded;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::policy::RequestPolicy;
pub use crate::wait::Wait;
use tower::retry::Policy;

/// The response future of [`HttpRetry`](crate::HttpRetry): a
/// [`RetryFuture`] over the request with a [`ReplayBody`](crate::ReplayBody).
pub type ResponseFuture<C, S, B> =
    RetryFuture<crate::BoxErrors<S>, http::Request<crate::ReplayBody<B>>, crate::HttpRetryPolicy<C>>;

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
    /// the request, the service, the request's own policy).
    pub struct RetryFuture<S, Req, P>
    where
        S: Service<Req>,
    {
        #[pin]
        state: RetryState<S::Future>,
        request: Option<Req>,
        service: S,
        policy: P,
        // Whether the first attempt has begun its timer and span: it does when
        // first polled, so that the future is built without writing the
        // policy's state through a call (moving that state right after such
        // writes costs more than the rest of a call that is not retried).
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
        // The backoff, then the downstream's readiness: the budget's
        // withdrawal for the retry is kept until the retry is sent. The last
        // attempt's result is not kept: a request waiting holds nothing of it
        // (a connection, a bulkhead permit its body keeps).
        Waiting {
            wait: Wait,
        },
    }
}

impl<S, Req, P> RetryFuture<S, Req, P>
where
    S: Service<Req>,
{
    #[inline]
    pub(crate) fn new(future: S::Future, request: Option<Req>, service: S, policy: P) -> Self {
        Self {
            state: RetryState::Called { future },
            request,
            service,
            policy,
            observed: false,
        }
    }
}

impl<S, Req, P> Future for RetryFuture<S, Req, P>
where
    S: Service<Req>,
    S::Error: From<DeadlineExceeded>,
    P: Policy<Req, S::Response, S::Error, Future = Wait> + RequestPolicy<Req>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                RetryStateProj::Called { future } => {
                    if !*this.observed {
                        *this.observed = true;
                        this.policy.observe_first(this.request.is_some());
                    }
                    let mut result = ready!(future.poll(cx));
                    let Some(request) = this.request.as_mut() else {
                        return Poll::Ready(result);
                    };
                    match this.policy.retry(request, &mut result) {
                        Some(wait) => this.state.set(RetryState::Waiting { wait }),
                        None => return Poll::Ready(result),
                    }
                }
                RetryStateProj::Waiting { wait } => {
                    ready!(wait.poll_elapsed(cx));
                    // Returning drops the wait unsent: the withdrawal is refunded.
                    match this.service.poll_ready(cx) {
                        Poll::Ready(Ok(())) if !wait.past_deadline() => {}
                        Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                        Poll::Pending if wait.poll_deadline(cx).is_pending() => return Poll::Pending,
                        // The deadline passed before the downstream was ready for the retry.
                        _ => return Poll::Ready(Err(DeadlineExceeded.into())),
                    }
                    wait.sent();
                    // A retry is only decided with a copy of the request in hand.
                    let request = this.request.take().expect("a retried request keeps its copy");
                    *this.request = this.policy.clone_request(&request);
                    let future = this.service.call(request);
                    this.state.set(RetryState::Called { future });
                }
            }
        }
    }
}

impl<S, Req, P> fmt::Debug for RetryFuture<S, Req, P>
where
    S: Service<Req>,
    P: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryFuture")
            .field("policy", &self.policy)
            .field("retryable", &self.request.is_some())
            .finish_non_exhaustive()
    }
}
