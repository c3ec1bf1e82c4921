// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

//! gRPC: the status layer passing a response through and answering a
//! rejection (against palisade-core's problem+json answer of the same
//! rejection), and a breaker judging a gRPC response by its status
//! (`AtEos(GrpcClassifier)`, decided at the head for a trailers-only
//! response) against the head-only `GrpcClassifier`.
//!
//! Run with `cargo bench -p palisade-benches --bench grpc`.

use std::future::{Ready, ready};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use palisade_benches::Harness;
use palisade_circuit_breaker::CircuitBreakerLayer;
use palisade_core::eos::AtEos;
use palisade_core::response::ProblemResponseLayer;
use palisade_core::{BoxError, BulkheadFull, GrpcClassifier};
use palisade_grpc::GrpcStatusLayer;
use tower::{Layer, service_fn};

type Handler = tower::util::ServiceFn<fn(Request<()>) -> Ready<Result<Response<Full<Bytes>>, BoxError>>>;

/// Answers a trailers-only `OK`.
fn handler() -> Handler {
    fn ok(_: Request<()>) -> Ready<Result<Response<Full<Bytes>>, BoxError>> {
        let mut res = Response::new(Full::default());
        res.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("0"));
        ready(Ok(res))
    }
    service_fn(ok as fn(_) -> _)
}

/// Fails every call with a full bulkhead.
fn full() -> Handler {
    fn reject(_: Request<()>) -> Ready<Result<Response<Full<Bytes>>, BoxError>> {
        ready(Err(BulkheadFull::new("bench", Duration::from_millis(250)).into()))
    }
    service_fn(reject as fn(_) -> _)
}

fn bench(c: &mut Criterion) {
    let mut harness = Harness::new(c, "grpc");
    harness.overhead("grpc_bare", handler(), || Request::new(()));

    let status = GrpcStatusLayer::builder("bench").build().unwrap();
    harness.overhead("grpc_status_pass", status.layer(handler()), || Request::new(()));
    harness.overhead("grpc_status_rejection", status.layer(full()), || Request::new(()));
    harness.overhead(
        "problem_response_rejection",
        ProblemResponseLayer::new().layer(full()),
        || Request::new(()),
    );

    let head = CircuitBreakerLayer::builder("bench")
        .classifier(GrpcClassifier)
        .build()
        .unwrap();
    harness.overhead("breaker_grpc_head", head.layer(handler()), || Request::new(()));
    let eos = CircuitBreakerLayer::builder("bench")
        .classifier(AtEos(GrpcClassifier))
        .build()
        .unwrap();
    harness.overhead("breaker_grpc_at_eos", eos.layer(handler()), || Request::new(()));
    harness.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
