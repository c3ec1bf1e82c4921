//! The behaviour every store must give the layer: one test body per status
//! path, run against the memory store here and against live Redis and
//! Postgres by the workspace's `tests/tests/idempotency_stores.rs`.
//!
//! Times come from the fixture: the memory store runs on paused tokio time,
//! where sleeping is instant; the live stores expire locks on the server's
//! clock, so their fixtures use a short lock and really wait.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade_idempotency::disconnect::{KeepLocked, Release};
use palisade_idempotency::{
    Begin, Completion, Fingerprint, Idempotency, IdempotencyLayer, IdempotencyStore, Lease, ResponseBody, StoreError,
    StoreKey, StoredResponse,
};
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt};

/// Calls `$run!` with the name of every test of the suite, so each store's
/// test file runs them all. (Files that include the suite for its helpers
/// only do not use it.)
#[allow(unused_macros)]
macro_rules! all_tests {
    ($run:ident) => {
        $run!(
            first_request_runs_and_repeats_replay_it,
            a_repeat_while_in_flight_gets_409,
            a_key_reused_with_another_request_gets_422,
            missing_and_invalid_keys,
            an_oversized_body_gets_413,
            server_errors_are_not_stored_and_may_be_retried,
            a_dropped_request_still_completes_and_is_replayed,
            a_failed_store_write_keeps_the_key_locked,
            a_dropped_request_releases_its_key_when_told_to,
            a_dropped_request_keeps_its_key_locked_when_told_to,
            validation_answers_are_not_stored,
            an_expired_lock_is_taken_over_and_the_stale_owner_cannot_overwrite,
            store_failures_fail_closed_or_open,
            principals_never_see_each_others_responses,
            a_response_over_the_cap_passes_through_unstored,
            two_hundred_concurrent_requests_run_once,
        );
    };
}
#[allow(unused_imports)]
pub(crate) use all_tests;

/// A store under test, with the clock the test must wait on.
#[derive(Clone)]
pub struct Fixture<St> {
    /// The store.
    pub store: St,
    /// The lock expiry the layer gets: the time a stuck request holds a key.
    pub lock_expiry: Duration,
}

/// Wraps a store so a test can make every operation fail.
#[derive(Clone)]
pub struct Faulty<St> {
    inner: St,
    failing: Arc<AtomicBool>,
    failing_complete: Arc<AtomicBool>,
}

impl<St> Faulty<St> {
    pub fn new(inner: St) -> Self {
        Self {
            inner,
            failing: Arc::new(AtomicBool::new(false)),
            failing_complete: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Makes `complete` alone fail: the store takes locks but cannot write responses.
    pub fn fail_complete(&self, failing: bool) {
        self.failing_complete.store(failing, Ordering::SeqCst);
    }

    fn fault<T, F>(&self, op: impl FnOnce() -> F) -> Either<Ready<Result<T, StoreError>>, F> {
        self.fault_if(self.failing.load(Ordering::SeqCst), op)
    }

    fn fault_if<T, F>(&self, failing: bool, op: impl FnOnce() -> F) -> Either<Ready<Result<T, StoreError>>, F> {
        if failing {
            let err = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "store down");
            Either::Left(ready(Err(StoreError::backend(err))))
        } else {
            Either::Right(op())
        }
    }
}

impl<St: IdempotencyStore> IdempotencyStore for Faulty<St> {
    type BeginFuture = Either<Ready<Result<Begin, StoreError>>, St::BeginFuture>;
    type CompleteFuture = Either<Ready<Result<Completion, StoreError>>, St::CompleteFuture>;
    type ReleaseFuture = Either<Ready<Result<(), StoreError>>, St::ReleaseFuture>;

    fn begin(&self, key: &StoreKey, fingerprint: &Fingerprint, lock_expiry: Duration) -> Self::BeginFuture {
        self.fault(|| self.inner.begin(key, fingerprint, lock_expiry))
    }

    fn complete(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        lease: &Lease,
        response: &StoredResponse,
        retention: Duration,
    ) -> Self::CompleteFuture {
        let failing = self.failing.load(Ordering::SeqCst) || self.failing_complete.load(Ordering::SeqCst);
        self.fault_if(failing, || {
            self.inner.complete(key, fingerprint, lease, response, retention)
        })
    }

    fn release(&self, key: &StoreKey, lease: &Lease) -> Self::ReleaseFuture {
        self.fault(|| self.inner.release(key, lease))
    }
}

/// The inner service: creates an "order" per call, numbered, so a replay
/// is told apart from a second run. Calls wait on `gate` when it is closed.
#[derive(Clone)]
pub struct Orders {
    pub calls: Arc<AtomicUsize>,
    pub status: Arc<AtomicU16>,
    pub closed: Arc<AtomicBool>,
    pub gate: Arc<Semaphore>,
    pub response_bytes: Arc<AtomicUsize>,
}

impl Orders {
    pub fn new() -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            status: Arc::new(AtomicU16::new(201)),
            closed: Arc::new(AtomicBool::new(false)),
            gate: Arc::new(Semaphore::new(0)),
            response_bytes: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Closes the gate: calls wait until `open` lets them through.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub fn open(&self, calls: usize) {
        self.gate.add_permits(calls);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn respond_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn service(&self) -> Inner {
        let orders = self.clone();
        let svc = tower::service_fn(move |req: Request<Full<Bytes>>| {
            let orders = orders.clone();
            async move {
                let n = orders.calls.fetch_add(1, Ordering::SeqCst) + 1;
                if orders.closed.load(Ordering::SeqCst)
                    && let Ok(permit) = orders.gate.acquire().await
                {
                    permit.forget();
                }
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let padding = orders.response_bytes.load(Ordering::SeqCst);
                let text = format!("order {n} for {} bytes{}", body.len(), "x".repeat(padding));
                let res = Response::builder()
                    .status(orders.status.load(Ordering::SeqCst))
                    .header("content-type", "text/plain")
                    .header("x-order", n.to_string())
                    .header("set-cookie", format!("session={n}"))
                    .header("connection", "close")
                    .body(Full::new(Bytes::from(text)))
                    .unwrap();
                Ok::<_, Infallible>(res)
            }
        });
        tower::util::BoxCloneSyncService::new(svc)
    }
}

/// A POST with a key, a body and an optional principal.
pub fn post(key: Option<&str>, body: &'static str) -> Request<Full<Bytes>> {
    let mut req = Request::post("/orders?region=eu").header("content-type", "application/json");
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.body(Full::new(Bytes::from_static(body.as_bytes()))).unwrap()
}

pub fn as_principal(mut req: Request<Full<Bytes>>, principal: &str) -> Request<Full<Bytes>> {
    req.headers_mut().insert("x-principal", principal.parse().unwrap());
    req
}

/// A response read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn replayed(&self) -> bool {
        self.headers.get("idempotent-replayed").is_some_and(|v| v == "true")
    }

    pub fn problem_type(&self) -> String {
        assert_eq!(self.headers["content-type"], "application/problem+json", "{self:?}");
        let json: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        json["type"].as_str().unwrap().to_owned()
    }
}

pub type Svc = tower::util::BoxCloneSyncService<Request<Full<Bytes>>, Got, Infallible>;

/// The inner service the layer wraps.
pub type Inner = tower::util::BoxCloneSyncService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;

/// The layer built by `configure` from the fixture's store, around `orders`,
/// with the principal taken from `x-principal`.
pub fn stack<St, D>(
    fixture: &Fixture<St>,
    orders: &Orders,
    configure: impl FnOnce(
        palisade_idempotency::IdempotencyBuilder<St, PrincipalScope>,
    ) -> palisade_idempotency::IdempotencyBuilder<St, PrincipalScope, D>,
) -> Svc
where
    St: IdempotencyStore + Clone,
    Idempotency<Inner, St, PrincipalScope, D>: Service<
            Request<Full<Bytes>>,
            Response = Response<ResponseBody<Full<Bytes>>>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    let builder = IdempotencyLayer::builder("orders")
        .store(fixture.store.clone())
        .scope(principal as PrincipalScope)
        .lock_expiry(fixture.lock_expiry)
        .retention(Duration::from_secs(3600));
    let layer = configure(builder).build().unwrap();
    let svc = layer
        .layer(orders.service())
        .then(|res: Result<Response<_>, Infallible>| async move {
            let res = res?;
            let (parts, body) = res.into_parts();
            let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            Ok::<_, Infallible>(Got {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        });
    tower::util::BoxCloneSyncService::new(svc)
}

pub type PrincipalScope = fn(&http::request::Parts) -> String;

fn principal(parts: &http::request::Parts) -> String {
    parts
        .headers
        .get("x-principal")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned()
}

pub async fn send(svc: &Svc, req: Request<Full<Bytes>>) -> Got {
    let Ok(got) = svc.clone().oneshot(req).await;
    got
}

/// Lets spawned tasks (a started request, a spawned release) run.
pub async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Waits until the inner service has been called `n` times.
pub async fn calls_reach(orders: &Orders, n: usize) {
    for _ in 0..10_000 {
        if orders.calls() >= n {
            return;
        }
        settle().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the inner service was called {} times, never {n}", orders.calls());
}

/// Waits until `svc` answers `req` with something other than 409 (a
/// spawned release on a live store takes a round trip).
async fn until_not_in_flight(svc: &Svc, req: impl Fn() -> Request<Full<Bytes>>) -> Got {
    for _ in 0..200 {
        let got = send(svc, req()).await;
        if got.status != StatusCode::CONFLICT {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the key stayed in flight");
}

pub async fn first_request_runs_and_repeats_replay_it<St: IdempotencyStore + Clone>(fixture: Fixture<St>) {
    let orders = Orders::new();
    let svc = stack(&fixture, &orders, |b| b);
    let first = send(&svc, post(Some("\"order-1\""), r#"{"sku":"A"}"#)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.body, "order 1 for 11 bytes");
    assert_eq!(
        first.headers["set-cookie"], "session=1",
        "the first response is untouched"
    );
    assert!(!first.replayed());

    // Quoted or bare, the key is the same.
    let second = send(&svc, post(Some("order-1"), r#"{"sku":"A"}"#)).await;
    assert_eq!(orders.calls(), 1, "a replay does not call the inner service");
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(second.body, first.body, "byte for byte");
    assert!(second.replayed());
    let mut expected = first.headers.clone();
    expected.remove("set-cookie");
    expected.remove("connection");
    expected.insert("idempotent-replayed", "true".parse().unwrap());
    assert_eq!(second.headers, expected);

    let third = send(&svc, post(Some("order-1"), r#"{"sku":"A"}"#)).await;
    assert_eq!((third.body, third.headers), (second.body, second.headers));

    // Another key is another request.
    let other = send(&svc, post(Some("order-2"), r#"{"sku":"A"}"#)).await;
    assert_eq!(other.body, "order 2 for 11 bytes");
}

pub async fn a_repeat_while_in_flight_gets_409<St: IdempotencyStore + Clone>(fixture: Fixture<St>) {
    let orders = Orders::new();
    let svc = stack(&fixture, &orders, |b| {
        b.conflict_retry_after(Duration::from_millis(1_500))
    });
    orders.close();
    let first = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, post(Some("k"), "{}")).await }
    });
    calls_reach(&orders, 1).await;
    let conflict = send(&svc, post(Some("k"), "{}")).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.headers["retry-after"], "2");
    assert_eq!(conflict.problem_type(), palisade_idempotency::problem::types::IN_FLIGHT);
    // The same key with another payload is a mismatch even in flight.
    let mismatch = send(&svc, post(Some("k"), "{\"other\":1}")).await;
    assert_eq!(mismatch.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(orders.calls(), 1);

    orders.open(1);
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    let replay = send(&svc, post(Some("k"), "{}")).await;
    assert!(replay.replayed());
    assert_eq!(replay.body, first.body);
}

pub async fn a_key_reused_with_another_request_gets_422<St: IdempotencyStore + Clone>(fixture: Fixture<St>) {
    let orders = Orders::new();
    let svc = stack(&fixture, &orders, |b| b);
    assert_eq!(
        send(&svc, post(Some("k"), r#"{"amount":10}"#)).await.status,
        StatusCode::CREATED
    );
    let other_body = send(&svc, post(Some("k"), r#"{"amount":99}"#)).await;
    assert_eq!(other_body.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        other_body.problem_type(),
        palisade_idempotency::problem::types::KEY_REUSED
    );
    let mut other_query = post(Some("k"), r#"{"amount":10}"#);
    *other_query.uri_mut() = "/orders?region=us".parse().unwrap();
    assert_eq!(send(&svc, other_query).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(orders.calls(), 1);
    // The original request still replays.
    assert!(send(&svc, post(Some("k"), r#"{"amount":10}"#)).await.replayed());
}

pub async fn missing_and_invalid_keys<St: IdempotencyStore + Clone>(fixture: Fixture<St>) {
    let orders = Orders::new();
    let optional = stack(&fixture, &orders, |b| b);
    // No key: passes through, unprotected, every time.
    assert_eq!(send(&optional, post(None, "{}")).await.status, StatusCode::CREATED);
    assert_eq!(send(&optional, post(None, "{}")).await.status, StatusCode::CREATED);
    assert_eq!(orders.calls(), 2);

    let required = stack(&fixture, &orders, |b| b.require_key(true));
    let missing = send(&required, post(None, "{}")).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        missing.problem_type(),
        palisade_idempotency::problem::types::KEY_MISSING
    );

    let long = "k".repeat(256);
    for bad in [
        "",
        "\"\"",
        "\"unterminated",
        "has space",
        "\"tab\there\"",
        long.as_str(),
    ] {
        let got = send(&optional, post(Some(bad), "{}")).await;
        assert_eq!(got.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(got.problem_type(), palisade_idempotency::problem::types::KEY_INVALID);
    }
    let mut twice = post(Some("a"), "{}");
    twice.headers_mut().append("idempotency-key", "b".parse().unwrap());
    assert_eq!(send(&optional, twice).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(orders.calls(), 2, "rejections never call the inner service");

    // Methods that are not protected pass through untouched, key or not.
    let mut get = post(Some("k"), "");
    *get.method_mut() = Method::GET;
    let got = send(&optional, get).await;
    assert!(!got.replayed());
    assert_eq!(orders.calls(), 3);
}

pub async fn an_oversized_body_gets_413<St: IdempotencyStore + Clone>(fixture: Fixture<St>) {
    let orders = Orders::new();
    let svc = stack(&fixture, &orders, |b| b.max_request_body(8));
    let big = send(&svc, post(Some("k"), "123456789")).await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(big.problem_type(), palisade_idempotency::problem::types::BODY_TOO_LARGE);
    assert_eq!(orders.calls(), 0);
    // The key was not taken: a fitting request with it runs.
    assert_eq!(
        send(&svc, post(Some("k"), "12345678")).await.status,
        StatusCode::CREATED
    );
    assert_eq!(orders.calls(), 1);
}

pub async fn server_errors_are_not_stored_and_may_be_retried<St: IdempotencyStore + Clone>(fixture: Fixture<St>) {
    let orders = Orders::new();
    let svc = stack(&fixture, &orders, |b| b);
    // 408 (tower-http's `TimeoutLayer` answers it) and 425 say "try again" too.
    for status in [500, 503, 429, 408, 425] {
        orders.respond_with(status);
        let failed = send(&svc, post(Some("k"), "{}")).await;
        assert_eq!(failed.status.as_u16(), status);
        assert!(!failed.replayed());
    }
    orders.respond_with(201);
    let retried = send(&svc, post(Some("k"), "{}")).await;
    assert_eq!(retried.status, StatusCode::CREATED);
    assert_eq!(orders.calls(), 6, "every attempt ran: nothing was stored");
    assert!(send(&svc, post(Some("k"), "{}")).await.replayed());

    // A 4xx is an answer: stored and replayed.
    orders.respond_with(404);
    assert_eq!(send(&svc, post(Some("k404"), "{}")).await.status, StatusCode::NOT_FOUND);
    let replay = send(&svc, post(Some("k404"), "{}")).await;
    assert_eq!((replay.status, replay.replayed()), (StatusCode::NOT_FOUND, true));
    assert_eq!(orders.calls(), 7);
}

pub async fn validation_answers_are_not_stored<St: IdempotencyStore + Clone>(fixture: Fixture<St>) {
    let orders = Orders::new();
    let svc = stack(&fixture, &orders, |b| b);
    for status in [400, 422] {
        let key = format!("k{status}");
        orders.respond_with(status);
        let refused = send(&svc, post(Some(&key), "{}")).await;
        assert_eq!(refused.status.as_u16(), status);
        orders.respond_with(201);
        let corrected = send(&svc, post(Some(&key), "{}")).await;
        assert_eq!(
            (corrected.status, corrected.replayed()),
            (StatusCode::CREATED, false),
            "a {status} is not stored: the retry runs"
        );
    }
    assert_eq!(orders.calls(), 4);
}

pub async fn a_dropped_request_still_completes_and_is_replayed<St: IdempotencyStore + Clone>(fixture: Fixture<St>) {
    let orders = Orders::new();
    let svc = stack(&fixture, &orders, |b| b);
    orders.close();
    let first = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, post(Some("k"), "{}")).await }
    });
    calls_reach(&orders, 1).await;
    // The caller goes away while the handler runs.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let retry = tokio::time::timeout(Duration::from_secs(5), send(&svc, post(Some("k"), "{}")))
        .await
        .expect("a retry while the first request runs is answered at once");
    assert_eq!(retry.status, StatusCode::CONFLICT, "the first request still runs");
    orders.open(10);
    let got = until_not_in_flight(&svc, || post(Some("k"), "{}")).await;
    assert_eq!((got.status, got.replayed()), (StatusCode::CREATED, true));
    assert_eq!(got.headers["x-order"], "1", "the first run's response");
    assert_eq!(orders.calls(), 1, "the handler ran exactly once");
}

pub async fn a_dropped_request_releases_its_key_when_told_to<St: IdempotencyStore + Clone>(fixture: Fixture<St>) {
    let orders = Orders::new();
    let svc = stack(&fixture, &orders, |b| b.on_disconnect(Release));
    orders.close();
    let first = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, post(Some("k"), "{}")).await }
    });
    calls_reach(&orders, 1).await;
    assert_eq!(send(&svc, post(Some("k"), "{}")).await.status, StatusCode::CONFLICT);
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    orders.open(10);
    let got = until_not_in_flight(&svc, || post(Some("k"), "{}")).await;
    assert_eq!(got.status, StatusCode::CREATED);
    assert!(!got.replayed());
    assert_eq!(
        orders.calls(),
        2,
        "the cancelled request's key was freed and the retry ran"
    );
}

pub async fn a_dropped_request_keeps_its_key_locked_when_told_to<St: IdempotencyStore + Clone>(fixture: Fixture<St>) {
    let orders = Orders::new();
    let svc = stack(&fixture, &orders, |b| b.on_disconnect(KeepLocked));
    orders.close();
    let first = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, post(Some("k"), "{}")).await }
    });
    calls_reach(&orders, 1).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    orders.open(10);
    settle().await;
    let retry = send(&svc, post(Some("k"), "{}")).await;
    assert_eq!(retry.status, StatusCode::CONFLICT, "locked until the lock expires");
    assert_eq!(orders.calls(), 1);
    tokio::time::sleep(fixture.lock_expiry + fixture.lock_expiry / 2).await;
    let after = send(&svc, post(Some("k"), "{}")).await;
    assert_eq!((after.status, after.replayed()), (StatusCode::CREATED, false));
    assert_eq!(orders.calls(), 2, "the handler runs again only after the lock expiry");
}

pub async fn a_failed_store_write_keeps_the_key_locked<St: IdempotencyStore + Clone>(fixture: Fixture<St>) {
    let faulty = Fixture {
        store: Faulty::new(fixture.store.clone()),
        lock_expiry: fixture.lock_expiry,
    };
    let orders = Orders::new();
    let svc = stack(&faulty, &orders, |b| b);
    faulty.store.fail_complete(true);
    let first = send(&svc, post(Some("k"), "{}")).await;
    assert_eq!(
        first.status,
        StatusCode::CREATED,
        "the caller gets the handler's answer"
    );
    faulty.store.fail_complete(false);
    let retry = send(&svc, post(Some("k"), "{}")).await;
    assert_eq!(retry.status, StatusCode::CONFLICT, "the key stays locked");
    assert_eq!(orders.calls(), 1);
    // Once the lock expires the key is free again.
    tokio::time::sleep(fixture.lock_expiry + fixture.lock_expiry / 2).await;
    let after = send(&svc, post(Some("k"), "{}")).await;
    assert_eq!((after.status, after.replayed()), (StatusCode::CREATED, false));
    assert_eq!(orders.calls(), 2);
}

pub async fn an_expired_lock_is_taken_over_and_the_stale_owner_cannot_overwrite<St: IdempotencyStore + Clone>(
    fixture: Fixture<St>,
) {
    let orders = Orders::new();
    let svc = stack(&fixture, &orders, |b| b);
    orders.close();
    let stale = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, post(Some("k"), "{}")).await }
    });
    calls_reach(&orders, 1).await;
    tokio::time::sleep(fixture.lock_expiry + fixture.lock_expiry / 2).await;
    // The lock expired: a retry takes the key over and runs.
    let takeover = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, post(Some("k"), "{}")).await }
    });
    calls_reach(&orders, 2).await;
    // The stale owner finishes first: its completion must not be stored.
    orders.open(1);
    let stale = stale.await.unwrap();
    assert_eq!(stale.headers["x-order"], "1");
    assert_eq!(
        send(&svc, post(Some("k"), "{}")).await.status,
        StatusCode::CONFLICT,
        "the new owner still holds it"
    );
    orders.open(1);
    let fresh = takeover.await.unwrap();
    assert_eq!(fresh.headers["x-order"], "2");
    let replay = send(&svc, post(Some("k"), "{}")).await;
    assert!(replay.replayed());
    assert_eq!(
        replay.headers["x-order"], "2",
        "the new owner's response is the one kept"
    );
    assert_eq!(orders.calls(), 2);
}

pub async fn store_failures_fail_closed_or_open<St: IdempotencyStore + Clone>(fixture: Fixture<St>) {
    let faulty = Fixture {
        store: Faulty::new(fixture.store.clone()),
        lock_expiry: fixture.lock_expiry,
    };
    let orders = Orders::new();
    let closed = stack(&faulty, &orders, |b| b);
    let open = stack(&faulty, &orders, |b| b.fail_open(true));
    faulty.store.fail(true);
    let refused = send(&closed, post(Some("k"), "{}")).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.problem_type(),
        palisade_idempotency::problem::types::STORE_UNAVAILABLE
    );
    assert_eq!(refused.headers["retry-after"], "1");
    assert!(
        !String::from_utf8_lossy(&refused.body).contains("store down"),
        "no internals in the body"
    );
    assert_eq!(orders.calls(), 0);
    let passed = send(&open, post(Some("k"), "{}")).await;
    assert_eq!(passed.status, StatusCode::CREATED);
    assert_eq!(orders.calls(), 1);
    // Nothing was stored while the store was down.
    faulty.store.fail(false);
    assert!(!send(&closed, post(Some("k"), "{}")).await.replayed());
    assert_eq!(orders.calls(), 2);
}

pub async fn principals_never_see_each_others_responses<St: IdempotencyStore + Clone>(fixture: Fixture<St>) {
    let orders = Orders::new();
    let svc = stack(&fixture, &orders, |b| b);
    let alice = send(&svc, as_principal(post(Some("k"), "{}"), "alice")).await;
    let bob = send(&svc, as_principal(post(Some("k"), "{}"), "bob")).await;
    assert!(!bob.replayed());
    assert_ne!(alice.body, bob.body);
    assert_eq!(orders.calls(), 2);
    assert_eq!(
        send(&svc, as_principal(post(Some("k"), "{}"), "alice")).await.body,
        alice.body
    );
    assert_eq!(
        send(&svc, as_principal(post(Some("k"), "{}"), "bob")).await.body,
        bob.body
    );
    assert_eq!(orders.calls(), 2);
}

pub async fn a_response_over_the_cap_passes_through_unstored<St: IdempotencyStore + Clone>(fixture: Fixture<St>) {
    let orders = Orders::new();
    let svc = stack(&fixture, &orders, |b| b.max_response_body(64));
    orders.response_bytes.store(100, Ordering::SeqCst);
    let big = send(&svc, post(Some("k"), "{}")).await;
    assert_eq!(big.status, StatusCode::CREATED);
    assert_eq!(
        big.body.len(),
        "order 1 for 2 bytes".len() + 100,
        "the whole body reaches the client"
    );
    let again = send(&svc, post(Some("k"), "{}")).await;
    assert!(!again.replayed(), "nothing was stored, the key was released");
    assert_eq!(orders.calls(), 2);
}

pub async fn two_hundred_concurrent_requests_run_once<St: IdempotencyStore + Clone>(fixture: Fixture<St>) {
    let orders = Orders::new();
    // 200 requests queue for the store's connections: the first one's
    // completion must not wait longer than its lock, or a takeover is right.
    let svc = stack(&fixture, &orders, |b| b.lock_expiry(Duration::from_secs(60)));
    let requests: Vec<_> = (0..200)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { send(&svc, post(Some("same-key"), r#"{"sku":"A"}"#)).await })
        })
        .collect();
    let mut first = 0;
    let mut replayed = 0;
    let mut conflicts = 0;
    for request in requests {
        let got = request.await.unwrap();
        match got.status {
            StatusCode::CREATED if got.replayed() => {
                assert_eq!(got.body, "order 1 for 11 bytes");
                replayed += 1;
            }
            StatusCode::CREATED => first += 1,
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected {other}: {got:?}"),
        }
    }
    assert_eq!(orders.calls(), 1, "the inner service ran exactly once");
    assert_eq!(first, 1);
    assert_eq!(first + replayed + conflicts, 200);
}
