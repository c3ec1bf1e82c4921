//! Through axum: an overloaded route sheds load with 503 problem responses
//! while a route behind its own bulkhead keeps answering.
#![cfg(not(loom))]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use palisade_bulkhead::BulkheadLayer;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

fn get_request(path: &str) -> Request<Body> {
    Request::builder().uri(path).body(Body::empty()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_overloaded_route_answers_503_while_another_stays_fast() {
    let stuck = Arc::new(Semaphore::new(0));
    let slow_bulkhead = BulkheadLayer::builder("reports")
        .max_concurrent(2)
        .retry_after(Duration::from_millis(1500))
        .build()
        .unwrap();
    let fast_bulkhead = BulkheadLayer::builder("health").max_concurrent(2).build().unwrap();
    let slow_handle = slow_bulkhead.handle();
    let release = Arc::clone(&stuck);
    let app = Router::new()
        .route(
            "/reports",
            get(move || {
                let stuck = Arc::clone(&stuck);
                async move {
                    stuck.acquire().await.unwrap().forget();
                    "report"
                }
            })
            .layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(palisade_core::problem::handle_error))
                    .layer(slow_bulkhead),
            ),
        )
        .route(
            "/health",
            get(|| async { "ok" }).layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(palisade_core::problem::handle_error))
                    .layer(fast_bulkhead),
            ),
        );

    let busy: Vec<_> = (0..2)
        .map(|_| tokio::spawn(app.clone().oneshot(get_request("/reports"))))
        .collect();
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(slow_handle.snapshot().in_flight, 2);

    let started = Instant::now();
    let rejected = app.clone().oneshot(get_request("/reports")).await.unwrap();
    assert_eq!(rejected.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rejected.headers()["retry-after"], "2");
    assert_eq!(rejected.headers()["content-type"], "application/problem+json");
    let body = rejected.into_body().collect().await.unwrap().to_bytes();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["type"], "urn:palisade:problem:bulkhead-full");
    assert_eq!(problem["status"], 503);

    for _ in 0..5 {
        let ok = app.clone().oneshot(get_request("/health")).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.into_body().collect().await.unwrap().to_bytes(), "ok");
    }
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "the rejection and the other route took no time"
    );

    release.add_permits(2);
    for call in busy {
        assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(slow_handle.snapshot().in_flight, 0);
}
