//! The breaker service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{BoxError, Classify, ErrorClassifier};
use tower_service::Service;

use crate::breaker::{Admission, Breaker};
use crate::future::ResponseFuture;
use crate::handle::CircuitBreakerHandle;

/// Fails calls fast while its downstream is failing; see the crate docs.
///
/// Every clone shares one breaker state. The admission decided in
/// `poll_ready` (a reserved half-open probe slot included) belongs to this
/// clone only and is spent by the next `call`.
pub struct CircuitBreaker<S, C = ErrorClassifier> {
    inner: S,
    breaker: Arc<Breaker>,
    classifier: C,
    /// The closed epoch `poll_ready` admitted the next call in, or [`NO_EPOCH`]:
    /// the hot path keeps a plain integer rather than a recorder.
    closed_epoch: u64,
    /// Any other admission `poll_ready` decided (a reserved probe slot, a rejection).
    admission: Option<Admission>,
}

const NO_EPOCH: u64 = u64::MAX;

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn new(inner: S, breaker: Arc<Breaker>, classifier: C) -> Self {
        Self {
            inner,
            breaker,
            classifier,
            closed_epoch: NO_EPOCH,
            admission: None,
        }
    }

    /// The handle of the breaker this service shares.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(self.breaker.clone())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the breaker, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.breaker.clone(), self.classifier.clone())
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("name", self.breaker.name())
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.closed_epoch == NO_EPOCH {
            // A stale rejection is decided again: the breaker may have half-opened since.
            if matches!(self.admission, None | Some(Admission::Reject(_))) {
                match self.breaker.closed_epoch() {
                    Some(epoch) => self.closed_epoch = epoch,
                    None => self.admission = Some(self.breaker.admit()),
                }
            }
            if let Some(Admission::Reject(_)) = self.admission {
                // Fail fast without waiting for the inner service's readiness.
                return Poll::Ready(Ok(()));
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let admission = if self.closed_epoch != NO_EPOCH {
            Admission::Admit(
                self.breaker
                    .closed_recorder(std::mem::replace(&mut self.closed_epoch, NO_EPOCH)),
            )
        } else {
            self.admission.take().unwrap_or_else(|| self.breaker.admit())
        };
        dispatch(&mut self.inner, req, admission, &self.classifier)
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
