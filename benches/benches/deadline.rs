// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

//! Deadlines: the server layer (a configured budget, and a caller's
//! `grpc-timeout` parsed) and the client layer (a deadline read, the budget
//! header written, the attempt bounded), against tower's `Timeout` on the
//! same HTTP service, the reference for "arm a timer per call".
//!
//! Run with `cargo bench -p palisade-benches --bench deadline`. The calls run
//! inside a current-thread tokio runtime (the timers need one); the
//! two-thread figures are left out, as the harness's threads have no runtime.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use palisade_benches::Harness;
use palisade_core::deadline::Deadline;
use palisade_deadline::{DeadlineLayer, PropagateDeadlineLayer};
use tower::{Layer, service_fn};

type Handler = tower::util::ServiceFn<fn(Request<()>) -> Ready<Result<Response<()>, Infallible>>>;

fn handler() -> Handler {
    fn ok(_: Request<()>) -> Ready<Result<Response<()>, Infallible>> {
        ready(Ok(Response::new(())))
    }
    service_fn(ok as fn(_) -> _)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let mut harness = Harness::new(c, "deadline");

    harness.overhead("http_bare", handler(), || Request::new(()));
    harness.overhead(
        "tower_timeout",
        tower::timeout::TimeoutLayer::new(Duration::from_secs(30)).layer(handler()),
        || Request::new(()),
    );

    let server = DeadlineLayer::builder("bench")
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    harness.overhead("deadline_server", server.layer(handler()), || Request::new(()));
    harness.overhead("deadline_server_grpc_timeout", server.layer(handler()), || {
        Request::builder()
            .header("content-type", "application/grpc")
            .header("grpc-timeout", "5S")
            .body(())
            .unwrap()
    });
    let idle = DeadlineLayer::builder("bench").build().unwrap();
    harness.overhead("deadline_server_no_budget", idle.layer(handler()), || Request::new(()));

    let client = PropagateDeadlineLayer::builder("bench").build().unwrap();
    let deadline = Deadline::after(Duration::from_secs(3600));
    harness.overhead("deadline_client", client.layer(handler()), move || {
        Request::builder().extension(deadline).body(()).unwrap()
    });
    harness.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
