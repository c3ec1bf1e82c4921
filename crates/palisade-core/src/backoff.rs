//! Backoff with jitter, the one way every palisade layer spaces out repeated
//! attempts: a retry's waits, a circuit breaker's growing open duration, an
//! outbox relay's redelivery delay.
//!
//! A [`Backoff`] is the schedule; a [`Jitter`] spreads each wait with a
//! uniform number drawn from a [`Random`] source, which builders let callers
//! replace (`random(|| 0.5)`) so tests are deterministic.
//!
//! Step `n` (1 for the first: the first retry, the first trip, the first
//! redelivery) waits:
//!
//! | backoff | wait before step `n` |
//! |---|---|
//! | [`Backoff::constant(d)`](Backoff::constant) | `d` |
//! | [`Backoff::linear(base, step, cap)`](Backoff::linear) | `min(cap, base + step × (n − 1))` |
//! | [`Backoff::exponential(base, multiplier, cap)`](Backoff::exponential) | `min(cap, base × multiplierⁿ⁻¹)` |
//!
//! and the jitter turns that wait `d` into (with `u` uniform in `[0, 1)`, as
//! in AWS's "Exponential Backoff and Jitter"):
//!
//! | jitter | wait |
//! |---|---|
//! | [`Jitter::None`] | `d` |
//! | [`Jitter::Full`] | `d × u` |
//! | [`Jitter::Equal`] | `d / 2 + d / 2 × u` |
//! | [`Jitter::Decorrelated`] | `min(cap, base + (3 × previous − base) × u)`, the previous wait starting at `base` |
//! | [`Jitter::Shorten(f)`](Jitter::Shorten) | `d × (1 − f × u)`: cut by up to the fraction `f` |
//!
//! Decorrelated jitter ignores the schedule's growth and uses only its base
//! and cap: each wait is drawn from the previous one. Waits are computed in
//! whole nanoseconds, rounded, and saturate at the cap instead of overflowing.
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::backoff::{Backoff, Jitter, Random};
//!
//! let backoff = Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(1));
//! backoff.validate().expect("cap above base, multiplier at least 1");
//! let random = Random::new(|| 0.5);
//! let waits: Vec<Duration> = (1..=5)
//!     .map(|n| Jitter::Equal.apply(&backoff, n, Duration::ZERO, random.unit()))
//!     .collect();
//! assert_eq!(waits, [75, 150, 300, 600, 750].map(Duration::from_millis));
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A source of uniform numbers in `[0, 1)` for jitter; cheap to clone.
///
/// The default is `fastrand::f64`. Every palisade builder that jitters takes
/// one through a method named `random`, so tests pass a fixed number.
#[derive(Clone)]
pub struct Random(Arc<dyn Fn() -> f64 + Send + Sync>);

impl Random {
    /// Numbers from `source`, which should return values in `[0, 1)`; values
    /// outside are clamped where they are used, and `NaN` counts as zero.
    pub fn new(source: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(source))
    }

    /// The next number.
    pub fn unit(&self) -> f64 {
        (self.0)()
    }
}

impl Default for Random {
    fn default() -> Self {
        Self::new(fastrand::f64)
    }
}

impl fmt::Debug for Random {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Random")
    }
}

/// An impossible backoff or jitter, found by [`Backoff::validate`] and
/// [`Jitter::validate`]; each layer reports it as its own `ConfigError`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BackoffError {
    /// The cap is below the base wait.
    CapBelowBase {
        /// The base wait.
        base: Duration,
        /// The cap.
        cap: Duration,
    },
    /// An exponential multiplier below 1 or not finite.
    Multiplier(f64),
    /// A [`Jitter::Shorten`] fraction outside `[0, 1]`.
    Fraction(f64),
}

impl fmt::Display for BackoffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CapBelowBase { base, cap } => write!(f, "backoff cap {cap:?} is below the base wait {base:?}"),
            Self::Multiplier(m) => write!(f, "backoff multiplier must be a finite number of at least 1, got {m}"),
            Self::Fraction(j) => write!(f, "jitter fraction must be within [0, 1], got {j}"),
        }
    }
}

impl std::error::Error for BackoffError {}

/// The schedule of waits between attempts, before jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Constant(Duration),
    Linear {
        base: Duration,
        step: Duration,
        cap: Duration,
    },
    Exponential {
        base: Duration,
        multiplier: f64,
        cap: Duration,
    },
}

impl Backoff {
    /// The same wait before every retry (zero retries at once).
    pub const fn constant(wait: Duration) -> Self {
        Self {
            kind: Kind::Constant(wait),
        }
    }

    /// Retries at once, with no wait.
    pub const fn immediate() -> Self {
        Self::constant(Duration::ZERO)
    }

    /// `base`, then `base + step`, `base + 2 × step`, ..., never above `cap`.
    pub const fn linear(base: Duration, step: Duration, cap: Duration) -> Self {
        Self {
            kind: Kind::Linear { base, step, cap },
        }
    }

    /// `base`, then `base × multiplier`, `base × multiplier²`, ..., never above `cap`.
    pub const fn exponential(base: Duration, multiplier: f64, cap: Duration) -> Self {
        Self {
            kind: Kind::Exponential { base, multiplier, cap },
        }
    }

    /// The first wait.
    pub fn base(&self) -> Duration {
        match self.kind {
            Kind::Constant(wait) => wait,
            Kind::Linear { base, .. } | Kind::Exponential { base, .. } => base,
        }
    }

    /// The longest wait.
    pub fn cap(&self) -> Duration {
        match self.kind {
            Kind::Constant(wait) => wait,
            Kind::Linear { cap, .. } | Kind::Exponential { cap, .. } => cap,
        }
    }

    /// The wait before step `retry` (1 for the first), before jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        let steps = retry.saturating_sub(1);
        match self.kind {
            Kind::Constant(wait) => wait,
            Kind::Linear { base, step, cap } => step
                .checked_mul(steps)
                .and_then(|s| base.checked_add(s))
                .unwrap_or(cap)
                .min(cap),
            // From zero it stays there: the product below would be 0 × ∞,
            // not a number, once the power overflows.
            Kind::Exponential { base, .. } if base.is_zero() => Duration::ZERO,
            Kind::Exponential { base, multiplier, cap } => {
                let nanos = base.as_nanos() as f64 * multiplier.powi(steps.min(i32::MAX as u32) as i32);
                if nanos.is_finite() && nanos < cap.as_nanos() as f64 {
                    nanos_to_duration(nanos)
                } else {
                    cap
                }
            }
        }
    }

    /// Checks that the cap is not below the base and that an exponential
    /// multiplier is a finite number of at least 1 (in that order).
    pub fn validate(&self) -> Result<(), BackoffError> {
        match self.kind {
            Kind::Constant(_) => Ok(()),
            Kind::Linear { base, cap, .. } if cap < base => Err(BackoffError::CapBelowBase { base, cap }),
            Kind::Exponential { base, cap, .. } if cap < base => Err(BackoffError::CapBelowBase { base, cap }),
            Kind::Exponential { multiplier, .. } if !(multiplier.is_finite() && multiplier >= 1.0) => {
                Err(BackoffError::Multiplier(multiplier))
            }
            Kind::Linear { .. } | Kind::Exponential { .. } => Ok(()),
        }
    }
}

/// How a wait from the [`Backoff`] schedule is randomised, so clients that
/// failed together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Jitter {
    /// The schedule's wait exactly.
    None,
    /// Uniform between zero and the schedule's wait (AWS's recommendation,
    /// the default: it spreads retries the most).
    #[default]
    Full,
    /// Half the schedule's wait plus a uniform share of the other half.
    Equal,
    /// Uniform between the base and three times the previous wait, capped.
    Decorrelated,
    /// The schedule's wait cut by up to the given fraction (within `[0, 1]`):
    /// `d × (1 − fraction × u)`, so the wait is never longer than the schedule's.
    Shorten(f64),
}

impl Jitter {
    /// Checks that a [`Jitter::Shorten`] fraction is within `[0, 1]`.
    pub fn validate(&self) -> Result<(), BackoffError> {
        match *self {
            Jitter::Shorten(fraction) if !(0.0..=1.0).contains(&fraction) => Err(BackoffError::Fraction(fraction)),
            _ => Ok(()),
        }
    }

    /// The wait before step `retry` given the schedule, the previous wait
    /// (zero before the first step) and a uniform number `unit` in `[0, 1)`
    /// (clamped into `[0, 1]`; `NaN` counts as zero).
    pub fn apply(self, backoff: &Backoff, retry: u32, previous: Duration, unit: f64) -> Duration {
        let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 0.0 };
        match self {
            Jitter::None => backoff.delay(retry),
            Jitter::Full => scale(backoff.delay(retry), unit),
            Jitter::Equal => {
                let wait = backoff.delay(retry);
                let half = wait / 2;
                half + scale(wait - half, unit)
            }
            Jitter::Decorrelated => {
                let base = backoff.base();
                let previous = if previous.is_zero() { base } else { previous };
                let upper = previous.saturating_mul(3).max(base);
                (base + scale(upper - base, unit)).min(backoff.cap())
            }
            Jitter::Shorten(fraction) => scale(backoff.delay(retry), 1.0 - fraction.clamp(0.0, 1.0) * unit),
        }
    }
}

fn scale(wait: Duration, unit: f64) -> Duration {
    nanos_to_duration(wait.as_nanos() as f64 * unit)
}

fn nanos_to_duration(nanos: f64) -> Duration {
    // Rounding to whole nanoseconds keeps exact schedules exact
    // (100 ms × 2 is 200 ms, not 199.999999 ms).
    let nanos = nanos.round();
    if nanos >= u64::MAX as f64 {
        Duration::from_nanos(u64::MAX)
    } else {
        Duration::from_nanos(nanos as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const S: Duration = Duration::from_secs(1);

    fn waits(backoff: Backoff, jitter: Jitter, unit: f64, retries: u32) -> Vec<Duration> {
        let mut previous = Duration::ZERO;
        (1..=retries)
            .map(|n| {
                previous = jitter.apply(&backoff, n, previous, unit);
                previous
            })
            .collect()
    }

    #[test]
    fn an_exponential_schedule_from_zero_stays_at_zero() {
        let backoff = Backoff::exponential(Duration::ZERO, 2.0, S);
        // 2^1024 overflows to infinity, and 0 × infinity is not a number.
        for retry in [1, 2, 1025, 5000, u32::MAX] {
            assert_eq!(backoff.delay(retry), Duration::ZERO, "retry {retry}");
        }
    }

    #[test]
    fn constant_linear_exponential_schedules() {
        assert_eq!(waits(Backoff::constant(250 * MS), Jitter::None, 0.0, 3), [250 * MS; 3]);
        assert_eq!(waits(Backoff::immediate(), Jitter::Full, 0.7, 2), [Duration::ZERO; 2]);
        assert_eq!(
            waits(Backoff::linear(100 * MS, 50 * MS, 220 * MS), Jitter::None, 0.0, 5),
            [100 * MS, 150 * MS, 200 * MS, 220 * MS, 220 * MS]
        );
        assert_eq!(
            waits(Backoff::exponential(S, 2.0, 8 * S), Jitter::None, 0.0, 6),
            [S, 2 * S, 4 * S, 8 * S, 8 * S, 8 * S]
        );
        assert_eq!(
            waits(Backoff::exponential(100 * MS, 1.5, S), Jitter::None, 0.0, 6),
            [
                100 * MS,
                150 * MS,
                225 * MS,
                337_500 * Duration::from_micros(1),
                506_250 * Duration::from_micros(1),
                759_375 * Duration::from_micros(1)
            ]
        );
    }

    #[test]
    fn jitter_variants_with_fixed_randomness() {
        let exp = Backoff::exponential(S, 2.0, 8 * S);
        assert_eq!(waits(exp, Jitter::Full, 0.5, 5), [500 * MS, S, 2 * S, 4 * S, 4 * S]);
        assert_eq!(waits(exp, Jitter::Full, 0.0, 2), [Duration::ZERO; 2]);
        assert_eq!(
            waits(exp, Jitter::Equal, 0.5, 5),
            [750 * MS, 1500 * MS, 3 * S, 6 * S, 6 * S]
        );
        assert_eq!(waits(exp, Jitter::Equal, 0.0, 3), [500 * MS, S, 2 * S]);
        // base 1 s: uniform in [1 s, 3 × previous), capped at 8 s.
        assert_eq!(
            waits(exp, Jitter::Decorrelated, 0.5, 5),
            [2 * S, 3500 * MS, 5750 * MS, 8 * S, 8 * S]
        );
        assert_eq!(waits(exp, Jitter::Decorrelated, 0.0, 3), [S, S, S]);
    }

    #[test]
    fn extreme_values_saturate_instead_of_panicking() {
        let exp = Backoff::exponential(S, 10.0, Duration::MAX);
        assert_eq!(exp.delay(u32::MAX), Duration::MAX);
        let lin = Backoff::linear(S, Duration::MAX, Duration::MAX);
        assert_eq!(lin.delay(3), Duration::MAX);
        assert_eq!(Jitter::Full.apply(&exp, 1, Duration::ZERO, f64::NAN), Duration::ZERO);
        let capped = Backoff::exponential(S, 10.0, 10 * S);
        assert_eq!(Jitter::Decorrelated.apply(&capped, 2, Duration::MAX, 0.99), 10 * S);
    }

    #[test]
    fn validation() {
        assert_eq!(
            Backoff::exponential(2 * S, 2.0, S).validate(),
            Err(BackoffError::CapBelowBase { base: 2 * S, cap: S })
        );
        assert_eq!(
            Backoff::linear(2 * S, S, S).validate(),
            Err(BackoffError::CapBelowBase { base: 2 * S, cap: S })
        );
        assert_eq!(
            Backoff::exponential(S, 0.5, 2 * S).validate(),
            Err(BackoffError::Multiplier(0.5))
        );
        assert!(Backoff::exponential(S, f64::NAN, 2 * S).validate().is_err());
        assert!(Backoff::exponential(S, 1.0, S).validate().is_ok());
        assert_eq!(Jitter::Shorten(1.5).validate(), Err(BackoffError::Fraction(1.5)));
        assert!(Jitter::Shorten(f64::NAN).validate().is_err());
        assert!(Jitter::Shorten(0.0).validate().is_ok() && Jitter::Shorten(1.0).validate().is_ok());
    }

    #[test]
    fn shorten_cuts_by_up_to_its_fraction() {
        // A breaker's open duration: 1 s doubling up to 4 s, cut by 0.5 × 0.5 = 25 %.
        let growing = Backoff::exponential(S, 2.0, 4 * S);
        assert_eq!(
            waits(growing, Jitter::Shorten(0.5), 0.5, 4),
            [750 * MS, 1500 * MS, 3 * S, 3 * S]
        );
        assert_eq!(waits(growing, Jitter::Shorten(0.2), 0.0, 2), [S, 2 * S]);
        assert_eq!(waits(growing, Jitter::Shorten(1.0), 1.0, 2), [Duration::ZERO; 2]);
        // A relay's redelivery delay: equal jitter on 100 ms doubling up to 1 s.
        let relay = Backoff::exponential(100 * MS, 2.0, S);
        assert_eq!(Jitter::Equal.apply(&relay, 3, Duration::ZERO, 0.5), 300 * MS);
        assert_eq!(Jitter::Equal.apply(&relay, u32::MAX, Duration::ZERO, 1.0), S);
    }

    #[test]
    fn random_sources_are_injectable() {
        let fixed = Random::new(|| 0.25);
        assert_eq!(fixed.clone().unit(), 0.25);
        let default = Random::default().unit();
        assert!((0.0..1.0).contains(&default));
        assert_eq!(format!("{fixed:?}"), "Random");
    }
}
