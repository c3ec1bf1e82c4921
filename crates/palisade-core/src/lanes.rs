//! [`Lanes`]: references to a layer's shared state, spread over cache lines
//! so that threads calling one layer at once do not all count their
//! references on one line.
//!
//! A call a layer admits holds a reference to the layer's state until it
//! ends (a breaker records the outcome into it, a bulkhead gives its permit
//! back to it). Held as one `Arc`, every call takes and drops a count on the
//! state's own line, and two threads calling at once pass that line back and
//! forth twice per call whatever else they share. A lane is an `Arc` of its
//! own, on cache lines of its own, holding the state: each thread takes its
//! references from its lane, and only what the state itself shares moves.
//!
//! State made per key (a keyed breaker's, a compartment of a keyed
//! bulkhead) has one lane, [`Lane::single`]: its calls share it, and a call
//! holds the same type, `Arc<Lane<T>>`, either way.
//!
//! ```
//! use std::sync::Arc;
//! use palisade_core::lanes::{Lane, Lanes};
//!
//! let lanes = Lanes::new(42_u32);
//! let held: Arc<Lane<u32>> = lanes.pick().clone();
//! assert_eq!(**held, 42);
//! assert!(Arc::ptr_eq(held.shared(), lanes.shared()));
//! let per_key: Arc<Lane<u32>> = Lane::single(7);
//! assert_eq!(**per_key, 7);
//! ```

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;

/// Lanes per state: a power of two, so a thread's lane is a mask of its index.
const LANES: usize = 8;

/// A layer's shared state and its lanes.
pub struct Lanes<T> {
    shared: Arc<T>,
    lanes: [Arc<Lane<T>>; LANES],
}

/// One lane: aligned to a cache line and a line long, so the `Arc` counts of
/// the lanes of one state sit on lines of their own.
#[repr(align(64))]
pub struct Lane<T> {
    shared: Arc<T>,
}

impl<T> Lanes<T> {
    /// `shared` and its lanes.
    pub fn new(shared: T) -> Self {
        let shared = Arc::new(shared);
        let lanes = std::array::from_fn(|_| Arc::new(Lane { shared: shared.clone() }));
        Self { shared, lanes }
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<T> {
        &self.shared
    }

    /// The calling thread's lane.
    #[inline]
    pub fn pick(&self) -> &Arc<Lane<T>> {
        &self.lanes[thread_index() & (LANES - 1)]
    }
}

impl<T: fmt::Debug> fmt::Debug for Lanes<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl<T> Lane<T> {
    /// State with a single lane, for state made per key: its calls count
    /// their references on it as on the state itself.
    pub fn single(shared: T) -> Arc<Self> {
        Arc::new(Lane {
            shared: Arc::new(shared),
        })
    }

    /// The shared state.
    #[inline]
    pub fn shared(&self) -> &Arc<T> {
        &self.shared
    }
}

impl<T> Deref for Lane<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.shared
    }
}

impl<T: fmt::Debug> fmt::Debug for Lane<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

/// A small number for the calling thread, given on its first use and kept:
/// threads that start calling together get different lanes.
#[inline]
fn thread_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    std::thread_local! {
        static INDEX: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }
    INDEX.with(|index| match index.get() {
        0 => {
            let given = NEXT.fetch_add(1, Relaxed);
            index.set(given);
            given
        }
        given => given,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_starting_together_take_different_lanes_and_every_lane_holds_the_state() {
        let lanes = Arc::new(Lanes::new(7_u8));
        let mine = Arc::as_ptr(lanes.pick()) as usize;
        assert_eq!(Arc::as_ptr(lanes.pick()) as usize, mine, "a thread keeps its lane");
        let theirs = std::thread::scope(|s| s.spawn(|| Arc::as_ptr(lanes.pick()) as usize).join().unwrap());
        assert_ne!(theirs, mine);
        for lane in &lanes.lanes {
            assert_eq!(***lane, 7);
            assert!(Arc::ptr_eq(&lane.shared, lanes.shared()));
            assert_eq!((Arc::as_ptr(lane) as usize) % 64, 0);
        }
        // Every lane and the lanes themselves hold the state.
        assert_eq!(Arc::strong_count(lanes.shared()), 1 + LANES);
    }
}
