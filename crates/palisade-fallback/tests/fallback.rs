//! The fallback layer: what reaches the fallback, what it receives, and
//! what the caller gets when it declines.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use palisade_bulkhead::BulkheadLayer;
use palisade_circuit_breaker::CircuitBreakerLayer;
use palisade_core::deadline::DeadlineExceeded;
use palisade_core::error::find;
use palisade_core::{BoxError, BulkheadFull, BulkheadTimeout, CircuitOpen};
use palisade_fallback::{ConfigError, Failure, FallbackLayer, Reason};
use tower::{Layer, Service, ServiceExt, service_fn};

type Res = Response<String>;

/// A fallback that answers 200 "fallback: <reason> <method> <path> <x-tenant>",
/// or declines when the request carries `x-decline`.
fn fallback(
    calls: Arc<AtomicUsize>,
) -> impl Service<Failure<Res>, Response = Res, Error = Failure<Res>, Future: Send> + Clone {
    service_fn(move |failure: Failure<Res>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let parts = failure.parts();
            if parts.headers.contains_key("x-decline") {
                return Err(failure);
            }
            let tenant = parts.headers["x-tenant"].to_str().unwrap().to_owned();
            let body = format!(
                "fallback: {:?} {} {} {tenant}",
                failure.reason(),
                parts.method,
                parts.uri.path()
            );
            Ok(Response::new(body))
        }
    })
}

fn request() -> Request<()> {
    Request::post("/payments").header("x-tenant", "acme").body(()).unwrap()
}

fn layer(
    calls: Arc<AtomicUsize>,
) -> FallbackLayer<impl Service<Failure<Res>, Response = Res, Error = Failure<Res>, Future: Send> + Clone> {
    FallbackLayer::builder("payments")
        .fallback(fallback(calls))
        .build()
        .unwrap()
}

fn answering(status: u16) -> impl Service<Request<()>, Response = Res, Error = BoxError, Future: Send> + Clone {
    service_fn(move |_req: Request<()>| async move {
        Ok::<_, BoxError>(
            Response::builder()
                .status(status)
                .body(format!("inner {status}"))
                .unwrap(),
        )
    })
}

fn failing(
    error: fn() -> BoxError,
) -> impl Service<Request<()>, Response = Res, Error = BoxError, Future: Send> + Clone {
    service_fn(move |_req: Request<()>| async move { Err::<Res, BoxError>(error()) })
}

#[tokio::test]
async fn failed_responses_go_to_the_fallback_and_good_ones_do_not() {
    let calls = Arc::new(AtomicUsize::new(0));
    for status in [200u16, 201, 404, 422] {
        let res = layer(calls.clone())
            .layer(answering(status))
            .oneshot(request())
            .await
            .unwrap();
        assert_eq!(
            (res.status().as_u16(), res.body().as_str()),
            (status, format!("inner {status}").as_str())
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    for status in [500u16, 502, 503, 504, 429, 408] {
        let res = layer(calls.clone())
            .layer(answering(status))
            .oneshot(request())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.body(), "fallback: Failure POST /payments acme");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    // A transport error is a failure too.
    let res = layer(calls.clone())
        .layer(failing(|| "connection reset".into()))
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(res.body(), "fallback: Failure POST /payments acme");
}

#[tokio::test]
async fn local_rejections_go_to_the_fallback_with_their_reason() {
    type MakeError = fn() -> BoxError;
    let cases: [(MakeError, &str); 4] = [
        (
            || CircuitOpen::new("payments", Duration::from_secs(5)).into(),
            "CircuitOpen",
        ),
        (
            || BulkheadFull::new("payments", Duration::from_secs(1)).into(),
            "BulkheadFull",
        ),
        (
            || BulkheadTimeout::new("payments", Duration::from_millis(10), Duration::from_secs(1)).into(),
            "BulkheadTimeout",
        ),
        (|| DeadlineExceeded.into(), "DeadlineExceeded"),
    ];
    for (error, reason) in cases {
        let calls = Arc::new(AtomicUsize::new(0));
        let res = layer(calls.clone())
            .layer(failing(error))
            .oneshot(request())
            .await
            .unwrap();
        assert_eq!(res.body(), &format!("fallback: {reason} POST /payments acme"));
    }
}

#[tokio::test]
async fn a_real_open_breaker_and_a_full_bulkhead_reach_the_fallback() {
    let calls = Arc::new(AtomicUsize::new(0));
    let breaker = CircuitBreakerLayer::builder("payments").build().unwrap();
    breaker.handle().force_open();
    let svc = layer(calls.clone()).layer(breaker.layer(answering(200)));
    let res = svc.oneshot(request()).await.unwrap();
    assert_eq!(res.body(), "fallback: CircuitOpen POST /payments acme");

    let bulkhead = BulkheadLayer::builder("payments").max_concurrent(1).build().unwrap();
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    let held = Arc::new(std::sync::Mutex::new(Some(held)));
    let slow = service_fn(move |_req: Request<()>| {
        let held = held.lock().unwrap().take();
        async move {
            if let Some(held) = held {
                let _ = held.await;
            }
            Ok::<_, BoxError>(Response::new("inner".to_owned()))
        }
    });
    let svc = layer(calls.clone()).layer(bulkhead.layer(slow));
    let first = tokio::spawn(svc.clone().oneshot(request()));
    tokio::task::yield_now().await;
    let res = svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(res.body(), "fallback: BulkheadFull POST /payments acme");
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap().body(), "inner");
}

#[tokio::test]
async fn a_declining_fallback_gives_back_the_original_result() {
    let calls = Arc::new(AtomicUsize::new(0));
    let declined = || Request::post("/payments").header("x-decline", "1").body(()).unwrap();
    let err = layer(calls.clone())
        .layer(failing(|| CircuitOpen::new("payments", Duration::from_secs(5)).into()))
        .oneshot(declined())
        .await
        .unwrap_err();
    let open = find::<CircuitOpen>(&*err).expect("the rejection is still there");
    assert_eq!((open.name(), open.retry_after()), ("payments", Duration::from_secs(5)));
    let res = layer(calls.clone())
        .layer(answering(503))
        .oneshot(declined())
        .await
        .unwrap();
    assert_eq!(
        (res.status(), res.body().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "inner 503")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_never_reaches_the_fallback() {
    let calls = Arc::new(AtomicUsize::new(0));
    let hanging = service_fn(|_req: Request<()>| std::future::pending::<Result<Res, BoxError>>());
    let svc = layer(calls.clone()).layer(hanging);
    let result = tokio::time::timeout(Duration::from_secs(1), svc.oneshot(request())).await;
    assert!(result.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn build_refuses_a_layer_without_fallback() {
    assert_eq!(
        FallbackLayer::builder("x").build().unwrap_err(),
        ConfigError::NoFallback
    );
}

#[test]
fn reasons_are_labelled() {
    assert_eq!(Reason::CircuitOpen.as_str(), "circuit_open");
    assert_eq!(Reason::DeadlineExceeded.as_str(), "deadline_exceeded");
}
