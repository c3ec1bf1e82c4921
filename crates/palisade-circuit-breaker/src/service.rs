//! The breaker service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use palisade_core::eos::Judge;
use palisade_core::{BoxError, ErrorClassifier};
use tower_service::Service;

use crate::breaker::{Breaker, Recorder};
use crate::future::{Record, ResponseFuture, called_closed, dispatch};
use crate::handle::CircuitBreakerHandle;

/// Fails calls fast while its downstream is failing; see the crate docs.
///
/// Every clone shares one breaker state. Admission is decided in `call`,
/// against the breaker's state at that moment; `poll_ready` only decides
/// whether to wait for the inner service, and in half-open reserves the probe
/// slot the next `call` of this clone uses (a clone does not share it).
pub struct CircuitBreaker<S, C = ErrorClassifier> {
    inner: S,
    breaker: Arc<Breaker>,
    classifier: C,
    /// What `poll_ready` answered since the last `call`.
    readiness: Readiness,
    /// The half-open probe slot `poll_ready` reserved, given back on drop.
    probe: Option<Recorder>,
}

/// What `poll_ready` answered since the last `call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    /// Not ready yet.
    Unready,
    /// The inner service is ready: the call is decided against the state then.
    Inner,
    /// Ready at once because the breaker rejected: the call is rejected,
    /// since the inner service was never made ready for it.
    Rejecting,
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn new(inner: S, breaker: Arc<Breaker>, classifier: C) -> Self {
        Self {
            inner,
            breaker,
            classifier,
            readiness: Readiness::Unready,
            probe: None,
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
    C: Judge<S::Response> + Clone,
{
    type Response = C::Response<Record>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.readiness != Readiness::Unready {
            // Once ready, ready until the call.
            return Poll::Ready(Ok(()));
        }
        if !self.breaker.gate(&mut self.probe) {
            // Fail fast without waiting for the inner service's readiness.
            self.readiness = Readiness::Rejecting;
            return Poll::Ready(Ok(()));
        }
        if let Err(err) = ready!(self.inner.poll_ready(cx)) {
            self.probe = None;
            return Poll::Ready(Err(err.into()));
        }
        self.readiness = Readiness::Inner;
        Poll::Ready(Ok(()))
    }

    // Inlined, so that the caller's future is built where the caller keeps
    // it, not copied there with wide loads that wait on the stores that have
    // just built it.
    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let admission = match std::mem::replace(&mut self.readiness, Readiness::Unready) {
            Readiness::Rejecting => self.breaker.reject_unready(),
            Readiness::Inner | Readiness::Unready => match self.probe.take() {
                None => match self.breaker.closed_epoch() {
                    Some(epoch) => {
                        let breaker = self.breaker.clone();
                        return called_closed(&mut self.inner, req, breaker, epoch, &self.classifier);
                    }
                    None => self.breaker.admit(),
                },
                Some(probe) => self.breaker.admit_probe(probe),
            },
        };
        dispatch(&mut self.inner, req, admission, &self.classifier)
    }
}
