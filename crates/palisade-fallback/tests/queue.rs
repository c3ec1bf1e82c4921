//! `QueueForLater` on SQLite: the failed request's work is staged in the
//! outbox and the caller told where to look.
#![cfg(feature = "outbox-sqlite")]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use palisade_core::error::find;
use palisade_core::{BoxError, CircuitOpen};
use palisade_fallback::{FallbackLayer, QueueForLater, Queued, Reason};
use palisade_outbox::Event;
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};
use tower::{Layer, ServiceExt, service_fn};

type Res = Response<Full<Bytes>>;

async fn pool(migrated: bool) -> SqlitePool {
    // One connection: an in-memory database lives in its connection.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    if migrated {
        palisade_outbox::sqlite::migrate(&pool).await.unwrap();
    }
    pool
}

/// Queues a charge for the order named by the request's path, only when
/// payments are unavailable (the breaker is open).
fn queue(pool: SqlitePool) -> QueueForLater<sqlx::Sqlite, Res> {
    QueueForLater::new(pool, |failure| {
        if failure.reason() != Reason::CircuitOpen {
            return None;
        }
        let order = failure.parts().uri.path().trim_start_matches("/orders/").to_owned();
        let key = failure.parts().headers["idempotency-key"].to_str().ok()?.to_owned();
        let event = Event::new(
            "ChargeRequested",
            "Order",
            order.clone(),
            serde_json::json!({"order": order, "idempotency_key": key}),
        );
        Some(Queued::new(event, format!("/orders/{order}")))
    })
}

fn breaker_open() -> impl tower::Service<Request<()>, Response = Res, Error = BoxError, Future: Send> + Clone {
    service_fn(|_req: Request<()>| async {
        Err::<Res, BoxError>(CircuitOpen::new("payments", Duration::from_secs(30)).into())
    })
}

fn charge() -> Request<()> {
    Request::post("/orders/ord_1")
        .header("idempotency-key", "k-1")
        .body(())
        .unwrap()
}

#[tokio::test]
async fn an_open_breaker_queues_the_command_and_answers_202() {
    let pool = pool(true).await;
    let layer = FallbackLayer::builder("payments")
        .fallback(queue(pool.clone()))
        .build()
        .unwrap();
    let res = layer.layer(breaker_open()).oneshot(charge()).await.unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(res.headers()["location"], "/orders/ord_1");
    assert_eq!(res.headers()["content-type"], "application/json");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, r#"{"status":"queued","status_url":"/orders/ord_1"}"#);

    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT event_type, aggregate_id, CAST(payload AS TEXT) FROM palisade_outbox")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("ChargeRequested", "ord_1"));
    let payload: serde_json::Value = serde_json::from_str(&rows[0].2).unwrap();
    assert_eq!(payload, serde_json::json!({"order": "ord_1", "idempotency_key": "k-1"}));
}

#[tokio::test]
async fn when_staging_fails_or_the_command_declines_the_caller_gets_the_original_error() {
    // No outbox table: staging fails.
    let layer = FallbackLayer::builder("payments")
        .fallback(queue(pool(false).await))
        .build()
        .unwrap();
    let err = layer.layer(breaker_open()).oneshot(charge()).await.unwrap_err();
    assert_eq!(find::<CircuitOpen>(&*err).unwrap().name(), "payments");

    // Not a case for queueing: a 503 answer is declined and comes back as it was.
    let pool = pool(true).await;
    let layer = FallbackLayer::builder("payments")
        .fallback(queue(pool.clone()))
        .build()
        .unwrap();
    let unavailable = service_fn(|_req: Request<()>| async {
        Ok::<_, BoxError>(Response::builder().status(503).body(Full::from("down")).unwrap())
    });
    let res = layer.layer(unavailable).oneshot(charge()).await.unwrap();
    assert_eq!(res.status(), 503);
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM palisade_outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

/// Queues like [`queue`], and moves the order from `new` to `payment_queued`
/// in the same transaction.
fn queue_with_status(pool: SqlitePool) -> QueueForLater<sqlx::Sqlite, Res> {
    QueueForLater::new(pool, |failure| {
        let order = failure.parts().uri.path().trim_start_matches("/orders/").to_owned();
        let event = Event::new(
            "ChargeRequested",
            "Order",
            order.clone(),
            serde_json::json!({"order": order}),
        );
        Some(Queued::new(event, format!("/orders/{order}")).with_update(
            "UPDATE orders SET status = 'payment_queued' WHERE id = $1 AND status = $2",
            [order, "new".to_owned()],
        ))
    })
}

async fn orders_table(pool: &SqlitePool, status: &str) {
    sqlx::query("CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO orders VALUES ('ord_1', $1)")
        .bind(status)
        .execute(pool)
        .await
        .unwrap();
}

async fn status_and_staged(pool: &SqlitePool) -> (String, i64) {
    let (status,): (String,) = sqlx::query_as("SELECT status FROM orders WHERE id = 'ord_1'")
        .fetch_one(pool)
        .await
        .unwrap();
    // -1: no outbox table at all.
    let staged: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM palisade_outbox")
        .fetch_one(pool)
        .await
        .unwrap_or(-1);
    (status, staged)
}

#[tokio::test]
async fn an_update_commits_with_the_command_and_the_answer_says_it_was_queued() {
    let pool = pool(true).await;
    orders_table(&pool, "new").await;
    let layer = FallbackLayer::builder("payments")
        .fallback(queue_with_status(pool.clone()))
        .build()
        .unwrap();
    let res = layer.layer(breaker_open()).oneshot(charge()).await.unwrap();
    assert_eq!(res.status(), 202);
    let queued = res
        .extensions()
        .get::<Queued>()
        .expect("the answer carries what it queued");
    assert_eq!(queued.status_url(), "/orders/ord_1");
    assert_eq!(queued.event().event_type, "ChargeRequested");
    assert_eq!(queued.event().aggregate_id, "ord_1");
    assert_eq!(status_and_staged(&pool).await, ("payment_queued".to_owned(), 1));

    // The order is no longer `new`: the update changes nothing, nothing more is
    // staged, and the caller gets the open breaker.
    let err = layer.layer(breaker_open()).oneshot(charge()).await.unwrap_err();
    assert_eq!(find::<CircuitOpen>(&*err).unwrap().name(), "payments");
    assert_eq!(status_and_staged(&pool).await, ("payment_queued".to_owned(), 1));
}

#[tokio::test]
async fn a_command_that_cannot_be_staged_leaves_the_update_undone() {
    // No outbox table: the update runs, staging fails, and the transaction rolls back.
    let pool = pool(false).await;
    orders_table(&pool, "new").await;
    let layer = FallbackLayer::builder("payments")
        .fallback(queue_with_status(pool.clone()))
        .build()
        .unwrap();
    let err = layer.layer(breaker_open()).oneshot(charge()).await.unwrap_err();
    assert_eq!(find::<CircuitOpen>(&*err).unwrap().name(), "payments");
    assert_eq!(status_and_staged(&pool).await, ("new".to_owned(), -1));
}

#[tokio::test]
async fn a_dependency_answering_202_itself_is_not_taken_for_a_queued_call() {
    let pool = pool(true).await;
    let layer = FallbackLayer::builder("payments")
        .fallback(queue_with_status(pool))
        .build()
        .unwrap();
    let accepted = service_fn(|_req: Request<()>| async {
        Ok::<_, BoxError>(Response::builder().status(202).body(Full::from("accepted")).unwrap())
    });
    let res = layer.layer(accepted).oneshot(charge()).await.unwrap();
    assert_eq!(res.status(), 202);
    assert!(res.extensions().get::<Queued>().is_none());
}
