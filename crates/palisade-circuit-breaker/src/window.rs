//! The sliding windows the rate rules judge: the last N calls, or the calls of
//! the last N seconds.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::time::Duration;

use crate::sync::{AtomicU8, AtomicU32, AtomicU64};

/// A recorded call in a window slot.
const RECORDED: u8 = 0b001;
const FAILED: u8 = 0b010;
const SLOW: u8 = 0b100;

/// What the window holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// The last N calls: a ring of atomic outcome slots written at an index taken
/// by `fetch_add`, with running failure and slow counts adjusted by the
/// difference between the new outcome and the one it replaced. No lock.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct CountWindow {
    /// First: the breaker keeps it on the cache line of its `Arc`'s count.
    next: AtomicU64,
    slots: Box<[AtomicU8]>,
    failures: AtomicU32,
    slow: AtomicU32,
}

fn adjust(counter: &AtomicU32, old: bool, new: bool) {
    match (old, new) {
        (false, true) => {
            counter.fetch_add(1, Relaxed);
        }
        (true, false) => {
            // Saturating: a reset racing with a straggler must not wrap the count.
            let _ = counter.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        }
        _ => {}
    }
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        Self {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            slow: AtomicU32::new(0),
        }
    }

    fn size(&self) -> u64 {
        self.slots.len() as u64
    }

    /// Records one call and returns the window's totals after it.
    pub(crate) fn record(&self, failed: bool, slow: bool) -> Totals {
        let bits = RECORDED | if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        let index = self.next.fetch_add(1, Relaxed);
        // The slot count is never zero (validated), and the index fits: the
        // remainder is below the slice's length.
        let slot = (index % self.size()) as usize;
        let old = self.slots[slot].swap(bits, AcqRel);
        if old != bits {
            adjust(&self.failures, old & FAILED != 0, failed);
            adjust(&self.slow, old & SLOW != 0, slow);
        }
        Totals {
            calls: (index + 1).min(self.size()),
            failures: u64::from(self.failures.load(Relaxed)),
            slow: u64::from(self.slow.load(Relaxed)),
        }
    }

    /// Records one successful, fast call without reading the totals back; true
    /// when this call brought the window to `minimum` calls.
    ///
    /// The hot path. A full window of successful, fast calls is the same
    /// window after one more, so then nothing is written: cores calling a
    /// healthy breaker only read the lines they share. A call racing a failure
    /// that is not counted yet is ordered before it, which leaves the same
    /// window. Otherwise one read-modify-write (the index); the slot is read
    /// and written only when it held something else, with a plain store: only
    /// a writer a whole window of calls behind could race it, and the running
    /// counts saturate.
    pub(crate) fn record_success(&self, minimum: u32) -> bool {
        if self.failures.load(Relaxed) == 0 && self.slow.load(Relaxed) == 0 && self.next.load(Relaxed) >= self.size() {
            return false;
        }
        let index = self.next.fetch_add(1, Relaxed);
        let slot = &self.slots[(index % self.size()) as usize];
        let old = slot.load(Relaxed);
        if old != RECORDED {
            slot.store(RECORDED, Relaxed);
            if old & (FAILED | SLOW) != 0 {
                adjust(&self.failures, old & FAILED != 0, false);
                adjust(&self.slow, old & SLOW != 0, false);
            }
        }
        index + 1 == u64::from(minimum)
    }

    pub(crate) fn totals(&self) -> Totals {
        Totals {
            calls: self.next.load(Relaxed).min(self.size()),
            failures: u64::from(self.failures.load(Relaxed)),
            slow: u64::from(self.slow.load(Relaxed)),
        }
    }

    /// Empties the window. Called only while no call of the current state records into it.
    pub(crate) fn clear(&self) {
        for slot in self.slots.iter() {
            slot.store(0, Relaxed);
        }
        self.next.store(0, Relaxed);
        self.failures.store(0, Relaxed);
        self.slow.store(0, Relaxed);
    }
}

/// One bucket of the time-based window: the calls of one tick.
#[derive(Debug)]
struct Bucket {
    tick: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

/// The calls of the last `length`, in buckets of `length / n` keyed by the
/// tick (`elapsed / bucket length`) of tokio time. No lock: the first call of
/// a new tick claims the bucket by compare-exchange on its tick and empties
/// it; totals add up the buckets of the last `n` ticks. A call racing that
/// claim may go uncounted, at a bucket's start only.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    bucket_nanos: u64,
    buckets: Box<[Bucket]>,
}

impl TimeWindow {
    pub(crate) fn new(length: Duration, buckets: u32) -> Self {
        let bucket_nanos = u64::try_from(length.as_nanos() / u128::from(buckets))
            .unwrap_or(u64::MAX)
            .max(1);
        let bucket = |_| Bucket {
            tick: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            slow: AtomicU64::new(0),
        };
        Self {
            bucket_nanos,
            buckets: (0..buckets).map(bucket).collect(),
        }
    }

    fn tick(&self, now_nanos: u64) -> u64 {
        now_nanos / self.bucket_nanos
    }

    /// Records one call at `now_nanos` and returns the totals after it.
    pub(crate) fn record(&self, now_nanos: u64, failed: bool, slow: bool) -> Totals {
        let tick = self.tick(now_nanos);
        let bucket = &self.buckets[(tick % self.buckets.len() as u64) as usize];
        let claimed = bucket.tick.load(Acquire);
        if claimed < tick && bucket.tick.compare_exchange(claimed, tick, AcqRel, Acquire).is_ok() {
            // Its calls are a whole window old.
            bucket.calls.store(0, Relaxed);
            bucket.failures.store(0, Relaxed);
            bucket.slow.store(0, Relaxed);
        }
        bucket.calls.fetch_add(1, Relaxed);
        if failed {
            bucket.failures.fetch_add(1, Relaxed);
        }
        if slow {
            bucket.slow.fetch_add(1, Relaxed);
        }
        self.totals_at(tick)
    }

    pub(crate) fn totals(&self, now_nanos: u64) -> Totals {
        self.totals_at(self.tick(now_nanos))
    }

    fn totals_at(&self, tick: u64) -> Totals {
        let n = self.buckets.len() as u64;
        let mut totals = Totals::default();
        for bucket in self.buckets.iter() {
            let t = bucket.tick.load(Acquire);
            if t <= tick && t + n > tick {
                totals.calls += bucket.calls.load(Relaxed);
                totals.failures += bucket.failures.load(Relaxed);
                totals.slow += bucket.slow.load(Relaxed);
            }
        }
        totals
    }

    /// Empties the window. Called only while no call of the current state records into it.
    pub(crate) fn clear(&self) {
        for bucket in self.buckets.iter() {
            bucket.calls.store(0, Relaxed);
            bucket.failures.store(0, Relaxed);
            bucket.slow.store(0, Relaxed);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn count_window_keeps_the_last_n_calls() {
        let w = CountWindow::new(3);
        assert_eq!(
            w.record(true, false),
            Totals {
                calls: 1,
                failures: 1,
                slow: 0
            }
        );
        assert_eq!(
            w.record(true, true),
            Totals {
                calls: 2,
                failures: 2,
                slow: 1
            }
        );
        assert!(w.record_success(3));
        // The fourth call replaces the first failure.
        assert_eq!(
            w.record(false, false),
            Totals {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        // The fifth replaces the slow failure.
        assert!(!w.record_success(3));
        assert_eq!(
            w.totals(),
            Totals {
                calls: 3,
                failures: 0,
                slow: 0
            }
        );
        w.clear();
        assert_eq!(w.totals(), Totals::default());
    }

    #[test]
    fn time_window_expires_whole_buckets() {
        let second = 1_000_000_000;
        let w = TimeWindow::new(Duration::from_secs(3), 3);
        w.record(0, true, false);
        w.record(second, false, true);
        assert_eq!(
            w.totals(2 * second),
            Totals {
                calls: 2,
                failures: 1,
                slow: 1
            }
        );
        // At 3 s the bucket of second 0 is reused.
        assert_eq!(
            w.totals(3 * second),
            Totals {
                calls: 1,
                failures: 0,
                slow: 1
            }
        );
        assert_eq!(
            w.record(3 * second + 1, true, false),
            Totals {
                calls: 2,
                failures: 1,
                slow: 1
            }
        );
        // A long gap empties everything.
        assert_eq!(w.totals(100 * second), Totals::default());
    }
}
