//! Metrics of the retry policy, under the names in palisade-core's telemetry.
//!
//! One test in this binary: it installs the process-wide recorder.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use palisade_core::BoxError;
use palisade_core::telemetry::retry as names;
use palisade_retry::{Backoff, RetryBudget, RetryLayer};
use tower::{Layer, ServiceExt};

fn counter(snapshot: &[(CompositeKey, DebugValue)], name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshot
        .iter()
        .find(|(key, _)| {
            key.kind() == MetricKind::Counter
                && key.key().name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(_, value)| match value {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn attempts_retries_by_reason_and_budget_exhaustion_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let budget = RetryBudget::builder()
        .ratio(0.0)
        .min_per_sec(1)
        .window(Duration::from_secs(1))
        .build()
        .unwrap();
    let retry = RetryLayer::builder("payments")
        .budget(budget)
        .backoff(Backoff::immediate())
        .build()
        .unwrap();
    let failing = tower::service_fn(|_: u32| async {
        Err::<u32, BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
    });
    let svc = retry.layer(failing);
    // One retry from the floor, then the budget is empty.
    assert!(svc.clone().oneshot(1).await.is_err());
    assert!(svc.clone().oneshot(2).await.is_err());

    let snapshot: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect();
    let name = [("name", "payments")];
    assert_eq!(counter(&snapshot, names::ATTEMPTS_TOTAL, &name), 3);
    assert_eq!(
        counter(
            &snapshot,
            names::RETRIES_TOTAL,
            &[("name", "payments"), ("reason", "connect")]
        ),
        1
    );
    assert_eq!(counter(&snapshot, names::BUDGET_EXHAUSTED_TOTAL, &name), 2);
}
