//! Wall-clock time in Unix seconds, injectable so tests can fix it.
//!
//! Webhook timestamps are wall-clock seconds set by the sender, so the layer
//! compares them with the system clock rather than with `tokio::time`, whose
//! instants have no relation to the calendar. Tests and replays of recorded
//! deliveries plug in a [`FixedClock`] or a closure.

use std::fmt;
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
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
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
