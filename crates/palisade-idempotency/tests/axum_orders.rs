//! Through axum: an order-creating handler behind the layer charges a
//! customer once, however often a client retries a request whose response
//! was lost on the way back.
#![cfg(not(loom))]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade_idempotency::IdempotencyLayer;
use palisade_idempotency::client::SetIdempotencyKeyLayer;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

#[derive(Clone, Default)]
struct Payments {
    charges: Arc<AtomicUsize>,
}

async fn create_order(State(payments): State<Payments>, body: Bytes) -> (StatusCode, String) {
    let charge = payments.charges.fetch_add(1, Ordering::SeqCst) + 1;
    (
        StatusCode::CREATED,
        format!("{{\"order\":{charge},\"request\":{}}}", String::from_utf8_lossy(&body)),
    )
}

/// Retries any error up to `left` more times, resending the same request.
#[derive(Clone)]
struct RetryErrors {
    left: usize,
}

impl<Res> tower::retry::Policy<Request<Full<Bytes>>, Res, BoxError> for RetryErrors {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut Request<Full<Bytes>>, result: &mut Result<Res, BoxError>) -> Option<Ready<()>> {
        (result.is_err() && self.left > 0).then(|| {
            self.left -= 1;
            ready(())
        })
    }

    fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut clone = Request::new(req.body().clone());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.headers_mut() = req.headers().clone();
        Some(clone)
    }
}

/// A network that loses the first `losses` responses after the server
/// produced them, as a client timeout does.
#[derive(Clone)]
struct LossyNetwork<S> {
    server: S,
    losses: Arc<AtomicUsize>,
}

impl<S> Service<Request<Full<Bytes>>> for LossyNetwork<S>
where
    S: Service<Request<axum::body::Body>, Response = Response<axum::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = (StatusCode, http::HeaderMap, Bytes);
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        let server = self.server.clone();
        let losses = Arc::clone(&self.losses);
        Box::pin(async move {
            let Ok(res) = server.oneshot(req.map(axum::body::Body::new)).await;
            let (parts, body) = res.into_parts();
            let body = body.collect().await?.to_bytes();
            if losses
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err("response lost: timed out".into());
            }
            Ok((parts.status, parts.headers, body))
        })
    }
}

#[tokio::test]
async fn an_order_is_charged_once_under_client_retries() {
    let payments = Payments::default();
    let app: Router = Router::new()
        .route("/orders", post(create_order))
        .with_state(payments.clone())
        .layer(
            IdempotencyLayer::builder("idempotency")
                .require_key(true)
                .build()
                .unwrap(),
        );

    let losses = Arc::new(AtomicUsize::new(2));
    let mut client = ServiceBuilder::new()
        // Outside the retry layer: one key per logical request, reused by every attempt.
        .layer(SetIdempotencyKeyLayer::new())
        .retry(RetryErrors { left: 3 })
        .service(LossyNetwork {
            server: app.clone(),
            losses: Arc::clone(&losses),
        });

    let order = Request::post("/orders")
        .body(Full::new(Bytes::from_static(b"{\"sku\":\"A\"}")))
        .unwrap();
    let (status, headers, body) = client.ready().await.unwrap().call(order).await.unwrap();
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, "{\"order\":1,\"request\":{\"sku\":\"A\"}}");
    assert_eq!(
        headers["idempotent-replayed"], "true",
        "the third attempt got the first attempt's response"
    );
    assert_eq!(
        payments.charges.load(Ordering::SeqCst),
        1,
        "charged once for three attempts"
    );
    assert_eq!(losses.load(Ordering::SeqCst), 0);

    // A new logical request gets a new key and a new charge.
    let next = Request::post("/orders")
        .body(Full::new(Bytes::from_static(b"{\"sku\":\"B\"}")))
        .unwrap();
    let (status, headers, _) = client.ready().await.unwrap().call(next).await.unwrap();
    assert_eq!(status, StatusCode::CREATED);
    assert!(headers.get("idempotent-replayed").is_none());
    assert_eq!(payments.charges.load(Ordering::SeqCst), 2);

    // Without the client layer, the route refuses a keyless order.
    let keyless = Request::post("/orders").body(axum::body::Body::from("{}")).unwrap();
    let Ok(res) = app.oneshot(keyless).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(payments.charges.load(Ordering::SeqCst), 2);
}
