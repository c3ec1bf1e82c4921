//! A small built-in upstream for the proxy route, so the example runs with no
//! other service: `GET`/`POST` on any path answers `200` with
//! `{"upstream": "demo", "method": ..., "path": ...}` after an adjustable
//! latency, or `500` while it is told to fail through its [`UpstreamControl`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::Notify;
use tower::util::BoxCloneService;

use crate::{Route, json_response};

/// Switches the demo upstream between healthy and failing, and counts the
/// requests it received.
#[derive(Debug, Clone, Default)]
pub struct UpstreamControl {
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    failing: AtomicBool,
    latency_ms: AtomicU64,
    requests: AtomicU64,
    received: Notify,
}

impl UpstreamControl {
    /// While `true`, every request is answered `500`.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// How long each answer takes (default none).
    pub fn set_latency(&self, latency: Duration) {
        let millis = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.state.latency_ms.store(millis, Ordering::SeqCst);
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Completes once `n` requests have been received.
    pub async fn received(&self, n: u64) {
        loop {
            let mut notified = std::pin::pin!(self.state.received.notified());
            // Registered before the check, so a request arriving in between
            // still wakes it.
            notified.as_mut().enable();
            if self.requests() >= n {
                return;
            }
            notified.await;
        }
    }
}

/// The demo upstream's service and its control; serve it with
/// [`serve_service`](crate::serve_service).
pub fn service() -> (UpstreamControl, Route<Incoming>) {
    let control = UpstreamControl::default();
    let state = control.state.clone();
    let service = tower::service_fn(move |req: Request<Incoming>| {
        state.requests.fetch_add(1, Ordering::SeqCst);
        state.received.notify_waiters();
        let failing = state.failing.load(Ordering::SeqCst);
        let latency = Duration::from_millis(state.latency_ms.load(Ordering::SeqCst));
        let answer = serde_json::json!({
            "upstream": "demo",
            "method": req.method().as_str(),
            "path": req.uri().path(),
        });
        async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            if failing {
                let mut res = Response::new(Full::new(Bytes::from_static(b"upstream failing")));
                *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                return Ok(res);
            }
            Ok(json_response(StatusCode::OK, answer.to_string()))
        }
    });
    (control, BoxCloneService::new(service))
}
