//! Model checking of the half-open probe accounting: never more probes in
//! flight than permitted, and no slot leaked when a probe's future is dropped.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p palisade-circuit-breaker --test loom --release`.

#![cfg(loom)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use loom::sync::atomic::{AtomicUsize, Ordering};
use palisade_circuit_breaker::{CircuitBreaker, CircuitBreakerBuilder, State};
use palisade_core::BoxError;
use tower::{Layer, Service};

/// A downstream that counts the calls in flight and the most seen at once.
#[derive(Clone)]
struct Counting {
    in_flight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

struct Flight {
    in_flight: Arc<AtomicUsize>,
    fail: bool,
}

impl Future for Flight {
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(if self.fail { Err("boom".into()) } else { Ok(()) })
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Service<bool> for Counting {
    type Response = ();
    type Error = BoxError;
    type Future = Flight;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, fail: bool) -> Flight {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        Flight {
            in_flight: self.in_flight.clone(),
            fail,
        }
    }
}

type Breaker = CircuitBreaker<Counting>;

/// Starts a call (readiness, then the call); a rejection resolves at once when polled.
fn start(svc: &mut Breaker, fail: bool) -> <Breaker as Service<bool>>::Future {
    assert!(svc.poll_ready(&mut Context::from_waker(Waker::noop())).is_ready());
    svc.call(fail)
}

fn finish(fut: <Breaker as Service<bool>>::Future) -> Result<(), BoxError> {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("the test's futures are ready at once"),
    }
}

/// A breaker tripped by one failure, already past its (1 ns) open duration.
fn half_open(
    permitted: u32,
) -> (
    Breaker,
    palisade_circuit_breaker::CircuitBreakerHandle,
    Arc<AtomicUsize>,
) {
    let layer = CircuitBreakerBuilder::consecutive("loom")
        .consecutive_failures(1)
        .open_duration(Duration::from_nanos(1))
        .permitted_calls_in_half_open(permitted)
        .build()
        .unwrap();
    let handle = layer.handle();
    let most = Arc::new(AtomicUsize::new(0));
    let mut svc = layer.layer(Counting {
        in_flight: Arc::new(AtomicUsize::new(0)),
        most: most.clone(),
    });
    let tripping = start(&mut svc, true);
    assert!(finish(tripping).is_err());
    assert_eq!(handle.state(), State::Open);
    most.store(0, Ordering::SeqCst);
    (svc, handle, most)
}

#[test]
fn probes_in_flight_never_exceed_the_permitted_and_drops_give_slots_back() {
    loom::model(|| {
        let (svc, handle, most) = half_open(1);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let mut svc = svc.clone();
                loom::thread::spawn(move || {
                    // Each caller takes a probe slot if it can, then is cancelled.
                    let fut = start(&mut svc, false);
                    drop(fut);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 1, "at most one probe in flight");
        let snapshot = handle.snapshot();
        assert_eq!(snapshot.state, State::HalfOpen);
        assert_eq!(snapshot.half_open_probes, 0, "every dropped probe gave its slot back");
    });
}

#[test]
fn a_successful_probe_racing_a_cancelled_one() {
    loom::model(|| {
        let (svc, handle, _) = half_open(1);
        let mut succeeding = svc.clone();
        let success = loom::thread::spawn(move || {
            let _ = finish(start(&mut succeeding, false));
        });
        let mut cancelling = svc.clone();
        let cancel = loom::thread::spawn(move || drop(start(&mut cancelling, false)));
        success.join().unwrap();
        cancel.join().unwrap();
        let snapshot = handle.snapshot();
        match snapshot.state {
            // The successful probe closed it.
            State::Closed => {}
            // The cancelled probe held the only slot when the other tried: rejected.
            State::HalfOpen => assert_eq!(snapshot.half_open_probes, 0),
            other => panic!("unexpected state {other:?}"),
        }
    });
}

#[test]
fn a_success_skipped_on_a_healthy_window_racing_a_failure() {
    loom::model(|| {
        // The last 2 calls; a failure rate of 100 % never trips on one failure.
        let layer = CircuitBreakerBuilder::rate_based("loom")
            .count_window(2)
            .failure_rate(100.0)
            .minimum_calls(2)
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(Counting {
            in_flight: Arc::new(AtomicUsize::new(0)),
            most: Arc::new(AtomicUsize::new(0)),
        });
        for _ in 0..2 {
            finish(start(&mut svc, false)).unwrap();
        }
        let mut succeeding = svc.clone();
        let success = loom::thread::spawn(move || finish(start(&mut succeeding, false)).unwrap());
        let mut failing = svc.clone();
        let failure = loom::thread::spawn(move || assert!(finish(start(&mut failing, true)).is_err()));
        success.join().unwrap();
        failure.join().unwrap();
        let snapshot = handle.snapshot();
        assert_eq!((snapshot.calls_in_window, snapshot.failed_calls), (2, 1));
        assert_eq!(snapshot.state, State::Closed);
        // Two more successes push the failure out, whichever order the two took.
        for _ in 0..2 {
            finish(start(&mut svc, false)).unwrap();
        }
        assert_eq!(handle.snapshot().failed_calls, 0);
    });
}
