//! The orders service against a live Redis: two instances sharing the
//! idempotency store answer a repeated key once (one charge), and `/health`
//! reports the shared stores (503 once Redis stops answering); against a live NATS: an order's `OrderCreated`
//! event arrives on its JetStream subject.

use axum::body::Body;
use axum_orders::{App, Config, PaymentsSim, app, generate_secret};
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use palisade_tests::{Nats, Redis};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

const ORDER: &str =
    r#"{"customer_id":"cus_1","items":[{"product_id":"sku_1","quantity":1}],"total_amount":1200,"currency":"EUR"}"#;

/// A fresh SQLite file per instance, as separate processes would have.
fn database() -> (String, std::path::PathBuf) {
    let db = std::env::temp_dir().join(format!("axum-orders-live-{}.db", uuid::Uuid::now_v7().simple()));
    (format!("sqlite:{}", db.display()), db)
}

async fn instance(payments: &str, tune: impl FnOnce(&mut Config)) -> (App, std::path::PathBuf) {
    let (url, db) = database();
    let mut config = Config::new(
        url,
        payments.parse().unwrap(),
        generate_secret().unwrap(),
        generate_secret().unwrap(),
    );
    tune(&mut config);
    (app(&config).await.unwrap(), db)
}

/// A payments simulator on a real socket, and its base URL.
async fn payments() -> (PaymentsSim, String) {
    let sim = PaymentsSim::with_seed(3);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, sim.router()).into_future());
    (sim, url)
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
    let (sim, payments) = payments().await;
    let shared = |config: &mut Config| {
        config.redis_url = Some(redis.url.clone());
        config.redis_prefix = redis.prefix.clone();
    };
    let (first, first_db) = instance(&payments, shared).await;
    let (second, second_db) = instance(&payments, shared).await;

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

#[tokio::test]
async fn an_orders_event_arrives_on_its_jetstream_subject() {
    let Some(nats) = Nats::connect("axum_orders_events").await else {
        return;
    };
    let subject = nats.subject("OrderCreated");
    let mut received = nats.client.subscribe(subject.clone()).await.unwrap();
    nats.client.flush().await.unwrap();
    let (_sim, payments) = payments().await;
    let (orders, db) = instance(&payments, |config| {
        config.nats_url = Some(nats.url.clone());
        config.nats_subject_prefix = nats.prefix.clone();
        config.nats_stream = nats.stream.clone();
    })
    .await;
    assert!(orders.events.is_none());

    let (status, _, body) = send(&orders, post_order("live-event-1")).await;
    assert_eq!(status, StatusCode::CREATED);
    let order: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let message = tokio::time::timeout(std::time::Duration::from_secs(10), received.next())
        .await
        .expect("no OrderCreated event within 10 s")
        .unwrap();
    assert_eq!(message.subject.as_str(), subject);
    let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(event["event_type"], "OrderCreated");
    assert_eq!(event["aggregate_id"], order["id"]);
    assert_eq!(event["payload"]["total_amount"], 1200);

    let (status, _, health) = send(&orders, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let health: serde_json::Value = serde_json::from_slice(&health).unwrap();
    assert_eq!(health["stores"]["outbox_publisher"], "nats");
    assert_eq!(health["stores"]["idempotency"], "memory");

    finish(orders, db).await;
    nats.cleanup().await;
}

#[tokio::test]
async fn health_answers_503_when_redis_stops_answering() {
    let Some(redis) = Redis::connect("axum_orders_health").await else {
        return;
    };
    // A proxy in front of Redis: aborting it cuts the app off from Redis.
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("redis://{}", proxy.local_addr().unwrap());
    let upstream = redis
        .url
        .trim_start_matches("redis://")
        .split(['/', '?'])
        .next()
        .unwrap_or_default()
        .to_owned();
    let forwarding = tokio::spawn(async move {
        let (mut client, _) = proxy.accept().await.unwrap();
        let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    let (_sim, payments) = payments().await;
    let (orders, db) = instance(&payments, |config| {
        config.redis_url = Some(proxy_url);
        config.redis_prefix = redis.prefix.clone();
    })
    .await;
    let health = || Request::get("/health").body(Body::empty()).unwrap();
    let (status, _, _) = send(&orders, health()).await;
    assert_eq!(status, StatusCode::OK);

    forwarding.abort();
    let _ = forwarding.await;
    let (status, _, body) = send(&orders, health()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["stores"]["redis"]["up"], false);

    finish(orders, db).await;
}
