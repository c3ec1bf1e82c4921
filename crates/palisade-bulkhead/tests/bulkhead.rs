//! Behaviour of the fixed and keyed bulkheads, on paused time.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_bulkhead::future::ResponseFuture;
use palisade_bulkhead::{Aimd, Bulkhead, BulkheadBuilder, BulkheadHandle, BulkheadLayer, ConfigError, OnResponse};
use palisade_core::{BoxError, BulkheadFull, BulkheadTimeout, ErrorClassifier};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// Lets queued and spawned work run without moving paused time.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// An inner service that records how many calls it runs at once and in what
/// order they arrive; each call waits for a permit on `release` (or finishes
/// at once when `release` is `None`), and fails when its request is odd and
/// `fail_odd` is set.
#[derive(Clone)]
struct Probe {
    in_flight: Arc<AtomicUsize>,
    max_seen: Arc<AtomicUsize>,
    calls: Arc<Mutex<Vec<u32>>>,
    release: Option<Arc<Semaphore>>,
    hold: Duration,
    fail_odd: bool,
}

#[derive(Debug)]
struct OddRequest(u32);

impl std::fmt::Display for OddRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "odd request {}", self.0)
    }
}

impl std::error::Error for OddRequest {}

impl Probe {
    fn new() -> Self {
        Self {
            in_flight: Arc::default(),
            max_seen: Arc::default(),
            calls: Arc::default(),
            release: None,
            hold: Duration::ZERO,
            fail_odd: false,
        }
    }

    /// Calls wait until the returned semaphore gets a permit per call.
    fn gated(mut self) -> (Self, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        self.release = Some(Arc::clone(&gate));
        (self, gate)
    }

    fn holding(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    fn calls(&self) -> Vec<u32> {
        self.calls.lock().unwrap().clone()
    }
}

struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Service<u32> for Probe {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        self.calls.lock().unwrap().push(req);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_seen.fetch_max(now, Ordering::SeqCst);
        let guard = InFlight(Arc::clone(&self.in_flight));
        let release = self.release.clone();
        let hold = self.hold;
        let fail = self.fail_odd && req % 2 == 1;
        Box::pin(async move {
            let _guard = guard;
            if let Some(release) = release {
                release.acquire().await.expect("open").forget();
            }
            tokio::time::sleep(hold).await;
            if fail { Err(OddRequest(req).into()) } else { Ok(req) }
        })
    }
}

fn full_of(err: &BoxError) -> &BulkheadFull {
    err.downcast_ref::<BulkheadFull>()
        .unwrap_or_else(|| panic!("expected BulkheadFull, got {err}"))
}

/// A bulkhead of one permit, held by call 1 until `release` gets a permit.
struct Held {
    svc: Bulkhead<Probe, ErrorClassifier, OnResponse>,
    probe: Probe,
    release: Arc<Semaphore>,
    handle: BulkheadHandle,
    holder: JoinHandle<Result<u32, BoxError>>,
}

impl Held {
    async fn new(builder: BulkheadBuilder) -> Self {
        let (probe, release) = Probe::new().gated();
        let layer = builder.max_concurrent(1).build().unwrap();
        let mut svc = layer.layer(probe.clone());
        let holder = tokio::spawn(svc.ready().await.unwrap().call(1));
        settle().await;
        Self {
            svc,
            probe,
            release,
            handle: layer.handle(),
            holder,
        }
    }

    /// Makes call `req` (joining the queue), polled once.
    async fn queued(&mut self, req: u32) -> Pin<Box<ResponseFuture<Probe, u32, ErrorClassifier, OnResponse>>> {
        let mut call = Box::pin(self.svc.ready().await.unwrap().call(req));
        assert!(futures_poll(&mut call).is_pending());
        call
    }

    /// Lets the holder finish.
    async fn finish_holder(self) -> Self {
        self.release.add_permits(1);
        let Self {
            svc,
            probe,
            release,
            handle,
            holder,
        } = self;
        assert_eq!(holder.await.unwrap().unwrap(), 1);
        Self {
            svc,
            probe,
            release,
            handle,
            holder: tokio::spawn(async { Ok(1) }),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn never_more_than_the_limit_in_flight() {
    let probe = Probe::new().holding(Duration::from_millis(10));
    let layer = BulkheadLayer::builder("db")
        .max_concurrent(3)
        .max_queued(100)
        .build()
        .unwrap();
    let svc = layer.layer(probe.clone());
    let started = Instant::now();
    let calls: Vec<_> = (0..50).map(|i| tokio::spawn(svc.clone().oneshot(i))).collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u32);
    }
    assert_eq!(
        probe.max_seen.load(Ordering::SeqCst),
        3,
        "the inner service saw the limit, no more"
    );
    // 50 calls, 3 at a time, 10 ms each: 17 rounds.
    assert_eq!(started.elapsed(), Duration::from_millis(170));
    let snapshot = layer.handle().snapshot();
    assert_eq!((snapshot.in_flight, snapshot.queued, snapshot.limit), (0, 0, 3));
}

#[tokio::test(start_paused = true)]
async fn without_a_queue_a_full_bulkhead_rejects_at_once() {
    let (probe, release) = Probe::new().gated();
    let layer = BulkheadLayer::builder("payments")
        .max_concurrent(2)
        .retry_after(Duration::from_secs(7))
        .build()
        .unwrap();
    let svc = layer.layer(probe.clone());
    let first = tokio::spawn(svc.clone().oneshot(1));
    let second = tokio::spawn(svc.clone().oneshot(2));
    settle().await;
    let started = Instant::now();
    let err = svc.clone().oneshot(3).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO);
    let full = full_of(&err);
    assert_eq!(full.name(), "payments");
    assert_eq!(full.retry_after(), Duration::from_secs(7));
    assert_eq!(
        probe.calls(),
        vec![1, 2],
        "the rejected call never reached the inner service"
    );
    release.add_permits(3);
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(second.await.unwrap().unwrap(), 2);
    assert_eq!(svc.oneshot(4).await.unwrap(), 4, "permits came back");
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_rejects_at_once_and_queued_calls_are_served() {
    let (probe, release) = Probe::new().gated();
    let layer = BulkheadLayer::builder("inventory")
        .max_concurrent(1)
        .max_queued(2)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(probe.clone());
    let calls: Vec<_> = (1..=3).map(|i| tokio::spawn(svc.clone().oneshot(i))).collect();
    settle().await;
    let snapshot = handle.snapshot();
    assert_eq!((snapshot.in_flight, snapshot.queued), (1, 2));
    let err = svc.clone().oneshot(4).await.unwrap_err();
    assert_eq!(full_of(&err).name(), "inventory");
    release.add_permits(3);
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u32 + 1);
    }
    assert_eq!(probe.calls(), vec![1, 2, 3]);
    assert_eq!(handle.snapshot().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_max_wait_is_rejected() {
    let builder = BulkheadLayer::builder("search")
        .max_queued(1)
        .max_wait(Duration::from_millis(50))
        .retry_after(Duration::from_secs(2));
    let held = Held::new(builder).await;
    let started = Instant::now();
    let err = held.svc.clone().oneshot(2).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(50));
    let timeout = err.downcast_ref::<BulkheadTimeout>().expect("a BulkheadTimeout");
    assert_eq!(timeout.name(), "search");
    assert_eq!(timeout.waited(), Duration::from_millis(50));
    assert_eq!(timeout.retry_after(), Duration::from_secs(2));
    assert_eq!(held.handle.snapshot().queued, 0, "the timed-out call left the queue");
    assert_eq!(held.probe.calls(), vec![1]);
    held.finish_holder().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_served_within_max_wait_runs() {
    let probe = Probe::new().holding(Duration::from_millis(30));
    let layer = BulkheadLayer::builder("search")
        .max_concurrent(1)
        .max_queued(1)
        .max_wait(Duration::from_millis(50))
        .build()
        .unwrap();
    let svc = layer.layer(probe.clone());
    let holder = tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    let started = Instant::now();
    assert_eq!(svc.oneshot(2).await.unwrap(), 2);
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(60),
        "30 ms waiting, 30 ms running"
    );
    assert_eq!(holder.await.unwrap().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_first_come_first_served() {
    let (probe, release) = Probe::new().gated();
    let layer = BulkheadLayer::builder("fifo")
        .max_concurrent(1)
        .max_queued(10)
        .build()
        .unwrap();
    let mut svc = layer.layer(probe.clone());
    // Calls join the queue in the order they are made; the tasks run them in
    // another order.
    let mut futures = Vec::new();
    for i in 0..8 {
        futures.push(svc.ready().await.unwrap().call(i));
    }
    let mut tasks = Vec::new();
    for future in futures.into_iter().rev() {
        tasks.push(tokio::spawn(future));
        settle().await;
    }
    for _ in 0..8 {
        release.add_permits(1);
        settle().await;
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(probe.calls(), (0..8).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn new_callers_do_not_overtake_the_queue() {
    let mut held = Held::new(BulkheadLayer::builder("fair").max_queued(2)).await;
    let queued = tokio::spawn(held.queued(2).await);
    let held = held.finish_holder().await;
    // The permit went to the queued call; a newcomer queues behind it.
    let newcomer = tokio::spawn(held.svc.clone().oneshot(3));
    settle().await;
    assert_eq!(
        (held.handle.snapshot().in_flight, held.handle.snapshot().queued),
        (1, 1)
    );
    assert_eq!(held.probe.calls(), vec![1, 2]);
    held.release.add_permits(2);
    assert_eq!(queued.await.unwrap().unwrap(), 2);
    assert_eq!(newcomer.await.unwrap().unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn errors_release_the_permit_and_keep_their_source() {
    let mut probe = Probe::new();
    probe.fail_odd = true;
    let layer = BulkheadLayer::builder("flaky").max_concurrent(1).build().unwrap();
    let svc = layer.layer(probe);
    for i in 0..4 {
        let result = svc.clone().oneshot(i).await;
        if i % 2 == 1 {
            let err = result.unwrap_err();
            assert_eq!(
                err.downcast_ref::<OddRequest>().map(|e| e.0),
                Some(i),
                "the inner error, unchanged"
            );
        } else {
            assert_eq!(result.unwrap(), i);
        }
    }
    assert_eq!(layer.handle().snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_running_call_releases_its_permit() {
    let (probe, _release) = Probe::new().gated();
    let layer = BulkheadLayer::builder("drop").max_concurrent(1).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(probe.clone());
    let mut running = Box::pin(svc.ready().await.unwrap().call(1));
    assert!(futures_poll(&mut running).is_pending());
    assert_eq!((handle.snapshot().in_flight, probe.in_flight()), (1, 1));
    drop(running);
    assert_eq!((handle.snapshot().in_flight, probe.in_flight()), (0, 0));
    // A call made but never polled holds its permit too, until dropped.
    let unpolled = svc.ready().await.unwrap().call(2);
    assert_eq!(handle.snapshot().in_flight, 1);
    drop(unpolled);
    assert_eq!(handle.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_queued_call_gives_its_place_to_the_next() {
    let mut held = Held::new(BulkheadLayer::builder("drop").max_queued(2)).await;
    let waiting = held.queued(2).await;
    let next = tokio::spawn(held.queued(3).await);
    assert_eq!(held.handle.snapshot().queued, 2);
    drop(waiting);
    assert_eq!(held.handle.snapshot().queued, 1);
    let held = held.finish_holder().await;
    held.release.add_permits(1);
    assert_eq!(next.await.unwrap().unwrap(), 3);
    assert_eq!(held.probe.calls(), vec![1, 3], "the dropped call never ran");
    let snapshot = held.handle.snapshot();
    assert_eq!((snapshot.in_flight, snapshot.queued), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn dropping_a_call_granted_a_permit_before_it_ran_passes_the_permit_on() {
    let mut held = Held::new(BulkheadLayer::builder("drop").max_queued(2)).await;
    let granted = held.queued(2).await;
    let next = tokio::spawn(held.queued(3).await);
    let held = held.finish_holder().await;
    // The permit was handed to `granted`, which has not run since.
    assert_eq!(
        (held.handle.snapshot().in_flight, held.handle.snapshot().queued),
        (1, 1)
    );
    drop(granted);
    held.release.add_permits(1);
    assert_eq!(next.await.unwrap().unwrap(), 3);
    assert_eq!(held.probe.calls(), vec![1, 3]);
    assert_eq!(held.handle.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_call_waiting_with_a_deadline_leaves_the_queue() {
    let builder = BulkheadLayer::builder("drop")
        .max_queued(1)
        .max_wait(Duration::from_secs(1));
    let mut held = Held::new(builder).await;
    let mut waiting = held.queued(2).await;
    tokio::time::advance(Duration::from_millis(500)).await;
    assert!(futures_poll(&mut waiting).is_pending());
    drop(waiting);
    assert_eq!(held.handle.snapshot().queued, 0);
    let held = held.finish_holder().await;
    assert_eq!(held.handle.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn dropped_calls_are_not_sampled_by_an_adaptive_limit() {
    let (probe, _release) = Probe::new().gated();
    let aimd = Aimd::builder()
        .initial_limit(4)
        .min_limit(1)
        .max_limit(8)
        .build()
        .unwrap();
    let layer = BulkheadLayer::builder("adaptive").adaptive(aimd).build().unwrap();
    let mut svc = layer.layer(probe);
    for i in 0..4 {
        let mut call = Box::pin(svc.ready().await.unwrap().call(i));
        assert!(futures_poll(&mut call).is_pending());
        tokio::time::advance(Duration::from_secs(10)).await;
        drop(call);
    }
    // Slow calls (past AIMD's timeout) would have shrunk the limit; dropped
    // ones count as neither success nor failure.
    assert_eq!(layer.handle().snapshot().limit, 4);
}

#[tokio::test(start_paused = true)]
async fn resizing_admits_queued_calls_and_shrinking_waits_for_calls_to_finish() {
    let (probe, release) = Probe::new().gated();
    let layer = BulkheadLayer::builder("resize")
        .max_concurrent(1)
        .max_queued(10)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(probe.clone());
    let mut tasks: Vec<_> = (1..=3).map(|i| tokio::spawn(svc.clone().oneshot(i))).collect();
    settle().await;
    assert_eq!((handle.snapshot().in_flight, handle.snapshot().queued), (1, 2));
    handle.set_max_concurrent(3).unwrap();
    settle().await;
    assert_eq!((handle.snapshot().in_flight, handle.snapshot().queued), (3, 0));
    assert_eq!(probe.in_flight(), 3);

    handle.set_max_concurrent(1).unwrap();
    tasks.extend((4..=5).map(|i| tokio::spawn(svc.clone().oneshot(i))));
    settle().await;
    assert_eq!(
        (
            handle.snapshot().in_flight,
            handle.snapshot().queued,
            handle.snapshot().limit
        ),
        (3, 2, 1)
    );
    // Two of three finish: still one in flight, at the new limit.
    release.add_permits(2);
    settle().await;
    assert_eq!((handle.snapshot().in_flight, handle.snapshot().queued), (1, 2));
    assert_eq!(probe.max_seen.load(Ordering::SeqCst), 3);
    release.add_permits(3);
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(probe.calls(), vec![1, 2, 3, 4, 5]);

    assert_eq!(handle.set_max_concurrent(0), Err(ConfigError::MaxConcurrent(0)));
    let adaptive = BulkheadLayer::builder("adaptive")
        .adaptive(Aimd::builder().build().unwrap())
        .build()
        .unwrap();
    assert_eq!(adaptive.handle().set_max_concurrent(5), Err(ConfigError::AdaptiveLimit));
}

#[tokio::test(start_paused = true)]
async fn keyed_compartments_are_isolated_and_their_number_bounded() {
    let (probe, release) = Probe::new().gated();
    // Requests are tenant ids times 100 plus a sequence number.
    let layer = BulkheadLayer::builder("tenants")
        .max_concurrent(2)
        .max_keys(2)
        .build_keyed(|req: &u32| req / 100)
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(probe.clone());
    let other = tokio::spawn(svc.clone().oneshot(201));
    settle().await;
    let busy: Vec<_> = [101, 102]
        .into_iter()
        .map(|r| tokio::spawn(svc.clone().oneshot(r)))
        .collect();
    settle().await;
    let err = svc.clone().oneshot(103).await.unwrap_err();
    assert_eq!(full_of(&err).name(), "tenants");
    // Tenant 2 is not affected by tenant 1 being full.
    let mut admitted = Box::pin(svc.clone().oneshot(202));
    assert!(futures_poll(&mut admitted).is_pending(), "admitted, running");
    assert_eq!(probe.in_flight(), 4);
    let snapshot = handle.snapshot(&1).unwrap();
    assert_eq!((snapshot.in_flight, snapshot.limit), (2, 2));
    assert_eq!(handle.snapshot(&2).unwrap().in_flight, 2);
    drop(admitted);
    assert_eq!(handle.snapshot(&2).unwrap().in_flight, 1);
    // Two keys kept, both busy: a third tenant is turned away.
    full_of(&svc.clone().oneshot(301).await.unwrap_err());
    assert_eq!(handle.keys(), 2);
    release.add_permits(1);
    assert_eq!(other.await.unwrap().unwrap(), 201);
    // Tenant 2 is idle now, so tenant 3 takes its place.
    let third = tokio::spawn(svc.clone().oneshot(302));
    settle().await;
    assert_eq!(handle.keys(), 2);
    assert!(handle.snapshot(&2).is_none());
    assert_eq!(handle.snapshot(&3).unwrap().in_flight, 1);
    handle.set_max_concurrent(3).unwrap();
    assert_eq!(handle.snapshot(&1).unwrap().limit, 3);
    release.add_permits(3);
    for call in busy {
        call.await.unwrap().unwrap();
    }
    assert_eq!(third.await.unwrap().unwrap(), 302);
    assert_eq!(probe.calls(), vec![201, 101, 102, 202, 302]);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_drives_the_inner_service_and_keeps_its_errors() {
    #[derive(Clone)]
    struct NotReady(Arc<AtomicUsize>);
    impl Service<u32> for NotReady {
        type Response = u32;
        type Error = std::io::Error;
        type Future = std::future::Ready<Result<u32, std::io::Error>>;
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
            match self.0.fetch_add(1, Ordering::SeqCst) {
                0 => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                _ => Poll::Ready(Err(std::io::Error::other("downstream gone"))),
            }
        }
        fn call(&mut self, req: u32) -> Self::Future {
            std::future::ready(Ok(req))
        }
    }
    let layer = BulkheadLayer::builder("ready").build().unwrap();
    let polls = Arc::new(AtomicUsize::new(0));
    let mut svc = layer.layer(NotReady(Arc::clone(&polls)));
    let err = svc.ready().await.err().expect("a readiness error");
    assert_eq!(polls.load(Ordering::SeqCst), 2, "pending once, woken, then the error");
    assert_eq!(
        err.downcast_ref::<std::io::Error>().map(|e| e.to_string()).as_deref(),
        Some("downstream gone")
    );
    assert_eq!(layer.handle().snapshot().in_flight, 0, "readiness takes no permit");
}

#[tokio::test(start_paused = true)]
async fn queued_calls_run_on_a_service_polled_ready() {
    /// Ready only after `poll_ready`, for one call; a clone starts unready.
    struct OneCallPerReady {
        ready: bool,
        inner: Probe,
    }
    impl Clone for OneCallPerReady {
        fn clone(&self) -> Self {
            Self {
                ready: false,
                inner: self.inner.clone(),
            }
        }
    }
    impl Service<u32> for OneCallPerReady {
        type Response = u32;
        type Error = BoxError;
        type Future = <Probe as Service<u32>>::Future;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            self.ready = true;
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: u32) -> Self::Future {
            assert!(std::mem::take(&mut self.ready), "called without readiness");
            self.inner.call(req)
        }
    }
    let (probe, release) = Probe::new().gated();
    let layer = BulkheadLayer::builder("contract")
        .max_concurrent(1)
        .max_queued(5)
        .build()
        .unwrap();
    let mut svc = layer.layer(OneCallPerReady {
        ready: false,
        inner: probe.clone(),
    });
    let mut futures = Vec::new();
    for i in 0..4 {
        futures.push(tokio::spawn(svc.ready().await.unwrap().call(i)));
    }
    release.add_permits(4);
    for future in futures {
        future.await.unwrap().unwrap();
    }
    assert_eq!(probe.calls(), vec![0, 1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_lets_go_of_what_the_inner_service_reserved_for_it() {
    // A keyed bulkhead over a limit every tenant shares (a connection pool, a
    // tonic channel's buffer): a call waiting in its tenant's queue must not
    // keep what the inner service reserved for it, or another tenant, with
    // room of its own, waits behind that queue.
    let (probe, release) = Probe::new().gated();
    let layer = BulkheadLayer::builder("tenants")
        .max_concurrent(1)
        .max_queued(4)
        .build_keyed(|req: &u32| req / 100)
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(tower::limit::ConcurrencyLimit::new(probe.clone(), 2));
    let running = tokio::spawn(svc.clone().oneshot(101));
    settle().await;
    let queued = tokio::spawn(svc.clone().oneshot(102));
    settle().await;
    assert_eq!(handle.snapshot(&1).unwrap().queued, 1);
    let mut other = svc.clone();
    tokio::time::timeout(Duration::from_secs(1), other.ready())
        .await
        .expect("tenant 2 is not held back by tenant 1's queue")
        .unwrap();
    let call = tokio::spawn(other.call(201));
    settle().await;
    release.add_permits(3);
    assert_eq!(call.await.unwrap().unwrap(), 201);
    assert_eq!(running.await.unwrap().unwrap(), 101);
    assert_eq!(queued.await.unwrap().unwrap(), 102);
    assert_eq!(probe.calls(), vec![101, 201, 102]);
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_whose_service_then_fails_readiness_gives_its_permit_back() {
    #[derive(Clone)]
    struct Failing {
        failing: Arc<std::sync::atomic::AtomicBool>,
        inner: Probe,
    }
    impl Service<u32> for Failing {
        type Response = u32;
        type Error = BoxError;
        type Future = <Probe as Service<u32>>::Future;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            if self.failing.load(Ordering::SeqCst) {
                return Poll::Ready(Err("downstream gone".into()));
            }
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: u32) -> Self::Future {
            self.inner.call(req)
        }
    }
    let (probe, release) = Probe::new().gated();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let layer = BulkheadLayer::builder("ready")
        .max_concurrent(1)
        .max_queued(1)
        .build()
        .unwrap();
    let svc = layer.layer(Failing {
        failing: Arc::clone(&failing),
        inner: probe.clone(),
    });
    let running = tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    let queued = tokio::spawn(svc.clone().oneshot(2));
    settle().await;
    failing.store(true, Ordering::SeqCst);
    release.add_permits(1);
    assert_eq!(running.await.unwrap().unwrap(), 1);
    let err = queued.await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "downstream gone");
    let snapshot = layer.handle().snapshot();
    assert_eq!((snapshot.in_flight, snapshot.queued), (0, 0));
    assert_eq!(probe.calls(), vec![1]);
}

#[tokio::test(start_paused = true)]
async fn max_wait_bounds_an_admitted_calls_wait_for_its_service() {
    // Admitted, a queued call holds its permit while its service gets ready:
    // past `max_wait` it gives the permit back rather than hold it for a call
    // not yet sent.
    let (probe, release) = Probe::new().gated();
    let layer = BulkheadLayer::builder("ready")
        .max_concurrent(1)
        .max_queued(1)
        .max_wait(Duration::from_millis(100))
        .build()
        .unwrap();
    let shared = tower::limit::ConcurrencyLimit::new(probe.clone(), 2);
    let svc = layer.layer(shared.clone());
    let running = tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    let queued = tokio::spawn(svc.clone().oneshot(2));
    settle().await;
    assert_eq!(layer.handle().snapshot().queued, 1);
    // Other users of the shared limit: one takes the place the queued call let
    // go, the next waits for one and gets the running call's.
    let other = |req: u32| {
        let mut other = shared.clone();
        tokio::spawn(async move {
            other.ready().await.unwrap();
            other.call(req).await
        })
    };
    let elsewhere = other(3);
    settle().await;
    let waiting = other(4);
    settle().await;
    release.add_permits(1);
    assert_eq!(running.await.unwrap().unwrap(), 1);
    settle().await;
    assert_eq!(
        layer.handle().snapshot().in_flight,
        1,
        "admitted, its service not ready"
    );
    let err = tokio::time::timeout(Duration::from_secs(1), queued)
        .await
        .expect("max_wait ends the wait for the service")
        .unwrap()
        .unwrap_err();
    assert!(err.is::<BulkheadTimeout>(), "{err}");
    assert_eq!(layer.handle().snapshot().in_flight, 0, "the permit went back");
    release.add_permits(2);
    assert_eq!(elsewhere.await.unwrap().unwrap(), 3);
    assert_eq!(waiting.await.unwrap().unwrap(), 4);
    assert_eq!(probe.calls(), vec![1, 3, 4]);
}

fn futures_poll<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    Pin::new(future).poll(&mut cx)
}

#[test]
fn a_panic_while_joining_the_queue_gives_the_place_back() {
    // `max_wait` needs a Tokio timer; outside a runtime, joining the queue panics.
    let layer = BulkheadLayer::builder("panic")
        .max_concurrent(1)
        .max_queued(1)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(tower::service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let running = svc.call(1);
    assert!(svc.poll_ready(&mut cx).is_ready());
    let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(svc.call(2))));
    assert!(joined.is_err(), "no timer outside a runtime");
    drop(running);
    let snapshot = handle.snapshot();
    assert_eq!(
        (snapshot.in_flight, snapshot.queued),
        (0, 0),
        "the permit went to no one"
    );
}
