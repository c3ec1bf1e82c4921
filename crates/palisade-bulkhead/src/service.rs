//! The bulkhead services: one compartment, or one per key.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use palisade_core::Classify;
use tower_service::Service;

use crate::compartments::Compartments;
use crate::future::{GateRef, ResponseFuture};
use crate::gate::Gate;
use crate::release::PermitRelease;
use crate::sync::Arc;
use palisade_core::events::LayerEvent;
use palisade_core::{BoxError, BulkheadFull};

/// A service behind one bulkhead compartment; made by
/// [`BulkheadLayer`](crate::BulkheadLayer).
///
/// `poll_ready` only drives the inner service's readiness: the permit is
/// taken when the response future runs, so servers that do not wait in
/// `poll_ready` (axum, hyper) are limited too.
pub struct Bulkhead<S, C, M> {
    inner: S,
    gate: Arc<Gate>,
    classifier: C,
    release: PhantomData<fn() -> M>,
}

impl<S, C, M> Bulkhead<S, C, M> {
    pub(crate) fn new(inner: S, gate: Arc<Gate>, classifier: C) -> Self {
        Self {
            inner,
            gate,
            classifier,
            release: PhantomData,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, taking the bulkhead apart.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone, M> Clone for Bulkhead<S, C, M> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), Arc::clone(&self.gate), self.classifier.clone())
    }
}

impl<S: fmt::Debug, C, M> fmt::Debug for Bulkhead<S, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("inner", &self.inner)
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

impl<S, Req, C, M> Service<Req> for Bulkhead<S, C, M>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response> + Clone,
    M: PermitRelease<S::Response>,
{
    type Response = M::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    // Inlined, with `ResponseFuture::start`, so that the caller's future is
    // built where the caller keeps it, not copied there.
    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture::start(Ok(GateRef::Shared(&self.gate)), &mut self.inner, req, &self.classifier)
    }
}

/// A service behind one bulkhead compartment per key of the request; made by
/// [`KeyedBulkheadLayer`](crate::KeyedBulkheadLayer).
pub struct KeyedBulkhead<S, K, F, C, M> {
    inner: S,
    compartments: Arc<Compartments<K>>,
    key: F,
    classifier: C,
    release: PhantomData<fn() -> M>,
}

impl<S, K, F, C, M> KeyedBulkhead<S, K, F, C, M> {
    pub(crate) fn new(inner: S, compartments: Arc<Compartments<K>>, key: F, classifier: C) -> Self {
        Self {
            inner,
            compartments,
            key,
            classifier,
            release: PhantomData,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, taking the bulkhead apart.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, K, F: Clone, C: Clone, M> Clone for KeyedBulkhead<S, K, F, C, M> {
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            Arc::clone(&self.compartments),
            self.key.clone(),
            self.classifier.clone(),
        )
    }
}

impl<S: fmt::Debug, K, F, C, M> fmt::Debug for KeyedBulkhead<S, K, F, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBulkhead")
            .field("inner", &self.inner)
            .field("compartments", &self.compartments)
            .finish_non_exhaustive()
    }
}

impl<S, Req, K, F, C, M> Service<Req> for KeyedBulkhead<S, K, F, C, M>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: Hash + Eq,
    F: Fn(&Req) -> K,
    C: Classify<S::Response> + Clone,
    M: PermitRelease<S::Response>,
{
    type Response = M::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    // Inlined for the reason `Bulkhead::call` is.
    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let key = (self.key)(&req);
        let gate = match self.compartments.gate(key) {
            Some(gate) => Ok(GateRef::Owned(gate)),
            None => Err(rejected_keys(&self.compartments)),
        };
        ResponseFuture::start(gate, &mut self.inner, req, &self.classifier)
    }
}

/// The rejection of a call whose key found no compartment: the keyed
/// bulkhead keeps as many busy keys as it may.
#[inline(never)]
fn rejected_keys<K>(compartments: &Compartments<K>) -> BulkheadFull {
    let settings = compartments.settings();
    compartments.metrics.rejected_full();
    tracing::debug!(
        target: palisade_core::telemetry::bulkhead::TARGET,
        name = %settings.name,
        reason = "keys",
        "keyed bulkhead keeps as many busy keys as it may; rejected a call"
    );
    settings.events.emit(|| LayerEvent::BulkheadRejected {
        name: &settings.name,
        reason: "full",
    });
    BulkheadFull::new(std::sync::Arc::clone(&settings.name), settings.retry_after)
}
