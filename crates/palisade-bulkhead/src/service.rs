//! The bulkhead services: one compartment, or one per key.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::RwLock;
use std::task::{Context, Poll};

use palisade_core::Classify;
use tower_service::Service;

use crate::error::{BoxError, BulkheadFull};
use crate::future::{GateRef, PermitRelease, ResponseFuture};
use crate::gate::{Gate, GateMetrics, Settings};
use crate::layer::LimitConfig;
use crate::sync::{Arc, AtomicUsize, Ordering::SeqCst};

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

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture::start(GateRef::Shared(&self.gate), &mut self.inner, req, &self.classifier)
    }
}

/// The compartments of a keyed bulkhead, created on first use of a key.
pub(crate) struct Compartments<K> {
    map: RwLock<HashMap<K, Arc<Gate>>>,
    settings: std::sync::Arc<Settings>,
    limit: LimitConfig,
    /// The per-key limit of a fixed bulkhead, changed by its handle.
    fixed_limit: AtomicUsize,
    max_keys: usize,
    pub(crate) metrics: GateMetrics,
}

impl<K> Compartments<K> {
    pub(crate) fn new(settings: std::sync::Arc<Settings>, limit: LimitConfig, max_keys: usize) -> Self {
        let metrics = GateMetrics::register(&settings.name);
        let fixed_limit = AtomicUsize::new(match &limit {
            LimitConfig::Fixed(limit) => *limit,
            LimitConfig::Adaptive(_) => 0,
        });
        Self {
            map: RwLock::new(HashMap::new()),
            settings,
            limit,
            fixed_limit,
            max_keys,
            metrics,
        }
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn is_adaptive(&self) -> bool {
        matches!(self.limit, LimitConfig::Adaptive(_))
    }

    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<K, Arc<Gate>>> {
        self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the per-key limit of a fixed keyed bulkhead, for every key.
    pub(crate) fn set_fixed_limit(&self, limit: usize) {
        let map = self.read();
        self.fixed_limit.store(limit, SeqCst);
        for gate in map.values() {
            gate.set_limit(limit);
        }
    }
}

impl<K: Hash + Eq> Compartments<K> {
    /// The compartment of `key`, created if needed. `None` when the bulkhead
    /// keeps `max_keys` keys and every one of them is in use.
    fn gate(&self, key: K) -> Option<Arc<Gate>> {
        if let Some(gate) = self.read().get(&key) {
            return Some(Arc::clone(gate));
        }
        let mut map = self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(gate) = map.get(&key) {
            return Some(Arc::clone(gate));
        }
        if map.len() >= self.max_keys {
            // Under the write lock nobody can pick up a compartment only the
            // map holds: forgetting it loses nothing but a learned limit.
            map.retain(|_, gate| Arc::strong_count(gate) > 1);
            if map.len() >= self.max_keys {
                return None;
            }
        }
        let (limit, adaptive) = match &self.limit {
            LimitConfig::Fixed(_) => (self.fixed_limit.load(SeqCst), None),
            LimitConfig::Adaptive(make) => (0, Some(make())),
        };
        let gate = Arc::new(Gate::new(
            std::sync::Arc::clone(&self.settings),
            limit,
            adaptive,
            self.metrics.clone(),
        ));
        map.insert(key, Arc::clone(&gate));
        Some(gate)
    }
}

impl<K> fmt::Debug for Compartments<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compartments")
            .field("name", &self.settings.name)
            .field("keys", &self.read().len())
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
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

    fn call(&mut self, req: Req) -> Self::Future {
        let key = (self.key)(&req);
        match self.compartments.gate(key) {
            Some(gate) => ResponseFuture::start(GateRef::Owned(gate), &mut self.inner, req, &self.classifier),
            None => {
                let settings = self.compartments.settings();
                self.compartments.metrics.rejected_full();
                tracing::debug!(
                    target: palisade_core::telemetry::bulkhead::TARGET,
                    name = %settings.name,
                    reason = "keys",
                    "keyed bulkhead keeps as many busy keys as it may; rejected a call"
                );
                let full = BulkheadFull::new(std::sync::Arc::clone(&settings.name), settings.retry_after);
                ResponseFuture::rejected(full, &self.classifier)
            }
        }
    }
}
