//! A client stack (retry around hyper's client) against a flaky local hyper
//! server and a closed port.
#![cfg(not(loom))]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade_core::BoxError;
use palisade_retry::{HttpRetryLayer, ReplayBody, X_RETRY_ATTEMPT};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};

/// Serves: the first request 503 with `Retry-After: 1`, the second 503
/// without, then 200 echoing the body and the attempt header.
async fn flaky_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let attempt = req.headers().get("x-retry-attempt").cloned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut res = Response::builder();
                        res = match n {
                            0 => res.status(503).header("retry-after", "1"),
                            1 => res.status(503),
                            _ => res.status(200),
                        };
                        if let Some(attempt) = attempt {
                            res = res.header("x-seen-attempt", attempt);
                        }
                        Ok::<_, Infallible>(res.body(Full::new(body)).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, requests)
}

type HttpClient = Client<HttpConnector, ReplayBody<Full<Bytes>>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

#[tokio::test(start_paused = true)]
async fn retries_a_flaky_server_and_replays_the_body() {
    let (addr, requests) = flaky_server().await;
    let retry = HttpRetryLayer::builder("retry")
        .max_attempts(3)
        .attempt_header(X_RETRY_ATTEMPT)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry)
        .map_err(BoxError::from)
        .service(client());
    let req = Request::put(format!("http://{addr}/orders/42"))
        .body(Full::new(Bytes::from_static(b"qty=3")))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-seen-attempt"], "3");
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "qty=3");
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_post_without_a_key_reaches_the_server_once() {
    let (addr, requests) = flaky_server().await;
    let retry = HttpRetryLayer::builder("retry").build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry)
        .map_err(BoxError::from)
        .service(client());
    let req = Request::post(format!("http://{addr}/orders"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    assert_eq!(
        svc.oneshot(req).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn connection_refused_is_retried_then_returned_with_its_source() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    let retry = HttpRetryLayer::builder("retry").max_attempts(3).build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry)
        .map_request(move |req: Request<ReplayBody<Full<Bytes>>>| {
            counter.fetch_add(1, Ordering::SeqCst);
            req
        })
        .map_err(BoxError::from)
        .service(client());
    let err = svc
        .oneshot(Request::get(format!("http://{closed}/")).body(Full::default()).unwrap())
        .await
        .unwrap_err();
    assert!(palisade_core::error::is_connect_error(&*err), "{err:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}
