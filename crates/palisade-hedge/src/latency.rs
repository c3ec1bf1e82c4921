//! The latencies a hedging layer observed: a bounded window of the most
//! recent attempts, and the delay (a percentile of them) it yields.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::sync::Unpoison;

/// No delay known yet.
const UNKNOWN: u64 = u64::MAX;

/// The last `capacity` attempt latencies, and the chosen percentile of them,
/// recomputed every `capacity / 10` (at least 1) recordings once at least
/// `min_samples` are kept.
#[derive(Debug)]
pub(crate) struct Window {
    samples: Mutex<Samples>,
    /// The current delay in nanoseconds, [`UNKNOWN`] before enough samples.
    delay: AtomicU64,
    percentile: f64,
    min_samples: usize,
    every: u32,
}

#[derive(Debug)]
struct Samples {
    kept: VecDeque<u64>,
    capacity: usize,
    since: u32,
}

impl Window {
    pub(crate) fn new(percentile: f64, capacity: usize, min_samples: usize) -> Self {
        Self {
            samples: Mutex::new(Samples {
                kept: VecDeque::with_capacity(capacity),
                capacity,
                since: 0,
            }),
            delay: AtomicU64::new(UNKNOWN),
            percentile,
            min_samples,
            every: u32::try_from(capacity / 10).unwrap_or(u32::MAX).max(1),
        }
    }

    /// The delay before a hedge, once enough latencies were seen.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.delay.load(Ordering::Relaxed) {
            UNKNOWN => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    pub(crate) fn record(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(UNKNOWN - 1);
        let mut samples = self.samples.lock().unpoison();
        if samples.kept.len() == samples.capacity {
            samples.kept.pop_front();
        }
        samples.kept.push_back(nanos);
        samples.since += 1;
        let enough = samples.kept.len() >= self.min_samples;
        let first = enough && self.delay.load(Ordering::Relaxed) == UNKNOWN;
        if enough && (first || samples.since >= self.every) {
            samples.since = 0;
            let mut sorted: Vec<u64> = samples.kept.iter().copied().collect();
            drop(samples);
            // The smallest latency at or above the percentile's rank. The
            // product is rounded to 1e-9 first: 100 × 0.55 is 55.000000000000007
            // in binary floating point, which `ceil` would make 56.
            let exact = (sorted.len() as f64 * self.percentile * 1e9).round() / 1e9;
            let rank = (exact.ceil() as usize).clamp(1, sorted.len()) - 1;
            let (_, nth, _) = sorted.select_nth_unstable(rank);
            self.delay.store(*nth, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_delay_is_the_percentile_once_enough_samples_are_kept() {
        let window = Window::new(0.9, 100, 10);
        for ms in 1..=9 {
            window.record(ms * MS);
        }
        assert_eq!(window.delay(), None);
        window.record(10 * MS);
        // 1..=10 ms: the 90th percentile is 9 ms.
        assert_eq!(window.delay(), Some(9 * MS));
    }

    #[test]
    fn the_rank_is_not_moved_by_floating_point_rounding() {
        // 100 × 0.55 is 55.000000000000007 in binary floating point.
        for (percentile, expected) in [(0.55, 55), (0.07, 7), (0.14, 14), (0.28, 28), (0.56, 56), (0.95, 95)] {
            let window = Window::new(percentile, 100, 100);
            for ms in 1..=100 {
                window.record(ms * MS);
            }
            assert_eq!(window.delay(), Some(expected * MS), "{percentile}");
        }
    }

    #[test]
    fn old_samples_leave_the_window() {
        let window = Window::new(0.5, 10, 10);
        for _ in 0..10 {
            window.record(100 * MS);
        }
        assert_eq!(window.delay(), Some(100 * MS));
        for _ in 0..10 {
            window.record(MS);
        }
        assert_eq!(window.delay(), Some(MS));
    }
}
