//! The Idempotency-Key layer's store connection (Redis, PostgreSQL) cut or stalled while it
//! writes the completed response, after the handler ran, through a fault proxy; the store
//! stalled while a request begins (bounded by the layer's store timeout); a caller gone while
//! the store's answer to `begin` is held back (the lock it took is released); and a Redis
//! store on the documented connection serving again after its connection is cut.
//!
//! The handler has charged the customer once; whatever happens to the write, a retry of the
//! same request must never charge again. Every answer is the handler's response (the first
//! request), the stored response replayed, a 409 with `Retry-After`, or a 503 with
//! `Retry-After`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade_idempotency::postgres::PostgresStore;
use palisade_idempotency::redis::RedisStore;
use palisade_idempotency::{IdempotencyBuilder, IdempotencyLayer, IdempotencyStore, ResponseBody};
use palisade_tests::fault_proxy::{Action, Direction, FaultProxy};
use palisade_tests::{Postgres, Redis, unique_name, upstream_of, via, wait_until};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::time::{Instant, timeout};
use tower::{Layer, Service, ServiceExt, service_fn};

const WAIT: Duration = Duration::from_secs(30);
/// How long retries keep coming after the fault (well within the lock expiry).
const RETRYING: Duration = Duration::from_secs(2);
const LOCK_EXPIRY: Duration = Duration::from_secs(120);
/// The Redis client's bound on one command.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// The layer's bound on one store call.
const STORE_TIMEOUT: Duration = Duration::from_secs(1);

/// Charges once per call and counts the charges per idempotency key.
#[derive(Clone, Default)]
struct Payments {
    charges: Arc<Mutex<HashMap<String, usize>>>,
}

impl Payments {
    fn charges(&self, key: &str) -> usize {
        self.charges.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

/// The handler's answer for `key`: what a retry must get back.
fn receipt(key: &str) -> Bytes {
    Bytes::from(format!("{{\"charged\":\"{key}\"}}"))
}

/// A handler behind the layer `builder` makes that charges `payments` once per call and
/// answers 201 with the [`receipt`].
fn charging<St: IdempotencyStore>(
    builder: IdempotencyBuilder<St>,
    payments: &Payments,
) -> impl Service<Request<Full<Bytes>>, Response = Response<ResponseBody<Full<Bytes>>>, Error = Infallible> + Clone {
    let charges = payments.charges.clone();
    let handler = service_fn(move |request: Request<Full<Bytes>>| {
        let charges = charges.clone();
        async move {
            let key = request.headers()["idempotency-key"].to_str().unwrap().to_owned();
            *charges.lock().unwrap().entry(key.clone()).or_default() += 1;
            let mut response = Response::new(Full::new(receipt(&key)));
            *response.status_mut() = StatusCode::CREATED;
            Ok::<_, Infallible>(response)
        }
    });
    builder.build().unwrap().layer(handler)
}

fn charge(key: &str) -> Request<Full<Bytes>> {
    Request::post("/charges")
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from_static(b"{\"amount\":500}")))
        .unwrap()
}

/// What one answer was, of the answers allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The handler's own response (only the request that ran it).
    Handled,
    /// The stored response, replayed.
    Replayed,
    /// 409 with `Retry-After`.
    Conflict,
    /// 503 with `Retry-After`.
    Unavailable,
}

async fn classify<B: http_body::Body>(response: Response<B>, key: &str) -> Answer
where
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let replayed = parts.headers.get("idempotent-replayed").is_some_and(|v| v == "true");
    let retry_after = parts.headers.contains_key(http::header::RETRY_AFTER);
    match parts.status {
        StatusCode::CREATED if body == receipt(key) => {
            if replayed {
                Answer::Replayed
            } else {
                Answer::Handled
            }
        }
        StatusCode::CONFLICT if retry_after => Answer::Conflict,
        StatusCode::SERVICE_UNAVAILABLE if retry_after => Answer::Unavailable,
        status => panic!(
            "not an allowed answer: {status} {:?} {}",
            parts.headers,
            String::from_utf8_lossy(&body)
        ),
    }
}

/// Sends a charge whose store write meets `action`, then retries it for [`RETRYING`] (and,
/// with `until_replayed`, until the stored response comes back). Checks every answer and that
/// the handler ran once; a stalled write must be given up within `stall_bound`.
async fn charge_through_fault<St: IdempotencyStore>(
    store: St,
    proxy: &FaultProxy,
    action: Action,
    until_replayed: bool,
    stall_bound: Duration,
) -> Vec<Answer> {
    let payments = Payments::default();
    let service = charging(
        IdempotencyLayer::builder("idempotency")
            .store(store)
            .lock_expiry(LOCK_EXPIRY)
            .store_timeout(STORE_TIMEOUT),
        &payments,
    );

    // A first charge with another key warms the store up: connections made, scripts loaded.
    let warm_up = unique_name("warm_up");
    let answer = service.clone().oneshot(charge(&warm_up)).await.unwrap();
    assert_eq!(classify(answer, &warm_up).await, Answer::Handled);

    // The store write carries the handler's response, so the fault meets exactly that write.
    let key = unique_name("charge");
    let fault = proxy.on(Direction::ToUpstream, &receipt(&key), action);
    let started = Instant::now();
    let first = timeout(WAIT, service.clone().oneshot(charge(&key)))
        .await
        .expect("the first charge answered in time")
        .unwrap();
    let answered_after = started.elapsed();
    assert!(fault.has_fired(), "the fault met the store write");
    let mut answers = vec![classify(first, &key).await];
    assert!(
        matches!(answers[0], Answer::Handled | Answer::Unavailable),
        "the first answer: {:?}",
        answers[0]
    );
    if action == Action::Stall {
        assert!(
            answered_after < stall_bound,
            "a stalled store write is given up within {stall_bound:?}: {answered_after:?}"
        );
        proxy.resume();
    }
    assert_eq!(payments.charges(&key), 1);

    let retrying_until = Instant::now() + RETRYING;
    let deadline = Instant::now() + WAIT;
    loop {
        let retry = timeout(WAIT, service.clone().oneshot(charge(&key)))
            .await
            .expect("a retry answered in time")
            .unwrap();
        let answer = classify(retry, &key).await;
        assert_ne!(answer, Answer::Handled, "a retry ran the handler: {answers:?}");
        answers.push(answer);
        assert_eq!(payments.charges(&key), 1, "charged twice: {answers:?}");
        let replayed = answer == Answer::Replayed;
        if Instant::now() >= retrying_until && (replayed || !until_replayed) {
            break;
        }
        assert!(Instant::now() < deadline, "the stored response in time: {answers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    answers
}

/// A Redis store whose connection goes through a proxy, reconnecting after a cut and timing
/// out a command after [`RESPONSE_TIMEOUT`].
async fn redis_store(redis: &Redis, proxy: &FaultProxy) -> RedisStore<ConnectionManager> {
    let client = redis::Client::open(via(&redis.url, proxy)).unwrap();
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(RESPONSE_TIMEOUT)
        .set_connection_timeout(Duration::from_secs(1));
    let manager = ConnectionManager::new_with_config(client, config).await.unwrap();
    RedisStore::with_prefix(manager, redis.prefix.clone()).unwrap()
}

async fn redis_case(test: &str, action: Action, until_replayed: bool) {
    let Some(redis) = Redis::connect(test).await else {
        return;
    };
    let proxy = FaultProxy::start(upstream_of(&redis.url, 6379)).await.unwrap();
    let store = redis_store(&redis, &proxy).await;
    let answers = charge_through_fault(
        store,
        &proxy,
        action,
        until_replayed,
        RESPONSE_TIMEOUT * 2 + Duration::from_secs(1),
    )
    .await;
    eprintln!("answers: {answers:?}");
    drop(proxy);
    redis.cleanup().await;
}

/// The migrated tables of `pg`, and a pool of two connections to them through a proxy,
/// waiting at most `acquire_timeout` for a connection.
async fn postgres_through_proxy(pg: &Postgres, acquire_timeout: Duration) -> (FaultProxy, PgPool) {
    PostgresStore::new(pg.pool.clone()).migrate().await.unwrap();
    let proxy = FaultProxy::start(upstream_of(&pg.url, 5432)).await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(acquire_timeout)
        .connect(&via(&pg.url_in_schema(), &proxy))
        .await
        .unwrap();
    (proxy, pool)
}

async fn postgres_case(test: &str, action: Action, until_replayed: bool) {
    let Some(pg) = Postgres::connect(test).await else {
        return;
    };
    let (proxy, pool) = postgres_through_proxy(&pg, Duration::from_secs(5)).await;
    let answers = charge_through_fault(
        PostgresStore::new(pool.clone()),
        &proxy,
        action,
        until_replayed,
        STORE_TIMEOUT + Duration::from_secs(2),
    )
    .await;
    eprintln!("answers: {answers:?}");
    pool.close().await;
    drop(proxy);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_store_write_lost_with_the_connection_never_charges_twice() {
    redis_case("fault_idem_redis_lost", Action::Cut, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_store_write_whose_answer_is_lost_is_replayed() {
    redis_case("fault_idem_redis_answer", Action::CutAtReply, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_stalled_store_write_times_out_and_never_charges_twice() {
    redis_case("fault_idem_redis_stall", Action::Stall, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_store_write_lost_with_the_connection_never_charges_twice() {
    postgres_case("fault_idem_pg_lost", Action::Cut, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_store_write_whose_answer_is_lost_is_replayed() {
    postgres_case("fault_idem_pg_answer", Action::CutAtReply, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_stalled_store_write_times_out_and_never_charges_twice() {
    postgres_case("fault_idem_pg_stall", Action::Stall, false).await;
}

/// A Redis store on the documented connection, whose commands have no bound of their own.
async fn documented_redis_store(redis: &Redis, proxy: &FaultProxy) -> RedisStore {
    let conn = ConnectionManager::new(redis::Client::open(via(&redis.url, proxy)).unwrap())
        .await
        .unwrap();
    RedisStore::with_prefix(conn, redis.prefix.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_stalled_store_write_is_bounded_by_the_store_timeout() {
    let Some(redis) = Redis::connect("fault_idem_redis_stall_layer").await else {
        return;
    };
    let proxy = FaultProxy::start(upstream_of(&redis.url, 6379)).await.unwrap();
    let store = documented_redis_store(&redis, &proxy).await;
    let answers = charge_through_fault(
        store,
        &proxy,
        Action::Stall,
        false,
        STORE_TIMEOUT + Duration::from_secs(2),
    )
    .await;
    eprintln!("answers: {answers:?}");
    drop(proxy);
    redis.cleanup().await;
}

/// With every answer of the store held back, a charge is refused with a 503 and
/// `Retry-After` within the store timeout, and the handler does not run. Once the store
/// answers again, retries run the handler at most once (the stalled `begin` may have locked
/// the key: then they get 409 until its lock expires).
async fn refused_while_stalled<St: IdempotencyStore>(store: St, proxy: &FaultProxy) {
    let payments = Payments::default();
    let service = charging(
        IdempotencyLayer::builder("idempotency")
            .store(store)
            .lock_expiry(LOCK_EXPIRY)
            .store_timeout(STORE_TIMEOUT),
        &payments,
    );
    let warm_up = unique_name("warm_up");
    let answer = service.clone().oneshot(charge(&warm_up)).await.unwrap();
    assert_eq!(classify(answer, &warm_up).await, Answer::Handled);

    proxy.stall(Direction::ToClient);
    let key = unique_name("stalled");
    let started = Instant::now();
    let answer = timeout(WAIT, service.clone().oneshot(charge(&key)))
        .await
        .expect("answered in time")
        .unwrap();
    let answered_after = started.elapsed();
    assert_eq!(classify(answer, &key).await, Answer::Unavailable);
    assert!(
        answered_after < STORE_TIMEOUT + Duration::from_secs(2),
        "a stalled store is given up within the store timeout: {answered_after:?}"
    );
    assert_eq!(payments.charges(&key), 0);
    proxy.resume();

    let mut answers = Vec::new();
    let until = Instant::now() + RETRYING;
    while Instant::now() < until {
        let retry = timeout(WAIT, service.clone().oneshot(charge(&key)))
            .await
            .expect("a retry answered in time")
            .unwrap();
        let answer = classify(retry, &key).await;
        answers.push(answer);
        assert!(payments.charges(&key) <= 1, "charged twice: {answers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("answers after resume: {answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_stalled_store_answers_503_within_the_store_timeout() {
    let Some(pg) = Postgres::connect("fault_idem_pg_stalled").await else {
        return;
    };
    let (proxy, pool) = postgres_through_proxy(&pg, Duration::from_secs(5)).await;
    refused_while_stalled(PostgresStore::new(pool.clone()), &proxy).await;
    pool.close().await;
    drop(proxy);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_stalled_store_answers_503_within_the_store_timeout() {
    let Some(redis) = Redis::connect("fault_idem_redis_stalled").await else {
        return;
    };
    let proxy = FaultProxy::start(upstream_of(&redis.url, 6379)).await.unwrap();
    let store = documented_redis_store(&redis, &proxy).await;
    refused_while_stalled(store, &proxy).await;
    drop(proxy);
    redis.cleanup().await;
}

/// With the store out of reach, a charge is refused with a 503 and `Retry-After` (the
/// default fail-closed), within the store client's bounds, and the handler never runs.
async fn refused_while_unreachable<St: IdempotencyStore>(store: St, proxy: &FaultProxy) {
    let payments = Payments::default();
    let service = charging(IdempotencyLayer::builder("idempotency").store(store), &payments);
    proxy.refuse();
    proxy.cut();
    let key = unique_name("unreachable");
    let answer = timeout(WAIT, service.oneshot(charge(&key)))
        .await
        .expect("answered within the store client's bounds")
        .unwrap();
    assert_eq!(classify(answer, &key).await, Answer::Unavailable);
    assert_eq!(payments.charges(&key), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_reach_answers_503_with_retry_after() {
    let Some(redis) = Redis::connect("fault_idem_redis_down").await else {
        return;
    };
    let proxy = FaultProxy::start(upstream_of(&redis.url, 6379)).await.unwrap();
    let store = redis_store(&redis, &proxy).await;
    refused_while_unreachable(store, &proxy).await;
    drop(proxy);
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_out_of_reach_answers_503_with_retry_after() {
    let Some(pg) = Postgres::connect("fault_idem_pg_down").await else {
        return;
    };
    let (proxy, pool) = postgres_through_proxy(&pg, Duration::from_secs(2)).await;
    refused_while_unreachable(PostgresStore::new(pool.clone()), &proxy).await;
    pool.close().await;
    drop(proxy);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_store_on_the_documented_connection_serves_again_after_a_cut() {
    let Some(redis) = Redis::connect("fault_idem_redis_recover").await else {
        return;
    };
    let proxy = FaultProxy::start(upstream_of(&redis.url, 6379)).await.unwrap();
    // The connection exactly as the crate docs make it.
    let store = documented_redis_store(&redis, &proxy).await;
    let payments = Payments::default();
    let service = charging(IdempotencyLayer::builder("idempotency").store(store), &payments);
    let before = unique_name("before");
    let answer = service.clone().oneshot(charge(&before)).await.unwrap();
    assert_eq!(classify(answer, &before).await, Answer::Handled);

    proxy.cut();
    // Redis itself is fine: once the store is connected again, a new charge runs once.
    let key = unique_name("after");
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = service.clone().oneshot(charge(&key)).await.unwrap();
        if answer.status() == StatusCode::CREATED {
            assert_eq!(classify(answer, &key).await, Answer::Handled);
            break;
        }
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "the store serves again in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(payments.charges(&key), 1);
    drop(proxy);
    redis.cleanup().await;
}

/// A charge whose caller goes away (the client disconnects) while the store's answer to
/// `begin` is held back on the wire, after the store locked the key for it. Once the answer
/// gets through, the lock is released: the handler never ran, and the retry runs it, once,
/// instead of getting 409 until the lock expires. `records` counts the store's records.
async fn left_while_begin_answers<St, F>(store: St, proxy: &FaultProxy, records: impl Fn() -> F)
where
    St: IdempotencyStore,
    F: Future<Output = usize>,
{
    let payments = Payments::default();
    let service = charging(
        IdempotencyLayer::builder("idempotency")
            .store(store)
            .lock_expiry(LOCK_EXPIRY)
            // Long enough for the held answer to arrive within it.
            .store_timeout(WAIT),
        &payments,
    );
    let warm_up = unique_name("warm_up");
    let answer = service.clone().oneshot(charge(&warm_up)).await.unwrap();
    assert_eq!(classify(answer, &warm_up).await, Answer::Handled);
    let before = records().await;

    proxy.stall(Direction::ToClient);
    let key = unique_name("left");
    // The caller goes away (its future dropped) once the store has locked the key.
    tokio::select! {
        answer = service.clone().oneshot(charge(&key)) => panic!("answered without the store: {:?}", answer.map(|r| r.status())),
        () = wait_until("the store locks the key", WAIT, || async { records().await == before + 1 }) => {}
    }
    proxy.resume();

    wait_until("the key released", WAIT, || async { records().await == before }).await;
    assert_eq!(payments.charges(&key), 0);
    let retry = timeout(WAIT, service.oneshot(charge(&key))).await.unwrap().unwrap();
    assert_eq!(classify(retry, &key).await, Answer::Handled);
    assert_eq!(payments.charges(&key), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_lock_taken_after_the_caller_left_is_released() {
    let Some(redis) = Redis::connect("fault_idem_redis_left").await else {
        return;
    };
    let proxy = FaultProxy::start(upstream_of(&redis.url, 6379)).await.unwrap();
    let store = documented_redis_store(&redis, &proxy).await;
    let pattern = format!("{}*", redis.prefix);
    let records = || {
        let (mut conn, pattern) = (redis.conn.clone(), pattern.clone());
        async move {
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut conn).await.unwrap();
            keys.len()
        }
    };
    left_while_begin_answers(store, &proxy, records).await;
    drop(proxy);
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_lock_taken_after_the_caller_left_is_released() {
    let Some(pg) = Postgres::connect("fault_idem_pg_left").await else {
        return;
    };
    PostgresStore::new(pg.pool.clone()).migrate().await.unwrap();
    let proxy = FaultProxy::start(upstream_of(&pg.url, 5432)).await.unwrap();
    // A connection checked before use would wait on its own held answer: the
    // statement would never be sent.
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .test_before_acquire(false)
        .connect(&via(&pg.url_in_schema(), &proxy))
        .await
        .unwrap();
    let records = || async {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM palisade_idempotency_keys")
            .fetch_one(&pg.pool)
            .await
            .unwrap();
        usize::try_from(count).unwrap()
    };
    left_while_begin_answers(PostgresStore::new(pool.clone()), &proxy, records).await;
    pool.close().await;
    drop(proxy);
    pg.cleanup().await;
}
