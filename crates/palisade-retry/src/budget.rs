//! The retry budget: see [`RetryBudget`].

use std::fmt;
use std::time::Duration;

use palisade_core::sync::Unpoison;
use tokio::time::Instant;

use crate::error::ConfigError;
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};

/// Slots the window is divided into: withdrawals and deposits age out with a
/// granularity of a tenth of the window.
const SLOTS: usize = 10;
/// Budget units of one retry; a deposit is worth `ratio × UNIT`.
const UNIT: i64 = 1000;
/// Deposits between two placements in time on the request path.
const PLACE_EVERY: u64 = 64;

/// The retry budget: a cap on retries as a share of recent traffic, so a
/// failing downstream sees a bounded amplification instead of a retry storm.
///
/// Every logical request deposits once; every retry withdraws once. A retry
/// is allowed while, over the last [`window`](RetryBudgetBuilder::window):
///
/// ```text
/// retries ≤ ratio × requests + min_per_sec × window
/// ```
///
/// This is the budget of Finagle and linkerd (Envoy's `retry_budget` is the
/// same idea over active requests). The floor (`min_per_sec × window`) keeps a
/// client with little traffic able to retry at all; like theirs it is a
/// reserve that refills as withdrawals age out of the window, so a burst may
/// spend it at once.
///
/// Defaults: window 10 s, ratio 0.2, floor 10 retries per second — the
/// defaults of Finagle, linkerd and tower's `TpsBudget`.
///
/// # Cost
///
/// A deposit is one relaxed atomic add; the policies batch them, so the
/// request path pays it once per 16 requests on a service (and when the
/// service is dropped). The clock is read once per 64 deposits and when a
/// retry asks the budget. Deposits between two clock readings are dated to
/// the first of them, the earliest they can have been made, so they leave
/// the window no later than they should, and a burst after a long quiet
/// spell counts from its 64th request on: an error that only ever makes the
/// budget smaller. So does traffic of fewer than 64 requests a window with
/// no retry asked for meanwhile: its requests are dated up to 64 requests
/// early, a window or more ago, and count for little or nothing. Such a
/// client retries on the floor: keep `min_per_sec` above zero for it. Time
/// comes from `tokio::time`, so paused-time tests see the budget age.
///
/// # Example
///
/// One budget shared by two stacks that call the same downstream:
///
/// ```
/// use std::time::Duration;
/// use palisade_retry::{HttpRetryLayer, RetryBudget, RetryLayer};
///
/// let budget = RetryBudget::builder().ratio(0.1).min_per_sec(5).window(Duration::from_secs(5)).build()?;
/// let reads = RetryLayer::builder("reads").budget(budget.clone()).build()?;
/// let writes = HttpRetryLayer::builder("writes").budget(budget.clone()).build()?;
/// assert_eq!(budget.available(), 25); // the floor: 5 per second over 5 s
/// # let _ = (reads, writes);
/// # Ok::<(), palisade_retry::ConfigError>(())
/// ```
///
/// Cheap to clone (one `Arc`); clones share the same balance.
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    /// Deposits not yet placed in a slot.
    pending: AtomicU64,
    ring: Mutex<Ring>,
    deposit_units: i64,
    reserve: i64,
    slot: Duration,
    origin: Instant,
    window: Duration,
    ratio: f64,
    min_per_sec: u32,
}

struct Ring {
    /// Net units (deposits minus withdrawals) per slot, indexed by epoch % SLOTS.
    slots: [i64; SLOTS],
    /// The epoch (count of slots since `origin`) of the newest slot.
    epoch: u64,
}

/// Builds a [`RetryBudget`].
#[derive(Debug, Clone)]
pub struct RetryBudgetBuilder {
    window: Duration,
    ratio: f64,
    min_per_sec: u32,
}

impl Default for RetryBudgetBuilder {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            ratio: 0.2,
            min_per_sec: 10,
        }
    }
}

impl RetryBudgetBuilder {
    /// How long a deposit or a withdrawal counts (default 10 s; 1 s ..= 60 s).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Retries allowed per request (default 0.2: one retry per five requests;
    /// 0 ..= 1000).
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries per second allowed whatever the traffic (default 10; at most 1,000,000).
    pub fn min_per_sec(mut self, min_per_sec: u32) -> Self {
        self.min_per_sec = min_per_sec;
        self
    }

    /// Validates the settings and makes the budget, starting full at its floor.
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        if self.window < Duration::from_secs(1) || self.window > Duration::from_secs(60) {
            return Err(ConfigError::BudgetWindow(self.window));
        }
        if !(self.ratio.is_finite() && (0.0..=1000.0).contains(&self.ratio)) {
            return Err(ConfigError::BudgetRatio(self.ratio));
        }
        if self.min_per_sec > 1_000_000 {
            return Err(ConfigError::BudgetFloor(self.min_per_sec));
        }
        Ok(RetryBudget::from_valid(&self))
    }
}

impl RetryBudget {
    /// A builder with the defaults (window 10 s, ratio 0.2, floor 10/s).
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder::default()
    }

    fn from_valid(settings: &RetryBudgetBuilder) -> Self {
        let reserve = (f64::from(settings.min_per_sec) * settings.window.as_secs_f64() * UNIT as f64).round() as i64;
        Self {
            inner: Arc::new(Inner {
                pending: AtomicU64::new(0),
                ring: Mutex::new(Ring {
                    slots: [0; SLOTS],
                    epoch: 0,
                }),
                deposit_units: (settings.ratio * UNIT as f64).round() as i64,
                reserve,
                slot: settings.window / SLOTS as u32,
                origin: Instant::now(),
                window: settings.window,
                ratio: settings.ratio,
                min_per_sec: settings.min_per_sec,
            }),
        }
    }

    /// Records one logical request.
    pub fn deposit(&self) {
        self.deposit_many(1);
    }

    /// Records `requests` logical requests at once.
    pub fn deposit_many(&self, requests: u32) {
        let before = self.inner.pending.fetch_add(u64::from(requests), Ordering::Relaxed);
        if before / PLACE_EVERY != (before + u64::from(requests)) / PLACE_EVERY {
            // Place the deposits in time now and then so a long run without
            // retries does not leave them undated. Skip when contended: the
            // holder of the lock places them.
            if let Ok(mut ring) = self.inner.ring.try_lock() {
                self.inner.place(&mut ring, Instant::now());
            }
        }
    }

    /// Takes one retry from the budget; `false` when it is empty.
    pub fn withdraw(&self) -> bool {
        self.withdrawal().is_some()
    }

    /// Takes one retry from the budget, like [`withdraw`](Self::withdraw):
    /// the [`Withdrawal`] to give back if the retry turns out not to happen
    /// (its wait was cancelled, something on this side refused it); `None`
    /// when the budget is empty.
    pub fn withdrawal(&self) -> Option<Withdrawal> {
        let mut ring = self.inner.ring.lock().unpoison();
        let newest = self.inner.place(&mut ring, Instant::now());
        (self.inner.balance(&ring) >= UNIT).then(|| {
            ring.slots[newest] -= UNIT;
            Withdrawal {
                budget: self.clone(),
                epoch: ring.epoch,
            }
        })
    }

    /// Whole retries the budget would allow now.
    pub fn available(&self) -> u64 {
        let mut ring = self.inner.ring.lock().unpoison();
        self.inner.place(&mut ring, Instant::now());
        (self.inner.balance(&ring).max(0) / UNIT) as u64
    }

    /// The window deposits and withdrawals count for.
    pub fn window(&self) -> Duration {
        self.inner.window
    }

    /// Retries allowed per request.
    pub fn ratio(&self) -> f64 {
        self.inner.ratio
    }

    /// Retries per second allowed whatever the traffic.
    pub fn min_per_sec(&self) -> u32 {
        self.inner.min_per_sec
    }

    /// The balance now and the settings, for health endpoints and dashboards.
    pub fn snapshot(&self) -> BudgetSnapshot {
        BudgetSnapshot {
            available: self.available(),
            ratio: self.ratio(),
            min_per_sec: self.min_per_sec(),
            window: self.window(),
        }
    }
}

/// One retry taken from a [`RetryBudget`] ([`RetryBudget::withdrawal`]), in
/// the slot it was taken from. Dropped, the retry stays spent.
#[derive(Debug)]
#[must_use = "a withdrawal is either kept (dropped) or given back with `refund`"]
pub struct Withdrawal {
    budget: RetryBudget,
    epoch: u64,
}

impl Withdrawal {
    /// Gives the retry back (it never happened: its wait was cancelled), to
    /// the slot it was taken from while that slot is in the window; once the
    /// slot aged out, the withdrawal no longer counts and nothing is owed.
    pub fn refund(self) {
        let inner = &self.budget.inner;
        let mut ring = inner.ring.lock().unpoison();
        inner.place(&mut ring, Instant::now());
        if ring.epoch - self.epoch < SLOTS as u64 {
            ring.slots[(self.epoch % SLOTS as u64) as usize] += UNIT;
        }
    }
}

/// A [`RetryBudget`] at one moment; see [`RetryBudget::snapshot`].
///
/// Serialises for a health endpoint with `window` as whole milliseconds:
///
/// ```json
/// {"available":100,"ratio":0.2,"min_per_sec":10,"window_ms":10000}
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BudgetSnapshot {
    /// Whole retries the budget allows now.
    pub available: u64,
    /// Retries allowed per request.
    pub ratio: f64,
    /// Retries per second allowed whatever the traffic.
    pub min_per_sec: u32,
    /// The window deposits and withdrawals count for.
    pub window: Duration,
}

impl serde::Serialize for BudgetSnapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut map = s.serialize_struct("BudgetSnapshot", 4)?;
        map.serialize_field("available", &self.available)?;
        map.serialize_field("ratio", &self.ratio)?;
        map.serialize_field("min_per_sec", &self.min_per_sec)?;
        map.serialize_field("window_ms", &u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX))?;
        map.end()
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::from_valid(&RetryBudgetBuilder::default())
    }
}

impl Inner {
    fn balance(&self, ring: &Ring) -> i64 {
        ring.slots
            .iter()
            .fold(self.reserve, |sum, slot| sum.saturating_add(*slot))
    }

    /// Ages the ring to `now`, places the pending deposits, and returns the
    /// index of the newest slot.
    fn place(&self, ring: &mut Ring, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.origin);
        let now_epoch = ((elapsed.as_nanos() / self.slot.as_nanos()) as u64).max(ring.epoch);
        let gap = now_epoch - ring.epoch;
        for epoch in ring.epoch + 1..=now_epoch.min(ring.epoch + SLOTS as u64) {
            ring.slots[(epoch % SLOTS as u64) as usize] = 0;
        }
        let deposits = self.pending.swap(0, Ordering::AcqRel);
        // The deposits happened somewhere between the last placement and now:
        // dated to the earliest they can have happened, they leave the window
        // no later than they should (dated later, requests made before a quiet
        // spell would fund retries after they left the window). Gone already
        // when that slot has.
        if deposits > 0 && gap < SLOTS as u64 {
            let units = i128::from(deposits) * i128::from(self.deposit_units);
            let slot = &mut ring.slots[(ring.epoch % SLOTS as u64) as usize];
            *slot = slot.saturating_add(i64::try_from(units).unwrap_or(i64::MAX));
        }
        ring.epoch = now_epoch;
        (now_epoch % SLOTS as u64) as usize
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("window", &self.inner.window)
            .field("ratio", &self.inner.ratio)
            .field("min_per_sec", &self.inner.min_per_sec)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_sec: u32, window_secs: u64) -> RetryBudget {
        RetryBudget::builder()
            .ratio(ratio)
            .min_per_sec(min_per_sec)
            .window(Duration::from_secs(window_secs))
            .build()
            .unwrap()
    }

    fn withdrawals(budget: &RetryBudget) -> usize {
        std::iter::from_fn(|| budget.withdraw().then_some(()))
            .take(1_000_000)
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_reports_the_balance_and_serialises_for_health() {
        let b = budget(0.5, 2, 10);
        // The floor: 2 per second over 10 s.
        assert_eq!(
            b.snapshot(),
            BudgetSnapshot {
                available: 20,
                ratio: 0.5,
                min_per_sec: 2,
                window: Duration::from_secs(10),
            }
        );
        for _ in 0..4 {
            b.deposit();
        }
        assert!(b.withdraw());
        assert_eq!(
            serde_json::to_value(b.snapshot()).unwrap(),
            serde_json::json!({"available": 21, "ratio": 0.5, "min_per_sec": 2, "window_ms": 10_000})
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_fund_a_share_of_retries() {
        let b = budget(0.5, 0, 10);
        assert_eq!(withdrawals(&b), 0);
        for _ in 0..10 {
            b.deposit();
        }
        assert_eq!(b.available(), 5);
        assert_eq!(withdrawals(&b), 5);
        // Refill: new requests fund new retries.
        for _ in 0..4 {
            b.deposit();
        }
        assert_eq!(withdrawals(&b), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_and_withdrawals_expire_after_the_window() {
        let b = budget(1.0, 0, 10);
        for _ in 0..10 {
            b.deposit();
        }
        assert_eq!(b.available(), 10);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(b.available(), 10);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.available(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn floor_refills_as_withdrawals_age_out() {
        let b = budget(0.0, 2, 1);
        assert_eq!(withdrawals(&b), 2);
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(withdrawals(&b), 0);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(withdrawals(&b), 2);
        // Requests do not add to a zero-ratio budget.
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(withdrawals(&b), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_left_the_window_fund_no_retry() {
        // 63 requests (one short of a placement) at the start of a quiet spell
        // longer than the window: a retry after it finds nothing to spend.
        let b = budget(1.0, 0, 10);
        for _ in 0..63 {
            b.deposit();
        }
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(b.available(), 0);
        // Within the window they count, dated to the earliest they can be.
        let b = budget(1.0, 0, 10);
        for _ in 0..63 {
            b.deposit();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.available(), 63);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.available(), 0, "gone a window after the earliest they were made");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_after_a_quiet_hour_counts_from_its_64th_request() {
        let b = budget(1.0, 0, 10);
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..128 {
            b.deposit();
        }
        // The first 64 are dated to the last placement, an hour ago, outside
        // the window; the next 64 are placed now.
        assert_eq!(b.available(), 64);
    }

    #[tokio::test(start_paused = true)]
    async fn refund_gives_a_withdrawal_back_while_it_counts() {
        let b = budget(0.0, 1, 1);
        let taken = b.withdrawal().unwrap();
        assert!(!b.withdraw());
        taken.refund();
        let taken = b.withdrawal().unwrap();
        // Once its slot aged out the withdrawal no longer counts: nothing is owed.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.available(), 1);
        taken.refund();
        assert_eq!(b.available(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_one_balance() {
        let b = budget(1.0, 0, 10);
        let other = b.clone();
        b.deposit();
        assert!(other.withdraw());
        assert!(!b.withdraw());
    }

    #[test]
    fn validation() {
        let err = |b: RetryBudgetBuilder| b.build().unwrap_err();
        assert_eq!(
            err(RetryBudget::builder().window(Duration::from_millis(999))),
            ConfigError::BudgetWindow(Duration::from_millis(999))
        );
        assert_eq!(
            err(RetryBudget::builder().window(Duration::from_secs(61))),
            ConfigError::BudgetWindow(Duration::from_secs(61))
        );
        assert_eq!(err(RetryBudget::builder().ratio(-0.1)), ConfigError::BudgetRatio(-0.1));
        assert_eq!(
            err(RetryBudget::builder().ratio(1000.5)),
            ConfigError::BudgetRatio(1000.5)
        );
        assert!(RetryBudget::builder().ratio(f64::NAN).build().is_err());
        assert_eq!(
            err(RetryBudget::builder().min_per_sec(1_000_001)),
            ConfigError::BudgetFloor(1_000_001)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn default_matches_the_builder_defaults() {
        let b = RetryBudget::default();
        assert_eq!(b.available(), 100);
        assert_eq!(
            (b.window(), b.ratio(), b.min_per_sec()),
            (Duration::from_secs(10), 0.2, 10)
        );
        for _ in 0..50 {
            b.deposit();
        }
        assert_eq!(b.available(), 110);
    }
}
