//! Durations as whole nanoseconds in a `u64`, the unit the layers keep clock
//! stamps and limits in, in atomics: 584 years fit, and a longer duration
//! saturates.

use std::time::Duration;

use tokio::time::Instant;

/// `d` in whole nanoseconds; `u64::MAX` when it does not fit.
#[inline]
pub fn saturating(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds from `base` to now on tokio's clock (which follows paused time
/// in tests); 0 when `base` is later.
#[inline]
pub fn since(base: Instant) -> u64 {
    saturating(Instant::now().saturating_duration_since(base))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{saturating, since};

    #[test]
    fn whole_nanoseconds_up_to_u64_max_then_saturated() {
        assert_eq!(saturating(Duration::ZERO), 0);
        assert_eq!(saturating(Duration::new(1, 5)), 1_000_000_005);
        assert_eq!(saturating(Duration::from_nanos(u64::MAX)), u64::MAX);
        assert_eq!(saturating(Duration::new(18_446_744_073, 709_551_615)), u64::MAX);
        // One nanosecond more than fits, by the sum and by the product.
        assert_eq!(saturating(Duration::new(18_446_744_073, 709_551_616)), u64::MAX);
        assert_eq!(saturating(Duration::new(18_446_744_074, 0)), u64::MAX);
        assert_eq!(saturating(Duration::MAX), u64::MAX);
        for d in [
            Duration::from_millis(1),
            Duration::from_secs(600),
            Duration::new(123_456_789, 987_654_321),
        ] {
            assert_eq!(u128::from(saturating(d)), d.as_nanos());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn since_counts_paused_time_and_never_goes_below_zero() {
        let base = tokio::time::Instant::now();
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(since(base), 1_500_000_000);
        assert_eq!(since(base + Duration::from_secs(1)), 500_000_000);
        assert_eq!(since(base + Duration::from_secs(2)), 0);
    }
}
