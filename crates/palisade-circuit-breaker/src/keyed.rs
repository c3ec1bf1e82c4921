//! Keyed mode: one breaker per key computed from the request, with a bound on
//! how many keys are kept.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, Classify, ErrorClassifier};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::Breaker;
use crate::config::Config;
use crate::future::ResponseFuture;
use crate::handle::{CircuitBreakerHandle, State};
use crate::service::dispatch;
use crate::telemetry::{CallCounters, KeyStates, StateGauge};

/// The breakers of a keyed layer, shared by every service it makes.
struct Registry<K> {
    config: Arc<Config>,
    calls: CallCounters,
    states: Arc<KeyStates>,
    breakers: RwLock<HashMap<K, Arc<Breaker>>>,
    max_keys: usize,
    idle_nanos: u64,
    base: Instant,
}

impl<K: Hash + Eq + Clone + fmt::Display> Registry<K> {
    fn now_nanos(&self) -> u64 {
        u64::try_from(Instant::now().saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Drops the keys idle at `now`.
    fn retain_active(&self, breakers: &mut HashMap<K, Arc<Breaker>>, now: u64) {
        breakers.retain(|_, b| {
            let active = now.saturating_sub(b.last_used()) < self.idle_nanos;
            if !active {
                b.forget();
            }
            active
        });
    }

    /// The key's breaker, made (and room made for it) when the key is new.
    fn breaker(&self, key: K) -> Arc<Breaker> {
        let now = self.now_nanos();
        if let Some(breaker) = self.breakers.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
            breaker.touch(now);
            return breaker.clone();
        }
        let mut breakers = self.breakers.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(breaker) = breakers.get(&key) {
            breaker.touch(now);
            return breaker.clone();
        }
        if breakers.len() >= self.max_keys {
            self.retain_active(&mut breakers, now);
        }
        if breakers.len() >= self.max_keys {
            // Closed breakers go first: evicting an open one would forget an outage.
            let victim = breakers
                .iter()
                .min_by_key(|(_, b)| (b.snapshot().state == State::Open, b.last_used()))
                .map(|(k, _)| k.clone());
            if let Some(victim) = victim.and_then(|victim| breakers.remove(&victim)) {
                victim.forget();
            }
        }
        let name: Arc<str> = format!("{}[{key}]", self.config.name).into();
        let gauge = StateGauge::key(&self.states);
        let breaker = Arc::new(Breaker::new(self.config.clone(), name, self.calls.clone(), gauge));
        breaker.touch(now);
        breakers.insert(key, breaker.clone());
        breaker
    }

    fn evict_idle(&self) -> usize {
        let now = self.now_nanos();
        let mut breakers = self.breakers.write().unwrap_or_else(PoisonError::into_inner);
        let before = breakers.len();
        self.retain_active(&mut breakers, now);
        before - breakers.len()
    }
}

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
        let calls = CallCounters::new(&config.name);
        let states = Arc::new(KeyStates::new(&config.name));
        let registry = Registry {
            config,
            calls,
            states,
            breakers: RwLock::new(HashMap::new()),
            max_keys,
            idle_nanos: u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX),
            base: Instant::now(),
        };
        Self {
            registry: Arc::new(registry),
            key,
            classifier,
        }
    }

    /// The handle of this layer's breakers.
    pub fn handle(&self) -> KeyedCircuitBreakerHandle<K> {
        KeyedCircuitBreakerHandle {
            registry: self.registry.clone(),
        }
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
            .field("config", &self.registry.config)
            .field("max_keys", &self.registry.max_keys)
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
        KeyedCircuitBreakerHandle {
            registry: self.registry.clone(),
        }
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
            .field("name", &self.registry.config.name)
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
    C: Classify<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let breaker = self.registry.breaker((self.key)(&req));
        dispatch(&mut self.inner, req, breaker.admit_owned(), &self.classifier)
    }
}

/// Reports and controls the breakers of a keyed layer.
pub struct KeyedCircuitBreakerHandle<K> {
    registry: Arc<Registry<K>>,
}

impl<K> Clone for KeyedCircuitBreakerHandle<K> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedCircuitBreakerHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerHandle")
            .field("name", &self.registry.config.name)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone + fmt::Display> KeyedCircuitBreakerHandle<K> {
    /// The handle of `key`'s breaker, if the key is kept.
    pub fn get(&self, key: &K) -> Option<CircuitBreakerHandle> {
        let breakers = self.registry.breakers.read().unwrap_or_else(PoisonError::into_inner);
        breakers.get(key).map(|b| CircuitBreakerHandle::new(b.clone()))
    }

    /// The keys kept now.
    pub fn keys(&self) -> Vec<K> {
        self.registry
            .breakers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// How many keys are kept.
    pub fn len(&self) -> usize {
        self.registry
            .breakers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when no key is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the keys idle for longer than the idle timeout now (new keys do
    /// this when the bound is reached); returns how many went.
    pub fn evict_idle(&self) -> usize {
        self.registry.evict_idle()
    }
}
