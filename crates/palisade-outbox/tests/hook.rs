//! The publish hook: context in the request, relay woken once the response exists.

use std::convert::Infallible;

use futures_util::FutureExt;
use http::{Method, Request, Response};
use palisade_outbox::{OutboxContext, PublishHookLayer, Wakeup};
use tokio::sync::oneshot;
use tower::{Layer, Service, ServiceExt, service_fn};

fn woken(wakeup: &Wakeup) -> bool {
    wakeup.remote_wanted().now_or_never().is_some()
}

#[tokio::test]
async fn handler_sees_the_context_and_the_relay_wakes_after_the_response() {
    let wakeup = Wakeup::new();
    let (release, released) = oneshot::channel::<()>();
    let released = released.shared();
    let handler = service_fn(move |req: Request<()>| {
        let released = released.clone();
        async move {
            let ctx = req
                .extensions()
                .get::<OutboxContext>()
                .cloned()
                .expect("context in extensions");
            let _ = released.await;
            Ok::<_, Infallible>(Response::new(ctx.correlation_id().to_owned()))
        }
    });
    let mut svc = PublishHookLayer::new(wakeup.clone()).source("orders").layer(handler);
    let request = Request::post("/orders")
        .header("x-correlation-id", "corr-7")
        .body(())
        .unwrap();
    let mut response = std::pin::pin!(svc.ready().await.unwrap().call(request));
    assert!(response.as_mut().now_or_never().is_none());
    assert!(!woken(&wakeup), "no wake-up before the response");
    release.send(()).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.body(), "corr-7");
    assert!(woken(&wakeup), "woken once the response exists");
}

#[tokio::test]
async fn errors_pass_through_and_still_wake() {
    let wakeup = Wakeup::new();
    let handler = service_fn(|_: Request<()>| async { Err::<Response<()>, _>(std::io::Error::other("boom")) });
    let mut svc = PublishHookLayer::new(wakeup.clone()).layer(handler);
    let error = svc.ready().await.unwrap().call(post()).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::Other);
    assert_eq!(error.to_string(), "boom");
    assert!(woken(&wakeup));
}

#[tokio::test]
async fn a_dropped_request_wakes_nothing() {
    let wakeup = Wakeup::new();
    let handler = service_fn(|_: Request<()>| std::future::pending::<Result<Response<()>, Infallible>>());
    let mut svc = PublishHookLayer::new(wakeup.clone()).layer(handler);
    let mut response = svc.ready().await.unwrap().call(post());
    assert!((&mut response).now_or_never().is_none());
    drop(response);
    assert!(!woken(&wakeup));
}

#[tokio::test]
async fn safe_methods_wake_nothing_unless_asked_to() {
    let handler = service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
    let wakeup = Wakeup::new();
    let mut svc = PublishHookLayer::new(wakeup.clone()).layer(handler);
    for method in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
        let request = Request::builder().method(method.clone()).body(()).unwrap();
        svc.ready().await.unwrap().call(request).await.unwrap();
        assert!(!woken(&wakeup), "{method} wakes nothing");
    }
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let request = Request::builder().method(method.clone()).body(()).unwrap();
        svc.ready().await.unwrap().call(request).await.unwrap();
        assert!(woken(&wakeup), "{method} wakes the relay");
    }

    let wakeup = Wakeup::new();
    let mut svc = PublishHookLayer::new(wakeup.clone())
        .wake_on_safe_methods(true)
        .layer(handler);
    svc.ready().await.unwrap().call(Request::new(())).await.unwrap();
    assert!(woken(&wakeup), "GET wakes the relay when asked to");
}

fn post() -> Request<()> {
    Request::post("/").body(()).unwrap()
}

#[tokio::test]
async fn readiness_is_the_inner_services() {
    let layer = PublishHookLayer::new(Wakeup::new());
    assert!(
        layer.layer(Gate(false)).ready().now_or_never().is_none(),
        "pending inner readiness is passed on"
    );
    assert!(layer.layer(Gate(true)).ready().now_or_never().is_some());
}

/// A service that is ready only when its flag says so.
#[derive(Clone)]
struct Gate(bool);

impl Service<Request<()>> for Gate {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        if self.0 {
            std::task::Poll::Ready(Ok(()))
        } else {
            std::task::Poll::Pending
        }
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        std::future::ready(Ok(Response::new(())))
    }
}
