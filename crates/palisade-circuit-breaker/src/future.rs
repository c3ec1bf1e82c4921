//! The breaker's response future, and how a call is sent (or rejected) by its admission.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use palisade_core::eos::{Judge, Settle};
use palisade_core::{BoxError, CircuitOpen, Outcome};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::breaker::{Admission, Breaker, Recorder};

pin_project! {
    /// The response future of [`CircuitBreaker`](crate::CircuitBreaker) and
    /// [`KeyedCircuitBreaker`](crate::KeyedCircuitBreaker): the inner call,
    /// whose outcome it records when it completes (or, with a classifier that
    /// judges at the end of the stream, when the response body ends), or a
    /// rejection.
    ///
    /// Dropped before completion it records nothing and gives a half-open
    /// probe slot back.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        classifier: C,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called { #[pin] future: F, record: Record },
        Passed { #[pin] future: F },
        Rejected { error: CircuitOpen },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, recorder: Recorder, classifier: C) -> Self {
        Self {
            kind: Kind::Called {
                future,
                record: Record(Some(recorder)),
            },
            classifier,
        }
    }

    pub(crate) fn passed(future: F, classifier: C) -> Self {
        Self {
            kind: Kind::Passed { future },
            classifier,
        }
    }

    pub(crate) fn rejected(error: CircuitOpen, classifier: C) -> Self {
        Self {
            kind: Kind::Rejected { error },
            classifier,
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Passed { .. } => "passed",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Judge<T>,
{
    type Output = Result<C::Response<Record>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { future, record } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                Poll::Ready(this.classifier.judge(result, record))
            }
            KindProj::Passed { future } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                Poll::Ready(this.classifier.judge(result, &mut Record(None)))
            }
            KindProj::Rejected { error } => Poll::Ready(Err(Box::new(error.clone()))),
        }
    }
}

/// Where an admitted call's outcome goes: into the breaker that admitted it.
///
/// A classifier records into it when the call completes, or, wrapped in
/// [`AtEos`](palisade_core::eos::AtEos), a response body carries it and
/// records when the stream ends. Dropped unrecorded (a cancelled call, a body
/// dropped before its end) it counts as neither success nor failure and
/// gives a half-open probe slot back. The default records nowhere.
#[derive(Debug, Default)]
pub struct Record(Option<Recorder>);

impl Settle for Record {
    #[inline]
    fn settle(&mut self, outcome: Outcome) {
        if let Some(recorder) = &mut self.0 {
            recorder.finish(outcome);
        }
    }
}

/// Sends or rejects one call according to its admission.
#[inline]
pub(crate) fn dispatch<S, C, Req>(
    inner: &mut S,
    req: Req,
    admission: Admission,
    classifier: &C,
) -> ResponseFuture<S::Future, C>
where
    S: Service<Req>,
    C: Clone,
{
    match admission {
        Admission::Pass => ResponseFuture::passed(inner.call(req), classifier.clone()),
        Admission::Admit(recorder) => called(inner, req, recorder, classifier),
        Admission::Reject(open) => ResponseFuture::rejected(open, classifier.clone()),
    }
}

/// Sends a call the breaker admitted while closed in `epoch`.
#[inline]
pub(crate) fn called_closed<S, C, Req>(
    inner: &mut S,
    req: Req,
    breaker: Arc<Breaker>,
    epoch: u64,
    classifier: &C,
) -> ResponseFuture<S::Future, C>
where
    S: Service<Req>,
    C: Clone,
{
    let start = breaker.call_start();
    let future = inner.call(req);
    ResponseFuture::called(future, Recorder::sent(breaker, epoch, start), classifier.clone())
}

/// Sends an admitted call, its outcome recorded by `recorder`.
#[inline]
pub(crate) fn called<S, C, Req>(
    inner: &mut S,
    req: Req,
    recorder: Recorder,
    classifier: &C,
) -> ResponseFuture<S::Future, C>
where
    S: Service<Req>,
    C: Clone,
{
    ResponseFuture::called(inner.call(req), recorder, classifier.clone())
}
