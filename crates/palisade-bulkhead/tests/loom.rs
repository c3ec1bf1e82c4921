//! Model checks of the permit and queue accounting, under every interleaving
//! loom explores. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p palisade-bulkhead --test loom --release`.
#![cfg(loom)]

use std::future::{Future, Ready, ready};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use palisade_bulkhead::BulkheadLayer;
use palisade_core::{BoxError, BulkheadFull};
use tower::{Layer, Service, ServiceExt};

/// Counts calls in flight from the call until its future is polled, and
/// fails the model if the bulkhead's limit of one is ever exceeded.
#[derive(Clone)]
struct Exclusive {
    in_flight: Arc<AtomicUsize>,
}

struct Finish {
    in_flight: Arc<AtomicUsize>,
}

impl Future for Finish {
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Poll::Ready(Ok(()))
    }
}

impl Service<()> for Exclusive {
    type Response = ();
    type Error = BoxError;
    type Future = Finish;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: ()) -> Finish {
        let before = self.in_flight.fetch_add(1, Ordering::SeqCst);
        assert_eq!(before, 0, "two calls in flight behind a limit of one");
        Finish {
            in_flight: Arc::clone(&self.in_flight),
        }
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

#[test]
fn permits_and_queue_places_are_never_lost_or_doubled() {
    model(|| {
        let layer = BulkheadLayer::builder("loom")
            .max_concurrent(1)
            .max_queued(1)
            .build()
            .unwrap();
        let handle = layer.handle();
        let svc = layer.layer(Exclusive {
            in_flight: Arc::new(AtomicUsize::new(0)),
        });
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let svc = svc.clone();
                loom::thread::spawn(move || loom::future::block_on(svc.oneshot(())))
            })
            .collect();
        let mine = loom::future::block_on(svc.clone().oneshot(()));
        let mut admitted = 0;
        for result in threads.into_iter().map(|t| t.join().unwrap()).chain([mine]) {
            match result {
                Ok(()) => admitted += 1,
                Err(err) => assert!(err.is::<BulkheadFull>(), "{err}"),
            }
        }
        // One permit and one queue place: at least two of three get through.
        assert!(admitted >= 2, "admitted {admitted}");
        let snapshot = handle.snapshot();
        assert_eq!((snapshot.in_flight, snapshot.queued), (0, 0));
    });
}

#[test]
fn a_waiter_dropped_while_the_permit_is_released_is_seen_until_then_and_loses_nothing() {
    model(|| {
        let layer = BulkheadLayer::builder("loom")
            .max_concurrent(1)
            .max_queued(1)
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(Exclusive {
            in_flight: Arc::new(AtomicUsize::new(0)),
        });
        let mut cx = Context::from_waker(Waker::noop());
        // Holds the permit, not yet polled.
        let holder = svc.call(());
        // Queued behind it, polled once so it registered a waker.
        let mut waiter = Box::pin(svc.call(()));
        assert!(waiter.as_mut().poll(&mut cx).is_pending());
        // The release hands the permit to the waiter, in two steps.
        let releasing = loom::thread::spawn(move || {
            let _ = loom::future::block_on(holder);
        });
        // Until the waiter goes, a snapshot sees it, queued or in flight.
        let snapshot = handle.snapshot();
        let seen = snapshot.in_flight + snapshot.queued;
        assert!(
            (1..=2).contains(&seen),
            "{snapshot:?}: the waiting call is in neither count"
        );
        drop(waiter);
        releasing.join().unwrap();
        let snapshot = handle.snapshot();
        assert_eq!((snapshot.in_flight, snapshot.queued), (0, 0));
        // The permit is usable again.
        let next = pin!(svc.call(()));
        assert!(matches!(next.poll(&mut cx), Poll::Ready(Ok(()))));
    });
}

#[test]
fn a_raised_limit_wakes_a_waiter_racing_a_release() {
    model(|| {
        let layer = BulkheadLayer::builder("loom")
            .max_concurrent(1)
            .max_queued(2)
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(Immediate);
        let holder = svc.call(());
        let first = svc.call(());
        let second = svc.call(());
        let resize = {
            let handle = handle.clone();
            loom::thread::spawn(move || handle.set_max_concurrent(2).unwrap())
        };
        let release = loom::thread::spawn(move || {
            let _ = loom::future::block_on(holder);
        });
        let waiters = loom::thread::spawn(move || {
            loom::future::block_on(first).unwrap();
            loom::future::block_on(second).unwrap();
        });
        resize.join().unwrap();
        release.join().unwrap();
        waiters.join().unwrap();
        let snapshot = handle.snapshot();
        assert_eq!((snapshot.in_flight, snapshot.queued, snapshot.limit), (0, 0, 2));
    });
}

/// Any number of calls; completes at once.
#[derive(Clone)]
struct Immediate;

impl Service<()> for Immediate {
    type Response = ();
    type Error = BoxError;
    type Future = Ready<Result<(), BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: ()) -> Self::Future {
        ready(Ok(()))
    }
}

/// A limit that starts at 2 and goes up by one with every sample: the limit
/// in force must be the one it gave last.
#[derive(Debug, Clone)]
struct Counting(usize);

impl palisade_bulkhead::Limit for Counting {
    fn limit(&self) -> usize {
        self.0
    }

    fn update(&mut self, _sample: &palisade_bulkhead::Sample) -> usize {
        self.0 += 1;
        self.0
    }
}

#[test]
fn adaptive_limits_are_applied_in_the_order_they_were_computed() {
    model(|| {
        let layer = BulkheadLayer::builder("loom").adaptive(Counting(2)).build().unwrap();
        let handle = layer.handle();
        let svc = layer.layer(tower::service_fn(|()| ready(Ok::<_, BoxError>(()))));
        let other = {
            let svc = svc.clone();
            loom::thread::spawn(move || loom::future::block_on(svc.oneshot(())))
        };
        loom::future::block_on(svc.oneshot(())).unwrap();
        other.join().unwrap().unwrap();
        // Two samples: 3, then 4.
        assert_eq!(handle.snapshot().limit, 4);
    });
}
