//! The breaker's metrics: calls by outcome, the state gauge and transitions,
//! under the names palisade-core fixes.

use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use palisade_circuit_breaker::CircuitBreakerBuilder;
use palisade_core::BoxError;
use palisade_core::telemetry::circuit_breaker::{CALL_DURATION_SECONDS, CALLS_TOTAL, STATE, TRANSITIONS_TOTAL};
use tower::{Layer, Service};

fn downstream(fail: bool) -> Ready<Result<(), BoxError>> {
    ready(if fail { Err("boom".into()) } else { Ok(()) })
}

fn drive<Req, S: Service<Req>>(svc: &mut S, req: Req) -> Result<S::Response, S::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    match pin!(svc.call(req)).poll(&mut cx) {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("ready at once"),
    }
}

#[test]
fn calls_state_and_transitions_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let layer = CircuitBreakerBuilder::consecutive("telemetry")
            .consecutive_failures(2)
            .build()
            .unwrap();
        let mut svc = layer.layer(tower::service_fn(downstream));
        drive(&mut svc, false).unwrap();
        drive(&mut svc, true).unwrap_err();
        drive(&mut svc, true).unwrap_err();
        drive(&mut svc, false).unwrap_err();
        drive(&mut svc, false).unwrap_err();
    });
    let metrics: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<_> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            labels.sort();
            (key.name().to_owned(), labels.join(","), value)
        })
        .collect();
    let value = |name: &str, labels: &str| {
        metrics
            .iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map(|(_, _, v)| v)
            .unwrap_or_else(|| panic!("no {name}{{{labels}}} in {metrics:?}"))
    };
    assert_eq!(
        value(CALLS_TOTAL, "name=telemetry,outcome=success"),
        &DebugValue::Counter(1)
    );
    assert_eq!(
        value(CALLS_TOTAL, "name=telemetry,outcome=failure"),
        &DebugValue::Counter(2)
    );
    assert_eq!(
        value(CALLS_TOTAL, "name=telemetry,outcome=rejected"),
        &DebugValue::Counter(2)
    );
    assert_eq!(
        value(CALLS_TOTAL, "name=telemetry,outcome=ignored"),
        &DebugValue::Counter(0)
    );
    // One series per state: 1 for the current one, 0 for the others.
    assert_eq!(
        value(STATE, "name=telemetry,state=open"),
        &DebugValue::Gauge(1.0.into())
    );
    for state in ["closed", "half_open", "disabled", "forced_open", "metrics_only"] {
        assert_eq!(
            value(STATE, &format!("name=telemetry,state={state}")),
            &DebugValue::Gauge(0.0.into()),
            "{state}"
        );
    }
    // The three admitted calls were timed; the two rejected ones were not.
    match value(CALL_DURATION_SECONDS, "name=telemetry") {
        DebugValue::Histogram(values) => assert_eq!(values.len(), 3),
        other => panic!("not a histogram: {other:?}"),
    }
    assert_eq!(
        value(TRANSITIONS_TOTAL, "from=closed,name=telemetry,to=open"),
        &DebugValue::Counter(1)
    );
}

/// Every series as `(name, sorted labels, value)`.
fn series(snapshotter: &metrics_util::debugging::Snapshotter) -> Vec<(String, String, DebugValue)> {
    let mut all: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<_> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            labels.sort();
            (key.name().to_owned(), labels.join(","), value)
        })
        .collect();
    all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    all
}

/// A keyed breaker registers nothing per key: calls, transitions and the keys
/// kept in each state are series of the layer, and an evicted key stops
/// counting in them.
#[tokio::test(start_paused = true)]
async fn keyed_breakers_report_under_the_layer_name_and_forget_evicted_keys() {
    use palisade_core::telemetry::circuit_breaker::KEYS;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let layer = CircuitBreakerBuilder::consecutive("hosts")
        .consecutive_failures(1)
        .max_keys(2)
        .key_idle_timeout(std::time::Duration::from_secs(60))
        .build_keyed(|req: &(String, bool)| req.0.clone())
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(tower::service_fn(|req: (String, bool)| downstream(req.1)));
    // Fifty request-derived keys; every even one fails and opens its breaker.
    for i in 0..50 {
        let _ = drive(&mut svc, (format!("h{i}"), i % 2 == 0));
        tokio::time::advance(std::time::Duration::from_millis(1)).await;
    }
    let mut kept = handle.keys();
    kept.sort_unstable();
    assert_eq!(kept, ["h48", "h49"]);

    let all = series(&snapshotter);
    let expected = |pairs: Vec<(&str, &str, DebugValue)>| {
        pairs
            .into_iter()
            .map(|(n, l, v)| (n.to_owned(), l.to_owned(), v))
            .collect::<Vec<_>>()
    };
    let gauge = |v: f64| DebugValue::Gauge(v.into());
    assert_eq!(
        all,
        expected(vec![
            // The calls of every key, timed under the layer's name.
            (
                CALL_DURATION_SECONDS,
                "name=hosts",
                DebugValue::Histogram(vec![0.0.into(); 50])
            ),
            (CALLS_TOTAL, "name=hosts,outcome=failure", DebugValue::Counter(25)),
            (CALLS_TOTAL, "name=hosts,outcome=ignored", DebugValue::Counter(0)),
            (CALLS_TOTAL, "name=hosts,outcome=rejected", DebugValue::Counter(0)),
            (CALLS_TOTAL, "name=hosts,outcome=slow", DebugValue::Counter(0)),
            (CALLS_TOTAL, "name=hosts,outcome=success", DebugValue::Counter(25)),
            (KEYS, "name=hosts,state=closed", gauge(1.0)),
            (KEYS, "name=hosts,state=disabled", gauge(0.0)),
            (KEYS, "name=hosts,state=forced_open", gauge(0.0)),
            (KEYS, "name=hosts,state=half_open", gauge(0.0)),
            (KEYS, "name=hosts,state=metrics_only", gauge(0.0)),
            (KEYS, "name=hosts,state=open", gauge(1.0)),
            (
                TRANSITIONS_TOTAL,
                "from=closed,name=hosts,to=open",
                DebugValue::Counter(25)
            ),
        ])
    );

    // Idle keys evicted by the handle leave the gauge too. (A snapshot drains
    // what it reads, so this one shows the change since the last.)
    tokio::time::advance(std::time::Duration::from_secs(61)).await;
    assert_eq!(handle.evict_idle(), 2);
    let all = series(&snapshotter);
    let change = |state: &str| {
        let labels = format!("name=hosts,state={state}");
        all.iter().find(|(n, l, _)| n == KEYS && *l == labels).map(|s| &s.2)
    };
    assert_eq!(change("closed"), Some(&gauge(-1.0)));
    assert_eq!(change("open"), Some(&gauge(-1.0)));
    assert_eq!(change("half_open"), Some(&gauge(0.0)));
}

/// A key evicted while one of its calls is in flight: the call's outcome still
/// trips that breaker (its callers see it), the transition is counted, but the
/// key is no longer among the kept keys of any state.
#[tokio::test(start_paused = true)]
async fn an_evicted_key_whose_breaker_trips_later_is_not_counted_among_kept_keys() {
    use std::sync::Arc;

    use palisade_core::telemetry::circuit_breaker::KEYS;
    use tokio::sync::Notify;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let layer = CircuitBreakerBuilder::consecutive("evicted")
        .consecutive_failures(1)
        .max_keys(1)
        .build_keyed(|req: &(&'static str, Option<Arc<Notify>>)| req.0)
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(tower::service_fn(
        |(_, gate): (&'static str, Option<Arc<Notify>>)| async move {
            match gate {
                Some(gate) => {
                    gate.notified().await;
                    Err::<(), BoxError>("boom".into())
                }
                None => Ok(()),
            }
        },
    ));
    let gate = Arc::new(Notify::new());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut in_flight = Box::pin(svc.call(("a", Some(gate.clone()))));
    assert!(in_flight.as_mut().poll(&mut cx).is_pending());
    let a = handle.get(&"a").unwrap();
    tokio::time::advance(std::time::Duration::from_millis(1)).await;
    // A new key takes the only place: "a" is evicted.
    drive(&mut svc, ("b", None)).unwrap();
    assert_eq!(handle.keys(), ["b"]);
    // The call of "a" fails and opens its breaker.
    gate.notify_one();
    in_flight.await.unwrap_err();
    assert_eq!(a.state(), palisade_circuit_breaker::State::Open);

    let all = series(&snapshotter);
    let value = |name: &str, labels: &str| all.iter().find(|(n, l, _)| n == name && l == labels).map(|s| &s.2);
    let gauge = |v: f64| DebugValue::Gauge(v.into());
    assert_eq!(value(KEYS, "name=evicted,state=closed"), Some(&gauge(1.0)));
    assert_eq!(value(KEYS, "name=evicted,state=open"), Some(&gauge(0.0)));
    assert_eq!(
        value(TRANSITIONS_TOTAL, "from=closed,name=evicted,to=open"),
        Some(&DebugValue::Counter(1))
    );
}

/// Each admitted call's duration, in seconds, goes into the histogram, timed
/// on tokio's clock; `call_durations(false)` registers and records nothing.
#[tokio::test(start_paused = true)]
async fn call_durations_are_recorded_in_seconds() {
    use std::time::Duration;
    use tower::ServiceExt;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let slow = |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(())
    };
    let layer = CircuitBreakerBuilder::consecutive("timed").build().unwrap();
    layer.layer(tower::service_fn(slow)).oneshot(250).await.unwrap();
    layer.layer(tower::service_fn(slow)).oneshot(1_500).await.unwrap();
    let quiet = CircuitBreakerBuilder::consecutive("untimed")
        .call_durations(false)
        .build()
        .unwrap();
    quiet.layer(tower::service_fn(slow)).oneshot(10).await.unwrap();

    let all = series(&snapshotter);
    let histogram = all
        .iter()
        .find(|(n, l, _)| n == CALL_DURATION_SECONDS && l == "name=timed")
        .map(|(_, _, v)| v);
    let Some(DebugValue::Histogram(values)) = histogram else {
        panic!("no histogram in {all:?}")
    };
    let values: Vec<f64> = values.iter().map(|v| v.into_inner()).collect();
    assert_eq!(values, [0.25, 1.5]);
    assert!(
        !all.iter()
            .any(|(n, l, _)| n == CALL_DURATION_SECONDS && l == "name=untimed"),
        "{all:?}"
    );
}
