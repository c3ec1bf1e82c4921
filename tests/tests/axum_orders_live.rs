//! The orders service against live services: two instances sharing the
//! Redis idempotency store answer a repeated key once (one charge), and
//! `/health` reports the shared stores (503 once Redis stops answering); an
//! order's `OrderCreated` event arrives on its JetStream subject; on
//! PostgreSQL + Redis + NATS together the order is stored in Postgres, seen by
//! a second instance, updated by a webhook, and its event published; with a
//! private `nats-server` stopped mid-test the service stays up ("degraded")
//! and the events wait in the outbox until the broker is back; on PostgreSQL
//! an order whose storing failed after its charge is finished by a retry on
//! another instance with one charge, two principals using one key get two
//! orders, a late webhook leaves a paid order paid, and an order never
//! finished is cancelled and refunded, and an order queued while payments
//! are unavailable is charged once when they return.

use axum::body::Body;
use axum_orders::{App, Config, PaymentsSim, app, generate_secret};
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use palisade_tests::fault_proxy::FaultProxy;
use palisade_tests::{Nats, Postgres, Redis, upstream_of, via};
use palisade_webhook::{Scheme, Signer};
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
    app.database.close().await;
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

/// Subscribes to the test's `OrderCreated` subject.
async fn order_created_events(nats: &Nats) -> async_nats::Subscriber {
    let events = nats.client.subscribe(nats.subject("OrderCreated")).await.unwrap();
    nats.client.flush().await.unwrap();
    events
}

/// The next event on `events`, checked to be an `OrderCreated` on the test's subject.
async fn next_order_created(nats: &Nats, events: &mut async_nats::Subscriber) -> serde_json::Value {
    let message = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
        .await
        .expect("no OrderCreated event within 10 s")
        .unwrap();
    assert_eq!(message.subject.as_str(), nats.subject("OrderCreated"));
    let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(event["event_type"], "OrderCreated");
    event
}

/// Points `config` at the test's NATS stream and subject prefix.
fn publish_to(config: &mut Config, nats: &Nats) {
    config.nats_url = Some(nats.url.clone());
    config.nats_subject_prefix = nats.prefix.clone();
    config.nats_stream = nats.stream.clone();
}

#[tokio::test]
async fn an_orders_event_arrives_on_its_jetstream_subject() {
    let Some(nats) = Nats::connect("axum_orders_events").await else {
        return;
    };
    let mut received = order_created_events(&nats).await;
    let (_sim, payments) = payments().await;
    let (orders, db) = instance(&payments, |config| publish_to(config, &nats)).await;
    assert!(orders.events.is_none());

    let (status, _, body) = send(&orders, post_order("live-event-1")).await;
    assert_eq!(status, StatusCode::CREATED);
    let order: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let event = next_order_created(&nats, &mut received).await;
    assert_eq!(event["aggregate_id"], order["id"]);
    assert_eq!(event["payload"]["total_amount"], 1200);

    let (status, _, health) = send(&orders, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let health: serde_json::Value = serde_json::from_slice(&health).unwrap();
    assert_eq!(health["stores"]["outbox_publisher"], "nats");
    assert_eq!(health["outbox"]["publisher"], "connected");
    assert_eq!(health["stores"]["idempotency"], "memory");

    finish(orders, db).await;
    nats.cleanup().await;
}

#[tokio::test]
async fn health_answers_503_when_redis_stops_answering() {
    let Some(redis) = Redis::connect("axum_orders_health").await else {
        return;
    };
    // A proxy in front of Redis: cutting it and refusing new connections
    // cuts the app off from Redis.
    let proxy = FaultProxy::start(upstream_of(&redis.url, 6379)).await.unwrap();
    let proxy_url = via(&redis.url, &proxy);
    let (_sim, payments) = payments().await;
    let (orders, db) = instance(&payments, |config| {
        config.redis_url = Some(proxy_url);
        config.redis_prefix = redis.prefix.clone();
    })
    .await;
    let health = || Request::get("/health").body(Body::empty()).unwrap();
    let (status, _, _) = send(&orders, health()).await;
    assert_eq!(status, StatusCode::OK);

    proxy.refuse();
    proxy.cut();
    let (status, _, body) = send(&orders, health()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["stores"]["redis"]["up"], false);

    finish(orders, db).await;
}

async fn health(app: &App) -> (StatusCode, serde_json::Value) {
    let (status, _, body) = send(app, Request::get("/health").body(Body::empty()).unwrap()).await;
    (status, serde_json::from_slice(&body).unwrap())
}

/// A Standard Webhooks `payment.succeeded` for `order_id`, signed with `secret`.
fn paid_webhook(secret: &str, message_id: &str, order_id: &str) -> Request<Body> {
    payment_webhook(secret, message_id, "payment.succeeded", order_id)
}

/// A Standard Webhooks payment event of type `kind` for `order_id`, signed with `secret`.
fn payment_webhook(secret: &str, message_id: &str, kind: &str, order_id: &str) -> Request<Body> {
    let body = serde_json::json!({ "type": kind, "data": { "order_id": order_id } }).to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut headers = http::HeaderMap::new();
    Signer::builder(Scheme::StandardWebhooks)
        .secret(secret)
        .build()
        .unwrap()
        .sign_with(&mut headers, message_id, now, body.as_bytes())
        .unwrap();
    let mut req = Request::post("/webhooks/payments")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    req.headers_mut().extend(headers);
    req
}

#[tokio::test]
async fn on_postgres_redis_and_nats_an_order_is_stored_published_and_charged_once() {
    let Some(pg) = Postgres::connect("axum_orders_pg").await else {
        return;
    };
    let Some(redis) = Redis::connect("axum_orders_pg").await else {
        return;
    };
    let Some(nats) = Nats::connect("axum_orders_pg").await else {
        return;
    };
    let mut received = order_created_events(&nats).await;
    let (sim, payments) = payments().await;
    let webhook_secret = generate_secret().unwrap();
    let config = |database_url: String| {
        let mut config = Config::new(
            database_url,
            payments.parse().unwrap(),
            webhook_secret.clone(),
            generate_secret().unwrap(),
        );
        config.redis_url = Some(redis.url.clone());
        config.redis_prefix = redis.prefix.clone();
        publish_to(&mut config, &nats);
        config
    };
    let first = app(&config(pg.url_in_schema())).await.unwrap();
    let second = app(&config(pg.url_in_schema())).await.unwrap();

    let (status, _, body) = send(&first, post_order("pg-order-1")).await;
    assert_eq!(status, StatusCode::CREATED);
    let order: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let id = order["id"].as_str().unwrap().to_owned();

    // The event, on the test's own subject of its own stream.
    let event = next_order_created(&nats, &mut received).await;
    assert_eq!(event["aggregate_id"], id);
    assert_eq!(event["payload"], order);

    // The order, in the test's schema.
    let row: (String, i64, String) = sqlx::query_as("SELECT status, total_amount, currency FROM orders WHERE id = $1")
        .bind(&id)
        .fetch_one(&pg.pool)
        .await
        .unwrap();
    assert_eq!(row, ("pending".to_owned(), 1200, "EUR".to_owned()));

    // The replay, on the other instance: the stored answer, no second charge or order.
    let (status, headers, replayed) = send(&second, post_order("pg-order-1")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(replayed, body);
    assert_eq!(sim.charges(), 1);
    let (status, _, listed) = send(&second, Request::get("/orders").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&listed).unwrap(),
        serde_json::json!([order])
    );

    // A webhook on the second instance updates the row the first one wrote.
    let (status, _, _) = send(&second, paid_webhook(&webhook_secret, "msg_pg_1", &id)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, got) = send(
        &first,
        Request::get(format!("/orders/{id}")).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&got).unwrap()["status"],
        "paid"
    );

    let (status, report) = health(&first).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["status"], "ok");
    assert_eq!(
        report["stores"]["database"],
        serde_json::json!({ "backend": "postgres", "up": true })
    );
    assert_eq!(report["stores"]["redis"]["up"], true);
    assert_eq!(
        report["stores"]["nats"],
        serde_json::json!({ "up": true, "state": "connected" })
    );
    assert_eq!(report["stores"]["outbox_publisher"], "nats");
    assert_eq!(report["outbox"]["dead"], 0);

    // With its pool closed, an instance reports the database down: 503.
    first.database.close().await;
    let (status, report) = health(&first).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(report["status"], "unavailable");
    assert_eq!(
        report["stores"]["database"],
        serde_json::json!({ "backend": "postgres", "up": false })
    );

    for orders in [first, second] {
        orders.database.close().await;
        orders.shutdown().await;
    }
    nats.cleanup().await;
    redis.cleanup().await;
    pg.cleanup().await;
}

/// A `nats-server` of the test's own, on a port and store directory of its
/// own, so the test can stop the broker without touching the shared one.
struct PrivateNats {
    child: std::process::Child,
    port: u16,
    store: std::path::PathBuf,
}

impl PrivateNats {
    /// Starts `nats-server` with JetStream on a free port; `None` (a skip, or a
    /// panic with `PALISADE_REQUIRE_SERVICES=1`) when it is not installed.
    async fn start() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = std::env::temp_dir().join(format!("axum-orders-nats-{}", uuid::Uuid::now_v7().simple()));
        let child = match Self::spawn(port, &store) {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !palisade_tests::services_required() => {
                palisade_tests::skip("nats-server is not on PATH");
                return None;
            }
            Err(e) => panic!("cannot start nats-server: {e}"),
        };
        let server = Self { child, port, store };
        server.wait_until_listening().await;
        Some(server)
    }

    fn spawn(port: u16, store: &std::path::Path) -> std::io::Result<std::process::Child> {
        std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
    }

    async fn wait_until_listening(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not listen within 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts it again on the same port and store (the stream survives).
    async fn restart(&mut self) {
        self.child = Self::spawn(self.port, &self.store).unwrap();
        self.wait_until_listening().await;
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// Polls `/health` until `done` holds for it, for at most `secs` seconds.
async fn health_until(
    app: &App,
    secs: u64,
    done: impl Fn(&serde_json::Value) -> bool,
) -> (StatusCode, serde_json::Value) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let (status, report) = health(app).await;
        if done(&report) {
            return (status, report);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached within {secs} s: {report}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn while_the_broker_is_down_orders_are_taken_and_their_events_wait_in_the_outbox() {
    let Some(mut broker) = PrivateNats::start().await else {
        return;
    };
    let (_sim, payments) = payments().await;
    let url = broker.url();
    // The defaults: stream ORDERS on orders.events.>, on a broker of the test's own.
    let (orders, db) = instance(&payments, |config| config.nats_url = Some(url)).await;
    let (status, report) = health(&orders).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["status"], "ok");
    assert_eq!(
        report["stores"]["nats"],
        serde_json::json!({ "up": true, "state": "connected" })
    );
    assert_eq!(report["outbox"]["publisher"], "connected");
    let (status, _, _) = send(&orders, post_order("before-outage")).await;
    assert_eq!(status, StatusCode::CREATED);
    health_until(&orders, 10, |r| {
        r["outbox"]["published"] == 1 && r["outbox"]["pending"] == 0
    })
    .await;

    broker.stop();
    // The client notices the closed connection on its own; no order needed for that.
    let (status, report) = health_until(&orders, 10, |r| r["stores"]["nats"]["up"] == false).await;
    assert_eq!(status, StatusCode::OK, "a broker outage does not take the service out");
    assert_eq!(report["status"], "degraded");
    assert_eq!(report["stores"]["nats"]["state"], "disconnected");
    assert_eq!(
        report["outbox"]["publisher"], "disconnected",
        "the relay's publisher says it cannot reach the broker"
    );

    let (status, _, body) = send(&orders, post_order("during-outage")).await;
    assert_eq!(status, StatusCode::CREATED, "orders are still taken");
    let during: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let (_, report) = health(&orders).await;
    assert_eq!(report["outbox"]["pending"], 1, "the event waits in the outbox");
    assert_eq!(report["outbox"]["published"], 1);

    broker.restart().await;
    // The client reconnects (backing off up to 4 s) and the relay retries the
    // event (backing off from 500 ms): real waits, bounded by the deadline.
    // (Counted as published on the broker's ack; the row goes right after.)
    let (status, report) = health_until(&orders, 60, |r| {
        r["outbox"]["published"] == 2 && r["outbox"]["pending"] == 0
    })
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["status"], "ok");
    assert_eq!(report["stores"]["nats"]["state"], "connected");
    assert_eq!(report["outbox"]["publisher"], "connected");

    // Both events are in the stream, the second being the order taken during the outage.
    let client = async_nats::connect(broker.url()).await.unwrap();
    let mut stream = async_nats::jetstream::new(client).get_stream("ORDERS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2);
    let last = stream
        .get_last_raw_message_by_subject("orders.events.OrderCreated")
        .await
        .unwrap();
    let event: serde_json::Value = serde_json::from_slice(&last.payload).unwrap();
    assert_eq!(event["aggregate_id"], during["id"]);

    finish(orders, db).await;
}

#[tokio::test]
async fn on_postgres_a_notify_from_another_instance_wakes_the_relay_at_once() {
    let Some(pg) = Postgres::connect("axum_orders_notify").await else {
        return;
    };
    let (_sim, payments) = payments().await;
    let config = Config::new(
        pg.url_in_schema(),
        payments.parse().unwrap(),
        generate_secret().unwrap(),
        generate_secret().unwrap(),
    );
    let mut orders = app(&config).await.unwrap();
    let mut events = orders.events.take().unwrap();
    let channel = axum_orders::Database::wakeup_channel(&pg.pool).await.unwrap();
    let poll_interval = std::time::Duration::from_secs(1);
    for round in 0..3 {
        // Let the relay fall asleep for its poll interval (after an event it
        // claims once more 10 ms later, and at start-up it claims when LISTEN
        // connects), so only the notification can bring it back quickly.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        // What another instance does: commit an event, then NOTIFY.
        let event = palisade_outbox::Event::new(
            "OrderCreated",
            "Order",
            format!("ord_notify_{round}"),
            serde_json::json!({}),
        )
        .with_destination("OrderCreated");
        let mut tx = pg.pool.begin().await.unwrap();
        palisade_outbox::stage(&mut *tx, &event).await.unwrap();
        tx.commit().await.unwrap();
        let notified = tokio::time::Instant::now();
        palisade_outbox::postgres::notify(&pg.pool, &channel).await.unwrap();
        let published = tokio::time::timeout(poll_interval, events.recv())
            .await
            .expect("the event waited for the next poll")
            .unwrap();
        assert_eq!(published.event_id, event.event_id);
        let waited = notified.elapsed();
        assert!(waited < poll_interval / 3, "round {round}: {waited:?} after the NOTIFY");
    }
    orders.database.close().await;
    orders.shutdown().await;
    pg.cleanup().await;
}

/// Makes every insert into the outbox of `pg`'s schema fail, as a database
/// fault after an order's charge would.
async fn fail_staging(pg: &Postgres) {
    sqlx::query(
        "CREATE FUNCTION fail_staging() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$",
    )
    .execute(&pg.pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER fail_staging BEFORE INSERT ON palisade_outbox \
         FOR EACH ROW EXECUTE FUNCTION fail_staging()",
    )
    .execute(&pg.pool)
    .await
    .unwrap();
}

async fn repair_staging(pg: &Postgres) {
    sqlx::query("DROP TRIGGER fail_staging ON palisade_outbox")
        .execute(&pg.pool)
        .await
        .unwrap();
}

fn post_order_as(principal: &str, key: &str) -> Request<Body> {
    let mut req = post_order(key);
    req.headers_mut()
        .insert("authorization", format!("Bearer {principal}").parse().unwrap());
    req
}

#[tokio::test]
async fn on_postgres_and_redis_a_retry_on_another_instance_finishes_the_order_with_one_charge() {
    let Some(pg) = Postgres::connect("axum_orders_saga").await else {
        return;
    };
    let Some(redis) = Redis::connect("axum_orders_saga").await else {
        return;
    };
    let (sim, payments) = payments().await;
    let webhook_secret = generate_secret().unwrap();
    let config = || {
        let mut config = Config::new(
            pg.url_in_schema(),
            payments.parse().unwrap(),
            webhook_secret.clone(),
            generate_secret().unwrap(),
        );
        config.redis_url = Some(redis.url.clone());
        config.redis_prefix = redis.prefix.clone();
        config
    };
    let first = app(&config()).await.unwrap();
    let second = app(&config()).await.unwrap();

    // The charge is made, then the order cannot be stored: a 503, not stored by the
    // idempotency layer, so the retry (on the other instance) runs and finishes it.
    fail_staging(&pg).await;
    let (status, headers, body) = send(&first, post_order("pg-saga-1")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(!String::from_utf8_lossy(&body).contains("injected fault"));
    assert_eq!(sim.charges(), 1);
    repair_staging(&pg).await;
    let (status, headers, body) = send(&second, post_order("pg-saga-1")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(headers.get("idempotent-replayed").is_none());
    let order: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(sim.requests(), 2);
    assert_eq!(sim.charges(), 1);
    let (_, _, listed) = send(&first, Request::get("/orders").body(Body::empty()).unwrap()).await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&listed).unwrap(),
        serde_json::json!([order])
    );

    // Two principals, one key, one on each instance: two orders, two charges.
    let (status, _, a) = send(&first, post_order_as("tenant-a", "pg-shared")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, headers, b) = send(&second, post_order_as("tenant-b", "pg-shared")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(headers.get("idempotent-replayed").is_none());
    assert_ne!(a, b);
    assert_eq!(sim.charges(), 3);

    // Paid, then a late failure on the other instance: still paid, acknowledged.
    let id = order["id"].as_str().unwrap();
    let (status, _, _) = send(&first, paid_webhook(&webhook_secret, "msg_saga_1", id)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let late = payment_webhook(&webhook_secret, "msg_saga_2", "payment.failed", id);
    let (status, _, _) = send(&second, late).await;
    assert_eq!(status, StatusCode::OK);
    let row: (String,) = sqlx::query_as("SELECT status FROM orders WHERE id = $1")
        .bind(id)
        .fetch_one(&pg.pool)
        .await
        .unwrap();
    assert_eq!(row.0, "paid");
    let (_, report) = health(&second).await;
    assert_eq!(report["webhooks"]["late_events"], 1);

    for orders in [first, second] {
        orders.database.close().await;
        orders.shutdown().await;
    }
    redis.cleanup().await;
    pg.cleanup().await;
}

#[tokio::test]
async fn on_postgres_an_order_never_finished_is_cancelled_and_refunded() {
    let Some(pg) = Postgres::connect("axum_orders_refund").await else {
        return;
    };
    let (sim, payments) = payments().await;
    let config = Config::new(
        pg.url_in_schema(),
        payments.parse().unwrap(),
        generate_secret().unwrap(),
        generate_secret().unwrap(),
    );
    let orders = app(&config).await.unwrap();
    fail_staging(&pg).await;
    let (status, _, _) = send(&orders, post_order("pg-abandoned")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(orders.cancel_abandoned().await.unwrap(), 0);
    // 16 minutes pass without another attempt (the lease is wall-clock time in the database).
    sqlx::query("UPDATE orders SET leased_at = leased_at - 960000")
        .execute(&pg.pool)
        .await
        .unwrap();
    assert_eq!(orders.cancel_abandoned().await.unwrap(), 1);
    assert_eq!((sim.charges(), sim.refunds()), (1, 1));

    repair_staging(&pg).await;
    let (status, _, _) = send(&orders, post_order("pg-abandoned")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!((sim.requests(), sim.charges(), sim.refunds()), (1, 1, 1));
    let statuses: Vec<(String,)> = sqlx::query_as("SELECT status FROM orders")
        .fetch_all(&pg.pool)
        .await
        .unwrap();
    assert_eq!(statuses, [("cancelled".to_owned(),)]);

    orders.database.close().await;
    orders.shutdown().await;
    pg.cleanup().await;
}

#[tokio::test]
async fn on_postgres_an_order_queued_while_payments_are_unavailable_is_charged_once_when_they_return() {
    let Some(pg) = Postgres::connect("axum_orders_queued").await else {
        return;
    };
    let (sim, payments) = payments().await;
    let mut config = Config::new(
        pg.url_in_schema(),
        payments.parse().unwrap(),
        generate_secret().unwrap(),
        generate_secret().unwrap(),
    );
    config.payments.breaker_failures = 1;
    config.payments.max_attempts = 1;
    config.payments.breaker_open = std::time::Duration::from_secs(2);
    let orders = app(&config).await.unwrap();

    // One failed charge opens the breaker; payments then recover.
    sim.set_mode(axum_orders::Mode {
        failure_rate: 1.0,
        ..axum_orders::Mode::default()
    })
    .unwrap();
    assert_eq!(send(&orders, post_order("pg-opens")).await.0, StatusCode::BAD_GATEWAY);
    sim.set_mode(axum_orders::Mode::default()).unwrap();

    // Queued: the order and its command are committed together in PostgreSQL.
    let (status, headers, body) = send(&orders, post_order("pg-queued")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(headers["location"], format!("/orders/{id}"));
    let status_of = || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM orders WHERE id = $1")
            .bind(&id)
            .fetch_one(&pg.pool)
            .await
            .unwrap()
    };
    assert_eq!(status_of().await, "payment_queued");
    assert_eq!(sim.charges(), 0);

    // Past the open duration (2 s), the relay's next delivery is the breaker's
    // probe: it charges the order under its id and finishes it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while status_of().await != "pending" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queued charge was never made"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!((sim.requests(), sim.charges()), (2, 1));
    let (status, _, _) = send(&orders, post_order("pg-queued")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the first answer, replayed");
    assert_eq!((sim.requests(), sim.charges()), (2, 1));

    orders.database.close().await;
    orders.shutdown().await;
    pg.cleanup().await;
}
