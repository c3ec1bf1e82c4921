//! Adaptive concurrency limits, after Netflix's `concurrency-limits`.
//!
//! An adaptive bulkhead feeds every completed call to a [`Limit`] as a
//! [`Sample`] (its round-trip time, how many calls were in flight when it
//! started, and whether it was dropped, i.e. classified as a failure) and
//! applies the limit it answers. Two algorithms come with the crate:
//!
//! - [`Aimd`]: additive increase, multiplicative decrease. Grows by one while
//!   the bulkhead is used and calls succeed; shrinks by a ratio on a drop or
//!   a call slower than a timeout. Simple and robust; needs failures (or the
//!   timeout) to find the limit.
//! - [`Gradient2`]: compares the recent round-trip time with a long-term
//!   average and shrinks the limit as latency rises above it, so it finds the
//!   downstream's capacity from latency alone, before anything fails.
//!
//! Cancelled calls are not sampled: they say nothing about the downstream.

use std::fmt;
use std::time::Duration;

use crate::error::ConfigError;

/// The largest limit and queue length: both counts share one 64-bit word.
pub(crate) const MAX_COUNT: usize = (u32::MAX >> 1) as usize;

/// Makes a fresh adaptive limit for each compartment.
pub(crate) type MakeLimit = std::sync::Arc<dyn Fn() -> Box<dyn Limit> + Send + Sync>;

/// A fixed limit, or an adaptive one.
#[derive(Clone)]
pub(crate) enum LimitConfig {
    Fixed(usize),
    Adaptive(MakeLimit),
}

impl fmt::Debug for LimitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitConfig::Fixed(limit) => f.debug_tuple("Fixed").field(limit).finish(),
            LimitConfig::Adaptive(make) => f.debug_tuple("Adaptive").field(&make()).finish(),
        }
    }
}

/// One completed call, as an adaptive [`Limit`] sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    rtt: Duration,
    in_flight: usize,
    dropped: bool,
}

impl Sample {
    /// A call that took `rtt` and started with `in_flight` calls in flight
    /// (itself included); `dropped` when its outcome was a failure.
    pub fn new(rtt: Duration, in_flight: usize, dropped: bool) -> Self {
        Self {
            rtt,
            in_flight,
            dropped,
        }
    }

    /// How long the call took from admission to its response.
    pub fn rtt(&self) -> Duration {
        self.rtt
    }

    /// Calls in flight when it started, itself included.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// True when the call failed (by the bulkhead's classifier).
    pub fn dropped(&self) -> bool {
        self.dropped
    }
}

/// An algorithm that sets a concurrency limit from completed calls.
///
/// Implementations keep the limit between their own minimum and maximum; the
/// bulkhead also keeps it at least 1.
pub trait Limit: fmt::Debug + Send + 'static {
    /// The current limit.
    fn limit(&self) -> usize;

    /// Takes one sample into account and returns the new limit.
    fn update(&mut self, sample: &Sample) -> usize;
}

/// The setters of the bounds both builders share.
macro_rules! bounds_setters {
    () => {
        /// The limit to start from (default 20).
        pub fn initial_limit(mut self, initial: usize) -> Self {
            self.initial = initial;
            self
        }

        /// The lowest limit (default 1).
        pub fn min_limit(mut self, min: usize) -> Self {
            self.min = min;
            self
        }

        /// The highest limit (default 200).
        pub fn max_limit(mut self, max: usize) -> Self {
            self.max = max;
            self
        }
    };
}

fn check_bounds(min: usize, initial: usize, max: usize) -> Result<(), ConfigError> {
    if min == 0 || min > initial || initial > max || max > MAX_COUNT {
        return Err(ConfigError::LimitBounds { min, initial, max });
    }
    Ok(())
}

/// Gathers samples into windows of about one round trip (as many samples
/// as the current limit), so an algorithm adjusts once per round trip, as
/// TCP does, rather than once per call: per-call updates react to one
/// overload as many times as there were calls in flight, and oscillate.
#[derive(Debug, Clone, Default)]
struct Window {
    samples: usize,
    rtt_sum: Duration,
    max_in_flight: usize,
    dropped: bool,
}

impl Window {
    /// Adds `sample`; once the window holds `size` samples, empties it and
    /// returns their aggregate: mean round trip, most in flight, any drop.
    fn add(&mut self, sample: &Sample, size: usize) -> Option<Sample> {
        self.samples += 1;
        self.rtt_sum += sample.rtt;
        self.max_in_flight = self.max_in_flight.max(sample.in_flight);
        self.dropped |= sample.dropped;
        if self.samples < size.max(1) {
            return None;
        }
        let window = std::mem::take(self);
        Some(Sample::new(
            window.rtt_sum / window.samples as u32,
            window.max_in_flight,
            window.dropped,
        ))
    }
}

/// Additive increase, multiplicative decrease.
///
/// Samples are taken in windows of as many calls as the limit (about one
/// round trip). After a window with a dropped call, or with a call slower
/// than `timeout`, the limit becomes `limit × backoff_ratio` (at
/// least `min`); after any other window in which at least half the limit was
/// in use, it grows by one (at most `max`). Growing only when the limit is
/// actually used keeps an idle bulkhead from inflating its limit.
///
/// Defaults (Netflix's, but a minimum of 1): initial 20, min 1, max 200,
/// backoff ratio 0.9, timeout 5 s.
#[derive(Debug, Clone)]
pub struct Aimd {
    window: Window,
    limit: usize,
    min: usize,
    max: usize,
    backoff_ratio: f64,
    timeout: Duration,
}

impl Aimd {
    /// A builder with the defaults.
    pub fn builder() -> AimdBuilder {
        AimdBuilder {
            initial: 20,
            min: 1,
            max: 200,
            backoff_ratio: 0.9,
            timeout: Duration::from_secs(5),
        }
    }
}

impl Limit for Aimd {
    fn limit(&self) -> usize {
        self.limit
    }

    fn update(&mut self, sample: &Sample) -> usize {
        // A call slower than the timeout is a drop, however fast the others
        // in its window were: one hung call must not hide behind their mean.
        let call = Sample::new(
            sample.rtt,
            sample.in_flight,
            sample.dropped || sample.rtt > self.timeout,
        );
        let Some(sample) = self.window.add(&call, self.limit) else {
            return self.limit;
        };
        if sample.dropped {
            self.limit = ((self.limit as f64 * self.backoff_ratio) as usize).max(self.min);
        } else if sample.in_flight * 2 >= self.limit {
            self.limit = (self.limit + 1).min(self.max);
        }
        self.limit
    }
}

/// Builds an [`Aimd`] limit.
#[derive(Debug, Clone)]
pub struct AimdBuilder {
    initial: usize,
    min: usize,
    max: usize,
    backoff_ratio: f64,
    timeout: Duration,
}

impl AimdBuilder {
    bounds_setters!();

    /// The factor applied on a drop, in (0, 1) (default 0.9).
    pub fn backoff_ratio(mut self, ratio: f64) -> Self {
        self.backoff_ratio = ratio;
        self
    }

    /// A call slower than this counts as a drop (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks `1 ≤ min ≤ initial ≤ max`, the ratio in (0, 1) and a non-zero timeout.
    pub fn build(self) -> Result<Aimd, ConfigError> {
        check_bounds(self.min, self.initial, self.max)?;
        if !(self.backoff_ratio > 0.0 && self.backoff_ratio < 1.0) {
            return Err(ConfigError::BackoffRatio(self.backoff_ratio));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        Ok(Aimd {
            window: Window::default(),
            limit: self.initial,
            min: self.min,
            max: self.max,
            backoff_ratio: self.backoff_ratio,
            timeout: self.timeout,
        })
    }
}

/// An exponential average that starts as a plain average over its first samples.
#[derive(Debug, Clone)]
struct ExpAverage {
    value: f64,
    count: usize,
    window: usize,
    warm_up: usize,
}

impl ExpAverage {
    fn new(window: usize, warm_up: usize) -> Self {
        Self {
            value: 0.0,
            count: 0,
            window,
            warm_up,
        }
    }

    fn is_warming_up(&self) -> bool {
        self.count < self.warm_up
    }

    fn add(&mut self, sample: f64) -> f64 {
        if self.count < self.warm_up {
            self.count += 1;
            self.value += (sample - self.value) / self.count as f64;
        } else {
            let factor = 2.0 / (self.window as f64 + 1.0);
            self.value = self.value * (1.0 - factor) + sample * factor;
        }
        self.value
    }
}

/// Gradient2: shrinks the limit as the recent round-trip time rises above its
/// long-term average.
///
/// Samples are taken in windows of as many calls as the limit (about one
/// round trip); for each window, with `rtt` its mean round trip:
/// `gradient = clamp(tolerance × long_rtt / rtt, 0.5, 1)`,
/// `new = limit × gradient + queue_size`, smoothed as
/// `limit × (1 − smoothing) + new × smoothing`, kept within `[min, max]`.
/// The long-term average is an exponential average over `long_window`
/// windows; when it is more than twice the recent time (after an overload) it
/// decays faster so the limit can recover. A window with a dropped call
/// halves the estimate and adds no `queue_size`, so a downstream that keeps
/// failing takes the limit down to `min`. While fewer than half the limit is
/// in use and nothing was dropped, the limit holds: an idle bulkhead learns
/// nothing about capacity.
///
/// Unlike Netflix's Gradient2, the long-term average learns only from windows
/// without a drop, and of those only from its first windows, from windows in
/// which less than half the limit was in use, and from windows faster than
/// itself: failures answered at once (a refused connection) would teach it a
/// round trip no real answer reaches, and a saturated window's round trip
/// includes the queueing the limit itself causes, and learning from it lets
/// the baseline and the limit creep upwards for as long as the saturation
/// lasts. So start from an `initial_limit` the downstream handles without
/// queueing: the first windows teach the unloaded round trip. Against a
/// downstream whose latency grows with load past its capacity `C`, the limit
/// settles near `tolerance × C + queue_size`.
///
/// Defaults (Netflix's, but a minimum of 1): initial 20, min 1, max 200,
/// smoothing 0.2, tolerance 1.5, long window 600 samples, queue size 4.
#[derive(Debug, Clone)]
pub struct Gradient2 {
    window: Window,
    estimate: f64,
    min: usize,
    max: usize,
    smoothing: f64,
    tolerance: f64,
    queue_size: usize,
    long_rtt: ExpAverage,
}

impl Gradient2 {
    /// A builder with the defaults.
    pub fn builder() -> Gradient2Builder {
        Gradient2Builder {
            initial: 20,
            min: 1,
            max: 200,
            smoothing: 0.2,
            tolerance: 1.5,
            long_window: 600,
            queue_size: 4,
        }
    }
}

impl Limit for Gradient2 {
    fn limit(&self) -> usize {
        self.estimate as usize
    }

    fn update(&mut self, sample: &Sample) -> usize {
        let Some(sample) = self.window.add(sample, self.limit()) else {
            return self.limit();
        };
        if sample.dropped {
            // The steepest gradient without the headroom: a downstream that
            // keeps failing takes the limit down to its minimum. Its round
            // trip teaches the baseline nothing: failures answered at once (a
            // refused connection) would set it where no real answer reaches,
            // and the limit would stay at its floor once the downstream is back.
            return self.smooth(self.estimate * 0.5);
        }
        let short = sample.rtt.as_secs_f64().max(1e-9);
        let app_limited = (sample.in_flight as f64) < self.estimate / 2.0;
        // A saturated window's round trip includes queueing the limit itself
        // caused; learning from it would let the baseline, and with it the
        // limit, creep upwards for as long as the saturation lasts.
        let mut long = if self.long_rtt.is_warming_up() || app_limited || short <= self.long_rtt.value {
            self.long_rtt.add(short)
        } else {
            self.long_rtt.value
        };
        if long / short > 2.0 {
            long *= 0.95;
            self.long_rtt.value = long;
        }
        if app_limited {
            return self.limit();
        }
        let gradient = (self.tolerance * long / short).clamp(0.5, 1.0);
        self.smooth(self.estimate * gradient + self.queue_size as f64)
    }
}

impl Gradient2 {
    /// Moves the estimate `smoothing` of the way to `target`, within the bounds.
    fn smooth(&mut self, target: f64) -> usize {
        let smoothed = self.estimate * (1.0 - self.smoothing) + target * self.smoothing;
        self.estimate = smoothed.clamp(self.min as f64, self.max as f64);
        self.limit()
    }
}

/// Builds a [`Gradient2`] limit.
#[derive(Debug, Clone)]
pub struct Gradient2Builder {
    initial: usize,
    min: usize,
    max: usize,
    smoothing: f64,
    tolerance: f64,
    long_window: usize,
    queue_size: usize,
}

impl Gradient2Builder {
    bounds_setters!();

    /// How much of each new estimate is taken, in (0, 1] (default 0.2).
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// How much slower than the long-term average a call may be before the
    /// limit shrinks, at least 1 (default 1.5).
    pub fn rtt_tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Windows in the long-term average (default 600).
    pub fn long_window(mut self, samples: usize) -> Self {
        self.long_window = samples;
        self
    }

    /// Headroom added to each estimate so the limit can probe upwards (default 4).
    pub fn queue_size(mut self, queue_size: usize) -> Self {
        self.queue_size = queue_size;
        self
    }

    /// Checks `1 ≤ min ≤ initial ≤ max`, smoothing in (0, 1], tolerance ≥ 1
    /// and a non-zero window.
    pub fn build(self) -> Result<Gradient2, ConfigError> {
        check_bounds(self.min, self.initial, self.max)?;
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return Err(ConfigError::Smoothing(self.smoothing));
        }
        if !(self.tolerance >= 1.0 && self.tolerance.is_finite()) {
            return Err(ConfigError::Tolerance(self.tolerance));
        }
        if self.long_window == 0 {
            return Err(ConfigError::ZeroWindow);
        }
        Ok(Gradient2 {
            window: Window::default(),
            estimate: self.initial as f64,
            min: self.min,
            max: self.max,
            smoothing: self.smoothing,
            tolerance: self.tolerance,
            queue_size: self.queue_size,
            long_rtt: ExpAverage::new(self.long_window, 10.min(self.long_window)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds one window (as many samples as the limit) of identical samples.
    fn window(limit: &mut impl Limit, rtt: Duration, in_flight: usize, dropped: bool) -> usize {
        let size = limit.limit();
        (0..size)
            .map(|_| limit.update(&Sample::new(rtt, in_flight, dropped)))
            .last()
            .unwrap()
    }

    #[test]
    fn aimd_grows_when_used_and_backs_off_on_drops_once_per_window() {
        let mut aimd = Aimd::builder()
            .initial_limit(10)
            .min_limit(2)
            .max_limit(12)
            .build()
            .unwrap();
        assert_eq!(window(&mut aimd, ms(5), 4, false), 10, "under half in use: holds");
        for _ in 0..9 {
            assert_eq!(aimd.update(&Sample::new(ms(5), 5, false)), 10, "within a window: holds");
        }
        assert_eq!(
            aimd.update(&Sample::new(ms(5), 5, false)),
            11,
            "a window ends: one more"
        );
        assert_eq!(window(&mut aimd, ms(5), 11, false), 12);
        assert_eq!(window(&mut aimd, ms(5), 12, false), 12, "capped at max");
        for _ in 0..11 {
            aimd.update(&Sample::new(ms(5), 12, false));
        }
        assert_eq!(
            aimd.update(&Sample::new(ms(5), 12, true)),
            10,
            "one drop in a window: 12 × 0.9 rounded down"
        );
        assert_eq!(
            window(&mut aimd, Duration::from_secs(6), 10, false),
            9,
            "slower than the timeout"
        );
        for _ in 0..50 {
            window(&mut aimd, ms(5), 1, true);
        }
        assert_eq!(aimd.limit(), 2, "floored at min");
    }

    #[test]
    fn gradient2_shrinks_with_latency_and_holds_when_idle() {
        let mut g = Gradient2::builder()
            .initial_limit(50)
            .min_limit(5)
            .max_limit(100)
            .build()
            .unwrap();
        for _ in 0..20 {
            window(&mut g, ms(10), 50, false);
        }
        let grown = g.limit();
        assert!(grown > 50, "steady latency probes upwards: {grown}");
        for _ in 0..20 {
            window(&mut g, ms(40), grown, false);
        }
        assert!(g.limit() < grown / 2, "4× latency shrinks it: {}", g.limit());
        let held = g.limit();
        assert_eq!(window(&mut g, ms(100), 1, false), held, "little in use: holds");
        assert!(window(&mut g, ms(10), 1, true) < held, "a drop shrinks it anyway");
    }

    #[test]
    fn aimd_backs_off_on_one_call_slower_than_the_timeout() {
        let mut aimd = Aimd::builder().initial_limit(10).build().unwrap();
        for _ in 0..9 {
            assert_eq!(aimd.update(&Sample::new(ms(1), 10, false)), 10);
        }
        assert_eq!(
            aimd.update(&Sample::new(Duration::from_secs(6), 10, false)),
            9,
            "one hung call among fast ones: 10 × 0.9"
        );
    }

    #[test]
    fn gradient2_brings_a_failing_downstream_down_to_its_minimum() {
        let mut g = Gradient2::builder().initial_limit(2).build().unwrap();
        for _ in 0..40 {
            let limit = g.limit();
            window(&mut g, ms(10), limit, true);
        }
        assert_eq!(g.limit(), 1, "every window dropped: the minimum");
        let mut busy = Gradient2::builder().build().unwrap();
        for _ in 0..60 {
            let limit = busy.limit();
            window(&mut busy, ms(10), limit, true);
        }
        assert_eq!(busy.limit(), 1, "from the default 20, too");
    }

    #[test]
    fn gradient2_recovers_after_an_outage_of_fast_failures() {
        let mut g = Gradient2::builder().build().unwrap();
        for _ in 0..50 {
            let limit = g.limit();
            window(&mut g, ms(10), limit, false);
        }
        let healthy = g.limit();
        assert!(healthy > 20, "steady latency probes upwards: {healthy}");
        // Connection refused at once: failures far faster than real answers.
        for _ in 0..100 {
            let limit = g.limit();
            window(&mut g, Duration::from_micros(100), limit, true);
        }
        assert_eq!(g.limit(), 1);
        for _ in 0..200 {
            let limit = g.limit();
            window(&mut g, ms(10), limit, false);
        }
        assert!(
            g.limit() >= healthy,
            "the round trip it learned before the outage is back: {} against {healthy}",
            g.limit()
        );
    }

    #[test]
    fn builders_reject_impossible_settings() {
        assert!(matches!(
            Aimd::builder().min_limit(0).build(),
            Err(ConfigError::LimitBounds { .. })
        ));
        assert!(matches!(
            Aimd::builder().initial_limit(300).build(),
            Err(ConfigError::LimitBounds { .. })
        ));
        assert!(matches!(
            Aimd::builder().min_limit(30).build(),
            Err(ConfigError::LimitBounds { .. })
        ));
        assert!(matches!(
            Aimd::builder().backoff_ratio(1.0).build(),
            Err(ConfigError::BackoffRatio(_))
        ));
        assert!(matches!(
            Aimd::builder().timeout(Duration::ZERO).build(),
            Err(ConfigError::ZeroTimeout)
        ));
        assert!(matches!(
            Gradient2::builder().smoothing(0.0).build(),
            Err(ConfigError::Smoothing(_))
        ));
        assert!(matches!(
            Gradient2::builder().rtt_tolerance(0.9).build(),
            Err(ConfigError::Tolerance(_))
        ));
        assert!(matches!(
            Gradient2::builder().long_window(0).build(),
            Err(ConfigError::ZeroWindow)
        ));
        assert!(matches!(
            Gradient2::builder().max_limit(10).build(),
            Err(ConfigError::LimitBounds {
                min: 1,
                initial: 20,
                max: 10
            })
        ));
    }
}
