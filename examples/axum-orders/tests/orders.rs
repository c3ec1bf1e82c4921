//! The orders routes over `oneshot`, charging a simulator on a real socket.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum_orders::{
    API, App, Backend, Config, Database, Layers, Mode, PAYMENTS, PaymentsConfig, PaymentsSim, app, generate_secret,
    parse_duration,
};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use palisade::config::Settings;
use palisade::webhook::{Scheme, Signer};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// An app on a fresh SQLite file, charging a fresh simulator.
struct Fixture {
    app: App,
    config: Config,
    sim: PaymentsSim,
    db: PathBuf,
}

impl Fixture {
    async fn start(tune: impl FnOnce(&mut Config)) -> Self {
        let sim = PaymentsSim::with_seed(7);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, sim.router()).into_future());
        let db = std::env::temp_dir().join(format!("axum-orders-test-{}.db", uuid::Uuid::now_v7().simple()));
        let mut config = Config::new(
            format!("sqlite:{}", db.display()),
            format!("http://{addr}").parse().unwrap(),
            generate_secret().unwrap(),
            generate_secret().unwrap(),
        );
        config.payments.retry_backoff = Duration::from_millis(1);
        tune(&mut config);
        let app = app(&config).await.unwrap();
        Self { app, config, sim, db }
    }

    async fn send(&self, req: Request<Body>) -> (Response<()>, Bytes) {
        let res = self.app.router.clone().oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        (
            Response::from_parts(parts, ()),
            body.collect().await.unwrap().to_bytes(),
        )
    }

    /// Makes every charge fail with `status`.
    fn fail_payments(&self, status: u16) {
        self.sim
            .set_mode(Mode {
                failure_rate: 1.0,
                status,
                ..Mode::default()
            })
            .unwrap();
    }

    async fn orders(&self) -> Vec<serde_json::Value> {
        let (res, body) = self.send(Request::get("/orders").body(Body::empty()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::OK);
        serde_json::from_slice(&body).unwrap()
    }

    async fn finish(self) {
        self.app.database.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.db.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

const ORDER: &str =
    r#"{"customer_id":"cus_1","items":[{"product_id":"sku_1","quantity":2}],"total_amount":5999,"currency":"EUR"}"#;

fn post_order(key: Option<&str>, body: &str) -> Request<Body> {
    let mut req = Request::post("/orders").header("content-type", "application/json");
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.body(Body::from(body.to_owned())).unwrap()
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

fn assert_problem(res: &Response<()>, status: StatusCode) {
    assert_eq!(res.status(), status);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn an_order_is_created_once_per_key_and_its_event_published() {
    let mut fx = Fixture::start(|_| {}).await;
    let (res, body) = fx.send(post_order(Some("order-1"), ORDER)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let order = json(&body);
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(order["status"], "pending");
    assert_eq!(order["customer_id"], "cus_1");
    assert_eq!(order["items"][0]["quantity"], 2);
    assert_eq!(order["total_amount"], 5999);
    assert_eq!(order["currency"], "EUR");
    assert!(order["created_at"].as_str().unwrap().len() >= 20);

    let (replay, replay_body) = fx.send(post_order(Some("order-1"), ORDER)).await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay_body, body);
    assert_eq!(fx.sim.charges(), 1);
    assert_eq!(fx.orders().await.len(), 1);

    let (got, got_body) = fx
        .send(Request::get(format!("/orders/{id}")).body(Body::empty()).unwrap())
        .await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(json(&got_body), order);

    let mut events = fx.app.events.take().unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.event_type, "OrderCreated");
    assert_eq!(event.aggregate_type, "Order");
    assert_eq!(event.aggregate_id, id);
    assert_eq!(event.payload, order);
    fx.finish().await;
}

#[tokio::test]
async fn a_second_key_is_a_second_order_and_charge() {
    let fx = Fixture::start(|_| {}).await;
    assert_eq!(
        fx.send(post_order(Some("a"), ORDER)).await.0.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        fx.send(post_order(Some("b"), ORDER)).await.0.status(),
        StatusCode::CREATED
    );
    assert_eq!(fx.sim.charges(), 2);
    assert_eq!(fx.orders().await.len(), 2);
    fx.finish().await;
}

#[tokio::test]
async fn a_full_idempotency_store_refuses_new_keys_and_still_replays_the_kept_ones() {
    let fx = Fixture::start(|config| config.idempotency_keys = 2).await;
    for key in ["a", "b"] {
        assert_eq!(
            fx.send(post_order(Some(key), ORDER)).await.0.status(),
            StatusCode::CREATED
        );
    }
    // Both responses are retained: dropping one would let its retry charge again.
    let (res, body) = fx.send(post_order(Some("c"), ORDER)).await;
    assert_problem(&res, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        json(&body)["type"],
        "urn:palisade:problem:idempotency-store-unavailable"
    );
    let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (86_300..=86_400).contains(&retry_after),
        "until the oldest expires: {retry_after}"
    );
    let (replay, _) = fx.send(post_order(Some("a"), ORDER)).await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(fx.sim.charges(), 2);
    assert_eq!(fx.orders().await.len(), 2);
    fx.finish().await;
}

#[tokio::test]
async fn an_unknown_order_is_404() {
    let fx = Fixture::start(|_| {}).await;
    let (res, _) = fx
        .send(Request::get("/orders/ord_missing").body(Body::empty()).unwrap())
        .await;
    assert_problem(&res, StatusCode::NOT_FOUND);
    fx.finish().await;
}

#[tokio::test]
async fn a_missing_key_is_400_and_charges_nothing() {
    let fx = Fixture::start(|_| {}).await;
    let (res, _) = fx.send(post_order(None, ORDER)).await;
    assert_problem(&res, StatusCode::BAD_REQUEST);
    assert_eq!(fx.sim.charges(), 0);
    assert!(fx.orders().await.is_empty());
    fx.finish().await;
}

#[tokio::test]
async fn invalid_orders_are_problems_and_charge_nothing() {
    let fx = Fixture::start(|_| {}).await;
    let cases = [
        ("{not json", StatusCode::BAD_REQUEST),
        (
            r#"{"customer_id":"c","items":[{"product_id":"p","quantity":1}],"total_amount":1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"customer_id":"c","items":[{"product_id":"p","quantity":0}],"total_amount":1,"currency":"EUR"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"customer_id":"c","items":[{"product_id":"p","quantity":1}],"total_amount":-1,"currency":"EUR"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"customer_id":"c","items":[],"total_amount":1,"currency":"EUR"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"customer_id":"c","items":[{"product_id":"p","quantity":1}],"total_amount":"1","currency":"EUR"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (i, (body, status)) in cases.into_iter().enumerate() {
        let (res, _) = fx.send(post_order(Some(&format!("invalid-{i}")), body)).await;
        assert_problem(&res, status);
    }
    assert_eq!(fx.sim.charges(), 0);
    assert!(fx.orders().await.is_empty());
    fx.finish().await;
}

#[tokio::test]
async fn payments_failing_after_the_retries_is_502_and_stores_nothing() {
    let fx = Fixture::start(|_| {}).await;
    fx.fail_payments(503);
    let (res, _) = fx.send(post_order(Some("fails"), ORDER)).await;
    assert_problem(&res, StatusCode::BAD_GATEWAY);
    assert!(fx.orders().await.is_empty());

    // The 502 was not stored: once payments recover, the same key charges and creates the order.
    fx.sim.set_mode(Mode::default()).unwrap();
    let (res, _) = fx.send(post_order(Some("fails"), ORDER)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(fx.sim.charges(), 1);
    assert_eq!(fx.orders().await.len(), 1);
    fx.finish().await;
}

impl Fixture {
    async fn create_order(&self, key: &str) -> String {
        let (res, body) = self.send(post_order(Some(key), ORDER)).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        json(&body)["id"].as_str().unwrap().to_owned()
    }

    async fn status_of(&self, id: &str) -> String {
        let (res, body) = self
            .send(Request::get(format!("/orders/{id}")).body(Body::empty()).unwrap())
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        json(&body)["status"].as_str().unwrap().to_owned()
    }
}

fn signed_webhook(path: &str, scheme: Scheme, secret: &str, id: &str, body: &serde_json::Value) -> Request<Body> {
    let body = body.to_string();
    let mut headers = http::HeaderMap::new();
    let signer = Signer::builder(scheme).secret(secret).build().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    signer.sign_with(&mut headers, id, now, body.as_bytes()).unwrap();
    let mut req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    req.headers_mut().extend(headers);
    req
}

fn payment_event(kind: &str, order_id: &str) -> serde_json::Value {
    serde_json::json!({ "type": kind, "data": { "order_id": order_id } })
}

#[tokio::test]
async fn a_payments_webhook_moves_a_pending_order_once_and_a_late_event_is_ignored_and_counted() {
    let fx = Fixture::start(|_| {}).await;
    let id = fx.create_order("webhooks").await;
    let secret = fx.config.webhook_secret.clone();
    let paid = || {
        signed_webhook(
            "/webhooks/payments",
            Scheme::StandardWebhooks,
            &secret,
            "msg_1",
            &payment_event("payment.succeeded", &id),
        )
    };

    let (res, _) = fx.send(paid()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(fx.status_of(&id).await, "paid");
    let late_events_before = health(&fx).await["webhooks"]["late_events"].clone();

    // Delivered out of order after the success: acknowledged (so the sender stops
    // redelivering it), not applied, and counted.
    let failed = signed_webhook(
        "/webhooks/payments",
        Scheme::StandardWebhooks,
        &secret,
        "msg_2",
        &payment_event("payment.failed", &id),
    );
    assert_eq!(fx.send(failed).await.0.status(), StatusCode::OK);
    assert_eq!(fx.status_of(&id).await, "paid");
    assert_eq!(late_events_before, 0);
    assert_eq!(health(&fx).await["webhooks"]["late_events"], 1);
    let (_, metrics) = fx.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        metrics.contains("axum_orders_webhook_late_events_total"),
        "the late event counter is missing from:\n{metrics}"
    );

    // The redelivered first message is acknowledged by the replay store, not applied or counted again.
    let (res, _) = fx.send(paid()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(fx.status_of(&id).await, "paid");
    assert_eq!(health(&fx).await["webhooks"]["late_events"], 1);
    fx.finish().await;
}

#[tokio::test]
async fn a_tampered_or_unsigned_webhook_is_rejected() {
    let fx = Fixture::start(|_| {}).await;
    let id = fx.create_order("tampered").await;
    let mut tampered = signed_webhook(
        "/webhooks/payments",
        Scheme::StandardWebhooks,
        &fx.config.webhook_secret,
        "msg_1",
        &payment_event("payment.failed", "ord_other"),
    );
    *tampered.body_mut() = Body::from(payment_event("payment.failed", &id).to_string());
    let (res, _) = fx.send(tampered).await;
    assert_problem(&res, StatusCode::UNAUTHORIZED);

    let wrong_secret = generate_secret().unwrap();
    let forged = signed_webhook(
        "/webhooks/payments",
        Scheme::StandardWebhooks,
        &wrong_secret,
        "msg_2",
        &payment_event("payment.failed", &id),
    );
    assert_problem(&fx.send(forged).await.0, StatusCode::UNAUTHORIZED);

    let unsigned = Request::post("/webhooks/payments")
        .body(Body::from(payment_event("payment.failed", &id).to_string()))
        .unwrap();
    assert_problem(&fx.send(unsigned).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(fx.status_of(&id).await, "pending");
    fx.finish().await;
}

#[tokio::test]
async fn a_webhook_for_an_unknown_order_is_404() {
    let fx = Fixture::start(|_| {}).await;
    let req = signed_webhook(
        "/webhooks/payments",
        Scheme::StandardWebhooks,
        &fx.config.webhook_secret,
        "msg_1",
        &payment_event("payment.succeeded", "ord_missing"),
    );
    assert_problem(&fx.send(req).await.0, StatusCode::NOT_FOUND);
    fx.finish().await;
}

fn stripe_webhook(secret: &str, event_id: &str, kind: &str, order_id: &str) -> Request<Body> {
    let event = serde_json::json!({
        "id": event_id,
        "type": kind,
        "data": { "object": { "metadata": { "order_id": order_id } } },
    });
    signed_webhook("/webhooks/stripe", Scheme::Stripe, secret, event_id, &event)
}

#[tokio::test]
async fn a_stripe_webhook_sets_the_status() {
    let fx = Fixture::start(|_| {}).await;
    let id = fx.create_order("stripe").await;
    let req = stripe_webhook(&fx.config.stripe_secret, "evt_1", "payment_intent.payment_failed", &id);
    assert_eq!(fx.send(req).await.0.status(), StatusCode::NO_CONTENT);
    assert_eq!(fx.status_of(&id).await, "payment_failed");

    // Signed with the Standard Webhooks secret instead: rejected.
    let req = stripe_webhook(&fx.config.webhook_secret, "evt_2", "payment_intent.succeeded", &id);
    assert_problem(&fx.send(req).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(fx.status_of(&id).await, "payment_failed");
    fx.finish().await;
}

#[tokio::test]
async fn health_reports_the_breaker_bulkhead_outbox_and_stores() {
    let fx = Fixture::start(|config| {
        config.payments.breaker_failures = 1;
        config.payments.max_attempts = 1;
        config.payments.max_concurrent = 7;
    })
    .await;
    let report = health(&fx).await;
    assert_eq!(report["status"], "ok");
    assert_eq!(report["payments"]["breaker"]["state"], "closed");
    assert_eq!(
        report["payments"]["breaker"]["time_until_half_open_ms"],
        serde_json::Value::Null
    );
    assert_eq!(report["payments"]["bulkhead"]["limit"], 7);
    assert_eq!(report["payments"]["bulkhead"]["in_flight"], 0);
    assert_eq!(report["outbox"]["dead"], 0);
    assert!(report["outbox"]["pending"].is_u64());
    assert_eq!(
        report["outbox"]["publisher"], "connected",
        "the in-process channel is open"
    );
    assert_eq!(report["stores"]["database"]["backend"], "sqlite");
    assert_eq!(report["stores"]["idempotency"], "memory");
    // palisade's own fragment, built from the layers' handles.
    let fragment = &report["palisade"];
    assert_eq!(fragment["status"], "ok");
    assert_eq!(fragment["breakers"]["payments"]["state"], "closed");
    assert_eq!(fragment["bulkheads"]["payments"]["limit"], 7);
    assert_eq!(fragment["bulkheads"]["orders-api"]["in_flight"], 0);
    assert_eq!(fragment["outbox"]["publisher"], "connected");
    assert_eq!(fragment["outbox"]["backlog"]["dead_lettered"], 0);

    fx.fail_payments(500);
    assert_problem(
        &fx.send(post_order(Some("opens"), ORDER)).await.0,
        StatusCode::BAD_GATEWAY,
    );
    let report = health(&fx).await;
    assert_eq!(report["status"], "ok");
    assert_eq!(report["payments"]["breaker"]["state"], "open");
    assert_eq!(
        report["palisade"]["status"], "degraded",
        "an open breaker degrades the layers"
    );
    assert!(
        report["payments"]["breaker"]["time_until_half_open_ms"]
            .as_u64()
            .unwrap()
            > 0
    );
    fx.finish().await;
}

#[tokio::test]
async fn metrics_expose_the_palisade_layers() {
    let fx = Fixture::start(|_| {}).await;
    fx.create_order("metrics").await;
    let (res, body) = fx.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).unwrap();
    for metric in [
        "palisade_circuit_breaker_calls_total",
        "palisade_retry_attempts_total",
        "palisade_idempotency_requests_total",
    ] {
        assert!(text.contains(metric), "{metric} missing from:\n{text}");
    }
    fx.finish().await;
}

/// The metric names a query mentions: every `palisade_...` token.
fn palisade_metrics(query: &str) -> Vec<String> {
    query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|token| token.starts_with("palisade_"))
        .map(str::to_owned)
        .collect()
}

/// Every query of the dashboard (`expr` and template `query` fields).
fn dashboard_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query", serde_json::Value::String(query)) => out.push(query.clone()),
                    _ => dashboard_queries(value, out),
                }
            }
        }
        serde_json::Value::Array(values) => values.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

/// The Grafana dashboard and the Prometheus alert rules under
/// `observability/` query only series this service's `/metrics` exposes,
/// once it has taken an order: a renamed metric breaks this test, not a
/// dashboard in production.
#[tokio::test]
async fn dashboard_and_alerts_query_only_exposed_metrics() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../observability/");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}grafana-dashboard.json")).unwrap()).unwrap();
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 20, "{queries:?}");
    let rules = std::fs::read_to_string(format!("{root}alerts.yml")).unwrap();
    queries.extend(
        rules
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .map(str::to_owned),
    );
    let mut wanted: Vec<String> = queries.iter().flat_map(|q| palisade_metrics(q)).collect();
    wanted.sort();
    wanted.dedup();
    assert!(wanted.len() >= 15, "{wanted:?}");

    let fx = Fixture::start(|_| {}).await;
    fx.create_order("observability").await;
    // The relay publishes the order's event in the background; its lag
    // histogram appears with the first publication.
    let mut text = String::new();
    for _ in 0..50 {
        let (_, body) = fx.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
        text = String::from_utf8(body.to_vec()).unwrap();
        if text.contains("palisade_outbox_publish_lag_seconds_bucket") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exposed: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = wanted.iter().filter(|m| !exposed.contains(m.as_str())).collect();
    assert!(
        missing.is_empty(),
        "queried but not exposed: {missing:?}\nexposed: {exposed:?}"
    );
    fx.finish().await;
}

#[tokio::test]
async fn a_full_payments_bulkhead_is_503_with_retry_after() {
    let fx = std::sync::Arc::new(
        Fixture::start(|config| {
            config.payments.max_concurrent = 1;
            config.payments.attempt_timeout = Duration::from_secs(60);
            config.payments.queue_when_unavailable = false;
        })
        .await,
    );
    // Once the simulator holds the slow charge, its attempt holds the only permit.
    let slow = hold_an_order(&fx).await;
    let (res, body) = fx.send(post_order(Some("rejected"), ORDER)).await;
    assert_problem(&res, StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(json(&body)["type"], "urn:palisade:problem:bulkhead-full");
    assert_eq!(fx.sim.requests(), 1);
    let report = health(&fx).await;
    assert_eq!(
        report["payments"]["bulkhead"]["in_flight"], 1,
        "the slow charge holds the permit"
    );
    assert_eq!(report["payments"]["bulkhead"]["limit"], 1);
    slow.abort();
    assert!(slow.await.unwrap_err().is_cancelled());
    assert!(fx.orders().await.is_empty());
    std::sync::Arc::into_inner(fx).unwrap().finish().await;
}

/// Makes the payments simulator hold every charge for 60 s.
fn hold_charges(fx: &Fixture) {
    fx.sim
        .set_mode(Mode {
            latency_ms: 60_000,
            ..Mode::default()
        })
        .unwrap();
}

/// Holds one `POST /orders` in a charge the simulator never answers; returns its task.
async fn hold_an_order(fx: &std::sync::Arc<Fixture>) -> tokio::task::JoinHandle<(Response<()>, Bytes)> {
    hold_charges(fx);
    let slow = tokio::spawn({
        let fx = fx.clone();
        async move { fx.send(post_order(Some("slow"), ORDER)).await }
    });
    while fx.sim.requests() == 0 {
        tokio::task::yield_now().await;
    }
    slow
}

#[tokio::test]
async fn a_full_server_bulkhead_is_503_on_every_orders_route() {
    let fx = std::sync::Arc::new(
        Fixture::start(|config| {
            config.max_concurrent_requests = 1;
            config.payments.attempt_timeout = Duration::from_secs(60);
        })
        .await,
    );
    let slow = hold_an_order(&fx).await;
    let report = health(&fx).await;
    assert_eq!(
        report["api"]["bulkhead"],
        serde_json::json!({"in_flight": 1, "limit": 1})
    );
    for req in [
        Request::get("/orders").body(Body::empty()).unwrap(),
        Request::get("/orders/ord_1").body(Body::empty()).unwrap(),
        post_order(Some("second"), ORDER),
    ] {
        let (res, body) = fx.send(req).await;
        assert_problem(&res, StatusCode::SERVICE_UNAVAILABLE);
        assert!(res.headers().contains_key("retry-after"));
        assert_eq!(json(&body)["type"], "urn:palisade:problem:bulkhead-full");
    }
    assert_eq!(fx.sim.requests(), 1, "a rejected order charges nothing");
    // The client going away does not stop its order: the idempotency layer
    // finishes it on the runtime, so its charge is answered and stored, and
    // the order keeps its permit until then.
    slow.abort();
    assert!(slow.await.unwrap_err().is_cancelled());
    assert_eq!(
        health(&fx).await["api"]["bulkhead"]["in_flight"],
        1,
        "the order of the aborted request still runs, holding its permit"
    );
    let (res, _) = fx.send(Request::get("/orders").body(Body::empty()).unwrap()).await;
    assert_problem(&res, StatusCode::SERVICE_UNAVAILABLE);
    std::sync::Arc::into_inner(fx).unwrap().finish().await;
}

#[tokio::test]
async fn with_the_layers_off_there_is_no_server_bulkhead() {
    let fx = std::sync::Arc::new(
        Fixture::start(|config| {
            config.layers = Layers::Off;
            config.max_concurrent_requests = 1;
            config.payments.attempt_timeout = Duration::from_secs(60);
        })
        .await,
    );
    let slow = hold_an_order(&fx).await;
    assert_eq!(health(&fx).await["api"]["bulkhead"], serde_json::Value::Null);
    let (res, body) = fx.send(Request::get("/orders").body(Body::empty()).unwrap()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json(&body), serde_json::json!([]));
    slow.abort();
    assert!(slow.await.unwrap_err().is_cancelled());
    std::sync::Arc::into_inner(fx).unwrap().finish().await;
}

// The charge crosses a real socket, so this waits 100 ms of real time: paused time would
// advance while sqlx's SQLite worker thread holds the runtime idle. The simulator holds the
// charge for 60 s, so the request timeout is the only deadline that can expire.
#[tokio::test]
async fn a_request_past_its_timeout_is_504_and_stores_nothing() {
    let fx = std::sync::Arc::new(
        Fixture::start(|config| {
            config.request_timeout = Duration::from_millis(100);
            config.payments.attempt_timeout = Duration::from_secs(60);
        })
        .await,
    );
    hold_charges(&fx);
    let (res, body) = fx.send(post_order(Some("late"), ORDER)).await;
    assert_problem(&res, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json(&body)["type"], "urn:palisade:problem:deadline-exceeded");
    assert_eq!(health(&fx).await["api"]["bulkhead"]["in_flight"], 0);
    assert!(fx.orders().await.is_empty());
    std::sync::Arc::into_inner(fx).unwrap().finish().await;
}

#[tokio::test]
async fn payments_asking_for_a_wait_past_the_request_timeout_is_503_at_once() {
    // A provider answering 429 with a `Retry-After` longer than the request
    // has left: the retry does not wait past the request's deadline, and
    // the order is refused with 503 and `Retry-After` instead of cut as a 504.
    let stub = axum::Router::new().route(
        "/charges",
        axum::routing::post(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "20")], "slow down") }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stub_url: http::Uri = format!("http://{}", listener.local_addr().unwrap()).parse().unwrap();
    tokio::spawn(axum::serve(listener, stub).into_future());
    let fx = Fixture::start(|config| {
        config.payments_url = stub_url;
        config.request_timeout = Duration::from_secs(2);
        config.payments.queue_when_unavailable = false;
    })
    .await;
    let (res, _) = fx.send(post_order(Some("patience"), ORDER)).await;
    assert_problem(&res, StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    fx.finish().await;
}

#[tokio::test]
async fn the_simulator_charges_once_per_key_and_switches_modes() {
    let sim = PaymentsSim::with_seed(1);
    let router = sim.router();
    let call = |req: Request<Body>| {
        let router = router.clone();
        async move {
            let res = router.oneshot(req).await.unwrap();
            let status = res.status();
            (status, json(&res.into_body().collect().await.unwrap().to_bytes()))
        }
    };
    let charge = |key: &str| {
        Request::post("/charges")
            .header("idempotency-key", key)
            .body(Body::from("{}"))
            .unwrap()
    };
    let (status, first) = call(charge("k1")).await;
    assert_eq!(status, StatusCode::OK);
    let (_, again) = call(charge("k1")).await;
    assert_eq!(again["id"], first["id"]);
    call(charge("k2")).await;
    let (_, count) = call(Request::get("/charges").body(Body::empty()).unwrap()).await;
    assert_eq!(count, serde_json::json!({ "charges": 2, "requests": 3, "refunds": 0 }));

    let mode = r#"{"failure_rate": 1.0, "latency_ms": 0, "status": 502}"#;
    let (status, _) = call(Request::put("/mode").body(Body::from(mode)).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (_, got) = call(Request::get("/mode").body(Body::empty()).unwrap()).await;
    assert_eq!(
        got,
        serde_json::json!({ "failure_rate": 1.0, "latency_ms": 0, "status": 502, "charge_first": false })
    );
    let (status, _) = call(charge("k3")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(sim.charges(), 2);

    let (status, _) = call(
        Request::put("/mode")
            .body(Body::from(r#"{"failure_rate": 1.5}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(sim.mode().failure_rate, 1.0);
}

#[tokio::test]
async fn the_simulator_keeps_a_providers_key_and_refund_rules() {
    let sim = PaymentsSim::with_seed(1);
    let router = sim.router();
    let call = |req: Request<Body>| {
        let router = router.clone();
        async move {
            let res = router.oneshot(req).await.unwrap();
            let status = res.status();
            (status, json(&res.into_body().collect().await.unwrap().to_bytes()))
        }
    };
    let charge = |key: &str, body: &str| {
        Request::post("/charges")
            .header("idempotency-key", key)
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let refund = |order_id: &str| {
        Request::post("/refunds")
            .body(Body::from(serde_json::json!({ "order_id": order_id }).to_string()))
            .unwrap()
    };
    let (status, first) = call(charge("k1", r#"{"order_id":"ord_1","amount":100}"#)).await;
    assert_eq!(status, StatusCode::OK);
    // The same parameters, written differently: the same charge.
    let (status, again) = call(charge("k1", r#"{ "amount": 100, "order_id": "ord_1" }"#)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], first["id"]);
    // Other parameters under the same key: refused, nothing charged.
    let (status, reused) = call(charge("k1", r#"{"order_id":"ord_2","amount":100}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reused["error"]["type"], "idempotency_error");
    assert_eq!(sim.charges(), 1);

    let (status, refunded) = call(refund("ord_1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(refunded["charge"], first["id"]);
    let (status, again) = call(refund("ord_1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], refunded["id"], "a refund is made once");
    assert_eq!(call(refund("ord_never_charged")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(sim.refunds(), 1);

    // Charge first: the charge is made on arrival, whatever the caller then sees.
    sim.set_mode(Mode {
        failure_rate: 1.0,
        charge_first: true,
        ..Mode::default()
    })
    .unwrap();
    let (status, _) = call(charge("k2", r#"{"order_id":"ord_3","amount":100}"#)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sim.charges(), 2);
    sim.set_mode(Mode::default()).unwrap();
    let (status, made) = call(charge("k2", r#"{"order_id":"ord_3","amount":100}"#)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(call(refund("ord_3")).await.1["charge"], made["id"]);
    assert_eq!(sim.charges(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_key_make_one_order_and_one_charge() {
    let fx = std::sync::Arc::new(Fixture::start(|_| {}).await);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let fx = fx.clone();
            tokio::spawn(async move { fx.send(post_order(Some("concurrent"), ORDER)).await })
        })
        .collect();
    let mut created = Vec::new();
    for task in tasks {
        let (res, body) = task.await.unwrap();
        match res.status() {
            StatusCode::CREATED => created.push(body),
            StatusCode::CONFLICT => assert!(res.headers().contains_key("retry-after")),
            other => panic!("unexpected {other}"),
        }
    }
    assert!(!created.is_empty());
    assert!(created.iter().all(|body| *body == created[0]));
    assert_eq!(fx.sim.charges(), 1);
    assert_eq!(fx.orders().await.len(), 1);
    std::sync::Arc::into_inner(fx).unwrap().finish().await;
}

async fn health(fx: &Fixture) -> serde_json::Value {
    let (res, body) = fx.send(Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(res.status(), StatusCode::OK);
    json(&body)
}

#[tokio::test]
async fn health_is_503_when_the_database_is_down() {
    let fx = Fixture::start(|_| {}).await;
    fx.app.database.close().await;
    let (res, body) = fx.send(Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let report = json(&body);
    assert_eq!(report["status"], "unavailable");
    assert_eq!(report["stores"]["database"]["up"], false);
    assert_eq!(report["outbox"]["pending"], serde_json::Value::Null);
    fx.finish().await;
}

#[tokio::test]
async fn the_breaker_opens_on_failures_and_closes_after_the_simulator_recovers() {
    let fx = Fixture::start(|config| {
        config.payments.breaker_failures = 2;
        config.payments.max_attempts = 2;
        config.payments.breaker_open = Duration::from_secs(30);
        // Refused rather than queued, so only this test's probes reach payments.
        config.payments.queue_when_unavailable = false;
    })
    .await;
    let breaker = |report: &serde_json::Value| report["payments"]["breaker"].clone();
    assert_eq!(breaker(&health(&fx).await)["state"], "closed");

    // Two failed attempts in a row (one order, retried once) open it.
    fx.fail_payments(503);
    assert_problem(
        &fx.send(post_order(Some("fails"), ORDER)).await.0,
        StatusCode::BAD_GATEWAY,
    );
    let open = breaker(&health(&fx).await);
    assert_eq!(open["state"], "open");
    assert_eq!(open["consecutive_failures"], 2);
    let until_probe = open["time_until_half_open_ms"].as_u64().unwrap();
    assert!((29_000..=30_000).contains(&until_probe), "{until_probe} ms");

    // Recovered, but still open: orders are refused with Retry-After without reaching the
    // simulator, and none is stored.
    fx.sim.set_mode(Mode::default()).unwrap();
    let requests = fx.sim.requests();
    let (res, body) = fx.send(post_order(Some("refused"), ORDER)).await;
    assert_problem(&res, StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(json(&body)["status"], 503);
    assert_eq!(fx.sim.requests(), requests);
    assert_eq!(fx.sim.charges(), 0);
    assert!(fx.orders().await.is_empty());
    assert_eq!(breaker(&health(&fx).await)["state"], "open");

    // The breaker reads tokio's clock: jump it over the open duration instead
    // of waiting 30 s. Only the clock is paused, never across I/O, so no
    // socket or database wait is cut short by auto-advance.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(30)).await;
    tokio::time::resume();
    let due = breaker(&health(&fx).await);
    assert_eq!(due["state"], "open", "half-open begins with the next call");
    assert_eq!(due["time_until_half_open_ms"], 0);

    // The first call is a probe: it succeeds, two more probes are needed.
    fx.create_order("probe-1").await;
    let probing = breaker(&health(&fx).await);
    assert_eq!(probing["state"], "half_open");
    assert_eq!(probing["time_until_half_open_ms"], serde_json::Value::Null);
    fx.create_order("probe-2").await;
    assert_eq!(breaker(&health(&fx).await)["state"], "half_open");
    fx.create_order("probe-3").await;
    let closed = breaker(&health(&fx).await);
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["consecutive_failures"], 0);
    assert_eq!(fx.sim.charges(), 3);
    assert_eq!(fx.orders().await.len(), 3);
    fx.finish().await;
}

#[tokio::test]
async fn with_the_layers_on_a_replayed_order_is_answered_from_the_store() {
    let fx = Fixture::start(|config| config.layers = Layers::On).await;
    let first = fx.create_order("same-key").await;
    let (res, body) = fx.send(post_order(Some("same-key"), ORDER)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    assert_eq!(json(&body)["id"], first);
    assert_eq!(fx.sim.charges(), 1);
    assert_eq!(fx.orders().await.len(), 1);
    assert_eq!(health(&fx).await["layers"], "on");
    fx.finish().await;
}

#[tokio::test]
async fn with_the_layers_off_a_repeated_key_is_the_same_order_found_by_the_handler() {
    let mut fx = Fixture::start(|config| config.layers = Layers::Off).await;
    let first = fx.create_order("same-key").await;
    let (res, body) = fx.send(post_order(Some("same-key"), ORDER)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // No stored response is replayed, but the order's id derives from the key: the
    // handler finds the order it made and answers it, without charging again.
    assert!(res.headers().get("idempotent-replayed").is_none());
    assert_eq!(json(&body)["id"], first);
    assert_eq!(fx.sim.requests(), 1);

    // No key required: an order without one is another order.
    let (res, body) = fx.send(post_order(None, ORDER)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let second = json(&body)["id"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(fx.sim.charges(), 2);
    let mut ids: Vec<_> = fx.orders().await.iter().map(|o| o["id"].clone()).collect();
    ids.sort_by_key(ToString::to_string);
    let mut expected = [serde_json::json!(first), serde_json::json!(second)];
    expected.sort_by_key(ToString::to_string);
    assert_eq!(ids, expected);

    // No breaker or bulkhead, and the events still leave (by polling).
    let report = health(&fx).await;
    assert_eq!(report["layers"], "off");
    assert_eq!(report["payments"]["breaker"], serde_json::Value::Null);
    assert_eq!(report["payments"]["bulkhead"], serde_json::Value::Null);
    assert_eq!(report["stores"]["idempotency"], "none");
    assert_eq!(report["stores"]["webhook_replay"], "none");
    assert!(fx.app.breaker.is_none());
    let mut events = fx.app.events.take().unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.aggregate_id, first);

    // Webhooks are not verified: an unsigned one is applied.
    let unsigned = Request::post("/webhooks/payments")
        .body(Body::from(payment_event("payment.succeeded", &first).to_string()))
        .unwrap();
    assert_eq!(fx.send(unsigned).await.0.status(), StatusCode::NO_CONTENT);
    assert_eq!(fx.status_of(&first).await, "paid");
    fx.finish().await;
}

#[tokio::test]
async fn a_quoted_key_and_the_same_key_bare_are_one_order() {
    // The idempotency layer reads `"k1"` and `k1` as one key; so must the
    // handler, which makes the order's id (and its charge's key) from it.
    let fx = Fixture::start(|config| config.layers = Layers::Off).await;
    let (res, body) = fx.send(post_order(Some("\"same-key\""), ORDER)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let first = json(&body)["id"].clone();
    let (res, body) = fx.send(post_order(Some("same-key"), ORDER)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(json(&body)["id"], first);
    assert_eq!(fx.sim.charges(), 1);
    fx.finish().await;
}

#[tokio::test]
async fn a_settings_file_cannot_unprotect_post_orders() {
    // The handler makes the order's id from `Idempotency-Key`: the layer must
    // require that header on `POST /orders`, whatever the file names.
    let settings =
        Settings::from_toml("[idempotency.orders]\nheader_name = \"x-idem\"\nmethods = [\"PATCH\"]").unwrap();
    let fx = Fixture::start(|config| config.layer_settings = Some(settings)).await;
    let (res, _) = fx.send(post_order(None, ORDER)).await;
    assert_problem(&res, StatusCode::BAD_REQUEST);
    assert_eq!(fx.sim.requests(), 0);
    fx.finish().await;
}

#[tokio::test]
async fn with_the_layers_off_a_failing_payment_is_not_retried() {
    let fx = Fixture::start(|config| config.layers = Layers::Off).await;
    fx.fail_payments(503);
    assert_problem(
        &fx.send(post_order(Some("once"), ORDER)).await.0,
        StatusCode::BAD_GATEWAY,
    );
    assert_eq!(fx.sim.requests(), 1);
    assert!(fx.orders().await.is_empty());
    fx.finish().await;
}

#[tokio::test]
async fn an_unsupported_database_url_is_refused() {
    let err = app(&Config::new(
        "mysql://127.0.0.1/orders",
        "http://127.0.0.1:9".parse().unwrap(),
        generate_secret().unwrap(),
        generate_secret().unwrap(),
    ))
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"unsupported database URL "mysql://127.0.0.1/orders": use sqlite:<file> or postgres://user@host:port/database"#
    );
    assert_eq!(Backend::of("sqlite:orders.db").unwrap(), Backend::Sqlite);
    assert_eq!(Backend::of("postgres://localhost/test").unwrap(), Backend::Postgres);
    assert_eq!(Backend::of("postgresql://localhost/test").unwrap(), Backend::Postgres);
}

/// Makes every insert into `table` fail with an SQLite error whose text is `message`.
async fn fail_inserts(fx: &Fixture, table: &str, message: &str) {
    let Database::Sqlite(pool) = &fx.app.database else {
        unreachable!("the fixture runs on SQLite")
    };
    sqlx::query(&format!(
        "CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, '{message}'); END"
    ))
    .execute(pool)
    .await
    .unwrap();
}

async fn repair_inserts(fx: &Fixture, table: &str) {
    let Database::Sqlite(pool) = &fx.app.database else {
        unreachable!("the fixture runs on SQLite")
    };
    sqlx::query(&format!("DROP TRIGGER fail_{table}"))
        .execute(pool)
        .await
        .unwrap();
}

/// Makes the outbox refuse every event: the order's last write, after its charge, fails.
async fn fail_staging(fx: &Fixture, message: &str) {
    fail_inserts(fx, "palisade_outbox", message).await;
}

async fn repair_staging(fx: &Fixture) {
    repair_inserts(fx, "palisade_outbox").await;
}

#[tokio::test]
async fn a_retry_after_the_order_failed_to_store_behind_its_charge_makes_one_charge_and_one_order() {
    let fx = Fixture::start(|_| {}).await;
    fail_staging(&fx, "injected fault").await;
    let (failed, _) = fx.send(post_order(Some("store-fails"), ORDER)).await;
    assert_eq!(fx.sim.charges(), 1, "the charge was made");
    assert!(fx.orders().await.is_empty());

    repair_staging(&fx).await;
    let (res, body) = fx.send(post_order(Some("store-fails"), ORDER)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // The first answer told the client to retry: a 503, never a 502 that blames payments.
    assert_problem(&failed, StatusCode::SERVICE_UNAVAILABLE);
    assert!(failed.headers().contains_key("retry-after"));
    assert!(res.headers().get("idempotent-replayed").is_none());
    assert_eq!(json(&body)["status"], "pending");
    assert_eq!(fx.sim.requests(), 2);
    assert_eq!(fx.sim.charges(), 1, "the retry found the first charge");
    assert_eq!(fx.sim.refunds(), 0);
    let orders = fx.orders().await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0], json(&body));
    fx.finish().await;
}

// As in the 504 test above: the charge crosses a real socket, so the request timeout is real
// time (paused time would advance while sqlx's SQLite worker thread holds the runtime idle). One
// second leaves the charge time to reach the simulator on a loaded machine.
#[tokio::test]
async fn a_charge_answered_after_the_request_timeout_is_not_made_again_by_the_retry() {
    let fx = Fixture::start(|config| {
        config.request_timeout = Duration::from_secs(1);
        config.payments.attempt_timeout = Duration::from_secs(60);
    })
    .await;
    fx.sim
        .set_mode(Mode {
            latency_ms: 60_000,
            charge_first: true,
            ..Mode::default()
        })
        .unwrap();
    let (res, _) = fx.send(post_order(Some("late-answer"), ORDER)).await;
    assert_problem(&res, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(fx.sim.charges(), 1, "the simulator made the charge before going quiet");

    fx.sim.set_mode(Mode::default()).unwrap();
    let (res, body) = fx.send(post_order(Some("late-answer"), ORDER)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(fx.sim.requests(), 2);
    assert_eq!(fx.sim.charges(), 1);
    assert_eq!(fx.orders().await, [json(&body)]);
    fx.finish().await;
}

fn post_order_as(principal: &str, key: &str) -> Request<Body> {
    let mut req = post_order(Some(key), ORDER);
    req.headers_mut()
        .insert("authorization", format!("Bearer {principal}").parse().unwrap());
    req
}

#[tokio::test]
async fn two_principals_with_one_key_get_two_charges_and_two_orders() {
    let fx = Fixture::start(|_| {}).await;
    let (first, first_body) = fx.send(post_order_as("tenant-a", "shared-key")).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let (second, second_body) = fx.send(post_order_as("tenant-b", "shared-key")).await;
    assert_eq!(second.status(), StatusCode::CREATED);
    assert!(second.headers().get("idempotent-replayed").is_none());
    assert_ne!(json(&first_body)["id"], json(&second_body)["id"]);
    assert_eq!(fx.sim.charges(), 2);
    assert_eq!(fx.orders().await.len(), 2);

    // Each principal's retry is its own replay.
    let (again, again_body) = fx.send(post_order_as("tenant-a", "shared-key")).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again_body, first_body);
    assert_eq!(fx.sim.charges(), 2);
    fx.finish().await;
}

#[tokio::test]
async fn a_declined_payment_is_a_402_or_422_problem_that_is_not_retried() {
    let fx = Fixture::start(|_| {}).await;
    fx.fail_payments(402);
    let (res, body) = fx.send(post_order(Some("declined"), ORDER)).await;
    assert_problem(&res, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(json(&body)["title"], "The payment was declined");
    assert_eq!(fx.sim.requests(), 1, "a decline is not retried");

    // The decline is the answer for this key: stored by the idempotency layer, and by
    // the order's own record, so even without the layer payments are not asked again.
    let (res, _) = fx.send(post_order(Some("declined"), ORDER)).await;
    assert_problem(&res, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(fx.sim.requests(), 1);

    fx.fail_payments(400);
    let (res, _) = fx.send(post_order(Some("refused"), ORDER)).await;
    assert_problem(&res, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fx.sim.requests(), 2);
    assert_eq!(fx.sim.charges(), 0);
    assert!(fx.orders().await.is_empty());
    fx.finish().await;
}

#[tokio::test]
async fn database_error_text_never_reaches_a_response() {
    let fx = Fixture::start(|_| {}).await;
    let secret = "sqlite internals: page 7 of orders";
    // Failing the order's first write (before its charge), then its last (after it).
    fail_inserts(&fx, "orders", secret).await;
    let (res, body) = fx.send(post_order(Some("db-error-1"), ORDER)).await;
    assert_problem(&res, StatusCode::INTERNAL_SERVER_ERROR);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(!text.contains(secret), "{text}");
    repair_inserts(&fx, "orders").await;
    fail_staging(&fx, secret).await;
    let (res, body) = fx.send(post_order(Some("db-error-2"), ORDER)).await;
    assert_problem(&res, StatusCode::SERVICE_UNAVAILABLE);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(!text.contains(secret), "{text}");

    fx.app.database.close().await;
    let closed = sqlx::Error::PoolClosed.to_string();
    for req in [
        Request::get("/orders").body(Body::empty()).unwrap(),
        Request::get("/orders/ord_1").body(Body::empty()).unwrap(),
        post_order(Some("db-closed"), ORDER),
    ] {
        let (res, body) = fx.send(req).await;
        assert_problem(&res, StatusCode::INTERNAL_SERVER_ERROR);
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains(&closed), "{text}");
    }
    fx.finish().await;
}

#[tokio::test]
async fn credentials_in_urls_and_secrets_never_reach_errors_or_debug_output() {
    let config = Config::new(
        "mysql://orders:hunter2@127.0.0.1/orders",
        "http://127.0.0.1:9".parse().unwrap(),
        generate_secret().unwrap(),
        generate_secret().unwrap(),
    );
    let err = app(&config).await.unwrap_err().to_string();
    assert_eq!(
        err,
        r#"unsupported database URL "mysql://orders:***@127.0.0.1/orders": use sqlite:<file> or postgres://user@host:port/database"#
    );

    let db = std::env::temp_dir().join(format!("axum-orders-test-{}.db", uuid::Uuid::now_v7().simple()));
    let mut config = Config::new(
        format!("sqlite:{}", db.display()),
        "http://127.0.0.1:9".parse().unwrap(),
        generate_secret().unwrap(),
        generate_secret().unwrap(),
    );
    // Nothing listens on port 1.
    config.nats_url = Some("nats://user:hunter2@127.0.0.1:1".to_owned());
    let err = app(&config).await.unwrap_err().to_string();
    assert!(
        err.starts_with("cannot connect to NATS at nats://user:***@127.0.0.1:1"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let nats_url = config.nats_url.take();
    config.redis_url = Some("redis://:hunter2@127.0.0.1:1".to_owned());
    let err = app(&config).await.unwrap_err().to_string();
    assert!(
        err.starts_with("cannot connect to Redis at redis://:***@127.0.0.1:1"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    config.nats_url = nats_url;

    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(!debug.contains(&config.webhook_secret), "{debug}");
    assert!(!debug.contains(&config.stripe_secret), "{debug}");
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.clone().into_os_string();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
}

/// Moves every order's lease 16 minutes into the past, as that much time
/// passing without another attempt would (the lease is wall-clock time in the
/// database, which paused tokio time does not move).
async fn age_leases(fx: &Fixture) {
    let Database::Sqlite(pool) = &fx.app.database else {
        unreachable!("the fixture runs on SQLite")
    };
    sqlx::query("UPDATE orders SET leased_at = leased_at - 960000")
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_order_never_finished_is_cancelled_and_its_payment_refunded() {
    // The default abandon delay: 15 minutes.
    let fx = Fixture::start(|_| {}).await;
    fail_staging(&fx, "injected fault").await;
    let (res, _) = fx.send(post_order(Some("abandoned"), ORDER)).await;
    assert_problem(&res, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(fx.sim.charges(), 1);
    assert_eq!(fx.app.cancel_abandoned().await.unwrap(), 0, "the attempt is too recent");
    assert_eq!(fx.sim.refunds(), 0);

    age_leases(&fx).await;
    assert_eq!(fx.app.cancel_abandoned().await.unwrap(), 1);
    assert_eq!(fx.sim.refunds(), 1);
    assert_eq!(fx.app.cancel_abandoned().await.unwrap(), 0, "cancelled once");

    // A retry after that learns the order is gone; nothing is charged again.
    repair_staging(&fx).await;
    let (res, body) = fx.send(post_order(Some("abandoned"), ORDER)).await;
    assert_problem(&res, StatusCode::CONFLICT);
    assert_eq!(json(&body)["title"], "The order was cancelled");
    assert_eq!(fx.sim.requests(), 1);
    assert_eq!(fx.sim.charges(), 1);
    assert_eq!(fx.sim.refunds(), 1);
    assert!(fx.orders().await.is_empty());

    // An order whose charge never reached payments is cancelled without a refund.
    fx.fail_payments(503);
    let (res, _) = fx.send(post_order(Some("never-charged"), ORDER)).await;
    assert_problem(&res, StatusCode::BAD_GATEWAY);
    age_leases(&fx).await;
    assert_eq!(fx.app.cancel_abandoned().await.unwrap(), 1);
    assert_eq!(fx.sim.refunds(), 1);
    fx.finish().await;
}

#[tokio::test]
async fn a_retry_renews_the_lease_that_keeps_an_order_from_being_cancelled() {
    let fx = Fixture::start(|config| config.payments.breaker_failures = 100).await;
    fx.fail_payments(503);
    let (res, _) = fx.send(post_order(Some("renewed"), ORDER)).await;
    assert_problem(&res, StatusCode::BAD_GATEWAY);
    age_leases(&fx).await;
    // Another attempt of the same order takes the lease again.
    let (res, _) = fx.send(post_order(Some("renewed"), ORDER)).await;
    assert_problem(&res, StatusCode::BAD_GATEWAY);
    assert_eq!(fx.app.cancel_abandoned().await.unwrap(), 0);

    // One asking for another order under the key does not.
    age_leases(&fx).await;
    let (res, _) = fx.send(post_order(Some("renewed"), &ORDER.replace("5999", "1"))).await;
    assert_problem(&res, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fx.app.cancel_abandoned().await.unwrap(), 1);
    fx.finish().await;
}

#[test]
fn durations_are_read_with_their_unit() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
    assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    for bad in ["", "10", "s", "-1s", "0s", "0ms", "10 parsecs"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
    }
}

#[tokio::test]
async fn an_abandon_delay_within_the_request_timeout_is_refused() {
    let mut config = Config::new(
        "sqlite::memory:",
        "http://127.0.0.1:9".parse().unwrap(),
        generate_secret().unwrap(),
        generate_secret().unwrap(),
    );
    config.abandon_after = config.request_timeout;
    let err = app(&config).await.unwrap_err().to_string();
    assert!(
        err.starts_with("abandon_after (--abandon-after) must exceed request_timeout"),
        "{err}"
    );
}

#[test]
fn the_shipped_settings_file_is_the_built_in_settings() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("palisade.toml");
    let settings = Settings::load(Some(&file), "AXUM_ORDERS_TEST_UNSET").unwrap();
    // Every setting of the payments layers, not only those the file names.
    let (breaker, retry, bulkhead) = axum_orders::built_in_payments_layers(&PaymentsConfig::default());
    assert_eq!(
        format!("{:?}", settings.circuit_breaker(PAYMENTS)),
        format!("{breaker:?}")
    );
    assert_eq!(format!("{:?}", settings.http_retry(PAYMENTS)), format!("{retry:?}"));
    assert_eq!(format!("{:?}", settings.bulkhead(PAYMENTS)), format!("{bulkhead:?}"));
    // The file names the server bulkhead as the code does.
    let api = format!("{:?}", settings.bulkhead(API));
    let built_in = Config::new("", "http://127.0.0.1:9".parse().unwrap(), String::new(), String::new());
    assert!(
        api.contains(&format!("limit: Fixed({})", built_in.max_concurrent_requests)),
        "{api}"
    );
}

#[tokio::test]
async fn a_settings_file_configures_the_layers_of_the_service() {
    let settings = Settings::from_toml(
        r#"
        [idempotency.orders]
        max_request_body = 16

        [bulkhead.payments]
        max_concurrent = 1

        [circuit_breaker.payments]
        failure_rate = "off"
        consecutive_failures = 1
        "#,
    )
    .unwrap();
    let fx = Fixture::start(|config| config.layer_settings = Some(settings)).await;
    // The Idempotency-Key layer reads at most 16 bytes of a request body.
    let (res, _) = fx.send(post_order(Some("big"), ORDER)).await;
    assert_problem(&res, StatusCode::PAYLOAD_TOO_LARGE);
    let report = health(&fx).await;
    assert_eq!(report["payments"]["bulkhead"]["limit"], 1);
    fx.finish().await;
}

/// Opens the payments breaker: one order whose two attempts fail (502), with
/// `breaker_failures = 2` and `max_attempts = 2`; payments then recover.
async fn open_the_breaker(fx: &Fixture) {
    fx.fail_payments(503);
    assert_problem(
        &fx.send(post_order(Some("opens-the-breaker"), ORDER)).await.0,
        StatusCode::BAD_GATEWAY,
    );
    assert_eq!(health(fx).await["payments"]["breaker"]["state"], "open");
    fx.sim.set_mode(Mode::default()).unwrap();
}

/// Polls order `id` until it is `pending`, for at most 30 s: the breaker
/// half-opens after its open duration and the relay retries on its own
/// backoff, both in real time. (Jumping tokio's clock instead would expire
/// the relay's claim on the command while the database still holds it.)
async fn wait_until_charged(fx: &Fixture, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = fx.status_of(id).await;
        if now == "pending" {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "order {id} is still {now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A breaker that opens after two failed attempts in a row (one order with
/// two attempts) and probes again after 2 s.
fn breaker_opens_fast(config: &mut Config) {
    config.payments.breaker_failures = 2;
    config.payments.max_attempts = 2;
    config.payments.breaker_open = Duration::from_secs(2);
}

#[tokio::test]
async fn with_payments_unavailable_an_order_is_queued_and_charged_once_when_the_breaker_closes() {
    let mut fx = Fixture::start(breaker_opens_fast).await;
    open_the_breaker(&fx).await;
    let requests = fx.sim.requests();

    // The breaker is open: the order is stored `payment_queued` and answered 202
    // with where to poll it; payments were not called.
    let post = || {
        let mut req = post_order(Some("queued"), ORDER);
        req.headers_mut()
            .insert("x-correlation-id", "corr-queued".parse().unwrap());
        req
    };
    let (res, body) = fx.send(post()).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let order = json(&body);
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(res.headers()["location"], format!("/orders/{id}"));
    assert_eq!(order["status"], "payment_queued");
    assert_eq!(order["total_amount"], 5999);
    assert_eq!(fx.sim.requests(), requests);
    assert_eq!(fx.status_of(&id).await, "payment_queued");

    // A retry with the same key is answered the same, and queues nothing more.
    let (again, again_body) = fx.send(post()).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again_body, body);

    // The compensating step never refunds a queued order, however old (the
    // order that opened the breaker is abandoned too, but its refund meets the
    // open breaker and waits for the next run).
    age_leases(&fx).await;
    assert_eq!(fx.app.cancel_abandoned().await.unwrap(), 0);
    assert_eq!(fx.status_of(&id).await, "payment_queued");
    // The relay's deliveries meanwhile meet the open breaker and never reach payments.
    assert_eq!(fx.sim.requests(), requests);
    assert_eq!(fx.sim.charges(), 0);

    // Past the open duration, the relay's next delivery is the breaker's probe:
    // the order is charged under its id and moves to `pending` with its event.
    wait_until_charged(&fx, &id).await;
    assert_eq!(fx.sim.charges(), 1);
    let requests = fx.sim.requests();
    let mut events = fx.app.events.take().unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.event_type, "OrderCreated");
    assert_eq!(event.aggregate_id, id);
    assert_eq!(event.payload["status"], "pending");
    assert_eq!(event.metadata.correlation_id.as_deref(), Some("corr-queued"));
    let cause = event.metadata.causation_id.as_deref().unwrap();
    assert!(
        uuid::Uuid::parse_str(cause).is_ok(),
        "caused by the queued command, not {cause:?}"
    );

    // The payment webhook settles it, as for a direct charge.
    let paid = signed_webhook(
        "/webhooks/payments",
        Scheme::StandardWebhooks,
        &fx.config.webhook_secret,
        "msg_queued",
        &payment_event("payment.succeeded", &id),
    );
    assert_eq!(fx.send(paid).await.0.status(), StatusCode::NO_CONTENT);
    assert_eq!(fx.status_of(&id).await, "paid");

    // Nothing more is charged: not by the client's retry, not by the compensation,
    // which only cancels the order that opened the breaker (never charged: no refund).
    let (res, _) = fx.send(post()).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    age_leases(&fx).await;
    assert_eq!(fx.app.cancel_abandoned().await.unwrap(), 1);
    assert_eq!(fx.status_of(&id).await, "paid");
    assert_eq!(fx.sim.charges(), 1);
    assert_eq!(fx.sim.refunds(), 0);
    assert_eq!(fx.sim.requests(), requests);
    fx.finish().await;
}

#[tokio::test]
async fn a_queued_charge_whose_answer_is_lost_is_charged_once_under_the_same_key() {
    let fx = Fixture::start(|config| {
        breaker_opens_fast(config);
        // One attempt per delivery, cut off well before the simulator answers.
        config.payments.max_attempts = 1;
        config.payments.attempt_timeout = Duration::from_millis(200);
    })
    .await;
    // max_attempts = 1: two failing orders open the breaker.
    fx.fail_payments(503);
    for key in ["fails-1", "fails-2"] {
        assert_problem(&fx.send(post_order(Some(key), ORDER)).await.0, StatusCode::BAD_GATEWAY);
    }
    assert_eq!(health(&fx).await["payments"]["breaker"]["state"], "open");
    let (res, body) = fx.send(post_order(Some("lost-answer"), ORDER)).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let id = json(&body)["id"].as_str().unwrap().to_owned();

    // Payments take the charge on arrival and answer too late: the relay's
    // delivery times out, though the charge was made.
    fx.sim
        .set_mode(Mode {
            latency_ms: 5_000,
            charge_first: true,
            ..Mode::default()
        })
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fx.sim.charges() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queued charge never reached payments"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fx.status_of(&id).await, "payment_queued", "the answer was lost");

    // Payments answer again: the relay's next delivery, under the same key,
    // is answered with the first charge. One charge, one order.
    fx.sim.set_mode(Mode::default()).unwrap();
    wait_until_charged(&fx, &id).await;
    assert_eq!(fx.sim.charges(), 1);
    assert!(fx.sim.requests() >= 2, "delivered again after the lost answer");
    fx.finish().await;
}

#[tokio::test]
async fn with_queueing_off_an_open_breaker_refuses_the_order() {
    let fx = Fixture::start(|config| {
        breaker_opens_fast(config);
        config.payments.queue_when_unavailable = false;
    })
    .await;
    open_the_breaker(&fx).await;
    let (res, _) = fx.send(post_order(Some("refused"), ORDER)).await;
    assert_problem(&res, StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    assert!(fx.orders().await.is_empty());
    fx.finish().await;
}
