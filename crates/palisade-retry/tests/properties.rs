//! Properties of the backoff and the budget over generated inputs
//! (256 cases each, fixed so CI runs the same amount of work).

use std::time::Duration;

use palisade_retry::{Backoff, Jitter, RetryBudget};
use proptest::prelude::*;

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated),
        (0.0f64..=1.0).prop_map(Jitter::Shorten)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn waits_stay_between_zero_and_the_cap(
        base_ms in 0u64..5_000,
        extra_ms in 0u64..60_000,
        multiplier in 1.0f64..10.0,
        jitter in jitter(),
        retry in 1u32..100,
        previous_ms in 0u64..120_000,
        unit in 0.0f64..1.0,
    ) {
        let base = Duration::from_millis(base_ms);
        let cap = base + Duration::from_millis(extra_ms);
        let backoff = Backoff::exponential(base, multiplier, cap);
        let scheduled = backoff.delay(retry);
        prop_assert!(scheduled >= base && scheduled <= cap);
        let wait = jitter.apply(&backoff, retry, Duration::from_millis(previous_ms), unit);
        prop_assert!(wait <= cap);
        match jitter {
            Jitter::None => prop_assert_eq!(wait, scheduled),
            Jitter::Full => prop_assert!(wait <= scheduled),
            Jitter::Equal => prop_assert!(wait >= scheduled / 2 && wait <= scheduled),
            Jitter::Decorrelated => prop_assert!(wait >= base),
            Jitter::Shorten(fraction) => {
                prop_assert!(wait <= scheduled);
                prop_assert!(wait.as_secs_f64() >= scheduled.as_secs_f64() * (1.0 - fraction) - 1e-9);
            }
        }
    }

    #[test]
    fn schedules_never_shrink(base_ms in 1u64..1_000, step_ms in 0u64..1_000, multiplier in 1.0f64..4.0, retry in 1u32..60) {
        let base = Duration::from_millis(base_ms);
        let cap = Duration::from_secs(30);
        let exponential = Backoff::exponential(base, multiplier, cap);
        let linear = Backoff::linear(base, Duration::from_millis(step_ms), cap);
        prop_assert!(exponential.delay(retry + 1) >= exponential.delay(retry));
        prop_assert!(linear.delay(retry + 1) >= linear.delay(retry));
    }

    /// Within one window nothing ages out, so the budget's accounting is
    /// exact: retries allowed = floor + ratio × requests − retries taken.
    #[test]
    fn the_budget_accounts_exactly_within_a_window(
        ratio_per_mille in 0u32..3_000,
        min_per_sec in 0u32..5,
        ops in proptest::collection::vec((0u8..3, 1u32..100), 1..60),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let ratio = f64::from(ratio_per_mille) / 1000.0;
            let budget = RetryBudget::builder()
                .ratio(ratio)
                .min_per_sec(min_per_sec)
                .window(Duration::from_secs(10))
                .build()
                .unwrap();
            let (mut deposits, mut withdrawals) = (0u64, 0u64);
            for (op, n) in ops {
                match op {
                    0 => {
                        budget.deposit_many(n);
                        deposits += u64::from(n);
                    }
                    1 => {
                        for _ in 0..n {
                            withdrawals += u64::from(budget.withdraw());
                        }
                    }
                    // Time passes, but less than a window in all.
                    _ => tokio::time::advance(Duration::from_millis(u64::from(n))).await,
                }
            }
            let units = i64::from(min_per_sec) * 10 * 1000 + (deposits as i64) * i64::from(ratio_per_mille)
                - withdrawals as i64 * 1000;
            prop_assert!(units >= 0, "never overdrawn");
            prop_assert_eq!(budget.available(), (units / 1000) as u64);
            Ok(())
        })?;
    }
}
