//! Random sequences of calls, completions, cancellations and resizes against
//! the permit and queue accounting: admissions never exceed the limit, a call
//! is rejected only when the bulkhead is full, queued calls reach the inner
//! service in arrival order, and the counts always match what is running.
//!
//! 256 cases per run (`ProptestConfig::with_cases(256)`), each up to 60 steps.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use palisade_bulkhead::future::ResponseFuture;
use palisade_bulkhead::{BulkheadLayer, OnResponse};
use palisade_core::ErrorClassifier;
use palisade_core::{BoxError, BulkheadFull};
use proptest::prelude::*;
use tower::{Layer, Service};

/// What the inner service has seen.
#[derive(Default)]
struct Seen {
    /// Calls in the order they reached the inner service.
    called: Vec<u32>,
    /// Calls running in the inner service.
    running: Vec<u32>,
    /// Calls allowed to finish.
    finish: HashSet<u32>,
    /// The bulkhead's limit, as the inner service must respect it.
    limit: usize,
}

/// Every call runs until the test lets it finish.
#[derive(Clone)]
struct Controlled(Arc<Mutex<Seen>>);

struct Running {
    id: u32,
    seen: Arc<Mutex<Seen>>,
}

impl Future for Running {
    type Output = Result<u32, BoxError>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut seen = self.seen.lock().unwrap();
        if seen.finish.remove(&self.id) {
            seen.running.retain(|&id| id != self.id);
            Poll::Ready(Ok(self.id))
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.seen.lock().unwrap().running.retain(|&id| id != self.id);
    }
}

impl Service<u32> for Controlled {
    type Response = u32;
    type Error = BoxError;
    type Future = Running;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, id: u32) -> Running {
        let mut seen = self.0.lock().unwrap();
        assert!(
            seen.running.len() < seen.limit,
            "call {id} admitted with {:?} running",
            seen.running
        );
        seen.called.push(id);
        seen.running.push(id);
        Running {
            id,
            seen: Arc::clone(&self.0),
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Call,
    /// Lets the n-th running call (modulo their number) finish.
    Finish(usize),
    /// Drops the n-th unfinished call (modulo their number).
    Cancel(usize),
    Resize(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Call),
        3 => any::<usize>().prop_map(Step::Finish),
        1 => any::<usize>().prop_map(Step::Cancel),
        1 => (1..5usize).prop_map(Step::Resize),
    ]
}

type Bulkheaded = ResponseFuture<Controlled, u32, ErrorClassifier, OnResponse>;
type Call = (u32, Pin<Box<Bulkheaded>>);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn accounting_matches_what_runs(
        limit in 1..4usize,
        max_queued in 0..4usize,
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let seen = Arc::new(Mutex::new(Seen { limit, ..Seen::default() }));
        let layer = BulkheadLayer::builder("prop").max_concurrent(limit).max_queued(max_queued).build().unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(Controlled(Arc::clone(&seen)));
        let mut cx = Context::from_waker(Waker::noop());
        let mut calls: Vec<Call> = Vec::new();
        // Calls that were queued, in arrival order, and were not cancelled.
        let mut queued_order = Vec::new();
        let mut cancelled = HashSet::new();
        let mut next_id = 0;

        for step in steps {
            match step {
                Step::Call => {
                    let before = handle.snapshot();
                    let id = next_id;
                    next_id += 1;
                    prop_assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
                    let mut call = Box::pin(svc.call(id));
                    let reached_inner = seen.lock().unwrap().called.last() == Some(&id);
                    match call.as_mut().poll(&mut cx) {
                        Poll::Ready(Err(err)) => {
                            prop_assert!(err.is::<BulkheadFull>());
                            prop_assert!(before.queued >= max_queued, "rejected with room in the queue: {before:?}");
                            prop_assert!(before.queued > 0 || before.in_flight >= before.limit, "rejected with a free permit: {before:?}");
                        }
                        Poll::Ready(Ok(_)) => prop_assert!(false, "calls run until let finish"),
                        Poll::Pending => {
                            if reached_inner {
                                prop_assert!(before.queued == 0 && before.in_flight < before.limit, "overtook: {before:?}");
                            } else {
                                queued_order.push(id);
                            }
                            calls.push((id, call));
                        }
                    }
                }
                Step::Finish(n) => {
                    let mut seen = seen.lock().unwrap();
                    if !seen.running.is_empty() {
                        let id = seen.running[n % seen.running.len()];
                        seen.finish.insert(id);
                    }
                }
                Step::Cancel(n) => {
                    if !calls.is_empty() {
                        let (id, call) = calls.remove(n % calls.len());
                        drop(call);
                        cancelled.insert(id);
                    }
                }
                Step::Resize(n) => {
                    handle.set_max_concurrent(n).unwrap();
                    seen.lock().unwrap().limit = n;
                }
            }
            // Poll until nothing moves, so granted calls reach the inner service.
            loop {
                let before = calls.len();
                let called = seen.lock().unwrap().called.len();
                calls.retain_mut(|(_, call)| call.as_mut().poll(&mut cx).is_pending());
                if calls.len() == before && seen.lock().unwrap().called.len() == called {
                    break;
                }
            }
            let snapshot = handle.snapshot();
            let seen = seen.lock().unwrap();
            prop_assert_eq!(snapshot.in_flight, seen.running.len());
            prop_assert_eq!(snapshot.in_flight + snapshot.queued, calls.len());
            prop_assert!(snapshot.queued <= max_queued);
            // Queued calls reach the inner service in the order they arrived.
            let served: Vec<u32> = seen.called.iter().copied().filter(|id| queued_order.contains(id)).collect();
            let expected: Vec<u32> = queued_order.iter().copied().filter(|id| !cancelled.contains(id) || served.contains(id)).take(served.len()).collect();
            prop_assert_eq!(served, expected);
        }
        drop(calls);
        let snapshot = handle.snapshot();
        prop_assert_eq!((snapshot.in_flight, snapshot.queued), (0, 0));
    }
}
