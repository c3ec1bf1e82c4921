//! The breaker in HTTP stacks: an axum route answering 503 + Retry-After
//! problem+json while open, and around a hyper-util client calling a local server.

#![cfg(not(loom))]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade_circuit_breaker::{CircuitBreakerBuilder, State};
use palisade_core::CircuitOpen;
use palisade_core::HttpClassifier;
use tower::{ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn axum_route_answers_503_with_retry_after_while_open() {
    let failing = Arc::new(AtomicBool::new(true));
    let breaker = CircuitBreakerBuilder::consecutive("orders-db")
        .consecutive_failures(2)
        .classifier(HttpClassifier)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let handler_failing = failing.clone();
    let app = Router::new()
        .route(
            "/orders",
            get(move || {
                let failing = handler_failing.clone();
                async move {
                    if failing.load(Ordering::SeqCst) {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(palisade_core::problem::handle_error))
                .layer(breaker),
        );
    let get_orders = || Request::get("/orders").body(axum::body::Body::empty()).unwrap();

    for _ in 0..2 {
        assert_eq!(app.clone().oneshot(get_orders()).await.unwrap().status(), 500);
    }
    assert_eq!(handle.state(), State::Open);

    tokio::time::advance(Duration::from_millis(12_500)).await;
    let res = app.clone().oneshot(get_orders()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "18", "17.5 s left, rounded up");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["status"], 503);
    assert!(
        !body.to_string().contains("orders-db"),
        "the breaker's name stays internal"
    );

    // Healthy again: after the open duration, three good probes close it.
    failing.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_millis(17_500)).await;
    for _ in 0..3 {
        assert_eq!(app.clone().oneshot(get_orders()).await.unwrap().status(), 200);
    }
    assert_eq!(handle.state(), State::Closed);
}

/// A local server: `/fail` answers 503, anything else 200.
async fn server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let status = if req.uri().path() == "/fail" { 503 } else { 200 };
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::new()))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn around_an_http_client() {
    let addr = server().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let breaker = CircuitBreakerBuilder::consecutive("upstream")
        .consecutive_failures(2)
        .classifier(HttpClassifier)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let svc = ServiceBuilder::new().layer(breaker).service(client);
    let get = |uri: String| Request::get(uri).body(Empty::<Bytes>::new()).unwrap();

    assert_eq!(
        svc.clone()
            .oneshot(get(format!("http://{addr}/ok")))
            .await
            .unwrap()
            .status(),
        200
    );
    for _ in 0..2 {
        let res = svc.clone().oneshot(get(format!("http://{addr}/fail"))).await.unwrap();
        assert_eq!(res.status(), 503, "a 503 response is passed through, and counted");
    }
    let err = svc.clone().oneshot(get(format!("http://{addr}/ok"))).await.unwrap_err();
    assert_eq!(err.downcast_ref::<CircuitOpen>().unwrap().name(), "upstream");

    // Transport errors count too, and keep their source.
    handle.reset();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    for _ in 0..2 {
        let err = svc.clone().oneshot(get(format!("http://{closed}/"))).await.unwrap_err();
        assert!(err.is::<hyper_util::client::legacy::Error>());
        assert!(palisade_core::error::is_connect_error(&*err), "{err:?}");
    }
    assert_eq!(handle.state(), State::Open);
}
