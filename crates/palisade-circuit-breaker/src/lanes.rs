//! The references a breaker's calls hold to it, spread over lanes so that
//! threads calling one breaker at once do not all count their references on
//! one cache line.
//!
//! Every admitted call holds a reference to its breaker until its outcome is
//! recorded. Held as one `Arc<Breaker>`, each call takes and drops a count on
//! the breaker's own line, and two threads calling at once pass that line
//! back and forth twice per call. A lane is an `Arc` of its own, on its own
//! cache lines, holding the breaker: a thread takes its references from the
//! lane its index picks, and only the breaker's state is shared.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;

use crate::breaker::{Breaker, Lane};

/// Lanes per breaker: a power of two, so a thread's lane is a mask of its index.
const LANES: usize = 8;

/// A breaker and its lanes; what the layer and its services share.
pub(crate) struct Lanes {
    breaker: Arc<Breaker>,
    lanes: [Arc<Lane>; LANES],
}

impl Lanes {
    pub(crate) fn new(breaker: Breaker) -> Self {
        let breaker = Arc::new(breaker);
        let lanes = std::array::from_fn(|_| Arc::new(Lane::new(breaker.clone())));
        Self { breaker, lanes }
    }

    pub(crate) fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// The lane of the calling thread.
    #[inline]
    pub(crate) fn pick(&self) -> &Arc<Lane> {
        &self.lanes[thread_index() & (LANES - 1)]
    }
}

impl fmt::Debug for Lanes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.breaker.fmt(f)
    }
}

/// A small number for the calling thread, given on its first call and kept:
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
