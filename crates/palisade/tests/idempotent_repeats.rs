//! A client's retry or hedge of a keyed POST that reaches the server while
//! the first attempt still runs there: palisade-idempotency answers the
//! repeat with 409 until the first is done, and the client must wait for
//! that first answer, not hand the 409 to its caller.
#![cfg(feature = "full")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade::core::BoxError;
use palisade::hedge::HedgeLayer;
use palisade::idempotency::IdempotencyLayer;
use palisade::idempotency::client::SetIdempotencyKeyLayer;
use palisade::retry::{Backoff, HttpRetryLayer, Jitter, ReplayBody};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

type Wire = Request<ReplayBody<Full<Bytes>>>;

/// An orders server behind palisade-idempotency whose handler takes 1 s,
/// reached through a "wire" that reads the client's body. The server side
/// runs on a task of its own, as a real server does: a client giving up
/// does not stop it.
fn server(
    created: Arc<AtomicU32>,
) -> impl Service<Wire, Response = Response<Full<Bytes>>, Error = BoxError, Future: Send> + Clone {
    let handler = service_fn(move |_: Request<Full<Bytes>>| {
        let created = created.clone();
        async move {
            tokio::time::sleep(1000 * MS).await;
            let n = created.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, BoxError>(
                Response::builder()
                    .status(StatusCode::CREATED)
                    .body(Full::<Bytes>::from(format!("order {n}")))
                    .unwrap(),
            )
        }
    });
    let orders = ServiceBuilder::new().layer(IdempotencyLayer::new()).service(handler);
    service_fn(move |req: Wire| {
        let orders = orders.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await?.to_bytes();
            let answered = tokio::spawn(orders.oneshot(Request::from_parts(parts, Full::new(body))));
            let res = answered.await??;
            let (parts, body) = res.into_parts();
            let body = body.collect().await.map_err(|e| format!("{e:?}"))?.to_bytes();
            Ok::<_, BoxError>(Response::from_parts(parts, Full::new(body)))
        }
    })
}

fn order() -> Request<Full<Bytes>> {
    Request::post("/orders").body(Full::from(r#"{"sku":1}"#)).unwrap()
}

async fn text(res: Response<Full<Bytes>>) -> String {
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_a_timeout_gets_the_first_attempts_order() {
    let created = Arc::new(AtomicU32::new(0));
    let retry = HttpRetryLayer::builder("orders")
        .backoff(Backoff::constant(100 * MS))
        .jitter(Jitter::None)
        .no_budget()
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(SetIdempotencyKeyLayer::new())
        .layer(retry)
        .timeout(500 * MS)
        .service(server(created.clone()));
    let started = Instant::now();
    // Attempt 1 times out at 500 ms and runs on; attempt 2 (600 ms) gets 409
    // with `Retry-After: 1`; attempt 3 (1.6 s) gets attempt 1's order.
    let res = client.oneshot(order()).await.unwrap();
    assert_eq!(started.elapsed(), 1600 * MS);
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    assert_eq!(text(res).await, "order 1");
    assert_eq!(created.load(Ordering::SeqCst), 1, "one order");
}

#[tokio::test(start_paused = true)]
async fn a_hedge_of_a_keyed_post_leaves_the_original_to_answer() {
    let created = Arc::new(AtomicU32::new(0));
    let hedge = HedgeLayer::builder("orders")
        .delay(100 * MS)
        .no_budget()
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(SetIdempotencyKeyLayer::new())
        .layer(hedge)
        .service(server(created.clone()));
    let started = Instant::now();
    let res = client.oneshot(order()).await.unwrap();
    assert_eq!(started.elapsed(), 1000 * MS);
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(
        !res.headers().contains_key("idempotent-replayed"),
        "the original's own answer"
    );
    assert_eq!(text(res).await, "order 1");
    assert_eq!(created.load(Ordering::SeqCst), 1, "one order");
}

#[tokio::test(start_paused = true)]
async fn the_fallback_sees_the_key_the_attempts_carried() {
    use palisade::fallback::{Failure, FallbackLayer};
    // The payments call fails after charging; the fallback queues the charge
    // for later, and it must carry the key the attempt was sent with, so
    // the consumer's charge is the same one.
    let sent: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen = sent.clone();
    let payments = service_fn(move |req: Request<Full<Bytes>>| {
        seen.lock()
            .unwrap()
            .push(req.headers()["idempotency-key"].to_str().unwrap().to_owned());
        async {
            Ok::<_, BoxError>(
                Response::builder()
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .body(Full::<Bytes>::default())
                    .unwrap(),
            )
        }
    });
    let fallback = FallbackLayer::builder("payments")
        .fallback(service_fn(|failure: Failure<Response<Full<Bytes>>>| async move {
            let key = failure.parts().headers.get("idempotency-key").cloned();
            let queued = Response::builder().status(StatusCode::ACCEPTED);
            Ok(match key {
                Some(key) => queued.header("queued-key", key),
                None => queued,
            }
            .body(Full::<Bytes>::default())
            .unwrap())
        }))
        .build()
        .unwrap();
    // The canonical client order: the key outside the fallback.
    let client = ServiceBuilder::new()
        .layer(SetIdempotencyKeyLayer::new())
        .layer(fallback)
        .service(payments);
    let res = client.oneshot(order()).await.unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(res.headers()["queued-key"], sent[0].as_str());
}
