//! The shared state of a keyed layer: one breaker per key, with a bound on
//! how many keys are kept.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::Breaker;
use crate::config::Config;
use crate::state::State;
use crate::telemetry::{CallCounters, KeyStates, StateGauge};

/// The breakers of a keyed layer, shared by every service it makes.
pub(crate) struct Registry<K> {
    config: Arc<Config>,
    calls: CallCounters,
    states: Arc<KeyStates>,
    breakers: RwLock<HashMap<K, Arc<Breaker>>>,
    max_keys: usize,
    idle_nanos: u64,
    base: Instant,
}

impl<K> Registry<K> {
    /// An empty registry; registers the layer's metrics.
    pub(crate) fn new(config: Arc<Config>, max_keys: usize, idle: Duration) -> Self {
        let calls = CallCounters::new(&config.name);
        let states = Arc::new(KeyStates::new(&config.name));
        Self {
            config,
            calls,
            states,
            breakers: RwLock::new(HashMap::new()),
            max_keys,
            idle_nanos: u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX),
            base: Instant::now(),
        }
    }

    /// The configuration every key's breaker runs with.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// How many keys are kept at most.
    pub(crate) fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// How many keys are kept.
    pub(crate) fn len(&self) -> usize {
        self.breakers.read().unwrap_or_else(PoisonError::into_inner).len()
    }
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
    pub(crate) fn breaker(&self, key: K) -> Arc<Breaker> {
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

    /// The breaker of `key`, if it is kept.
    pub(crate) fn get(&self, key: &K) -> Option<Arc<Breaker>> {
        self.breakers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// The keys kept now.
    pub(crate) fn keys(&self) -> Vec<K> {
        self.breakers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Drops the keys idle for longer than the idle timeout; returns how many went.
    pub(crate) fn evict_idle(&self) -> usize {
        let now = self.now_nanos();
        let mut breakers = self.breakers.write().unwrap_or_else(PoisonError::into_inner);
        let before = breakers.len();
        self.retain_active(&mut breakers, now);
        before - breakers.len()
    }
}
