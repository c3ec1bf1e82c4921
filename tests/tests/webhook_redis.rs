//! The webhook replay store against a live Redis: a redelivered id never
//! reaches the handler twice, across layer instances sharing the store;
//! failed deliveries release their id; ids expire.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade_tests::Redis;
use palisade_webhook::{RedisReplayStore, ReplayStore, Scheme, Signed, Signer, Verifier, VerifyLayer};
use tower::{Layer, ServiceExt, service_fn};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn instance(
    store: RedisReplayStore,
    calls: Arc<AtomicUsize>,
    status: StatusCode,
) -> impl tower::Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone {
    let verifier = Verifier::builder(Scheme::StandardWebhooks)
        .secret(SECRET)
        .build()
        .unwrap();
    let layer = VerifyLayer::builder(verifier).replay_store(store).build().unwrap();
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

    // The id is stored under the prefix, scheme-scoped, expiring after twice the tolerance.
    let key = redis.key(&format!("standard_webhooks:{}", signed.id.unwrap()));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut redis.conn.clone())
        .await
        .unwrap();
    assert!((599_000..=600_000).contains(&ttl), "{ttl}");
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
async fn claims_carry_their_ttl_and_do_not_extend_it() {
    let Some(redis) = Redis::connect("webhook_expiry").await else {
        return;
    };
    let store = RedisReplayStore::new(redis.conn.clone(), redis.prefix.clone());
    assert!(store.claim("github:a", Duration::from_secs(50)).await.unwrap());
    assert!(!store.claim("github:a", Duration::from_secs(600)).await.unwrap());
    // Redis expires the key itself; a refused claim leaves the first ttl alone.
    let ttl: i64 = redis::cmd("PTTL")
        .arg(redis.key("github:a"))
        .query_async(&mut redis.conn.clone())
        .await
        .unwrap();
    assert!((40_000..=50_000).contains(&ttl), "{ttl}");
    assert!(store.claim("github:b", Duration::from_secs(50)).await.unwrap());
    assert_eq!(redis.cleanup().await, 2);
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
