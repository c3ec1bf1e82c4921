//! Admission is decided against the breaker's state when a call is sent, not
//! when its caller started waiting for the inner service: callers parked
//! behind an inner service's backpressure never reach a breaker that opened
//! meanwhile, half-open never forwards more than its probes, and readiness,
//! once given, holds until the call.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::{Call, Downstream, assert_rejected, assert_state, call, rejection};
use palisade_circuit_breaker::{CircuitBreakerBuilder, CircuitBreakerHandle, CircuitBreakerLayer, State};
use palisade_core::BoxError;
use tokio::sync::Notify;
use tokio::time::advance;
use tower::limit::ConcurrencyLimit;
use tower::{Layer, Service, ServiceExt};

const SECOND: Duration = Duration::from_secs(1);
const FAIL_AFTER_100_MS: Call = Call::Slow(Duration::from_millis(100), true);

async fn yield_a_few() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// A breaker that opens on one failure, for 1 s, and half-opens with one probe.
fn one_probe_breaker(name: &str) -> CircuitBreakerLayer {
    CircuitBreakerBuilder::consecutive(name)
        .consecutive_failures(1)
        .open_duration(SECOND)
        .permitted_calls_in_half_open(1)
        .build()
        .unwrap()
}

/// Ten callers behind a concurrency limit of two: the first two fail after
/// 100 ms and open the breaker, so the eight waiting callers are rejected.
#[tokio::test(start_paused = true)]
async fn callers_waiting_behind_a_concurrency_limit_are_rejected_once_the_breaker_opens() {
    let layer = CircuitBreakerBuilder::consecutive("limited")
        .consecutive_failures(1)
        .open_duration(30 * SECOND)
        .build()
        .unwrap();
    let handle = layer.handle();
    let downstream = Downstream::default();
    let svc = layer.layer(ConcurrencyLimit::new(downstream.clone(), 2));
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move { call(&mut svc, FAIL_AFTER_100_MS).await })
        })
        .collect();
    yield_a_few().await;
    assert_eq!(downstream.reached(), 2, "two calls hold the limit's permits");
    assert_state(&handle, State::Closed);

    advance(Duration::from_millis(100)).await;
    let mut failed = 0;
    let mut rejected = 0;
    for caller in callers {
        let result = caller.await.unwrap();
        match rejection(&result) {
            Some(open) => {
                assert_eq!(open.name(), "limited");
                assert_eq!(open.retry_after(), 30 * SECOND);
                rejected += 1;
            }
            None => {
                assert!(result.unwrap_err().is::<common::Boom>());
                failed += 1;
            }
        }
    }
    assert_eq!((failed, rejected), (2, 8));
    assert_eq!(downstream.reached(), 2, "no call reached the downstream once it opened");
    assert_state(&handle, State::Open);
}

/// The keyed breaker decides in `call` by the same rule.
#[tokio::test(start_paused = true)]
async fn keyed_callers_waiting_behind_a_concurrency_limit_are_rejected_once_their_breaker_opens() {
    let layer = CircuitBreakerBuilder::consecutive("keyed-limited")
        .consecutive_failures(1)
        .open_duration(30 * SECOND)
        .build_keyed(|_: &Call| "one")
        .unwrap();
    let downstream = Downstream::default();
    let svc = layer.layer(ConcurrencyLimit::new(downstream.clone(), 2));
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move { svc.ready().await?.call(FAIL_AFTER_100_MS).await })
        })
        .collect();
    yield_a_few().await;
    advance(Duration::from_millis(100)).await;
    let mut rejected = 0;
    for caller in callers {
        if let Some(open) = rejection(&caller.await.unwrap()) {
            assert_eq!(open.name(), "keyed-limited[one]");
            rejected += 1;
        }
    }
    assert_eq!(rejected, 8);
    assert_eq!(downstream.reached(), 2);
    assert_eq!(layer.handle().get(&"one").unwrap().state(), State::Open);
}

/// Callers that started waiting while the breaker was closed find it half-open
/// with its one probe in flight when the inner service lets them through:
/// none of them is forwarded.
#[tokio::test(start_paused = true)]
async fn half_open_forwards_no_more_than_the_permitted_probes_to_callers_that_waited_for_the_inner_service() {
    let layer = one_probe_breaker("waited");
    let handle = layer.handle();
    let limited = Downstream::default();
    let svc = layer.layer(ConcurrencyLimit::new(limited.clone(), 1));
    // The same breaker around another route to the dependency.
    let other = layer.layer(Downstream::default());

    // One call holds the only permit for 3 s; four callers wait behind it.
    let mut holder = svc.clone();
    let held = tokio::spawn(async move { call(&mut holder, Call::Slow(3 * SECOND, false)).await });
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move { call(&mut svc, Call::Ok).await })
        })
        .collect();
    yield_a_few().await;
    assert_eq!(limited.reached(), 1);

    // The breaker trips and half-opens; its one probe is in flight.
    let (gate, probe) = half_open_with_a_gated_probe(&other, &handle).await;

    // The permit comes free: the waiting callers are not forwarded.
    advance(2 * SECOND).await;
    held.await.unwrap().unwrap();
    for caller in waiting {
        assert_rejected(&caller.await.unwrap(), Duration::ZERO);
    }
    assert_eq!(limited.reached(), 1, "only the first call reached the limited route");
    assert_eq!(handle.snapshot().half_open_probes, 1);
    gate.notify_waiters();
    probe.await.unwrap().unwrap();
    assert_state(&handle, State::Closed);
}

/// A call's result, from the task that made it.
type Sent = tokio::task::JoinHandle<Result<&'static str, BoxError>>;

/// Trips the breaker through `other`, waits out its 1 s open duration and
/// sends a probe through `other` that answers once the returned gate is
/// notified; the breaker is then half-open with that one probe in flight.
async fn half_open_with_a_gated_probe<O>(other: &O, handle: &CircuitBreakerHandle) -> (Arc<Notify>, Sent)
where
    O: Service<Call, Response = &'static str, Error = BoxError> + Clone + Send + 'static,
    O::Future: Send,
{
    call(&mut other.clone(), Call::Fail).await.unwrap_err();
    advance(SECOND).await;
    let gate = Arc::new(Notify::new());
    let mut prober = other.clone();
    let probe_gate = gate.clone();
    let probe = tokio::spawn(async move { call(&mut prober, Call::Gate(probe_gate)).await });
    yield_a_few().await;
    assert_state(handle, State::HalfOpen);
    assert_eq!(handle.snapshot().half_open_probes, 1);
    (gate, probe)
}

/// Keeps `svc`'s route, limited to one call at a time, busy for 3 s with a
/// call admitted while closed; trips the breaker through `other` and waits
/// out its 1 s open duration; then sends `probe` through `svc`, whose caller
/// half-opens the breaker, takes the probe slot and waits for the permit.
async fn probe_behind_a_busy_route<S, O>(svc: &S, other: &O, probe: Call) -> (Sent, Sent)
where
    S: Service<Call, Response = &'static str, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
    O: Service<Call, Response = &'static str, Error = BoxError> + Clone,
{
    let mut holder = svc.clone();
    let held = tokio::spawn(async move { call(&mut holder, Call::Slow(3 * SECOND, false)).await });
    yield_a_few().await;
    call(&mut other.clone(), Call::Fail).await.unwrap_err();
    advance(SECOND).await;
    let mut waiter = svc.clone();
    let waiting = tokio::spawn(async move { call(&mut waiter, probe).await });
    yield_a_few().await;
    (held, waiting)
}

/// A probe slot reserved while waiting for the inner service belongs to its
/// half-open period: once the breaker reopened and half-opened again with a
/// new probe in flight, the old reservation is not forwarded.
#[tokio::test(start_paused = true)]
async fn a_probe_slot_reserved_in_an_earlier_half_open_is_not_forwarded() {
    let layer = one_probe_breaker("stale-probe");
    let handle = layer.handle();
    let limited = Downstream::default();
    let svc = layer.layer(ConcurrencyLimit::new(limited.clone(), 1));
    let other = layer.layer(Downstream::default());

    let (held, waiting) = probe_behind_a_busy_route(&svc, &other, Call::Ok).await;
    assert_state(&handle, State::HalfOpen);
    assert_eq!(handle.snapshot().half_open_probes, 1);
    // Half-open ends (an operator reset, then a trip) and begins again; a new probe is in flight.
    handle.reset();
    let (gate, probe) = half_open_with_a_gated_probe(&other, &handle).await;

    advance(SECOND).await;
    held.await.unwrap().unwrap();
    assert_rejected(&waiting.await.unwrap(), Duration::ZERO);
    assert_eq!(limited.reached(), 1);
    assert_eq!(handle.snapshot().half_open_probes, 1);
    gate.notify_waiters();
    probe.await.unwrap().unwrap();
    assert_state(&handle, State::Closed);
}

/// A probe is timed from when its call is sent, not from when it took its
/// slot: a probe that waited 2 s for the inner service and then answered at
/// once is a fast success and closes the breaker; one whose call took 2 s is
/// slow and opens it again.
#[tokio::test(start_paused = true)]
async fn a_probe_that_waited_for_the_inner_service_is_timed_from_its_call() {
    for (probe_call, after) in [(Call::Ok, State::Closed), (Call::Slow(2 * SECOND, false), State::Open)] {
        let layer = CircuitBreakerBuilder::rate_based("timed-probe")
            .no_failure_rate()
            .slow_calls(50.0, SECOND)
            .count_window(10)
            .minimum_calls(10)
            .consecutive_failures(1)
            .open_duration(SECOND)
            .permitted_calls_in_half_open(1)
            .build()
            .unwrap();
        let handle = layer.handle();
        let svc = layer.layer(ConcurrencyLimit::new(Downstream::default(), 1));
        let other = layer.layer(Downstream::default());

        let (held, waiting) = probe_behind_a_busy_route(&svc, &other, probe_call).await;
        assert_state(&handle, State::HalfOpen);
        // The probe waits 2 s for the permit.
        advance(2 * SECOND).await;
        held.await.unwrap().unwrap();
        yield_a_few().await;
        advance(2 * SECOND).await;
        waiting.await.unwrap().unwrap();
        assert_state(&handle, after);
    }
}

/// An inner service that is never ready and counts the calls it gets anyway.
#[derive(Clone, Default)]
struct NeverReady {
    called: Arc<AtomicUsize>,
}

impl Service<Call> for NeverReady {
    type Response = &'static str;
    type Error = BoxError;
    type Future = std::future::Ready<Result<&'static str, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Pending
    }

    fn call(&mut self, _: Call) -> Self::Future {
        self.called.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok("called while not ready"))
    }
}

fn poll_ready<S: Service<Call>>(svc: &mut S) -> Poll<Result<(), S::Error>> {
    svc.poll_ready(&mut Context::from_waker(Waker::noop()))
}

/// Ready to fail fast while open, and still ready once the open duration has
/// passed: a second `poll_ready` does not turn the caller into a probe that
/// waits for the inner service.
#[tokio::test(start_paused = true)]
async fn readiness_once_given_holds_until_the_call() {
    let layer = CircuitBreakerBuilder::consecutive("steady")
        .consecutive_failures(1)
        .open_duration(SECOND)
        .build()
        .unwrap();
    let handle = layer.handle();
    call(&mut layer.layer(Downstream::default()), Call::Fail)
        .await
        .unwrap_err();
    let inner = NeverReady::default();
    let mut svc = layer.layer(inner.clone());
    assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
    advance(SECOND).await;
    assert!(
        matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))),
        "ready stays ready until the call"
    );
    // The call was readied without the inner service: it is rejected and
    // takes no probe slot.
    assert_rejected(&svc.call(Call::Ok).await, Duration::ZERO);
    assert_eq!(inner.called.load(Ordering::SeqCst), 0);
    let snapshot = handle.snapshot();
    assert_eq!((snapshot.state, snapshot.half_open_probes), (State::Open, 0));
    // After the call, readiness is decided again: the next caller half-opens
    // the breaker and waits for the inner service.
    assert!(poll_ready(&mut svc).is_pending());
    assert_eq!(handle.snapshot().half_open_probes, 1);
}

/// A call readied while closed is decided when it is sent: the breaker opened
/// in between, so it is rejected and never reaches the inner service.
#[tokio::test(start_paused = true)]
async fn a_call_readied_while_closed_is_rejected_if_the_breaker_opened_before_it_was_sent() {
    let layer = CircuitBreakerBuilder::consecutive("straddle")
        .consecutive_failures(1)
        .open_duration(30 * SECOND)
        .build()
        .unwrap();
    let downstream = Downstream::default();
    let mut svc = layer.layer(downstream.clone());
    assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
    call(&mut layer.layer(Downstream::default()), Call::Fail)
        .await
        .unwrap_err();
    assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
    assert_rejected(&svc.call(Call::Ok).await, 30 * SECOND);
    assert_eq!(downstream.reached(), 0);
    // After a reset the same service forwards again.
    layer.handle().reset();
    assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
    svc.call(Call::Ok).await.unwrap();
    assert_eq!(downstream.reached(), 1);
}

/// A probe slot is given back by a service dropped while it waits for the
/// inner service, by a readied service dropped before its call, and by a
/// response future dropped before it completes.
#[tokio::test(start_paused = true)]
async fn dropping_a_waiting_or_readied_service_or_a_response_future_gives_the_probe_slot_back() {
    let layer = one_probe_breaker("released");
    let handle = layer.handle();
    call(&mut layer.layer(Downstream::default()), Call::Fail)
        .await
        .unwrap_err();
    advance(SECOND).await;

    // Waiting for the inner service.
    let mut waiting = layer.layer(NeverReady::default());
    assert!(poll_ready(&mut waiting).is_pending());
    assert_eq!(handle.snapshot().half_open_probes, 1);
    drop(waiting);
    assert_eq!(handle.snapshot().half_open_probes, 0);

    // Readied, never called.
    let downstream = Downstream::default();
    let mut readied = layer.layer(downstream.clone());
    assert!(matches!(poll_ready(&mut readied), Poll::Ready(Ok(()))));
    assert_eq!(handle.snapshot().half_open_probes, 1);
    drop(readied);
    assert_eq!(handle.snapshot().half_open_probes, 0);

    // Called, its response future dropped before it completes.
    let mut svc = layer.layer(downstream.clone());
    let gate = Arc::new(Notify::new());
    {
        let fut = svc.ready().await.unwrap().call(Call::Gate(gate.clone()));
        let mut fut = std::pin::pin!(fut);
        assert!(fut.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
        assert_eq!(handle.snapshot().half_open_probes, 1);
    }
    assert_eq!(handle.snapshot().half_open_probes, 0);
    assert_state(&handle, State::HalfOpen);
    assert_eq!(downstream.reached(), 1);

    // The slot is free: the next probe closes the breaker.
    call(&mut svc, Call::Ok).await.unwrap();
    assert_state(&handle, State::Closed);
}
