//! A small built-in upstream for the proxy route, so the example runs with no
//! other service: `GET`/`POST` on any path answers `200` with
//! `{"upstream": "demo", "method": ..., "path": ...}`, or `500` while it is
//! told to fail through its [`UpstreamControl`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
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
    requests: AtomicU64,
}

impl UpstreamControl {
    /// While `true`, every request is answered `500`.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }
}

/// The demo upstream's service and its control; serve it with
/// [`serve_service`](crate::serve_service).
pub fn service() -> (UpstreamControl, Route<Incoming>) {
    let control = UpstreamControl::default();
    let state = control.state.clone();
    let service = tower::service_fn(move |req: Request<Incoming>| {
        state.requests.fetch_add(1, Ordering::SeqCst);
        let failing = state.failing.load(Ordering::SeqCst);
        let answer = serde_json::json!({
            "upstream": "demo",
            "method": req.method().as_str(),
            "path": req.uri().path(),
        });
        async move {
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
