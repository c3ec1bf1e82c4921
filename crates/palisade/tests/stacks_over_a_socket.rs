//! The one-call client stack over reqwest talking to the one-call server
//! stack on axum, over a real socket on 127.0.0.1. Real sockets run on real
//! time: the test asserts what was sent and answered, never how fast.
#![cfg(all(feature = "full", feature = "reqwest"))]

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use palisade::reqwest::ReqwestService;
use palisade::stack;
use tower::{Layer, ServiceExt};

#[tokio::test]
async fn a_post_is_keyed_retried_once_served_and_replayed_by_key() {
    // The handler fails its first call with 503, then creates.
    let keys: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = keys.clone();
    let create = move |headers: HeaderMap| {
        let seen = seen.clone();
        async move {
            let mut seen = seen.lock().unwrap();
            seen.push(headers["idempotency-key"].to_str().unwrap().to_owned());
            if seen.len() == 1 {
                (StatusCode::SERVICE_UNAVAILABLE, "try again")
            } else {
                (StatusCode::CREATED, "order 1")
            }
        }
    };
    let server = stack::server("orders").build().unwrap();
    let server_health = server.handle();
    let app = Router::new().route("/orders", post(create)).layer(server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = stack::client("orders-client").build().unwrap();
    let client_health = client.handle();
    let client = client.layer(ReqwestService::new(reqwest::Client::new()));
    let order = http::Request::post(format!("http://{addr}/orders"))
        .body(String::from(r#"{"sku":1}"#))
        .unwrap();
    let res = client.clone().oneshot(order).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    // Two attempts reached the handler, with one key added by the client.
    let sent = keys.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0], sent[1]);

    // The same key again is answered by the server's idempotency layer.
    let again = http::Request::post(format!("http://{addr}/orders"))
        .header("idempotency-key", &sent[0])
        .body(String::from(r#"{"sku":1}"#))
        .unwrap();
    let replay = client.oneshot(again).await.unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(keys.lock().unwrap().len(), 2);

    let client_report = client_health.snapshot();
    assert_eq!(client_report["layers"][2]["calls_in_window"], 3, "{client_report}");
    assert_eq!(server_health.layers(), ["idempotency", "bulkhead", "timeout"]);
    serving.abort();
}
