//! The compartments of a keyed bulkhead: one gate per key, created on first
//! use and forgotten when the key cap is reached and nobody holds them, in
//! palisade-core's bounded [`KeyedMap`].

use std::fmt;
use std::hash::Hash;

use palisade_core::keyed::{Eviction, KeyedMap};

use crate::gate::{Gate, GateMetrics, Settings};
use crate::limit::LimitConfig;
use crate::sync::{Arc, AtomicUsize, Ordering::SeqCst};

/// The compartments of a keyed bulkhead, created on first use of a key.
pub(crate) struct Compartments<K> {
    map: KeyedMap<K, Arc<Gate>>,
    settings: std::sync::Arc<Settings>,
    limit: LimitConfig,
    /// The per-key limit of a fixed bulkhead, changed by its handle.
    fixed_limit: AtomicUsize,
    pub(crate) metrics: GateMetrics,
}

impl<K> Compartments<K> {
    pub(crate) fn new(settings: std::sync::Arc<Settings>, limit: LimitConfig, max_keys: usize) -> Self {
        let metrics = GateMetrics::register(&settings.name);
        let fixed_limit = AtomicUsize::new(match &limit {
            LimitConfig::Fixed(limit) => *limit,
            LimitConfig::Adaptive(_) => 0,
        });
        // A compartment only the map holds can go: under the map's write lock
        // nobody can pick it up, so forgetting it loses nothing but a learned limit.
        let eviction = Eviction::unused(|gate: &Arc<Gate>| Arc::strong_count(gate) > 1);
        Self {
            map: KeyedMap::new(max_keys, eviction),
            settings,
            limit,
            fixed_limit,
            metrics,
        }
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn is_adaptive(&self) -> bool {
        matches!(self.limit, LimitConfig::Adaptive(_))
    }

    /// How many keys are kept.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Calls `f` with every key and compartment kept.
    pub(crate) fn for_each(&self, f: impl FnMut(&K, &Arc<Gate>)) {
        self.map.for_each(f);
    }

    /// Sets the per-key limit of a fixed keyed bulkhead, for every key.
    pub(crate) fn set_fixed_limit(&self, limit: usize) {
        // Stored first: a compartment made meanwhile reads it under the map's
        // write lock, which the walk below waits for.
        self.fixed_limit.store(limit, SeqCst);
        self.map.for_each(|_, gate| gate.set_limit(limit));
    }
}

impl<K: Hash + Eq> Compartments<K> {
    /// The compartment of `key`, if it is kept.
    pub(crate) fn get(&self, key: &K) -> Option<Arc<Gate>> {
        self.map.get(key)
    }

    /// The compartment of `key`, created if needed. `None` when the bulkhead
    /// keeps `max_keys` keys and every one of them is in use.
    pub(crate) fn gate(&self, key: K) -> Option<Arc<Gate>> {
        self.map.get_or_insert_with(key, |_| {
            let (limit, adaptive) = match &self.limit {
                LimitConfig::Fixed(_) => (self.fixed_limit.load(SeqCst), None),
                LimitConfig::Adaptive(make) => (0, Some(make())),
            };
            Arc::new(Gate::new(
                std::sync::Arc::clone(&self.settings),
                limit,
                adaptive,
                self.metrics.clone(),
            ))
        })
    }
}

impl<K> fmt::Debug for Compartments<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compartments")
            .field("name", &self.settings.name)
            .field("keys", &self.map.len())
            .field("max_keys", &self.map.max_keys())
            .finish_non_exhaustive()
    }
}
