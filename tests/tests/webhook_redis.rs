//! The webhook replay store against a live Redis: a redelivered message
//! never reaches the handler twice, across layer instances sharing the
//! store; a redelivery while the first is handled is answered 409, never
//! 2xx; failed deliveries release their mark; marks expire; an acceptance
//! whose caller went away is still recorded. Through a fault
//! proxy: a store whose connection is cut serves again, and a stalled store
//! is given up within the layer's store timeout.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade_tests::fault_proxy::{Action, Direction, FaultProxy};
use palisade_tests::{Redis, upstream_of, via};
use palisade_webhook::{Claim, Lease, RedisReplayStore, ReplayStore, Scheme, Signed, Signer, Verifier, VerifyLayer};
use redis::aio::ConnectionManager;
use tokio::time::{Instant, timeout};
use tower::{Layer, ServiceExt, service_fn};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The layer's bound on one replay-store call.
const STORE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a test waits for an answer before calling the layer stuck.
const WAIT: Duration = Duration::from_secs(30);

fn instance(
    store: impl ReplayStore,
    calls: Arc<AtomicUsize>,
    status: StatusCode,
) -> impl tower::Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone {
    let verifier = Verifier::builder(Scheme::StandardWebhooks)
        .secret(SECRET)
        .build()
        .unwrap();
    let layer = VerifyLayer::builder(verifier)
        .replay_store(store)
        .store_timeout(STORE_TIMEOUT)
        .build()
        .unwrap();
    layer.layer(service_fn(move |_: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let mut res = Response::new(Full::new(Bytes::from_static(b"handled")));
        *res.status_mut() = status;
        async move { Ok::<_, Infallible>(res) }
    }))
}

/// The headers of a freshly signed delivery of `{"n":1}`.
fn signed_delivery() -> (http::HeaderMap, Signed) {
    let mut headers = http::HeaderMap::new();
    let signer = Signer::builder(Scheme::StandardWebhooks)
        .secret(SECRET)
        .build()
        .unwrap();
    let signed = signer.sign(&mut headers, b"{\"n\":1}").unwrap();
    (headers, signed)
}

fn delivery(headers: &http::HeaderMap) -> Request<Full<Bytes>> {
    let mut req = Request::post("/hook")
        .body(Full::new(Bytes::from_static(b"{\"n\":1}")))
        .unwrap();
    *req.headers_mut() = headers.clone();
    req
}

async fn status_and_body<S>(svc: S, req: Request<Full<Bytes>>) -> (StatusCode, Bytes)
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible>,
{
    let res = svc.oneshot(req).await.unwrap();
    (res.status(), res.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn redeliveries_reach_the_handler_once_across_instances() {
    let Some(redis) = Redis::connect("webhook_replay").await else {
        return;
    };
    let store = RedisReplayStore::new(redis.conn.clone(), redis.prefix.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let first_instance = instance(store.clone(), calls.clone(), StatusCode::OK);
    let second_instance = instance(store.clone(), calls.clone(), StatusCode::OK);

    let (headers, signed) = signed_delivery();

    assert_eq!(
        status_and_body(first_instance.clone(), delivery(&headers)).await,
        (StatusCode::OK, "handled".into())
    );
    assert_eq!(
        status_and_body(second_instance, delivery(&headers)).await,
        (StatusCode::OK, Bytes::new())
    );
    assert_eq!(
        status_and_body(first_instance, delivery(&headers)).await,
        (StatusCode::OK, Bytes::new())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The id is stored under the prefix, scheme-scoped, expiring after the
    // default replay window: 3 days, as senders re-sign retries that long.
    let key = redis.key(&format!("standard_webhooks:{}", signed.id.unwrap()));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut redis.conn.clone())
        .await
        .unwrap();
    assert!((259_199_000..=259_200_000).contains(&ttl), "{ttl}");
    assert_eq!(redis.cleanup().await, 1);
}

#[tokio::test]
async fn a_failed_delivery_releases_its_id() {
    let Some(redis) = Redis::connect("webhook_release").await else {
        return;
    };
    let store = RedisReplayStore::new(redis.conn.clone(), redis.prefix.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let (headers, _) = signed_delivery();

    let failing = instance(store.clone(), calls.clone(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        status_and_body(failing, delivery(&headers)).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // The release runs as a background task; each round trip here lets it run. Bounded.
    let mut conn = redis.conn.clone();
    let pattern = format!("{}*", redis.prefix);
    for _ in 0..200 {
        let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut conn).await.unwrap();
        if keys.is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let working = instance(store, calls.clone(), StatusCode::OK);
    assert_eq!(
        status_and_body(working.clone(), delivery(&headers)).await,
        (StatusCode::OK, "handled".into())
    );
    assert_eq!(
        status_and_body(working, delivery(&headers)).await,
        (StatusCode::OK, Bytes::new())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    redis.cleanup().await;
}

#[tokio::test]
async fn marks_carry_their_ttl_and_only_their_own_lease_releases_them() {
    let Some(redis) = Redis::connect("webhook_expiry").await else {
        return;
    };
    let store = RedisReplayStore::new(redis.conn.clone(), redis.prefix.clone());
    let pttl = |name: &str| {
        let key = redis.key(name);
        let mut conn = redis.conn.clone();
        async move {
            redis::cmd("PTTL")
                .arg(&key)
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    let (first, second) = (Lease::new(1), Lease::new(2));
    assert_eq!(
        store.claim("github:a", first, Duration::from_secs(50)).await.unwrap(),
        Claim::Acquired
    );
    assert_eq!(
        store.claim("github:a", second, Duration::from_secs(600)).await.unwrap(),
        Claim::InFlight
    );
    // Redis expires the in-flight mark itself; a refused claim leaves its ttl alone.
    assert!((40_000..=50_000).contains(&pttl("github:a").await));

    // Another attempt's release leaves the mark; the holder's own removes it.
    store.release("github:a", second);
    store.release("github:a", first);
    let mut released = false;
    for _ in 0..200 {
        if pttl("github:a").await == -2 {
            released = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(released, "the holder's release removes the mark");
    assert_eq!(
        store.claim("github:a", second, Duration::from_secs(50)).await.unwrap(),
        Claim::Acquired
    );

    // Accepted: kept for the retention, and no release removes it.
    store.accept("github:a", Duration::from_secs(600)).await.unwrap();
    assert!((599_000..=600_000).contains(&pttl("github:a").await));
    store.release("github:a", second);
    assert_eq!(
        store.claim("github:a", first, Duration::from_secs(50)).await.unwrap(),
        Claim::Accepted
    );
    assert_eq!(
        store.claim("github:b", first, Duration::from_secs(50)).await.unwrap(),
        Claim::Acquired
    );
    assert_eq!(redis.cleanup().await, 2);
}

#[tokio::test]
async fn a_message_whose_handler_died_stays_in_flight_until_the_lock_expiry() {
    let Some(redis) = Redis::connect("webhook_dead_handler").await else {
        return;
    };
    let store = RedisReplayStore::new(redis.conn.clone(), redis.prefix.clone());
    let verifier = Verifier::builder(Scheme::StandardWebhooks)
        .secret(SECRET)
        .build()
        .unwrap();
    let layer = VerifyLayer::builder(verifier)
        .replay_store(store.clone())
        .lock_expiry(Duration::from_secs(30))
        .build()
        .unwrap();
    let entered = Arc::new(tokio::sync::Notify::new());
    let signal = entered.clone();
    let stuck = layer.layer(service_fn(move |_: Request<Full<Bytes>>| {
        signal.notify_one();
        std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>()
    }));
    let (headers, signed) = signed_delivery();
    // The process dies mid-handling: nothing ends the call, nothing releases its mark.
    let mut call = Box::pin(stuck.oneshot(delivery(&headers)));
    tokio::select! {
        _ = &mut call => panic!("the handler never answers"),
        () = entered.notified() => {}
    }
    std::mem::forget(call);

    let key = redis.key(&format!("standard_webhooks:{}", signed.id.unwrap()));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut redis.conn.clone())
        .await
        .unwrap();
    assert!((29_000..=30_000).contains(&ttl), "{ttl}");
    let calls = Arc::new(AtomicUsize::new(0));
    assert_in_flight(instance(store, calls.clone(), StatusCode::OK), delivery(&headers)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    redis.cleanup().await;
}

#[tokio::test]
async fn an_unreachable_store_answers_503_and_spares_the_handler() {
    // A connection to a server that then goes away: claims fail.
    let Some(redis) = Redis::connect("webhook_unreachable").await else {
        return;
    };
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(&mut redis.conn.clone())
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = instance(
        RedisReplayStore::new(conn, redis.prefix.clone()),
        calls.clone(),
        StatusCode::OK,
    );
    let (headers, _) = signed_delivery();
    let (status, body) = status_and_body(svc, delivery(&headers)).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    redis.cleanup().await;
}

#[tokio::test]
async fn a_redelivery_while_the_first_runs_is_not_acknowledged_on_any_instance() {
    let Some(redis) = Redis::connect("webhook_in_flight").await else {
        return;
    };
    let store = RedisReplayStore::new(redis.conn.clone(), redis.prefix.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    // The first attempt waits until told, then fails; later ones succeed.
    let (finish, finished) = tokio::sync::oneshot::channel::<()>();
    let finished = Arc::new(tokio::sync::Mutex::new(Some(finished)));
    let entered = Arc::new(tokio::sync::Notify::new());
    let verifier = Verifier::builder(Scheme::StandardWebhooks)
        .secret(SECRET)
        .build()
        .unwrap();
    let layer = VerifyLayer::builder(verifier).replay_store(store).build().unwrap();
    let counted = calls.clone();
    let signal = entered.clone();
    let first_instance = layer.layer(service_fn(move |_: Request<Full<Bytes>>| {
        let attempt = counted.fetch_add(1, Ordering::SeqCst);
        let finished = finished.clone();
        let signal = signal.clone();
        async move {
            let mut res = Response::new(Full::new(Bytes::from_static(b"handled")));
            *res.status_mut() = if attempt == 0 {
                signal.notify_one();
                let gate = finished.lock().await.take().expect("one first attempt");
                gate.await.expect("told to finish");
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            Ok::<_, Infallible>(res)
        }
    }));
    let second_instance = instance(
        RedisReplayStore::new(redis.conn.clone(), redis.prefix.clone()),
        calls.clone(),
        StatusCode::OK,
    );
    let (headers, _) = signed_delivery();

    let running = tokio::spawn(status_and_body(first_instance.clone(), delivery(&headers)));
    entered.notified().await;
    assert_in_flight(first_instance.clone(), delivery(&headers)).await;
    assert_in_flight(second_instance.clone(), delivery(&headers)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    finish.send(()).unwrap();
    assert_eq!(running.await.unwrap().0, StatusCode::INTERNAL_SERVER_ERROR);

    // The failed attempt's mark is released in the background; the sender's
    // retry is answered 409 until it is gone, then handled once. Bounded.
    let mut handled = false;
    for _ in 0..200 {
        let (status, body) = status_and_body(second_instance.clone(), delivery(&headers)).await;
        if status == StatusCode::OK {
            assert_eq!(body, "handled");
            handled = true;
            break;
        }
        assert_eq!(status, StatusCode::CONFLICT);
        tokio::task::yield_now().await;
    }
    assert!(handled, "the retry after the failure reached the handler");
    assert_eq!(
        status_and_body(first_instance, delivery(&headers)).await,
        (StatusCode::OK, Bytes::new())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    redis.cleanup().await;
}

/// A 409 problem+json saying the message is still being handled, retried after a second.
async fn assert_in_flight<S>(svc: S, req: Request<Full<Bytes>>)
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible>,
{
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(res.headers()["retry-after"], "1");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["type"], "urn:palisade:problem:webhook-in-flight");
    assert_eq!(problem["status"], 409);
}

/// A replay store on the documented connection (a `ConnectionManager`), through `proxy`.
async fn store_via(redis: &Redis, proxy: &FaultProxy) -> RedisReplayStore<ConnectionManager> {
    let conn = ConnectionManager::new(redis::Client::open(via(&redis.url, proxy)).unwrap())
        .await
        .unwrap();
    RedisReplayStore::new(conn, redis.prefix.clone())
}

/// A 503 problem+json saying the replay store is unavailable, with `Retry-After`.
fn assert_store_unavailable(status: StatusCode, headers: &http::HeaderMap, body: &Bytes) {
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(body)
    );
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(headers["retry-after"], "1");
    let problem: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(problem["type"], "urn:palisade:problem:webhook-replay-store-unavailable");
}

async fn answer<S>(svc: S, req: Request<Full<Bytes>>) -> (StatusCode, http::HeaderMap, Bytes)
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible>,
{
    let res = timeout(WAIT, svc.oneshot(req))
        .await
        .expect("answered in time")
        .unwrap();
    let (parts, body) = res.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_the_documented_connection_serves_again_after_a_cut() {
    let Some(redis) = Redis::connect("webhook_recover").await else {
        return;
    };
    let proxy = FaultProxy::start(upstream_of(&redis.url, 6379)).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = instance(store_via(&redis, &proxy).await, calls.clone(), StatusCode::OK);
    let (before, _) = signed_delivery();
    assert_eq!(
        status_and_body(svc.clone(), delivery(&before)).await,
        (StatusCode::OK, "handled".into())
    );

    proxy.cut();
    // Redis itself is fine: once the store is connected again, a new message is handled once.
    let (after, _) = signed_delivery();
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, headers, body) = answer(svc.clone(), delivery(&after)).await;
        if status == StatusCode::OK {
            assert_eq!(body, "handled");
            break;
        }
        assert_store_unavailable(status, &headers, &body);
        assert!(Instant::now() < deadline, "the store serves again in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    drop(proxy);
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_claim_answers_503_within_the_store_timeout() {
    let Some(redis) = Redis::connect("webhook_stalled_claim").await else {
        return;
    };
    let proxy = FaultProxy::start(upstream_of(&redis.url, 6379)).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = instance(store_via(&redis, &proxy).await, calls.clone(), StatusCode::OK);
    let (warm_up, _) = signed_delivery();
    assert_eq!(status_and_body(svc.clone(), delivery(&warm_up)).await.0, StatusCode::OK);

    proxy.stall(Direction::ToClient);
    let (headers, _) = signed_delivery();
    let started = Instant::now();
    let (status, answer_headers, body) = answer(svc.clone(), delivery(&headers)).await;
    let answered_after = started.elapsed();
    assert_store_unavailable(status, &answer_headers, &body);
    assert!(
        answered_after < STORE_TIMEOUT + Duration::from_secs(2),
        "a stalled claim is given up within the store timeout: {answered_after:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    proxy.resume();

    // The sender's retries: the handler runs once at most, and only 200s, 409s or 503s come back.
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, answer_headers, body) = answer(svc.clone(), delivery(&headers)).await;
        match status {
            StatusCode::OK => {
                assert_eq!(body, "handled");
                break;
            }
            StatusCode::CONFLICT => assert_eq!(answer_headers["retry-after"], "1"),
            _ => assert_store_unavailable(status, &answer_headers, &body),
        }
        assert!(Instant::now() < deadline, "the retry handled in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        status_and_body(svc, delivery(&headers)).await,
        (StatusCode::OK, Bytes::new())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    drop(proxy);
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_accept_answers_the_handler_within_the_store_timeout_and_never_runs_it_twice() {
    let Some(redis) = Redis::connect("webhook_stalled_accept").await else {
        return;
    };
    let proxy = FaultProxy::start(upstream_of(&redis.url, 6379)).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = instance(store_via(&redis, &proxy).await, calls.clone(), StatusCode::OK);
    let (warm_up, _) = signed_delivery();
    assert_eq!(status_and_body(svc.clone(), delivery(&warm_up)).await.0, StatusCode::OK);

    // The acceptance is the only `SET .. A PX` the store sends.
    let (headers, _) = signed_delivery();
    let stalled = proxy.on(Direction::ToUpstream, b"\r\nSET\r\n", Action::Stall);
    let started = Instant::now();
    let (status, _, body) = answer(svc.clone(), delivery(&headers)).await;
    let answered_after = started.elapsed();
    assert!(stalled.has_fired(), "the acceptance was stalled");
    // As when the acceptance fails: the handler did its work, and the sender is told so.
    assert_eq!((status, body), (StatusCode::OK, "handled".into()));
    assert!(
        answered_after < STORE_TIMEOUT + Duration::from_secs(2),
        "a stalled acceptance is given up within the store timeout: {answered_after:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    proxy.resume();

    // Redeliveries within the lock expiry never reach the handler again.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let (status, answer_headers, body) = answer(svc.clone(), delivery(&headers)).await;
        match status {
            StatusCode::OK => assert_eq!(body, Bytes::new(), "a redelivery reached the handler"),
            StatusCode::CONFLICT => assert_eq!(answer_headers["retry-after"], "1"),
            _ => assert_store_unavailable(status, &answer_headers, &body),
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(proxy);
    redis.cleanup().await;
}

#[tokio::test]
async fn a_window_past_any_clock_is_kept_about_thirty_years() {
    // A settings file may give any duration; Redis refuses an expiry past
    // its range, which failed every claim (503) or every acceptance.
    let Some(redis) = Redis::connect("webhook_far_future").await else {
        return;
    };
    let store = RedisReplayStore::new(redis.conn.clone(), redis.prefix.clone());
    assert_eq!(
        store.claim("github:far", Lease::new(1), Duration::MAX).await.unwrap(),
        Claim::Acquired
    );
    store.accept("github:far", Duration::MAX).await.unwrap();
    assert_eq!(
        store.claim("github:far", Lease::new(2), Duration::MAX).await.unwrap(),
        Claim::Accepted
    );
    let pttl: i64 = redis::cmd("PTTL")
        .arg(redis.key("github:far"))
        .query_async(&mut redis.conn.clone())
        .await
        .unwrap();
    let thirty_years: i64 = 365 * 30 * 86_400_000;
    assert!((thirty_years - 60_000..=thirty_years).contains(&pttl), "{pttl} ms");
    redis.cleanup().await;
}

/// The caller goes away (a timeout outside the layer, a reset stream) right after the handler
/// answered 2xx, while the acceptance is still queued on the store's connection: the
/// acceptance is recorded all the same, so the sender's redelivery is a duplicate, answered
/// 200 without the handler, rather than refused 409 until the lock expires and then run twice.
#[tokio::test]
async fn an_acceptance_whose_caller_went_away_is_still_recorded() {
    let Some(redis) = Redis::connect("webhook_accept_dropped").await else {
        return;
    };
    let store = RedisReplayStore::new(redis.conn.clone(), redis.prefix.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = instance(store, calls.clone(), StatusCode::OK);
    let (headers, signed) = signed_delivery();
    let mut call = Box::pin(svc.clone().oneshot(delivery(&headers)));
    // The poll in which the handler answers also queues the acceptance; on this
    // current-thread runtime nothing writes it before the call is dropped.
    std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
        std::task::Poll::Ready(_) => panic!("answered before the acceptance was recorded"),
        std::task::Poll::Pending if calls.load(Ordering::SeqCst) == 1 => std::task::Poll::Ready(()),
        std::task::Poll::Pending => std::task::Poll::Pending,
    })
    .await;
    drop(call);

    let key = redis.key(&format!("standard_webhooks:{}", signed.id.unwrap()));
    palisade_tests::wait_until("the acceptance recorded", WAIT, || {
        let (mut conn, key) = (redis.conn.clone(), key.clone());
        async move {
            let mark: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
            mark.as_deref() == Some(b"A")
        }
    })
    .await;
    assert_eq!(
        status_and_body(svc, delivery(&headers)).await,
        (StatusCode::OK, Bytes::new())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    redis.cleanup().await;
}
