//! The orders service against a live Redis: two instances sharing the
//! idempotency store answer a repeated key once (one charge), and `/health`
//! reports the shared stores.

use axum::body::Body;
use axum_orders::{App, Config, PaymentsSim, app, generate_secret};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use palisade_tests::Redis;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

const ORDER: &str =
    r#"{"customer_id":"cus_1","items":[{"product_id":"sku_1","quantity":1}],"total_amount":1200,"currency":"EUR"}"#;

/// A fresh SQLite file per instance, as separate processes would have.
fn database() -> (String, std::path::PathBuf) {
    let db = std::env::temp_dir().join(format!("axum-orders-live-{}.db", uuid::Uuid::now_v7().simple()));
    (format!("sqlite:{}", db.display()), db)
}

async fn instance(redis: &Redis, payments: &str) -> (App, std::path::PathBuf) {
    let (url, db) = database();
    let mut config = Config::new(
        url,
        payments.parse().unwrap(),
        generate_secret().unwrap(),
        generate_secret().unwrap(),
    );
    config.redis_url = Some(redis.url.clone());
    config.redis_prefix = redis.prefix.clone();
    (app(&config).await.unwrap(), db)
}

async fn send(app: &App, req: Request<Body>) -> (StatusCode, http::HeaderMap, Bytes) {
    let res = app.router.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

fn post_order(key: &str) -> Request<Body> {
    Request::post("/orders")
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(ORDER))
        .unwrap()
}

async fn finish(app: App, db: std::path::PathBuf) {
    app.pool.close().await;
    app.shutdown().await;
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.clone().into_os_string();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
}

#[tokio::test]
async fn a_repeated_order_on_another_instance_is_replayed_and_charged_once() {
    let Some(redis) = Redis::connect("axum_orders_replay").await else {
        return;
    };
    let sim = PaymentsSim::with_seed(3);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let payments = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, sim.router()).into_future());
    let (first, first_db) = instance(&redis, &payments).await;
    let (second, second_db) = instance(&redis, &payments).await;

    let (status, headers, body) = send(&first, post_order("live-order-1")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, headers, replayed) = send(&second, post_order("live-order-1")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(replayed, body);
    assert_eq!(sim.charges(), 1);

    let (status, _, health) = send(&second, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let health: serde_json::Value = serde_json::from_slice(&health).unwrap();
    assert_eq!(health["stores"]["idempotency"], "redis");
    assert_eq!(health["stores"]["webhook_replay"], "redis");
    assert_eq!(health["stores"]["redis"]["up"], true);

    finish(first, first_db).await;
    finish(second, second_db).await;
}
