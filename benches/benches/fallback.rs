// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

//! Fallback: a call that succeeds (the request's head kept and the result
//! classified), and a call answered by the fallback, against a bare HTTP
//! service and tower's references.
//!
//! Run with `cargo bench -p palisade-benches --bench fallback`.

use std::convert::Infallible;
use std::future::{Ready, ready};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use palisade_benches::Harness;
use palisade_fallback::{Failure, FallbackLayer};
use tower::{Layer, service_fn};

type Handler = tower::util::ServiceFn<fn(Request<()>) -> Ready<Result<Response<()>, Infallible>>>;

fn answering(status: u16) -> Handler {
    fn ok(_: Request<()>) -> Ready<Result<Response<()>, Infallible>> {
        ready(Ok(Response::new(())))
    }
    fn unavailable(_: Request<()>) -> Ready<Result<Response<()>, Infallible>> {
        let mut res = Response::new(());
        *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        ready(Ok(res))
    }
    service_fn(if status == 200 { ok } else { unavailable } as fn(_) -> _)
}

type Answer = tower::util::ServiceFn<fn(Failure<Response<()>>) -> Ready<Result<Response<()>, Failure<Response<()>>>>>;

fn cached() -> Answer {
    fn answer(_: Failure<Response<()>>) -> Ready<Result<Response<()>, Failure<Response<()>>>> {
        ready(Ok(Response::new(())))
    }
    service_fn(answer as fn(_) -> _)
}

fn request() -> Request<()> {
    Request::get("/recommendations")
        .header("accept", "application/json")
        .header("x-tenant", "acme")
        .body(())
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let mut harness = Harness::new(c, "fallback");
    harness.overhead("http_bare", answering(200), request);
    let layer = FallbackLayer::builder("bench").fallback(cached()).build().unwrap();
    harness.overhead("fallback_not_needed", layer.layer(answering(200)), request);
    harness.overhead("fallback_answering", layer.layer(answering(503)), request);
    harness.two_thread_references();
    harness.two_threads("fallback_not_needed", layer.layer(answering(200)), request);
    harness.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
