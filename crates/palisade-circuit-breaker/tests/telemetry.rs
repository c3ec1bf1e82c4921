//! The breaker's metrics: calls by outcome, the state gauge and transitions,
//! under the names palisade-core fixes.

use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use palisade_circuit_breaker::CircuitBreakerBuilder;
use palisade_core::BoxError;
use palisade_core::telemetry::circuit_breaker::{CALLS_TOTAL, STATE, TRANSITIONS_TOTAL};
use tower::{Layer, Service};

fn downstream(fail: bool) -> Ready<Result<(), BoxError>> {
    ready(if fail { Err("boom".into()) } else { Ok(()) })
}

fn drive<S: Service<bool>>(svc: &mut S, fail: bool) -> Result<S::Response, S::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    match pin!(svc.call(fail)).poll(&mut cx) {
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
    assert_eq!(value(STATE, "name=telemetry"), &DebugValue::Gauge(1.0.into()));
    assert_eq!(
        value(TRANSITIONS_TOTAL, "from=closed,name=telemetry,to=open"),
        &DebugValue::Counter(1)
    );
}
