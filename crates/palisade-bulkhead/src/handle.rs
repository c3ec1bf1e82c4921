//! Handles for health endpoints and operators: a snapshot of a bulkhead's
//! state, and runtime resizing of a fixed limit.

use std::fmt;
use std::hash::Hash;

use crate::compartments::Compartments;
use crate::error::ConfigError;
use crate::gate::Gate;
use crate::limit::MAX_COUNT;
use crate::sync::Arc;

/// The state of one compartment at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The bulkhead's name.
    pub name: std::sync::Arc<str>,
    /// The current concurrency limit (set by hand, or by the adaptive limit).
    pub limit: usize,
    /// Calls holding a permit.
    pub in_flight: usize,
    /// Calls waiting for one.
    pub queued: usize,
    /// True when an adaptive limit sets `limit`.
    pub adaptive: bool,
}

impl Snapshot {
    fn of(gate: &Gate) -> Self {
        let (in_flight, queued) = gate.occupancy();
        Self {
            name: std::sync::Arc::clone(gate.name()),
            limit: gate.limit(),
            in_flight,
            queued,
            adaptive: gate.is_adaptive(),
        }
    }
}

/// For a health endpoint: `{"name", "limit", "in_flight", "queued", "adaptive"}`.
impl serde::Serialize for Snapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut map = s.serialize_struct("Snapshot", 5)?;
        map.serialize_field("name", &*self.name)?;
        map.serialize_field("limit", &self.limit)?;
        map.serialize_field("in_flight", &self.in_flight)?;
        map.serialize_field("queued", &self.queued)?;
        map.serialize_field("adaptive", &self.adaptive)?;
        map.end()
    }
}

fn check_limit(limit: usize, adaptive: bool) -> Result<(), ConfigError> {
    if adaptive {
        return Err(ConfigError::AdaptiveLimit);
    }
    if !(1..=MAX_COUNT).contains(&limit) {
        return Err(ConfigError::MaxConcurrent(limit));
    }
    Ok(())
}

/// Reports the state of a [`BulkheadLayer`](crate::BulkheadLayer)'s
/// compartment and resizes it. Cheap to clone.
#[derive(Clone)]
pub struct BulkheadHandle {
    gate: Arc<Gate>,
}

impl BulkheadHandle {
    pub(crate) fn new(gate: Arc<Gate>) -> Self {
        Self { gate }
    }

    /// The current state.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::of(&self.gate)
    }

    /// Sets a fixed limit at run time. A larger limit admits queued calls at
    /// once; a smaller one lets the calls in flight finish and admits no new
    /// call until fewer than `limit` are in flight.
    ///
    /// Fails for an adaptive bulkhead, and for a limit of 0 or above 2³¹ − 1.
    pub fn set_max_concurrent(&self, limit: usize) -> Result<(), ConfigError> {
        check_limit(limit, self.gate.is_adaptive())?;
        self.gate.set_limit(limit);
        Ok(())
    }
}

impl fmt::Debug for BulkheadHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BulkheadHandle").field(&self.gate).finish()
    }
}

/// Reports the state of a [`KeyedBulkheadLayer`](crate::KeyedBulkheadLayer)'s
/// compartments and resizes them. Cheap to clone.
pub struct KeyedBulkheadHandle<K> {
    compartments: Arc<Compartments<K>>,
}

impl<K> KeyedBulkheadHandle<K> {
    pub(crate) fn new(compartments: Arc<Compartments<K>>) -> Self {
        Self { compartments }
    }

    /// How many keys are kept.
    pub fn keys(&self) -> usize {
        self.compartments.len()
    }

    /// Sets the fixed per-key limit at run time, for every key kept and
    /// every key to come; see [`BulkheadHandle::set_max_concurrent`].
    pub fn set_max_concurrent(&self, limit: usize) -> Result<(), ConfigError> {
        check_limit(limit, self.compartments.is_adaptive())?;
        self.compartments.set_fixed_limit(limit);
        Ok(())
    }
}

impl<K: Hash + Eq> KeyedBulkheadHandle<K> {
    /// The state of `key`'s compartment, if it is kept.
    pub fn snapshot(&self, key: &K) -> Option<Snapshot> {
        self.compartments.get(key).map(|gate| Snapshot::of(&gate))
    }
}

impl<K: Clone> KeyedBulkheadHandle<K> {
    /// The state of every compartment kept, in no particular order.
    pub fn snapshots(&self) -> Vec<(K, Snapshot)> {
        let mut snapshots = Vec::with_capacity(self.compartments.len());
        self.compartments
            .for_each(|key, gate| snapshots.push((key.clone(), Snapshot::of(gate))));
        snapshots
    }
}

impl<K> Clone for KeyedBulkheadHandle<K> {
    fn clone(&self) -> Self {
        Self {
            compartments: Arc::clone(&self.compartments),
        }
    }
}

impl<K> fmt::Debug for KeyedBulkheadHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyedBulkheadHandle").field(&self.compartments).finish()
    }
}
