//! The shared state of a keyed layer: one breaker per key, in palisade-core's
//! bounded [`KeyedMap`].

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::keyed::{Eviction, KeyedMap};

use crate::breaker::Breaker;
use crate::config::Config;
use crate::state::State;
use crate::telemetry::{CallCounters, KeyStates, StateGauge};

/// The breakers of a keyed layer, shared by every service it makes.
pub(crate) struct Registry<K> {
    config: Arc<Config>,
    calls: CallCounters,
    states: Arc<KeyStates>,
    breakers: KeyedMap<K, Arc<Breaker>>,
}

impl<K> Registry<K> {
    /// An empty registry; registers the layer's metrics. When a new key needs
    /// room, idle keys go first, then the least recently used closed breaker:
    /// evicting another would forget an outage (open), a recovery under way
    /// (half-open) or what an operator set (forced open, disabled, metrics
    /// only). For the same reason an idle key is kept while its breaker is
    /// neither closed nor open past its open time: callers told to come back
    /// later do not call meanwhile. Nor is a key idle while its breaker is
    /// held elsewhere, by a call in flight (whose outcome it is to record) or
    /// a handle, however long ago the key was looked up.
    pub(crate) fn new(config: Arc<Config>, max_keys: usize, idle: Duration) -> Self {
        let calls = CallCounters::new(&config.name, config.call_durations);
        let states = Arc::new(KeyStates::new(&config.name));
        let eviction = Eviction::least_recently_used(idle, |b: &Arc<Breaker>| b.snapshot().state != State::Closed)
            .keep_idle(|b| {
                if Arc::strong_count(b) > 1 {
                    return true;
                }
                let snapshot = b.snapshot();
                match snapshot.state {
                    State::Closed => false,
                    State::Open => snapshot.time_until_half_open.is_some_and(|left| !left.is_zero()),
                    _ => true,
                }
            })
            .on_evict(|b| b.forget());
        Self {
            config,
            calls,
            states,
            breakers: KeyedMap::new(max_keys, eviction),
        }
    }

    /// The configuration every key's breaker runs with.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// How many keys are kept at most.
    pub(crate) fn max_keys(&self) -> usize {
        self.breakers.max_keys()
    }

    /// How many keys are kept.
    pub(crate) fn len(&self) -> usize {
        self.breakers.len()
    }

    /// Drops the keys idle for longer than the idle timeout; returns how many went.
    pub(crate) fn evict_idle(&self) -> usize {
        self.breakers.evict_idle()
    }
}

impl<K: Hash + Eq + Clone + fmt::Display> Registry<K> {
    /// The key's breaker, made (and room made for it) when the key is new.
    pub(crate) fn breaker(&self, key: K) -> Arc<Breaker> {
        let made = self.breakers.get_or_insert_with(key, |key| {
            let name: Arc<str> = format!("{}[{key}]", self.config.name).into();
            let gauge = StateGauge::key(&self.states);
            Arc::new(Breaker::new(self.config.clone(), name, self.calls.clone(), gauge))
        });
        // Least-recently-used eviction always makes room.
        made.unwrap_or_else(|| unreachable!("a least-recently-used map never refuses a key"))
    }

    /// The breaker of `key`, if it is kept.
    pub(crate) fn get(&self, key: &K) -> Option<Arc<Breaker>> {
        self.breakers.get(key)
    }

    /// The keys kept now.
    pub(crate) fn keys(&self) -> Vec<K> {
        let mut keys = Vec::with_capacity(self.breakers.len());
        self.breakers.for_each(|key, _| keys.push(key.clone()));
        keys
    }
}
