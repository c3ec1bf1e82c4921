//! Keyed mode: one breaker per key computed from the request, with a bound on
//! how many keys are kept.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::eos::Judge;
use palisade_core::{BoxError, ErrorClassifier};
use tower_layer::Layer;
use tower_service::Service;

use crate::config::Config;
use crate::future::{Record, ResponseFuture, called_closed, dispatch};
use crate::handle::KeyedCircuitBreakerHandle;
use crate::registry::Registry;

/// Wraps services in a [`KeyedCircuitBreaker`]: one breaker per key.
///
/// Built by [`CircuitBreakerBuilder::build_keyed`](crate::CircuitBreakerBuilder::build_keyed).
pub struct KeyedCircuitBreakerLayer<K, F, C = ErrorClassifier> {
    registry: Arc<Registry<K>>,
    key: F,
    classifier: C,
}

impl<K, F, C> KeyedCircuitBreakerLayer<K, F, C> {
    pub(crate) fn from_config(config: Arc<Config>, classifier: C, key: F, max_keys: usize, idle: Duration) -> Self {
        Self {
            registry: Arc::new(Registry::new(config, max_keys, idle)),
            key,
            classifier,
        }
    }

    /// The handle of this layer's breakers.
    pub fn handle(&self) -> KeyedCircuitBreakerHandle<K> {
        KeyedCircuitBreakerHandle::new(self.registry.clone())
    }
}

impl<K, F: Clone, C: Clone> Clone for KeyedCircuitBreakerLayer<K, F, C> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<K, F, C: fmt::Debug> fmt::Debug for KeyedCircuitBreakerLayer<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("config", self.registry.config())
            .field("max_keys", &self.registry.max_keys())
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

impl<S, K, F: Clone, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<K, F, C> {
    type Service = KeyedCircuitBreaker<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            registry: self.registry.clone(),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// A circuit breaker per key of the request; see the crate docs.
///
/// The key is known only once the request is, so admission is decided in
/// `call`: `poll_ready` waits for the inner service alone.
pub struct KeyedCircuitBreaker<S, K, F, C = ErrorClassifier> {
    inner: S,
    registry: Arc<Registry<K>>,
    key: F,
    classifier: C,
}

impl<S, K, F, C> KeyedCircuitBreaker<S, K, F, C> {
    /// The handle of the breakers this service shares.
    pub fn handle(&self) -> KeyedCircuitBreakerHandle<K> {
        KeyedCircuitBreakerHandle::new(self.registry.clone())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, K, F: Clone, C: Clone> Clone for KeyedCircuitBreaker<S, K, F, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            registry: self.registry.clone(),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: fmt::Debug, K, F, C: fmt::Debug> fmt::Debug for KeyedCircuitBreaker<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .field("name", &self.registry.config().name)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

impl<S, K, F, C, Req> Service<Req> for KeyedCircuitBreaker<S, K, F, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone + fmt::Display,
    F: Fn(&Req) -> K,
    C: Judge<S::Response> + Clone,
{
    type Response = C::Response<Record>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    // Inlined for the reason `CircuitBreaker::call` is.
    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let breaker = self.registry.breaker((self.key)(&req));
        match breaker.closed_epoch() {
            Some(epoch) => called_closed(&mut self.inner, req, breaker, epoch, &self.classifier),
            None => dispatch(&mut self.inner, req, breaker.admit(), &self.classifier),
        }
    }
}
