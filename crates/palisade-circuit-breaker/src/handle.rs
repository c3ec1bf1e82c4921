//! Run-time view and control of a breaker, and of a keyed layer's breakers.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use crate::breaker::Breaker;
use crate::registry::Registry;
use crate::state::{Snapshot, State};

/// Reports and controls one breaker at run time; cheap to clone.
///
/// Get it from [`CircuitBreakerLayer::handle`](crate::CircuitBreakerLayer::handle)
/// or [`CircuitBreaker::handle`](crate::CircuitBreaker::handle).
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    breaker: Arc<Breaker>,
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("name", self.breaker.name())
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerHandle {
    pub(crate) fn new(breaker: Arc<Breaker>) -> Self {
        Self { breaker }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        self.breaker.name()
    }

    /// The state now.
    pub fn state(&self) -> State {
        self.breaker.snapshot().state
    }

    /// The state and the window's figures now.
    pub fn snapshot(&self) -> Snapshot {
        self.breaker.snapshot()
    }

    /// Closes the breaker and forgets every recorded call and trip; also the
    /// way back from an operator state.
    pub fn reset(&self) {
        self.breaker.force(State::Closed);
    }

    /// Lets every call through and records nothing, until [`reset`](Self::reset).
    pub fn disable(&self) {
        self.breaker.force(State::Disabled);
    }

    /// Rejects every call, until [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.breaker.force(State::ForcedOpen);
    }

    /// Lets every call through and records outcomes for the snapshot, without
    /// ever opening, until [`reset`](Self::reset).
    pub fn metrics_only(&self) {
        self.breaker.force(State::MetricsOnly);
    }
}

/// Reports and controls the breakers of a keyed layer.
pub struct KeyedCircuitBreakerHandle<K> {
    registry: Arc<Registry<K>>,
}

impl<K> KeyedCircuitBreakerHandle<K> {
    pub(crate) fn new(registry: Arc<Registry<K>>) -> Self {
        Self { registry }
    }
}

impl<K> Clone for KeyedCircuitBreakerHandle<K> {
    fn clone(&self) -> Self {
        Self::new(self.registry.clone())
    }
}

impl<K> fmt::Debug for KeyedCircuitBreakerHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerHandle")
            .field("name", &self.registry.config().name)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone + fmt::Display> KeyedCircuitBreakerHandle<K> {
    /// The handle of `key`'s breaker, if the key is kept.
    pub fn get(&self, key: &K) -> Option<CircuitBreakerHandle> {
        self.registry.get(key).map(CircuitBreakerHandle::new)
    }

    /// The keys kept now.
    pub fn keys(&self) -> Vec<K> {
        self.registry.keys()
    }

    /// How many keys are kept.
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    /// True when no key is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the keys idle for longer than the idle timeout now (a new key
    /// does this when the bound is reached); returns how many went.
    ///
    /// Keys used since the previous sweep are dated to this one, so calling
    /// this periodically bounds how late an idle key is found: one period.
    /// A key in use is never dropped as idle: one looked up since the
    /// timeout began, one with a call in flight, one whose breaker a
    /// [`get`](Self::get) handle still holds.
    pub fn evict_idle(&self) -> usize {
        self.registry.evict_idle()
    }
}
