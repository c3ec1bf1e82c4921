//! The tower contract and cancellation: readiness, inner errors, dropped
//! futures at every await point, and the spawned release.

mod suite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use palisade_idempotency::disconnect::Release;
use palisade_idempotency::{
    Begin, Completion, Fingerprint, IdempotencyLayer, IdempotencyStore, Lease, MemoryStore, StoreError, StoreKey,
    StoredResponse,
};
use suite::post;
use tokio::sync::Notify;
use tower::{Layer, Service, ServiceExt};

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// A memory store whose operations do their work only when their future is
/// polled, after `gate` is notified, like a store behind a network.
#[derive(Clone)]
struct RemoteStore {
    inner: MemoryStore,
    slow_begin: Arc<AtomicBool>,
    /// `begin` takes the lock at once and its answer waits on `gate`: the
    /// lock is taken, the answer is still on the wire.
    slow_answer: Arc<AtomicBool>,
    gate: Arc<Notify>,
}

impl RemoteStore {
    fn new() -> Self {
        Self {
            inner: MemoryStore::new(),
            slow_begin: Arc::new(AtomicBool::new(false)),
            slow_answer: Arc::new(AtomicBool::new(false)),
            gate: Arc::new(Notify::new()),
        }
    }
}

impl IdempotencyStore for RemoteStore {
    type BeginFuture = BoxFuture<Begin>;
    type CompleteFuture = BoxFuture<Completion>;
    type ReleaseFuture = BoxFuture<()>;

    fn begin(&self, key: &StoreKey, fingerprint: &Fingerprint, lock_expiry: Duration) -> Self::BeginFuture {
        let (inner, key, fingerprint) = (self.inner.clone(), *key, *fingerprint);
        let (slow, gate) = (self.slow_begin.load(Ordering::SeqCst), Arc::clone(&self.gate));
        let slow_answer = self.slow_answer.load(Ordering::SeqCst);
        Box::pin(async move {
            if slow {
                gate.notified().await;
            }
            let begun = inner.begin(&key, &fingerprint, lock_expiry).await;
            if slow_answer {
                gate.notified().await;
            }
            begun
        })
    }

    fn complete(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        lease: &Lease,
        response: &StoredResponse,
        retention: Duration,
    ) -> Self::CompleteFuture {
        let (inner, key, fingerprint, lease, response) =
            (self.inner.clone(), *key, *fingerprint, *lease, response.clone());
        let gate = Arc::clone(&self.gate);
        Box::pin(async move {
            gate.notified().await;
            inner.complete(&key, &fingerprint, &lease, &response, retention).await
        })
    }

    fn release(&self, key: &StoreKey, lease: &Lease) -> Self::ReleaseFuture {
        let (inner, key, lease) = (self.inner.clone(), *key, *lease);
        Box::pin(async move {
            tokio::task::yield_now().await;
            inner.release(&key, &lease).await
        })
    }
}

/// An inner service that fails the test when called without being polled
/// ready first, per instance (so clones are not ready by inheritance).
#[derive(Clone)]
struct Strict {
    ready: bool,
    polls: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    fail: Arc<AtomicBool>,
}

impl Strict {
    fn new() -> Self {
        Self {
            ready: false,
            polls: Arc::new(AtomicUsize::new(0)),
            calls: Arc::new(AtomicUsize::new(0)),
            fail: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Service<Request<Full<Bytes>>> for Strict {
    type Response = Response<Full<Bytes>>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Response<Full<Bytes>>, std::io::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<Full<Bytes>>) -> Self::Future {
        assert!(std::mem::take(&mut self.ready), "called without poll_ready");
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return std::future::ready(Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "upstream reset",
            )));
        }
        let mut res = Response::new(Full::new(Bytes::from_static(b"created")));
        *res.status_mut() = StatusCode::CREATED;
        std::future::ready(Ok(res))
    }
}

/// Polls `fut` once.
async fn poll_once<F: Future>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

#[tokio::test(start_paused = true)]
async fn the_instance_polled_ready_is_the_one_called() {
    let strict = Strict::new();
    let mut svc = IdempotencyLayer::new().layer(strict.clone());
    // Keyed (deferred call), passthrough and rejected requests, interleaved.
    for req in [
        post(Some("a"), "{}"),
        post(None, "{}"),
        post(Some("bad key"), "{}"),
        post(Some("b"), "{}"),
    ] {
        svc.ready().await.unwrap();
        let _ = svc.call(req).await.unwrap();
    }
    assert_eq!(strict.calls.load(Ordering::SeqCst), 3);
    // A clone made after readiness is not ready itself.
    svc.ready().await.unwrap();
    let mut clone = svc.clone();
    let polls = strict.polls.load(Ordering::SeqCst);
    clone.ready().await.unwrap();
    assert_eq!(strict.polls.load(Ordering::SeqCst), polls + 1);
    let _ = clone.call(post(Some("c"), "{}")).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_inner_error_is_returned_with_its_source_and_releases_the_key() {
    let strict = Strict::new();
    let layer = IdempotencyLayer::new();
    let svc = layer.layer(strict.clone());
    strict.fail.store(true, Ordering::SeqCst);
    let err = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    assert!(layer.store().is_empty(), "the key was released");
    strict.fail.store(false, Ordering::SeqCst);
    let res = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(strict.calls.load(Ordering::SeqCst), 2);
}

fn remote_stack(
    store: &RemoteStore,
    strict: &Strict,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<palisade_idempotency::ResponseBody<Full<Bytes>>>,
    Error = std::io::Error,
    Future: Send + 'static,
>
+ Clone
+ Send
+ 'static
+ use<> {
    IdempotencyLayer::builder("idempotency")
        .store(store.clone())
        .on_disconnect(Release)
        .build()
        .unwrap()
        .layer(strict.clone())
}

#[tokio::test(start_paused = true)]
async fn with_release_a_request_dropped_while_storing_is_still_stored() {
    // The handler answered: its effects stand. Released, the key would let
    // the retry run it (charge) again; the store's `complete` goes on instead.
    let store = RemoteStore::new();
    let strict = Strict::new();
    let svc = remote_stack(&store, &strict);
    let mut first = Box::pin(svc.clone().oneshot(post(Some("k"), "{}")));
    // Runs up to the store's `complete`, which waits on the gate.
    assert!(poll_once(first.as_mut()).await.is_pending());
    assert_eq!(strict.calls.load(Ordering::SeqCst), 1);
    assert_eq!(store.inner.len(), 1, "the lock is held while storing");
    drop(first);
    tokio::task::yield_now().await;
    let conflict = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(conflict.status(), StatusCode::CONFLICT, "still storing");
    store.gate.notify_waiters();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let replay = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(strict.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn with_keep_locked_a_key_being_released_when_the_caller_leaves_is_released() {
    // The handler failed, so the layer releases the key for the retry; the
    // caller leaving while the store's answer is on its way does not undo
    // that decision and leave the key locked for a minute.
    let (store, strict) = (RemoteStore::new(), Strict::new());
    let svc = keep_locked_stack(&store, &strict);
    strict.fail.store(true, Ordering::SeqCst);
    let mut first = Box::pin(svc.clone().oneshot(post(Some("k"), "{}")));
    assert!(poll_once(first.as_mut()).await.is_pending(), "releasing");
    assert_eq!(store.inner.len(), 1);
    drop(first);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(store.inner.is_empty(), "the release went on without its caller");
    strict.fail.store(false, Ordering::SeqCst);
    let retry = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(strict.calls.load(Ordering::SeqCst), 2);
}

/// A response body that never ends.
struct Endless;

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        Poll::Pending
    }
}

#[tokio::test(start_paused = true)]
async fn with_release_a_request_dropped_while_its_response_is_read_keeps_the_key() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let handler = tower::service_fn(move |_: Request<Full<Bytes>>| {
        counted.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok::<_, std::io::Error>(Response::new(Endless)))
    });
    let layer = IdempotencyLayer::builder("idempotency")
        .on_disconnect(Release)
        .build()
        .unwrap();
    let svc = layer.layer(handler);
    let mut first = Box::pin(svc.clone().oneshot(post(Some("k"), "{}")));
    assert!(poll_once(first.as_mut()).await.is_pending());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    drop(first);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let mut retry = Box::pin(svc.clone().oneshot(post(Some("k"), "{}")));
    let Poll::Ready(Ok(retry)) = poll_once(retry.as_mut()).await else {
        panic!("the retry ran the handler again");
    };
    assert_eq!(
        retry.status(),
        StatusCode::CONFLICT,
        "the handler answered; the key stays locked"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(palisade_idempotency::DEFAULT_LOCK_EXPIRY).await;
    let mut takeover = Box::pin(svc.oneshot(post(Some("k"), "{}")));
    assert!(poll_once(takeover.as_mut()).await.is_pending());
    assert_eq!(calls.load(Ordering::SeqCst), 2, "run again once the lock expired");
}

#[tokio::test(start_paused = true)]
async fn dropping_before_the_lock_is_taken_holds_nothing() {
    let store = RemoteStore::new();
    store.slow_begin.store(true, Ordering::SeqCst);
    let strict = Strict::new();
    let svc = remote_stack(&store, &strict);
    let first = tokio::spawn(svc.clone().oneshot(post(Some("k"), "{}")));
    tokio::task::yield_now().await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    // The begin goes on without its caller: the lock it takes now is released,
    // and the service is not called.
    store.gate.notify_waiters();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(store.inner.is_empty());
    assert_eq!(strict.calls.load(Ordering::SeqCst), 0);
}

/// Lets spawned tasks run until `store` holds no key, then checks it holds none.
async fn released_once_answered(store: &RemoteStore) {
    for _ in 0..100 {
        if store.inner.is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(store.inner.is_empty(), "the key was released once the answer came");
}

/// The `KeepLocked` policy's stack around `strict`.
fn keep_locked_stack(
    store: &RemoteStore,
    strict: &Strict,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<palisade_idempotency::ResponseBody<Full<Bytes>>>,
    Error = std::io::Error,
    Future: Send + 'static,
>
+ Clone
+ Send
+ 'static
+ use<> {
    IdempotencyLayer::builder("idempotency")
        .store(store.clone())
        .on_disconnect(palisade_idempotency::disconnect::KeepLocked)
        .build()
        .unwrap()
        .layer(strict.clone())
}

/// A caller that goes away while the store's answer to `begin` is on the
/// wire (the store has locked the key for it): once the answer arrives, the
/// key is released, whatever the policy, since the handler never ran. The
/// retry runs the handler instead of getting 409 until the lock expires.
async fn a_lock_taken_for_a_caller_that_left_is_released<Svc>(store: &RemoteStore, strict: &Strict, svc: Svc)
where
    Svc: Service<Request<Full<Bytes>>, Response = Response<palisade_idempotency::ResponseBody<Full<Bytes>>>> + Clone,
    Svc::Error: std::fmt::Debug,
{
    store.slow_answer.store(true, Ordering::SeqCst);
    let mut first = Box::pin(svc.clone().oneshot(post(Some("k"), "{}")));
    assert!(poll_once(first.as_mut()).await.is_pending());
    assert_eq!(
        store.inner.len(),
        1,
        "the store locked the key; its answer is on the way"
    );
    drop(first);
    store.slow_answer.store(false, Ordering::SeqCst);
    store.gate.notify_waiters();
    released_once_answered(store).await;
    assert_eq!(strict.calls.load(Ordering::SeqCst), 0);
    let retry = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(strict.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn with_release_a_lock_taken_after_the_caller_left_is_released() {
    let (store, strict) = (RemoteStore::new(), Strict::new());
    a_lock_taken_for_a_caller_that_left_is_released(&store, &strict, remote_stack(&store, &strict)).await;
}

#[tokio::test(start_paused = true)]
async fn with_keep_locked_a_lock_taken_after_the_caller_left_is_released() {
    let (store, strict) = (RemoteStore::new(), Strict::new());
    let svc = keep_locked_stack(&store, &strict);
    a_lock_taken_for_a_caller_that_left_is_released(&store, &strict, svc).await;
}

#[tokio::test(start_paused = true)]
async fn by_default_a_lock_taken_after_the_caller_left_is_released() {
    let (store, strict) = (RemoteStore::new(), Strict::new());
    a_lock_taken_for_a_caller_that_left_is_released(&store, &strict, complete_stack(&store, &strict)).await;
}

#[tokio::test(start_paused = true)]
async fn a_lock_answered_after_the_callers_store_timeout_is_still_released() {
    // The caller leaves just before its store timeout; the store's answer
    // comes after it. Waited for under the caller's timer, the answer would
    // be given up and the lock left for a minute, every retry getting 409.
    let (store, strict) = (RemoteStore::new(), Strict::new());
    let svc = complete_stack(&store, &strict);
    store.slow_answer.store(true, Ordering::SeqCst);
    let mut first = Box::pin(svc.clone().oneshot(post(Some("k"), "{}")));
    assert!(poll_once(first.as_mut()).await.is_pending());
    tokio::time::advance(palisade_idempotency::DEFAULT_STORE_TIMEOUT - Duration::from_millis(100)).await;
    drop(first);
    // Slept, not advanced: the runtime parks, so timers due on the way fire.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.inner.len(), 1, "the answer is still on the way");
    store.slow_answer.store(false, Ordering::SeqCst);
    store.gate.notify_waiters();
    released_once_answered(&store).await;
    let retry = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(strict.calls.load(Ordering::SeqCst), 1);
}

/// A keyed request with the `Release` policy, polled once on a paused runtime
/// (up to the store's answer to `begin` with `slow_answer`, else up to
/// storing its response) and dropped outside any runtime, where nothing can
/// release what it holds: its lock holds until it expires. Returns how many
/// times the handler ran, the takeover included.
fn dropped_outside_a_runtime(slow_answer: bool) -> usize {
    let store = RemoteStore::new();
    let strict = Strict::new();
    let svc = remote_stack(&store, &strict);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    store.slow_answer.store(slow_answer, Ordering::SeqCst);
    let mut first = Box::pin(svc.clone().oneshot(post(Some("k"), "{}")));
    rt.block_on(async { assert!(poll_once(first.as_mut()).await.is_pending()) });
    store.slow_answer.store(false, Ordering::SeqCst);
    drop(first);
    assert_eq!(store.inner.len(), 1, "the lock is still held");
    rt.block_on(async {
        let conflict = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
        assert_eq!(conflict.status(), StatusCode::CONFLICT);
        tokio::time::advance(palisade_idempotency::DEFAULT_LOCK_EXPIRY).await;
        store.gate.notify_one();
        let takeover = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
        assert_eq!(takeover.status(), StatusCode::CREATED);
    });
    strict.calls.load(Ordering::SeqCst)
}

#[test]
fn without_a_runtime_a_lock_taken_after_the_caller_left_expires() {
    assert_eq!(dropped_outside_a_runtime(true), 1, "only the takeover ran the handler");
}

#[test]
fn with_release_and_no_runtime_a_dropped_lock_expires() {
    assert_eq!(dropped_outside_a_runtime(false), 2);
}

/// The default policy's stack around `strict`.
fn complete_stack(
    store: &RemoteStore,
    strict: &Strict,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<palisade_idempotency::ResponseBody<Full<Bytes>>>,
    Error = std::io::Error,
    Future: Send + 'static,
>
+ Clone
+ Send
+ 'static
+ use<> {
    IdempotencyLayer::builder("idempotency")
        .store(store.clone())
        .build()
        .unwrap()
        .layer(strict.clone())
}

#[tokio::test(start_paused = true)]
async fn dropping_while_storing_still_stores_the_response() {
    let store = RemoteStore::new();
    let strict = Strict::new();
    let svc = complete_stack(&store, &strict);
    let mut first = Box::pin(svc.clone().oneshot(post(Some("k"), "{}")));
    assert!(poll_once(first.as_mut()).await.is_pending());
    drop(first);
    // The protected call runs on its own task, up to the store's `complete`.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(strict.calls.load(Ordering::SeqCst), 1);
    let conflict = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(conflict.status(), StatusCode::CONFLICT, "still storing");
    store.gate.notify_one();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let replay = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(strict.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_handler_of_a_keyed_request_sees_the_callers_deadline() {
    // The default policy runs a keyed request's handler on a task of its
    // own; the deadline the server's deadline layer set must go with it, or
    // the clients the handler calls (a payment) are bounded by nothing.
    let handler = tower::service_fn(|_: Request<Full<Bytes>>| async {
        let left = palisade_core::deadline::Deadline::current().map(|d| d.remaining());
        Ok::<_, std::io::Error>(Response::new(Full::<Bytes>::from(format!("{left:?}"))))
    });
    let svc = IdempotencyLayer::new().layer(handler);
    let deadline = palisade_core::deadline::Deadline::after(Duration::from_secs(2));
    let res = deadline.scope(svc.oneshot(post(Some("k"), "{}"))).await.unwrap();
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "Some(2s)");
}

#[test]
fn without_a_runtime_the_default_runs_the_call_in_the_caller() {
    let strict = Strict::new();
    let svc = IdempotencyLayer::new().layer(strict.clone());
    // Polled outside any runtime: nothing to spawn on, so it runs here.
    let first = svc.clone().oneshot(post(Some("k"), "{}")).now_or_never();
    assert_eq!(first.unwrap().unwrap().status(), StatusCode::CREATED);
    let replay = svc.oneshot(post(Some("k"), "{}")).now_or_never().unwrap().unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(strict.calls.load(Ordering::SeqCst), 1);
}

/// An inner service whose future panics.
#[derive(Clone)]
struct Panics;

impl Service<Request<Full<Bytes>>> for Panics {
    type Response = Response<Full<Bytes>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<Full<Bytes>>) -> Self::Future {
        Box::pin(async { panic!("handler bug") })
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_panics_its_caller_and_keeps_the_key_locked() {
    let layer = IdempotencyLayer::new();
    let svc = layer.layer(Panics);
    let caller = tokio::spawn(svc.clone().oneshot(post(Some("k"), "{}")));
    let panic = caller.await.unwrap_err().into_panic();
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"handler bug"));
    // The handler may have acted before it panicked: no retry runs it
    // again before the lock expires.
    assert_eq!(layer.store().len(), 1);
    let retry = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CONFLICT);
}

/// An inner service whose `call` itself panics.
#[derive(Clone)]
struct PanicsInCall;

impl Service<Request<Full<Bytes>>> for PanicsInCall {
    type Response = Response<Full<Bytes>>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Response<Full<Bytes>>, std::io::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<Full<Bytes>>) -> Self::Future {
        panic!("bug in call")
    }
}

#[tokio::test(start_paused = true)]
async fn a_service_panicking_in_call_panics_its_caller_once() {
    // Counts the panics of this test's thread, where the runtime runs its
    // tasks; other threads' panics go to the hook as before.
    let this_thread = std::thread::current().id();
    let panics = Arc::new(AtomicUsize::new(0));
    let previous: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> = std::panic::take_hook().into();
    let counted = panics.clone();
    let forward = previous.clone();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == this_thread {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        forward(info);
    }));
    let layer = IdempotencyLayer::new();
    let svc = layer.layer(PanicsInCall);
    let caller = tokio::spawn(svc.clone().oneshot(post(Some("k"), "{}")));
    let panic = caller.await.unwrap_err().into_panic();
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"bug in call"));
    // Whatever was left to run has run.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    std::panic::set_hook(Box::new(move |info| previous(info)));
    assert_eq!(panics.load(Ordering::SeqCst), 1, "nothing else panicked");
    assert_eq!(
        layer.store().len(),
        1,
        "the key stays locked, as for a panicking handler"
    );
}

#[test]
fn a_runtime_shutting_down_mid_request_answers_503_and_keeps_the_key_locked() {
    let store = RemoteStore::new();
    let strict = Strict::new();
    let svc = complete_stack(&store, &strict);
    let paused = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let mut first = Box::pin(svc.clone().oneshot(post(Some("k"), "{}")));
    let runtime = paused();
    runtime.block_on(async {
        assert!(poll_once(first.as_mut()).await.is_pending());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    });
    assert_eq!(strict.calls.load(Ordering::SeqCst), 1, "the call waits on the store");
    // The runtime goes away with the task storing the response.
    drop(runtime);
    let answer = paused().block_on(first).unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.headers()["retry-after"],
        palisade_idempotency::DEFAULT_LOCK_EXPIRY.as_secs().to_string()
    );
    assert_eq!(store.inner.len(), 1, "the key stays locked");
}

fn bounded_stack(
    store: &RemoteStore,
    strict: &Strict,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<palisade_idempotency::ResponseBody<Full<Bytes>>>,
    Error = std::io::Error,
    Future: Send + 'static,
> + Clone
+ use<> {
    IdempotencyLayer::builder("idempotency")
        .store(store.clone())
        .store_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .layer(strict.clone())
}

#[tokio::test(start_paused = true)]
async fn a_store_that_never_answers_begin_is_answered_503_at_the_store_timeout() {
    let store = RemoteStore::new();
    store.slow_begin.store(true, Ordering::SeqCst);
    let strict = Strict::new();
    let svc = bounded_stack(&store, &strict);
    let started = tokio::time::Instant::now();
    let res = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(strict.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_store_that_never_answers_complete_answers_at_the_store_timeout_and_keeps_the_key_locked() {
    let store = RemoteStore::new();
    let strict = Strict::new();
    let svc = bounded_stack(&store, &strict);
    let started = tokio::time::Instant::now();
    let res = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(strict.calls.load(Ordering::SeqCst), 1);
    // As after a failed write: the key stays locked, a retry gets 409 and the handler never runs again.
    let retry = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CONFLICT);
    assert_eq!(strict.calls.load(Ordering::SeqCst), 1);
    assert_eq!(store.inner.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_response_body_that_fails_after_the_handler_ran_keeps_the_key_locked() {
    // The handler charged and answered 201; its body then failed on the way
    // (a proxied upstream reset). The response cannot be stored, and the
    // handler must not run again for the retry.
    use http_body::Frame;
    use http_body_util::{BodyExt, StreamBody};

    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let handler = tower::service_fn(move |_: Request<Full<Bytes>>| {
        counted.fetch_add(1, Ordering::SeqCst);
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"{\"charged\":"))),
            Err(std::io::Error::other("upstream reset")),
        ];
        let response = Response::builder()
            .status(StatusCode::CREATED)
            .body(StreamBody::new(futures_util::stream::iter(frames)))
            .unwrap();
        async move { Ok::<_, std::io::Error>(response) }
    });
    let layer = IdempotencyLayer::new();
    let svc = layer.layer(handler);
    let first = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(
        first.into_body().collect().await.is_err(),
        "the caller sees the body fail"
    );
    assert_eq!(layer.store().len(), 1, "the key stays locked");
    let retry = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CONFLICT);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Until the lock expires.
    tokio::time::advance(palisade_idempotency::DEFAULT_LOCK_EXPIRY).await;
    let _ = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
