//! [`KeyedMap`]: the per-key state of a keyed layer (one breaker per host,
//! one bulkhead compartment per tenant), made on a key's first use and kept
//! within a bound on how many keys there are.
//!
//! A lookup of a kept key takes a read lock and clones the value (an `Arc`,
//! in every palisade layer); only a new key takes the write lock. The lock is
//! crossbeam's [`ShardedLock`]: a reader locks the shard of its thread, so
//! threads looking keys up at once write no shared lock word (a plain
//! `RwLock` halved a keyed bulkhead's throughput on two threads), and a
//! writer, rare, locks every shard. When a new key finds `max_keys` kept, the
//! map makes room by its [`Eviction`] policy:
//!
//! - [`Eviction::least_recently_used`]: keys idle for longer than the idle
//!   timeout go first, then the least recently used one, passing over those
//!   the policy says to keep longer while another can go. A new key always
//!   gets in. A lookup reads no clock: it marks its key used (a flag it
//!   writes only when it is not set yet, so keys in steady use see no
//!   writes), and a sweep (making room for a new key, or
//!   [`evict_idle`](KeyedMap::evict_idle)) reads the clock once and dates
//!   the keys marked since the previous sweep to its own time. A key's last
//!   use is so known to the interval between two sweeps, late rather than
//!   early: a key never goes as idle before it is idle, and goes at most one
//!   interval late, and keys used within one interval rank as used at once.
//!   Calling `evict_idle` periodically keeps the interval short.
//! - [`Eviction::unused`]: the keys whose value nobody but the map holds go
//!   (nothing is lost but what the value learned); when every kept value is
//!   in use, the new key is refused. Lookups read no clock.
//!
//! Either way, the policy's [`on_evict`](Eviction::on_evict) hears of every
//! value the map drops. Time comes from `tokio::time`, so paused-time tests
//! drive idleness.
//!
//! Keys are hashed with foldhash (hashbrown's default hasher) under a seed
//! drawn for each map: several times cheaper than the standard library's
//! SipHash for the short keys layers use, and keys that collide cannot be
//! prepared in advance. The map is bounded by `max_keys` either way.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use palisade_core::keyed::{Eviction, KeyedMap};
//!
//! // At most 2 keys; a key's value is dropped once it is idle for a minute.
//! let map: KeyedMap<&str, Arc<u32>> =
//!     KeyedMap::new(2, Eviction::least_recently_used(Duration::from_secs(60), |_| false));
//! let a = map.get_or_insert_with("a", |_| Arc::new(1)).unwrap();
//! map.get_or_insert_with("b", |_| Arc::new(2));
//! map.get_or_insert_with("c", |_| Arc::new(3)); // "a" was used least recently: it goes
//! assert_eq!(*a, 1);
//! assert!(map.get(&"a").is_none());
//! assert_eq!(map.len(), 2);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crossbeam_utils::sync::ShardedLock;
use foldhash::fast::RandomState;
use tokio::time::Instant;

use crate::sync::Unpoison;

/// How a [`KeyedMap`] makes room for a new key when it keeps `max_keys`.
pub struct Eviction<V> {
    /// `None` for [`Eviction::unused`]; for LRU, nanoseconds a key may stay idle.
    idle_nanos: Option<u64>,
    /// True for a value an idle key keeps: it still has something to remember.
    keep_idle: fn(&V) -> bool,
    rule: Rule<V>,
    on_evict: fn(&V),
}

enum Rule<V> {
    LeastRecentlyUsed { keep_longer: fn(&V) -> bool },
    Unused { in_use: fn(&V) -> bool },
}

impl<V> Eviction<V> {
    /// Drops keys idle for longer than `idle`, then the least recently used
    /// one; a value for which `keep_longer` is true is passed over while
    /// another can go. A new key is never refused.
    pub fn least_recently_used(idle: Duration, keep_longer: fn(&V) -> bool) -> Self {
        Self {
            idle_nanos: Some(crate::nanos::saturating(idle)),
            keep_idle: |_| false,
            rule: Rule::LeastRecentlyUsed { keep_longer },
            on_evict: |_| {},
        }
    }

    /// Drops every key whose value `in_use` says nobody but the map holds;
    /// if that frees nothing, the new key is refused.
    pub fn unused(in_use: fn(&V) -> bool) -> Self {
        Self {
            idle_nanos: None,
            keep_idle: |_| false,
            rule: Rule::Unused { in_use },
            on_evict: |_| {},
        }
    }

    /// Keeps an idle key whose value `keep` is true for (say, a breaker
    /// still open): it goes only once idle and `keep` says no more, or when
    /// room is needed, as the rule decides.
    pub fn keep_idle(mut self, keep: fn(&V) -> bool) -> Self {
        self.keep_idle = keep;
        self
    }

    /// Calls `evicted` with every value the map drops.
    pub fn on_evict(mut self, evicted: fn(&V)) -> Self {
        self.on_evict = evicted;
        self
    }
}

impl<V> fmt::Debug for Eviction<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rule {
            Rule::LeastRecentlyUsed { .. } => f
                .debug_struct("LeastRecentlyUsed")
                .field("idle", &self.idle_nanos.map(Duration::from_nanos))
                .finish_non_exhaustive(),
            Rule::Unused { .. } => f.debug_struct("Unused").finish_non_exhaustive(),
        }
    }
}

/// The bit of [`Slot::last_used`] a lookup sets: used since the last sweep.
const USED: u64 = 1 << 63;

struct Slot<V> {
    value: V,
    /// When the key was last used at the latest, in nanoseconds since the
    /// map's base (below [`USED`]): when it was made, or the time of the last
    /// sweep that found it used; with [`USED`] set by a lookup since that
    /// sweep (least-recently-used eviction only). One word, so a slot is no
    /// larger for the flag.
    last_used: AtomicU64,
}

/// A bounded map from keys to per-key state; see the [module docs](self).
pub struct KeyedMap<K, V> {
    slots: ShardedLock<HashMap<K, Slot<V>, RandomState>>,
    max_keys: usize,
    eviction: Eviction<V>,
    base: Instant,
}

impl<K, V> KeyedMap<K, V> {
    /// An empty map keeping at most `max_keys` keys.
    pub fn new(max_keys: usize, eviction: Eviction<V>) -> Self {
        Self {
            slots: ShardedLock::new(HashMap::default()),
            max_keys,
            eviction,
            base: Instant::now(),
        }
    }

    /// How many keys are kept at most.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// How many keys are kept.
    pub fn len(&self) -> usize {
        self.slots.read().unpoison().len()
    }

    /// True when no key is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with every key and value kept, in no particular order, under
    /// the read lock (so no key comes or goes meanwhile).
    pub fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        for (key, slot) in self.slots.read().unpoison().iter() {
            f(key, &slot.value);
        }
    }

    /// Nanoseconds since the map's base, below [`USED`] (292 years).
    fn now_nanos(&self) -> u64 {
        crate::nanos::since(self.base).min(USED - 1)
    }

    /// Dates the keys used since the last sweep to `now`, then drops the keys
    /// idle at `now`, if the policy has an idle timeout.
    fn drop_idle(&self, slots: &mut HashMap<K, Slot<V>, RandomState>, now: u64) {
        let Some(idle) = self.eviction.idle_nanos else {
            return;
        };
        let evicted = self.eviction.on_evict;
        let keep_idle = self.eviction.keep_idle;
        slots.retain(|_, slot| {
            let last_used = slot.last_used.get_mut();
            if *last_used & USED != 0 {
                *last_used = now;
            }
            let kept = now.saturating_sub(*last_used) < idle || keep_idle(&slot.value);
            if !kept {
                evicted(&slot.value);
            }
            kept
        });
    }

    /// Drops the keys idle for longer than the idle timeout now; returns how
    /// many went (none under [`Eviction::unused`]).
    pub fn evict_idle(&self) -> usize {
        let mut slots = self.slots.write().unpoison();
        // Read once the lock is held: a use made while waiting for it is
        // dated to this time, which must not be earlier than the use.
        let now = self.now_nanos();
        let before = slots.len();
        self.drop_idle(&mut slots, now);
        before - slots.len()
    }
}

impl<K: Hash + Eq, V: Clone> KeyedMap<K, V> {
    /// The value of `key`, if it is kept (this does not count as a use).
    pub fn get(&self, key: &K) -> Option<V> {
        self.slots.read().unpoison().get(key).map(|slot| slot.value.clone())
    }

    /// The value of `key`, made by `make` (and room made for it) when the key
    /// is new. `None` only under [`Eviction::unused`], when every kept value
    /// is in use.
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce(&K) -> V) -> Option<V> {
        // Only least-recently-used eviction needs to know that a key was
        // used: under `unused`, a lookup writes nothing. The flag is read
        // first so that a key in steady use, from several threads, is not
        // written at all.
        let lru = self.eviction.idle_nanos.is_some();
        let mark = |slot: &Slot<V>| {
            // Under the read lock: no sweep runs meanwhile, and lookups
            // racing here write the same word.
            let last_used = slot.last_used.load(Relaxed);
            if lru && last_used & USED == 0 {
                slot.last_used.store(last_used | USED, Relaxed);
            }
        };
        if let Some(slot) = self.slots.read().unpoison().get(&key) {
            mark(slot);
            return Some(slot.value.clone());
        }
        let mut slots = self.slots.write().unpoison();
        if let Some(slot) = slots.get(&key) {
            mark(slot);
            return Some(slot.value.clone());
        }
        let now = if lru { self.now_nanos() } else { 0 };
        if slots.len() >= self.max_keys && !self.make_room(&mut slots, now) {
            return None;
        }
        let value = make(&key);
        let slot = Slot {
            value: value.clone(),
            last_used: AtomicU64::new(now),
        };
        slots.insert(key, slot);
        Some(value)
    }

    /// Makes room for one key in a full map; false when it cannot.
    fn make_room(&self, slots: &mut HashMap<K, Slot<V>, RandomState>, now: u64) -> bool {
        let evicted = self.eviction.on_evict;
        match self.eviction.rule {
            Rule::LeastRecentlyUsed { keep_longer } => {
                self.drop_idle(slots, now);
                // `drop_idle` dated every use, so `last_used` is the whole story.
                let rank = |slot: &Slot<V>| (keep_longer(&slot.value), slot.last_used.load(Relaxed));
                // The first slot of the lowest rank goes. Keys need not be
                // cloneable, so it is found again by a second walk; should a
                // value's rank rise in between, the walk is done anew.
                while slots.len() >= self.max_keys {
                    let Some(lowest) = slots.values().map(rank).min() else {
                        break;
                    };
                    let mut found = false;
                    slots.retain(|_, slot| {
                        if found || rank(slot) > lowest {
                            return true;
                        }
                        found = true;
                        evicted(&slot.value);
                        false
                    });
                }
                true
            }
            Rule::Unused { in_use } => {
                // Under the write lock nobody can pick up a value only the
                // map holds: dropping it loses nothing but what it learned.
                slots.retain(|_, slot| {
                    let keep = in_use(&slot.value);
                    if !keep {
                        evicted(&slot.value);
                    }
                    keep
                });
                slots.len() < self.max_keys
            }
        }
    }
}

impl<K, V> fmt::Debug for KeyedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedMap")
            .field("keys", &self.len())
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use super::*;

    static EVICTED: AtomicUsize = AtomicUsize::new(0);

    #[derive(Debug, Default)]
    struct Value {
        open: AtomicBool,
    }

    fn lru(max_keys: usize) -> KeyedMap<u32, Arc<Value>> {
        KeyedMap::new(
            max_keys,
            Eviction::least_recently_used(Duration::from_secs(10), |v: &Arc<Value>| v.open.load(Relaxed)).on_evict(
                |_| {
                    EVICTED.fetch_add(1, Relaxed);
                },
            ),
        )
    }

    fn keys<V>(map: &KeyedMap<u32, V>) -> Vec<u32> {
        let mut keys = Vec::new();
        map.for_each(|k, _| keys.push(*k));
        keys.sort_unstable();
        keys
    }

    #[tokio::test(start_paused = true)]
    async fn least_recently_used_goes_first_and_kept_values_outlive_others() {
        let map = lru(3);
        for key in [1, 2, 3] {
            map.get_or_insert_with(key, |_| Arc::default());
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        map.get(&1).unwrap().open.store(true, Relaxed);
        map.get_or_insert_with(2, |_| unreachable!("kept"));
        // 1 is the least recently used but kept longer; 3 is next.
        map.get_or_insert_with(4, |_| Arc::default());
        assert_eq!(keys(&map), [1, 2, 4]);
        assert_eq!(EVICTED.load(Relaxed), 1);
        // Idle keys go before any other when room is needed.
        tokio::time::advance(Duration::from_secs(10)).await;
        map.get_or_insert_with(4, |_| unreachable!("kept"));
        map.get_or_insert_with(5, |_| Arc::default());
        assert_eq!(keys(&map), [4, 5]);
        assert_eq!(EVICTED.load(Relaxed), 3);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(map.evict_idle(), 2);
        assert!(map.is_empty());
        assert_eq!(EVICTED.load(Relaxed), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_in_use_is_never_idle_and_an_unused_one_goes_at_most_one_sweep_late() {
        let map: KeyedMap<u32, Arc<Value>> =
            KeyedMap::new(10, Eviction::least_recently_used(Duration::from_secs(10), |_| false));
        map.get_or_insert_with(1, |_| Arc::default());
        map.get_or_insert_with(2, |_| Arc::default());
        tokio::time::advance(Duration::from_secs(9)).await;
        map.get_or_insert_with(1, |_| unreachable!("kept"));
        tokio::time::advance(Duration::from_secs(2)).await;
        // 11 s after both were made: 2 was never used since, 1 was, 2 s ago.
        assert_eq!(map.evict_idle(), 1);
        assert_eq!(keys(&map), [1]);
        // 1 was last used 11 s ago now, but the sweep that found it used
        // dated it to its own time, 9 s ago: late, never early.
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(map.evict_idle(), 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(map.evict_idle(), 1);
        assert!(map.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_waiting_for_the_lock_dates_uses_to_when_it_got_it() {
        // A use made while a sweep waits for the write lock (lookups hold the
        // read lock) is dated to the sweep's time, which must be no earlier.
        let map: Arc<KeyedMap<u32, Arc<Value>>> = Arc::new(KeyedMap::new(
            10,
            Eviction::least_recently_used(Duration::from_secs(10), |_| false),
        ));
        map.get_or_insert_with(1, |_| Arc::default());
        tokio::time::advance(Duration::from_secs(9)).await;
        let reading = map.slots.read().unpoison();
        let sweep = std::thread::spawn({
            let (map, runtime) = (Arc::clone(&map), tokio::runtime::Handle::current());
            move || {
                let _runtime = runtime.enter();
                map.evict_idle()
            }
        });
        // Once the sweep waits for the write lock, new readers of this thread's
        // shard are held back: that is when it is known to be waiting.
        while map.slots.try_read().is_ok() {
            std::thread::yield_now();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        // A lookup at 14 s, while the sweep waits.
        let slot = &reading[&1];
        slot.last_used.fetch_or(USED, Relaxed);
        drop(reading);
        assert_eq!(sweep.join().unwrap(), 0);
        // 7 s after that use: not idle.
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(map.evict_idle(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_map_dates_uses_before_it_ranks_keys() {
        let map: KeyedMap<u32, Arc<Value>> =
            KeyedMap::new(2, Eviction::least_recently_used(Duration::from_secs(60), |_| false));
        map.get_or_insert_with(1, |_| Arc::default());
        tokio::time::advance(Duration::from_secs(1)).await;
        map.get_or_insert_with(2, |_| Arc::default());
        tokio::time::advance(Duration::from_secs(1)).await;
        // 1, made first, was used last: 2 goes.
        map.get_or_insert_with(1, |_| unreachable!("kept"));
        map.get_or_insert_with(3, |_| Arc::default());
        assert_eq!(keys(&map), [1, 3]);
    }

    #[test]
    fn unused_values_go_and_a_full_map_of_used_values_refuses() {
        let map: KeyedMap<u32, Arc<()>> = KeyedMap::new(2, Eviction::unused(|v| Arc::strong_count(v) > 1));
        let held = map.get_or_insert_with(1, |_| Arc::new(())).unwrap();
        map.get_or_insert_with(2, |_| Arc::new(()));
        // 2 is held by the map alone: it makes room for 3.
        let held_too = map.get_or_insert_with(3, |_| Arc::new(())).unwrap();
        assert_eq!(keys(&map), [1, 3]);
        assert!(map.get_or_insert_with(4, |_| Arc::new(())).is_none());
        assert_eq!(map.evict_idle(), 0);
        drop((held, held_too));
        assert!(map.get_or_insert_with(4, |_| Arc::new(())).is_some());
        assert_eq!(keys(&map), [4]);
    }
}
