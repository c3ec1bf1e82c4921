//! The compartments of a keyed bulkhead: one gate per key, created on first
//! use and forgotten when the key cap is reached and nobody holds them.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::RwLock;

use crate::gate::{Gate, GateMetrics, Settings};
use crate::limit::LimitConfig;
use crate::sync::{Arc, AtomicUsize, Ordering::SeqCst};

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
    pub(crate) fn gate(&self, key: K) -> Option<Arc<Gate>> {
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
