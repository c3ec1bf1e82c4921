//! Per-call cost of palisade-retry's policy in tower's `Retry`, when the
//! first attempt succeeds (the common case), against the bare service and
//! tower's `Retry` with a policy that never retries, and beside
//! tower-resilience's retry.
//!
//! Run with `cargo bench -p palisade-benches --bench retry` (add `-- --quick` for a rough pass).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use palisade_benches::{Harness, TowerBudgetRetry, bare, peers};
use palisade_retry::{HttpRetryLayer, ReplayBody, RetryLayer};
use tower::Layer;

/// Reads a body that is ready at once to its end, as a client would send it.
fn drain<B: Body>(body: B) -> usize {
    let mut body = pin!(body);
    let mut cx = Context::from_waker(Waker::noop());
    let mut read = 0;
    while let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) {
        read += frame.data_ref().map_or(0, bytes::Buf::remaining);
    }
    read
}

/// An HTTP downstream that reads the request body and answers 200.
fn http_ok<B: Body>(req: Request<B>) -> Ready<Result<Response<usize>, Infallible>> {
    ready(Ok(Response::new(drain(req.into_body()))))
}

const SMALL_BODY: &[u8] = b"{\"order\":42,\"sku\":\"A-1000\",\"quantity\":3,\"note\":\"leave at the door\"}";

fn retry(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut harness = Harness::new(c, "retry");

    let retry = RetryLayer::builder("retry").build().unwrap();
    harness.overhead("palisade_retry_budget", retry.clone().layer(bare()), || 1);
    let no_budget = RetryLayer::builder("retry").no_budget().build().unwrap();
    harness.overhead("palisade_retry_no_budget", no_budget.layer(bare()), || 1);
    let deadline = RetryLayer::builder("retry")
        .deadline(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    harness.overhead("palisade_retry_budget_deadline", deadline.layer(bare()), || 1);
    let tower_budget = tower::retry::Retry::new(TowerBudgetRetry::default(), bare());
    harness.overhead("tower_retry_tps_budget", tower_budget.clone(), || 1);
    let tower_resilience = peers::tower_resilience_retry();
    harness.overhead("tower_resilience_retry", tower_resilience.layer(bare()), || 1);

    let small = Bytes::from_static(SMALL_BODY);
    let http_bare = tower::service_fn(http_ok::<Full<Bytes>>);
    harness.overhead("http_bare_small_body", http_bare, || {
        Request::put("/orders/42").body(Full::new(small.clone())).unwrap()
    });
    let http_retry = HttpRetryLayer::builder("retry").build().unwrap();
    let http = http_retry.layer(tower::service_fn(http_ok::<ReplayBody<Full<Bytes>>>));
    harness.overhead("palisade_retry_http_small_body", http.clone(), || {
        Request::put("/orders/42").body(Full::new(small.clone())).unwrap()
    });
    harness.overhead("http_bare_empty_get", tower::service_fn(http_ok::<Full<Bytes>>), || {
        Request::get("/orders/42").body(Full::new(Bytes::new())).unwrap()
    });
    harness.overhead("palisade_retry_http_empty_get", http, || {
        Request::get("/orders/42").body(Full::new(Bytes::new())).unwrap()
    });

    harness.two_thread_references();
    harness.two_threads("palisade_retry_budget", retry.layer(bare()), || 1);
    harness.two_threads("tower_retry_tps_budget", tower_budget, || 1);
    harness.two_threads("tower_resilience_retry", tower_resilience.layer(bare()), || 1);
    harness.finish();
}

criterion_group!(benches, retry);
criterion_main!(benches);
