//! How long to wait before each retry: a [`Backoff`] schedule and a
//! [`Jitter`] that spreads it.
//!
//! Retry `n` (1 for the first retry, that is the second attempt) waits:
//!
//! | backoff | wait before retry `n` |
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
//!
//! Decorrelated jitter ignores the schedule's growth and uses only its base
//! and cap: each wait is drawn from the previous one.

use std::time::Duration;

use crate::error::ConfigError;

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

    /// The wait before retry `retry` (1 for the first retry), before jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        let steps = retry.saturating_sub(1);
        match self.kind {
            Kind::Constant(wait) => wait,
            Kind::Linear { base, step, cap } => step
                .checked_mul(steps)
                .and_then(|s| base.checked_add(s))
                .unwrap_or(cap)
                .min(cap),
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

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match self.kind {
            Kind::Constant(_) => Ok(()),
            Kind::Linear { base, cap, .. } if cap < base => Err(ConfigError::CapBelowBase { base, cap }),
            Kind::Exponential { base, cap, .. } if cap < base => Err(ConfigError::CapBelowBase { base, cap }),
            Kind::Exponential { multiplier, .. } if !(multiplier.is_finite() && multiplier >= 1.0) => {
                Err(ConfigError::Multiplier(multiplier))
            }
            Kind::Linear { .. } | Kind::Exponential { .. } => Ok(()),
        }
    }
}

/// How a wait from the [`Backoff`] schedule is randomised, so clients that
/// failed together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
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
}

impl Jitter {
    /// The wait before retry `retry` given the schedule, the previous wait
    /// (zero before the first retry) and a uniform number `unit` in `[0, 1)`.
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
            Err(ConfigError::CapBelowBase { base: 2 * S, cap: S })
        );
        assert_eq!(
            Backoff::linear(2 * S, S, S).validate(),
            Err(ConfigError::CapBelowBase { base: 2 * S, cap: S })
        );
        assert_eq!(
            Backoff::exponential(S, 0.5, 2 * S).validate(),
            Err(ConfigError::Multiplier(0.5))
        );
        assert!(Backoff::exponential(S, f64::NAN, 2 * S).validate().is_err());
        assert!(Backoff::exponential(S, 1.0, S).validate().is_ok());
    }
}
