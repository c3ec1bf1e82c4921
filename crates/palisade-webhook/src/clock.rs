//! Wall-clock time in Unix seconds, injectable so tests can fix it.
//!
//! Webhook timestamps are wall-clock seconds set by the sender, so the layer
//! compares them with the system clock rather than with `tokio::time`, whose
//! instants have no relation to the calendar. Tests and replays of recorded
//! deliveries plug in a [`FixedClock`] or a closure.

use std::fmt;
#[cfg(not(target_os = "linux"))]
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time in whole Unix seconds.
///
/// Implemented by [`SystemClock`] (the default), [`FixedClock`], and any
/// `Fn() -> u64 + Send + Sync + 'static` closure.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> u64;
}

/// The system's wall clock. A clock set before 1970 reads as 0.
///
/// On Linux it reads the kernel's coarse wall clock (`CLOCK_REALTIME_COARSE`),
/// the time at the last timer tick: a few nanoseconds instead of the tens a
/// precise read costs, and at most one tick (a few milliseconds) behind,
/// which whole-second webhook timestamps cannot tell apart from a sender's
/// clock running that much ahead.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[cfg(target_os = "linux")]
    fn now_unix(&self) -> u64 {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        u64::try_from(now.tv_sec).unwrap_or(0)
    }

    #[cfg(not(target_os = "linux"))]
    fn now_unix(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }
}

/// A clock stopped at one instant: for tests and for re-verifying recorded deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedClock(pub u64);

impl Clock for FixedClock {
    fn now_unix(&self) -> u64 {
        self.0
    }
}

impl<F> Clock for F
where
    F: Fn() -> u64 + Send + Sync + 'static,
{
    fn now_unix(&self) -> u64 {
        self()
    }
}

/// Debug for a boxed clock, which has no Debug of its own.
pub(crate) struct ClockDebug;

impl fmt::Debug for ClockDebug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::{Clock, SystemClock};

    fn precise() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn the_system_clock_reads_the_calendar_second() {
        for _ in 0..1_000 {
            let before = precise();
            let read = SystemClock.now_unix();
            let after = precise();
            // At most one tick behind the precise clock: the second before, at a boundary.
            assert!(
                before - 1 <= read && read <= after,
                "read {read}, precise {before}..={after}"
            );
        }
    }
}
