//! The breaker's behaviour on paused tokio time: transitions, trip rules,
//! windows, open durations, half-open probes, operator states, cancellation.

mod common;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::{Boom, Call, Downstream, assert_rejected, assert_state, call, rejection};
use palisade_circuit_breaker::{
    CircuitBreaker, CircuitBreakerBuilder, CircuitBreakerHandle, ConfigError, OpenDuration, State,
};
use tokio::sync::Notify;
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt};

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn consecutive_preset_trips_waits_probes_and_closes() {
    let layer = CircuitBreakerBuilder::consecutive("payments").build().unwrap();
    let handle = layer.handle();
    let downstream = Downstream::default();
    let mut svc = layer.layer(downstream.clone());

    // Four failures, then a success resets the count.
    for _ in 0..4 {
        assert!(call(&mut svc, Call::Fail).await.unwrap_err().is::<Boom>());
    }
    assert_eq!(handle.snapshot().consecutive_failures, 4);
    call(&mut svc, Call::Ok).await.unwrap();
    assert_eq!(handle.snapshot().consecutive_failures, 0);

    // Five in a row open it for 30 s.
    for _ in 0..5 {
        call(&mut svc, Call::Fail).await.unwrap_err();
    }
    assert_state(&handle, State::Open);
    let reached = downstream.reached();
    let rejected = call(&mut svc, Call::Ok).await;
    let open = rejection(&rejected).expect("rejected");
    assert_eq!(open.name(), "payments");
    assert_eq!(open.retry_after(), 30 * SECOND);
    assert_eq!(
        downstream.reached(),
        reached,
        "a rejected call never reaches the downstream"
    );
    assert_eq!(handle.snapshot().time_until_half_open, Some(30 * SECOND));

    advance(29 * SECOND).await;
    assert_rejected(&call(&mut svc, Call::Ok).await, SECOND);

    // After 30 s the next call half-opens it; three successful probes close it.
    advance(SECOND).await;
    for probe in 1..=3 {
        call(&mut svc, Call::Ok).await.unwrap();
        let expected = if probe < 3 { State::HalfOpen } else { State::Closed };
        assert_state(&handle, expected);
    }
    assert_eq!(handle.snapshot().consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens() {
    let layer = CircuitBreakerBuilder::consecutive("inventory").build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Downstream::default());
    for _ in 0..5 {
        call(&mut svc, Call::Fail).await.unwrap_err();
    }
    advance(30 * SECOND).await;
    call(&mut svc, Call::Ok).await.unwrap();
    assert_state(&handle, State::HalfOpen);
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_state(&handle, State::Open);
    assert_rejected(&call(&mut svc, Call::Ok).await, 30 * SECOND);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_is_judged_only_from_minimum_calls() {
    let layer = CircuitBreakerBuilder::rate_based("rates")
        .count_window(10)
        .minimum_calls(5)
        .failure_rate(50.0)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Downstream::default());
    for _ in 0..4 {
        call(&mut svc, Call::Fail).await.unwrap_err();
    }
    // 100 % failures, but only 4 calls: not judged yet.
    assert_state(&handle, State::Closed);
    let snapshot = handle.snapshot();
    assert_eq!((snapshot.calls_in_window, snapshot.failed_calls), (4, 4));
    assert_eq!(snapshot.failure_rate, 100.0);
    // The fifth call, a success, brings the window to 5 calls at 80 %: trips.
    call(&mut svc, Call::Ok).await.unwrap();
    assert_state(&handle, State::Open);
}

/// As resilience4j: an unset `minimum_calls` (100) is capped at a count
/// window's size, so a window shorter than 100 calls builds and is judged
/// once full; one set explicitly is not capped.
#[tokio::test(start_paused = true)]
async fn an_unset_minimum_calls_is_capped_at_a_count_windows_size() {
    let layer = CircuitBreakerBuilder::rate_based("small")
        .count_window(10)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Downstream::default());
    for _ in 0..9 {
        call(&mut svc, Call::Fail).await.unwrap_err();
    }
    assert_state(&handle, State::Closed);
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_state(&handle, State::Open);

    assert_eq!(
        CircuitBreakerBuilder::rate_based("small")
            .count_window(50)
            .minimum_calls(100)
            .build()
            .unwrap_err(),
        ConfigError::MinimumCallsAboveWindow {
            minimum_calls: 100,
            window: 50
        }
    );
    // Set before the window, it is still the caller's own.
    assert!(
        CircuitBreakerBuilder::rate_based("small")
            .minimum_calls(100)
            .count_window(50)
            .build()
            .is_err()
    );
    // A time window keeps the default of 100.
    let timed = CircuitBreakerBuilder::rate_based("timed")
        .time_window(10 * SECOND, 10)
        .build()
        .unwrap();
    let handle = timed.handle();
    let mut svc = timed.layer(Downstream::default());
    for _ in 0..99 {
        call(&mut svc, Call::Fail).await.unwrap_err();
    }
    assert_state(&handle, State::Closed);
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_state(&handle, State::Open);
}

#[tokio::test(start_paused = true)]
async fn count_window_slides_over_the_last_n_calls() {
    let layer = CircuitBreakerBuilder::rate_based("sliding")
        .count_window(4)
        .minimum_calls(4)
        .failure_rate(75.0)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Downstream::default());
    // F F S S: 50 %.
    for c in [Call::Fail, Call::Fail, Call::Ok, Call::Ok] {
        let _ = call(&mut svc, c).await;
    }
    assert_eq!(handle.snapshot().failure_rate, 50.0);
    // The two failures slide out: S S S S.
    call(&mut svc, Call::Ok).await.unwrap();
    call(&mut svc, Call::Ok).await.unwrap();
    assert_eq!(handle.snapshot().failed_calls, 0);
    // S S F F: 50 %, then S F F F: 75 % trips.
    call(&mut svc, Call::Fail).await.unwrap_err();
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_state(&handle, State::Closed);
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_state(&handle, State::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_call_rate_alone_trips_on_slow_successes() {
    let layer = CircuitBreakerBuilder::rate_based("slow")
        .no_failure_rate()
        .slow_calls(50.0, 2 * SECOND)
        .count_window(4)
        .minimum_calls(4)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Downstream::default());
    call(&mut svc, Call::Slow(SECOND, false)).await.unwrap();
    call(&mut svc, Call::Slow(3 * SECOND, false)).await.unwrap();
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_eq!(handle.snapshot().slow_calls, 1);
    // Failures do not count for this rule: 1 slow call of 3.
    assert_state(&handle, State::Closed);
    // Exactly the threshold duration is slow: 2 of 4 = 50 %.
    call(&mut svc, Call::Slow(2 * SECOND, false)).await.unwrap();
    assert_state(&handle, State::Open);
}

#[tokio::test(start_paused = true)]
async fn rules_combine_and_the_first_to_fire_trips() {
    let build = || {
        CircuitBreakerBuilder::rate_based("combined")
            .count_window(20)
            .minimum_calls(10)
            .failure_rate(50.0)
            .consecutive_failures(3)
            .build()
            .unwrap()
    };
    // Three failures in a row trip long before the rate has 10 calls.
    let layer = build();
    let mut svc = layer.layer(Downstream::default());
    for _ in 0..3 {
        call(&mut svc, Call::Fail).await.unwrap_err();
    }
    assert_state(&layer.handle(), State::Open);

    // Alternating failures never make three in a row, but reach 50 % at 10 calls.
    let layer = build();
    let mut svc = layer.layer(Downstream::default());
    for i in 0..10 {
        assert_state(&layer.handle(), State::Closed);
        let _ = call(&mut svc, if i % 2 == 0 { Call::Fail } else { Call::Ok }).await;
    }
    assert_state(&layer.handle(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn time_window_buckets_expire_as_time_passes() {
    let layer = CircuitBreakerBuilder::rate_based("timed")
        .time_window(10 * SECOND, 10)
        .minimum_calls(4)
        .failure_rate(50.0)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Downstream::default());
    for _ in 0..3 {
        call(&mut svc, Call::Fail).await.unwrap_err();
    }
    advance(5 * SECOND).await;
    assert_eq!(handle.snapshot().calls_in_window, 3);
    // At 10 s the first second's bucket expires whole.
    advance(5 * SECOND).await;
    let snapshot = handle.snapshot();
    assert_eq!((snapshot.calls_in_window, snapshot.failed_calls), (0, 0));
    // So three successes and one failure now make 25 %: closed.
    for c in [Call::Ok, Call::Ok, Call::Ok, Call::Fail] {
        let _ = call(&mut svc, c).await;
    }
    assert_state(&handle, State::Closed);
    assert_eq!(handle.snapshot().failure_rate, 25.0);
    // Within the window, failures accumulate across buckets: 4 of 7.
    advance(3 * SECOND).await;
    for _ in 0..3 {
        call(&mut svc, Call::Fail).await.unwrap_err();
    }
    assert_state(&handle, State::Open);
}

#[tokio::test(start_paused = true)]
async fn open_duration_grows_on_repeated_trips_with_injected_jitter() {
    let layer = CircuitBreakerBuilder::consecutive("growing")
        .consecutive_failures(1)
        .permitted_calls_in_half_open(1)
        .open_duration_with(OpenDuration::Growing {
            base: SECOND,
            max: 4 * SECOND,
            multiplier: 2.0,
            jitter: 0.5,
        })
        .random(|| 0.5)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Downstream::default());
    call(&mut svc, Call::Fail).await.unwrap_err();
    // base 1 s, cut by 0.5 * 0.5 = 25 %.
    let expected = [750, 1_500, 3_000, 3_000].map(Duration::from_millis);
    for (trip, duration) in expected.iter().enumerate() {
        assert_eq!(handle.snapshot().time_until_half_open, Some(*duration), "trip {trip}");
        assert_rejected(&call(&mut svc, Call::Ok).await, *duration);
        advance(*duration).await;
        // The probe fails: the breaker reopens for longer, capped at 4 s.
        call(&mut svc, Call::Fail).await.unwrap_err();
    }
    // A successful probe closes the breaker and the growth starts over.
    advance(3 * SECOND).await;
    call(&mut svc, Call::Ok).await.unwrap();
    assert_state(&handle, State::Closed);
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_eq!(handle.snapshot().time_until_half_open, Some(Duration::from_millis(750)));
}

/// A breaker with one probe and 5 s to close, half-open with its probe in
/// flight until the returned gate is notified.
async fn probing_for_at_most_5s(
    name: &'static str,
) -> (
    CircuitBreakerHandle,
    CircuitBreaker<Downstream>,
    Arc<Notify>,
    tokio::task::JoinHandle<Result<&'static str, palisade_core::BoxError>>,
) {
    let layer = CircuitBreakerBuilder::consecutive(name)
        .consecutive_failures(1)
        .permitted_calls_in_half_open(1)
        .open_duration(SECOND)
        .max_half_open_duration(5 * SECOND)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Downstream::default());
    call(&mut svc, Call::Fail).await.unwrap_err();
    advance(SECOND).await;
    let gate = Arc::new(Notify::new());
    let mut probe_svc = svc.clone();
    let waiting = gate.clone();
    let probe = tokio::spawn(async move { call(&mut probe_svc, Call::Gate(waiting)).await });
    tokio::task::yield_now().await;
    assert_state(&handle, State::HalfOpen);
    (handle, svc, gate, probe)
}

#[tokio::test(start_paused = true)]
async fn half_open_that_does_not_close_in_time_reopens() {
    // A probe that hangs.
    let (handle, mut svc, _gate, probe) = probing_for_at_most_5s("stuck").await;
    assert_rejected(&call(&mut svc, Call::Ok).await, Duration::ZERO);
    advance(5 * SECOND).await;
    // The next caller finds half-open expired: reopened, as a repeated trip.
    assert_rejected(&call(&mut svc, Call::Ok).await, SECOND);
    assert_state(&handle, State::Open);
    probe.abort();
}

#[tokio::test(start_paused = true)]
async fn a_probe_succeeding_after_the_half_open_limit_does_not_close() {
    // The probe succeeds 10 s in, with no other call meanwhile.
    let (handle, mut svc, gate, probe) = probing_for_at_most_5s("late").await;
    advance(10 * SECOND).await;
    gate.notify_one();
    assert_eq!(probe.await.unwrap().unwrap(), "ok");
    // Not closed in time: reopened, as a repeated trip.
    assert_state(&handle, State::Open);
    assert_rejected(&call(&mut svc, Call::Ok).await, SECOND);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_permitted_probes_under_concurrency() {
    let (handle, svc, downstream) = past_open("probes", 2).await;

    let gate = Arc::new(Notify::new());
    let callers: Vec<_> = (0..6)
        .map(|_| {
            let mut svc = svc.clone();
            let gate = gate.clone();
            tokio::spawn(async move { call(&mut svc, Call::Gate(gate)).await })
        })
        .collect();
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert_eq!(downstream.reached(), 1 + 2, "the failure and two probes");
    assert_eq!(handle.snapshot().half_open_probes, 2);
    gate.notify_waiters();
    let mut admitted = 0;
    for caller in callers {
        match caller.await.unwrap() {
            Ok(_) => admitted += 1,
            rejected => assert_rejected(&rejected, Duration::ZERO),
        }
    }
    assert_eq!(admitted, 2);
    assert_state(&handle, State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_gives_its_slot_back_and_records_nothing() {
    let (handle, mut svc, _) = past_open("cancel", 1).await;

    // Poll the probe once (it reaches the gate), then drop it.
    let gate = Arc::new(Notify::new());
    {
        let fut = svc.ready().await.unwrap().call(Call::Gate(gate.clone()));
        let mut fut = std::pin::pin!(fut);
        assert!(futures_poll_once(fut.as_mut()).is_pending());
        assert_eq!(handle.snapshot().half_open_probes, 1);
        assert_rejected(&call(&mut svc.clone(), Call::Ok).await, Duration::ZERO);
    }
    assert_eq!(handle.snapshot().half_open_probes, 0);
    assert_state(&handle, State::HalfOpen);
    // The slot is free again: the next probe closes the breaker.
    call(&mut svc, Call::Ok).await.unwrap();
    assert_state(&handle, State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_probe_slot_reserved_in_poll_ready_is_released_with_the_service() {
    let (handle, mut svc, _) = past_open("reserved", 1).await;

    let mut reserving = svc.clone();
    std::future::poll_fn(|cx| reserving.poll_ready(cx)).await.unwrap();
    assert_eq!(handle.snapshot().half_open_probes, 1);
    // A clone of a service holding the slot does not hold it too.
    let mut copy = reserving.clone();
    assert_rejected(&call(&mut copy, Call::Ok).await, Duration::ZERO);
    drop(reserving);
    assert_eq!(handle.snapshot().half_open_probes, 0);
    call(&mut svc, Call::Ok).await.unwrap();
    assert_state(&handle, State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_counts_as_neither_success_nor_failure() {
    let layer = CircuitBreakerBuilder::consecutive("dropped")
        .consecutive_failures(2)
        .failure_rate(60.0)
        .count_window(10)
        .minimum_calls(3)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Downstream::default());
    call(&mut svc, Call::Fail).await.unwrap_err();
    // A call that would have failed is dropped mid-flight.
    {
        let fut = svc.ready().await.unwrap().call(Call::Slow(SECOND, true));
        let mut fut = std::pin::pin!(fut);
        assert!(futures_poll_once(fut.as_mut()).is_pending());
    }
    let snapshot = handle.snapshot();
    assert_eq!((snapshot.calls_in_window, snapshot.consecutive_failures), (1, 1));
    assert_state(&handle, State::Closed);
    // The next failure is the second in a row: the dropped call did not reset the count.
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_state(&handle, State::Open);
}

#[tokio::test(start_paused = true)]
async fn local_rejections_are_not_counted() {
    let layer = CircuitBreakerBuilder::consecutive("ignores")
        .consecutive_failures(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Downstream::default());
    for _ in 0..10 {
        let err = call(&mut svc, Call::Ignore).await.unwrap_err();
        assert!(
            err.is::<palisade_core::BulkheadFull>(),
            "the inner error comes back as it was"
        );
    }
    assert_state(&handle, State::Closed);
    assert_eq!(handle.snapshot().consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn an_outcome_from_before_a_transition_does_not_count_after_it() {
    let layer = CircuitBreakerBuilder::consecutive("stale")
        .consecutive_failures(1)
        .permitted_calls_in_half_open(1)
        .open_duration(SECOND)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Downstream::default());
    // A slow success admitted while closed ...
    let mut slow_svc = svc.clone();
    let slow = tokio::spawn(async move { call(&mut slow_svc, Call::Slow(3 * SECOND, false)).await });
    tokio::task::yield_now().await;
    // ... the breaker trips and half-opens meanwhile ...
    call(&mut svc, Call::Fail).await.unwrap_err();
    advance(SECOND).await;
    let gate = Arc::new(Notify::new());
    let mut probe_svc = svc.clone();
    let probe_gate = gate.clone();
    let probe = tokio::spawn(async move { call(&mut probe_svc, Call::Gate(probe_gate)).await });
    tokio::task::yield_now().await;
    assert_state(&handle, State::HalfOpen);
    // ... and the old success lands: it is not a probe and closes nothing.
    advance(2 * SECOND).await;
    slow.await.unwrap().unwrap();
    assert_state(&handle, State::HalfOpen);
    gate.notify_waiters();
    probe.await.unwrap().unwrap();
    assert_state(&handle, State::Closed);
}

#[tokio::test(start_paused = true)]
async fn operator_states() {
    let layer = CircuitBreakerBuilder::consecutive("operated")
        .consecutive_failures(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let downstream = Downstream::default();
    let mut svc = layer.layer(downstream.clone());

    handle.disable();
    for _ in 0..3 {
        call(&mut svc, Call::Fail).await.unwrap_err();
    }
    assert_state(&handle, State::Disabled);
    assert_eq!(handle.snapshot().consecutive_failures, 0, "disabled records nothing");

    handle.force_open();
    let reached = downstream.reached();
    assert_rejected(&call(&mut svc, Call::Ok).await, Duration::ZERO);
    advance(3_600 * SECOND).await;
    assert_rejected(&call(&mut svc, Call::Ok).await, Duration::ZERO);
    assert_eq!(downstream.reached(), reached);

    handle.metrics_only();
    for _ in 0..3 {
        call(&mut svc, Call::Fail).await.unwrap_err();
    }
    assert_state(&handle, State::MetricsOnly);
    assert_eq!(handle.snapshot().consecutive_failures, 3, "metrics only records");

    handle.reset();
    assert_state(&handle, State::Closed);
    assert_eq!(handle.snapshot().consecutive_failures, 0);
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_state(&handle, State::Open);
    handle.reset();
    call(&mut svc, Call::Ok).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_does_not_wait_for_the_inner_readiness() {
    #[derive(Clone)]
    struct NeverReady;
    impl Service<Call> for NeverReady {
        type Response = &'static str;
        type Error = palisade_core::BoxError;
        type Future = std::future::Ready<Result<&'static str, palisade_core::BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Pending
        }
        fn call(&mut self, _: Call) -> Self::Future {
            std::future::ready(Ok("unexpected"))
        }
    }
    let layer = CircuitBreakerBuilder::consecutive("fast-fail").build().unwrap();
    layer.handle().force_open();
    let mut svc = layer.layer(NeverReady);
    let result = tokio::time::timeout(SECOND, call(&mut svc, Call::Ok))
        .await
        .expect("ready at once");
    assert_rejected(&result, Duration::ZERO);
    // Closed, it waits for the inner service like any middleware.
    layer.handle().reset();
    assert!(tokio::time::timeout(SECOND, call(&mut svc, Call::Ok)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_pending_inner_readiness_wakes_the_caller() {
    /// Ready once opened; until then it parks the caller's waker.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<std::sync::atomic::AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<std::task::Waker>>>,
    }
    impl Service<Call> for Gate {
        type Response = &'static str;
        type Error = palisade_core::BoxError;
        type Future = std::future::Ready<Result<&'static str, palisade_core::BoxError>>;
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            if self.open.load(std::sync::atomic::Ordering::SeqCst) {
                return Poll::Ready(Ok(()));
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
        fn call(&mut self, _: Call) -> Self::Future {
            std::future::ready(Ok("ok"))
        }
    }
    let gate = Gate::default();
    let layer = CircuitBreakerBuilder::consecutive("readiness").build().unwrap();
    let mut svc = layer.layer(gate.clone());
    let caller = tokio::spawn(async move { call(&mut svc, Call::Ok).await });
    tokio::task::yield_now().await;
    assert!(!caller.is_finished());
    gate.open.store(true, std::sync::atomic::Ordering::SeqCst);
    gate.waker
        .lock()
        .unwrap()
        .take()
        .expect("the caller's waker was registered")
        .wake();
    assert_eq!(caller.await.unwrap().unwrap(), "ok");
}

#[test]
fn builders_reject_impossible_settings() {
    let base = || CircuitBreakerBuilder::rate_based("cfg");
    let err = |b: CircuitBreakerBuilder| b.build().unwrap_err();
    assert_eq!(
        err(base().failure_rate(0.0)),
        ConfigError::Threshold {
            what: "failure_rate",
            value: 0.0
        }
    );
    assert!(matches!(err(base().failure_rate(100.5)), ConfigError::Threshold { .. }));
    assert!(matches!(
        err(base().failure_rate(f64::NAN)),
        ConfigError::Threshold { .. }
    ));
    assert!(matches!(
        err(base().slow_calls(120.0, SECOND)),
        ConfigError::Threshold { .. }
    ));
    assert_eq!(
        err(base().slow_calls(50.0, Duration::ZERO)),
        ConfigError::ZeroDuration("slow_call_duration")
    );
    assert_eq!(err(base().count_window(0)), ConfigError::Zero("count_window"));
    assert_eq!(err(base().minimum_calls(0)), ConfigError::Zero("minimum_calls"));
    assert_eq!(
        err(base().count_window(10).minimum_calls(11)),
        ConfigError::MinimumCallsAboveWindow {
            minimum_calls: 11,
            window: 10
        }
    );
    assert!(matches!(
        err(base().time_window(Duration::from_millis(5), 10)),
        ConfigError::Buckets { .. }
    ));
    assert!(matches!(
        err(base().time_window(SECOND, 0)),
        ConfigError::Buckets { .. }
    ));
    assert_eq!(err(base().no_failure_rate()), ConfigError::NoRule);
    // A consecutive-only breaker keeps no window: window settings (a shared
    // default's) are not held against it.
    CircuitBreakerBuilder::consecutive("x")
        .count_window(10)
        .minimum_calls(200)
        .build()
        .unwrap();
    CircuitBreakerBuilder::consecutive("x").count_window(0).build().unwrap();
    assert_eq!(
        err(base().consecutive_failures(0)),
        ConfigError::Zero("consecutive_failures")
    );
    assert_eq!(
        err(base().open_duration(Duration::ZERO)),
        ConfigError::ZeroDuration("open_duration")
    );
    assert_eq!(
        err(base().open_duration_growing(4 * SECOND, SECOND)),
        ConfigError::OpenDurationOrder {
            base: 4 * SECOND,
            max: SECOND
        }
    );
    let growing = |multiplier, jitter| OpenDuration::Growing {
        base: SECOND,
        max: SECOND,
        multiplier,
        jitter,
    };
    assert_eq!(
        err(base().open_duration_with(growing(0.5, 0.0))),
        ConfigError::Multiplier(0.5)
    );
    assert_eq!(
        err(base().open_duration_with(growing(2.0, 1.5))),
        ConfigError::Jitter(1.5)
    );
    assert_eq!(
        err(base().permitted_calls_in_half_open(0)),
        ConfigError::Zero("permitted_calls_in_half_open")
    );
    assert!(matches!(
        err(base().permitted_calls_in_half_open(70_000)),
        ConfigError::TooManyProbes { .. }
    ));
    assert_eq!(
        err(base().max_half_open_duration(Duration::ZERO)),
        ConfigError::ZeroDuration("max_half_open_duration")
    );
    assert!(matches!(
        base().max_keys(0).build_keyed(|c: &Call| format!("{c:?}")).unwrap_err(),
        ConfigError::Zero("max_keys")
    ));
    // The presets are valid as they are.
    CircuitBreakerBuilder::rate_based("a").build().unwrap();
    CircuitBreakerBuilder::consecutive("b").build().unwrap();
}

/// A breaker opened by one failure for 1 s, and now past it: the next call half-opens it.
async fn past_open(name: &'static str, probes: u32) -> (CircuitBreakerHandle, CircuitBreaker<Downstream>, Downstream) {
    let layer = CircuitBreakerBuilder::consecutive(name)
        .consecutive_failures(1)
        .permitted_calls_in_half_open(probes)
        .open_duration(SECOND)
        .build()
        .unwrap();
    let downstream = Downstream::default();
    let mut svc = layer.layer(downstream.clone());
    call(&mut svc, Call::Fail).await.unwrap_err();
    advance(SECOND).await;
    (layer.handle(), svc, downstream)
}

fn futures_poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(std::task::Waker::noop()))
}
