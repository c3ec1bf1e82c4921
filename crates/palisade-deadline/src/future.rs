//! The response futures of the deadline layers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Response, StatusCode};
use palisade_core::BoxError;
use palisade_core::deadline::{Deadline, DeadlineExceeded};
use palisade_core::telemetry::deadline as names;
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tokio::time::Sleep;

use crate::body::DeadlineBody;
use crate::reply::Reply;
use crate::state::{Client, Server};

pin_project! {
    /// The response future of [`SetDeadline`](crate::SetDeadline): the inner
    /// call, run with its [`Deadline`] as the current one, until the deadline
    /// passes; then the inner future is dropped (the work is cancelled) and
    /// the layer answers `504` or `DEADLINE_EXCEEDED`.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<Inner<F>>,
        #[pin]
        sleep: Option<Sleep>,
        reply: Option<Reply>,
        grpc: bool,
        shared: Arc<Server>,
        // Current for the response body too.
        deadline: Option<Deadline>,
    }
}

impl<F> ResponseFuture<F> {
    /// The inner call, bounded by `deadline` when there is one.
    pub(crate) fn called(inner: F, deadline: Option<Deadline>, grpc: bool, shared: Arc<Server>) -> Self
    where
        F: Future,
    {
        let (inner, sleep) = match deadline {
            Some(deadline) => (
                Inner::Scoped {
                    future: deadline.scope(inner),
                },
                Some(tokio::time::sleep_until(deadline.instant())),
            ),
            // No budget: the call runs in the enclosing one, if any.
            None => (Inner::Plain { future: inner }, None),
        };
        Self {
            inner: Some(inner),
            sleep,
            reply: None,
            grpc,
            shared,
            deadline,
        }
    }

    /// The layer's own answer, without calling the inner service.
    pub(crate) fn reply(reply: Reply, grpc: bool, shared: Arc<Server>) -> Self {
        Self {
            inner: None,
            sleep: None,
            reply: Some(reply),
            grpc,
            shared,
            deadline: None,
        }
    }
}

pin_project! {
    /// The inner call, with its deadline as the task's current one or, with
    /// no budget, as it is.
    #[project = InnerProj]
    pub(crate) enum Inner<F> {
        Scoped { #[pin] future: TaskLocalFuture<Deadline, F> },
        Plain { #[pin] future: F },
    }
}

impl<F: Future> Future for Inner<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project() {
            InnerProj::Scoped { future } => future.poll(cx),
            InnerProj::Plain { future } => future.poll(cx),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("deadline", &self.sleep.as_ref().map(|s| s.deadline()))
            .field("reply", &self.reply)
            .field("grpc", &self.grpc)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<DeadlineBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(reply) = this.reply.take() {
            return Poll::Ready(Ok(reply.into_response(*this.grpc)));
        }
        if let Some(inner) = this.inner.as_mut().as_pin_mut()
            && let Poll::Ready(result) = inner.poll(cx)
        {
            this.inner.set(None);
            let deadline = *this.deadline;
            return Poll::Ready(result.map(|res| res.map(|body| DeadlineBody::Inner { body, deadline })));
        }
        if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
            ready!(sleep.poll(cx));
            // Cancel the work now, not when the caller drops this future.
            this.inner.set(None);
            this.sleep.set(None);
            this.shared.exceeded_total.increment(1);
            tracing::debug!(target: names::TARGET, name = &*this.shared.name, grpc = *this.grpc, "deadline exceeded: the call was cancelled");
            return Poll::Ready(Ok(Reply::Exceeded.into_response(*this.grpc)));
        }
        Poll::Pending
    }
}

pin_project! {
    /// The response future of [`PropagateDeadline`](crate::PropagateDeadline):
    /// the inner call bounded by the attempt's timeout.
    pub struct PropagateFuture<F> {
        #[pin]
        inner: Option<F>,
        #[pin]
        sleep: Option<Sleep>,
        // The attempt's timeout is the deadline's, not its own.
        by_deadline: bool,
        shared: Arc<Client>,
    }
}

impl<F> PropagateFuture<F> {
    pub(crate) fn called(inner: F, bound: Option<(tokio::time::Instant, bool)>, shared: Arc<Client>) -> Self {
        Self {
            inner: Some(inner),
            sleep: bound.map(|(at, _)| tokio::time::sleep_until(at)),
            by_deadline: bound.is_some_and(|(_, by_deadline)| by_deadline),
            shared,
        }
    }

    /// No time is left for the attempt: it fails without being sent.
    pub(crate) fn exceeded(shared: Arc<Client>) -> Self {
        Self {
            inner: None,
            sleep: None,
            by_deadline: true,
            shared,
        }
    }
}

impl<F> fmt::Debug for PropagateFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PropagateFuture")
            .field("deadline", &self.sleep.as_ref().map(|s| s.deadline()))
            .field("by_deadline", &self.by_deadline)
            .finish_non_exhaustive()
    }
}

/// How early before this layer's bound a downstream enforcing the budget it
/// was sent may give up: the budget goes out rounded down, to whole
/// milliseconds on HTTP.
const SENT_ROUNDED_DOWN: Duration = Duration::from_millis(1);

/// A downstream's answer that its budget passed: `504 Gateway Timeout`, or
/// gRPC's `DEADLINE_EXCEEDED` in a trailers-only response.
fn deadline_answer<B>(res: &Response<B>) -> bool {
    res.status() == StatusCode::GATEWAY_TIMEOUT || res.headers().get("grpc-status").is_some_and(|code| code == "4")
}

impl<F, B, E> Future for PropagateFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(Err(this.shared.exceeded()));
        };
        if let Poll::Ready(result) = inner.poll(cx) {
            this.inner.set(None);
            // A downstream enforcing the budget it was sent (a tonic channel
            // its `grpc-timeout`, a palisade server its header) fails, or
            // answers that the budget passed, at this future's own bound:
            // when that bound is the deadline's, so is the cut. Any error
            // there is taken for it, since the downstream's timeout error
            // may be of a type palisade does not know (tonic's
            // `TimeoutExpired`), and the deadline is over in any case.
            let at_bound = *this.by_deadline
                && this
                    .sleep
                    .as_ref()
                    .as_pin_ref()
                    .is_some_and(|sleep| sleep.deadline() <= tokio::time::Instant::now() + SENT_ROUNDED_DOWN);
            return Poll::Ready(match result {
                Ok(res) if at_bound && deadline_answer(&res) => Err(this.shared.exceeded()),
                Ok(res) => Ok(res),
                Err(_) if at_bound => Err(this.shared.exceeded()),
                Err(e) => Err(e.into()),
            });
        }
        if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
            ready!(sleep.poll(cx));
            this.inner.set(None);
            this.sleep.set(None);
            if *this.by_deadline {
                return Poll::Ready(Err(this.shared.exceeded()));
            }
            return Poll::Ready(Err(tower::timeout::error::Elapsed::new().into()));
        }
        Poll::Pending
    }
}

impl Client {
    fn exceeded(&self) -> BoxError {
        self.exceeded_total.increment(1);
        tracing::debug!(target: names::TARGET, name = &*self.name, "deadline exceeded: the call was not sent or was cancelled");
        DeadlineExceeded.into()
    }
}
