//! The breaker's response future, and how a call is sent (or rejected) by its admission.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use palisade_core::{AsError, BoxError, CircuitOpen, Classify};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::breaker::{Admission, Recorder};

pin_project! {
    /// The response future of [`CircuitBreaker`](crate::CircuitBreaker) and
    /// [`KeyedCircuitBreaker`](crate::KeyedCircuitBreaker): the inner call,
    /// whose outcome it records when it completes, or a rejection.
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
        Called { #[pin] future: F, recorder: Recorder },
        Passed { #[pin] future: F },
        Rejected { error: CircuitOpen },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, recorder: Recorder, classifier: C) -> Self {
        Self {
            kind: Kind::Called { future, recorder },
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
    C: Classify<T>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { future, recorder } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                recorder.finish(this.classifier.classify(result.as_ref().map_err(AsError::as_error)));
                Poll::Ready(result)
            }
            KindProj::Passed { future } => future.poll(cx).map_err(Into::into),
            KindProj::Rejected { error } => Poll::Ready(Err(Box::new(error.clone()))),
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
        Admission::Admit(mut recorder) => {
            recorder.started();
            ResponseFuture::called(inner.call(req), recorder, classifier.clone())
        }
        Admission::Reject(open) => ResponseFuture::rejected(open, classifier.clone()),
    }
}
