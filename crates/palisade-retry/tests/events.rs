//! The event hook hears of every retry (attempt, wait, reason) and of the
//! budget refusing one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::BoxError;
use palisade_core::events::LayerEvent;
use palisade_retry::{Backoff, Jitter, RetryBudget, RetryLayer};
use tower::{Layer, ServiceExt};

#[tokio::test(start_paused = true)]
async fn retries_and_an_exhausted_budget_reach_the_hook() {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    // A budget with no floor and no deposits yet: the first request's retries
    // spend what its own deposit allows, then none is left.
    let budget = RetryBudget::builder().ratio(1.0).min_per_sec(0).build().unwrap();
    let retry = RetryLayer::builder("inventory")
        .max_attempts(3)
        .backoff(Backoff::exponential(
            Duration::from_millis(100),
            2.0,
            Duration::from_secs(1),
        ))
        .jitter(Jitter::None)
        .budget(budget)
        .on_event(move |event| {
            let line = match event {
                LayerEvent::Retry {
                    name,
                    attempt,
                    wait,
                    reason,
                } => format!("{name}: attempt {attempt} after {wait:?} ({reason})"),
                LayerEvent::RetryBudgetExhausted { name } => format!("{name}: budget exhausted"),
                other => format!("unexpected {other:?}"),
            };
            sink.lock().unwrap().push(line);
        })
        .build()
        .unwrap();
    let failing = retry.layer(tower::service_fn(|_: u32| async {
        Err::<u32, BoxError>("down".into())
    }));
    assert!(failing.oneshot(1).await.is_err());
    assert_eq!(
        *heard.lock().unwrap(),
        [
            "inventory: attempt 2 after 100ms (error)",
            "inventory: budget exhausted"
        ]
    );
}
