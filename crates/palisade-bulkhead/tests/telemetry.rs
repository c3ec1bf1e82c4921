//! The bulkhead's metrics: gauges of calls in flight, queued and the limit,
//! rejections by reason, time waited.

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use palisade_bulkhead::BulkheadLayer;
use tower::{Layer, ServiceExt, service_fn};

type Metrics = HashMap<(String, Vec<(String, String)>), DebugValue>;

fn snapshot(recorder: &DebuggingRecorder) -> Metrics {
    recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<_> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            ((key.name().to_owned(), labels), value)
        })
        .collect()
}

fn get<'a>(metrics: &'a Metrics, name: &str, labels: &[(&str, &str)]) -> &'a DebugValue {
    let mut labels: Vec<_> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    labels.sort();
    metrics
        .get(&(name.to_owned(), labels.clone()))
        .unwrap_or_else(|| panic!("no {name} {labels:?} in {metrics:?}"))
}

fn gauge(value: &DebugValue) -> f64 {
    match value {
        DebugValue::Gauge(v) => v.into_inner(),
        other => panic!("not a gauge: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn gauges_counters_and_waits_are_reported_under_the_bulkhead_name() {
    let recorder = DebuggingRecorder::new();
    let layer = metrics::with_local_recorder(&recorder, || {
        BulkheadLayer::builder("orders")
            .max_concurrent(1)
            .max_queued(1)
            .max_wait(Duration::from_millis(40))
            .build()
            .unwrap()
    });
    let svc = layer.layer(service_fn(|hold: u64| async move {
        tokio::time::sleep(Duration::from_millis(hold)).await;
        Ok::<_, std::io::Error>(hold)
    }));
    let name = [("name", "orders")];

    let holder = tokio::spawn(svc.clone().oneshot(100));
    tokio::task::yield_now().await;
    let waiter = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let metrics = snapshot(&recorder);
    assert_eq!(gauge(get(&metrics, "palisade_bulkhead_in_flight", &name)), 1.0);
    assert_eq!(gauge(get(&metrics, "palisade_bulkhead_queued", &name)), 1.0);
    assert_eq!(gauge(get(&metrics, "palisade_bulkhead_limit", &name)), 1.0);

    // The queue is full: rejected at once.
    svc.clone().oneshot(1).await.unwrap_err();
    // The waiter times out after 40 ms.
    waiter.await.unwrap().unwrap_err();
    holder.await.unwrap().unwrap();
    layer.handle().set_max_concurrent(4).unwrap();

    // The debugging recorder drains on each snapshot: from here on, gauges
    // show what changed since the one above (and `set` values as they are).
    let metrics = snapshot(&recorder);
    let full = [("name", "orders"), ("reason", "full")];
    let timeout = [("name", "orders"), ("reason", "timeout")];
    assert!(matches!(
        get(&metrics, "palisade_bulkhead_rejections_total", &full),
        DebugValue::Counter(1)
    ));
    assert!(matches!(
        get(&metrics, "palisade_bulkhead_rejections_total", &timeout),
        DebugValue::Counter(1)
    ));
    match get(&metrics, "palisade_bulkhead_wait_seconds", &name) {
        DebugValue::Histogram(waits) => assert_eq!(waits.iter().map(|w| w.into_inner()).collect::<Vec<_>>(), [0.04]),
        other => panic!("not a histogram: {other:?}"),
    }
    // Only the holder had a permit, for the 100 ms of its call.
    match get(&metrics, "palisade_bulkhead_call_duration_seconds", &name) {
        DebugValue::Histogram(held) => assert_eq!(held.iter().map(|w| w.into_inner()).collect::<Vec<_>>(), [0.1]),
        other => panic!("not a histogram: {other:?}"),
    }
    assert_eq!(
        gauge(get(&metrics, "palisade_bulkhead_in_flight", &name)),
        -1.0,
        "the holder finished"
    );
    assert_eq!(
        gauge(get(&metrics, "palisade_bulkhead_queued", &name)),
        -1.0,
        "the waiter left"
    );
    assert_eq!(gauge(get(&metrics, "palisade_bulkhead_limit", &name)), 4.0);
}
